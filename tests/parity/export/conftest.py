"""Fixtures of the export tests: vgg11_bn's convolutional weights, every tensor random, as parity.convert writes."""

from __future__ import annotations

from pathlib import Path

import torch

import keras
import numpy as np
import pytest

from parity.convert.random_weights import randomized_state_dict
from parity.convert.weight_arrays import write_keras_weights
from parity.core.config import PRESETS
from parity.core.weights_file import stage_converted_weights

ARCH = "vgg11_bn"
SEED = 0


@pytest.fixture(scope="session")
def features_state() -> dict[str, np.ndarray]:
    """vgg11_bn's convolutional weights, every tensor random (the first tensors of ``--init random-all --seed 0``)."""
    return randomized_state_dict(PRESETS[ARCH], SEED, include_top=False)


@pytest.fixture(scope="session")
def features_file(tmp_path_factory: pytest.TempPathFactory, features_state: dict[str, np.ndarray]) -> Path:
    """Those weights as ``parity.convert`` writes a file: ``.weights.h5`` with its record and sidecar."""
    cfg = PRESETS[ARCH]
    state = features_state
    path = tmp_path_factory.mktemp("weights") / f"{ARCH}_features.weights.h5"
    with stage_converted_weights(path) as staged:
        write_keras_weights(state, cfg, staged.path, include_top=False)
        staged.commit(
            {
                "arch": ARCH,
                "config": cfg.to_dict(),
                "include_top": False,
                "source": {"kind": "random-all", "seed": SEED},
                "versions": {"torch": torch.__version__, "keras": keras.__version__},
                "verification": None,
            }
        )
    return path

"""AlexNet parity: torchvision's alexnet (reference) against vgg_keras.AlexNet with converted random weights.

Every weight is random (biases too). The sizes are torchvision's crop (224), its
smallest input (63: the last pool leaves 1x1, which the adaptive pool
upsamples to 6x6) and a non-square 300x200 (8x5 before the pool: upsampled on
one axis, averaged on the other). Tiny-width AlexNets (the same strides,
kernels, paddings and pools, a few channels) run in the default tier; the
full-size network runs once there (channels_last, every mode) and in every
other combination in the extended tier.
"""

from __future__ import annotations

import importlib.util
import json

import keras
import numpy as np
import pytest

from parity.compare import LOGIT_RTOL, MODES, ParityError, build_pair, compare_outputs, keras_forward, torch_forward
from parity.convert.random_weights import randomized_state_dict
from parity.core.config import ALEXNET, VGGConfig
from tests.conftest import run_python
from tests.parity.test_backends import BACKENDS

#: torchvision's crop, its smallest input, and a non-square size.
SIZES = [(224, 224), (63, 63), (300, 200)]
#: AlexNet's geometry with a few channels.
TINY_ALEXNET = ALEXNET.replace(stages=((4,), (6,), (8,), (8,), (6,)), hidden=(16, 16), num_classes=7, name="tiny")


def _inputs(size: tuple[int, int], batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, *size), dtype=np.float32)


def _check_every_mode(config: VGGConfig, data_format: str, seed: int) -> None:
    keras.config.set_image_data_format(data_format)
    reference, model = build_pair(config, randomized_state_dict(config, seed=seed))
    for size in SIZES:
        x = _inputs(size, seed=seed + size[1])
        expected = torch_forward(reference, x)
        for mode in MODES:
            report = compare_outputs(expected, keras_forward(model, x, mode=mode))
            report.check()
            assert report.max_rel <= LOGIT_RTOL and report.top1 == 1.0, (size, mode)


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.slow
def test_tiny_alexnet_every_mode_and_size(data_format: str) -> None:
    _check_every_mode(TINY_ALEXNET, data_format, seed=7)


@pytest.mark.full
def test_alexnet_matches_torchvision_in_every_mode() -> None:
    """Full size, channels_last: eager, a relaxed tf.function, XLA and predict, at 224, 63 and 300x200 in a row."""
    _check_every_mode(ALEXNET, "channels_last", seed=1)


@pytest.mark.full
@pytest.mark.cpu_kernels
@pytest.mark.extended
def test_alexnet_channels_first_matches_torchvision() -> None:
    _check_every_mode(ALEXNET, "channels_first", seed=2)


def test_planted_padding_mistake_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first convolution padded one column left of torch's (same shapes, shifted values) fails at block 1."""
    original = keras.layers.ZeroPadding2D

    def shifted(padding: int, **kwargs: object) -> keras.layers.Layer:
        return original(((padding, padding), (padding - 1, padding + 1)), **kwargs)

    monkeypatch.setattr(keras.layers, "ZeroPadding2D", shifted)
    reference, model = build_pair(TINY_ALEXNET, randomized_state_dict(TINY_ALEXNET, seed=3))
    x = _inputs((224, 224), seed=4)
    report = compare_outputs(torch_forward(reference, x), keras_forward(model, x))
    assert report.first_divergent == "block1"
    with pytest.raises(ParityError):
        report.check()


_BACKEND_SCRIPT = """
import json, os
import torch, torchvision  # before anything that may load TensorFlow
import keras, numpy as np
from parity.compare import build_pair, compare_outputs, keras_forward, torch_forward
from parity.convert.random_weights import randomized_state_dict
from parity.core.config import VGGConfig

assert keras.backend.backend() == os.environ["KERAS_BACKEND"], keras.backend.backend()
config = VGGConfig.from_dict(json.loads(os.environ["CONFIG"]))
for data_format in ("channels_last", "channels_first"):
    keras.config.set_image_data_format(data_format)
    reference, model = build_pair(config, randomized_state_dict(config, seed=5))
    for size in json.loads(os.environ["SIZES"]):
        x = np.random.default_rng(size[1]).standard_normal((2, 3, *size), dtype=np.float32)
        expected = torch_forward(reference, x)
        for mode in ("eager", "predict"):
            report = compare_outputs(expected, keras_forward(model, x, mode=mode))
            report.check()
            print(data_format, size, mode, "max rel", report.max_rel)
print("backend ok")
"""


def _needs(backend: str) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"Keras' {backend} backend needs {backend}, which is not installed here")


def _run_backend(backend: str, config: VGGConfig, sizes: list[tuple[int, int]]) -> None:
    _needs(backend)
    env = {"KERAS_BACKEND": backend, "CONFIG": json.dumps(config.to_dict()), "SIZES": json.dumps(sizes)}
    result = run_python(_BACKEND_SCRIPT, env=env)
    assert result.returncode == 0 and "backend ok" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.slow
def test_tiny_alexnet_on_other_backends(backend: str) -> None:
    """The smallest input and the non-square one (each a new size for predict's trace); 224 is in the full case."""
    _run_backend(backend, TINY_ALEXNET, SIZES[1:])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.full
@pytest.mark.extended
def test_alexnet_on_other_backends(backend: str) -> None:
    _run_backend(backend, ALEXNET, SIZES)

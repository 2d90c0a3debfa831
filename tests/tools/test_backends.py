"""The execution modes on Keras' other backends, each in its own process (a process holds one backend).

On the torch backend the adaptive pool is torch's own kernel; on JAX it is the
same averaging-matrix code as on TensorFlow, run under ``jax.jit`` by
``predict`` and ``fit``. Each backend runs a tiny batch-norm VGG against
torch in both data formats at three sizes in a row (eagerly and through
``predict``), and ``fit``/``evaluate`` at those sizes.
"""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import run_python

_SCRIPT = """
import os, sys
import torch, torchvision  # before anything that may load TensorFlow
import keras, numpy as np
from parity.compare import build_pair, compare_outputs, keras_forward, torch_forward
from parity.core.config import VGGConfig
from parity.random_weights import randomized_state_dict

assert keras.backend.backend() == os.environ["KERAS_BACKEND"], keras.backend.backend()
cfg = VGGConfig(stages=((4,), (8, 8), (8,)), hidden=(16, 16), num_classes=7, batch_norm=True, name="tiny_bn7")
sizes = [(32, 32), (64, 48), (200, 72)]  # 4x4, 8x6 and 25x9 maps before the 7x7 pool
for data_format in ("channels_last", "channels_first"):
    keras.config.set_image_data_format(data_format)
    reference, model = build_pair(cfg, randomized_state_dict(cfg, seed=1))
    for size in sizes:
        x = np.random.default_rng(size[0]).standard_normal((2, 3, *size), dtype=np.float32)
        expected = torch_forward(reference, x)
        for mode in ("eager", "predict"):
            compare_outputs(expected, keras_forward(model, x, mode=mode)).check()
    model.compile(keras.optimizers.SGD(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for size in sizes:
        shape = (2, *size, 3) if data_format == "channels_last" else (2, 3, *size)
        x = np.random.default_rng(size[1]).standard_normal(shape, dtype=np.float32)
        y = np.array([1, 5])
        before = model.evaluate(x, y, verbose=0)
        losses = model.fit(x, y, epochs=2, batch_size=2, verbose=0).history["loss"]
        after = model.evaluate(x, y, verbose=0)
        assert np.all(np.isfinite(losses)) and after != before, (size, before, after, losses)
print("backend ok")
"""


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_modes_on_other_backends(backend: str) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"Keras' {backend} backend needs {backend}, which is not installed here")
    result = run_python(_SCRIPT, env={"KERAS_BACKEND": backend})
    assert result.returncode == 0 and "backend ok" in result.stdout, result.stderr[-3000:]

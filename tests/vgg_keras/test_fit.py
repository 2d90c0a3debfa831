"""``fit`` and ``evaluate`` on every preset and size, with relaxed and static input shapes.

Keras traces ``fit``/``evaluate`` into graphs and relaxes the input shape to
``(None, None, None, 3)`` once it sees a second size, so these runs exercise
what eager parity tests cannot: the adaptive pool in a training graph at every
map size (1x1 at 32 px, 2x2 at 64 px, 7x7 at 224 px), with gradients. Each run
checks that ``predict`` equals the eager call (static shapes included), then
evaluates, takes two SGD steps on one batch, and evaluates again: the
inference loss must fall where the steps are plain gradient descent (no
dropout, no batch norm), and move otherwise (two steps under random dropout
masks need not lower the loss without dropout, and evaluation also sees the
moving statistics the steps updated).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import vgg_keras
from parity.compare import LOGIT_RTOL
from parity.core.config import PRESETS, VGGConfig
from tests.conftest import TINY_CONFIGS, preset_params, run_python

#: Small enough that two steps on one batch lower its loss for every preset
#: (from torchvision-scale init), large enough to move it measurably.
LEARNING_RATE = 1e-3
#: The three map sizes the head sees: 1x1, 2x2 and 7x7 before the adaptive pool.
PRESET_SIZES = (32, 64, 224)


def _fit_lowers_the_loss(
    model: keras.Model, size: tuple[int, int], classes: int, jit_compile: bool | str = "auto"
) -> None:
    """predict equals the eager call; two SGD steps on one batch lower (or move) its inference loss."""
    rng = np.random.default_rng(size[0] * 1000 + size[1])
    shape = (2, *size, 3) if keras.config.image_data_format() == "channels_last" else (2, 3, *size)
    x = rng.standard_normal(shape, dtype=np.float32)
    y = rng.integers(0, classes, 2)
    eager = np.asarray(model(x, training=False))
    predicted = model.predict(x, verbose=0)
    assert np.max(np.abs(predicted - eager)) <= LOGIT_RTOL * np.max(np.abs(eager)), size
    if not model.compiled:  # once per model: later sizes reuse (and relax) its traced functions
        model.compile(
            keras.optimizers.SGD(LEARNING_RATE),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
    before = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, epochs=2, batch_size=2, verbose=0).history["loss"]
    after = model.evaluate(x, y, verbose=0)
    assert np.all(np.isfinite(history)), history
    noisy = any(
        isinstance(layer, keras.layers.BatchNormalization)
        or (isinstance(layer, keras.layers.Dropout) and layer.rate > 0)
        for layer in model.layers
    )
    if noisy:
        assert abs(after - before) > 1e-6 * abs(before), (size, before, after)
    else:
        assert after < before, (size, before, after)


def _build(config: VGGConfig, input_shape: tuple[int | None, ...] | None = None) -> keras.Model:
    return vgg_keras.build_vgg(config, input_shape=input_shape, classifier_activation=None)


def fit_preset(arch: str) -> None:
    """The checks of :func:`test_fit_and_evaluate_every_preset` for one preset, in this process."""
    keras.utils.set_random_seed(0)
    config = PRESETS[arch]
    model = _build(config)  # (None, None, 3): one model, three sizes in a row
    for side in PRESET_SIZES:
        _fit_lowers_the_loss(model, (side, side), config.num_classes)
    for side in PRESET_SIZES:  # one static-shape model per size
        _fit_lowers_the_loss(_build(config, (side, side, 3)), (side, side), config.num_classes)


@pytest.mark.full
@pytest.mark.parametrize("arch", preset_params(default=[]))
def test_fit_and_evaluate_every_preset(arch: str) -> None:
    """In a child process: a model that went through ``fit`` is never freed (Keras 3.15 with
    TensorFlow 2.20 keep it after ``clear_session`` and ``gc.collect``), and eight full-size
    presets would hold about 9 GB for the rest of the suite.
    """
    code = "import torch, torchvision\nfrom tests.vgg_keras.test_fit import fit_preset\n"  # torch first: see conftest
    result = run_python(f"{code}fit_preset({arch!r})\nprint('fit ok')")
    assert result.returncode == 0 and "fit ok" in result.stdout, result.stderr[-3000:]


@pytest.mark.cpu_kernels
@pytest.mark.parametrize(
    "name, jit_compile, data_format",
    [
        ("tiny", False, "channels_last"),
        ("tiny", True, "channels_last"),
        ("tiny_bn", False, "channels_last"),
        ("tiny_bn", False, "channels_first"),
        ("cifar", False, "channels_last"),
    ],
    ids=lambda v: str(v),
)
@pytest.mark.slow
def test_fit_and_evaluate_tiny_configs(name: str, jit_compile: bool, data_format: str) -> None:
    keras.config.set_image_data_format(data_format)
    keras.utils.set_random_seed(0)
    config = TINY_CONFIGS[name].replace(dropout=0.0)  # plain gradient descent: the loss must fall
    if config.pool_size is None:  # fixed input: flattens the last map directly
        _fit_lowers_the_loss(_build(config), config.input_size, config.num_classes, jit_compile)  # type: ignore[arg-type]
        return
    model = _build(config)
    for size in [(32, 32), (64, 48), (40, 40)]:  # the third reuses the relaxed trace of the second
        _fit_lowers_the_loss(model, size, config.num_classes, jit_compile)
    static = (33, 47, 3) if data_format == "channels_last" else (3, 33, 47)
    _fit_lowers_the_loss(_build(config, static), (33, 47), config.num_classes, jit_compile)

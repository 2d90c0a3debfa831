"""Run-time input checks and NaN in, NaN out (:mod:`vgg_keras.checks`), in every TensorFlow mode.

Modes: an eager call, a ``tf.function`` (graph), XLA (``jit_compile=True``) and
``predict``; each with the sizes known when traced, and (graph, XLA,
``predict``) with unknown sizes. Each claim is also shown to bite: the same
network without the checks (:func:`vgg_keras.checks.without_checks`) fails the claim. The JAX and
torch backends run in child processes at the end.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import vgg_keras
from parity.core.config import VGGConfig
from tests.conftest import CIFAR, TINY, TINY_BN, run_python, tensorflow_has_nchw_cpu_kernels
from vgg_keras.checks import InputCheck, NonFiniteToNaN, without_checks

#: ``eager`` is op by op (``run_eagerly``); ``call`` is a plain ``model(x)``, which on a VGG runs a traced graph.
MODES = ["eager", "call", "graph", "xla", "predict"]
#: XLA's convolutions against TensorFlow's eager ones on a tiny config: float32 summation order only
#: (measured about 1e-6); a wrong layout or a dropped layer is off by far more.
XLA_TOLERANCE = 1e-5
#: The tiny configs' smallest input: 3 max pools.
MIN = TINY.min_input_size


def _run(model: keras.Model, x: np.ndarray, mode: str) -> np.ndarray:
    """The model's output in one mode, traced for ``x``'s own shape."""
    if mode == "predict":
        return model.predict(x, verbose=0, batch_size=max(len(x), 1))
    if mode in ("eager", "call"):
        model.run_eagerly = mode == "eager"
        try:
            return keras.ops.convert_to_numpy(model(x, training=False))
        finally:
            model.run_eagerly = False
    fn = tf.function(lambda t: model(t, training=False), jit_compile=mode == "xla")
    return fn(tf.constant(x)).numpy()


def _run_unknown_sizes(model: keras.Model, x: np.ndarray, mode: str) -> np.ndarray:
    """The output from a trace with unknown batch and sizes (what ``predict`` traces after a second size)."""
    if mode == "predict":
        for size in (MIN + 8, MIN + 16):  # two sizes: predict relaxes its trace to unknown sizes
            model.predict(np.zeros((1, size, size, 3), np.float32), verbose=0)
        return model.predict(x, verbose=0, batch_size=max(len(x), 1))
    spec = tf.TensorSpec((None, None, None, None), tf.float32)
    fn = tf.function(lambda t: model(t, training=False), input_signature=[spec], jit_compile=mode == "xla")
    return fn(tf.constant(x)).numpy()


def _randomized(model: keras.Model) -> keras.Model:
    """Every weight random (biases and batch-norm statistics too), variances positive."""
    rng = np.random.default_rng(7)
    for weight in model.weights:
        low, high = (0.5, 1.5) if "variance" in weight.path else (-0.5, 0.5)
        weight.assign(rng.uniform(low, high, weight.shape).astype(np.float32))
    return model


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, size, size, 3), dtype=np.float32)


def _with_bad_pixels(x: np.ndarray) -> np.ndarray:
    """Sample 1 gets one NaN pixel value, sample 3 one +inf; samples 0 and 2 stay finite."""
    x = x.copy()
    x[1, 5, 7, 0] = np.nan
    x[3, 20, 2, 2] = np.inf
    return x


# --- size and channels ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_too_small_refused_in_one_line(mode: str) -> None:
    model = vgg_keras.build_vgg(TINY, classifier_activation=None)
    with pytest.raises(ValueError) as info:
        _run(model, _images(2, MIN - 1), mode)
    expected = f"at least {MIN}x{MIN} px"
    assert expected in str(info.value) and f"Received: input shape (2, {MIN - 1}, {MIN - 1}, 3)" in str(info.value)
    if mode in ("eager", "call", "predict"):  # graph and XLA add TensorFlow's "in user code:" frame around it
        assert str(info.value).count("\n") == 0, str(info.value)


@pytest.mark.parametrize("mode", ["graph", "predict"])
def test_too_small_with_unknown_sizes_refused_by_the_assertion(mode: str) -> None:
    """The trace cannot see the size; the graph's assertion names it before MaxPool fails on it."""
    model = vgg_keras.build_vgg(TINY, classifier_activation=None)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"at least {MIN}x{MIN} px.*Received: input shape"):
        _run_unknown_sizes(model, _images(2, MIN - 1), mode)
    # Bites: without the checks the same call fails in oneDNN's MaxPool without a word about the size, or
    # (oneDNN off) returns numbers.
    try:
        _run_unknown_sizes(without_checks(model), _images(2, MIN - 1), mode)
    except tf.errors.OpError as error:
        assert "px" not in str(error)


def test_too_small_under_xla_with_unknown_sizes_fails_the_compile() -> None:
    """XLA compiles assertions as no-ops; the reshape XLA resolves when it compiles for the sizes fails instead."""
    model = vgg_keras.build_vgg(TINY, classifier_activation=None)
    reference = _run(model, _images(2, MIN + 3), "eager")
    ok = _run_unknown_sizes(model, _images(2, MIN + 3), "xla")
    assert np.max(np.abs(ok - reference)) <= XLA_TOLERANCE  # a good size still runs
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"at_least_{MIN}x{MIN}_px"):
        _run_unknown_sizes(model, _images(2, MIN - 1), "xla")
    # Bites: without the checks XLA returns numbers for the same call.
    assert np.isfinite(_run_unknown_sizes(without_checks(model), _images(2, MIN - 1), "xla")).all()


def test_mask_sets_too_small_samples_to_nan_under_xla() -> None:
    """The mask's own size guard, behind the reshape: a too-small sample's outputs are NaN in an XLA graph."""
    mask = NonFiniteToNaN(MIN, data_format="channels_last")
    spec = tf.TensorSpec((None, None, None, 3), tf.float32)
    fn = tf.function(lambda t: mask([t, tf.ones((tf.shape(t)[0], 5))]), input_signature=[spec], jit_compile=True)
    assert np.isnan(fn(tf.constant(_images(2, MIN - 1))).numpy()).all()
    assert np.isfinite(fn(tf.constant(_images(2, MIN))).numpy()).all()


def test_channels_refused() -> None:
    """Another channel count: Keras' own one-line refusal where it checks; ours where the trace leaves it open."""
    model = vgg_keras.build_vgg(TINY, classifier_activation=None)
    rgba = np.zeros((2, 32, 32, 4), np.float32)
    for mode in ("eager", "predict"):
        with pytest.raises(ValueError, match=r"found shape=\(2, 32, 32, 4\)"):
            _run(model, rgba, mode)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"with 3 channels.*Received: input shape\] \[2 32 32 4\]"):
        _run_unknown_sizes(model, rgba, "graph")
    with pytest.raises(
        ValueError, match=r"must have 3 channels on the last axis.*Received: input shape \(2, 32, 32, 4\)"
    ):
        InputCheck(3, MIN, data_format="channels_last")(rgba)
    with pytest.raises(ValueError, match=r"must be a 4D batch.*Received: input shape \(32, 32, 3\)"):
        InputCheck(3, MIN, data_format="channels_last")(np.zeros((32, 32, 3), np.float32))


def test_channels_first_checks_its_own_axes() -> None:
    keras.config.set_image_data_format("channels_first")
    model = vgg_keras.build_vgg(TINY, classifier_activation=None)
    with pytest.raises(ValueError, match=rf"Received: input shape \(2, 3, {MIN - 1}, 40\)"):
        model(np.zeros((2, 3, MIN - 1, 40), np.float32))
    assert model(np.zeros((2, 3, MIN, MIN), np.float32)).shape == (2, 7)  # the smallest size passes


# --- batch of 0 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
@pytest.mark.parametrize("include_top", [True, False])
def test_empty_batch_gives_empty_result(mode: str, include_top: bool) -> None:
    model = vgg_keras.build_vgg(TINY_BN, include_top=include_top, classifier_activation=None)
    expected = (0, 7) if include_top else (0, 4, 4, 8)
    assert _run(model, _images(0), mode).shape == expected
    if mode != "eager":
        assert _run_unknown_sizes(model, _images(0), mode).shape == expected


@pytest.mark.filterwarnings("ignore:Your input ran out of data")  # Keras' own predict, in the bite
@pytest.mark.parametrize("include_top", [True, False])
def test_predict_on_no_samples_gives_empty_result(include_top: bool) -> None:
    model = vgg_keras.build_vgg(TINY_BN, include_top=include_top, classifier_activation=None)
    expected = (0, 7) if include_top else (0, 4, 4, 8)
    assert model.predict(_images(0), verbose=0).shape == expected
    assert model.predict(tf.constant(_images(0)), verbose=0).shape == expected
    # Bites: Keras' own predict fails inside its loop on the same input.
    with pytest.raises(UnboundLocalError):
        keras.Model.predict(model, _images(0), verbose=0)
    assert np.array_equal(model.predict(_images(3), verbose=0), _run(model, _images(3), "predict"))


@pytest.mark.cpu_kernels
def test_empty_batch_fails_without_the_padding_under_onednn() -> None:
    """Bites where oneDNN runs: its Conv2D returns an empty batch with the input's channels."""
    model = vgg_keras.build_vgg(TINY, classifier_activation=None)
    bare = tf.nn.conv2d(np.zeros((0, 8, 8, 3), np.float32), np.zeros((3, 3, 3, 4), np.float32), 1, "SAME")
    if bare.shape[-1] == 4:
        pytest.skip("this TensorFlow's Conv2D handles an empty batch (oneDNN off)")
    with pytest.raises(tf.errors.InvalidArgumentError):
        without_checks(model)(_images(0))


# --- NaN in, NaN out ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("config", [TINY_BN, CIFAR], ids=["tiny_bn", "cifar"])
def test_non_finite_sample_gives_nan_logits(mode: str, config: VGGConfig) -> None:
    model = _randomized(vgg_keras.build_vgg(config))  # softmax, as users call it
    x = _with_bad_pixels(_images(4))
    out = _run(model, x, mode)
    assert np.isnan(out[[1, 3]]).all(), out
    reference = _run(without_checks(model), x, mode)
    assert np.max(np.abs(out[[0, 2]] - reference[[0, 2]])) == 0.0  # the other samples, bit for bit


@pytest.mark.parametrize("mode", ["graph", "predict"])
def test_without_the_mask_a_nan_pixel_gives_finite_logits(mode: str) -> None:
    """Bites: TensorFlow's CPU MaxPool (and the fused MatMul+ReLU) drop NaN, so the mask is what makes it NaN.

    With oneDNN's kernels. Without oneDNN (Eigen's), whether a NaN survives varies from run to run (seen both
    ways in one session), so the bite is left to oneDNN CPUs; the NaN-out tests above pass either way.
    """
    if not tensorflow_has_nchw_cpu_kernels():
        pytest.skip("without oneDNN, TensorFlow's MaxPool keeps or drops NaN from run to run")
    model = vgg_keras.build_vgg(TINY, classifier_activation=None)
    out = _run(without_checks(model), _with_bad_pixels(_images(4)), mode)
    assert np.isfinite(out[1]).all()


@pytest.mark.parametrize("mode", ["graph", "xla", "predict"])
def test_non_finite_with_unknown_sizes(mode: str) -> None:
    model = vgg_keras.build_vgg(TINY, classifier_activation=None)
    x = _with_bad_pixels(_images(4))
    out = _run_unknown_sizes(model, x, mode)
    assert np.isnan(out[[1, 3]]).all() and np.isfinite(out[[0, 2]]).all()


@pytest.mark.parametrize("pooling", [None, "avg", "max"])
@pytest.mark.parametrize("mode", ["graph", "predict"])
def test_non_finite_sample_gives_nan_features(pooling: str | None, mode: str) -> None:
    model = vgg_keras.build_vgg(TINY, include_top=False, pooling=pooling)
    x = _with_bad_pixels(_images(4))
    out = _run(model, x, mode)
    assert np.isnan(out[[1, 3]]).all() and np.isfinite(out[[0, 2]]).all()


def test_checks_survive_keras_saving(tmp_path: object) -> None:
    model = vgg_keras.build_vgg(TINY, classifier_activation=None)
    path = tmp_path / "tiny.keras"  # type: ignore[operator]
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = _with_bad_pixels(_images(4))
    assert np.array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0), equal_nan=True)
    assert np.isnan(loaded.predict(x, verbose=0)[1]).all()
    with pytest.raises(ValueError, match="at least"):
        loaded(_images(1, MIN - 1))


# --- JAX and torch -----------------------------------------------------------------------------------------

_BACKEND_SCRIPT = """
import json, os, sys
import torch  # before anything that may load TensorFlow
import keras, numpy as np
import vgg_keras
from parity.core.config import VGGConfig

assert keras.backend.backend() == os.environ["KERAS_BACKEND"]
config = VGGConfig.from_dict(json.loads(os.environ["CONFIG"]))
result = {}
for data_format in ("channels_last", "channels_first"):
    keras.config.set_image_data_format(data_format)
    shape = (lambda n, s: (n, s, s, 3)) if data_format == "channels_last" else (lambda n, s: (n, 3, s, s))
    model = vgg_keras.build_vgg(config, classifier_activation=None)
    x = np.random.default_rng(0).standard_normal(shape(4, 32), dtype=np.float32)
    x.reshape(4, -1)[1, 100] = np.nan
    x.reshape(4, -1)[3, 7] = np.inf
    inputs = keras.Input(shape=model.input.shape[1:])
    y = inputs
    for layer in model.layers[1:]:
        y = y if layer.name in ("input_check", "non_finite_to_nan") else layer(y)
    unchecked = keras.ops.convert_to_numpy(keras.Model(inputs, y)(x))
    out = {"eager": keras.ops.convert_to_numpy(model(x)), "predict": model.predict(x, verbose=0)}
    row = {m: [bool(np.isnan(o[i]).all()) for i in range(4)] for m, o in out.items()}
    row["others_equal"] = bool(np.array_equal(out["eager"][[0, 2]], unchecked[[0, 2]]))
    row["empty"] = list(keras.ops.convert_to_numpy(model(np.zeros(shape(0, 32), np.float32))).shape)
    row["empty_predict"] = list(model.predict(np.zeros(shape(0, 32), np.float32), verbose=0).shape)
    for mode in ("eager", "predict"):  # predict last: Keras' JAX trainer loses the weights when a step raises
        try:
            model(np.zeros(shape(2, 7), np.float32)) if mode == "eager" else model.predict(
                np.zeros(shape(2, 7), np.float32), verbose=0)
            row["small_" + mode] = "no error"
        except ValueError as e:
            row["small_" + mode] = str(e)
    result[data_format] = row
print(json.dumps(result))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends(backend: str) -> None:
    """Static shapes in every mode there: the checks are Python's, the mask is keras.ops."""
    proc = run_python(_BACKEND_SCRIPT, env={"KERAS_BACKEND": backend, "CONFIG": json.dumps(TINY_BN.to_dict())})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for row in result.values():
        assert row["eager"] == row["predict"] == [False, True, False, True], row
        assert row["others_equal"] and row["empty"] == row["empty_predict"] == [0, 7], row
        for mode in ("eager", "predict"):
            assert "at least 8x8 px" in row["small_" + mode] and "\n" not in row["small_" + mode], row

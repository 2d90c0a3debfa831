"""vgg_keras.layers.AdaptiveAveragePooling2D against torch.nn.AdaptiveAvgPool2d, in every execution mode.

The layer is compared directly with torch over every input size from 1x1 to
70x70 (both orders of every non-square size), smaller and larger than the
output, with static, partly unknown and fully unknown spatial sizes, eagerly,
in ``tf.function`` graphs, under XLA, through ``predict``/``fit``/``evaluate``
and through an exported SavedModel, in both data formats.
"""

from __future__ import annotations

from pathlib import Path

import torch

import keras
import numpy as np
import pytest
import tensorflow as tf

import vgg_keras.layers
from vgg_keras.layers import AdaptiveAveragePooling2D

#: Max |diff| relative to max |input|. torch sums a window then divides by its
#: size; the layer multiplies by 1/size and sums, one axis after the other. A
#: window holds at most 70 values here, so the two differ by a few float32 ulps
#: of the input scale (measured 2.4e-7 for N(0, 1) inputs, max |x| about 4.5).
#: A wrong window boundary moves a whole input value in or out: 1e-2 or more.
POOL_RTOL = 1e-6
OUT = (7, 7)
SIDES = range(1, 71)
#: Sides for the slower modes (eager calls, one trace per shape): 1 px,
#: smaller than, equal to and just above the output, multiples, and the largest.
FEW_SIDES = (1, 2, 3, 6, 7, 8, 13, 14, 15, 49, 69, 70)
#: XLA compiles once per shape: fewer still.
XLA_SIDES = (1, 3, 7, 8, 14, 69)
CHANNELS = 3
FORMATS = ["channels_last", "channels_first"]


def _torch_pool(x: np.ndarray, data_format: str) -> np.ndarray:
    t = torch.from_numpy(x)
    if data_format == "channels_last":
        return torch.nn.functional.adaptive_avg_pool2d(t.permute(0, 3, 1, 2), OUT).permute(0, 2, 3, 1).numpy()
    return torch.nn.functional.adaptive_avg_pool2d(t, OUT).numpy()


def _batch(h: int, w: int, data_format: str, seed: int = 0) -> np.ndarray:
    shape = (2, h, w, CHANNELS) if data_format == "channels_last" else (2, CHANNELS, h, w)
    return np.random.default_rng(seed * 10007 + h * 71 + w).standard_normal(shape, dtype=np.float32)


def _worst(run: object, sizes: list[tuple[int, int]], data_format: str) -> tuple[float, tuple[int, int]]:
    """Largest relative difference from torch over ``sizes``, and where it occurs."""
    worst, where = 0.0, (0, 0)
    for h, w in sizes:
        x = _batch(h, w, data_format)
        got = np.asarray(run(x))  # type: ignore[operator]
        rel = float(np.max(np.abs(got - _torch_pool(x, data_format))) / np.max(np.abs(x)))
        if rel > worst:
            worst, where = rel, (h, w)
    return worst, where


def _spec(data_format: str, h: int | None, w: int | None) -> tf.TensorSpec:
    shape = (None, h, w, CHANNELS) if data_format == "channels_last" else (None, CHANNELS, h, w)
    return tf.TensorSpec(shape, tf.float32)


#: Every (height, width) with sides 1..70: both orders of every non-square size.
ALL_SIZES = [(h, w) for h in SIDES for w in SIDES]
#: Every square size, and every side against the few.
MANY_SIZES = sorted(
    {(s, s) for s in SIDES} | {(a, b) for a in SIDES for b in FEW_SIDES} | {(b, a) for a in SIDES for b in FEW_SIDES}
)
FEW_SIZES = [(h, w) for h in FEW_SIDES for w in FEW_SIDES]


@pytest.mark.parametrize(
    "data_format", ["channels_last", pytest.param("channels_first", marks=pytest.mark.extended)]
)  # channels_first: the same layer behind a transpose; its eager and one-unknown-side cases run by default
@pytest.mark.slow
def test_graph_with_unknown_sizes_equals_torch_on_every_size(data_format: str) -> None:
    """The hardest case, and the one ``predict`` ends up in: one trace, sizes known only at run time."""
    layer = AdaptiveAveragePooling2D(OUT, data_format=data_format)
    run = tf.function(layer, input_signature=[_spec(data_format, None, None)])
    worst, where = _worst(run, ALL_SIZES if data_format == "channels_last" else MANY_SIZES, data_format)
    assert worst <= POOL_RTOL, f"{worst:.2e} at {where}"
    assert len(run._list_all_concrete_functions()) == 1  # one trace served every size


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.slow
def test_eager_equals_torch(data_format: str) -> None:
    layer = AdaptiveAveragePooling2D(OUT, data_format=data_format)
    sizes = MANY_SIZES if data_format == "channels_last" else FEW_SIZES + [(s, s) for s in SIDES]
    worst, where = _worst(layer, sizes, data_format)
    assert worst <= POOL_RTOL, f"{worst:.2e} at {where}"


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("unknown", ["height", "width"])
@pytest.mark.slow
def test_graph_with_one_unknown_side_equals_torch(data_format: str, unknown: str) -> None:
    layer = AdaptiveAveragePooling2D(OUT, data_format=data_format)
    for known in FEW_SIDES:
        h, w = (None, known) if unknown == "height" else (known, None)
        run = tf.function(layer, input_signature=[_spec(data_format, h, w)])
        sizes = [(side, known) if unknown == "height" else (known, side) for side in SIDES]
        worst, where = _worst(run, sizes, data_format)
        assert worst <= POOL_RTOL, f"{worst:.2e} at {where}"


@pytest.mark.parametrize("data_format", ["channels_last", pytest.param("channels_first", marks=pytest.mark.extended)])
@pytest.mark.parametrize("jit_compile", [False, True], ids=["static-graph", "xla"])
@pytest.mark.slow
def test_static_graph_and_xla_equal_torch(data_format: str, jit_compile: bool) -> None:
    layer = AdaptiveAveragePooling2D(OUT, data_format=data_format)
    run = tf.function(layer, jit_compile=jit_compile, reduce_retracing=False)
    sides = XLA_SIDES if jit_compile else FEW_SIDES
    worst, where = _worst(run, [(h, w) for h in sides for w in sides], data_format)
    assert worst <= POOL_RTOL, f"{worst:.2e} at {where}"


@pytest.mark.parametrize("data_format", FORMATS)
def test_output_size_input_is_returned_unchanged(data_format: str) -> None:
    """A 7x7 map (a VGG at 224 px) costs nothing: no averaging op is traced."""
    layer = AdaptiveAveragePooling2D(OUT, data_format=data_format)
    x = _batch(7, 7, data_format)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(x.shape, tf.float32)).graph
    assert not {op.type for op in graph.get_operations()} & {"Einsum", "MatMul", "BatchMatMulV3"}


def _pool_model(data_format: str) -> keras.Model:
    shape = (None, None, CHANNELS) if data_format == "channels_last" else (CHANNELS, None, None)
    inputs = keras.Input(shape)
    return keras.Model(inputs, AdaptiveAveragePooling2D(OUT, data_format=data_format)(inputs))


@pytest.mark.parametrize("data_format", FORMATS)
def test_predict_on_changing_sizes_equals_torch(data_format: str) -> None:
    """predict retraces with relaxed (unknown) sizes once it sees a second size."""
    model = _pool_model(data_format)
    sizes = [(1, 1), (64, 64), (5, 70), (70, 5), (7, 7), (2, 3), (33, 33)]
    worst, where = _worst(lambda x: model.predict(x, verbose=0), sizes, data_format)
    assert worst <= POOL_RTOL, f"{worst:.2e} at {where}"


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.slow
def test_fit_and_evaluate_run_at_every_kind_of_size(data_format: str, jit_compile: bool) -> None:
    """Gradients flow through the pool in training graphs, 1 px sides included."""
    shape = (None, None, CHANNELS) if data_format == "channels_last" else (CHANNELS, None, None)
    inputs = keras.Input(shape)
    x = AdaptiveAveragePooling2D(OUT, data_format=data_format)(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten(data_format=data_format)(x))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(1e-3), keras.losses.MeanSquaredError(), jit_compile=jit_compile)
    for h, w in [(1, 1), (3, 50), (14, 14)]:
        x_train = _batch(h, w, data_format)
        y = np.ones((2, 2), np.float32)
        losses = model.fit(x_train, y, epochs=3, batch_size=2, verbose=0).history["loss"]
        assert losses[-1] < losses[0], (h, w, losses)
        assert np.isfinite(model.evaluate(x_train, y, verbose=0))


@pytest.mark.parametrize("data_format", FORMATS)
def test_exported_saved_model_equals_torch_at_any_size(data_format: str, tmp_path: Path) -> None:
    model = _pool_model(data_format)
    model.export(tmp_path / "pool", format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "pool")).serve
    worst, where = _worst(served, [(1, 1), (1, 70), (70, 1), (6, 9), (7, 7), (64, 64)], data_format)
    assert worst <= POOL_RTOL, f"{worst:.2e} at {where}"


def test_config_round_trip() -> None:
    layer = AdaptiveAveragePooling2D((3, 5), data_format="channels_first", name="p")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(clone, AdaptiveAveragePooling2D)
    assert (clone.output_size, clone.data_format, clone.name) == ((3, 5), "channels_first", "p")
    assert AdaptiveAveragePooling2D(4).output_size == (4, 4)


@pytest.mark.parametrize("bad", [0, (7,), (7, 0), (7.0, 7), True])
def test_bad_output_size_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"`output_size` must be .* Received: output_size="):
        AdaptiveAveragePooling2D(bad)  # type: ignore[arg-type]


def test_wrong_window_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison bites: windows ending at floor((i+1)*H/out) (a common slip) are caught."""

    def floor_end(size: object, out: int, dtype: str) -> object:
        i = keras.ops.arange(out, dtype="int32")
        size = keras.ops.cast(size, "int32")
        start, end = (i * size) // out, ((i + 1) * size) // out
        j = keras.ops.arange(size, dtype="int32")
        inside = keras.ops.logical_and(j[None, :] >= start[:, None], j[None, :] < end[:, None])
        count = keras.ops.maximum(end - start, 1)
        return keras.ops.cast(inside, dtype) / keras.ops.cast(count, dtype)[:, None]

    monkeypatch.setattr(vgg_keras.layers, "_averaging_matrix", floor_end)
    worst, _ = _worst(AdaptiveAveragePooling2D(OUT), [(10, 10), (3, 3)], "channels_last")
    assert worst > 100 * POOL_RTOL


@pytest.mark.parametrize(
    "spec, x_shape, error",
    [
        ((None, 1, 1, CHANNELS), (2, 1, 1, CHANNELS), "Negative dimension size"),
        ((None, None, None, CHANNELS), (2, 9, 9, CHANNELS), "statically known"),
    ],
    ids=["1px-side", "unknown-size"],
)
def test_stock_keras_layer_still_fails_in_graphs(
    spec: tuple[int | None, ...], x_shape: tuple[int, ...], error: str
) -> None:
    """Why this layer exists: keras.layers.AdaptiveAveragePooling2D cannot be traced in these cases.

    When this starts passing, Keras has fixed it and the stock layer may serve again.
    """
    stock = keras.layers.AdaptiveAveragePooling2D(OUT)
    run = tf.function(stock, input_signature=[tf.TensorSpec(spec, tf.float32)])
    with pytest.raises(ValueError, match=error):
        run(np.zeros(x_shape, np.float32))

"""A direct call (``model(x)`` in eager mode) runs compiled on TensorFlow and JAX, and means the same as eager.

:class:`vgg_keras.vgg_model.VGGModel` runs an eager inference call as a
``tf.function`` on TensorFlow (one per image size and dtype) and as one
``jax.jit`` of ``stateless_call`` on JAX (in a child process). These tests pin
what that may not change: the result (against op-by-op eager with
``run_eagerly=True`` and against torch), new weights, gradients,
``stateless_call``, training calls, and the one-line size error. Each claim is
shown to bite where a plausible mistake would pass it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

from parity.compare import build_pair, compare_outputs, keras_forward, torch_forward
from parity.convert.random_weights import randomized_state_dict
from tests.conftest import TINY_BN, child_result

#: The graph's kernels (fused by TensorFlow's optimizer) differ with oneDNN on and off: CI runs this file both ways.
pytestmark = pytest.mark.cpu_kernels

#: Graph against op-by-op eager: TensorFlow's graph optimizer fuses the bias, batch norm and ReLU into the
#: convolution, which may change float32 rounding only. Measured 0 (bit-identical) on Zen 4 with oneDNN on and
#: off, on this tiny config and on vgg11_bn at 224 px; batch norm in training mode, stale weights or float32
#: kernels after ``quantize`` are off by 1e-4 or more.
GRAPH_VS_EAGER_RTOL = 1e-5
#: Layer outputs alive at once during an eager call of a chain: the one a layer reads, the one it returns,
#: and the input images, which ``predictions`` reads at the end (for the NaN mask).
MOST_LIVE_OUTPUTS = 3


def _pair(seed: int = 0) -> tuple[object, keras.Model]:
    """torch and Keras models with the same weights, every tensor random (BN statistics and biases too)."""
    return build_pair(TINY_BN, randomized_state_dict(TINY_BN, seed=seed))


def _images(batch: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 32, 32, 3)).astype(np.float32)


def _eager(model: keras.Model, x: object, **kwargs: object) -> np.ndarray:
    """The op-by-op eager result (``run_eagerly``), restoring the flag after."""
    model.run_eagerly = True
    try:
        return keras.ops.convert_to_numpy(model(x, **kwargs))
    finally:
        model.run_eagerly = False


def _rel(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.max(np.abs(reference - candidate)) / np.max(np.abs(reference)))


def _graphs(model: keras.Model) -> dict[object, object]:
    return model.__dict__.get("_call_graphs", {}).get("by_spec", {})


def test_direct_call_runs_one_graph_for_any_batch_and_matches_eager() -> None:
    _, model = _pair()
    for batch in (1, 3, 0):
        x = _images(batch)
        got = keras.ops.convert_to_numpy(model(x))
        assert got.shape == (batch, TINY_BN.num_classes)
        if batch:
            assert _rel(_eager(model, x), got) <= GRAPH_VS_EAGER_RTOL
    assert len(_graphs(model)) == 1, "every batch size shares the graph of its image size"
    model(_images(2)[:, :24, :24])
    assert len(_graphs(model)) == 2, "another image size gets its own graph"


def test_direct_call_matches_torch() -> None:
    torch_model, model = _pair()
    x = _images(4)
    reference = torch_forward(torch_model, x.transpose(0, 3, 1, 2))
    blocks = keras_forward(model, x.transpose(0, 3, 1, 2))  # probe model: op by op, for the block outputs
    blocks["logits"] = keras.ops.convert_to_numpy(model(x))
    compare_outputs(reference, blocks).check()
    assert _graphs(model), "the logits came from the graph"


def test_a_training_call_stays_eager_and_differs() -> None:
    """Batch norm on batch statistics: the check that bites if the graph ran in training mode."""
    _, model = _pair()
    x = _images(4)
    training = keras.ops.convert_to_numpy(model(x, training=True))
    inference = keras.ops.convert_to_numpy(model(x))
    assert _rel(inference, training) > 100 * GRAPH_VS_EAGER_RTOL
    assert _rel(_eager(model, x), inference) <= GRAPH_VS_EAGER_RTOL


def test_new_weights_reach_the_graph() -> None:
    _, model = _pair(seed=0)
    _, other = _pair(seed=5)
    x = _images(2)
    before = keras.ops.convert_to_numpy(model(x))
    model.set_weights(other.get_weights())
    after = keras.ops.convert_to_numpy(model(x))
    assert _rel(before, after) > 100 * GRAPH_VS_EAGER_RTOL
    assert _rel(_eager(other, x), after) <= GRAPH_VS_EAGER_RTOL


def test_gradients_match_eager() -> None:
    _, model = _pair()
    x = tf.constant(_images(2))
    grads = {}
    for mode in ("graph", "eager"):
        model.run_eagerly = mode == "eager"
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(model(x) ** 2)
        grads[mode] = [np.asarray(g) for g in tape.gradient(loss, [x, *model.trainable_variables])]
    model.run_eagerly = False
    for graph, eager in zip(grads["graph"], grads["eager"], strict=True):
        assert _rel(eager, graph) <= GRAPH_VS_EAGER_RTOL


def test_stateless_call_uses_the_given_variables() -> None:
    _, model = _pair(seed=0)
    _, other = _pair(seed=5)
    x = _images(2)
    model(x)  # a graph exists, holding model's own variables
    trainable = [keras.ops.convert_to_tensor(v) for v in other.trainable_variables]
    non_trainable = [keras.ops.convert_to_tensor(v) for v in other.non_trainable_variables]
    got, _ = model.stateless_call(trainable, non_trainable, x)
    assert _rel(_eager(other, x), keras.ops.convert_to_numpy(got)) <= GRAPH_VS_EAGER_RTOL


def test_run_eagerly_keeps_op_by_op_calls() -> None:
    _, model = _pair()
    model.compile(run_eagerly=True)
    model(_images(1))
    assert not _graphs(model)


def test_too_small_input_gives_the_one_line_error() -> None:
    _, model = _pair()
    model(_images(1))  # a graph for 32 px exists; the next size still gets the eager error
    side = TINY_BN.min_input_size
    with pytest.raises(ValueError, match=rf"^Input images must be at least {side}x{side} px.*\(1, {side - 1}, 9, 3\)$"):
        model(_images(1)[:, : side - 1, :9])


@pytest.mark.filterwarnings("ignore:Layer .* does not have a `quantize` method:UserWarning")  # weightless layers
def test_a_quantized_model_gets_a_new_graph() -> None:
    """``quantize`` replaces the kernels; a graph holding the old ones would still give float32 results."""
    _, model = _pair()
    x = _images(2)
    before = keras.ops.convert_to_numpy(model(x))
    model.quantize("int8")
    after = keras.ops.convert_to_numpy(model(x))
    assert _rel(before, after) > 10 * GRAPH_VS_EAGER_RTOL, "int8 weights change the logits"
    assert _rel(_eager(model, x), after) <= GRAPH_VS_EAGER_RTOL


def _most_live_outputs(walk: Callable[..., object], x: np.ndarray) -> int:
    """Runs a model's graph ``walk`` op by op; the most layer outputs alive at once (held by the walk)."""
    alive: list[weakref.ref] = []
    most = 0

    def recording(operation: object) -> object:
        def run(*args: object, **kwargs: object) -> object:
            nonlocal most
            out = operation(*args, **kwargs)  # no training flag: every layer infers
            alive.append(weakref.ref(out))
            most = max(most, len({id(ref()) for ref in alive if ref() is not None}))  # identity layers: one
            return out

        return run

    walk(keras.ops.convert_to_tensor(x), operation_fn=recording)
    return most


def test_the_walk_drops_each_output_after_its_last_reader() -> None:
    """An eager call holds a few activations at a time, as torch's modules do, not every layer's."""
    _, model = _pair()
    x = _images(1)
    assert _most_live_outputs(model._run_through_graph, x) <= MOST_LIVE_OUTPUTS
    keras_walk = super(type(model), model)._run_through_graph  # Keras' own: keeps every output to the end
    assert _most_live_outputs(keras_walk, x) > 2 * MOST_LIVE_OUTPUTS, "the count bites"


_JAX_SCRIPT = r"""
import json
import jax, keras, numpy as np
import vgg_keras
from parity.convert.random_weights import randomized_state_dict
from parity.convert.weight_arrays import assign_keras_weights, convert_state_dict
from parity.core.config import VGGConfig

config = VGGConfig.from_dict(json.loads(__import__("os").environ["CONFIG"]))
models = [vgg_keras.build_vgg(config, classifier_activation=None) for _ in range(2)]
for seed, model in enumerate(models):  # every tensor random, BN statistics and biases too
    assign_keras_weights(model, convert_state_dict(randomized_state_dict(config, seed=seed), config))
model, other = models
x = np.random.default_rng(9).standard_normal((3, 32, 32, 3)).astype(np.float32)

def eager(m, a, **kw):
    m.run_eagerly = True
    try:
        return np.asarray(m(a, **kw))
    finally:
        m.run_eagerly = False

def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))

out = {}
direct = np.asarray(model(x))
out["jitted"] = "_jitted_forward" in model.__dict__
out["vs_eager"] = rel(eager(model, x), direct)
out["in_jit"] = rel(direct, np.asarray(jax.jit(lambda a: model(a))(x)))
out["training_vs_inference"] = rel(direct, np.asarray(model(x, training=True)))  # moves the BN statistics
model.set_weights(other.get_weights())
out["new_weights"] = rel(eager(other, x), np.asarray(model(x)))
side = config.min_input_size
try:
    model(x[:, : side - 1])
    out["error"] = None
except ValueError as e:
    out["error"] = str(e)
print("RESULT " + json.dumps(out))
"""


def test_direct_call_on_jax_runs_one_jit_and_matches_eager() -> None:
    pytest.importorskip("jax")
    out = child_result(_JAX_SCRIPT, "jax", TINY_BN)
    assert out["jitted"] and out["vs_eager"] <= GRAPH_VS_EAGER_RTOL, out
    assert out["training_vs_inference"] > 100 * GRAPH_VS_EAGER_RTOL, out  # the comparison bites
    assert out["in_jit"] <= GRAPH_VS_EAGER_RTOL and out["new_weights"] <= GRAPH_VS_EAGER_RTOL, out
    assert out["error"] and out["error"].startswith("Input images must be at least"), out
    assert "\n" not in out["error"], out

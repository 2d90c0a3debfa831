"""The model class :func:`vgg_keras.build_vgg` returns: Keras' functional model, faster and safer to call.

* **No samples.** Keras' ``predict`` fails on an empty array
  (``UnboundLocalError`` inside its loop, on every backend); this one calls the
  model once instead, which gives the same empty result as an eager call.
* **JAX on the CPU.** XLA:CPU (JAX 0.10) hands a VGG's whole chain of
  convolutions, ReLUs and pools to YNNPACK as one fusion; at batch 8 on a 224 px
  vgg16 that ran 0.56x as fast as XLA's own per-op kernels with the fusion off
  (2.85 s against 1.42 s; docs/backends.md). The predict function is compiled
  with ``compiler_options`` that leave YNNPACK single matrix products only
  (:data:`JAX_CPU_COMPILER_OPTIONS`), for this model's ``predict``
  and ``predict_on_batch`` only, when the default JAX backend is the CPU, the
  option exists in this jaxlib, and ``XLA_FLAGS`` does not set it already.
  It does so by wrapping Keras' private ``keras.src.backend.jax.trainer.jit``
  while Keras builds the predict function.
* **A direct call on TensorFlow.** ``model(x)`` in eager mode runs each op on
  its own: the convolution, its bias add, batch norm's multiply and add, the
  ReLU, one pass over the activations each; at batch 1 that made the call no
  faster than torch eager (docs/backends.md). An inference call here
  (``training`` not true, no mask, eager, ``run_eagerly`` not set, no
  stateless scope) runs a ``tf.function`` of the same forward instead, which
  TensorFlow's graph optimizer fuses as it does for ``predict``. One graph is
  traced per image size, dtype and set of variables, for any batch size; the
  input's shape is checked before, so a wrong size raises the same one-line
  error as in eager mode. ``model.run_eagerly = True`` (or ``compile(...,
  run_eagerly=True)``) keeps op-by-op eager calls, for debugging.
* **A direct call on JAX.** Likewise an eager inference call on JAX (a
  concrete array, not a tracer inside the user's own ``jax.jit``) runs one
  ``jax.jit`` of ``stateless_call`` with the variables' current values passed
  in, compiled with the same options as ``predict``: op by op it ran vgg11_bn at
  batch 1 in 130–145 ms, jitted in 95 ms, as ``predict_on_batch``.
  ``run_eagerly`` keeps op by op here too.
* **Activations freed after their last use.** Keras' functional model keeps
  every layer's output until the call ends. In eager mode (torch, and op-by-op
  TensorFlow or JAX) each output is then a fresh allocation that the operating
  system has to map page by page: on the torch backend at batch 1 the batch
  norms and ReLUs of vgg11_bn took 2x and 9x torch's own time for that
  (``torch.profiler``: 25.2 ms against 11.6, and 28.0 against 3.1, over 3 calls). Here
  an output is dropped once the last layer that reads it has run, as torch's
  own modules do, so its memory is reused; a traced call (``tf.function``,
  ``jax.jit``) is unaffected.

Everything else is Keras' functional model: same layers, weights, config and
saving (the class is registered, so a ``.keras`` file needs ``import vgg_keras``
before loading, as its layers do).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
from collections.abc import Callable, Iterator

import keras

from vgg_keras.checks import InputCheck

__all__ = ["JAX_CPU_COMPILER_OPTIONS", "VGGModel", "jax_cpu_compiler_options"]

#: Most graphs a model keeps for its direct call on TensorFlow (one per image size and dtype); the oldest
#: goes when a new one would pass this.
MAX_CALL_GRAPHS = 8

#: XLA options for the JAX predict function on the CPU: YNNPACK only for single matrix products, so the
#: convolutions, ReLUs and pools stay XLA's own kernels (see the module docstring). The list cannot be
#: edited with ``-TYPE`` entries here (``compiler_options`` takes whole enum values), and the value
#: ``LIBRARY_FUSION_TYPE_INVALID`` turns YNN fusion off too but logs an error line per compile.
JAX_CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@keras.saving.register_keras_serializable(package="vgg_keras")
class VGGModel(keras.Model):
    """Keras' functional model, faster to call and to ``predict`` on every backend (see the module docstring).

    Args:
        inputs: The model's input tensor.
        outputs: Its output tensor.
        name: The model's name.
        **kwargs: ``keras.Model`` arguments.

    Examples:
        >>> import numpy as np
        >>> import vgg_keras
        >>> from parity.core.config import VGGConfig
        >>> model = vgg_keras.build_vgg(VGGConfig(stages=((4,), (8,)), hidden=(8,), num_classes=3))
        >>> model.predict(np.zeros((0, 32, 32, 3), np.float32), verbose=0).shape
        (0, 3)
    """

    def __init__(self, inputs: object, outputs: object, name: str | None = None, **kwargs: object) -> None:
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

    def call(self, inputs: object, training: bool | None = None, mask: object = None, **kwargs: object) -> object:
        """The forward pass; an eager inference call on TensorFlow or JAX runs it compiled (module docstring)."""
        if not (training or mask is not None or kwargs):
            if self._call_in_graph():
                return self._call_graph(inputs)
            if self._call_jitted_applies(inputs):
                return self._call_jitted(inputs)
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def _run_through_graph(
        self, inputs: object, operation_fn: Callable[[object], object] = lambda op: op, call_fn: object = None
    ) -> object:
        """Keras' graph walk (``keras.src.ops.function.Function``), dropping each output after its last reader."""
        from keras.src import tree

        if call_fn is not None:  # symbolic execution: nothing is allocated
            return super()._run_through_graph(inputs, operation_fn=operation_fn, call_fn=call_fn)
        tensors = {id(x): y for x, y in zip(self.inputs, tree.flatten(inputs), strict=True)}
        nodes = [
            node
            for depth in sorted(self._nodes_by_depth, reverse=True)
            for node in self._nodes_by_depth[depth]
            if node.operation and not node.is_input
        ]
        readers = collections.Counter(id(x) for node in nodes for x in node.input_tensors)
        readers.update(id(x) for x in self.outputs)  # the outputs are never dropped
        for node in nodes:
            if any(id(x) not in tensors for x in node.input_tensors):
                continue  # not computable from these inputs, as in Keras' walk
            args, kwargs = node.arguments.fill_in(tensors)
            outputs = operation_fn(self._get_operation_for_node(node))(*args, **kwargs)
            del args, kwargs
            for x in node.input_tensors:
                readers[id(x)] -= 1
                if readers[id(x)] == 0:
                    tensors.pop(id(x), None)
            tensors.update((id(x), y) for x, y in zip(node.outputs, tree.flatten(outputs), strict=True))
        for i, x in enumerate(self.outputs):
            if id(x) not in tensors:
                raise ValueError(f"Output {i} is not connected to the model's inputs. Received: output {x}")
        return tree.pack_sequence_as(self._outputs_struct, [tensors[id(x)] for x in self.outputs])

    def _call_in_graph(self) -> bool:
        """Whether this call may run as a ``tf.function``: eager TensorFlow, not asked to run eagerly."""
        if keras.backend.backend() != "tensorflow" or self.run_eagerly:
            return False
        import tensorflow as tf
        from keras.src.backend.common.stateless_scope import in_stateless_scope

        return tf.executing_eagerly() and not tf.config.functions_run_eagerly() and not in_stateless_scope()

    def _check_input_shape(self, shape: tuple[int | None, ...]) -> None:
        """The input check's eager one-line error, raised before anything is traced."""
        for layer in self.layers:
            if isinstance(layer, InputCheck):
                layer.check_shape(shape)

    def _call_jitted_applies(self, inputs: object) -> bool:
        """Whether this call may run as one ``jax.jit``: JAX, a concrete array, not asked to run eagerly."""
        if keras.backend.backend() != "jax" or self.run_eagerly or not hasattr(inputs, "shape"):
            return False
        import jax
        from keras.src.backend.common.stateless_scope import in_stateless_scope

        return not isinstance(inputs, jax.core.Tracer) and not in_stateless_scope()

    def _call_jitted(self, inputs: object) -> object:
        """Runs the forward as one ``jax.jit`` of ``stateless_call``, the variables' current values passed in."""
        import jax

        self._check_input_shape(tuple(inputs.shape))
        forward = self.__dict__.get("_jitted_forward")
        if forward is None:

            def stateless(trainable: list[object], non_trainable: list[object], x: object) -> object:
                return self.stateless_call(trainable, non_trainable, x, training=False)[0]

            forward = jax.jit(stateless, compiler_options=jax_cpu_compiler_options() or None)
            object.__setattr__(self, "_jitted_forward", forward)  # untracked: not a layer or weight
        trainable = [v.value for v in self.trainable_variables]
        return forward(trainable, [v.value for v in self.non_trainable_variables], inputs)

    def _call_graph(self, inputs: object) -> object:
        """Runs the forward as a concrete function for this image size and dtype, any batch size."""
        import tensorflow as tf

        x = tf.convert_to_tensor(inputs)
        self._check_input_shape(tuple(x.shape))  # the eager one-line error, not a traced one
        graphs = self.__dict__.get("_call_graphs")
        variables = tuple(id(v) for v in self.variables)
        if graphs is None or graphs["variables"] != variables:  # new model, or weights replaced (e.g. quantized)
            graphs = {"variables": variables, "by_spec": {}}
            object.__setattr__(self, "_call_graphs", graphs)  # untracked: not a layer, weight or saved function
        key = (tuple(x.shape[1:]), x.dtype.name)
        by_spec = graphs["by_spec"]
        if key not in by_spec:
            if len(by_spec) >= MAX_CALL_GRAPHS:
                del by_spec[next(iter(by_spec))]
            forward = tf.function(functools.partial(super().call, training=False), autograph=False)
            by_spec[key] = forward.get_concrete_function(tf.TensorSpec((None, *x.shape[1:]), x.dtype))
        return by_spec[key](x)

    def predict(
        self,
        x: object,
        batch_size: int | None = None,
        verbose: str | int = "auto",
        steps: int | None = None,
        callbacks: object = None,
    ) -> object:
        """``keras.Model.predict``; an array-like with 0 samples gives 0 rows instead of Keras' error."""
        shape = getattr(x, "shape", None)
        if shape is not None and len(shape) > 0 and shape[0] == 0:
            return keras.ops.convert_to_numpy(self(x, training=False))
        return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    def make_predict_function(self, force: bool = False) -> object:
        """Keras' predict function; on JAX's CPU compiled with :data:`JAX_CPU_COMPILER_OPTIONS`."""
        with _jax_jit_options(jax_cpu_compiler_options()):
            return super().make_predict_function(force=force)


def jax_cpu_compiler_options() -> dict[str, str]:
    """The options the predict function gets here: :data:`JAX_CPU_COMPILER_OPTIONS`, or ``{}`` where they do not apply.

    Empty unless Keras runs on JAX with the CPU as the default backend, this
    jaxlib knows the option, and ``XLA_FLAGS`` leaves it to us.

    Returns:
        ``{option: value}`` for ``jax.jit(..., compiler_options=...)``.
    """
    if keras.backend.backend() != "jax" or any(k in os.environ.get("XLA_FLAGS", "") for k in JAX_CPU_COMPILER_OPTIONS):
        return {}
    return dict(JAX_CPU_COMPILER_OPTIONS) if _options_accepted() else {}


@functools.cache
def _options_accepted() -> bool:
    """Whether the default JAX backend is the CPU and compiles with the options (an older or newer jaxlib may not)."""
    import jax

    if jax.default_backend() != "cpu":
        return False
    try:
        jax.jit(lambda a: a + 1, compiler_options=JAX_CPU_COMPILER_OPTIONS)(1.0)
    except Exception:  # noqa: BLE001 - "No such compile option" is a JaxRuntimeError; any failure means no
        return False
    return True


@contextlib.contextmanager
def _jax_jit_options(options: dict[str, str]) -> Iterator[None]:
    """While Keras' JAX trainer builds a step function, its ``jit`` passes ``options`` to ``jax.jit``."""
    if not options:
        yield
        return
    import jax
    from keras.src.backend.jax import trainer

    if trainer.jit is not jax.jit:  # Flax NNX's jit, or another wrapper: leave it alone
        yield
        return
    trainer.jit = functools.partial(jax.jit, compiler_options=options)
    try:
        yield
    finally:
        trainer.jit = jax.jit

"""The model class :func:`vgg_keras.build_vgg` returns: Keras' functional model with two fixes to ``predict``.

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

Everything else is Keras' functional model: same layers, weights, config and
saving (the class is registered, so a ``.keras`` file needs ``import vgg_keras``
before loading, as its layers do).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import keras

__all__ = ["JAX_CPU_COMPILER_OPTIONS", "VGGModel", "jax_cpu_compiler_options"]

#: XLA options for the JAX predict function on the CPU: YNNPACK only for single matrix products, so the
#: convolutions, ReLUs and pools stay XLA's own kernels (see the module docstring). The list cannot be
#: edited with ``-TYPE`` entries here (``compiler_options`` takes whole enum values), and the value
#: ``LIBRARY_FUSION_TYPE_INVALID`` turns YNN fusion off too but logs an error line per compile.
JAX_CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@keras.saving.register_keras_serializable(package="vgg_keras")
class VGGModel(keras.Model):
    """Keras' functional model; ``predict`` gives 0 rows on 0 samples, and on JAX's CPU compiles without YNN fusion.

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

"""Layers the VGG builder needs beyond stock Keras.

``Conv2D`` fixes a wrong result of ``keras.layers.Conv2D`` with
``data_format="channels_first"`` on the TensorFlow backend: its bias add goes
through ``keras.ops.add``, which treats a ``(1, C, 1, 1)`` operand as a bias and
picks ``tf.nn.bias_add(..., data_format="NHWC")`` whenever the *width* of the
NCHW output equals its channel count, adding the bias along the width axis
instead. A VGG at 64x64 input hits it in block 1 (64 px, 64 channels). The class
keeps the name ``Conv2D`` so weight files stay interchangeable with
keras.applications (Keras addresses layers in ``.weights.h5`` by class name).

``Unfilled`` is the kernel initializer of models whose weights are loaded right
after they are built: the load replaces every kernel, so filling 138M
parameters first would only cost time and memory.
"""

from __future__ import annotations

import keras

__all__ = ["Conv2D", "Unfilled"]


@keras.saving.register_keras_serializable(package="vgg_keras")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with a channels-first bias add that is always right."""

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        """Convolves, adds the bias on the channel axis, applies the activation."""
        if not (self.use_bias and self.data_format == "channels_first"):
            return super().call(inputs)
        outputs = self.convolution_op(inputs, self.kernel)
        bias = keras.ops.reshape(self.bias, (1, self.filters) + (1,) * self.rank)
        # Bias first: keras.ops.add only takes its bias_add shortcut when the
        # *second* operand looks like a bias.
        outputs = keras.ops.add(bias, outputs)
        return self.activation(outputs) if self.activation is not None else outputs


@keras.saving.register_keras_serializable(package="vgg_keras")
class Unfilled(keras.initializers.Initializer):
    """Kernel memory for weights that are loaded before any use.

    On TensorFlow it returns uninitialized memory (``tf.raw_ops.Empty`` with
    ``init=False``), which the operating system does not even back with pages
    until the load writes them; on other backends, zeros. Its values are
    undefined: use it only where a strict load overwrites every kernel (as
    ``build_vgg(..., weights=...)`` does).
    """

    def __call__(self, shape: tuple[int, ...], dtype: str | None = None) -> object:
        """Returns a tensor of ``shape`` whose values are undefined."""
        dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return tf.raw_ops.Empty(shape=shape, dtype=tf.as_dtype(dtype), init=False)
        return keras.ops.zeros(shape, dtype=dtype)

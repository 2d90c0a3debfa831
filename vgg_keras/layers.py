"""Layers the VGG builder needs beyond stock Keras.

``Conv2D`` fixes a wrong result of ``keras.layers.Conv2D`` with
``data_format="channels_first"`` on the TensorFlow backend: its bias add goes
through ``keras.ops.add``, which treats a ``(1, C, 1, 1)`` operand as a bias and
picks ``tf.nn.bias_add(..., data_format="NHWC")`` whenever the *width* of the
NCHW output equals its channel count, adding the bias along the width axis
instead. A VGG at 64x64 input hits it in block 1 (64 px, 64 channels). The class
keeps the name ``Conv2D`` so weight files stay interchangeable with
keras.applications (Keras addresses layers in ``.weights.h5`` by class name).
"""

from __future__ import annotations

import keras

__all__ = ["Conv2D"]


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

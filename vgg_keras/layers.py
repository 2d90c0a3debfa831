"""Layers the VGG builder needs beyond stock Keras.

``Conv2D`` fixes a wrong result of ``keras.layers.Conv2D`` with
``data_format="channels_first"`` on the TensorFlow backend: its bias add goes
through ``keras.ops.add``, which treats a ``(1, C, 1, 1)`` operand as a bias and
picks ``tf.nn.bias_add(..., data_format="NHWC")`` whenever the *width* of the
NCHW output equals its channel count, adding the bias along the width axis
instead. A VGG at 64x64 input hits it in block 1 (64 px, 64 channels). The class
keeps the name ``Conv2D`` so weight files stay interchangeable with
keras.applications (Keras addresses layers in ``.weights.h5`` by class name).

``BatchNormalization`` updates its moving variance as ``torch.nn.BatchNorm2d``
updates ``running_var``: with the *unbiased* batch variance (``n / (n - 1)``
times the biased one that normalizes the batch), where Keras' layer uses the
biased one. Its weights, their order and their names are Keras' own (gamma,
beta, moving_mean, moving_variance), and it keeps the class name, so files
stay interchangeable with models using ``keras.layers.BatchNormalization``.

``Unfilled`` is the kernel initializer of models whose weights are loaded right
after they are built: the load replaces every kernel, so filling 138M
parameters first would only cost time and memory.
"""

from __future__ import annotations

import keras

__all__ = ["BatchNormalization", "Conv2D", "Unfilled"]


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
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose moving variance follows torch's ``running_var``.

    In training, the batch is normalized with the biased batch variance (as
    both frameworks do), and the moving statistics become::

        moving_mean     = momentum * moving_mean     + (1 - momentum) * mean
        moving_variance = momentum * moving_variance + (1 - momentum) * variance * n / (n - 1)

    with ``n`` the number of values per channel (batch x height x width), as
    ``torch.nn.BatchNorm2d`` with ``momentum = 1 - momentum`` does. With
    ``renorm=True`` or a mask it behaves as Keras' layer.
    """

    def call(
        self, inputs: keras.KerasTensor, training: bool | None = None, mask: keras.KerasTensor | None = None
    ) -> keras.KerasTensor:
        """Normalizes the batch; in training, also updates the moving statistics as torch does."""
        if not (training and self.trainable) or self.renorm or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        ops = keras.ops
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        inputs = ops.cast(inputs, compute_dtype)
        mean, variance = self._moments(inputs, None)
        shape = ops.shape(inputs)
        count = 1
        for axis in self._reduction_axes:
            count = count * shape[axis]
        count = ops.cast(count, compute_dtype)
        # torch refuses a batch of one value per channel; avoid a division by zero there.
        unbiased = variance * (count / ops.maximum(count - 1.0, 1.0))
        momentum = self.momentum
        self.moving_mean.assign(ops.cast(self.moving_mean, compute_dtype) * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(ops.cast(self.moving_variance, compute_dtype) * momentum + unbiased * (1.0 - momentum))
        outputs = ops.batch_normalization(
            x=inputs,
            mean=mean,
            variance=variance,
            axis=self.axis,
            offset=ops.cast(self.beta, compute_dtype) if self.center else None,
            scale=ops.cast(self.gamma, compute_dtype) if self.scale else None,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)


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

"""Layers the VGG builder needs beyond stock Keras.

``Conv2D`` fixes a wrong result of ``keras.layers.Conv2D`` with
``data_format="channels_first"`` on the TensorFlow backend: its bias add goes
through ``keras.ops.add``, which treats a ``(1, C, 1, 1)`` operand as a bias and
picks ``tf.nn.bias_add(..., data_format="NHWC")`` whenever the *width* of the
NCHW output equals its channel count, adding the bias along the width axis
instead. A VGG at 64x64 input hits it in block 1 (64 px, 64 channels). The class
keeps the name ``Conv2D`` so weight files stay interchangeable with
keras.applications (Keras addresses layers in ``.weights.h5`` by class name).

``AdaptiveAveragePooling2D`` is ``torch.nn.AdaptiveAvgPool2d`` in every
execution mode. ``keras.layers.AdaptiveAveragePooling2D`` (Keras 3.15) is right
when called eagerly but, on the TensorFlow backend, it raises inside any traced
graph (``predict``, ``fit``, ``evaluate``, ``tf.function``, XLA, export) in two
cases: when a spatial size is unknown (``Input spatial dimensions must be
statically known``), which is what ``predict`` traces once it sees a second
input size; and when a side of the map is 1 px (a VGG at 32-63 px), where its
"big" pooling window of 2 does not fit (``Negative dimension size``).

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

from vgg_keras import torch_kernels

__all__ = ["AdaptiveAveragePooling2D", "BatchNormalization", "Conv2D", "Unfilled"]


@keras.saving.register_keras_serializable(package="vgg_keras")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with a channels-first bias add that is always right.

    On the torch backend its kernel keeps the HWIO shape but sits in memory
    as torch's convolution reads it, and a stride-1 NCHW call runs torch's
    convolution with its bias directly (:mod:`vgg_keras.torch_kernels`).
    """

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Creates the kernel and bias; on torch, the kernel's memory is laid out as torch's convolution reads it."""
        if not torch_kernels.is_torch():
            return super().build(input_shape)
        initializer = self.kernel_initializer
        self.kernel_initializer = torch_kernels.KernelForTorch(initializer)
        try:
            super().build(input_shape)
        finally:
            self.kernel_initializer = initializer

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        """Convolves, adds the bias on the channel axis, applies the activation."""
        if self._torch_kernel_applies():
            bias = keras.ops.convert_to_tensor(self.bias) if self.use_bias else None
            kernel = keras.ops.convert_to_tensor(self.kernel)
            outputs = torch_kernels.conv2d(inputs, kernel, bias, self.padding, self.dilation_rate)
            return self.activation(outputs) if self.activation is not None else outputs
        if not (self.use_bias and self.data_format == "channels_first"):
            return super().call(inputs)
        outputs = self.convolution_op(inputs, self.kernel)
        bias = keras.ops.reshape(self.bias, (1, self.filters) + (1,) * self.rank)
        # Bias first: keras.ops.add only takes its bias_add shortcut when the
        # *second* operand looks like a bias.
        outputs = keras.ops.add(bias, outputs)
        return self.activation(outputs) if self.activation is not None else outputs

    def _torch_kernel_applies(self) -> bool:
        """Whether :func:`vgg_keras.torch_kernels.conv2d` computes this layer (torch, NCHW, stride 1, float)."""
        return (
            torch_kernels.is_torch()
            and self.data_format == "channels_first"
            and self.strides == (1, 1)
            and self.groups == 1
            and self.padding in ("same", "valid")
            and all(k % 2 == 1 for k in self.kernel_size)
            and getattr(self, "quantization_mode", None) is None
        )


@keras.saving.register_keras_serializable(package="vgg_keras")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose moving variance follows torch's ``running_var``.

    In training, the batch is normalized with the biased batch variance (as
    both frameworks do), and the moving statistics become::

        moving_mean     = momentum * moving_mean     + (1 - momentum) * mean
        moving_variance = momentum * moving_variance + (1 - momentum) * variance * n / (n - 1)

    with ``n`` the number of values per channel (batch x height x width), as
    ``torch.nn.BatchNorm2d`` with ``momentum = 1 - momentum`` does. With
    ``renorm=True`` or a mask it behaves as Keras' layer. Outside training on
    the torch backend, with the channels on axis 1, it runs torch's one-pass
    batch-norm kernel.
    """

    def call(
        self, inputs: keras.KerasTensor, training: bool | None = None, mask: keras.KerasTensor | None = None
    ) -> keras.KerasTensor:
        """Normalizes the batch; in training, also updates the moving statistics as torch does."""
        if not (training and self.trainable) and torch_kernels.is_torch() and self.axis == 1 and mask is None:
            return self._torch_inference(inputs)
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
        self.moving_variance.assign(
            ops.cast(self.moving_variance, compute_dtype) * momentum + unbiased * (1.0 - momentum)
        )
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

    def _torch_inference(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        """Normalizes with the moving statistics in torch's one-pass kernel (float32 statistics, as Keras)."""
        ops = keras.ops
        stats = [
            ops.cast(v, "float32") if use else None
            for v, use in (
                (self.moving_mean, True),
                (self.moving_variance, True),
                (self.gamma if self.scale else None, self.scale),
                (self.beta if self.center else None, self.center),
            )
        ]
        outputs = torch_kernels.batch_norm_inference(inputs, *stats, self.epsilon)
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="vgg_keras")
class Unfilled(keras.initializers.Initializer):
    """Kernel memory for weights that are loaded before any use.

    On TensorFlow and torch it returns uninitialized memory (``tf.raw_ops.Empty``
    with ``init=False``, ``torch.empty``), which the operating system does not
    even back with pages until the load writes them; on JAX, zeros. Its values are
    undefined: use it only where a strict load overwrites every kernel (as
    ``build_vgg(..., weights=...)`` does).
    """

    def __call__(self, shape: tuple[int, ...], dtype: str | None = None) -> object:
        """Returns a tensor of ``shape`` whose values are undefined."""
        dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.raw_ops.Empty(shape=shape, dtype=tf.as_dtype(dtype), init=False)
        if backend == "torch":
            import torch

            like = keras.ops.zeros((), dtype=dtype)  # the backend's dtype and device
            return torch.empty(shape, dtype=like.dtype, device=like.device)
        return keras.ops.zeros(shape, dtype=dtype)  # JAX has no uninitialized arrays


@keras.saving.register_keras_serializable(package="vgg_keras")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """``torch.nn.AdaptiveAvgPool2d``: average pooling to a fixed output size.

    Output cell ``(i, j)`` averages input rows ``floor(i*H/oh)`` to
    ``ceil((i+1)*H/oh) - 1`` and columns likewise, as torch does, for any input
    size: larger or smaller than the output, square or not, static or unknown
    until run time. It runs eagerly, in ``tf.function`` and XLA graphs, under
    ``predict``/``fit``/``evaluate``, in exported SavedModels, and on every
    Keras backend.

    How: each spatial axis is reduced by a small ``(out, in)`` averaging matrix
    built from the run-time size, so one code path serves static and unknown
    shapes. An input that is statically the output size is returned unchanged
    (a VGG at 224 px). On the torch backend, torch's own kernel runs.

    A non-finite input value spreads NaN to every output of its row or column
    (``0 * inf``), where torch confines it to the cells whose window holds it.

    Args:
        output_size: ``(height, width)`` of the output, or one int for both.
        data_format: ``"channels_last"`` or ``"channels_first"``; defaults to
            ``keras.config.image_data_format()``.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Raises:
        ValueError: If ``output_size`` is not one or two positive ints.
    """

    def __init__(self, output_size: int | tuple[int, int], data_format: str | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
            raise ValueError(
                "`output_size` must be a positive int or a (height, width) pair of them. "
                f"Received: output_size={output_size!r}"
            )
        self.output_size: tuple[int, int] = (size[0], size[1])
        data_format = data_format or keras.config.image_data_format()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(
                f"`data_format` must be 'channels_last' or 'channels_first'. Received: data_format={data_format!r}"
            )
        self.data_format: str = data_format
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @property
    def _height_axis(self) -> int:
        return 2 if self.data_format == "channels_first" else 1

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        """Pools ``inputs`` to ``output_size``."""
        axis = self._height_axis
        if tuple(inputs.shape[axis : axis + 2]) == self.output_size:
            return inputs
        if keras.backend.backend() == "torch":
            return keras.ops.adaptive_average_pool(inputs, self.output_size, data_format=self.data_format)
        shape = keras.ops.shape(inputs)
        rows = _averaging_matrix(shape[axis], self.output_size[0], inputs.dtype)
        cols = _averaging_matrix(shape[axis + 1], self.output_size[1], inputs.dtype)
        if self.data_format == "channels_first":
            x = keras.ops.einsum("ih,nchw->nciw", rows, inputs)
            return keras.ops.einsum("jw,nciw->ncij", cols, x)
        x = keras.ops.einsum("ih,nhwc->niwc", rows, inputs)
        return keras.ops.einsum("jw,niwc->nijc", cols, x)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """The input shape with its spatial sizes replaced by ``output_size``."""
        shape = list(input_shape)
        axis = self._height_axis
        shape[axis : axis + 2] = self.output_size
        return tuple(shape)

    def get_config(self) -> dict[str, object]:
        """The layer's config, for serialization."""
        return {**super().get_config(), "output_size": self.output_size, "data_format": self.data_format}


def _averaging_matrix(size: object, out: int, dtype: str) -> keras.KerasTensor:
    """The ``(out, size)`` matrix that averages torch's adaptive-pool windows.

    Row ``i`` holds ``1 / n_i`` on columns ``floor(i*size/out)`` to
    ``ceil((i+1)*size/out) - 1`` (``n_i`` of them) and zeros elsewhere.

    Args:
        size: The input length: an int, or a scalar tensor when it is known
            only at run time.
        out: The output length.
        dtype: The matrix dtype (the input's).

    Returns:
        A ``(out, size)`` tensor.
    """
    i = keras.ops.arange(out, dtype="int32")
    j = keras.ops.arange(size, dtype="int32")
    size = keras.ops.cast(size, "int32")
    start = (i * size) // out
    end = ((i + 1) * size + out - 1) // out
    inside = keras.ops.logical_and(j[None, :] >= start[:, None], j[None, :] < end[:, None])
    counts = keras.ops.cast(end - start, dtype)
    return keras.ops.cast(inside, dtype) / counts[:, None]

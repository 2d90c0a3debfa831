"""What the VGG layers run on Keras' torch backend: torch's own kernels, in the layout they want.

On the torch backend a VGG's layers compute in NCHW (see
:func:`vgg_keras.model.internal_data_format`). Keras stores a convolution
kernel as HWIO and, on every call, permutes it to torch's OIHW, and torch
then copies the permuted view into the memory order its CPU convolution
reads. Here the kernel variable keeps its HWIO shape (weight files, names and
shapes are unchanged) but its *memory* is laid out so that the OIHW view is
already in torch's ``channels_last`` format: the permute is a view and no
kernel is copied per call. A stride-1 convolution calls torch's kernel with
its bias (in training too: it is differentiable), and batch norm outside
training torch's one-pass kernel; batch norm in training keeps the layer's own
ops, so the moving statistics follow its rules.

Nothing here imports torch until a torch-backend layer runs.
"""

from __future__ import annotations

import keras

__all__ = [
    "KernelForTorch",
    "batch_norm_inference",
    "conv2d",
    "is_torch",
]

#: HWIO axes -> OIHW, torch's weight layout (a view, never a copy).
HWIO_TO_OIHW = (3, 2, 0, 1)
#: HWIO axes -> O, H, W, I: the memory order of an OIHW tensor in torch's channels_last format.
HWIO_TO_OHWI = (3, 0, 1, 2)
#: O, H, W, I axes -> HWIO (the inverse of :data:`HWIO_TO_OHWI`).
OHWI_TO_HWIO = (1, 2, 3, 0)


def is_torch() -> bool:
    """Whether Keras runs on its torch backend."""
    return keras.backend.backend() == "torch"


class KernelForTorch(keras.initializers.Initializer):
    """A convolution kernel initializer whose HWIO tensor sits in memory as O, H, W, I.

    The values are ``initializer``'s; only the strides differ, so that
    ``kernel.permute(3, 2, 0, 1)`` (OIHW) is contiguous in torch's
    ``channels_last`` memory format. In-place updates (``assign``, optimizer
    steps, weight loading) keep the strides.

    Args:
        initializer: The kernel's own initializer.
    """

    def __init__(self, initializer: keras.initializers.Initializer) -> None:
        self.initializer = initializer

    def __call__(self, shape: tuple[int, ...], dtype: str | None = None) -> object:
        """The initializer's HWIO tensor, in O, H, W, I memory order."""
        value = keras.ops.convert_to_tensor(self.initializer(shape, dtype=dtype), dtype=dtype)
        return value.permute(*HWIO_TO_OHWI).contiguous().permute(*OHWI_TO_HWIO)

    def get_config(self) -> dict[str, object]:
        """The wrapped initializer's config (this class is never serialized by the layers that use it)."""
        return keras.initializers.serialize(self.initializer)


def conv2d(inputs: object, kernel: object, bias: object | None, padding: str, dilation: tuple[int, int]) -> object:
    """A stride-1 NCHW convolution with torch's kernel, bias included.

    Args:
        inputs: NCHW tensor.
        kernel: The HWIO kernel (a view to OIHW is taken).
        bias: The bias, or ``None``.
        padding: ``"same"`` (odd kernel sizes) or ``"valid"``.
        dilation: Dilation per spatial axis.

    Returns:
        The NCHW output, in the input's memory format.
    """
    import torch

    weight = kernel.permute(*HWIO_TO_OIHW)
    pad: tuple[int, int] | int = 0
    if padding == "same":
        pad = tuple((k - 1) // 2 * d for k, d in zip(weight.shape[2:], dilation, strict=True))  # type: ignore[assignment]
    return torch.nn.functional.conv2d(inputs, weight, bias, padding=pad, dilation=dilation)


def batch_norm_inference(
    inputs: object, mean: object, variance: object, gamma: object | None, beta: object | None, epsilon: float
) -> object:
    """Batch norm with the moving statistics along axis 1, in one pass (torch's fused kernel).

    Args:
        inputs: NCHW tensor.
        mean: Moving mean.
        variance: Moving variance.
        gamma: Scale, or ``None``.
        beta: Offset, or ``None``.
        epsilon: Added to the variance.

    Returns:
        The normalized tensor, in the input's dtype and memory format.
    """
    import torch

    return torch.nn.functional.batch_norm(inputs, mean, variance, gamma, beta, False, 0.0, epsilon)

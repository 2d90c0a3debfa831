"""Named layout transforms between PyTorch tensors and Keras variables (numpy only).

Each function says its source and target layout. They return views where the
layout allows it; the one real reordering (the first dense layer's rows) makes
one copy of what it is given.

Every transform maps torch's first axis (output features) to Keras' last axis,
so ``f(x[a:b])`` equals ``f(x)[..., a:b]``: the file writer converts and writes
a large tensor a slab of output features at a time.

The inverse transforms (Keras -> torch) carry gradients and trained weights
back to torch's names and layouts; each undoes one forward transform exactly.

:func:`adapt_input_channels` is no layout change but a change of the first
convolution's input channels (RGB weights for a grey or multispectral input);
it works on either framework's kernel layout. :func:`can_adapt_input_channels`
says, from the channel counts alone, whether it would.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "KERAS_IN_AXIS",
    "TORCH_IN_AXIS",
    "adapt_input_channels",
    "can_adapt_input_channels",
    "conv_hwio_to_oihw",
    "conv_oihw_to_hwio",
    "conv_oihw_to_ohwi",
    "dense_columns_chw_to_hwc",
    "dense_in_out_to_out_in",
    "dense_out_in_to_in_out",
    "dense_rows_chw_to_hwc",
    "dense_rows_hwc_to_chw",
]

#: Input-channel axis of a conv kernel in torch's (out, in, kh, kw) layout.
TORCH_IN_AXIS = 1
#: Input-channel axis of a conv kernel in Keras' (kh, kw, in, out) layout.
KERAS_IN_AXIS = 2


def _check_flat_width(shape: tuple[int, ...], features: int, channels: int, height: int, width: int) -> None:
    """Refuses a first dense layer whose width is not ``channels*height*width`` (the flattened map's size)."""
    if features != channels * height * width:
        raise ValueError(
            f"A first dense layer after a {channels}x{height}x{width} feature map needs {channels * height * width} "
            f"inputs. Received: kernel.shape={shape}"
        )


def conv_oihw_to_hwio(kernel: np.ndarray) -> np.ndarray:
    """Conv kernel from torch's (out, in, kh, kw) to Keras' (kh, kw, in, out).

    Args:
        kernel: A 4D torch ``Conv2d.weight``.

    Returns:
        The Keras ``Conv2D.kernel`` (a transposed view).
    """
    return np.transpose(kernel, (2, 3, 1, 0))


def dense_out_in_to_in_out(kernel: np.ndarray) -> np.ndarray:
    """Dense kernel from torch's (out, in) to Keras' (in, out).

    Args:
        kernel: A 2D torch ``Linear.weight``.

    Returns:
        The Keras ``Dense.kernel`` (a transposed view).
    """
    return kernel.T


def dense_rows_chw_to_hwc(kernel: np.ndarray, channels: int, height: int, width: int) -> np.ndarray:
    """First dense layer after a flatten: torch's (out, C*H*W) to Keras' (H*W*C, out).

    torch flattens an NCHW feature map in C, H, W order; Keras' ``Flatten``
    flattens in H, W, C order (for ``channels_first`` models too: Keras moves the
    channels last before flattening). So input feature ``c*H*W + h*W + w`` of
    torch is feature ``h*W*C + w*C + c`` of Keras.

    Args:
        kernel: The torch ``Linear.weight``, shape ``(out, channels*height*width)``.
        channels: Channels of the flattened feature map.
        height: Its height.
        width: Its width.

    Returns:
        The Keras ``Dense.kernel``, shape ``(height*width*channels, out)``.

    Raises:
        ValueError: If the kernel's width is not ``channels*height*width``.
    """
    out, features = kernel.shape
    _check_flat_width(kernel.shape, features, channels, height, width)
    # (out, C, H, W) -> (H, W, C, out): one copy, made by the final reshape.
    return kernel.reshape(out, channels, height, width).transpose(2, 3, 1, 0).reshape(height * width * channels, out)


def conv_oihw_to_ohwi(kernel: np.ndarray) -> np.ndarray:
    """Conv kernel from torch's (out, in, kh, kw) to TFLite ``CONV_2D``'s (out, kh, kw, in).

    Args:
        kernel: A 4D torch ``Conv2d.weight``.

    Returns:
        The filter as TFLite stores it (a transposed view).
    """
    return kernel.transpose(0, 2, 3, 1)


def dense_columns_chw_to_hwc(kernel: np.ndarray, channels: int, height: int, width: int) -> np.ndarray:
    """First dense layer after a flatten: torch's (out, C*H*W) to TFLite ``FULLY_CONNECTED``'s (out, H*W*C).

    The same reordering as :func:`dense_rows_chw_to_hwc` (an NHWC map
    flattens in H, W, C order), with the kernel left in torch's (out, in)
    orientation, the one ``FULLY_CONNECTED`` reads.

    Args:
        kernel: The torch ``Linear.weight``, shape ``(out, channels*height*width)``.
        channels: Channels of the flattened feature map.
        height: Its height.
        width: Its width.

    Returns:
        The kernel, shape ``(out, height*width*channels)`` (one copy).

    Raises:
        ValueError: If the kernel's width is not ``channels*height*width``.
    """
    out, features = kernel.shape
    _check_flat_width(kernel.shape, features, channels, height, width)
    return kernel.reshape(out, channels, height, width).transpose(0, 2, 3, 1).reshape(out, features)


def conv_hwio_to_oihw(kernel: np.ndarray) -> np.ndarray:
    """Conv kernel from Keras' (kh, kw, in, out) to torch's (out, in, kh, kw); undoes :func:`conv_oihw_to_hwio`.

    Args:
        kernel: A 4D Keras ``Conv2D.kernel``.

    Returns:
        The torch ``Conv2d.weight`` (a transposed view).
    """
    return np.transpose(kernel, (3, 2, 0, 1))


def dense_in_out_to_out_in(kernel: np.ndarray) -> np.ndarray:
    """Dense kernel from Keras' (in, out) to torch's (out, in); undoes :func:`dense_out_in_to_in_out`.

    Args:
        kernel: A 2D Keras ``Dense.kernel``.

    Returns:
        The torch ``Linear.weight`` (a transposed view).
    """
    return kernel.T


def dense_rows_hwc_to_chw(kernel: np.ndarray, channels: int, height: int, width: int) -> np.ndarray:
    """First dense layer after a flatten: Keras' (H*W*C, out) to torch's (out, C*H*W).

    Undoes :func:`dense_rows_chw_to_hwc`: Keras' input feature ``h*W*C + w*C + c``
    is torch's ``c*H*W + h*W + w``.

    Args:
        kernel: The Keras ``Dense.kernel``, shape ``(height*width*channels, out)``.
        channels: Channels of the flattened feature map.
        height: Its height.
        width: Its width.

    Returns:
        The torch ``Linear.weight``, shape ``(out, channels*height*width)``.

    Raises:
        ValueError: If the kernel's height is not ``channels*height*width``.
    """
    features, out = kernel.shape
    _check_flat_width(kernel.shape, features, channels, height, width)
    # (H, W, C, out) -> (out, C, H, W): one copy, made by the final reshape.
    return kernel.reshape(height, width, channels, out).transpose(3, 2, 0, 1).reshape(out, channels * height * width)


def can_adapt_input_channels(src: int, dst: int) -> bool:
    """Whether :func:`adapt_input_channels` turns a kernel with ``src`` input channels into one with ``dst``.

    Only a 3-channel (RGB) kernel is adapted; a kernel that already has
    ``dst`` channels needs no change. The rule is written here once, so a
    caller can check it before it has the kernel.

    Args:
        src: Input channels of the kernel (positive).
        dst: Input channels wanted (positive).

    Returns:
        ``True`` when ``dst == src`` or ``src == 3``.

    Examples:
        >>> can_adapt_input_channels(3, 1), can_adapt_input_channels(4, 1), can_adapt_input_channels(4, 4)
        (True, False, True)
    """
    return dst == src or src == 3


def adapt_input_channels(kernel: np.ndarray, in_channels: int, axis: int) -> np.ndarray:
    """First conv kernel trained on RGB, adapted to ``in_channels`` input channels (timm's ``in_chans`` rule).

    The rule is timm's ``adapt_input_conv``, on numpy arrays of either
    framework's layout:

    - 1 channel: the kernel summed over its input channels, so a grey image
      ``g`` gives what the RGB kernel gives for the image ``(g, g, g)``.
    - 3 channels: returned unchanged.
    - Any other count: the kernel repeated ``ceil(in_channels / 3)`` times
      along the input axis, the first ``in_channels`` channels kept, and
      everything scaled by ``3 / in_channels``, so an input whose channels
      repeat an RGB image gives the same activation sum as before.

    Only a 3-channel kernel is adapted (timm's stacked-stem case, a ``3k``
    kernel summed in groups of 3, does not occur in a VGG); a kernel that
    already has ``in_channels`` channels is returned as it is.

    Args:
        kernel: A conv kernel, e.g. torch's ``features.0.weight`` (out, in, kh,
            kw) or Keras' ``block1_conv1`` kernel (kh, kw, in, out).
        in_channels: Input channels wanted.
        axis: The kernel's input-channel axis: :data:`TORCH_IN_AXIS` (1) for
            torch, :data:`KERAS_IN_AXIS` (2) for Keras.

    Returns:
        A new float array, ``kernel``'s dtype, with ``in_channels`` along
        ``axis`` (``kernel`` itself when nothing changes).

    Raises:
        ValueError: If ``in_channels`` is not a positive integer, ``axis`` is
            not an axis of the kernel, or the kernel has neither 3 nor
            ``in_channels`` input channels.
    """
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"`in_channels` must be a positive integer. Received: in_channels={in_channels!r}")
    kernel = np.asarray(kernel)
    if not -kernel.ndim <= axis < kernel.ndim:
        raise ValueError(f"`axis` must be an axis of the {kernel.ndim}D kernel. Received: axis={axis}")
    axis %= kernel.ndim
    have = kernel.shape[axis]
    if not can_adapt_input_channels(have, in_channels):
        raise ValueError(
            f"Only a 3-channel (RGB) first conv kernel adapts to {in_channels} channels. "
            f"Received: kernel.shape={kernel.shape} ({have} input channels on axis {axis}), in_channels={in_channels}"
        )
    if in_channels == have:
        return kernel
    work = kernel.astype(np.float32) if kernel.dtype != np.float64 else kernel
    if in_channels == 1:
        out = work.sum(axis=axis, keepdims=True)
    else:
        tiled = np.concatenate([work] * math.ceil(in_channels / 3), axis=axis)
        out = np.take(tiled, np.arange(in_channels), axis=axis) * work.dtype.type(3.0 / in_channels)
    return np.ascontiguousarray(out, dtype=kernel.dtype)

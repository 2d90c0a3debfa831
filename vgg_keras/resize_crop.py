"""torchvision's resize-then-center-crop, as arithmetic and as tensor code for each backend.

torchvision's ``ImageClassification`` preset resizes the shorter side to
``resize_size`` (bilinear, antialiased) and center-crops ``crop_size``. The
sizes and offsets it computes are copied here as plain Python
(:func:`resized_size`, :func:`center_crop_box`); two tensor versions apply them
to NHWC batches:

* :func:`resize_and_crop_tf`: TensorFlow ops, for sizes known only at run time
  (``tf.data`` over images of mixed sizes, graphs with unknown sizes). It
  imports TensorFlow when called, never at import.
* :func:`resize_and_crop_ops`: ``keras.ops``, for the JAX and torch backends,
  where image sizes are known when the function runs (eagerly or under
  ``jax.jit`` tracing). Importing this module loads no framework but Keras.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = [
    "center_crop_box",
    "is_tf_ragged",
    "is_tf_tensor",
    "resize_and_crop_ops",
    "resize_and_crop_tf",
    "resized_size",
]


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Output ``(height, width)`` of torchvision's ``F.resize(img, [size])``.

    A copy of torchvision's ``_compute_resized_output_size`` for a single
    requested size: the shorter side becomes ``size`` and the longer one
    ``int(size * long / short)`` (truncated, not rounded).

    Args:
        height: Input height in pixels.
        width: Input width in pixels.
        size: Requested length of the shorter side.

    Returns:
        The resized ``(height, width)``.
    """
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return new_h, new_w


def center_crop_box(height: int, width: int, crop_size: int) -> tuple[int, int, int, int, int, int]:
    """Padding and crop offsets of torchvision's ``F.center_crop(img, [crop_size])``.

    A copy of torchvision's arithmetic: a side shorter than the crop is first
    zero-padded to the crop size (``(crop - side) // 2`` before, the rest
    after), then the crop starts at ``int(round((side - crop) / 2.0))``, with
    Python's round-half-to-even.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        crop_size: Side of the square crop.

    Returns:
        ``(pad_top, pad_bottom, pad_left, pad_right, crop_top, crop_left)``;
        the crop offsets refer to the padded image.
    """
    pad_top = (crop_size - height) // 2 if crop_size > height else 0
    pad_bottom = (crop_size - height + 1) // 2 if crop_size > height else 0
    pad_left = (crop_size - width) // 2 if crop_size > width else 0
    pad_right = (crop_size - width + 1) // 2 if crop_size > width else 0
    padded_h = height + pad_top + pad_bottom
    padded_w = width + pad_left + pad_right
    crop_top = int(round((padded_h - crop_size) / 2.0))
    crop_left = int(round((padded_w - crop_size) / 2.0))
    return pad_top, pad_bottom, pad_left, pad_right, crop_top, crop_left


def resize_and_crop_ops(images: Any, resize_size: int, crop_size: int, integral: bool) -> Any:
    """Resizes NHWC images (shorter side), rounds if integral, center-crops, with ``keras.ops``.

    Args:
        images: Batch of NHWC images whose height and width are known
            (concrete arrays, or tensors traced at fixed sizes).
        resize_size: Length of the shorter side after resizing.
        crop_size: Side of the square center crop.
        integral: Whether the input was uint8: torchvision then rounds the
            resized values back to integers (half to even).

    Returns:
        float32 images in [0, 255] of shape ``(N, crop_size, crop_size, C)``.
    """
    height, width = int(images.shape[1]), int(images.shape[2])
    new_h, new_w = resized_size(height, width, resize_size)
    x = keras.ops.cast(images, "float32")
    if (new_h, new_w) != (height, width):  # torchvision skips same-size resizes
        x = keras.ops.image.resize(
            x, (new_h, new_w), interpolation="bilinear", antialias=True, data_format="channels_last"
        )
    if integral:
        x = keras.ops.clip(keras.ops.round(x), 0.0, 255.0)
    pt, pb, pl, pr, top, left = center_crop_box(new_h, new_w, crop_size)
    if pt or pb or pl or pr:
        x = keras.ops.pad(x, [[0, 0], [pt, pb], [pl, pr], [0, 0]])
    return x[:, top : top + crop_size, left : left + crop_size, :]


def _tf_resized_size(height: Any, width: Any, size: int) -> tuple[Any, Any]:
    """Graph version of :func:`resized_size` for sizes known only at run time."""
    import tensorflow as tf

    height = tf.cast(height, tf.int64)
    width = tf.cast(width, tf.int64)
    portrait = width <= height
    short = tf.where(portrait, width, height)
    long = tf.where(portrait, height, width)
    # Python divides two ints with correct rounding to float64, as IEEE float64
    # division of the same (exactly representable) values does; int() then
    # truncates, which is floor() for these positive values.
    new_long = tf.cast(tf.floor(tf.cast(size * long, tf.float64) / tf.cast(short, tf.float64)), tf.int64)
    new_h = tf.where(portrait, new_long, tf.constant(size, tf.int64))
    new_w = tf.where(portrait, tf.constant(size, tf.int64), new_long)
    return tf.cast(new_h, tf.int32), tf.cast(new_w, tf.int32)


def _tf_center_crop_box(height: Any, width: Any, crop_size: int) -> tuple[Any, ...]:
    """Graph version of :func:`center_crop_box` for sizes known only at run time."""
    import tensorflow as tf

    pad_top = tf.maximum(crop_size - height, 0) // 2
    pad_bottom = tf.maximum(crop_size - height + 1, 0) // 2
    pad_left = tf.maximum(crop_size - width, 0) // 2
    pad_right = tf.maximum(crop_size - width + 1, 0) // 2
    padded_h = height + pad_top + pad_bottom
    padded_w = width + pad_left + pad_right
    # tf.round rounds half to even, as Python's round() does.
    crop_top = tf.cast(tf.round(tf.cast(padded_h - crop_size, tf.float64) / 2.0), tf.int32)
    crop_left = tf.cast(tf.round(tf.cast(padded_w - crop_size, tf.float64) / 2.0), tf.int32)
    return pad_top, pad_bottom, pad_left, pad_right, crop_top, crop_left


def resize_and_crop_tf(images: Any, resize_size: int, crop_size: int, integral: bool) -> Any:
    """Same as :func:`resize_and_crop_ops` with TensorFlow ops; sizes may be unknown until run time.

    Args:
        images: A ``tf.Tensor`` batch of NHWC images.
        resize_size: Length of the shorter side after resizing.
        crop_size: Side of the square center crop.
        integral: Whether the input was uint8 (round after resizing).

    Returns:
        float32 ``tf.Tensor`` in [0, 255] of shape ``(N, crop_size, crop_size, C)``.
    """
    import tensorflow as tf

    static_h, static_w = images.shape[1], images.shape[2]
    static = static_h is not None and static_w is not None
    if static:
        new_h, new_w = resized_size(static_h, static_w, resize_size)
    else:
        dyn = tf.shape(images)
        new_h, new_w = _tf_resized_size(dyn[1], dyn[2], resize_size)
    x = tf.cast(images, tf.float32)
    if not (static and (new_h, new_w) == (static_h, static_w)):  # torchvision skips same-size resizes
        x = tf.image.resize(
            x, (new_h, new_w) if static else tf.stack([new_h, new_w]), method="bilinear", antialias=True
        )
    if integral:
        # torchvision resizes a uint8 tensor in float32, then rounds (half to
        # even) back to uint8; the antialiased bilinear kernel has no negative
        # lobes, so the clip only guards against float noise.
        x = tf.clip_by_value(tf.round(x), 0.0, 255.0)

    if static:
        pt, pb, pl, pr, top, left = center_crop_box(new_h, new_w, crop_size)
        if pt or pb or pl or pr:
            x = tf.pad(x, [[0, 0], [pt, pb], [pl, pr], [0, 0]])
        return x[:, top : top + crop_size, left : left + crop_size, :]
    height = tf.shape(x)[1]
    width = tf.shape(x)[2]
    pt, pb, pl, pr, top, left = _tf_center_crop_box(height, width, crop_size)
    x = tf.pad(x, tf.stack([[0, 0], tf.stack([pt, pb]), tf.stack([pl, pr]), [0, 0]]))
    x = tf.slice(x, tf.stack([0, top, left, 0]), tf.stack([-1, crop_size, crop_size, -1]))
    return tf.ensure_shape(x, [images.shape[0], crop_size, crop_size, images.shape[3]])


def is_tf_tensor(x: object) -> bool:
    """Whether ``x`` is a TensorFlow tensor, without importing TensorFlow."""
    return type(x).__module__.startswith("tensorflow")


def is_tf_ragged(x: object) -> bool:
    """Whether ``x`` is a ``tf.RaggedTensor``, without importing TensorFlow."""
    return is_tf_tensor(x) and type(x).__name__ == "RaggedTensor"

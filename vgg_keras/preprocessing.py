"""torchvision's ImageNet preprocessing and label decoding, in Keras 3.

torchvision's VGG weights expect the ``ImageClassification`` preset that
``weights.transforms()`` returns: resize the shorter side to ``resize_size``
(bilinear, antialiased), take a ``crop_size`` center crop, scale to [0, 1] and
normalize with the weights' mean and standard deviation. This module rebuilds
that pipeline with TensorFlow ops, from the same facts
(:class:`parity.catalog.Transforms`) the weight converter uses:

* :func:`preprocess_input` normalizes images that already have the model's
  size, like ``keras.applications.vgg16.preprocess_input`` but with
  torchvision's statistics (and without modifying its input).
* :class:`ImageClassificationPreprocessor` is the whole pipeline as a Keras
  layer, usable in a model or in ``tf.data.Dataset.map``;
  :func:`preprocessor_for` builds it for a set of published weights and
  :func:`preprocess_images` runs it once on NumPy images.
* :func:`decode_predictions` turns class scores into the names torchvision
  lists, offline.

Pixel values are RGB in [0, 255] everywhere (uint8 or float), as in
keras.applications. Importing this module does not import torch.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from parity.core.catalog import DEFAULT_WEIGHTS, IMAGENET_MEAN, IMAGENET_STD, get_weights_record

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageClassificationPreprocessor",
    "decode_predictions",
    "imagenet_class_names",
    "preprocess_images",
    "preprocess_input",
    "preprocessor_for",
]


_NUM_CLASSES = 1000
_CLASS_NAMES_FILE = "imagenet_classes.txt"
_DATA_FORMATS = ("channels_last", "channels_first")


# --------------------------------------------------------------------------- #
# Normalization of already-sized images
# --------------------------------------------------------------------------- #
def preprocess_input(
    x: Any,
    data_format: str | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Any:
    """Normalizes RGB images the way torchvision's ImageNet weights expect.

    Computes ``(x / 255 - mean) / std`` per channel in float32, the last two
    steps of torchvision's ``weights.transforms()`` (``convert_image_dtype``
    and ``normalize``). Images must already have the size the model expects;
    :class:`ImageClassificationPreprocessor` also resizes and crops.

    Unlike ``keras.applications.vgg16.preprocess_input`` (Caffe-style BGR mean
    subtraction), this uses torchvision's statistics, and it never modifies
    ``x``: a NumPy input gives a new array.

    Args:
        x: RGB image or batch, values in [0, 255]: a NumPy array (any integer
            or float dtype), a TensorFlow tensor or a Keras tensor. The channel
            axis (of size 3) is last for ``"channels_last"`` and third from
            last for ``"channels_first"``.
        data_format: ``"channels_last"`` or ``"channels_first"``; defaults to
            ``keras.config.image_data_format()``.
        mean: Per-channel mean (RGB) of images scaled to [0, 1].
        std: Per-channel standard deviation (RGB) of images scaled to [0, 1].

    Returns:
        float32 images of the same shape: a NumPy array for NumPy (or list)
        input, else a tensor of the input's kind.

    Raises:
        ValueError: If ``x`` is not numeric, has no channel axis of size 3, or
            ``data_format``, ``mean`` or ``std`` is invalid.
    """
    data_format = _standardize_data_format(data_format)
    mean32 = _check_stats("mean", mean)
    std32 = _check_stats("std", std)
    if std32.min() <= 0:
        raise ValueError(f"`std` must be positive. Received: std={tuple(std)!r}")
    channel_axis = -1 if data_format == "channels_last" else -3
    stats_shape = (3,) if data_format == "channels_last" else (3, 1, 1)

    is_numpy = isinstance(x, (np.ndarray, np.generic, list, tuple))
    if is_numpy:
        x_np = np.asarray(x)  # no copy for arrays; the arithmetic below allocates
        dtype = x_np.dtype
        shape: tuple[int | None, ...] = x_np.shape
    else:
        dtype = np.dtype(keras.backend.standardize_dtype(x.dtype))
        shape = tuple(x.shape)
    if dtype == np.bool_ or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(
            f"`x` must hold integer or float pixel values in [0, 255]. Received: x.dtype={dtype}"
        )
    if len(shape) < -channel_axis or shape[channel_axis] not in (3, None):
        raise ValueError(
            f"`x` must be RGB with 3 channels on axis {channel_axis} ({data_format}). Received: x.shape={shape}"
        )

    if is_numpy:
        out = x_np.astype(np.float32) / np.float32(255.0)
        out -= mean32.reshape(stats_shape)
        out /= std32.reshape(stats_shape)
        return out
    out = keras.ops.divide(keras.ops.cast(x, "float32"), np.float32(255.0))
    out = keras.ops.subtract(out, mean32.reshape(stats_shape))
    return keras.ops.divide(out, std32.reshape(stats_shape))


# --------------------------------------------------------------------------- #
# torchvision's resize and center-crop geometry
# --------------------------------------------------------------------------- #
def _resized_size(height: int, width: int, size: int) -> tuple[int, int]:
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


def _center_crop_box(height: int, width: int, crop_size: int) -> tuple[int, int, int, int, int, int]:
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


def _tf_resized_size(height: tf.Tensor, width: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Graph version of :func:`_resized_size` for sizes known only at run time."""
    height = tf.cast(height, tf.int64)
    width = tf.cast(width, tf.int64)
    portrait = width <= height
    short = tf.where(portrait, width, height)
    long = tf.where(portrait, height, width)
    # Python divides two ints with correct rounding to float64, as IEEE float64
    # division of the same (exactly representable) values does; int() then
    # truncates, which is floor() for these positive values.
    new_long = tf.cast(
        tf.floor(tf.cast(size * long, tf.float64) / tf.cast(short, tf.float64)), tf.int64
    )
    new_h = tf.where(portrait, new_long, tf.constant(size, tf.int64))
    new_w = tf.where(portrait, tf.constant(size, tf.int64), new_long)
    return tf.cast(new_h, tf.int32), tf.cast(new_w, tf.int32)


def _tf_center_crop_box(height: tf.Tensor, width: tf.Tensor, crop_size: int) -> tuple[tf.Tensor, ...]:
    """Graph version of :func:`_center_crop_box` for sizes known only at run time."""
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


def _resize_and_crop(images: tf.Tensor, resize_size: int, crop_size: int, integral: bool) -> tf.Tensor:
    """Resizes NHWC images (shorter side), rounds if integral, center-crops. Returns float32 in [0, 255]."""
    static_h, static_w = images.shape[1], images.shape[2]
    static = static_h is not None and static_w is not None
    if static:
        new_h, new_w = _resized_size(static_h, static_w, resize_size)
    else:
        dyn = tf.shape(images)
        new_h, new_w = _tf_resized_size(dyn[1], dyn[2], resize_size)
    x = tf.cast(images, tf.float32)
    if not (static and (new_h, new_w) == (static_h, static_w)):  # torchvision skips same-size resizes
        x = tf.image.resize(x, (new_h, new_w) if static else tf.stack([new_h, new_w]), method="bilinear", antialias=True)
    if integral:
        # torchvision resizes a uint8 tensor in float32, then rounds (half to
        # even) back to uint8; the antialiased bilinear kernel has no negative
        # lobes, so the clip only guards against float noise.
        x = tf.clip_by_value(tf.round(x), 0.0, 255.0)

    if static:
        pt, pb, pl, pr, top, left = _center_crop_box(new_h, new_w, crop_size)
        if pt or pb or pl or pr:
            x = tf.pad(x, [[0, 0], [pt, pb], [pl, pr], [0, 0]])
        return x[:, top : top + crop_size, left : left + crop_size, :]
    height = tf.shape(x)[1]
    width = tf.shape(x)[2]
    pt, pb, pl, pr, top, left = _tf_center_crop_box(height, width, crop_size)
    x = tf.pad(x, tf.stack([[0, 0], tf.stack([pt, pb]), tf.stack([pl, pr]), [0, 0]]))
    x = tf.slice(x, tf.stack([0, top, left, 0]), tf.stack([-1, crop_size, crop_size, -1]))
    return tf.ensure_shape(x, [images.shape[0], crop_size, crop_size, images.shape[3]])


# --------------------------------------------------------------------------- #
# The whole pipeline as a Keras layer
# --------------------------------------------------------------------------- #
@keras.saving.register_keras_serializable(package="vgg_keras")
class ImageClassificationPreprocessor(keras.layers.Layer):
    """torchvision's ``ImageClassification`` preset as a Keras layer.

    Turns raw RGB images of any size into the model input that torchvision's
    ``weights.transforms()`` produces:

    1. Resize so the shorter side is ``resize_size`` and the longer one
       ``int(resize_size * long / short)``, bilinear with antialiasing.
       uint8 input is rounded back to integers after resizing, as torchvision
       does for uint8 tensors; float input is not rounded.
    2. Center-crop ``crop_size`` x ``crop_size`` (zero-padding a side shorter
       than the crop first), with torchvision's offset rounding.
    3. Scale to [0, 1] and normalize: ``(x / 255 - mean) / std``.

    The layer runs TensorFlow ops, so it works in ``tf.data.Dataset.map`` (one
    image at a time, any sizes, batch afterwards) and inside a Keras model
    with the TensorFlow backend. It has no weights.

    Example:

    ```python
    pre = preprocessor_for("vgg16")
    ds = ds.map(lambda image, label: (pre(image), label)).batch(32)
    ```

    Args:
        resize_size: Length of the shorter side after resizing.
        crop_size: Side of the square center crop.
        mean: Per-channel mean (RGB) of images scaled to [0, 1].
        std: Per-channel standard deviation (RGB) of images scaled to [0, 1].
        data_format: ``"channels_last"`` (HWC) or ``"channels_first"`` (CHW)
            for both input and output; defaults to
            ``keras.config.image_data_format()``.
        **kwargs: Standard layer arguments (``name``, ...).

    Call arguments:
        images: One image (rank 3) or a batch of same-size images (rank 4),
            RGB, uint8 or float with values in [0, 255].

    Returns:
        float32 images of shape ``(..., crop_size, crop_size, 3)``
        (``(..., 3, crop_size, crop_size)`` for ``"channels_first"``), with
        the input's rank.

    Raises:
        ValueError: On invalid arguments, or (when called) images that are not
            rank 3 or 4, not 3-channel, or neither uint8 nor float.
    """

    def __init__(
        self,
        resize_size: int = 256,
        crop_size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        for field, value in (("resize_size", resize_size), ("crop_size", crop_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{field}` must be a positive integer. Received: {field}={value!r}")
        mean32 = _check_stats("mean", mean)
        std32 = _check_stats("std", std)
        if std32.min() <= 0:
            raise ValueError(f"`std` must be positive. Received: std={tuple(std)!r}")
        super().__init__(**kwargs)
        self.resize_size = int(resize_size)
        self.crop_size = int(crop_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.data_format = _standardize_data_format(data_format)
        self._mean32 = mean32
        self._std32 = std32
        self.supports_jit = False

    def call(self, images: Any) -> tf.Tensor:
        images = tf.convert_to_tensor(images)
        rank = images.shape.rank
        _check_images(tuple(images.shape), images.dtype, self.data_format)
        if rank == 3:
            images = images[tf.newaxis]
        if self.data_format == "channels_first":
            images = tf.transpose(images, [0, 2, 3, 1])
        x = _resize_and_crop(images, self.resize_size, self.crop_size, integral=images.dtype == tf.uint8)
        # Same float32 operations, in the same order, as torchvision's
        # convert_image_dtype (x / 255) and normalize ((x - mean) / std).
        x = (x / np.float32(255.0) - self._mean32) / self._std32
        if self.data_format == "channels_first":
            x = tf.transpose(x, [0, 3, 1, 2])
        if rank == 3:
            x = x[0]
        return x

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        shape = tuple(input_shape)
        if len(shape) not in (3, 4):
            raise ValueError(
                "`images` must be one image (rank 3) or a batch of same-size images (rank 4). "
                f"Received: images.shape={shape}"
            )
        lead = shape[:-3]
        c = self.crop_size
        if self.data_format == "channels_first":
            return (*lead, shape[-3], c, c)
        return (*lead, c, c, shape[-1])

    def compute_output_spec(self, images: Any) -> keras.KerasTensor:
        _check_images(tuple(images.shape), images.dtype, self.data_format)
        return keras.KerasTensor(self.compute_output_shape(images.shape), dtype="float32")

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "resize_size": self.resize_size,
                "crop_size": self.crop_size,
                "mean": list(self.mean),
                "std": list(self.std),
                "data_format": self.data_format,
            }
        )
        return config


def preprocessor_for(
    arch: str = "vgg16",
    weights: str = DEFAULT_WEIGHTS,
    data_format: str | None = None,
    **kwargs: Any,
) -> ImageClassificationPreprocessor:
    """Builds the preprocessing layer that a set of published weights expects.

    Reads the sizes and statistics from the weights' record in
    :mod:`parity.catalog`, i.e. what torchvision's
    ``VGG16_Weights.IMAGENET1K_V1.transforms()`` (etc.) does.

    Args:
        arch: Preset name, e.g. ``"vgg16"`` or ``"vgg19_bn"``.
        weights: torchvision's weights name, e.g. ``"IMAGENET1K_V1"`` or
            ``"IMAGENET1K_FEATURES"`` (vgg16 only, with its own statistics);
            ``"converted"`` means the preset's default weights, as in
            ``vgg_keras.VGG16(weights="converted")``.
        data_format: ``"channels_last"`` or ``"channels_first"``; defaults to
            ``keras.config.image_data_format()``.
        **kwargs: Standard layer arguments (``name``, ...).

    Returns:
        An :class:`ImageClassificationPreprocessor`.

    Raises:
        ValueError: If the architecture or weights name is unknown.
    """
    name = DEFAULT_WEIGHTS if weights == "converted" else weights
    t = get_weights_record(arch, name).transforms
    kwargs.setdefault("name", f"{arch}_{name.lower()}_preprocessing")
    return ImageClassificationPreprocessor(
        resize_size=t.resize_size,
        crop_size=t.crop_size,
        mean=t.mean,
        std=t.std,
        data_format=data_format,
        **kwargs,
    )


def preprocess_images(
    images: Any,
    arch: str = "vgg16",
    weights: str = DEFAULT_WEIGHTS,
    data_format: str | None = None,
) -> np.ndarray:
    """Runs torchvision's preprocessing for a set of weights on images, eagerly.

    Args:
        images: One RGB image (rank 3), a batch of same-size images (rank 4),
            or a list of rank-3 images of any sizes; uint8 or float with values
            in [0, 255], laid out as ``data_format`` says.
        arch: Preset name, e.g. ``"vgg16"``.
        weights: torchvision's weights name or ``"converted"``; see
            :func:`preprocessor_for`.
        data_format: ``"channels_last"`` or ``"channels_first"``; defaults to
            ``keras.config.image_data_format()``.

    Returns:
        float32 NumPy array: ``(crop, crop, 3)`` for one image, ``(N, crop,
        crop, 3)`` for a batch or list (channels first if so requested).

    Raises:
        ValueError: On invalid images or an unknown architecture or weights name.
    """
    layer = preprocessor_for(arch, weights, data_format=data_format)
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("`images` must hold at least one image. Received: images=[]")
        arrays = [np.asarray(image) for image in images]
        for i, image in enumerate(arrays):
            if image.ndim != 3:
                raise ValueError(
                    f"A list of images must hold rank-3 images (one image each). Received: images[{i}].shape={image.shape}"
                )
            try:
                _check_images(image.shape, image.dtype, layer.data_format)
            except ValueError as e:
                raise ValueError(str(e).replace("Received: images.", f"Received: images[{i}].")) from None
        return np.stack([np.asarray(layer(image)) for image in arrays])
    if not tf.is_tensor(images):
        images = np.asarray(images)
    _check_images(tuple(images.shape), images.dtype, layer.data_format)
    return np.asarray(layer(images))


# --------------------------------------------------------------------------- #
# Labels
# --------------------------------------------------------------------------- #
@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """torchvision's 1000 ImageNet category names, in class-index order.

    Read from the package's ``imagenet_classes.txt`` (a copy of
    ``torchvision.models._meta._IMAGENET_CATEGORIES``); no network access.

    Returns:
        A tuple of 1000 names; index 0 is ``"tench"``.
    """
    text = importlib.resources.files("vgg_keras").joinpath(_CLASS_NAMES_FILE).read_text(encoding="utf-8")
    names = tuple(text.splitlines())
    if len(names) != _NUM_CLASSES:  # a damaged install, not a user error
        raise RuntimeError(f"{_CLASS_NAMES_FILE} must list {_NUM_CLASSES} names. Received: {len(names)} lines")
    return names


def decode_predictions(preds: Any, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """Decodes ImageNet class scores into the best classes per sample.

    Same output format as ``keras.applications.imagenet_utils.decode_predictions``,
    but offline, with torchvision's category names. The class id is the class
    index as a string (``"0"`` for tench): WordNet ids ship with neither
    torchvision nor Keras (Keras downloads them at run time).

    Args:
        preds: Scores of shape ``(N, 1000)`` (probabilities or logits), as a
            NumPy array or tensor.
        top: How many classes to return per sample, 1 to 1000.

    Returns:
        One list per sample of ``(class_id, class_name, score)`` tuples,
        highest score first (ties in class-index order).

    Raises:
        ValueError: If ``preds`` is not ``(N, 1000)`` or ``top`` is out of range.
    """
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not 1 <= top <= _NUM_CLASSES:
        raise ValueError(f"`top` must be an integer from 1 to {_NUM_CLASSES}. Received: top={top!r}")
    scores = np.asarray(preds if isinstance(preds, (np.ndarray, list, tuple)) else keras.ops.convert_to_numpy(preds))
    if scores.ndim != 2 or scores.shape[1] != _NUM_CLASSES:
        raise ValueError(
            f"`decode_predictions` expects a batch of ImageNet scores of shape (samples, {_NUM_CLASSES}). "
            f"Received: preds.shape={scores.shape}"
        )
    names = imagenet_class_names()
    results = []
    for row in scores:
        best = np.argsort(-row, kind="stable")[:top]
        results.append([(str(i), names[i], float(row[i])) for i in best])
    return results


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def _standardize_data_format(data_format: str | None) -> str:
    if data_format is None:
        return keras.config.image_data_format()
    if data_format not in _DATA_FORMATS:
        raise ValueError(
            f"`data_format` must be 'channels_last', 'channels_first' or None. Received: data_format={data_format!r}"
        )
    return data_format


def _check_images(shape: tuple[int | None, ...], dtype: Any, data_format: str) -> None:
    """Validates raw images for the pipeline (static shape, dtype)."""
    dtype = tf.as_dtype(dtype)
    if len(shape) not in (3, 4):
        raise ValueError(
            "`images` must be one image (rank 3) or a batch of same-size images (rank 4). "
            f"Received: images.shape={shape}"
        )
    if any(d == 0 for d in shape):
        raise ValueError(f"`images` must not be empty. Received: images.shape={shape}")
    if dtype != tf.uint8 and not dtype.is_floating:
        raise ValueError(
            "`images` must be uint8 or float with values in [0, 255]; cast other integer types to uint8. "
            f"Received: images.dtype={dtype.name}"
        )
    channels = shape[-1] if data_format == "channels_last" else shape[-3]
    if channels not in (3, None):
        raise ValueError(f"`images` must be RGB with 3 channels ({data_format}). Received: images.shape={shape}")


def _check_stats(field: str, value: Sequence[float]) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"`{field}` must be 3 finite numbers (R, G, B). Received: {field}={value!r}")
    return arr

"""torchvision's ImageNet preprocessing and label decoding, in Keras 3.

torchvision's VGG weights expect the ``ImageClassification`` preset that
``weights.transforms()`` returns: resize the shorter side to ``resize_size``
(bilinear, antialiased), take a ``crop_size`` center crop, scale to [0, 1] and
normalize with the weights' mean and standard deviation. This module rebuilds
that pipeline (TensorFlow ops on that backend and in ``tf.data``, ``keras.ops``
on JAX and torch; see :mod:`vgg_keras.resize_crop`), from the same facts
(:class:`parity.core.catalog.Transforms`) the weight converter uses:

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
keras.applications. Importing this module imports neither torch nor
TensorFlow; the TensorFlow backend or ``tf.data`` loads TensorFlow.

At about 420 lines this file is over the house limit on purpose: it is the
public face of one pipeline, whose layer dispatches between the two op sets
per call; the geometry and the labels already live in their own modules, and
what is left (argument checks, the layer, its three entry points) only makes
sense read together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from parity.core.catalog import DEFAULT_WEIGHTS, IMAGENET_MEAN, IMAGENET_STD, get_weights_record
from vgg_keras import resize_crop
from vgg_keras.labels import decode_predictions, imagenet_class_names

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


_DATA_FORMATS = ("channels_last", "channels_first")


def _run_unconverted(entity: Any) -> Any:
    """Marks a function or class for AutoGraph to run as written, without importing TensorFlow.

    ``tf.data.Dataset.map`` passes its function through AutoGraph, which
    rewrites Python control flow on tensors; this pipeline has none, and a
    rewritten function reports each error as a multi-line "in user code"
    trace. The attribute is the one ``tf.autograph.experimental.do_not_convert``
    sets.
    """
    entity.autograph_info__ = frozenset()
    return entity


# --------------------------------------------------------------------------- #
# Normalization of already-sized images
# --------------------------------------------------------------------------- #
@_run_unconverted
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

    # No annotated assignments in branches below: tf.data.Dataset.map runs this
    # function through AutoGraph, which cannot convert them (it warns and runs
    # the function unconverted).
    is_numpy = isinstance(x, (np.ndarray, np.generic, list, tuple))
    x_np = np.asarray(x) if is_numpy else None  # no copy for arrays; the arithmetic below allocates
    dtype = x_np.dtype if is_numpy else np.dtype(keras.backend.standardize_dtype(x.dtype))
    shape = tuple(x_np.shape if is_numpy else x.shape)
    if dtype == np.bool_ or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"`x` must hold integer or float pixel values in [0, 255]. Received: x.dtype={dtype}")
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
# The whole pipeline as a Keras layer
# --------------------------------------------------------------------------- #
@_run_unconverted
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

    On the TensorFlow backend, and in ``tf.data.Dataset.map`` on any backend,
    it runs TensorFlow ops that take images of sizes known only at run time
    (one image at a time, any sizes, batch afterwards). On the JAX and torch
    backends it runs ``keras.ops`` without loading TensorFlow: there, images
    must have known sizes when the layer runs (eagerly, or under ``jit`` at
    fixed sizes), and the resize is the backend's own antialiased bilinear
    kernel (torch: the one torchvision uses). It has no weights.

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
            RGB, uint8 or float with values in [0, 255]; or a
            ``tf.RaggedTensor`` batch of images of different sizes (what
            ``ds.ragged_batch(n)`` gives), each resized and cropped, then
            stacked. Not a ``padded_batch``: its zero padding would be resized
            into the images.

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
        # The TensorFlow pipeline computes sizes at run time, which XLA cannot
        # compile; the keras.ops one (JAX, torch) works on known sizes.
        self.supports_jit = keras.backend.backend() != "tensorflow"

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> Any:
        if resize_crop.is_tf_ragged(images):  # tf.data's ragged_batch: Keras layers take no ragged input
            return self._call_ragged(images)
        if keras.backend.backend() != "tensorflow" and resize_crop.is_tf_tensor(images):
            # tf.data.Dataset.map on the JAX or torch backend: Keras would
            # convert the graph tensor to the backend's array type, which a
            # tf.data graph cannot do. The layer has no weights: run the
            # TensorFlow pipeline directly.
            return self._call_tf(images)
        return super().__call__(images, *args, **kwargs)

    def call(self, images: Any) -> Any:
        if keras.backend.backend() == "tensorflow":
            return self._call_tf(images)
        return self._call_ops(images)

    def _call_tf(self, images: Any) -> Any:
        """The pipeline in TensorFlow ops: any sizes, known or not until run time."""
        import tensorflow as tf

        images = tf.convert_to_tensor(images)
        rank = images.shape.rank
        _check_images(tuple(images.shape), images.dtype, self.data_format)
        if rank == 3:
            images = images[tf.newaxis]
        if self.data_format == "channels_first":
            images = tf.transpose(images, [0, 2, 3, 1])
        x = resize_crop.resize_and_crop_tf(images, self.resize_size, self.crop_size, integral=images.dtype == tf.uint8)
        # Same float32 operations, in the same order, as torchvision's
        # convert_image_dtype (x / 255) and normalize ((x - mean) / std).
        x = (x / np.float32(255.0) - self._mean32) / self._std32
        if self.data_format == "channels_first":
            x = tf.transpose(x, [0, 3, 1, 2])
        if rank == 3:
            x = x[0]
        return x

    def _call_ragged(self, images: Any) -> Any:
        """A ``tf.RaggedTensor`` batch of images of different sizes: each image resized and cropped, then stacked."""
        import tensorflow as tf

        shape = tuple(images.shape)
        if len(shape) != 4:
            raise ValueError(
                "A ragged batch must be rank 4 (images of different sizes, as ds.ragged_batch(n) gives); batch "
                f"single images after the map otherwise. Received: images.shape={shape}"
            )
        _check_images(shape, images.dtype, self.data_format)
        c = self.crop_size
        out_shape = (3, c, c) if self.data_format == "channels_first" else (c, c, 3)
        return tf.map_fn(
            lambda image: self._call_tf(image.to_tensor() if isinstance(image, tf.RaggedTensor) else image),
            images,
            fn_output_signature=tf.TensorSpec(out_shape, tf.float32),
        )

    def _call_ops(self, images: Any) -> Any:
        """The pipeline in ``keras.ops`` (JAX and torch backends): sizes known when it runs."""
        shape = tuple(images.shape)
        dtype = keras.backend.standardize_dtype(images.dtype)
        _check_images(shape, dtype, self.data_format)
        if len(shape) == 3:
            images = keras.ops.expand_dims(images, 0)
        if self.data_format == "channels_first":
            images = keras.ops.transpose(images, (0, 2, 3, 1))
        x = resize_crop.resize_and_crop_ops(images, self.resize_size, self.crop_size, integral=dtype == "uint8")
        x = keras.ops.divide(x, np.float32(255.0))
        x = keras.ops.divide(keras.ops.subtract(x, self._mean32), self._std32)
        if self.data_format == "channels_first":
            x = keras.ops.transpose(x, (0, 3, 1, 2))
        if len(shape) == 3:
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
    :mod:`parity.core.catalog`, i.e. what torchvision's
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
                    "A list of images must hold rank-3 images (one image each). "
                    f"Received: images[{i}].shape={image.shape}"
                )
            try:
                _check_images(image.shape, image.dtype, layer.data_format)
            except ValueError as e:
                raise ValueError(str(e).replace("Received: images.", f"Received: images[{i}].")) from None
        return np.stack([np.asarray(layer(image)) for image in arrays])
    if not (keras.ops.is_tensor(images) or resize_crop.is_tf_tensor(images)):
        images = np.asarray(images)
    _check_images(tuple(images.shape), images.dtype, layer.data_format)
    return np.asarray(layer(images))


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
    dtype = keras.backend.standardize_dtype(dtype)
    if len(shape) not in (3, 4):
        raise ValueError(
            "`images` must be one image (rank 3) or a batch of same-size images (rank 4). "
            f"Received: images.shape={shape}"
        )
    if any(d == 0 for d in shape):
        raise ValueError(f"`images` must not be empty. Received: images.shape={shape}")
    if dtype != "uint8" and not dtype.startswith(("float", "bfloat")):
        raise ValueError(
            "`images` must be uint8 or float with values in [0, 255]; cast other integer types to uint8. "
            f"Received: images.dtype={dtype}"
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

"""Run-time input checks of a built VGG, and NaN in, NaN out.

:func:`vgg_keras.build_vgg` puts :class:`InputCheck` right after the input
(layer ``input_check``), builds ``predictions`` as this module's :class:`Dense`
(which also reads the input and masks), and without the top puts
:class:`NonFiniteToNaN` on the last feature map (layer ``non_finite_to_nan``,
before the pooling or the output transpose). None of them has weights, so
weight files and layer names stay as they were.

``InputCheck`` refuses an input that is not a 4D batch, has another channel
count than the model, or is smaller than the model's minimum size (one pixel
left after every max pool), in one line that names the fix. Sizes known when
the call is traced (eager calls, a ``tf.function`` or ``predict`` traced for one
shape) are checked in Python; sizes unknown until run time (``predict`` after a
second input size, ``reduce_retracing=True``) by a TensorFlow assertion that
runs before the first convolution. XLA compiles assertions as no-ops, so
under ``jit_compile=True`` with unknown sizes a reshape whose target XLA works
out when it compiles for the actual sizes (one row more than the input where
the input is wrong) fails the compile instead; XLA's error then names that
reshape, ``input_images_must_be_at_least_32x32_px_with_3_channels...``. The
mask also sets a too-small sample's outputs to NaN, as a last guard. On JAX
and torch every call sees static shapes, so the Python checks cover every mode.

A batch of 0 images gives an empty result in every mode that calls the model.
TensorFlow's oneDNN ``Conv2D`` returns an empty batch with the *input's*
channel count, which the bias add then refuses; so on TensorFlow an empty batch
is padded to one zero image and the result cut back to 0 rows.

The mask (:func:`nan_rows`) sets every output of a sample to NaN when the
sample holds a NaN or inf anywhere; other samples pass through bit for bit.
Without it, TensorFlow's CPU ``MaxPool`` dropped NaN where its window held a
number (and took an all-NaN window as the lowest float), and its graph
optimizer's fused MatMul + BiasAdd + ReLU turns NaN into 0: a NaN pixel came
out as finite logits in graph mode and ``predict``, while eager, XLA and torch
gave NaN. So the mask is applied last, in ``predictions`` after its activation.
"""

from __future__ import annotations

import keras

__all__ = [
    "INPUT_CHECK",
    "NON_FINITE_TO_NAN",
    "Dense",
    "InputCheck",
    "NonFiniteToNaN",
    "nan_rows",
    "without_checks",
]

#: Layer names in a model from :func:`vgg_keras.build_vgg`.
INPUT_CHECK = "input_check"
NON_FINITE_TO_NAN = "non_finite_to_nan"


def _spatial_axes(data_format: str) -> tuple[int, int]:
    return (2, 3) if data_format == "channels_first" else (1, 2)


def _channel_axis(data_format: str) -> int:
    return 1 if data_format == "channels_first" else 3


def _check_data_format(data_format: str | None) -> str:
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            f"`data_format` must be 'channels_last' or 'channels_first'. Received: data_format={data_format!r}"
        )
    return data_format


@keras.saving.register_keras_serializable(package="vgg_keras")
class InputCheck(keras.layers.Layer):
    """Refuses inputs a VGG cannot take: not 4D, another channel count, smaller than its minimum size.

    Returns its input unchanged, except that on TensorFlow an empty batch is
    padded to one zero image (:class:`NonFiniteToNaN` cuts the result back).

    Args:
        channels: The channel count the model was built for.
        min_size: The smallest height and width, in pixels.
        data_format: Layout of the input; defaults to ``keras.config.image_data_format()``.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Raises:
        ValueError: When called on an input whose shape is wrong where it is known.

    Examples:
        >>> check = InputCheck(3, 32, data_format="channels_last")
        >>> check(keras.ops.zeros((2, 31, 31, 3)))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: Input images must be at least 32x32 px ... Received: input shape (2, 31, 31, 3)
    """

    def __init__(self, channels: int, min_size: int, data_format: str | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.min_size = int(min_size)
        self.data_format = _check_data_format(data_format)

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        """Checks ``inputs``' shape: known sizes now, unknown ones (TensorFlow graphs) when the graph runs."""
        self.check_shape(tuple(inputs.shape))
        if keras.backend.backend() != "tensorflow":
            return inputs
        return _tf_checked(inputs, self.channels, self.min_size, self.data_format, self._message())

    def _message(self) -> str:
        axis = "first" if self.data_format == "channels_first" else "last"
        return (
            f"Input images must be at least {self.min_size}x{self.min_size} px with {self.channels} channels on "
            f"the {axis} axis; resize them (vgg_keras.preprocess_images) or convert them. Received: input shape"
        )

    def check_shape(self, shape: tuple[int | None, ...]) -> None:
        """Raises on what a static shape already shows to be wrong (``None`` sizes pass).

        Args:
            shape: An input's shape, batch first.

        Raises:
            ValueError: On a shape that is not 4D, has another channel count, or is smaller than ``min_size``.
        """
        if len(shape) != 4:
            axes = "channels, height, width" if self.data_format == "channels_first" else "height, width, channels"
            raise _one_line(f"Input must be a 4D batch (batch, {axes}). Received: input shape {shape}")
        channels = shape[_channel_axis(self.data_format)]
        if channels is not None and channels != self.channels:
            axis = "first" if self.data_format == "channels_first" else "last"
            raise _one_line(
                f"Input must have {self.channels} channels on the {axis} axis ({self.data_format}), as the model "
                f"was built; convert the images (e.g. drop alpha), or build the model with input_shape for "
                f"{channels} channels. Received: input shape {shape}"
            )
        sides = [shape[a] for a in _spatial_axes(self.data_format)]
        if any(s is not None and s < self.min_size for s in sides):
            raise _one_line(
                f"Input images must be at least {self.min_size}x{self.min_size} px: the max pools halve them down "
                f"to one pixel; resize them first (vgg_keras.preprocess_images). Received: input shape {shape}"
            )

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """The input shape."""
        return tuple(input_shape)

    def get_config(self) -> dict[str, object]:
        """The layer's config, for serialization."""
        return {
            **super().get_config(),
            "channels": self.channels,
            "min_size": self.min_size,
            "data_format": self.data_format,
        }


@keras.saving.register_keras_serializable(package="vgg_keras")
class NonFiniteToNaN(keras.layers.Layer):
    """Called on ``[images, x]``: ``x`` with every value of a sample set to NaN where its image is not all finite.

    Other samples' values are returned as they are. On TensorFlow, ``x`` is
    also cut to the images' batch (see :class:`InputCheck`), and where the
    images' sizes are unknown when traced, a sample smaller than ``min_size``
    (which only an XLA graph lets through) gives NaN too.

    Args:
        min_size: The smallest height and width, in pixels.
        data_format: Layout of the images; defaults to ``keras.config.image_data_format()``.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Examples:
        >>> import numpy as np
        >>> images = np.zeros((2, 32, 32, 3), np.float32)
        >>> images[1, 0, 0, 0] = np.inf
        >>> out = NonFiniteToNaN(32, data_format="channels_last")([images, np.ones((2, 5), np.float32)])
        >>> np.isnan(keras.ops.convert_to_numpy(out)).any(axis=1).tolist()
        [False, True]
    """

    def __init__(self, min_size: int, data_format: str | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.min_size = int(min_size)
        self.data_format = _check_data_format(data_format)

    def call(self, inputs: list[keras.KerasTensor]) -> keras.KerasTensor:
        """Returns ``x`` with the rows of non-finite images set to NaN."""
        images, x = inputs
        return nan_rows(images, x, self.min_size, self.data_format)

    def compute_output_shape(self, input_shape: list[tuple[int | None, ...]]) -> tuple[int | None, ...]:
        """The shape of ``x``, with the images' batch size."""
        return (input_shape[0][0], *input_shape[1][1:])

    def get_config(self) -> dict[str, object]:
        """The layer's config, for serialization."""
        return {**super().get_config(), "min_size": self.min_size, "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="vgg_keras")
class Dense(keras.layers.Dense):
    """``keras.layers.Dense`` that, called with ``images=``, sets the rows of non-finite images to NaN.

    The ``predictions`` layer of a VGG with its top: the mask must come after
    the last ReLU, because TensorFlow's graph optimizer fuses MatMul, BiasAdd
    and ReLU into one kernel that turns NaN into 0. Without ``images`` it is
    ``keras.layers.Dense``. It keeps the class name, so weight files stay
    interchangeable with keras.applications (Keras names ``.weights.h5``
    groups by class name).

    Args:
        units: Output size.
        min_size: The smallest input height and width (see :class:`NonFiniteToNaN`).
        data_format: Layout of the images; defaults to ``keras.config.image_data_format()``.
        **kwargs: ``keras.layers.Dense`` arguments.

    Examples:
        >>> import numpy as np
        >>> images = np.zeros((2, 32, 32, 3), np.float32)
        >>> images[0, 0, 0, 0] = np.nan
        >>> out = Dense(4, min_size=32)(np.ones((2, 8), np.float32), images=images)
        >>> np.isnan(keras.ops.convert_to_numpy(out)).all(axis=1).tolist()
        [True, False]
    """

    def __init__(self, units: int, min_size: int = 1, data_format: str | None = None, **kwargs: object) -> None:
        super().__init__(units, **kwargs)
        self.min_size = int(min_size)
        self.data_format = _check_data_format(data_format)

    def call(
        self, inputs: keras.KerasTensor, images: keras.KerasTensor | None = None, training: bool | None = None
    ) -> keras.KerasTensor:
        """The dense layer's output; with ``images``, NaN in the rows of non-finite images."""
        outputs = super().call(inputs, training=training)
        return outputs if images is None else nan_rows(images, outputs, self.min_size, self.data_format)

    def compute_output_spec(
        self, inputs: keras.KerasTensor, images: keras.KerasTensor | None = None, training: bool | None = None
    ) -> keras.KerasTensor:
        """The dense layer's output spec."""
        return super().compute_output_spec(inputs)

    def get_config(self) -> dict[str, object]:
        """The layer's config, for serialization."""
        return {**super().get_config(), "min_size": self.min_size, "data_format": self.data_format}


def without_checks(model: keras.Model) -> keras.Model:
    """The same layers and weights without ``input_check`` and the NaN mask: a VGG as it was before them.

    For measuring what the checks cost, and for showing what they change.

    Args:
        model: A VGG from :func:`vgg_keras.build_vgg` (its layers form a chain).

    Returns:
        A functional model sharing ``model``'s layers; ``predictions`` runs as a plain ``Dense``.

    Examples:
        >>> import vgg_keras
        >>> from parity.core.config import VGGConfig
        >>> model = vgg_keras.build_vgg(VGGConfig(stages=((4,), (8,)), hidden=(8,), num_classes=3))
        >>> [layer.name for layer in without_checks(model).layers][:3]
        ['input_layer', 'block1_conv1', 'block1_pool']
    """
    inputs = keras.Input(shape=model.input.shape[1:], name="input_layer")
    x = inputs
    for layer in model.layers[1:]:
        if layer.name not in (INPUT_CHECK, NON_FINITE_TO_NAN):
            x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_without_checks")


def nan_rows(images: keras.KerasTensor, x: keras.KerasTensor, min_size: int, data_format: str) -> keras.KerasTensor:
    """``x`` with every value of sample ``i`` set to NaN where ``images[i]`` holds a NaN or inf.

    Args:
        images: The model's input batch.
        x: A batch computed from it (on TensorFlow possibly one row longer, see :class:`InputCheck`).
        min_size: The smallest height and width; on TensorFlow, where the sizes
            are unknown when traced, smaller images give NaN too.
        data_format: Layout of ``images``.

    Returns:
        ``x`` (cut to the images' batch), NaN in the rows of non-finite or too-small images.
    """
    ops = keras.ops
    ok = ops.all(ops.isfinite(images), axis=tuple(range(1, len(images.shape))))
    if keras.backend.backend() == "tensorflow":
        x, ok = _tf_cut_and_size(images, x, ok, min_size, data_format)
    ok = ops.reshape(ok, (-1,) + (1,) * (len(x.shape) - 1))
    return ops.where(ok, x, ops.cast(float("nan"), x.dtype))


def _one_line(message: str) -> ValueError:
    """A ``ValueError`` that Keras re-raises as it is.

    Keras rewrites an error raised in ``call`` into a multi-line message that
    repeats the arguments (the input tensor); it leaves alone an error marked
    as already rewritten (``_keras_call_info_injected``, Keras 3's own marker).
    """
    error = ValueError(message)
    error._keras_call_info_injected = True  # type: ignore[attr-defined]
    return error


def _tf_checked(x: object, channels: int, min_size: int, data_format: str, message: str) -> object:
    """TensorFlow: asserts what the static shape leaves open; pads an empty batch to one zero image."""
    import tensorflow as tf

    static = x.shape
    axes = [*_spatial_axes(data_format), _channel_axis(data_format)]
    if any(static[a] is None for a in axes):
        shape = tf.shape(x)
        sides = tf.stack([shape[a] for a in _spatial_axes(data_format)])
        ok = tf.logical_and(tf.reduce_all(sides >= min_size), tf.equal(shape[_channel_axis(data_format)], channels))
        with tf.control_dependencies([tf.debugging.Assert(ok, [message, shape], summarize=4)]):
            x = tf.identity(x)
        # XLA compiles the assertion as a no-op but resolves a reshape's target at compile time, when the
        # sizes are known: a shape one row off fails the compile, and the error names this node.
        target = shape + tf.stack([0, tf.where(ok, 0, 1), 0, 0])
        x = tf.reshape(x, target, name=_xla_node_name(channels, min_size))
    batch = static[0]
    if batch is not None and batch > 0:
        return x
    padded = tf.pad(x, [[0, 1], [0, 0], [0, 0], [0, 0]])
    if batch == 0:
        return padded
    # Constant paddings and a cut on the batch axis only: shape inference keeps the other sizes
    # (TFLite's converter refuses a Conv2D whose channels it cannot infer).
    return padded[: tf.maximum(tf.shape(x)[0], 1)]


def _xla_node_name(channels: int, min_size: int) -> str:
    """The name of the reshape that fails an XLA compile on a bad input: the only words XLA's error shows."""
    return (
        f"input_images_must_be_at_least_{min_size}x{min_size}_px_with_{channels}_channels"
        ".resize_them_first_with_vgg_keras.preprocess_images"
    )


def _tf_cut_and_size(images: object, x: object, ok: object, min_size: int, data_format: str) -> tuple[object, object]:
    """TensorFlow: ``x`` cut to the images' batch (see :class:`InputCheck`), and ``ok`` with the size check."""
    import tensorflow as tf

    batch = images.shape[0]
    if batch is None or batch == 0:
        x = x[: tf.shape(images)[0]]
    if any(images.shape[a] is None for a in _spatial_axes(data_format)):
        shape = tf.shape(images)
        big = tf.reduce_all(tf.stack([shape[a] for a in _spatial_axes(data_format)]) >= min_size)
        ok = tf.logical_and(ok, big)
    return x, ok

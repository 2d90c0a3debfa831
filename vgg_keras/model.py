"""Keras 3 VGG built from a :class:`parity.core.config.VGGConfig`.

Layer names follow keras.applications (``block{b}_conv{i}``, ``block{b}_pool``,
``flatten``, ``fc1``, ``fc2``, ``predictions``); batch-norm variants add
``block{b}_bn{i}`` and ``block{b}_relu{i}``. The head follows torchvision: an
adaptive average pool to 7x7, then flatten, fc1, ReLU, dropout, fc2, ReLU,
dropout, predictions. So, unlike keras.applications, ``include_top=True`` works
at any input size of at least 32x32 px, ``(None, None, 3)`` included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import keras

from parity.core.config import ARCHS, BN_EPSILON, BN_MOMENTUM_TORCH, LayerSpec, VGGConfig, layer_plan
from vgg_keras.checks import INPUT_CHECK, NON_FINITE_TO_NAN, Dense, InputCheck, NonFiniteToNaN
from vgg_keras.initializers import (
    KaimingNormalFanOut,
    TorchLinearNormal,
    conv_kernel_initializer,
    dense_kernel_initializer,
    torch_default_initializers,
)
from vgg_keras.layers import AdaptiveAveragePooling2D, BatchNormalization, Conv2D, Unfilled
from vgg_keras.vgg_model import VGGModel

__all__ = [
    "TO_CHANNELS_FIRST",
    "TO_CHANNELS_LAST",
    "build_vgg",
    "input_channels",
    "input_data_format",
    "internal_data_format",
    "preset_builder",
    "with_classes",
]

#: Names of the two weightless permutes a model computes between when its
#: layers run in another layout than its input (see :func:`internal_data_format`).
TO_CHANNELS_LAST = "to_channels_last"
TO_CHANNELS_FIRST = "to_channels_first"

_POOLINGS = (None, "avg", "max")


def build_vgg(
    config: VGGConfig,
    *,
    include_top: bool = True,
    weights: str | None = None,
    input_tensor: keras.KerasTensor | None = None,
    input_shape: Sequence[int | None] | None = None,
    pooling: str | None = None,
    classifier_activation: str | Callable[..., object] | None = "softmax",
    name: str | None = None,
    kernel_initializer: str | keras.initializers.Initializer | None = None,
) -> keras.Model:
    """Builds a Keras VGG from a config, optionally loading converted weights.

    Args:
        config: The network; ``config.num_classes`` sizes ``predictions``.
        include_top: Whether to include the classifier (adaptive pool, fc
            layers and ``predictions``).
        weights: ``None`` (random initialization), ``"converted"`` (torchvision's
            default ImageNet weights for this preset, converted; see
            :func:`vgg_keras.weights.converted_weights_path`), a torchvision
            weights name such as ``"IMAGENET1K_FEATURES"``, or the path of a
            ``.weights.h5`` file written by ``python -m parity.convert``. A
            file for 3 input channels loads into a model with another
            ``config.in_channels``: its first kernel is adapted with
            :func:`parity.core.layouts.adapt_input_channels`.
        input_tensor: Optional Keras tensor to use as the model's input.
        input_shape: Input shape without the batch axis, in the current
            ``keras.config.image_data_format()``; spatial sizes may be ``None``,
            the channels must be ``config.in_channels``. Defaults to
            ``(None, None, config.in_channels)`` (any size), or to the config's
            ``input_size`` when it has no adaptive pool and ``include_top=True``.
        pooling: With ``include_top=False``: ``None`` (4D feature map), ``"avg"``
            or ``"max"`` (global pooling to a 2D tensor).
        classifier_activation: Activation of ``predictions``; ``None`` for logits.
        name: Model name; defaults to ``config.name``.
        kernel_initializer: Initializer of the convolution and dense kernels.
            ``None`` (or ``"torchvision"``) means torchvision's scheme:
            :class:`vgg_keras.initializers.KaimingNormalFanOut` for
            convolutions and :class:`vgg_keras.initializers.TorchLinearNormal`
            (N(0, 0.01)) for dense layers; biases start at zero and batch norm
            at gamma 1, beta 0 either way. ``"glorot_uniform"`` gives Keras'
            default; any other Keras initializer applies to every kernel.
            When ``weights`` is given, ``None`` means
            :class:`vgg_keras.layers.Unfilled`: the file overwrites every
            kernel, and a random initialization of VGG16's 138M parameters
            takes about a second and 0.8 GB of temporary buffers, which
            TensorFlow's allocator keeps. After the load, such layers report
            torchvision's initializers (what ``keras.models.clone_model`` then
            uses).

    Returns:
        A functional ``keras.Model`` (:class:`vgg_keras.vgg_model.VGGModel`).

    Raises:
        ValueError: On any invalid argument, before anything is built.
        FileNotFoundError: If converted weights are requested but absent and
            cannot be converted here.

    Examples:
        >>> config = VGGConfig(stages=((16,), (32, 32)), pool_size=(2, 2), hidden=(64,), num_classes=10)
        >>> build_vgg(config, classifier_activation=None).output.shape
        (None, 10)
        >>> build_vgg(ARCHS["vgg16"], include_top=False, pooling="avg").output.shape
        (None, 512)
        >>> build_vgg(ARCHS["vgg16"], weights="converted")  # doctest: +SKIP
    """
    data_format = keras.config.image_data_format()
    shape = _check_args(config, include_top, pooling, classifier_activation, input_shape, input_tensor, data_format)
    weights_path, kernel_initializer = _weights_file(weights, config, include_top, kernel_initializer)
    img_input, inputs = _model_input(input_tensor, shape)
    x = InputCheck(config.in_channels, config.min_input_size, data_format=data_format, name=INPUT_CHECK)(img_input)
    x = _features(x, config, data_format, kernel_initializer)
    if include_top:
        x = _head(x, config, data_format, classifier_activation, kernel_initializer, img_input)
    else:
        nan_out = NonFiniteToNaN(config.min_input_size, data_format=data_format, name=NON_FINITE_TO_NAN)
        x = _feature_output(nan_out([img_input, x]), pooling, data_format)
    model = VGGModel(inputs, x, name=name or config.name)
    if weights_path is not None:
        _load_weights(model, weights_path, config, include_top)
    return model


def _check_args(
    config: VGGConfig,
    include_top: bool,
    pooling: str | None,
    classifier_activation: str | Callable[..., object] | None,
    input_shape: Sequence[int | None] | None,
    input_tensor: keras.KerasTensor | None,
    data_format: str,
) -> tuple[int | None, int | None, int]:
    """Validates :func:`build_vgg`'s arguments before anything is built; returns the input shape."""
    if pooling not in _POOLINGS:
        raise ValueError(f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if include_top and pooling is not None:
        raise ValueError(
            "`pooling` applies only with include_top=False (the top ends in `predictions`). "
            f"Received: pooling={pooling!r}, include_top=True"
        )
    if not isinstance(include_top, bool):
        raise ValueError(f"`include_top` must be True or False. Received: include_top={include_top!r}")
    if classifier_activation is not None:
        keras.activations.get(classifier_activation)  # raises on unknown names
    return _check_input_shape(config, input_shape, input_tensor, include_top, data_format)


def _weights_file(
    weights: str | None,
    config: VGGConfig,
    include_top: bool,
    kernel_initializer: str | keras.initializers.Initializer | None,
) -> tuple[Path | None, str | keras.initializers.Initializer | None]:
    """The file ``weights=`` names, and the kernel initializer that goes with it.

    A file overwrites every kernel, so with one the default initializer is
    :class:`Unfilled`. :mod:`vgg_keras.weights` (which needs h5py) is
    imported only when there is a file.
    """
    if weights is None:
        return None, kernel_initializer
    from vgg_keras.weights import resolve_weights

    path = resolve_weights(weights, config, include_top=include_top)
    return path, Unfilled() if kernel_initializer is None else kernel_initializer


def _model_input(
    input_tensor: keras.KerasTensor | None, shape: tuple[int | None, int | None, int]
) -> tuple[keras.KerasTensor, object]:
    """The tensor the layers start from, and the model's ``inputs`` (the source inputs of a Keras tensor)."""
    if input_tensor is None:
        img_input = keras.Input(shape=shape)
        return img_input, img_input
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor, keras.utils.get_source_inputs(input_tensor)
    img_input = keras.Input(tensor=input_tensor, shape=shape)
    return img_input, img_input


def _features(
    x: keras.KerasTensor,
    config: VGGConfig,
    data_format: str,
    kernel_initializer: str | keras.initializers.Initializer | None,
) -> keras.KerasTensor:
    """The convolutional stages: ``block{b}_conv{i}`` [, ``_bn{i}``, ``_relu{i}``] and ``block{b}_pool``.

    The layers compute in :func:`internal_data_format`; an input in another
    layout is transposed first (``to_channels_last`` or ``to_channels_first``).
    """
    compute_format = internal_data_format(data_format)
    if compute_format != data_format:
        x = _to_format(x, compute_format)
    channel_axis = 1 if compute_format == "channels_first" else -1
    for spec in layer_plan(config, include_top=False):
        if spec.kind == "conv":
            x, padding = _conv_padding(x, spec, compute_format)
            x = Conv2D(
                spec.out_features,
                (spec.kernel, spec.kernel),
                strides=(spec.stride, spec.stride),
                padding=padding,
                activation=None if config.batch_norm else "relu",
                data_format=compute_format,
                **_initializers(config, spec, kernel_initializer),
                name=spec.keras_name,
            )(x)
        elif spec.kind == "bn":
            x = BatchNormalization(
                axis=channel_axis, epsilon=BN_EPSILON, momentum=1.0 - BN_MOMENTUM_TORCH, name=spec.keras_name
            )(x)
        elif spec.kind == "relu" and config.batch_norm:
            x = keras.layers.Activation("relu", name=spec.keras_name)(x)
        elif spec.kind == "pool":
            x = keras.layers.MaxPooling2D(
                (spec.kernel, spec.kernel),
                strides=(spec.stride, spec.stride),
                data_format=compute_format,
                name=spec.keras_name,
            )(x)
    return x


def _conv_padding(x: keras.KerasTensor, spec: LayerSpec, data_format: str) -> tuple[keras.KerasTensor, str]:
    """torch's symmetric zero padding of a convolution, as Keras padding.

    ``"same"`` where it pads exactly as torch does (stride 1, odd kernel,
    padding ``(kernel - 1) / 2``: every VGG convolution, so VGG models keep
    their layers); otherwise a ``ZeroPadding2D`` layer (``block{b}_pad{i}``)
    before a ``"valid"`` convolution.
    """
    if spec.stride == 1 and spec.kernel % 2 == 1 and spec.padding == spec.kernel // 2:
        return x, "same"
    if spec.padding:
        name = spec.keras_name.replace("_conv", "_pad")
        x = keras.layers.ZeroPadding2D(spec.padding, data_format=data_format, name=name)(x)
    return x, "valid"


def _head(
    x: keras.KerasTensor,
    config: VGGConfig,
    data_format: str,
    classifier_activation: str | Callable[..., object] | None,
    kernel_initializer: str | keras.initializers.Initializer | None,
    images: keras.KerasTensor,
) -> keras.KerasTensor:
    """The classifier: [``avgpool``,] ``flatten``, ``fc{j}`` with ReLU and dropout, ``predictions``.

    ``predictions`` also reads the ``images``: it sets the logits of a sample with a NaN or inf to NaN
    (:class:`vgg_keras.checks.Dense`).
    """
    compute_format = internal_data_format(data_format)
    if config.pool_size is not None:
        x = AdaptiveAveragePooling2D(config.pool_size, data_format=compute_format, name="avgpool")(x)
    x = keras.layers.Flatten(data_format=compute_format, name="flatten")(x)
    for spec in layer_plan(config):  # the feature layers' specs are neither dense nor dropout
        if spec.kind == "dense" and spec.keras_name == "predictions":
            x = Dense(
                spec.out_features,
                min_size=config.min_input_size,
                data_format=data_format,
                activation=classifier_activation,
                **_initializers(config, spec, kernel_initializer),
                name=spec.keras_name,
            )(x, images=images)
        elif spec.kind == "dense":
            x = keras.layers.Dense(
                spec.out_features,
                activation="relu",
                **_initializers(config, spec, kernel_initializer),
                name=spec.keras_name,
            )(x)
        elif spec.kind == "dropout":
            x = keras.layers.Dropout(config.dropout, name=spec.keras_name)(x)
    return x


def _initializers(
    config: VGGConfig, spec: LayerSpec, kernel_initializer: str | keras.initializers.Initializer | None
) -> dict[str, object]:
    """A conv or dense layer's initializer arguments: the config's scheme unless the caller chose a kernel's."""
    if kernel_initializer in (None, "torchvision") and config.init == "torch_default":
        return torch_default_initializers(spec.in_features * (spec.kernel**2 if spec.kind == "conv" else 1))
    make = conv_kernel_initializer if spec.kind == "conv" else dense_kernel_initializer
    return {"kernel_initializer": make(kernel_initializer)}


def _feature_output(x: keras.KerasTensor, pooling: str | None, data_format: str) -> keras.KerasTensor:
    """Without the top: global pooling, or the feature map back in the model's layout (one permute)."""
    compute_format = internal_data_format(data_format)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(data_format=compute_format, name="global_average_pooling2d")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(data_format=compute_format, name="global_max_pooling2d")(x)
    if compute_format != data_format:
        return _to_format(x, data_format)
    return x


def _to_format(x: keras.KerasTensor, target: str) -> keras.KerasTensor:
    """One weightless permute of a 4D tensor into ``target``: ``to_channels_last`` or ``to_channels_first``."""
    if target == "channels_last":
        return keras.layers.Permute((2, 3, 1), name=TO_CHANNELS_LAST)(x)
    return keras.layers.Permute((3, 1, 2), name=TO_CHANNELS_FIRST)(x)


def _load_weights(model: keras.Model, path: Path, config: VGGConfig, include_top: bool) -> None:
    """Loads a converted file, then gives its :class:`Unfilled` layers torchvision's initializers."""
    from vgg_keras.weights import load_converted_weights

    load_converted_weights(model, path, config, include_top=include_top)
    for layer in model.layers:
        if isinstance(getattr(layer, "kernel_initializer", None), Unfilled):
            # Loaded: a clone or a model rebuilt from this config gets the config's init, not undefined values.
            if config.init == "torch_default":
                fan_in = math.prod(layer.kernel.shape[:-1])
                for attr, init in torch_default_initializers(fan_in).items():
                    setattr(layer, attr, init)
                continue
            conv = isinstance(layer, keras.layers.Conv2D)
            layer.kernel_initializer = KaimingNormalFanOut() if conv else TorchLinearNormal()


def internal_data_format(data_format: str) -> str:
    """The layout a VGG's layers compute in, for a model taking ``data_format``.

    On the TensorFlow backend this is always ``"channels_last"``: without
    oneDNN (the default on CPUs without AVX-512 VNNI/BF16/AMX, or with
    ``TF_ENABLE_ONEDNN_OPTS=0``) TensorFlow has no NCHW Conv2D or MaxPool
    kernel on the CPU, so a ``channels_first`` model transposes its input once
    (layer ``to_channels_last``) and, when it returns a feature map, its output
    once (``to_channels_first``).

    On the torch backend it is always ``"channels_first"``, the mirror image:
    torch's convolutions take NCHW, and Keras' torch backend wraps each
    ``channels_last`` convolution and pooling in transposes and copies. A
    ``channels_last`` model permutes its input once (``to_channels_first``, a
    view: the NHWC array becomes an NCHW tensor in torch's ``channels_last``
    memory format, which torch's CPU convolutions run fastest) and a feature
    map output once (``to_channels_last``).

    Weight shapes do not depend on the layout (kernels are HWIO, and
    ``flatten`` orders fc1's rows H, W, C in both), so weight files stay the
    same. JAX keeps the model's own layout.

    Args:
        data_format: The layout of the model's input and output.

    Returns:
        ``"channels_last"`` or ``"channels_first"``.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return "channels_last"
    if backend == "torch":
        return "channels_first"
    return data_format


def input_data_format(model: keras.Model) -> str:
    """The layout a model from :func:`build_vgg` takes its input in.

    Args:
        model: A VGG built by :func:`build_vgg` (it has a ``block1_conv1`` layer).

    Returns:
        ``"channels_last"`` or ``"channels_first"``.
    """
    for layer in model.layers:  # topological order: an input permute comes before block1_conv1
        if layer.name == TO_CHANNELS_LAST:
            return "channels_first"
        if layer.name == TO_CHANNELS_FIRST:
            return "channels_last"
        if layer.name == "block1_conv1":
            return str(layer.data_format)
    return str(model.get_layer("block1_conv1").data_format)


def _check_input_shape(
    config: VGGConfig,
    input_shape: Sequence[int | None] | None,
    input_tensor: keras.KerasTensor | None,
    include_top: bool,
    data_format: str,
) -> tuple[int | None, int | None, int]:
    """Validates and completes the input shape (without batch axis)."""
    fixed = config.pool_size is None and include_top
    if input_shape is None and input_tensor is not None and hasattr(input_tensor, "shape"):
        input_shape = tuple(input_tensor.shape)[1:]
    if input_shape is None:
        h, w = config.input_size if fixed and config.input_size else (None, None)
        return (config.in_channels, h, w) if data_format == "channels_first" else (h, w, config.in_channels)
    shape = tuple(input_shape)
    if len(shape) != 3:
        axes = "channels, height, width" if data_format == "channels_first" else "height, width, channels"
        raise ValueError(
            f"`input_shape` must have 3 entries ({axes}), without the batch axis. Received: input_shape={input_shape!r}"
        )
    if data_format == "channels_first":
        channels, h, w = shape
    else:
        h, w, channels = shape
    if channels != config.in_channels:
        raise ValueError(
            f"`input_shape` must have {config.in_channels} channels on the "
            f"{'first' if data_format == 'channels_first' else 'last'} axis ({data_format}), as the config says; "
            f"for another count build from config.replace(in_channels=...). Received: input_shape={input_shape!r}"
        )
    for side in (h, w):
        if side is not None and (not isinstance(side, int) or side < config.min_input_size):
            raise ValueError(
                f"Input must be at least {config.min_input_size}x{config.min_input_size} px: "
                f"{_shrinks(config)}. Received: input_shape={input_shape!r}"
            )
    if fixed:
        if h is None or w is None or (config.feature_size(h), config.feature_size(w)) != config.head_grid:
            raise ValueError(
                f"This config has no adaptive pool, so include_top=True needs an input that leaves a "
                f"{config.head_grid[0]}x{config.head_grid[1]} grid after its {len(config.stages)} stages, "
                f"e.g. {config.input_size}. Received: input_shape={input_shape!r}"
            )
    return shape  # type: ignore[return-value]


def _shrinks(config: VGGConfig) -> str:
    """How the feature layers shrink the input, for error messages."""
    if config.is_vgg_geometry:
        return f"{len(config.stages)} max pools halve it {len(config.stages)} times"
    return "its strided convolutions and max pools leave no pixel of a smaller one"


def input_channels(
    input_shape: Sequence[int | None] | None, input_tensor: keras.KerasTensor | None, data_format: str
) -> int | None:
    """The channel count an ``input_shape`` or ``input_tensor`` asks for, as keras.applications reads it.

    Args:
        input_shape: Input shape without the batch axis, or ``None``.
        input_tensor: Input tensor (with the batch axis), or ``None``; used
            when ``input_shape`` is ``None``.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
        The channel entry when it is a positive integer; ``None`` when neither
        argument gives one (the builder then checks and reports the shape).
    """
    shape: tuple[object, ...] | None = None
    if input_shape is not None:
        shape = tuple(input_shape)
    elif input_tensor is not None and getattr(input_tensor, "shape", None) is not None:
        shape = tuple(input_tensor.shape)[1:]
    if shape is None or len(shape) != 3:
        return None
    channels = shape[0] if data_format == "channels_first" else shape[-1]
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        return None
    return channels


_DOC = """Instantiates {title} as torchvision defines it, in Keras 3.

    Same signature as ``keras.applications.VGG16``. The head follows torchvision
    (adaptive {grid}x{grid} average pool, dropout), so ``include_top=True`` works at any
    input size of at least {min_size}x{min_size} px.

    Args:
        include_top: Whether to include the classifier.
        weights: ``None``, ``"converted"`` (torchvision's ImageNet weights,
            converted and verified; {weights_names}), or the path of a
            ``.weights.h5`` written by ``python -m parity.convert {arch}``.
        input_tensor: Optional Keras tensor to use as the model's input.
        input_shape: Input shape without the batch axis; defaults to ``(None, None, 3)``.
            Any channel count works, as in keras.applications; with
            converted weights the 3-channel first kernel is adapted
            (:func:`parity.core.layouts.adapt_input_channels`).
        pooling: With ``include_top=False``: ``None``, ``"avg"`` or ``"max"``.
        classes: Number of classes; must be 1000 with converted ImageNet weights.
        classifier_activation: Activation of ``predictions``; ``None`` for logits.
        name: Model name; defaults to ``"{arch}"``.

    Returns:
        A functional ``keras.Model`` (:class:`vgg_keras.vgg_model.VGGModel`).

    Raises:
        ValueError: On any invalid argument, before anything is built.

    Examples:
        >>> import vgg_keras
        >>> vgg_keras.{name}(classes=10, classifier_activation=None).output.shape
        (None, 10)
        >>> vgg_keras.{name}(include_top=False, pooling="avg").output.shape
        (None, {features})
        >>> model = vgg_keras.{name}(weights="converted")  # doctest: +SKIP
    """


def with_classes(config: VGGConfig, classes: int) -> VGGConfig:
    """``config`` with ``classes`` outputs, or the builders' one-line error for a bad count.

    Args:
        config: A preset or recipe.
        classes: The builder's ``classes`` argument.

    Returns:
        The config with ``num_classes=classes``.

    Raises:
        ValueError: If ``classes`` is not a positive integer.
    """
    try:
        return config.replace(num_classes=classes)
    except ValueError:
        raise ValueError(f"`classes` must be a positive integer. Received: classes={classes!r}") from None


def preset_builder(arch: str) -> Callable[..., keras.Model]:
    """Returns the keras.applications-style builder of one torchvision preset.

    Args:
        arch: A :data:`parity.core.config.ARCHS` name (a VGG preset or ``"alexnet"``).

    Returns:
        A function with keras.applications' VGG signature.
    """
    base = ARCHS[arch]

    def builder(
        include_top: bool = True,
        weights: str | None = None,
        input_tensor: keras.KerasTensor | None = None,
        input_shape: Sequence[int | None] | None = None,
        pooling: str | None = None,
        classes: int = 1000,
        classifier_activation: str | Callable[..., object] | None = "softmax",
        name: str | None = None,
    ) -> keras.Model:
        config = with_classes(base, classes)
        channels = input_channels(input_shape, input_tensor, keras.config.image_data_format())
        if channels is not None and channels != config.in_channels:
            config = config.replace(in_channels=channels)
        return build_vgg(
            config,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classifier_activation=classifier_activation,
            name=name,
        )

    from parity.core.catalog import WEIGHTS

    title = "AlexNet" if arch == "alexnet" else arch.upper().replace("_BN", " with batch norm")
    builder.__name__ = builder.__qualname__ = "AlexNet" if arch == "alexnet" else arch.upper()
    builder.__doc__ = _DOC.format(
        title=title,
        arch=arch,
        name=builder.__name__,
        weights_names=", ".join(WEIGHTS[arch]),
        grid=base.head_grid[0],
        min_size=base.min_input_size,
        features=base.out_channels,
    )
    return builder

"""The framework-free description of a VGG network.

One frozen dataclass, :class:`VGGConfig`, describes a VGG: its convolutional
stages, whether batch norm follows each convolution, the adaptive pool in front
of the classifier, and the classifier itself. Both builders (``vgg_torch`` and
``vgg_keras``) and the weight converter read the same config, and all of them
walk it through :func:`layer_plan`, so the PyTorch module indices, the Keras
layer names and the name map between them come from one place.

Importing this module loads neither PyTorch nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BN_EPSILON",
    "BN_MOMENTUM_TORCH",
    "PRESETS",
    "RECIPES",
    "LayerSpec",
    "VGGConfig",
    "get_config",
    "LAYER_FIELDS",
    "get_named_config",
    "layer_plan",
    "preset_matching_config",
]

#: torch.nn.BatchNorm2d's default epsilon. Keras' default (1e-3) would change
#: every batch-normalized activation, so the Keras builder sets this one.
BN_EPSILON: float = 1e-5
#: torch's momentum weights the *new* batch statistic; Keras' weights the old
#: moving average, so the Keras momentum is ``1 - BN_MOMENTUM_TORCH`` (0.9).
BN_MOMENTUM_TORCH: float = 0.1

LayerKind = Literal["conv", "bn", "relu", "pool", "dense", "dropout"]


@dataclass(frozen=True)
class VGGConfig:
    """A VGG network, independent of any framework.

    Args:
        stages: Output widths of the 3x3 convolutions, one tuple per stage. A
            2x2 max pool with stride 2 follows every stage, so a network with
            ``n`` stages divides the input size by ``2**n`` (rounding down).
        batch_norm: Whether a batch-norm layer follows every convolution (the
            torchvision ``*_bn`` variants).
        pool_size: Output ``(height, width)`` of the adaptive average pool in
            front of the classifier, ``(7, 7)`` in torchvision. ``None`` drops
            the pool: the classifier flattens the last max-pool output directly,
            as small-input (CIFAR-style) VGGs do, and ``input_size`` is required.
        input_size: ``(height, width)`` the network is built for. Required when
            ``pool_size`` is ``None`` (it fixes the classifier's input width);
            otherwise it is only the default size of the preprocessing crop.
        hidden: Widths of the hidden fully connected layers (``fc1``, ``fc2``,
            ...), each followed by ReLU and dropout. ``()`` gives a single
            linear classifier.
        num_classes: Width of the final layer (``predictions``).
        dropout: Dropout probability after each hidden layer.
        in_channels: Channels of the input image.
        name: A name for the network, used in model names and reports.

    Raises:
        ValueError: If any field is out of range.
    """

    stages: tuple[tuple[int, ...], ...]
    batch_norm: bool = False
    pool_size: tuple[int, int] | None = (7, 7)
    input_size: tuple[int, int] | None = None
    hidden: tuple[int, ...] = (4096, 4096)
    num_classes: int = 1000
    dropout: float = 0.5
    in_channels: int = 3
    name: str = "vgg"

    def __post_init__(self) -> None:
        # Accept lists from users and JSON; store tuples so the config is hashable.
        object.__setattr__(self, "stages", tuple(tuple(s) for s in self.stages))
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if self.pool_size is not None:
            object.__setattr__(self, "pool_size", _pair("pool_size", self.pool_size))
        if self.input_size is not None:
            object.__setattr__(self, "input_size", _pair("input_size", self.input_size))

        if not self.stages:
            raise ValueError(f"`stages` must hold at least one stage of conv widths. Received: stages={self.stages!r}")
        for stage in self.stages:
            if not stage or any(not _is_pos_int(w) for w in stage):
                raise ValueError(
                    "Every stage must be a non-empty tuple of positive integer conv widths. "
                    f"Received: stages={self.stages!r}"
                )
        if any(not _is_pos_int(w) for w in self.hidden):
            raise ValueError(f"`hidden` widths must be positive integers. Received: hidden={self.hidden!r}")
        if not _is_pos_int(self.num_classes):
            raise ValueError(f"`num_classes` must be a positive integer. Received: num_classes={self.num_classes!r}")
        if not _is_pos_int(self.in_channels):
            raise ValueError(f"`in_channels` must be a positive integer. Received: in_channels={self.in_channels!r}")
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, (int, float))
            or not 0.0 <= self.dropout < 1.0
        ):
            raise ValueError(f"`dropout` must be a float in [0, 1). Received: dropout={self.dropout!r}")
        if not isinstance(self.batch_norm, bool):
            raise ValueError(f"`batch_norm` must be True or False. Received: batch_norm={self.batch_norm!r}")
        if self.pool_size is None:
            if self.input_size is None:
                raise ValueError(
                    "A config without an adaptive pool flattens the last feature map, so it needs a fixed "
                    "`input_size`, e.g. input_size=(32, 32). Received: pool_size=None, input_size=None"
                )
            if min(self.input_size) < self.min_input_size:
                raise ValueError(
                    f"`input_size` must be at least {self.min_input_size} px per side for {len(self.stages)} "
                    f"max-pool stages. Received: input_size={self.input_size!r}"
                )

    @property
    def min_input_size(self) -> int:
        """Smallest input side that leaves at least one pixel after all max pools."""
        return 2 ** len(self.stages)

    @property
    def out_channels(self) -> int:
        """Channels of the last convolution."""
        return self.stages[-1][-1]

    @property
    def head_grid(self) -> tuple[int, int]:
        """``(height, width)`` of the feature map the classifier flattens.

        Raises:
            ValueError: Never for a valid config; kept for type narrowing.
        """
        if self.pool_size is not None:
            return self.pool_size
        assert self.input_size is not None  # guaranteed by __post_init__
        scale = 2 ** len(self.stages)
        return (self.input_size[0] // scale, self.input_size[1] // scale)

    @property
    def flat_features(self) -> int:
        """Width of the flattened vector that enters the classifier."""
        return self.out_channels * math.prod(self.head_grid)

    @property
    def num_params(self) -> int:
        """Trainable parameters, as torch counts them (BN running stats excluded)."""
        return sum(math.prod(shape) for _, shape in torch_parameter_shapes(self))

    def replace(self, **changes: object) -> VGGConfig:
        """Returns a copy with some fields changed (and validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """Returns a JSON-ready dict that :meth:`from_dict` turns back into this config."""
        d = dataclasses.asdict(self)
        d["stages"] = [list(s) for s in self.stages]
        d["hidden"] = list(self.hidden)
        d["pool_size"] = list(self.pool_size) if self.pool_size is not None else None
        d["input_size"] = list(self.input_size) if self.input_size is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> VGGConfig:
        """Builds a config from :meth:`to_dict`'s output."""
        return cls(**d)  # type: ignore[arg-type]


@dataclass(frozen=True)
class LayerSpec:
    """One layer in the walk of a config, shared by both builders and the converter.

    Attributes:
        kind: What the layer is.
        keras_name: Layer name in the Keras model (keras.applications' scheme).
        torch_name: Module path in the PyTorch model (torchvision's scheme).
        block: 1-based stage index for feature layers, 0 for classifier layers.
        in_features: Input channels (conv) or features (dense); 0 where unused.
        out_features: Output channels/features; 0 where unused.
    """

    kind: LayerKind
    keras_name: str
    torch_name: str
    block: int = 0
    in_features: int = 0
    out_features: int = 0


def layer_plan(config: VGGConfig, include_top: bool = True) -> Iterator[LayerSpec]:
    """Walks a config in forward order, naming each layer for both frameworks.

    Feature layers are numbered as ``torch.nn.Sequential`` numbers torchvision's
    ``features`` (conv, [bn,] relu per conv, one max pool per stage) and named as
    keras.applications names them (``block{b}_conv{i}``, ``block{b}_pool``).
    Classifier layers follow torchvision's ``classifier`` (linear, relu, dropout
    per hidden layer) and Keras' ``fc{j}`` / ``predictions``.

    Args:
        config: The network.
        include_top: Whether to walk the classifier too.

    Yields:
        One :class:`LayerSpec` per layer.
    """
    index = 0
    channels = config.in_channels
    for b, stage in enumerate(config.stages, start=1):
        for i, width in enumerate(stage, start=1):
            yield LayerSpec("conv", f"block{b}_conv{i}", f"features.{index}", b, channels, width)
            index += 1
            if config.batch_norm:
                yield LayerSpec("bn", f"block{b}_bn{i}", f"features.{index}", b, width, width)
                index += 1
            yield LayerSpec("relu", f"block{b}_relu{i}", f"features.{index}", b)
            index += 1
            channels = width
        yield LayerSpec("pool", f"block{b}_pool", f"features.{index}", b)
        index += 1
    if not include_top:
        return
    features = config.flat_features
    for j, width in enumerate(config.hidden, start=1):
        base = 3 * (j - 1)
        yield LayerSpec("dense", f"fc{j}", f"classifier.{base}", 0, features, width)
        yield LayerSpec("relu", f"fc{j}_relu", f"classifier.{base + 1}")
        yield LayerSpec("dropout", f"fc{j}_dropout", f"classifier.{base + 2}")
        features = width
    yield LayerSpec("dense", "predictions", f"classifier.{3 * len(config.hidden)}", 0, features, config.num_classes)


def torch_parameter_shapes(config: VGGConfig, include_top: bool = True) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Yields ``(state-dict key, shape)`` for every trainable torch parameter.

    Args:
        config: The network.
        include_top: Whether to include the classifier.

    Yields:
        Parameter names and shapes in torchvision's order.
    """
    for spec in layer_plan(config, include_top):
        if spec.kind == "conv":
            yield f"{spec.torch_name}.weight", (spec.out_features, spec.in_features, 3, 3)
            yield f"{spec.torch_name}.bias", (spec.out_features,)
        elif spec.kind == "bn":
            yield f"{spec.torch_name}.weight", (spec.out_features,)
            yield f"{spec.torch_name}.bias", (spec.out_features,)
        elif spec.kind == "dense":
            yield f"{spec.torch_name}.weight", (spec.out_features, spec.in_features)
            yield f"{spec.torch_name}.bias", (spec.out_features,)


def torch_state_shapes(config: VGGConfig, include_top: bool = True) -> dict[str, tuple[int, ...]]:
    """Every float tensor of a torchvision state dict: parameters and batch-norm running statistics.

    Each batch-norm layer may also hold an integer ``num_batches_tracked``
    counter, which carries no inference state and is not listed.

    Args:
        config: The network.
        include_top: Whether to include the classifier.

    Returns:
        ``{state-dict key: shape}`` in torchvision's order of layers.
    """
    shapes = dict(torch_parameter_shapes(config, include_top))
    for spec in layer_plan(config, include_top):
        if spec.kind == "bn":
            shapes[f"{spec.torch_name}.running_mean"] = (spec.out_features,)
            shapes[f"{spec.torch_name}.running_var"] = (spec.out_features,)
    return shapes


def _is_pos_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _pair(field: str, value: object) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(_is_pos_int(v) for v in value):
        raise ValueError(f"`{field}` must be a positive int or a (height, width) pair. Received: {field}={value!r}")
    return (int(value[0]), int(value[1]))


_A = ((64,), (128,), (256, 256), (512, 512), (512, 512))
_B = ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))
_D = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
_E = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))

#: The eight torchvision variants, by torchvision's builder name.
PRESETS: dict[str, VGGConfig] = {
    f"vgg{depth}{'_bn' if bn else ''}": VGGConfig(
        stages=stages, batch_norm=bn, input_size=(224, 224), name=f"vgg{depth}{'_bn' if bn else ''}"
    )
    for depth, stages in ((11, _A), (13, _B), (16, _D), (19, _E))
    for bn in (False, True)
}


#: The fields that decide a network's layers and weight shapes, apart from the class and input channel counts.
LAYER_FIELDS = ("stages", "batch_norm", "pool_size", "hidden")


def preset_matching_config(config: VGGConfig) -> str | None:
    """The preset whose layers equal this config's (:data:`LAYER_FIELDS`), ignoring class and input channel counts.

    Args:
        config: Any config.

    Returns:
        The preset's name, or ``None``.

    Examples:
        >>> preset_matching_config(PRESETS["vgg16"].replace(num_classes=10))
        'vgg16'
    """
    for arch, preset in PRESETS.items():
        if all(getattr(config, f) == getattr(preset, f) for f in LAYER_FIELDS):
            return arch
    return None


def get_config(arch: str) -> VGGConfig:
    """Returns the preset config of a torchvision variant.

    Args:
        arch: One of :data:`PRESETS`' keys, e.g. ``"vgg16_bn"``.

    Returns:
        The config.

    Raises:
        ValueError: If ``arch`` is not a preset.
    """
    try:
        return PRESETS[arch]
    except (KeyError, TypeError):
        raise ValueError(f"`arch` must be one of {', '.join(PRESETS)}. Received: arch={arch!r}") from None


#: Training recipes beside torchvision's presets, by name (not torchvision models).
#: ``cifar10_vgg16``: the classic small-image VGG16 for 32x32 CIFAR-10, features
#: ``[32, 32, 'M', 64, 64, 128, 128, 128, 'M', 256, 256, 256, 512, 512, 512, 'M']``
#: (13 convolutions, 3 max pools, no batch norm, no adaptive pool), classifier
#: ``Linear(512*4*4, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout,
#: Linear(4096, 10)``; see docs/training_cifar10.md.
RECIPES: dict[str, VGGConfig] = {
    "cifar10_vgg16": VGGConfig(
        stages=((32, 32), (64, 64, 128, 128, 128), (256, 256, 256, 512, 512, 512)),
        pool_size=None,
        input_size=(32, 32),
        hidden=(4096, 4096),
        num_classes=10,
        name="cifar10_vgg16",
    ),
}


def get_named_config(name: str) -> VGGConfig:
    """Returns a torchvision preset or a training recipe by name.

    Args:
        name: One of :data:`PRESETS`' or :data:`RECIPES`' keys.

    Returns:
        The config.

    Raises:
        ValueError: If ``name`` is neither.
    """
    found = RECIPES.get(name) if isinstance(name, str) else None
    if found is not None:
        return found
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"`name` must be one of {', '.join([*RECIPES, *PRESETS])}. Received: name={name!r}") from None

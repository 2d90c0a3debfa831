"""The framework-free description of a plain convolution stack: VGG and AlexNet.

One frozen dataclass, :class:`VGGConfig`, describes such a network: its
convolutional stages (each convolution's kernel, stride and padding, each
stage's max pool), whether batch norm follows each convolution, the adaptive
pool in front of the classifier, and the classifier itself (where its dropout
goes). Both builders (``vgg_torch`` and
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
from typing import Literal, NamedTuple

__all__ = [
    "ALEXNET",
    "ARCHS",
    "BN_EPSILON",
    "BN_MOMENTUM_TORCH",
    "PRESETS",
    "RECIPES",
    "Conv",
    "LayerSpec",
    "Pool",
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
ClassifierDropout = Literal["after", "before"]
#: How a network built without weights starts: torchvision's VGG scheme, or PyTorch's layer defaults.
InitScheme = Literal["vgg", "torch_default"]


class Conv(NamedTuple):
    """The geometry of one convolution (square kernel, equal stride and padding on both axes).

    Attributes:
        kernel: Kernel side.
        stride: Stride.
        padding: Zeros added on each side of both spatial axes.

    Examples:
        >>> Conv(11, stride=4, padding=2)
        Conv(kernel=11, stride=4, padding=2)
    """

    kernel: int = 3
    stride: int = 1
    padding: int = 1


class Pool(NamedTuple):
    """The geometry of one max pool (square window, no padding, rounding down as torch's default).

    Attributes:
        kernel: Window side.
        stride: Stride.
    """

    kernel: int = 2
    stride: int = 2


#: VGG's convolution: 3x3, stride 1, padding 1.
VGG_CONV = Conv()
#: VGG's max pool: 2x2, stride 2.
VGG_POOL = Pool()


@dataclass(frozen=True)
class VGGConfig:
    """A VGG-style network (VGG, AlexNet), independent of any framework.

    Args:
        stages: Output widths of the convolutions, one tuple per stage. By
            default every convolution is 3x3 with stride 1 and padding 1, and a
            2x2 max pool with stride 2 follows every stage (VGG), so a network
            with ``n`` stages divides the input size by ``2**n`` (rounding down).
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
        convs: Each convolution's :class:`Conv` (kernel, stride, padding),
            shaped as ``stages``; ``None`` means VGG's 3x3, stride 1, padding 1
            everywhere (a value equal to that is stored as ``None``).
        pools: The max pool after each stage, a :class:`Pool` (kernel, stride)
            or ``None`` for a stage without one; ``None`` for the whole field
            means VGG's 2x2, stride 2 after every stage (stored so when equal).
        pool_batch_norm: Whether a batch-norm layer follows every max pool
            (``block{b}_pool_bn``), as in the TensorFlow AlexNet recipe.
        classifier_dropout: Where each hidden layer's dropout goes:
            ``"after"`` its ReLU (torchvision's VGG: Linear, ReLU, Dropout) or
            ``"before"`` its linear layer (torchvision's AlexNet: Dropout,
            Linear, ReLU).

        init: How the builders initialize the network without weights:
            ``"vgg"`` (torchvision's ``VGG._initialize_weights``: Kaiming
            normal fan-out convolutions, N(0, 0.01) linear layers, zero
            biases) or ``"torch_default"`` (PyTorch's own layer defaults,
            which torchvision's AlexNet keeps: weights and biases uniform in
            +-1/sqrt(fan_in)).

    Raises:
        ValueError: If any field is out of range.

    Examples:
        >>> ARCHS["alexnet"].min_input_size, ARCHS["alexnet"].num_params
        (63, 61100840)
        >>> VGGConfig(stages=((8,), (16,)), pools=(Pool(3, 2), None), pool_size=(2, 2)).min_input_size
        3
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
    convs: tuple[tuple[Conv, ...], ...] | None = None
    pools: tuple[Pool | None, ...] | None = None
    pool_batch_norm: bool = False
    classifier_dropout: ClassifierDropout = "after"
    init: InitScheme = "vgg"

    def __post_init__(self) -> None:
        # Accept lists from users and JSON; store tuples so the config is hashable.
        object.__setattr__(self, "stages", tuple(tuple(s) for s in self.stages))
        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "convs", _convs(self.convs, self.stages))
        object.__setattr__(self, "pools", _pools(self.pools, self.stages))
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
        if not isinstance(self.pool_batch_norm, bool):
            raise ValueError(
                f"`pool_batch_norm` must be True or False. Received: pool_batch_norm={self.pool_batch_norm!r}"
            )
        if self.init not in ("vgg", "torch_default"):
            raise ValueError(f"init must be 'vgg' or 'torch_default'. Received: init={self.init!r}")
        if self.classifier_dropout not in ("after", "before"):
            raise ValueError(
                "`classifier_dropout` must be 'after' (Linear, ReLU, Dropout) or 'before' (Dropout, Linear, ReLU). "
                f"Received: classifier_dropout={self.classifier_dropout!r}"
            )
        if self.pool_size is None:
            if self.input_size is None:
                raise ValueError(
                    "A config without an adaptive pool flattens the last feature map, so it needs a fixed "
                    "`input_size`, e.g. input_size=(32, 32). Received: pool_size=None, input_size=None"
                )
            if min(self.input_size) < self.min_input_size:
                raise ValueError(
                    f"`input_size` must be at least {self.min_input_size} px per side for these "
                    f"{len(self.stages)} stages. Received: input_size={self.input_size!r}"
                )

    def stage_convs(self, stage: int) -> tuple[Conv, ...]:
        """The :class:`Conv` of each convolution of a stage (0-based)."""
        if self.convs is None:
            return (VGG_CONV,) * len(self.stages[stage])
        return self.convs[stage]

    def stage_pool(self, stage: int) -> Pool | None:
        """The max pool after a stage (0-based), or ``None``."""
        return VGG_POOL if self.pools is None else self.pools[stage]

    def feature_size(self, side: int) -> int:
        """The side of the last feature map for an input side, as torch rounds (down).

        Args:
            side: Input height or width.

        Returns:
            The output side; 0 or less when the input is too small.
        """
        for stage in range(len(self.stages)):
            for conv in self.stage_convs(stage):
                if side + 2 * conv.padding < conv.kernel:
                    return 0
                side = (side + 2 * conv.padding - conv.kernel) // conv.stride + 1
            pool = self.stage_pool(stage)
            if pool is not None:
                if side < pool.kernel:
                    return 0
                side = (side - pool.kernel) // pool.stride + 1
        return side

    @property
    def min_input_size(self) -> int:
        """Smallest input side that leaves at least one pixel after all convolutions and max pools."""
        side = 1
        while self.feature_size(side) < 1:
            side += 1
        return side

    @property
    def is_vgg_geometry(self) -> bool:
        """Whether every convolution is 3x3/1/1 and a 2x2/2 pool ends every stage (the input halves per stage)."""
        return self.convs is None and self.pools is None

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
        return (self.feature_size(self.input_size[0]), self.feature_size(self.input_size[1]))

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
        # Fields at their VGG default are left out, so VGG configs (and the files holding them) read as before.
        for key, default in (
            ("convs", None),
            ("pools", None),
            ("pool_batch_norm", False),
            ("classifier_dropout", "after"),
            ("init", "vgg"),
        ):
            if d[key] == default:
                del d[key]
        if self.convs is not None:
            d["convs"] = [[list(c) for c in stage] for stage in self.convs]
        if self.pools is not None:
            d["pools"] = [list(p) if p is not None else None for p in self.pools]
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
        kernel: Kernel (conv) or window (pool) side; 0 where unused.
        stride: Stride of a conv or pool; 0 where unused.
        padding: Zeros on each side (conv); 0 elsewhere.
    """

    kind: LayerKind
    keras_name: str
    torch_name: str
    block: int = 0
    in_features: int = 0
    out_features: int = 0
    kernel: int = 0
    stride: int = 0
    padding: int = 0


def layer_plan(config: VGGConfig, include_top: bool = True) -> Iterator[LayerSpec]:
    """Walks a config in forward order, naming each layer for both frameworks.

    Feature layers are numbered as ``torch.nn.Sequential`` numbers torchvision's
    ``features`` (conv, [bn,] relu per conv, the stage's max pool if it has
    one) and named as keras.applications names them (``block{b}_conv{i}``,
    ``block{b}_pool``). Classifier layers follow torchvision's ``classifier``
    (linear, relu, dropout per hidden layer, or dropout, linear, relu with
    ``classifier_dropout="before"``) and Keras' ``fc{j}`` / ``predictions``.

    Args:
        config: The network.
        include_top: Whether to walk the classifier too.

    Yields:
        One :class:`LayerSpec` per layer.
    """
    index = 0
    channels = config.in_channels
    for b, stage in enumerate(config.stages, start=1):
        for i, (width, conv) in enumerate(zip(stage, config.stage_convs(b - 1)), start=1):
            yield LayerSpec("conv", f"block{b}_conv{i}", f"features.{index}", b, channels, width, *conv)
            index += 1
            if config.batch_norm:
                yield LayerSpec("bn", f"block{b}_bn{i}", f"features.{index}", b, width, width)
                index += 1
            yield LayerSpec("relu", f"block{b}_relu{i}", f"features.{index}", b)
            index += 1
            channels = width
        pool = config.stage_pool(b - 1)
        if pool is not None:
            yield LayerSpec("pool", f"block{b}_pool", f"features.{index}", b, kernel=pool.kernel, stride=pool.stride)
            index += 1
            if config.pool_batch_norm:
                yield LayerSpec("bn", f"block{b}_pool_bn", f"features.{index}", b, channels, channels)
                index += 1
    if not include_top:
        return
    features = config.flat_features
    for j, width in enumerate(config.hidden, start=1):
        base = 3 * (j - 1)
        dense = LayerSpec("dense", f"fc{j}", "", 0, features, width)
        dropout = LayerSpec("dropout", f"fc{j}_dropout", "")
        order = (dense, LayerSpec("relu", f"fc{j}_relu", ""), dropout)
        if config.classifier_dropout == "before":
            order = (dropout, *order[:2])
        for k, spec in enumerate(order):
            yield dataclasses.replace(spec, torch_name=f"classifier.{base + k}")
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
            yield f"{spec.torch_name}.weight", (spec.out_features, spec.in_features, spec.kernel, spec.kernel)
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


def _is_count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _convs(convs: object, stages: tuple[tuple[int, ...], ...]) -> tuple[tuple[Conv, ...], ...] | None:
    """Validates ``convs`` against ``stages``; returns it as :class:`Conv` tuples, or ``None`` for VGG's."""
    if convs is None:
        return None
    shape = [len(s) for s in stages]
    try:
        found = tuple(tuple(Conv(*c) for c in stage) for stage in convs)  # type: ignore[union-attr]
    except TypeError:
        found = None
    if (
        found is None
        or [len(s) for s in found] != shape
        or not all(_is_pos_int(c.kernel) and _is_pos_int(c.stride) and _is_count(c.padding) for s in found for c in s)
    ):
        raise ValueError(
            "`convs` must give a (kernel, stride, padding) of positive ints (padding >= 0) for each convolution, "
            f"shaped as `stages` ({shape} per stage). Received: convs={convs!r}"
        )
    return None if all(c == VGG_CONV for s in found for c in s) else found


def _pools(pools: object, stages: tuple[tuple[int, ...], ...]) -> tuple[Pool | None, ...] | None:
    """Validates ``pools`` against ``stages``; returns it as :class:`Pool` tuples, or ``None`` for VGG's."""
    if pools is None:
        return None
    try:
        found = tuple(Pool(*p) if p is not None else None for p in pools)  # type: ignore[union-attr]
    except TypeError:
        found = None
    if (
        found is None
        or len(found) != len(stages)
        or not all(p is None or (_is_pos_int(p.kernel) and _is_pos_int(p.stride)) for p in found)
    ):
        raise ValueError(
            "`pools` must give a (kernel, stride) of positive ints, or None for no pool, for each of the "
            f"{len(stages)} stages. Received: pools={pools!r}"
        )
    return None if all(p == VGG_POOL for p in found) else found


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


#: torchvision's AlexNet (``torchvision.models.alexnet``): five convolutions with kernels 11/5/3/3/3 (stride 4
#: on the first; padding 2/2/1/1/1), 3x3 stride-2 max pools after the first, second and fifth, an adaptive
#: pool to 6x6, and a classifier of Dropout, Linear, ReLU per hidden layer.
ALEXNET = VGGConfig(
    stages=((64,), (192,), (384,), (256,), (256,)),
    convs=((Conv(11, 4, 2),), (Conv(5, 1, 2),), (Conv(3, 1, 1),), (Conv(3, 1, 1),), (Conv(3, 1, 1),)),
    pools=(Pool(3, 2), Pool(3, 2), None, None, Pool(3, 2)),
    pool_size=(6, 6),
    input_size=(224, 224),
    classifier_dropout="before",
    init="torch_default",
    name="alexnet",
)

#: Every torchvision architecture built here, by torchvision's builder name: the VGG :data:`PRESETS` and
#: ``alexnet``.
ARCHS: dict[str, VGGConfig] = {**PRESETS, "alexnet": ALEXNET}

#: The fields that decide a network's layers and weight shapes, apart from the class and input channel counts.
LAYER_FIELDS = (
    "stages",
    "batch_norm",
    "pool_size",
    "hidden",
    "convs",
    "pools",
    "pool_batch_norm",
    "classifier_dropout",
)


def preset_matching_config(config: VGGConfig) -> str | None:
    """The architecture whose layers equal this config's (:data:`LAYER_FIELDS`), ignoring class and input channels.

    Args:
        config: Any config.

    Returns:
        The preset's name, or ``None``.

    Examples:
        >>> preset_matching_config(PRESETS["vgg16"].replace(num_classes=10))
        'vgg16'
    """
    for arch, preset in ARCHS.items():
        if all(getattr(config, f) == getattr(preset, f) for f in LAYER_FIELDS):
            return arch
    return None


def get_config(arch: str) -> VGGConfig:
    """Returns the config of a torchvision architecture.

    Args:
        arch: One of :data:`ARCHS`' keys, e.g. ``"vgg16_bn"`` or ``"alexnet"``.

    Returns:
        The config.

    Raises:
        ValueError: If ``arch`` is not one of them.
    """
    try:
        return ARCHS[arch]
    except (KeyError, TypeError):
        raise ValueError(f"`arch` must be one of {', '.join(ARCHS)}. Received: arch={arch!r}") from None


#: Training recipes beside torchvision's presets, by name (not torchvision models).
#: ``cifar10_vgg16``: the classic small-image VGG16 for 32x32 CIFAR-10, features
#: ``[32, 32, 'M', 64, 64, 128, 128, 128, 'M', 256, 256, 256, 512, 512, 512, 'M']``
#: (13 convolutions, 3 max pools, no batch norm, no adaptive pool), classifier
#: ``Linear(512*4*4, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout,
#: Linear(4096, 10)``; see docs/training_cifar10.md.
#: ``paper_alexnet``: AlexNet as the TensorFlow versions of the paper's network write it, 227x227 input,
#: convolutions of 96, 256, 384, 384 and 256 filters (11x11 stride 4 unpadded; 5x5 and 3x3 padded "same"),
#: 3x3 stride-2 max pools after the first, second and fifth, each followed by batch norm (where the paper had
#: local response normalization), no adaptive pool (fc1 reads the 6x6 map), two hidden layers of 4096 with
#: dropout 0.2 after each, 10 classes. 58,323,530 trainable parameters.
RECIPES: dict[str, VGGConfig] = {
    "cifar10_vgg16": VGGConfig(
        stages=((32, 32), (64, 64, 128, 128, 128), (256, 256, 256, 512, 512, 512)),
        pool_size=None,
        input_size=(32, 32),
        hidden=(4096, 4096),
        num_classes=10,
        name="cifar10_vgg16",
    ),
    "paper_alexnet": VGGConfig(
        stages=((96,), (256,), (384,), (384,), (256,)),
        convs=((Conv(11, 4, 0),), (Conv(5, 1, 2),), (Conv(3, 1, 1),), (Conv(3, 1, 1),), (Conv(3, 1, 1),)),
        pools=(Pool(3, 2), Pool(3, 2), None, None, Pool(3, 2)),
        pool_batch_norm=True,
        pool_size=None,
        input_size=(227, 227),
        hidden=(4096, 4096),
        num_classes=10,
        dropout=0.2,
        name="paper_alexnet",
    ),
}


def get_named_config(name: str) -> VGGConfig:
    """Returns a torchvision architecture or a training recipe by name.

    Args:
        name: One of :data:`ARCHS`' or :data:`RECIPES`' keys.

    Returns:
        The config.

    Raises:
        ValueError: If ``name`` is neither.
    """
    found = RECIPES.get(name) if isinstance(name, str) else None
    if found is not None:
        return found
    try:
        return ARCHS[name]
    except (KeyError, TypeError):
        raise ValueError(f"`name` must be one of {', '.join([*RECIPES, *ARCHS])}. Received: name={name!r}") from None

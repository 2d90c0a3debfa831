"""torchvision's eight VGG builders and ``alexnet``, with torchvision's signature.

``vgg16(*, weights=None, progress=True, **kwargs)``, the other seven and ``alexnet`` are
real functions (own ``__name__``, ``__qualname__``, ``__module__``, docstring),
made by one factory, so torchvision's code that calls them (its model registry,
``torchvision.models.detection.ssd300_vgg16``) works with them. ``weights``
loads exactly as torchvision loads: ``num_classes`` comes from the weights'
categories (a conflicting value raises), the download goes through
``weights.get_state_dict(progress=progress, check_hash=True)``.

The ``weights`` annotation is torchvision's ``VGG*_Weights`` (``AlexNet_Weights``) enum, which
``torchvision.models.get_model_weights`` reads. torchvision is imported for it
when this module loads, unless TensorFlow is already loaded without
torchvision: importing torchvision then can crash the interpreter (triton's
LLVM clashes with TensorFlow's), so the builders work without weights and
refuse ``weights=...`` with a message saying to import torchvision first.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, Union

from parity.core.config import ARCHS
from vgg_torch.model import VGG, build_vgg

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

__all__ = ["ALEXNET_KWARGS", "KWARGS", "make_builder", "torchvision_load_kwargs", *ARCHS]

#: The keyword arguments torchvision's builders pass to its ``VGG`` class.
KWARGS = ("num_classes", "init_weights", "dropout")
#: The keyword arguments torchvision's ``alexnet`` passes to its ``AlexNet`` class (it has no initialization
#: of its own: its layers keep PyTorch's defaults).
ALEXNET_KWARGS = ("num_classes", "dropout")


def torchvision_load_kwargs(arch: str) -> dict[str, object]:
    """The keyword arguments of torchvision's builder for a model whose weights are loaded right after.

    Args:
        arch: A :data:`parity.core.config.ARCHS` name.

    Returns:
        ``{"init_weights": False}`` for the VGGs (skip their initialization);
        ``{}`` for ``alexnet``, whose torchvision builder takes no such argument.

    Examples:
        >>> torchvision_load_kwargs("alexnet"), torchvision_load_kwargs("vgg16")
        ({}, {'init_weights': False})
    """
    return {} if arch == "alexnet" else {"init_weights": False}


def _torchvision_names(arch: str) -> tuple[str, str, str]:
    """torchvision's module, weights enum and model class names of an architecture."""
    if arch == "alexnet":
        return "alexnet", "AlexNet_Weights", "AlexNet"
    return "vgg", f"{arch.upper()}_Weights", "VGG"


def _torchvision_importable() -> bool:
    """Whether importing torchvision here is safe: not after TensorFlow (unless torchvision came first)."""
    return "torchvision" in sys.modules or "tensorflow" not in sys.modules


def _weights_enum(arch: str) -> type[WeightsEnum] | None:
    """torchvision's weights enum of a preset (``VGG16_BN_Weights``), or ``None`` when it cannot be imported safely."""
    if not _torchvision_importable():
        return None
    module, enum, _ = _torchvision_names(arch)
    try:
        tv_module = importlib.import_module(f"torchvision.models.{module}")
    except ImportError:
        return None
    return getattr(tv_module, enum)


def _resolve(arch: str, enum: type[WeightsEnum] | None, weights: object) -> WeightsEnum | None:
    """torchvision's ``Weights.verify``: ``None``, a member, or its name (``"IMAGENET1K_V1"``, ``"DEFAULT"``)."""
    if weights is None:
        return None
    if enum is None:
        enum = _weights_enum(arch)
    if enum is None:
        raise RuntimeError(
            f"Loading weights needs torchvision, and importing it after TensorFlow can crash the interpreter: import "
            f"torchvision (or vgg_torch) before TensorFlow. Received: weights={weights!r}"
        )
    if isinstance(weights, str):
        name = weights.replace(f"{enum.__name__}.", "")
        if name not in enum.__members__:
            raise ValueError(
                f"`weights` must be None, a {enum.__name__} member or one of its names "
                f"({', '.join(enum.__members__)}). Received: weights={weights!r}"
            )
        return enum[name]
    if not isinstance(weights, enum):
        raise TypeError(
            f"`weights` of {arch} must be None, a {enum.__name__} member or its name. "
            f"Received: weights={weights!r} ({type(weights).__name__})"
        )
    return weights


_DOC = """{title} from `{paper}`__, with torchvision's signature and module layout.

    The state dict equals torchvision's ``{arch}`` key for key, so torchvision's
    checkpoints load with ``strict=True``.

    Args:
        weights: ``None`` (random initialization), a
            ``torchvision.models.{enum}`` member, or its name
            (``"IMAGENET1K_V1"``, ``"DEFAULT"``{extra}). Downloaded into
            torch's hub cache with the hash in its file name checked, exactly
            as torchvision does.
        progress: Whether to show a progress bar while downloading.
        **kwargs: torchvision's ``{cls}`` arguments: ``num_classes`` (taken from
            the weights' categories when weights are given; another value
            raises){kwargs}; and torchvision's
            deprecated ``pretrained`` (``True`` means ``"IMAGENET1K_V1"``,
            with torchvision's deprecation warning).

    Returns:
        The model, in training mode.

    Raises:
        ValueError: If ``weights`` is an unknown name, or ``num_classes``
            conflicts with the weights' categories.
        TypeError: If ``weights`` belongs to another architecture, a keyword
            argument is not one of torchvision's, or both ``weights`` and
            ``pretrained`` are given.
        RuntimeError: If weights are requested in a process that loaded
            TensorFlow before torchvision.

    Examples:
        >>> import vgg_torch
        >>> vgg_torch.{arch}(num_classes=10).classifier[-1].out_features
        10
        >>> model = vgg_torch.{arch}(weights="IMAGENET1K_V1").eval()  # doctest: +SKIP
    """


def make_builder(arch: str) -> Callable[..., VGG]:
    """Makes torchvision's builder function of one preset.

    Args:
        arch: A :data:`parity.core.config.ARCHS` name, e.g. ``"vgg16_bn"`` or ``"alexnet"``.

    Returns:
        A function named ``arch``, defined in this module, with torchvision's
        signature ``(*, weights=None, progress=True, **kwargs) -> VGG``.

    Raises:
        ValueError: If ``arch`` is not one of them.
    """
    if arch not in ARCHS:
        raise ValueError(f"`arch` must be one of {', '.join(ARCHS)}. Received: arch={arch!r}")
    config = ARCHS[arch]
    enum = _weights_enum(arch)
    allowed = ALEXNET_KWARGS if arch == "alexnet" else KWARGS
    _, enum_name, cls = _torchvision_names(arch)

    def builder(*, weights: object = None, progress: bool = True, **kwargs: Any) -> VGG:
        if "pretrained" in kwargs:  # torchvision's legacy interface (its handle_legacy_interface)
            pretrained = kwargs.pop("pretrained")
            if weights is not None:
                raise TypeError(
                    f"{arch}() takes weights= or the deprecated pretrained=, not both. "
                    f"Received: pretrained={pretrained!r}, weights={weights!r}"
                )
            warnings.warn(
                "The parameter 'pretrained' is deprecated since 0.13 and may be removed in the future, "
                "please use 'weights' instead.",
                UserWarning,
                stacklevel=2,
            )
            weights = "IMAGENET1K_V1" if pretrained else None
        unknown = [k for k in kwargs if k not in allowed]
        if unknown:
            raise TypeError(
                f"{arch}() takes weights, progress and torchvision's {cls} arguments {', '.join(allowed)}. "
                f"Received: {unknown[0]}={kwargs[unknown[0]]!r}"
            )
        if arch == "alexnet":
            kwargs["init_weights"] = False  # torchvision's AlexNet keeps PyTorch's default initialization
        resolved = _resolve(arch, enum, weights)
        if resolved is not None:
            from torchvision.models._utils import _ovewrite_named_param

            kwargs["init_weights"] = False
            if resolved.meta["categories"] is not None:
                classes = len(resolved.meta["categories"])
                try:
                    _ovewrite_named_param(kwargs, "num_classes", classes)
                except ValueError:
                    raise ValueError(
                        f"{resolved!r} has {classes} classes, so num_classes must be {classes} or left out; for "
                        f"another head load them with num_classes={classes} and replace the last layer. "
                        f"Received: num_classes={kwargs['num_classes']!r}"
                    ) from None
        model = build_vgg(config, **kwargs)
        if resolved is not None:
            model.load_state_dict(resolved.get_state_dict(progress=progress, check_hash=True))
        return model

    builder.__name__ = builder.__qualname__ = arch
    builder.__module__ = __name__
    builder.__annotations__ = {
        "weights": Optional[enum] if enum is not None else Union[str, None],  # noqa: UP007, UP045 (torchvision reads typing args)
        "progress": bool,
        "kwargs": Any,
        "return": VGG,
    }
    builder.__doc__ = _docstring(arch, enum_name, cls)
    return builder


def _docstring(arch: str, enum_name: str, cls: str) -> str:
    """The builder's docstring, naming the paper, the weights enum and the class arguments of ``arch``."""
    if arch == "alexnet":
        title, paper = "AlexNet", "One weird trick for parallelizing convolutional neural networks"
        url, kwargs = "https://arxiv.org/abs/1404.5997", " and ``dropout``"
    else:
        depth = "".join(c for c in arch if c.isdigit())
        title = f"VGG-{depth}{' with batch normalization' if ARCHS[arch].batch_norm else ''}"
        paper, url = (
            "Very Deep Convolutional Networks for Large-Scale Image Recognition",
            "https://arxiv.org/abs/1409.1556",
        )
        kwargs = ", ``init_weights`` and ``dropout``"
    return _DOC.format(
        title=title,
        paper=f"{paper}\n    <{url}>",
        arch=arch,
        enum=enum_name,
        cls=cls,
        kwargs=kwargs,
        extra=', "IMAGENET1K_FEATURES"' if arch == "vgg16" else "",
    )


vgg11 = make_builder("vgg11")
vgg11_bn = make_builder("vgg11_bn")
vgg13 = make_builder("vgg13")
vgg13_bn = make_builder("vgg13_bn")
vgg16 = make_builder("vgg16")
vgg16_bn = make_builder("vgg16_bn")
vgg19 = make_builder("vgg19")
vgg19_bn = make_builder("vgg19_bn")
alexnet = make_builder("alexnet")

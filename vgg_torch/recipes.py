"""PyTorch builders of the training recipes in :data:`parity.core.config.RECIPES`."""

from __future__ import annotations

from parity.core.config import RECIPES
from vgg_torch.model import VGG, build_vgg

__all__ = ["cifar10_vgg16", "paper_alexnet"]


def cifar10_vgg16(*, num_classes: int | None = None, dropout: float | None = None, init_weights: bool = True) -> VGG:
    """The CIFAR-10 VGG16 recipe (32x32 input, 10 classes, no batch norm, no adaptive pool).

    Args:
        num_classes: Overrides the recipe's 10 classes.
        dropout: Overrides the recipe's dropout (0.5, torch's default).
        init_weights: Whether to apply torchvision's initialization.

    Returns:
        The model, in training mode; its state dict has torchvision's VGG keys
        (``features.*``, ``classifier.*``).
    """
    return build_vgg(RECIPES["cifar10_vgg16"], num_classes=num_classes, dropout=dropout, init_weights=init_weights)


def paper_alexnet(*, num_classes: int | None = None, dropout: float | None = None, init_weights: bool = True) -> VGG:
    """The paper-style AlexNet recipe (227x227 input, batch norm after each pool, no adaptive pool, 10 classes).

    Args:
        num_classes: Overrides the recipe's 10 classes.
        dropout: Overrides the recipe's dropout (0.2).
        init_weights: Whether to apply torchvision's VGG initialization.

    Returns:
        The model, in training mode, with torchvision-style keys (``features.*``, ``classifier.*``).

    Examples:
        >>> sum(p.numel() for p in paper_alexnet().parameters())
        58323530
    """
    return build_vgg(RECIPES["paper_alexnet"], num_classes=num_classes, dropout=dropout, init_weights=init_weights)

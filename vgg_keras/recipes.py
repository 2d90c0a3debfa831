"""Keras builders of the training recipes in :data:`parity.core.config.RECIPES`."""

from __future__ import annotations

from collections.abc import Callable

import keras

from parity.core.config import RECIPES
from vgg_keras.model import build_vgg, with_classes

__all__ = ["CIFAR10_VGG16", "PAPER_ALEXNET"]


def CIFAR10_VGG16(  # noqa: N802 (keras.applications' naming)
    weights: str | None = None,
    classes: int = 10,
    classifier_activation: str | Callable[..., object] | None = "softmax",
    name: str | None = None,
) -> keras.Model:
    """The CIFAR-10 VGG16 recipe for 32x32x3 input, with torchvision's initialization.

    Args:
        weights: ``None`` (torchvision's initialization) or the path of a
            ``.weights.h5`` written by ``python -m parity.train``.
        classes: Number of classes.
        classifier_activation: Activation of ``predictions``; ``None`` for logits.
        name: Model name; defaults to ``"cifar10_vgg16"``.

    Returns:
        A functional ``keras.Model``.

    Raises:
        ValueError: On an invalid argument.
    """
    config = with_classes(RECIPES["cifar10_vgg16"], classes)
    return build_vgg(config, weights=weights, classifier_activation=classifier_activation, name=name)


def PAPER_ALEXNET(  # noqa: N802 (keras.applications' naming)
    weights: str | None = None,
    classes: int = 10,
    classifier_activation: str | Callable[..., object] | None = "softmax",
    name: str | None = None,
) -> keras.Model:
    """The paper-style AlexNet recipe for 227x227x3 input (batch norm after each pool, dropout 0.2).

    Args:
        weights: ``None`` (torchvision's VGG initialization) or the path of a ``.weights.h5``.
        classes: Number of classes.
        classifier_activation: Activation of ``predictions``; ``None`` for logits.
        name: Model name; defaults to ``"paper_alexnet"``.

    Returns:
        A functional ``keras.Model``.

    Raises:
        ValueError: On an invalid argument.

    Examples:
        >>> PAPER_ALEXNET().count_params() - 2 * (96 + 256 + 256)  # BN moving statistics aside
        58323530
    """
    config = with_classes(RECIPES["paper_alexnet"], classes)
    return build_vgg(config, weights=weights, classifier_activation=classifier_activation, name=name)

"""ImageNet class names and ``decode_predictions``, offline, with torchvision's category names.

Importing this module loads no framework but Keras (for tensor conversion).
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

import keras
import numpy as np

__all__ = ["decode_predictions", "imagenet_class_names"]

_NUM_CLASSES = 1000
_CLASS_NAMES_FILE = "imagenet_classes.txt"


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

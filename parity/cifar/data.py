"""The CIFAR-10 layout and the arrays read from it.

Constants, :class:`CifarData`, :class:`CifarError` and :func:`normalize`: the
one place that knows the shape of CIFAR-10's files (3073-byte records, the
batch names, the two folder names, the class names) and of the data they hold,
shared by the reader (:mod:`parity.cifar.read`), the writers
(:mod:`parity.cifar.write`), the download (:mod:`parity.cifar.download`) and
training (:mod:`parity.train.loop`). numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BIN_DIR",
    "CHANNELS",
    "CLASSES",
    "PIXELS",
    "PY_DIR",
    "RECORD_BYTES",
    "SIDE",
    "TEST_FILE",
    "TRAIN_FILES",
    "CifarData",
    "CifarError",
    "normalize",
]

SIDE = 32
CHANNELS = 3
PIXELS = CHANNELS * SIDE * SIDE
RECORD_BYTES = 1 + PIXELS
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
BIN_DIR = "cifar-10-batches-bin"
PY_DIR = "cifar-10-batches-py"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class CifarError(ValueError):
    """A CIFAR-10 file or folder that cannot be used: one line, ending in ``Received: ...``."""


@dataclass(frozen=True)
class CifarData:
    """CIFAR-10 (or any data in its layout), in file order.

    Attributes:
        train_images: uint8 ``(N, 3, 32, 32)``.
        train_labels: int64 ``(N,)``.
        test_images: uint8 ``(M, 3, 32, 32)``.
        test_labels: int64 ``(M,)``.
        classes: Class names; labels index them.
        source: The folder read and its layout (``"binary"`` or ``"python"``).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    source: str

    def limit(self, n: int | None) -> CifarData:
        """The first ``n`` training and the first ``n`` test images (all with ``None``)."""
        if n is None:
            return self
        return CifarData(
            self.train_images[:n],
            self.train_labels[:n],
            self.test_images[:n],
            self.test_labels[:n],
            self.classes,
            self.source,
        )


def normalize(images: np.ndarray) -> np.ndarray:
    """torchvision's ``ToTensor()`` then ``Normalize((0.5,) * 3, (0.5,) * 3)``, in float32 as torch computes it.

    Args:
        images: uint8 ``(N, 3, H, W)``.

    Returns:
        float32 ``(N, 3, H, W)`` in [-1, 1].
    """
    x = images.astype(np.float32) / np.float32(255)
    return (x - np.float32(0.5)) / np.float32(0.5)

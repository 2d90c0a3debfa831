"""Writing CIFAR-10 folders: both published layouts, and scikit-learn's digits as CIFAR-10-shaped data.

:func:`write_binary_folder` and :func:`write_python_folder` write a
:class:`~parity.cifar.data.CifarData` as the official archives lay it out
(the Python batches pickled as Python 2 wrote them, :func:`python2_pickle`),
each file under a temporary name and renamed when complete.
:func:`digits_as_cifar` gives real images to train on where CIFAR-10 itself
cannot be downloaded (``python -m parity.cifar digits-to-cifar DIR``).
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np

from parity.cifar.data import CHANNELS, PIXELS, RECORD_BYTES, SIDE, TEST_FILE, TRAIN_FILES, CifarData
from parity.core.atomic import write_atomic

__all__ = ["digits_as_cifar", "python2_pickle", "write_binary_folder", "write_python_folder"]


def _split(n: int, parts: int) -> list[slice]:
    edges = np.linspace(0, n, parts + 1).astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def write_binary_folder(folder: str | os.PathLike[str], data: CifarData) -> Path:
    """Writes data in CIFAR-10's binary layout: five training batches, a test batch, batches.meta.txt.

    Args:
        folder: Where to write (created if missing); the files go straight into it.
        data: Images ``(N, 3, 32, 32)`` uint8 and labels < 256.

    Returns:
        The folder.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)

    def records(x: np.ndarray, y: np.ndarray) -> bytes:
        rows = np.empty((len(x), RECORD_BYTES), np.uint8)
        rows[:, 0] = y
        rows[:, 1:] = x.reshape(len(x), -1)
        return rows.tobytes()

    for name, part in zip(TRAIN_FILES, _split(len(data.train_images), len(TRAIN_FILES)), strict=True):
        write_atomic(out / f"{name}.bin", records(data.train_images[part], data.train_labels[part]))
    write_atomic(out / f"{TEST_FILE}.bin", records(data.test_images, data.test_labels))
    write_atomic(out / "batches.meta.txt", ("\n".join(data.classes) + "\n\n").encode("ascii"))
    return out


class _Python2StylePickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    """Pickles as Python 2 did for CIFAR-10: protocol 2, strings as byte strings, ``numpy.core`` globals."""

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        self.write(
            pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else pickle.BINSTRING + struct.pack("<i", n) + obj
        )
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin-1"))

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = getattr(obj, "__module__", "") or ""
        name = name or obj.__qualname__  # type: ignore[attr-defined]
        if module.startswith("numpy._core"):
            module = "numpy.core" + module[len("numpy._core") :]
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]
    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def python2_pickle(obj: object) -> bytes:
    """``obj`` pickled as the official CIFAR-10 Python batches are (protocol 2, Python 2 strings)."""
    buffer = io.BytesIO()
    _Python2StylePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def write_python_folder(folder: str | os.PathLike[str], data: CifarData) -> Path:
    """Writes data in CIFAR-10's Python layout (pickles as the official ones are written).

    Args:
        folder: Where to write (created if missing).
        data: Images ``(N, 3, 32, 32)`` uint8 and labels.

    Returns:
        The folder.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)

    def batch(label: str, x: np.ndarray, y: np.ndarray, start: int) -> bytes:
        return python2_pickle(
            {
                b"batch_label": label.encode(),
                b"labels": [int(v) for v in y],
                b"data": np.ascontiguousarray(x.reshape(len(x), -1), np.uint8),
                b"filenames": [f"image_{start + i:05d}.png".encode() for i in range(len(x))],
            }
        )

    for i, (name, part) in enumerate(
        zip(TRAIN_FILES, _split(len(data.train_images), len(TRAIN_FILES)), strict=True), 1
    ):
        write_atomic(
            out / name, batch(f"training batch {i} of 5", data.train_images[part], data.train_labels[part], part.start)
        )
    write_atomic(out / TEST_FILE, batch("testing batch 1 of 1", data.test_images, data.test_labels, 0))
    meta = {
        b"num_cases_per_batch": len(data.test_images),
        b"label_names": [c.encode() for c in data.classes],
        b"num_vis": PIXELS,
    }
    write_atomic(out / "batches.meta", python2_pickle(meta))
    return out


def digits_as_cifar(test_size: int = 297, seed: int = 0) -> CifarData:
    """scikit-learn's 8x8 digits (1,797 images, shipped with it) as CIFAR-10-shaped data.

    Each 8x8 image (values 0..16) is scaled to 0..255, upscaled 4x by
    repeating pixels to 32x32, and copied to 3 channels; the images are
    shuffled with ``seed`` and the last ``test_size`` form the test set.

    Args:
        test_size: Test images.
        seed: Seed of the shuffle.

    Returns:
        1,500 training and 297 test images (by default), classes ``"0"`` ... ``"9"``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    big = images.repeat(SIDE // 8, axis=1).repeat(SIDE // 8, axis=2)
    rgb = np.repeat(big[:, None], CHANNELS, axis=1)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(rgb))
    rgb, labels = rgb[order], labels[order]
    cut = len(rgb) - test_size
    return CifarData(
        rgb[:cut], labels[:cut], rgb[cut:], labels[cut:], tuple(str(d) for d in range(10)), "sklearn digits"
    )

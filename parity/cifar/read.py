"""The standard CIFAR-10 folders, read with numpy alone (no framework, no pickled code).

Two layouts are read, as published at https://www.cs.toronto.edu/~kriz/cifar.html:

* the binary version, ``cifar-10-batches-bin/``: ``data_batch_1.bin`` ...
  ``data_batch_5.bin`` and ``test_batch.bin``, each a run of 3073-byte
  records (one label byte, then 3072 pixel bytes: the red, green and blue
  32x32 planes, row-major), and ``batches.meta.txt`` (one class name a line);
* the Python version, ``cifar-10-batches-py/``: pickles ``data_batch_1`` ...
  ``data_batch_5``, ``test_batch`` and ``batches.meta``. They are read by
  :class:`RestrictedUnpickler`, which admits the three globals a numpy uint8
  array is rebuilt from and nothing else, so a hostile pickle cannot run code.

Both give the same :class:`CifarData`: uint8 images ``(N, 3, 32, 32)`` and
int64 labels, in file order, which both frameworks' training reads.

A truncated, wrong-sized or hostile file is refused with :class:`CifarError`,
one line ending in ``Received: ...``; ``python -m parity.cifar`` exits 2 then.

``python -m parity.cifar digits-to-cifar DIR`` writes scikit-learn's 8x8
handwritten digits, upscaled to 32x32 RGB, as a CIFAR-10 binary (or
``--format python``) folder: real images to train on where CIFAR-10 itself
cannot be downloaded. ``python -m parity.cifar download DIR`` fetches the
official archive (md5 checked, extracted without path traversal).

This module reads; the layout and the data class are in
:mod:`parity.cifar.data`, the writers in :mod:`parity.cifar.write`, the
download in :mod:`parity.cifar.download`, the CLI in :mod:`parity.cifar.cli`.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from parity.cifar.data import (
    BIN_DIR,
    CHANNELS,
    CLASSES,
    PIXELS,
    PY_DIR,
    RECORD_BYTES,
    SIDE,
    TEST_FILE,
    TRAIN_FILES,
    CifarData,
    CifarError,
)
from parity.core.errors import first_line, os_reason

__all__ = ["RestrictedUnpickler", "load_cifar10"]

#: Largest pickle read (a real CIFAR-10 batch is 31 MB); larger files are refused before reading.
MAX_PICKLE_BYTES = 256 * 1024 * 1024


# --- binary version --------------------------------------------------------------------------------------------------


def _read_binary(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    shown = f"Received: {path} of"
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise CifarError(f"{path} is not a regular file: restore the CIFAR-10 folder. Received: {path}")
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise CifarError(f"{path} cannot be read ({os_reason(e)}). Received: {path}") from None
    if size == 0 or size % RECORD_BYTES:
        raise CifarError(
            f"{path.name} must hold whole {RECORD_BYTES}-byte records (1 label byte + 3x32x32 pixels), so it is "
            f"truncated or not a CIFAR-10 binary batch: download it again. {shown} {size} bytes"
        )
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= num_classes:
        raise CifarError(
            f"{path.name} has a label outside the {num_classes} classes of batches.meta.txt, so it is not a "
            f"CIFAR-10 batch. {shown} label {int(labels.max())}"
        )
    return records[:, 1:].reshape(-1, CHANNELS, SIDE, SIDE).copy(), labels


def _read_classes_txt(path: Path) -> tuple[str, ...]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CifarError(
            f"{path} cannot be read ({os_reason(e)}): restore the CIFAR-10 folder. Received: {path}"
        ) from None
    try:
        names = tuple(line.strip() for line in raw.decode("ascii").splitlines() if line.strip())
    except UnicodeDecodeError:
        raise CifarError(f"{path.name} must be ASCII class names, one a line. Received: {raw[:40]!r}") from None
    if not 2 <= len(names) <= 256:
        raise CifarError(f"{path.name} must name 2 to 256 classes, one a line. Received: {len(names)} names")
    return names


# --- Python version --------------------------------------------------------------------------------------------------


def _numpy_reconstruct() -> object:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10's Python batches and nothing that could run code.

    The official pickles (protocol 2, written by Python 2) hold dicts of
    bytes keys, lists, bytes and ints, and one numpy uint8 array, which is
    rebuilt from exactly three globals: ``numpy.core.multiarray._reconstruct``
    (``numpy._core.multiarray`` when written by numpy 2), ``numpy.ndarray``
    and ``numpy.dtype``. :meth:`find_class` returns those and refuses any other
    global (``os.system``, ``builtins.eval``, ...), so a pickle that would run
    code fails before anything runs.
    """

    ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        """Returns one of the three admitted numpy globals; raises on anything else."""
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return np.ndarray if name == "ndarray" else np.dtype


def _unpickle(path: Path) -> object:
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise CifarError(f"{path} is not a regular file: restore the CIFAR-10 folder. Received: {path}")
        if size > MAX_PICKLE_BYTES:
            raise CifarError(
                f"{path.name} is far larger than a CIFAR-10 batch, so it is not read. Received: {size} bytes"
            )
        raw = path.read_bytes()
    except OSError as e:
        raise CifarError(f"{path} cannot be read ({os_reason(e)}). Received: {path}") from None
    try:
        return RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 (any failure of a hostile or broken pickle is a refusal)
        raise CifarError(
            f"{path.name} is not a CIFAR-10 pickle (only a dict with a numpy uint8 array is accepted; nothing in it "
            f"was run): download it again. Received: {type(e).__name__}: {first_line(e)}"
        ) from None


def _read_python(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise CifarError(f"{path.name} must be a dict with b'data' and b'labels'. Received: {keys!r:.120}")
    data, labels = batch[b"data"], batch[b"labels"]
    if type(data) is not np.ndarray or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        shown = f"{type(data).__name__} {getattr(data, 'dtype', '')} {getattr(data, 'shape', '')}"
        raise CifarError(f"{path.name}: b'data' must be a uint8 array of shape (N, {PIXELS}). Received: {shown}")
    if (
        not isinstance(labels, list)
        or len(labels) != len(data)
        or not all(type(v) is int and 0 <= v < num_classes for v in labels)
    ):
        n = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise CifarError(
            f"{path.name}: b'labels' must be a list of {len(data)} ints in [0, {num_classes}). Received: {n!r} labels"
        )
    if len(data) == 0:
        raise CifarError(f"{path.name} holds no images. Received: shape {data.shape}")
    return data.reshape(-1, CHANNELS, SIDE, SIDE).copy(), np.asarray(labels, np.int64)


def _read_classes_pickle(path: Path) -> tuple[str, ...]:
    meta = _unpickle(path)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not 2 <= len(names) <= 256 or not all(isinstance(n, bytes) for n in names):
        raise CifarError(
            f"{path.name} must be a dict whose b'label_names' lists 2 to 256 names. Received: {type(meta).__name__}"
        )
    return tuple(n.decode("ascii", "replace") for n in names)


# --- folders ---------------------------------------------------------------------------------------------------------


def _layout(root: Path) -> tuple[Path, str]:
    """The batch folder under (or at) ``root`` and its layout."""
    for folder in (root, root / BIN_DIR, root / PY_DIR):
        if (folder / "batches.meta.txt").is_file() or (folder / f"{TEST_FILE}.bin").is_file():
            return folder, "binary"
        if (folder / "batches.meta").is_file() or (folder / TEST_FILE).is_file():
            return folder, "python"
    raise CifarError(
        f"{root} holds neither {BIN_DIR}/ nor {PY_DIR}/ (nor their files: batches.meta.txt, test_batch.bin / "
        f"batches.meta, test_batch): download CIFAR-10 with `python -m parity.cifar download {root}`. Received: {root}"
    )


def load_cifar10(root: str | os.PathLike[str]) -> CifarData:
    """Reads a CIFAR-10 folder, binary or Python version.

    Args:
        root: The batch folder itself or a folder containing
            ``cifar-10-batches-bin`` or ``cifar-10-batches-py`` (binary first).

    Returns:
        The five training batches in order, then the test batch.

    Raises:
        CifarError: If a file is missing, truncated, wrong-sized, or (Python
            version) holds anything but the expected data.

    Examples:
        >>> from parity.cifar import load_cifar10
        >>> data = load_cifar10("~/data/cifar10")  # doctest: +SKIP
        >>> data.train_images.shape, data.test_labels.shape, data.classes[:3]  # doctest: +SKIP
        ((50000, 3, 32, 32), (10000,), ('airplane', 'automobile', 'bird'))
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CifarError(f"--data must be a folder holding CIFAR-10. Received: {root}")
    folder, kind = _layout(root)
    binary = kind == "binary"
    meta = folder / ("batches.meta.txt" if binary else "batches.meta")
    if meta.exists():
        classes = _read_classes_txt(meta) if binary else _read_classes_pickle(meta)
    else:
        classes = CLASSES
    read = _read_binary if binary else _read_python
    suffix = ".bin" if binary else ""
    parts = []
    for name in (*TRAIN_FILES, TEST_FILE):
        path = folder / f"{name}{suffix}"
        if not path.exists():
            raise CifarError(f"{folder} lacks {path.name}: download CIFAR-10 again. Received: {path}")
        parts.append(read(path, len(classes)))
    train_x = np.concatenate([p[0] for p in parts[:-1]])
    train_y = np.concatenate([p[1] for p in parts[:-1]])
    return CifarData(train_x, train_y, parts[-1][0], parts[-1][1], classes, f"{folder} ({kind})")

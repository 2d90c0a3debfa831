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
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import struct
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parity.core.errors import first_line, os_reason

__all__ = [
    "ARCHIVES",
    "CifarData",
    "CifarError",
    "RestrictedUnpickler",
    "digits_as_cifar",
    "download",
    "load_cifar10",
    "main",
    "normalize",
    "write_binary_folder",
    "write_python_folder",
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
#: Largest pickle read (a real CIFAR-10 batch is 31 MB); larger files are refused before reading.
MAX_PICKLE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Archive:
    """One official CIFAR-10 archive.

    Attributes:
        url: Where it is published.
        md5: Its published md5.
        folder: The folder it extracts to.
    """

    url: str
    md5: str
    folder: str


ARCHIVES: dict[str, Archive] = {
    "binary": Archive("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", BIN_DIR),
    "python": Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", PY_DIR),
}


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
            self.train_images[:n], self.train_labels[:n], self.test_images[:n], self.test_labels[:n], self.classes, self.source
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
        raise CifarError(f"{path} cannot be read ({os_reason(e)}): restore the CIFAR-10 folder. Received: {path}") from None
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
            raise CifarError(f"{path.name} is far larger than a CIFAR-10 batch, so it is not read. Received: {size} bytes")
        raw = path.read_bytes()
    except OSError as e:
        raise CifarError(f"{path} cannot be read ({os_reason(e)}). Received: {path}") from None
    try:
        return RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 (any failure of a hostile or broken pickle is a refusal)
        raise CifarError(
            f"{path.name} is not a CIFAR-10 pickle (only a dict with a numpy uint8 array is accepted; nothing in it was "
            f"run): download it again. Received: {type(e).__name__}: {first_line(e)}"
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
        raise CifarError(f"{path.name} must be a dict whose b'label_names' lists 2 to 256 names. Received: {type(meta).__name__}")
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


# --- writers ---------------------------------------------------------------------------------------------------------


def _atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` under a temporary name beside ``path``, then renames it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
        _atomic(out / f"{name}.bin", records(data.train_images[part], data.train_labels[part]))
    _atomic(out / f"{TEST_FILE}.bin", records(data.test_images, data.test_labels))
    _atomic(out / "batches.meta.txt", ("\n".join(data.classes) + "\n\n").encode("ascii"))
    return out


class _Python2StylePickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    """Pickles as Python 2 did for CIFAR-10: protocol 2, strings as byte strings, ``numpy.core`` globals."""

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin-1"))

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = getattr(obj, "__module__", "") or ""
        name = name or obj.__qualname__  # type: ignore[attr-defined]
        if module.startswith("numpy._core"):
            module = "numpy.core" + module[len("numpy._core"):]
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

    for i, (name, part) in enumerate(zip(TRAIN_FILES, _split(len(data.train_images), len(TRAIN_FILES)), strict=True), 1):
        _atomic(out / name, batch(f"training batch {i} of 5", data.train_images[part], data.train_labels[part], part.start))
    _atomic(out / TEST_FILE, batch("testing batch 1 of 1", data.test_images, data.test_labels, 0))
    meta = {b"num_cases_per_batch": len(data.test_images), b"label_names": [c.encode() for c in data.classes], b"num_vis": PIXELS}
    _atomic(out / "batches.meta", python2_pickle(meta))
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
    return CifarData(rgb[:cut], labels[:cut], rgb[cut:], labels[cut:], tuple(str(d) for d in range(10)), "sklearn digits")


# --- download --------------------------------------------------------------------------------------------------------


def _safe_members(tar: tarfile.TarFile, folder: str) -> list[tarfile.TarInfo]:
    """The archive's members, if every one is a plain file or folder inside ``folder``.

    Raises:
        CifarError: On an absolute path, ``..``, a link, a device or a member outside ``folder``.
    """
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if (
            m.name.startswith(("/", "\\"))
            or ".." in parts
            or not parts
            or parts[0] != folder
            or not (m.isfile() or m.isdir())
        ):
            raise CifarError(
                f"The archive holds {m.name!r}, which is not a plain file inside {folder}/, so nothing was extracted. "
                f"Received: member {m.name!r}"
            )
    return members


def download(root: str | os.PathLike[str], kind: str = "binary") -> Path:
    """Downloads and extracts an official CIFAR-10 archive, checking its published md5.

    The archive is downloaded under a temporary name in ``root``, checked,
    and extracted only if every member is a plain file inside the expected
    folder (no absolute paths, ``..`` or links).

    Args:
        root: An existing folder.
        kind: ``"binary"`` or ``"python"``.

    Returns:
        The extracted batch folder.

    Raises:
        CifarError: If the download fails, the md5 differs or the archive is unsafe.
    """
    import urllib.request

    archive = ARCHIVES[kind]
    out = Path(root).expanduser()
    if not out.is_dir():
        raise CifarError(f"The download folder must exist. Received: {out}")
    tmp = out / f".{Path(archive.url).name}.{os.getpid()}.part"
    try:
        try:
            with urllib.request.urlopen(archive.url, timeout=60) as response, open(tmp, "wb") as f:  # noqa: S310 (fixed https URL)
                while chunk := response.read(1 << 20):
                    f.write(chunk)
        except OSError as e:
            raise CifarError(
                f"Could not download {archive.url} ({first_line(getattr(e, 'reason', e))}); without network, "
                f"copy {BIN_DIR}/ or {PY_DIR}/ into {out}. Received: {type(e).__name__}"
            ) from None
        md5 = hashlib.md5(tmp.read_bytes(), usedforsecurity=False).hexdigest()
        if md5 != archive.md5:
            raise CifarError(f"{archive.url} does not have its published md5 {archive.md5}; it was discarded. Received: md5 {md5}")
        with tarfile.open(tmp, "r:gz") as tar:
            members = _safe_members(tar, archive.folder)
            tar.extractall(out, members=members, filter="data")
    finally:
        tmp.unlink(missing_ok=True)
    return out / archive.folder


# --- CLI -------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(prog="python -m parity.cifar", description="CIFAR-10 folders: check, download, or make one from digits.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="read a CIFAR-10 folder and print its size")
    check.add_argument("folder")
    fetch = sub.add_parser("download", help="download and extract the official archive (md5 checked)")
    fetch.add_argument("folder")
    fetch.add_argument("--format", choices=list(ARCHIVES), default="binary")
    digits = sub.add_parser("digits-to-cifar", help="write scikit-learn's digits as a CIFAR-10 folder (32x32 RGB)")
    digits.add_argument("folder")
    digits.add_argument("--format", choices=list(ARCHIVES), default="binary")
    digits.add_argument("--seed", type=int, default=0, help="seed of the train/test shuffle (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point.

    Returns:
        0 on success, 2 on a refused file or folder (one line on stderr).
    """
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            data = load_cifar10(args.folder)
            print(f"{data.source}: {len(data.train_images)} training, {len(data.test_images)} test images, {len(data.classes)} classes")
        elif args.command == "download":
            print(download(args.folder, args.format))
        else:
            data = digits_as_cifar(seed=args.seed)
            writer = write_binary_folder if args.format == "binary" else write_python_folder
            sub = BIN_DIR if args.format == "binary" else PY_DIR
            print(writer(Path(args.folder) / sub, data))
    except CifarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {os_reason(e)}; nothing was written. Received: {e.filename or type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no partial file was left under a target name. Received: SIGINT", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

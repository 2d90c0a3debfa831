"""Converted weight files: where they live, how they are written, how they are checked.

A converted file is an ordinary Keras ``.weights.h5`` (``model.load_weights``
reads it, keras.applications' VGG16/VGG19 included) with a provenance record in
its root attribute ``vgg_parity``: architecture, config, source (torchvision
weights name, checkpoint hash or random seed), library versions and the
verification figures. A sidecar ``<file>.json`` holds the same record plus the
sha256 of the ``.weights.h5``, which loading checks.

Files are written under a temporary name in the target folder, flushed, and
renamed into place, so a killed writer never leaves a partial file under the
target name; writers of one folder hold an exclusive lock on the folder while
they rename the weights and their sidecar, readers a shared one while they
check and load, so a reader never pairs one writer's file with another's
sidecar. Loading refuses, naming the file and the command that replaces it, a
file that is truncated or corrupt, disagrees with its sidecar's hash, lacks its
sidecar in the cache, or does not fit the model. This module needs Keras and
h5py, never torch.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; writes stay atomic, concurrent writers are not serialized
    fcntl = None  # type: ignore[assignment]

import h5py
import keras
import numpy as np

from parity.catalog import DEFAULT_WEIGHTS, WEIGHTS, WeightsRecord, cache_dir, get_weights_record
from parity.checkpoint import file_sha256
from parity.config import PRESETS, VGGConfig, layer_plan
from parity.converter import read_keras_weights
from parity.errors import first_line, os_reason
from parity.layouts import KERAS_IN_AXIS, adapt_input_channels

__all__ = [
    "FORMAT",
    "WeightsFileError",
    "cache_dir",
    "converted_weights_path",
    "file_sha256",
    "load_converted_weights",
    "preset_for",
    "read_record",
    "resolve_weights",
    "StagedWeights",
    "stage_converted_weights",
    "write_atomic",
]

#: Format tag stored in every record; bumped if the layout of files changes.
FORMAT = "vgg-parity/1"
_ATTR = "vgg_parity"
#: Config fields that must agree between a file and the model it loads into
#: (``in_channels`` may differ: the first kernel is then adapted).
_SHAPE_FIELDS = ("stages", "batch_norm", "pool_size", "hidden")


class WeightsFileError(ValueError):
    """A weights file is missing, corrupt, tampered with, or does not fit the model."""


def converted_weights_path(arch: str, weights: str = DEFAULT_WEIGHTS) -> Path:
    """Path where ``weights="converted"`` looks for one set of converted weights.

    Args:
        arch: Preset name, e.g. ``"vgg16"``.
        weights: torchvision weights name.

    Returns:
        The path (which may not exist yet).
    """
    return cache_dir() / get_weights_record(arch, weights).keras_filename


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The provenance sidecar of a weights file: ``<file>.json``."""
    return Path(f"{os.fspath(path)}.json")


def preset_for(config: VGGConfig) -> str | None:
    """Returns the preset whose layers equal this config's, ignoring the class and input channel counts."""
    for arch, preset in PRESETS.items():
        if all(getattr(config, f) == getattr(preset, f) for f in _SHAPE_FIELDS):
            return arch
    return None


def resolve_weights(weights: str, config: VGGConfig, *, include_top: bool) -> Path:
    """Turns a ``weights=`` argument into the path of a file to load.

    ``"converted"`` and torchvision weights names resolve to Keras' cache. A
    missing cached file is converted on demand when torch and torchvision are
    installed, in a child process (this process has TensorFlow loaded, and
    importing torchvision's triton after TensorFlow crashes the interpreter).

    Args:
        weights: ``"converted"``, a weights name (``"IMAGENET1K_V1"``,
            ``"IMAGENET1K_FEATURES"``) or a path to a ``.weights.h5`` file.
        config: The model's config.
        include_top: Whether the model has its classifier.

    Returns:
        Path of an existing weights file.

    Raises:
        ValueError: If the weights do not fit the model.
        FileNotFoundError: If the file is absent and cannot be made here.
        RuntimeError: If on-demand conversion fails.
    """
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"`weights` must be None, 'converted', a torchvision weights name or a .weights.h5 path. Received: weights={weights!r}"
        )
    text = os.fspath(weights)
    names = {n for recs in WEIGHTS.values() for n in recs}
    if text != "converted" and text not in names:
        path = Path(text).expanduser()
        if not text.endswith(".weights.h5"):
            raise ValueError(
                "`weights` must be None, 'converted', a torchvision weights name "
                f"({', '.join(sorted(names))}) or a path ending in .weights.h5. Received: weights={weights!r}"
            )
        if not path.is_file():
            raise FileNotFoundError(f"No weights file at {path}. Received: weights={weights!r}")
        return path

    arch = preset_for(config)
    if arch is None:
        raise ValueError(
            "Converted ImageNet weights exist only for the eight torchvision presets; this config matches none. "
            f"Pass the path of your own converted file instead. Received: weights={weights!r}"
        )
    record = get_weights_record(arch, DEFAULT_WEIGHTS if text == "converted" else text)
    if include_top and not record.has_classifier:
        raise ValueError(
            f"{arch} {record.name} has no usable classifier (NaN by design in torchvision); "
            f"use include_top=False. Received: weights={weights!r}, include_top=True"
        )
    if include_top and config.num_classes != 1000:
        raise ValueError(
            f"With converted ImageNet weights and include_top=True, `classes` must be 1000. "
            f"Received: classes={config.num_classes}"
        )
    path = cache_dir() / record.keras_filename
    if path.exists() and not path.is_file():
        raise WeightsFileError(
            f"{path} is not a regular file: remove it, then {_fix_command(path)}. Received: weights={weights!r}"
        )
    if not path.exists():
        _convert_on_demand(record, path)
    return path


def _convert_on_demand(record: WeightsRecord, path: Path) -> None:
    """Runs ``python -m parity.convert`` in a child process to fill the cache.

    The child is given ``--force``: if another process converts the same
    weights at the same time, both write a complete file and the last rename
    wins, so neither fails on the other's file.
    """
    command = f"python -m parity.convert {record.arch} --weights {record.name}"
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
        raise FileNotFoundError(
            f"Converted weights for {record.arch} ({record.name}) are not in {path.parent}; converting them needs "
            f"torch and torchvision (pip install 'vgg-parity[torch]'), then run `{command}`. "
            f"Received: weights='converted'"
        )
    print(f"Converting {record.arch} {record.name} into {path} (once) ...", file=sys.stderr, flush=True)
    # A separate interpreter: torch/torchvision load there first, TensorFlow after.
    result = subprocess.run(
        [
            sys.executable, "-m", "parity.convert", record.arch,
            "--weights", record.name, "--output", os.fspath(path), "--force",
        ],
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0 or not path.exists():
        raise RuntimeError(
            f"Converting {record.arch} {record.name} failed (exit code {result.returncode}; its message is above). "
            f"Fix that, or run `{command}` yourself. Received: weights='converted'"
        )


def _fix_command(path: Path) -> str:
    """How to replace a bad weights file, as advice for an error message."""
    try:
        in_cache = path.parent.resolve() == cache_dir().resolve()
    except OSError:
        in_cache = False
    if in_cache:
        for recs in WEIGHTS.values():
            for r in recs.values():
                if r.keras_filename == path.name:
                    return f"run `python -m parity.convert {r.arch} --weights {r.name} --force` to replace it"
    return f"convert it again with `python -m parity.convert ARCH ... --output {path} --force`"


def read_record(path: str | os.PathLike[str]) -> dict[str, object]:
    """Reads the provenance record embedded in a converted weights file.

    Args:
        path: A ``.weights.h5`` written by ``python -m parity.convert``.

    Returns:
        The record.

    Raises:
        WeightsFileError: If the file is unreadable, corrupt or has no record.
    """
    fix = _fix_command(Path(path))
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get(_ATTR)
    except (OSError, ValueError, RuntimeError) as e:
        raise WeightsFileError(
            f"{path} is not a readable HDF5 weights file (corrupt or truncated): {fix}. "
            f"Received: {type(e).__name__}: {first_line(e)}"
        ) from None
    if raw is None:
        raise WeightsFileError(
            f"{path} has no vgg-parity record, so it was not written by `python -m parity.convert`; "
            f"load it with model.load_weights() if you trust it. Received: weights={os.fspath(path)!r}"
        )
    try:
        record = json.loads(raw)
    except (TypeError, ValueError):
        raise WeightsFileError(f"{path} has an unreadable vgg-parity record: {fix}. Received: {raw!r:.80}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise WeightsFileError(
            f"{path} was written in another format than {FORMAT}: {fix}. "
            f"Received: format={record.get('format') if isinstance(record, dict) else record!r}"
        )
    return record


def load_converted_weights(
    model: keras.Model, path: str | os.PathLike[str], config: VGGConfig, *, include_top: bool
) -> dict[str, object]:
    """Checks a converted file against its sidecar and the model, then loads it.

    The sha256 of the file must equal the one in its sidecar ``<file>.json``;
    in Keras' cache the sidecar is required, elsewhere it is checked when
    present. Checking and loading happen under a shared lock on the folder, so
    a concurrent writer cannot swap the file in between.

    Args:
        model: A model built from ``config``.
        path: The ``.weights.h5`` file.
        config: The model's config.
        include_top: Whether the model has its classifier.

    Returns:
        The file's provenance record.

    Raises:
        WeightsFileError: If the file is corrupt or truncated, its hash
            disagrees with its sidecar, its sidecar is missing (in the cache) or
            unreadable, or its layers or class count do not fit the model. The
            message names the file and the command that replaces it.
    """
    path = Path(path)
    with _folder_lock(path.parent, shared=True):
        return _check_and_load(model, path, config, include_top)


def _check_and_load(model: keras.Model, path: Path, config: VGGConfig, include_top: bool) -> dict[str, object]:
    fix = _fix_command(path)
    in_cache = path.parent.resolve() == cache_dir().resolve()
    sidecar = sidecar_path(path)
    if sidecar.exists():
        try:
            expected = json.loads(sidecar.read_text())["sha256"]
            if not isinstance(expected, str):
                raise TypeError(expected)
        except (OSError, ValueError, KeyError, TypeError):
            raise WeightsFileError(
                f"{sidecar} is unreadable or has no sha256, so {path.name} cannot be checked: {fix}. Received: {sidecar}"
            ) from None
        try:
            actual = file_sha256(path)
        except OSError as e:
            raise WeightsFileError(f"{path} cannot be read ({os_reason(e)}): {fix}. Received: {path}") from None
        if actual != expected:
            raise WeightsFileError(
                f"{path} does not match the sha256 in {sidecar.name} (truncated, corrupt or modified), so it is not loaded: "
                f"{fix}. Received: sha256={actual[:16]}..., expected {expected[:16]}..."
            )
    elif in_cache:
        raise WeightsFileError(
            f"{path} has no {sidecar.name} beside it, so its integrity cannot be checked and it is not loaded: {fix}. "
            f"Received: {path}"
        )
    record = read_record(path)
    try:
        saved = VGGConfig.from_dict(record["config"])  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsFileError(f"{path} has an invalid config in its record: {fix}. Received: {first_line(e)}") from None
    for field in _SHAPE_FIELDS:
        if getattr(saved, field) != getattr(config, field):
            raise WeightsFileError(
                f"{path} holds weights for {record.get('arch')} ({field}={getattr(saved, field)!r}), which do not fit this "
                f"model ({field}={getattr(config, field)!r}). Received: weights={os.fspath(path)!r}"
            )
    adapters: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    if saved.in_channels != config.in_channels:
        first_conv = next(spec.keras_name for spec in layer_plan(config) if spec.kind == "conv")
        try:
            adapt_input_channels(np.zeros((1, 1, saved.in_channels, 1), np.float32), config.in_channels, KERAS_IN_AXIS)
        except ValueError:
            raise WeightsFileError(
                f"{path} holds a first convolution for {saved.in_channels} input channels, which cannot be adapted to "
                f"{config.in_channels}: build the model with {saved.in_channels} channels. "
                f"Received: in_channels={config.in_channels}"
            ) from None
        adapters[first_conv] = lambda kernel: adapt_input_channels(kernel, config.in_channels, KERAS_IN_AXIS)
    if include_top:
        if not record.get("include_top", True):
            raise WeightsFileError(
                f"{path} holds convolutional weights only: build the model with include_top=False. Received: include_top=True"
            )
        if saved.num_classes != config.num_classes:
            raise WeightsFileError(
                f"{path} has a {saved.num_classes}-class classifier: pass classes={saved.num_classes}, or include_top=False. "
                f"Received: classes={config.num_classes}"
            )
    try:
        # A full model's file also serves include_top=False.
        read_keras_weights(model, path, strict=False, kernel_adapters=adapters)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise WeightsFileError(
            f"{path} could not be loaded (corrupt?): {fix}. Received: {type(e).__name__}: {first_line(e)}"
        ) from None
    return record


@contextlib.contextmanager
def _folder_lock(folder: Path, *, shared: bool) -> Iterator[int | None]:
    """Holds an advisory lock on a folder (not on a file in it: nothing is left behind).

    Writers take it exclusively around their renames, readers shared around
    check-and-load. Where locks are unavailable (no ``fcntl``, a file system
    without ``flock``, an unreadable folder) this yields ``None`` and does not lock.

    Yields:
        The folder's open descriptor (for ``fsync``), or ``None``.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield None
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            except OSError:
                pass
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


class StagedWeights:
    """A converted weights file being written under a temporary name beside its target.

    Made by :func:`stage_converted_weights`. Write the ``.weights.h5`` to
    :attr:`path`, then :meth:`commit` it.

    Attributes:
        path: The temporary ``.weights.h5`` to write (it exists, empty).
        target: Where :meth:`commit` puts it.
        committed: Whether the renames of :meth:`commit` happened. A signal
            that arrived during them is delivered right after, so a caller
            that catches it can tell that the file is complete and in place.
    """

    def __init__(self, path: Path, target: Path) -> None:
        self.path = path
        self.target = target
        self.committed = False
        self._sidecar: Path | None = None

    def commit(self, record: dict[str, object], *, before_commit: Callable[[], None] | None = None) -> str:
        """Embeds the record, writes the sidecar and renames both into place.

        The record goes into the file's root attribute, the file is flushed to
        disk and hashed, the sidecar is written the same way; then, under an
        exclusive lock on the folder, both are renamed over their targets and
        the folder is flushed. SIGINT and SIGTERM are held back during the two
        renames (in the main thread), so the weights and their sidecar are
        replaced together.

        Args:
            record: Provenance record (JSON-serializable), without ``sha256``.
            before_commit: Called just before the renames; raising there
                abandons the write (e.g. when a signal arrived meanwhile).

        Returns:
            The sha256 of the committed file.

        Raises:
            OSError: If writing fails (disk full, permissions).
        """
        record = {"format": FORMAT, **record}
        with h5py.File(self.path, "a") as f:
            f.attrs[_ATTR] = json.dumps(record, sort_keys=True)
        _fsync(self.path)
        sha = file_sha256(self.path)
        self._sidecar = _write_temp(
            sidecar_path(self.target), json.dumps({**record, "sha256": sha}, indent=2, sort_keys=True) + "\n"
        )
        with _renaming_into(self.target.parent, before_commit):
            os.replace(self.path, self.target)
            os.replace(self._sidecar, sidecar_path(self.target))
            self.committed = True
        return sha

    def _discard(self) -> None:
        self.path.unlink(missing_ok=True)
        if self._sidecar is not None:
            self._sidecar.unlink(missing_ok=True)


@contextlib.contextmanager
def stage_converted_weights(path: str | os.PathLike[str]) -> Iterator[StagedWeights]:
    """A temporary ``.weights.h5`` beside ``path``, removed on exit unless committed.

    A writer killed at any point leaves at most a hidden temporary file
    (``.<name>.*.tmp*``), never a partial file under ``path``; on any exception,
    or when the block ends without :meth:`StagedWeights.commit`, the temporary
    files are removed.

    Args:
        path: Target ``.weights.h5`` path; its folder must exist.

    Yields:
        The staged file.

    Raises:
        ValueError: If ``path`` does not end in ``.weights.h5``.
        OSError: If the temporary file cannot be created.
    """
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"Converted weights must be saved as a .weights.h5 file. Received: path={os.fspath(path)!r}")
    fd, tmp = _new_temp(path, ".tmp.weights.h5")
    os.close(fd)
    staged = StagedWeights(tmp, path)
    try:
        yield staged
    finally:
        staged._discard()


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, before_commit: Callable[[], None] | None = None) -> None:
    """Writes a file under a temporary name in its folder, then renames it.

    Args:
        path: Target path; its folder must exist.
        data: The content (text is written as UTF-8).
        before_commit: Called just before the rename; raising there abandons the write.

    Raises:
        OSError: If writing fails; no temporary file is left behind.
    """
    path = Path(path)
    tmp = _write_temp(path, data)
    try:
        with _renaming_into(path.parent, before_commit):
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _renaming_into(folder: Path, before_commit: Callable[[], None] | None) -> Iterator[None]:
    """The block that renames finished temporary files over their targets in ``folder``.

    It runs under an exclusive lock on the folder with SIGINT and SIGTERM held
    back, after ``before_commit`` (raising there abandons the renames), and the
    folder is flushed after it.
    """
    with _folder_lock(folder, shared=False) as fd, _signals_held():
        if before_commit is not None:
            before_commit()
        yield
        if fd is not None:
            _fsync_fd(fd)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Holds SIGINT and SIGTERM back for a few renames, then delivers them to the usual handlers.

    Only the main thread can set handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    signums = [signal.SIGINT, signal.SIGTERM]
    previous = {s: signal.getsignal(s) for s in signums}
    for s in signums:
        signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


def _new_temp(target: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """Creates a new hidden file beside ``target`` with the permissions the umask gives any new file.

    Returns:
        Its descriptor (open for writing) and its path.
    """
    while True:
        path = target.with_name(f".{target.name}.{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue


def _write_temp(target: Path, data: str | bytes) -> Path:
    """Writes ``data`` to a flushed temporary file beside ``target`` and returns its path."""
    fd, path = _new_temp(target)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        f.flush()
        os.fsync(f.fileno())


def _fsync_fd(fd: int) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot fsync a folder
        os.fsync(fd)

"""Converted weight files: where they live, how they are written, how they are checked.

A converted file is an ordinary Keras ``.weights.h5`` (``model.load_weights``
reads it, keras.applications' VGG16/VGG19 included) with a provenance record in
its root attribute ``vgg_parity``: architecture, config, source (torchvision
weights name, checkpoint hash or random seed), library versions and the
verification figures. A sidecar ``<file>.json`` holds the same record plus the
sha256 of the ``.weights.h5``, which loading checks.

Files are written under a temporary name in the target folder, flushed, and
renamed into place, so a killed writer never leaves a partial file under the
target name. This module needs Keras and h5py, never torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import keras

from parity.catalog import DEFAULT_WEIGHTS, WEIGHTS, WeightsRecord, cache_dir, get_weights_record
from parity.config import PRESETS, VGGConfig

__all__ = [
    "FORMAT",
    "WeightsFileError",
    "cache_dir",
    "converted_weights_path",
    "load_converted_weights",
    "preset_for",
    "read_record",
    "resolve_weights",
    "save_converted_weights",
]

#: Format tag stored in every record; bumped if the layout of files changes.
FORMAT = "vgg-parity/1"
_ATTR = "vgg_parity"
#: Config fields that must agree between a file and the model it loads into.
_SHAPE_FIELDS = ("stages", "batch_norm", "pool_size", "hidden", "in_channels")


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
    """Returns the preset whose layers equal this config's, ignoring the class count."""
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
    if not path.exists():
        _convert_on_demand(record, path)
    return path


def _convert_on_demand(record: WeightsRecord, path: Path) -> None:
    """Runs ``python -m parity.convert`` in a child process to fill the cache."""
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
        [sys.executable, "-m", "parity.convert", record.arch, "--weights", record.name, "--output", os.fspath(path)],
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0 or not path.exists():
        raise RuntimeError(
            f"Converting {record.arch} {record.name} failed (exit code {result.returncode}; its message is above). "
            f"Fix that, or run `{command}` yourself. Received: weights='converted'"
        )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_record(path: str | os.PathLike[str]) -> dict[str, object]:
    """Reads the provenance record embedded in a converted weights file.

    Args:
        path: A ``.weights.h5`` written by :func:`save_converted_weights`.

    Returns:
        The record.

    Raises:
        WeightsFileError: If the file is unreadable, corrupt or has no record.
    """
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get(_ATTR)
    except OSError as e:
        raise WeightsFileError(
            f"{path} is not a readable HDF5 weights file (corrupt or truncated?): delete it and convert again. "
            f"Received: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    if raw is None:
        raise WeightsFileError(
            f"{path} has no vgg-parity record, so it was not written by `python -m parity.convert`; "
            f"load it with model.load_weights() if you trust it. Received: weights={os.fspath(path)!r}"
        )
    try:
        record = json.loads(raw)
    except (TypeError, ValueError):
        raise WeightsFileError(f"{path} has an unreadable vgg-parity record: convert it again. Received: {raw!r:.80}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise WeightsFileError(
            f"{path} was written in another format than {FORMAT}: convert it again. Received: format={record.get('format') if isinstance(record, dict) else record!r}"
        )
    return record


def load_converted_weights(
    model: keras.Model, path: str | os.PathLike[str], config: VGGConfig, *, include_top: bool
) -> dict[str, object]:
    """Checks a converted file against its sidecar and the model, then loads it.

    Args:
        model: A model built from ``config``.
        path: The ``.weights.h5`` file.
        config: The model's config.
        include_top: Whether the model has its classifier.

    Returns:
        The file's provenance record.

    Raises:
        WeightsFileError: If the file is corrupt, its hash disagrees with its
            sidecar, or its layers or class count do not fit the model.
    """
    path = Path(path)
    in_cache = path.parent.resolve() == cache_dir().resolve()
    sidecar = sidecar_path(path)
    if sidecar.exists():
        try:
            expected = json.loads(sidecar.read_text())["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            raise WeightsFileError(f"{sidecar} is unreadable: delete {path} and its sidecar and convert again. Received: {sidecar}") from None
        actual = file_sha256(path)
        if actual != expected:
            raise WeightsFileError(
                f"{path} does not match the sha256 in {sidecar.name} (corrupt or modified): delete both and convert again. "
                f"Received: sha256={actual[:16]}..., expected {str(expected)[:16]}..."
            )
    elif in_cache:
        raise WeightsFileError(
            f"{path} has no {sidecar.name} beside it, so its integrity cannot be checked: delete it and convert again. "
            f"Received: {path}"
        )
    record = read_record(path)
    saved = VGGConfig.from_dict(record["config"])  # type: ignore[arg-type]
    for field in _SHAPE_FIELDS:
        if getattr(saved, field) != getattr(config, field):
            raise WeightsFileError(
                f"{path} holds weights for {record.get('arch')} ({field}={getattr(saved, field)!r}), which do not fit this "
                f"model ({field}={getattr(config, field)!r}). Received: weights={os.fspath(path)!r}"
            )
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
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as e:
        raise WeightsFileError(
            f"{path} could not be loaded (corrupt?): delete it and convert again. Received: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    return record


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Serializes writers of one target (two conversions into one cache)."""
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def save_converted_weights(model: keras.Model, path: str | os.PathLike[str], record: dict[str, object]) -> str:
    """Writes weights, embedded record and sidecar atomically.

    The weights go to a temporary ``.weights.h5`` in the target folder, get the
    record as a root attribute, are flushed to disk and renamed over ``path``;
    then the sidecar follows the same way. A writer killed at any point leaves
    at most a temporary file, never a partial file under ``path``.

    Args:
        model: The Keras model holding the converted weights.
        path: Target ``.weights.h5`` path; its folder must exist.
        record: Provenance record (JSON-serializable), without ``sha256``.

    Returns:
        The sha256 of the written file.
    """
    path = Path(path)
    record = {"format": FORMAT, **record}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.weights.h5", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp_sidecar = sidecar_path(tmp)
    try:
        tmp.unlink()  # Keras refuses to overwrite without asking; let it create the file.
        model.save_weights(tmp)
        with h5py.File(tmp, "a") as f:
            f.attrs[_ATTR] = json.dumps(record, sort_keys=True)
        _fsync(tmp)
        sha = file_sha256(tmp)
        tmp_sidecar.write_text(json.dumps({**record, "sha256": sha}, indent=2, sort_keys=True) + "\n")
        _fsync(tmp_sidecar)
        with _locked(path):
            os.replace(tmp, path)
            os.replace(tmp_sidecar, sidecar_path(path))
        return sha
    finally:
        tmp.unlink(missing_ok=True)
        tmp_sidecar.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        f.flush()
        os.fsync(f.fileno())

"""The options of ``python -m parity.export``, checked before any framework loads.

Every check raises :class:`UsageError` with one line that names the problem
and the fix and ends in ``Received: ...``; the CLI prints it and exits 2, with
nothing written. :mod:`parity.export` calls these first, so that a typo costs
no TensorFlow import.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from parity.cli import UsageError, check_writable_folder
from parity.core.config import get_config
from parity.core.weights_file import sidecar_path

__all__ = [
    "DEFAULT_INPUT_SIZE",
    "DEFAULT_VERIFY_BATCH",
    "FORMATS",
    "QUANTIZATIONS",
    "UsageError",
    "check_options",
    "check_output",
    "default_data_format",
    "resolve_export_weights",
]

FORMATS = ("saved_model", "tflite", "onnx", "openvino")
#: The formats written as files (not a folder), with the suffix the named file must have. An OpenVINO IR is the
#: ``.xml`` named and its ``.bin`` beside it.
FILE_SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx", "openvino": ".xml"}
QUANTIZATIONS = ("none", "float16", "dynamic-int8", "int8")
DEFAULT_INPUT_SIZE = (224, 224)
#: The batch a TFLite, ONNX or OpenVINO file is verified at besides 1.
DEFAULT_VERIFY_BATCH = 4


def default_data_format(fmt: str) -> str:
    """The input layout of a format's artifact when none is asked for: NCHW for ONNX and OpenVINO (torch's), else NHWC
    (Keras')."""
    return "channels_first" if fmt in ("onnx", "openvino") else "channels_last"


def resolve_export_weights(arch: str, weights: str) -> Path:
    """The ``.weights.h5`` to export (its record and hash are checked after the frameworks load).

    Raises:
        UsageError: If the file is missing, not a regular readable file, or not a ``.weights.h5``.
    """
    shown = f"weights={weights!r}"
    if weights == "converted":
        from parity.core.catalog import DEFAULT_WEIGHTS, cache_dir, get_weights_record

        path = cache_dir() / get_weights_record(arch, DEFAULT_WEIGHTS).keras_filename
        if not path.is_file():
            raise UsageError(
                f"No converted {arch} weights in {path.parent}: run `python -m parity.convert {arch}` first, "
                f"or pass --weights FILE. Received: {shown}"
            )
        return path
    path = Path(weights).expanduser()
    if not path.name.endswith(".weights.h5"):
        raise UsageError(
            "--weights must be 'converted' or a .weights.h5 file written by python -m parity.convert. Received: "
            f"{shown}"
        )
    if not path.exists():
        raise UsageError(
            f"No weights file at {path}: convert one with `python -m parity.convert {arch} ...`. Received: {shown}"
        )
    if not path.is_file():
        raise UsageError(f"--weights must name a file, not a folder or device. Received: {shown}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"Weights file is not readable: fix its permissions. Received: {shown}")
    if path.stat().st_size == 0:
        raise UsageError(f"Weights file is empty (an interrupted copy?): convert it again. Received: {shown}")
    return path


def check_output(path: Path, fmt: str, weights: Path, force: bool) -> Path:
    """Validates the output path before any work is done.

    Raises:
        UsageError: On a wrong suffix, a missing or unwritable folder, an
            existing output without ``force``, or an output that would replace
            the weights or their sidecar.
    """
    shown = f"output={os.fspath(path)!r}"
    suffix = FILE_SUFFIXES.get(fmt)
    if suffix is not None and path.suffix != suffix:
        raise UsageError(f"--format {fmt} writes a {suffix} file: --output must end in {suffix}. Received: {shown}")
    if fmt == "saved_model" and (
        path.suffix in (".tflite", ".onnx", ".xml", ".h5", ".keras", ".json") or path.name.endswith(".weights.h5")
    ):
        raise UsageError(
            f"--format saved_model writes a folder: name a folder, not a {path.suffix} file. Received: {shown}"
        )
    check_writable_folder(path.parent, shown)
    sidecar = sidecar_path(path)
    companion = path.with_suffix(".bin") if fmt == "openvino" else None
    for target in (path, sidecar, *([companion] if companion else [])):
        if target.resolve() in (weights.resolve(), Path(f"{weights}.json").resolve()):
            raise UsageError(
                f"Output would overwrite the weights or their sidecar: name another path. Received: {shown}"
            )
    if companion is not None:
        _check_companion(companion, force, shown)
    if path.exists() or path.is_symlink():
        if not force:
            raise UsageError(f"Output exists: pass --force to overwrite it. Received: {shown}")
        if suffix is not None and path.is_dir():
            raise UsageError(
                f"Output is a folder, and --format {fmt} writes a file: name a {suffix} file. Received: {shown}"
            )
        if fmt == "saved_model" and not path.is_dir():
            raise UsageError(
                f"Output is a file, and --format saved_model writes a folder: name another path. Received: {shown}"
            )
    if sidecar.is_dir():
        raise UsageError(
            f"{sidecar} is a folder, so the sidecar cannot be written: name another output. Received: {shown}"
        )
    return path


def _check_companion(companion: Path, force: bool, shown: str) -> None:
    """Refuses an OpenVINO IR's ``.bin`` path that is a folder, or a file that exists without ``force``."""
    if companion.is_dir() and not companion.is_symlink():
        raise UsageError(
            f"{companion} is a folder, and an OpenVINO IR keeps its weights there: name another output. "
            f"Received: {shown}"
        )
    if (companion.exists() or companion.is_symlink()) and not force:
        raise UsageError(f"{companion.name} exists beside the output: pass --force to overwrite it. Received: {shown}")


def check_options(
    arch: str, fmt: str, quantize: str, input_size: Sequence[int] | None, data_format: str, batch_size: int | None
) -> None:
    """Raises UsageError on an option that cannot work, before anything loads."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}. Received: --format {fmt}")
    if fmt != "tflite" and quantize != "none":
        kind = {"saved_model": "a SavedModel", "onnx": "an ONNX file", "openvino": "an OpenVINO IR"}[fmt]
        raise UsageError(
            f"Quantization applies to --format tflite only; {kind} keeps fp32 weights. Received: --format "
            f"{fmt} --quantize {quantize}"
        )
    if quantize not in QUANTIZATIONS:
        raise UsageError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}. Received: --quantize {quantize}")
    if data_format not in ("channels_last", "channels_first"):
        raise UsageError(
            f"--data-format must be channels_last or channels_first. Received: --data-format {data_format}"
        )
    if input_size is not None:
        h, w = input_size
        config = get_config(arch)
        minimum = config.min_input_size if config.pool_size is not None else None
        if h < 1 or w < 1 or (minimum is not None and min(h, w) < minimum):
            why = "five 2x2 pools" if config.is_vgg_geometry else f"{arch}'s strided convolutions and pools"
            raise UsageError(
                f"--input-size must be at least {minimum} x {minimum} ({why}). Received: --input-size {h} {w}"
            )
    if quantize == "int8" and input_size is not None and input_size[0] != input_size[1]:
        raise UsageError(
            "--quantize int8 calibrates on center crops of photos, so it needs a square input. Received: "
            f"--input-size {input_size[0]} {input_size[1]}"
        )
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer. Received: --batch-size {batch_size}")
    if fmt == "saved_model":
        raise UsageError(
            "--batch-size sets the batch a TFLite, ONNX or OpenVINO file is verified at besides 1; a SavedModel is "
            f"verified on whole input sets. Received: --format {fmt} --batch-size {batch_size}"
        )

"""``python -m parity.export ARCH``: a converted VGG as a SavedModel or TFLite file, checked against torchvision.

The weights are a ``.weights.h5`` written by ``python -m parity.convert``
(``--weights FILE``, or ``--weights converted`` for the file
``vgg_keras.VGG16(weights="converted")`` loads). The Keras model is built with
those weights, exported, and the artifact is written under a temporary name
in the target folder; it is then loaded back from disk (``tf.saved_model.load``,
``tf.lite.Interpreter``), run on the fixed verification batch of
``parity.convert`` (and on four scikit-image photos through torchvision's
preprocessing, when scikit-image is installed and the input is square), and
compared with torchvision running the same weights on the same inputs. It is
renamed into place only if every figure is within its format's bound
(:data:`parity.export_check.TOLERANCES`), and a sidecar ``PATH.json`` records the provenance of the
weights, the export settings and the figures measured.

Roles: this module orchestrates and is the CLI (the
checks themselves are :mod:`parity.export_options`, made before any framework
loads); :mod:`parity.export_write` builds the model, writes the artifact and
commits it; :mod:`parity.export_check` runs it from disk and judges it against torch.

Exit codes: 0 written, 1 the check failed (nothing written), 2 bad input (one
line on stderr ending in ``Received: ...``; nothing written), 130/143
interrupted (temporary files removed).

torch and torchvision are imported before TensorFlow in this process: the
reverse order crashes the interpreter (tensorflow/tensorflow#124205).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from parity import export_check, export_write
from parity.cli_runner import report_result, run_cli
from parity.core.config import PRESETS, VGGConfig, get_config
from parity.core.errors import first_line, os_reason
from parity.core.weights_file import sidecar_path
from parity.export_check import TOLERANCES
from parity.export_options import DEFAULT_INPUT_SIZE, FORMATS, QUANTIZATIONS, UsageError, check_options, check_output, resolve_weights

if TYPE_CHECKING:
    import keras

__all__ = [
    "DEFAULT_INPUT_SIZE",
    "EXPORT_FORMAT",
    "FORMATS",
    "QUANTIZATIONS",
    "ExportResult",
    "UsageError",
    "build_parser",
    "export",
    "main",
]

#: Format tag of the sidecar.
EXPORT_FORMAT = "vgg-parity-export/1"


@dataclass(frozen=True)
class ExportResult:
    """What an export produced.

    Attributes:
        output: The written artifact, or ``None`` when the check failed.
        record: The sidecar's content (figures included), written or not.
        passed: Whether every figure is within its bound.
    """

    output: Path | None
    record: dict[str, object]
    passed: bool


def _log(msg: str, quiet: bool) -> None:
    """A progress line on stderr, unless ``quiet``."""
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- #
# The export
# --------------------------------------------------------------------------- #
def export(
    arch: str,
    *,
    weights: str,
    fmt: str,
    output: str | os.PathLike[str],
    quantize: str = "none",
    input_size: Sequence[int] | None = None,
    include_top: bool | None = None,
    data_format: str = "channels_last",
    batch_size: int = 1,
    force: bool = False,
    quiet: bool = False,
    model_builder: Callable[..., keras.Model] | None = None,
) -> ExportResult:
    """Exports one converted model and checks the artifact against torchvision; the library form of the CLI.

    Args:
        arch: Preset name.
        weights: ``"converted"`` or a ``.weights.h5`` path written by ``python -m parity.convert``.
        fmt: ``"saved_model"`` or ``"tflite"``.
        output: Target folder (SavedModel) or ``.tflite`` file.
        quantize: ``"none"``, ``"float16"`` or ``"dynamic-int8"`` (TFLite only).
        input_size: ``(height, width)``: TFLite's fixed size (default 224 x 224);
            for a SavedModel only the size verified at (its signature takes
            any size >= 32 when the config has the adaptive pool).
        include_top: Whether to export the classifier; default: what the file holds.
        data_format: Input layout of the artifact.
        batch_size: TFLite's fixed batch (the converter cannot keep a dynamic
            batch through the adaptive pool).
        force: Whether to replace an existing output.
        quiet: No progress messages.
        model_builder: Replaces :func:`parity.export_write.build_export_model` (tests build broken models with it).

    Returns:
        The result; ``output`` is ``None`` (nothing written) when the check failed.

    Raises:
        UsageError: On bad input; nothing is written.
    """
    if arch not in PRESETS:
        raise UsageError(f"ARCH must be one of {', '.join(PRESETS)}. Received: arch={arch!r}")
    check_options(arch, fmt, quantize, input_size, data_format, batch_size)
    weights_path = resolve_weights(arch, weights)
    out_path = check_output(Path(output).expanduser(), fmt, weights_path, force)

    import torch  # noqa: F401  (before TensorFlow)
    import torchvision

    if "tensorflow" in sys.modules and "torchvision" not in sys.modules:
        raise UsageError("TensorFlow was loaded before torchvision in this process: run python -m parity.export. Received: tensorflow loaded first")
    import keras
    import tensorflow as tf

    from parity.core.errors import ConversionError, WeightsFileError
    from parity.core.weights_file import read_record
    from vgg_keras.weights import load_converted_weights

    started = time.perf_counter()
    shown = f"weights={weights!r}"
    try:
        record = read_record(weights_path)
    except WeightsFileError as e:
        raise UsageError(str(e)) from None
    if record.get("arch") != arch:
        raise UsageError(
            f"{weights_path.name} holds {record.get('arch')} weights, not {arch}: export them with "
            f"`python -m parity.export {record.get('arch')} ...`. Received: arch={arch!r}, {shown}"
        )
    saved = VGGConfig.from_dict(record["config"])  # type: ignore[arg-type]
    file_top = bool(record.get("include_top", True))
    if include_top is None:
        include_top = file_top
    if include_top and not file_top:
        raise UsageError(f"{weights_path.name} holds convolutional weights only: pass --no-include-top. Received: --include-top")
    config = get_config(arch).replace(num_classes=saved.num_classes, in_channels=saved.in_channels)
    fixed = config.input_size if config.pool_size is None and include_top else None
    if fixed is not None and input_size is not None and tuple(input_size) != tuple(fixed):
        raise UsageError(f"{arch} without the adaptive pool takes {fixed[0]} x {fixed[1]} only. Received: --input-size {input_size[0]} {input_size[1]}")
    size = tuple(input_size or fixed or DEFAULT_INPUT_SIZE)
    spatial: tuple[int | None, int | None] = size if (fmt == "tflite" or fixed is not None) else (None, None)  # type: ignore[assignment]

    builder = model_builder or export_write.build_export_model
    _log(f"Building {arch} ({'with' if include_top else 'without'} the top, {data_format}) from {weights_path}", quiet)
    model = builder(config, include_top=include_top, data_format=data_format, input_shape=spatial)
    try:
        weights_record = load_converted_weights(model, weights_path, config, include_top=include_top)
    except WeightsFileError as e:
        raise UsageError(str(e)) from None
    weights_sha = json.loads(sidecar_path(weights_path).read_text())["sha256"] if sidecar_path(weights_path).is_file() else None

    try:
        state = export_check.torch_state(weights_path, config, include_top)
    except (ConversionError, OSError) as e:
        raise UsageError(f"{weights_path} cannot be read back for the torch reference: {first_line(e)}. Received: {shown}") from None
    inputs = export_check.reference_inputs(config, size)  # type: ignore[arg-type]
    references = export_check.torch_outputs(state, config, inputs, include_top)
    del state

    tolerance = TOLERANCES[quantize]
    channels = config.in_channels
    signature = (None, channels, *spatial) if data_format == "channels_first" else (None, *spatial, channels)
    tflite_signature = (batch_size, channels, *size) if data_format == "channels_first" else (batch_size, *size, channels)
    figures: dict[str, dict[str, object]] = {}
    passed = False
    committed = False
    with export_write.staging(out_path) as temps:
        try:
            staged = export_write.temp_name(out_path, ".tmp" + (".tflite" if fmt == "tflite" else ""))
            temps.append(staged)
            if fmt == "saved_model":
                _log(f"Writing the SavedModel (input {signature})", quiet)
                export_write.write_saved_model(model, staged, signature)
            else:
                scratch = export_write.temp_name(out_path, ".savedmodel.tmp")
                temps.append(scratch)
                _log(f"Converting to TFLite (input {tflite_signature}, quantization {quantize})", quiet)
                data = export_write.tflite_bytes(model, scratch, tflite_signature, quantize)
                export_write.remove(scratch)
                with open(staged, "wb") as fh:
                    fh.write(data)
                del data
            del model
            keras.backend.clear_session()
            _log(f"Loading {fmt} back from disk and comparing with torchvision", quiet)
            for key, x in inputs.items():
                got = export_check.run_artifact(staged, fmt, x, data_format)
                figures[key] = export_check.compare(references[key], got, tolerance, include_top)
                title = f"{key}: {x.shape[0]} images {x.shape[2]}x{x.shape[3]}, {fmt}, quantization {quantize}"
                _log(export_check.table(figures[key], title), quiet)
            passed = all(f["passed"] for f in figures.values())
            size_bytes = export_write.tree_size(staged)
            sidecar = {
                "format": EXPORT_FORMAT,
                "artifact": out_path.name,
                "export": {
                    "format": fmt,
                    "quantization": quantize,
                    "input_signature": list(tflite_signature if fmt == "tflite" else signature),
                    "input_size_verified": list(size),
                    "data_format": data_format,
                    "include_top": include_top,
                    "output": "logits (no softmax)" if include_top else f"block{len(config.stages)} feature map",
                    "endpoints": ["serve", "serving_default", "blocks"] if fmt == "saved_model" else ["single signature"],
                },
                "arch": arch,
                "config": config.to_dict(),
                "weights": {
                    "file": os.fspath(weights_path.resolve()),
                    "sha256": weights_sha,
                    "source": weights_record.get("source"),
                    "versions": weights_record.get("versions"),
                    "verification": weights_record.get("verification"),
                },
                "versions": {
                    "torch": torch.__version__,
                    "torchvision": torchvision.__version__,
                    "keras": keras.__version__,
                    "tensorflow": tf.__version__,
                    "numpy": np.__version__,
                },
                "verification": {
                    "reference": "torchvision-layout state dict read back from the weights file, run by vgg_torch (eval mode, fp32)",
                    "tolerance": asdict(tolerance),
                    "inputs": {k: list(v.shape) for k, v in inputs.items()},
                    "figures": figures,
                    "passed": passed,
                },
                "size_bytes": size_bytes,
                "sha256": export_write.tree_sha256(staged),
            }
            if not passed:
                failed = "; ".join(f"{k}: {', '.join(f['failures'])}" for k, f in figures.items() if not f["passed"])  # type: ignore[arg-type]
                _log(f"Export check FAILED ({failed}): {out_path} not written.", False)
                return ExportResult(None, sidecar, False)
            export_write.commit(staged, out_path, json.dumps(sidecar, indent=2, default=str) + "\n", temps)
            committed = True
        except OSError as e:
            if committed:
                raise
            raise UsageError(
                f"Could not write {out_path} ({os_reason(e)}); nothing was kept: free some space or pick another folder. "
                f"Received: output={os.fspath(out_path)!r}"
            ) from None
    _log(f"Wrote {out_path} ({size_bytes / 1e6:.1f} MB) and {sidecar_path(out_path).name} in {time.perf_counter() - started:.1f} s", quiet)
    return ExportResult(out_path, sidecar, True)


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #
def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (formats and quantizations are checked by :func:`export`, in one line)."""
    parser = argparse.ArgumentParser(
        prog="python -m parity.export",
        description="Export converted VGG weights as a SavedModel or TFLite file, verified against torchvision.",
    )
    parser.add_argument("arch", choices=list(PRESETS), help="torchvision architecture")
    parser.add_argument("--weights", required=True, metavar="FILE|converted", help="a .weights.h5 from python -m parity.convert, or 'converted'")
    parser.add_argument("--format", required=True, metavar="|".join(FORMATS), help="saved_model (a folder) or tflite (a file)")
    parser.add_argument("--quantize", default="none", metavar="|".join(QUANTIZATIONS), help="TFLite only (default none)")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), help="TFLite's fixed input size and the size verified at (default 224 224)")
    parser.add_argument("--include-top", action=argparse.BooleanOptionalAction, default=None, help="export the classifier (default: what the file holds)")
    parser.add_argument("--data-format", default="channels_last", metavar="channels_last|channels_first", help="input layout (default channels_last)")
    parser.add_argument("--batch-size", type=int, default=1, help="TFLite's fixed batch (default 1)")
    parser.add_argument("--output", required=True, metavar="PATH", help="SavedModel folder or .tflite file; its sidecar is PATH.json")
    parser.add_argument("--force", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        0 written, 1 the check failed (nothing written), 2 bad input (one line
        on stderr ending in ``Received: ...``), 128 + the signal number when
        interrupted (temporary files removed).
    """
    args = build_parser().parse_args(argv)
    return run_cli(
        lambda: export(
            args.arch,
            weights=args.weights,
            fmt=args.format,
            output=args.output,
            quantize=args.quantize,
            input_size=args.input_size,
            include_top=args.include_top,
            data_format=args.data_format,
            batch_size=args.batch_size,
            force=args.force,
            quiet=args.quiet,
        ),
        usage_errors=(UsageError,),
        interrupted_message="interrupted before the export finished; nothing was left under the target name",
        finish=report_result,
    )


if __name__ == "__main__":
    sys.exit(main())

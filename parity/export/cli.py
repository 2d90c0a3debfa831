"""``python -m parity.export ARCH``: a VGG as a SavedModel, TFLite, ONNX or OpenVINO file, checked against torchvision.

The weights are a ``.weights.h5`` written by ``python -m parity.convert``
(``--weights FILE``, or ``--weights converted`` for the file
``vgg_keras.VGG16(weights="converted")`` loads), or a torch checkpoint
(``--checkpoint``). The artifact is written under a temporary name in the
target folder (a SavedModel and quantized TFLite through a Keras model; fp32
TFLite and ONNX straight from the layer plan and the weights, without
TensorFlow; an OpenVINO IR converted from that ONNX graph by
``openvino.convert_model``); it is then loaded back from disk
(``tf.saved_model.load``, LiteRT, onnxruntime, OpenVINO's CPU plugin in fp32),
run on the fixed verification batch of
``parity.convert`` (and on four scikit-image photos through torchvision's
preprocessing, when scikit-image is installed and the input is square), and
compared with torchvision running the same weights on the same inputs. It is
renamed into place only if every figure is within its format's bound
(:data:`parity.export.check.TOLERANCES`), and a sidecar ``PATH.json`` records the provenance of the
weights, the export settings and the figures measured.

Roles: this module is the CLI; :mod:`parity.export.pipeline` runs the steps
(the checks made before any framework loads are in
:mod:`parity.export.options`); :mod:`parity.export.write` builds the model,
writes the artifact and commits it; :mod:`parity.export.check` runs it from
disk and judges it against torch.

Exit codes: 0 written, 1 the check failed (nothing written), 2 bad input (one
line on stderr ending in ``Received: ...``; nothing written), 130/143
interrupted (temporary files removed).

torch and torchvision are imported before TensorFlow in this process: the
reverse order crashes the interpreter (tensorflow/tensorflow#124205).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from parity.cli import UsageError, add_verbose_option, hide_framework_logs, report_result, run_cli
from parity.core.config import ARCHS
from parity.export.options import FORMATS, QUANTIZATIONS
from parity.export.pipeline import export

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (formats and quantizations are checked by :func:`export`, in one line)."""
    parser = argparse.ArgumentParser(
        prog="python -m parity.export",
        description="Export converted VGG weights as a SavedModel, TFLite or ONNX file, verified against torchvision.",
    )
    parser.add_argument("arch", choices=list(ARCHS), help="torchvision architecture")
    parser.add_argument(
        "--weights",
        metavar="FILE|converted",
        help="a .weights.h5 from python -m parity.convert, or 'converted'",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="instead of --weights: a torch checkpoint, exported in one step: a .pth/.pt/.bin/.ckpt/.safetensors "
        "file or a Hugging Face style folder, in torchvision's or timm's layout, bare or inside a training checkpoint",
    )
    parser.add_argument(
        "--format",
        required=True,
        metavar="|".join(FORMATS),
        help="saved_model (a folder), tflite or onnx (a file), openvino (an IR: PATH.xml and a .bin beside it)",
    )
    parser.add_argument(
        "--quantize", default="none", metavar="|".join(QUANTIZATIONS), help="TFLite only (default none)"
    )
    parser.add_argument(
        "--input-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="TFLite's fixed input size and the size verified at (default 224 224)",
    )
    parser.add_argument(
        "--include-top",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="export the classifier (default: what the file holds)",
    )
    parser.add_argument(
        "--data-format",
        default=None,
        metavar="channels_last|channels_first",
        help="input layout (default channels_first for onnx and openvino, channels_last otherwise)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="TFLite, ONNX, OpenVINO: the batch the file is verified at besides 1 (default 4); every file takes any "
        "batch",
    )
    parser.add_argument(
        "--calibration",
        metavar="DIR",
        help="--quantize int8: a folder of images to calibrate on (default: a built-in set of 35)",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="PATH",
        help="SavedModel folder, .tflite, .onnx or .xml (OpenVINO) file; its sidecar is PATH.json",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    add_verbose_option(parser)
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
    hide_framework_logs(args.verbose)
    return run_cli(
        lambda: export(
            args.arch,
            weights=args.weights,
            checkpoint=args.checkpoint,
            fmt=args.format,
            output=args.output,
            quantize=args.quantize,
            input_size=args.input_size,
            include_top=args.include_top,
            data_format=args.data_format,
            batch_size=args.batch_size,
            calibration=args.calibration,
            force=args.force,
            quiet=args.quiet,
        ),
        usage_errors=(UsageError,),
        interrupted_message="interrupted before the export finished; nothing was left under the target name",
        finish=report_result,
    )

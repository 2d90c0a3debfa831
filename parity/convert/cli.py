"""``python -m parity.convert ARCH``: torchvision VGG weights to a verified Keras file, and back.

Sources, one at a time: torchvision's published weights (``--weights``, the
default, downloaded into torch's hub cache with the hash checked), a local
checkpoint (``--checkpoint``) or a random initialization (``--init``).
The ``.weights.h5`` is written straight from the torch tensors under a
temporary name (:func:`parity.convert.weight_arrays.write_keras_weights`; no Keras model of
the network). Verification is on by default: the torch model runs on one fixed
batch, its weights are freed, the written file is loaded into a Keras model
that runs the same batch, and the file is renamed into place only if they agree.

``--to torch --keras-weights FILE`` goes the other way: a Keras
``.weights.h5`` to a torchvision state dict (``.pth``, ``.pt`` or
``.safetensors``), verified the same way (:mod:`parity.convert.to_torch`).

Exit codes: 0 success, 1 parity failure, 2 bad input (one line on stderr,
ending in ``Received: ...``; nothing written), 130/143 interrupted (SIGINT or
SIGTERM; temporary files removed, never a partial file under the target name).

Everything that can be checked before the work starts is: the source (a
checkpoint path must be a readable, non-empty regular file), the output path
(suffix, folder exists and is writable, not a folder, not an
existing file without ``--force``) and the report path. Every file (weights,
sidecar, report) is written under a temporary name in its folder and renamed
when complete.

torch and torchvision are imported before Keras/TensorFlow in this process:
the reverse order crashes the interpreter when torchvision pulls in triton
(tensorflow/tensorflow#124205).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from parity.cli import UsageError, add_verbose_option, hide_framework_logs, report_result, run_cli
from parity.convert.to_keras import INIT_CHOICES, ConvertResult, convert
from parity.core.catalog import DEFAULT_WEIGHTS, WEIGHTS
from parity.core.checkpoint import CheckpointError
from parity.core.config import ARCHS
from parity.core.errors import ConversionError
from parity.core.state_dicts import LAYOUTS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m parity.convert",
        description="Convert torchvision VGG or AlexNet weights to a verified Keras .weights.h5 file, "
        "or (--to torch) back.",
    )
    parser.add_argument("arch", choices=list(ARCHS), help="torchvision architecture")
    src = parser.add_mutually_exclusive_group()
    names = sorted({n for recs in WEIGHTS.values() for n in recs})
    src.add_argument("--weights", choices=names, help=f"torchvision's published weights (default {DEFAULT_WEIGHTS})")
    src.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="a checkpoint: a .pth/.pt/.bin/.ckpt/.safetensors file, a Hugging Face style folder "
        "(model.safetensors or pytorch_model.bin, config.json) or hf://ORG/NAME; torchvision's or timm's "
        "layout, bare or inside a training checkpoint (Lightning, EMA)",
    )
    parser.add_argument(
        "--key",
        metavar="ENTRY",
        help="with --checkpoint: the entry (e.g. state_dict_ema) or key prefix (e.g. ema_model) that holds the "
        "state dict, when the checkpoint holds several",
    )
    src.add_argument("--init", choices=INIT_CHOICES, help="random weights: torchvision's init, or every tensor random")
    parser.add_argument(
        "--to",
        choices=("keras", "torch"),
        default="keras",
        help="direction: torch -> Keras (default) or Keras -> torch",
    )
    parser.add_argument("--keras-weights", metavar="PATH", help="with --to torch: the Keras .weights.h5 to convert")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        help="with --to torch: the key layout written, torchvision's (default) or timm's "
        "(pre_logits.fc1 as a 7x7 convolution, pre_logits.fc2, head.fc)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --init (default 0)")
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="target .weights.h5 (default: Keras' cache for torchvision weights); "
        "with --to torch a .pth, .pt or .safetensors",
    )
    parser.add_argument("--report", metavar="PATH", help="write the verification report as JSON")
    parser.add_argument(
        "--num-classes",
        type=int,
        help="expected class count; must match the checkpoint (with --init: the class count of the random model)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison with torch")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    add_verbose_option(parser)
    return parser


def _to_torch(args: argparse.Namespace) -> ConvertResult:
    """Runs ``--to torch`` after checking that no torch -> Keras option was given.

    Raises:
        UsageError: If the direction and the source options disagree.
    """
    from parity.convert.to_torch import convert_to_torch

    if args.to != "torch":
        raise UsageError(
            f"--keras-weights is the source of --to torch. Received: --to {args.to} --keras-weights "
            f"{args.keras_weights}"
        )
    given = [f"--{name}" for name in ("weights", "checkpoint", "init") if getattr(args, name) is not None]
    if given or args.keras_weights is None:
        raise UsageError(
            "--to torch converts a Keras file: pass --keras-weights PATH (and no --weights, --checkpoint or --init). "
            f"Received: {' '.join(given) or 'no --keras-weights'}"
        )
    return convert_to_torch(args.arch, args.keras_weights, layout=args.layout or "torchvision", **_shared_options(args))


def _shared_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options both directions take, as keyword arguments."""
    return {
        "output": args.output,
        "report": args.report,
        "num_classes": args.num_classes,
        "verify_outputs": not args.no_verify,
        "force": args.force,
        "quiet": args.quiet,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        0 on success, 1 on a parity failure, 2 on bad input (one line on
        stderr, ending in ``Received: ...``), 128 + the signal number when
        interrupted by SIGINT or SIGTERM (temporary files removed). Only 0
        writes weights; 1 may write the report.
    """
    args = build_parser().parse_args(argv)
    hide_framework_logs(args.verbose)

    def work() -> ConvertResult:
        if args.to == "torch" or args.keras_weights is not None:
            return _to_torch(args)
        if args.layout is not None:
            raise UsageError(
                "--layout picks the layout --to torch writes; a checkpoint's layout is recognized from its keys. "
                f"Received: --layout {args.layout}"
            )
        return convert(
            args.arch,
            weights=args.weights,
            checkpoint=args.checkpoint,
            key=args.key,
            init=args.init,
            seed=args.seed,
            **_shared_options(args),
        )

    return run_cli(
        work,
        usage_errors=(UsageError, CheckpointError, ConversionError),
        interrupted_message=_interrupted_message,
        finish=report_result,
        keeps_swallowed_signals=True,  # the conversion checks parity.interrupts before each step and rename
    )


def _interrupted_message(e: BaseException) -> str:
    """What an interrupted conversion left: nothing, or (``e.written``) a complete file and sidecar."""
    written = getattr(e, "written", None)
    if written is not None:
        return f"interrupted just after {written} and its sidecar were renamed into place; they are complete"
    return "interrupted before the conversion finished; no partial file was left under the target name"

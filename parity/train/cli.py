"""``python -m parity.train``: the CIFAR-10 VGG recipe, trained the same way in torch and in Keras.

The command line only: it checks the arguments, reads the CIFAR-10 folder
(:func:`parity.cifar.load_cifar10`), trains with :func:`parity.train.loop.train`
(the recipe, the two trainers and the loop are described there) and writes the
results with :func:`parity.train.outputs.write_outputs`. With ``--framework
both`` the two frameworks start from one torch initialization and take their
batches in one order; with ``--dropout 0`` they agree to float32 rounding over
the first steps.

Written into ``--output``, each file under a temporary name and renamed when
complete: ``history.json``, ``curves.png``, ``keras.weights.h5`` (with its
provenance sidecar) and ``torch.pth``.

Exit codes: 0 success, 2 bad input (one line on stderr ending in ``Received:
...``, nothing written), 130/143 interrupted by SIGINT/SIGTERM (one line; no
file written, never a partial one).

torch is imported before Keras/TensorFlow (the other order can crash the
interpreter); ``--framework keras`` does not import torch at all.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from parity.cifar import load_cifar10
from parity.cifar.data import CifarError
from parity.cli import UsageError, add_verbose_option, check_writable_folder, hide_framework_logs, log, run_cli
from parity.core.config import PRESETS, RECIPES, VGGConfig, get_named_config
from parity.core.errors import first_line, os_reason
from parity.interrupts import abort_if_interrupted
from parity.machine import cpu_name
from parity.train.loop import FRAMEWORKS, Curves, Recipe, train
from parity.train.outputs import OUTPUT_FILES, write_outputs

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    d = Recipe()
    names = [*RECIPES, *PRESETS]
    parser = argparse.ArgumentParser(
        prog="python -m parity.train",
        description="Train a VGG on a CIFAR-10 folder in torch, Keras or both, from the same start and batch order.",
    )
    parser.add_argument(
        "arch", nargs="?", default="cifar10_vgg16", choices=names, help="preset or recipe (default cifar10_vgg16)"
    )
    parser.add_argument("--config", metavar="FILE", help="a VGGConfig as JSON (VGGConfig.to_dict()), instead of ARCH")
    parser.add_argument("--data", metavar="DIR", required=True, help="CIFAR-10 folder (binary or Python version)")
    parser.add_argument(
        "--framework", choices=("torch", "keras", "both"), default="both", help="which to train (default both)"
    )
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"default {d.lr}")
    parser.add_argument("--momentum", type=float, default=d.momentum, help=f"default {d.momentum}")
    parser.add_argument(
        "--step-size", type=int, default=d.step_size, help=f"StepLR's step_size (default {d.step_size})"
    )
    parser.add_argument("--gamma", type=float, default=d.gamma, help=f"StepLR's gamma (default {d.gamma})")
    parser.add_argument(
        "--dropout", type=float, help="override the config's dropout (0 makes both frameworks agree step by step)"
    )
    parser.add_argument(
        "--seed", type=int, default=d.seed, help="seed of the init, dropout and batch order (default 0)"
    )
    parser.add_argument("--limit", type=int, help="use only the first N training and N test images")
    parser.add_argument("--threads", type=int, help="CPU threads per framework (default: all cores)")
    parser.add_argument("--jit-compile", action="store_true", help="compile Keras' step with XLA")
    parser.add_argument(
        "--output", metavar="DIR", default="train_output", help="folder for the results (default ./train_output)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite results already in --output")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    add_verbose_option(parser)
    return parser


def _config(args: argparse.Namespace, data_classes: int) -> VGGConfig:
    """The network: ``--config`` or ARCH, with ``--dropout`` and the data's class count applied.

    Raises:
        UsageError: If the config cannot be read or does not fit 32x32 RGB images.
    """
    if args.config is not None:
        try:
            raw = json.loads(Path(args.config).read_text())
            config = VGGConfig.from_dict(raw)
        except OSError as e:
            raise UsageError(f"--config cannot be read ({os_reason(e)}). Received: --config {args.config}") from None
        except (ValueError, TypeError) as e:
            raise UsageError(
                f"--config must be a VGGConfig as JSON ({first_line(e)}). Received: --config {args.config}"
            ) from None
    else:
        config = get_named_config(args.arch)
    try:
        if args.dropout is not None:
            config = config.replace(dropout=args.dropout)
        if config.num_classes != data_classes:
            config = config.replace(num_classes=data_classes)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if config.in_channels != 3:
        raise UsageError(f"CIFAR-10 images have 3 channels. Received: in_channels={config.in_channels}")
    if config.pool_size is None and config.input_size != (32, 32):
        raise UsageError(
            "A config without an adaptive pool must be built for 32x32 CIFAR images. "
            f"Received: input_size={config.input_size}"
        )
    if config.min_input_size > 32:
        raise UsageError(
            f"{len(config.stages)} max-pool stages do not fit 32x32 images (at most 5). "
            f"Received: {len(config.stages)} stages"
        )
    return config


def _check_args(args: argparse.Namespace) -> Recipe:
    """The recipe the arguments give.

    Raises:
        UsageError: If a count is below 1 or a rate is not finite and non-negative.
    """
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--step-size", args.step_size)):
        if value < 1:
            raise UsageError(f"{flag} must be a positive integer. Received: {flag} {value}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be a positive integer. Received: --threads {args.threads}")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be a positive integer. Received: --limit {args.limit}")
    for flag, value in (("--lr", args.lr), ("--momentum", args.momentum), ("--gamma", args.gamma)):
        if not math.isfinite(value) or value < 0 or (flag == "--lr" and value == 0):
            raise UsageError(
                f"{flag} must be a finite {'positive' if flag == '--lr' else 'non-negative'} number. "
                f"Received: {flag} {value}"
            )
    return Recipe(
        args.epochs, args.batch_size, args.lr, args.momentum, args.step_size, args.gamma, args.seed, args.limit
    )


def _check_output(folder: str, force: bool, frameworks: Sequence[str]) -> Path:
    """Creates ``--output`` if missing and refuses one that is not a writable folder or holds results.

    Raises:
        UsageError: If it is a file, cannot be created or written, or holds
            results without ``force``.
    """
    out = Path(folder).expanduser()
    shown = f"Received: --output {folder}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output must be a folder. {shown}")
    check_writable_folder(out.parent, f"--output {folder}", "--output's parent folder")
    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise UsageError(f"--output cannot be created ({os_reason(e)}). {shown}") from None
    check_writable_folder(out, f"--output {folder}", "--output")
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not force:
        raise UsageError(f"--output already holds {', '.join(existing)}: pass --force to overwrite. {shown}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        0 on success, 2 on bad input (one line on stderr), 128 + the signal
        number when interrupted (nothing written).

    Examples:
        In a folder where ``python -m parity.cifar digits-to-cifar digits`` has run:

        >>> from parity.train import main
        >>> main(["--data", "digits", "--epochs", "1", "--limit", "256", "--quiet"])  # doctest: +SKIP
        0
    """
    args = build_parser().parse_args(argv)
    hide_framework_logs(args.verbose)
    frameworks = FRAMEWORKS if args.framework == "both" else (args.framework,)
    where = "before training"

    def work() -> tuple[Path, dict[str, Curves], list[Path]]:
        nonlocal where
        recipe = _check_args(args)
        data = load_cifar10(args.data).limit(recipe.limit)
        config = _config(args, len(data.classes))
        out = _check_output(args.output, args.force, frameworks)
        if "torch" in frameworks:
            try:
                import torch  # noqa: F401  (torch and torchvision before TensorFlow)
                import torchvision  # noqa: F401
            except ImportError:
                raise UsageError(
                    "--framework torch/both needs torch: pip install 'vgg-parity[torch]'. Received: torch not installed"
                ) from None
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        if "keras" in frameworks and os.environ["KERAS_BACKEND"] != "tensorflow":
            raise UsageError(
                "Keras training here uses the TensorFlow backend. "
                f"Received: KERAS_BACKEND={os.environ['KERAS_BACKEND']}"
            )
        log(
            f"Training {config.name} ({config.num_params:,} parameters) on {data.source}: "
            f"{len(data.train_images)} train / {len(data.test_images)} test images, {', '.join(frameworks)}, "
            f"{recipe.epochs} epochs of {recipe.steps_per_epoch(len(data.train_images))} steps "
            f"(batch {recipe.batch_size}), on {cpu_name()}",
            args.quiet,
        )
        where = "during training"
        curves, trainers = train(
            config,
            data,
            recipe,
            frameworks,
            jit_compile=args.jit_compile,
            quiet=args.quiet,
            threads=args.threads,
            check=abort_if_interrupted,
        )
        where = "while writing the results"
        written = write_outputs(out, config, recipe, data, curves, trainers, before_commit=abort_if_interrupted)
        return out, curves, written

    def finish(result: tuple[Path, dict[str, Curves], list[Path]]) -> int:
        out, curves, written = result
        finals = ", ".join(f"{n} {100 * c.test_acc[-1]:.2f}%" for n, c in curves.items())
        log(f"Final test accuracy: {finals}. Wrote {', '.join(str(p) for p in written)}", args.quiet)
        print(out)
        return 0

    return run_cli(
        work,
        usage_errors=(UsageError, CifarError),
        interrupted_message=lambda e: f"interrupted {where}; no file was left half-written (temporary files removed)",
        finish=finish,
        keeps_swallowed_signals=True,
    )

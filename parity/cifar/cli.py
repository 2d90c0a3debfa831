"""``python -m parity.cifar``: check a CIFAR-10 folder, download the official archive, or write scikit-learn's digits.

The digits are written as a CIFAR-10 folder (``digits-to-cifar``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from parity.cifar.data import BIN_DIR, PY_DIR, CifarError
from parity.cifar.download import ARCHIVES, download
from parity.cifar.read import load_cifar10
from parity.cifar.write import digits_as_cifar, write_binary_folder, write_python_folder
from parity.cli import run_cli

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m parity.cifar", description="CIFAR-10 folders: check, download, or make one from digits."
    )
    sub = parser.add_subparsers(dest="command", required=True, help="what to do")
    check = sub.add_parser("check", help="read a CIFAR-10 folder and print its size")
    check.add_argument("folder", help="the folder holding cifar-10-batches-bin or cifar-10-batches-py")
    fetch = sub.add_parser("download", help="download and extract the official archive (md5 checked)")
    fetch.add_argument("folder", help="where the archive is extracted")
    fetch.add_argument("--format", choices=list(ARCHIVES), default="binary", help="which archive (default binary)")
    digits = sub.add_parser("digits-to-cifar", help="write scikit-learn's digits as a CIFAR-10 folder (32x32 RGB)")
    digits.add_argument("folder", help="where the CIFAR-10 folder is written")
    digits.add_argument("--format", choices=list(ARCHIVES), default="binary", help="file layout (default binary)")
    digits.add_argument("--seed", type=int, default=0, help="seed of the train/test shuffle (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        0 on success, 2 on a refused file or folder (one line on stderr),
        128 + the signal number when interrupted (no partial file left).

    Examples:
        >>> from parity.cifar import main
        >>> main(["digits-to-cifar", "digits"])  # doctest: +SKIP
        digits/cifar-10-batches-bin
        0
        >>> main(["check", "digits"])  # doctest: +SKIP
        digits/cifar-10-batches-bin (binary): 1500 training, 297 test images, 10 classes
        0
    """
    args = build_parser().parse_args(argv)

    def work() -> None:
        if args.command == "check":
            data = load_cifar10(args.folder)
            print(
                f"{data.source}: {len(data.train_images)} training, {len(data.test_images)} test images, "
                f"{len(data.classes)} classes"
            )
        elif args.command == "download":
            print(download(args.folder, args.format))
        else:
            data = digits_as_cifar(seed=args.seed)
            writer = write_binary_folder if args.format == "binary" else write_python_folder
            sub = BIN_DIR if args.format == "binary" else PY_DIR
            print(writer(Path(args.folder) / sub, data))

    return run_cli(
        work,
        usage_errors=(CifarError,),
        interrupted_message="interrupted; no partial file was left under a target name",
        finish=lambda _: 0,
    )

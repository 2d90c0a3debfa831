"""``python -m parity.report``: how closely vgg_keras reproduces torchvision, per variant and block.

For each preset named (default all eight), each input size and each execution
mode (eager call, relaxed ``tf.function``, XLA, ``predict``; default all four),
torchvision's model (the reference) and the Keras model with converted weights
run on the same random batch. The sizes run in order on one model per preset,
so every size after the first is a new shape for the same graph, XLA and
predict functions. The report gives max absolute and relative logit differences,
top-1/top-5 agreement and the worst block, as a terminal table, a JSON file and
a PNG plot of per-block differences (log scale) for every variant.

Weights: ``--init random-all --seed N`` (every tensor random, BN statistics
included; works offline) or ``--weights converted`` (torchvision's ImageNet
weights from torch's hub cache against the converted file in Keras' cache).

``--train-steps N`` adds a training section (:func:`parity.training.report`):
N SGD steps of a small batch-norm VGG in both frameworks, a per-step loss
table, the final weight difference, ``training_report.json`` and a PNG of both
loss curves.

torch and torchvision are imported before Keras/TensorFlow (the reverse order
crashes when torchvision pulls in triton).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parity.core.catalog import get_weights_record
from parity.compare import LOGIT_RTOL, MODES, ParityReport
from parity.core.config import PRESETS

__all__ = ["main", "parse_size", "run_report"]

DEFAULT_SIZES = ("224", "32", "225", "200x320")


def parse_size(text: str) -> tuple[int, int]:
    """Parses ``"224"`` or ``"200x320"`` into ``(height, width)``.

    Raises:
        argparse.ArgumentTypeError: If the text is not a size of at least 32 px.
    """
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 32:
        raise argparse.ArgumentTypeError(f"a size is N or HxW with sides >= 32. Received: {text!r}")
    return parts[0], parts[1]


def _pairs(arch: str, source: str, seed: int) -> tuple[object, object]:
    """Returns (torch reference, Keras model ending in logits) for one preset."""
    import torch
    import torchvision

    import vgg_keras
    from parity.compare import build_pair
    from parity.random_weights import randomized_state_dict

    config = PRESETS[arch]
    if source != "converted":
        return build_pair(config, randomized_state_dict(config, seed))
    from vgg_keras.weights import converted_weights_path

    path = converted_weights_path(arch)
    if not path.exists():
        raise SystemExit(f"error: no converted weights at {path}: run `python -m parity.convert {arch}` first.")
    record = get_weights_record(arch)
    reference = torchvision.models.get_model(arch, weights=None, init_weights=False).eval()
    state = torch.hub.load_state_dict_from_url(record.url, progress=True, check_hash=True, weights_only=True)
    reference.load_state_dict(state, strict=True)
    model = vgg_keras.build_vgg(config, weights=os.fspath(path), classifier_activation=None)
    return reference, model


def run_report(
    archs: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    source: str = "random-all",
    seed: int = 0,
    batch: int = 2,
    modes: Sequence[str] = MODES,
) -> list[dict[str, object]]:
    """Runs every (preset, size, mode) comparison.

    Args:
        archs: Preset names.
        sizes: Input ``(height, width)`` pairs.
        source: ``"random-all"`` or ``"converted"``.
        seed: Seed of random weights and inputs.
        batch: Images per comparison.
        modes: Execution modes among :data:`parity.compare.MODES`.

    Returns:
        One dict per case: arch, size, mode, and the :class:`ParityReport` fields.
    """
    import torch  # noqa: F401  (before Keras)
    import torchvision  # noqa: F401

    import keras

    from parity.compare import compare_outputs, keras_forward, torch_forward

    cases: list[dict[str, object]] = []
    total = len(archs) * len(sizes) * len(modes)
    for arch in archs:
        reference, model = _pairs(arch, source, seed)
        for size in sizes:
            x = np.random.default_rng(seed + 1).standard_normal((batch, 3, *size), dtype=np.float32)
            expected = torch_forward(reference, x)  # type: ignore[arg-type]
            for mode in modes:
                started = time.perf_counter()
                report: ParityReport = compare_outputs(expected, keras_forward(model, x, mode=mode))  # type: ignore[arg-type]
                worst = report.worst_block
                case = {"arch": arch, "size": list(size), "mode": mode, **report.to_dict(), "worst_block": worst.name}
                cases.append(case)
                print(
                    f"[{len(cases)}/{total}] {arch:<9} {size[0]}x{size[1]:<4} {mode:<7} max rel {report.max_rel:.2e} "
                    f"top-1 {report.top1:.0%} ({time.perf_counter() - started:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        del reference, model
        keras.backend.clear_session()
    return cases


def format_table(cases: Sequence[dict[str, object]]) -> str:
    """A markdown table of the cases."""
    rows = [
        "| variant | input | mode | max abs diff | max rel diff | top-1 | top-5 | worst block | within 1e-5 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        h, w = c["size"]  # type: ignore[misc]
        rows.append(
            f"| {c['arch']} | {h}x{w} | {c['mode']} | {c['max_abs']:.2e} | {c['max_rel']:.2e} | {c['top1']:.0%} | {c['top5']:.0%} "
            f"| {c['worst_block']} | {'yes' if c['passed'] else 'NO'} |"
        )
    return "\n".join(rows)


def plot(cases: Sequence[dict[str, object]], path: Path, source: str = "random-all") -> None:
    """Per-block relative differences: a row of panels per mode, a panel per input size, a line per variant.

    Args:
        cases: :func:`run_report`'s output.
        path: The PNG to write (atomically).
        source: ``"random-all"`` or ``"converted"``, named in the title.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from parity.core.atomic import write_atomic

    sizes = list(dict.fromkeys(tuple(c["size"]) for c in cases))  # type: ignore[arg-type]
    modes = list(dict.fromkeys(str(c["mode"]) for c in cases))
    fig, axes = plt.subplots(
        len(modes), len(sizes), figsize=(4.2 * len(sizes), 3.6 * len(modes) + 0.6), sharey=True, squeeze=False
    )
    archs = list(dict.fromkeys(str(c["arch"]) for c in cases))
    colors = plt.get_cmap("tab10")
    panels = [(row, mode, ax, size) for row, mode in enumerate(modes) for ax, size in zip(axes[row], sizes, strict=True)]
    for row, mode, ax, size in panels:
        for i, arch in enumerate(archs):
            case = next(c for c in cases if c["arch"] == arch and tuple(c["size"]) == size and c["mode"] == mode)  # type: ignore[arg-type]
            blocks = case["blocks"]  # type: ignore[index]
            names = [b["name"] for b in blocks]
            values = [max(b["max_rel"], 1e-9) for b in blocks]
            ax.plot(names, values, marker="o", color=colors(i), linestyle="--" if arch.endswith("_bn") else "-", label=arch)
        ax.axhline(LOGIT_RTOL, color="red", linewidth=1, label=f"tolerance {LOGIT_RTOL:g}")
        ax.set_yscale("log")
        ax.set_title(f"{mode}, input {size[0]}x{size[1]}")
        if row == len(modes) - 1:
            ax.set_xlabel("output after")
        ax.tick_params(axis="x", rotation=45)
        ax.grid(True, which="both", alpha=0.3)
    for row in axes:
        row[0].set_ylabel("max |keras - torch| / max |torch|")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    weights = "torchvision's ImageNet weights" if source == "converted" else "every weight random"
    fig.suptitle(f"vgg_keras vs torchvision, fp32 CPU, {weights}: relative difference per block")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png")
    plt.close(fig)
    write_atomic(path, png.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point.

    Returns:
        0 if every case is within tolerance, 1 otherwise, 2 on bad input.
    """
    parser = argparse.ArgumentParser(prog="python -m parity.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("archs", nargs="*", metavar="ARCH", help=f"presets among {', '.join(PRESETS)} (default: all)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--init", choices=["random-all"], default="random-all", help="every tensor random (default)")
    src.add_argument("--weights", choices=["converted"], help="torchvision's ImageNet weights vs the converted cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES], metavar="SIZE")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--mode", nargs="+", choices=MODES, default=list(MODES), dest="modes", help="execution modes (default: all)"
    )
    parser.add_argument("--out-dir", type=Path, default=Path("."), help="where parity_report.json/.png go")
    parser.add_argument(
        "--train-steps", type=int, metavar="N", help="also run N SGD steps in both frameworks (training_report.json/.png)"
    )
    args = parser.parse_args(argv)
    if args.train_steps is not None and args.train_steps < 1:
        print(f"error: --train-steps must be a positive integer. Received: --train-steps {args.train_steps}", file=sys.stderr)
        return 2
    unknown = [a for a in args.archs if a not in PRESETS]
    if unknown:
        print(f"error: ARCH must be among {', '.join(PRESETS)}. Received: {' '.join(unknown)}", file=sys.stderr)
        return 2
    if not args.out_dir.is_dir():
        print(f"error: --out-dir does not exist: create it first. Received: --out-dir {args.out_dir}", file=sys.stderr)
        return 2
    archs = args.archs or list(PRESETS)
    source = "converted" if args.weights else "random-all"
    modes = list(dict.fromkeys(args.modes))
    cases = run_report(archs, args.sizes, source, args.seed, args.batch, modes)
    table = format_table(cases)
    print(table)
    import keras
    import tensorflow as tf
    import torch

    from parity.core.atomic import write_atomic

    data = {
        "source": source,
        "seed": args.seed,
        "batch": args.batch,
        "rtol": LOGIT_RTOL,
        "modes": modes,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "versions": {"torch": torch.__version__, "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
        "cases": cases,
    }
    json_path, png_path = args.out_dir / "parity_report.json", args.out_dir / "parity_report.png"

    write_atomic(json_path, json.dumps(data, indent=2))
    plot(cases, png_path, source)
    print(f"\nwrote {json_path} and {png_path}", file=sys.stderr)
    passed = all(c["passed"] for c in cases)
    if args.train_steps is not None:
        from parity.training import report as training_report

        passed = training_report(args.train_steps, args.out_dir, args.seed) and passed
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

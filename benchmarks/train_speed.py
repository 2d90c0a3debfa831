"""Training speed of the CIFAR-10 recipe in torch and in Keras, side by side in one run.

    uv run python -m benchmarks.train_speed                    # cifar10_vgg16, batch 512, 3 timed steps
    uv run python -m benchmarks.train_speed --batch-size 128 --steps 5 --threads 2

Each framework runs the same optimizer steps as ``python -m parity.train``
(:class:`parity.train.loop.TorchTrainer`, :class:`parity.train.loop.KerasTrainer`) on
random 32x32 batches (speed does not depend on the pixels): torch eager,
Keras' step as a ``tf.function`` ("graph"), and the same step compiled with
XLA (``jit_compile=True``). After ``--warmup`` untimed steps (tracing,
compilation), ``--steps`` steps are timed; the figures are images/s, seconds
per 50,000-image epoch and the 50-epoch recipe, extrapolated from those steps
(evaluation, about 1/3 of a training step per image, not included). The CPU
model is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import torch  # noqa: E402  (torch and torchvision before TensorFlow)
import torchvision  # noqa: E402,F401

from benchmarks.harness import table  # noqa: E402
from parity.cli import log  # noqa: E402
from parity.core.atomic import write_atomic  # noqa: E402
from parity.core.config import PRESETS, RECIPES, get_named_config  # noqa: E402
from parity.machine import cpu_name  # noqa: E402
from parity.train.loop import KerasTrainer, Recipe, TorchTrainer, initial_state  # noqa: E402

#: CIFAR-10's training set and the recipe's epochs.
EPOCH_IMAGES = 50_000
RECIPE_EPOCHS = 50


def _time(step: object, x: np.ndarray, y: np.ndarray, warmup: int, steps: int) -> list[float]:
    """Seconds of each of ``steps`` calls of ``step(x, y)``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step(x, y)  # type: ignore[operator]
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step(x, y)  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints a markdown table (and JSON with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__.splitlines()[0])
    parser.add_argument("arch", nargs="?", default="cifar10_vgg16", choices=[*RECIPES, *PRESETS])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per framework (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--threads", type=int, help="CPU threads per framework (default: all cores)")
    parser.add_argument(
        "--modes", nargs="+", default=["torch", "keras", "keras-xla"], choices=["torch", "keras", "keras-xla"]
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)

    import tensorflow as tf

    if args.threads is not None:
        torch.set_num_threads(args.threads)
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    config = (
        get_named_config(args.arch).replace(num_classes=10) if args.arch in PRESETS else get_named_config(args.arch)
    )
    recipe = Recipe(batch_size=args.batch_size)
    state = initial_state(config, 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch_size, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, config.num_classes, args.batch_size).astype(np.int64)
    cpu = cpu_name()
    log(
        f"{config.name}: {config.num_params:,} parameters, batch {args.batch_size}, "
        f"{args.warmup} warm-up + {args.steps} timed steps each, on {cpu}; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), TensorFlow {tf.__version__}",
        quiet=False,
    )
    rows = []
    for mode in args.modes:
        if mode == "torch":
            trainer: TorchTrainer | KerasTrainer = TorchTrainer(config, state, recipe)
        else:
            trainer = KerasTrainer(config, state, recipe, steps_per_epoch=98, jit_compile=mode == "keras-xla")
        times = _time(trainer.step, x, y, args.warmup, args.steps)
        per_step = statistics.median(times)
        rate = args.batch_size / per_step
        epoch = EPOCH_IMAGES / rate
        rows.append(
            {
                "mode": mode,
                "step_s": per_step,
                "step_s_all": times,
                "images_per_s": rate,
                "epoch_s": epoch,
                "recipe_h": epoch * RECIPE_EPOCHS / 3600,
            }
        )
        log(f"  {mode}: {per_step:.2f} s/step, {rate:.1f} img/s", quiet=False)
        del trainer
    print(f"\n{config.name}, batch {args.batch_size}, on {cpu} (median of {args.steps} steps, extrapolated)\n")
    header = ["framework", "s / step", "images / s", "s / 50k-image epoch", "50 epochs (h)"]
    cells = (
        [r["mode"], f"{r['step_s']:.2f}", f"{r['images_per_s']:.1f}", f"{r['epoch_s']:.0f}", f"{r['recipe_h']:.1f}"]
        for r in rows
    )
    print("\n".join(table(header, "lllll", cells)))
    if args.json:
        figures = {"config": config.name, "batch_size": args.batch_size, "cpu": cpu, "rows": rows}
        write_atomic(args.json, json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the run-time input checks and the NaN mask cost: vgg16 at 224x224 with them and without.

``python -m benchmarks.input_checks [--quick] [--batches 1 8] [--rounds 6]``

Two worker processes (:mod:`benchmarks.workers`), one per model, the same
random weights (Keras' seed 0): ``vgg_keras.VGG16`` as built (layer
``input_check`` and the masking ``predictions``, see :mod:`vgg_keras.checks`),
and the same layers without them (:func:`vgg_keras.checks.without_checks`). Each
measures images/s called directly, through ``predict`` and compiled with XLA,
at each batch size. The cells take turns in rounds (the order reversed every
other round), and the ratio with / without is taken per round, between samples
measured seconds apart, so load from other processes reaches both alike; the
"others" column is the CPU other processes used meanwhile. A ratio of 0.99
means the checks cost 1%.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import SIZE, Option, Section, command, rng, say, summarize, table, wait_for_quiet
from benchmarks.workers import Worker, WorkerSpec

__all__ = ["main"]

PATHS = ("direct", "predict", "xla")
SPECS = (
    WorkerSpec("with checks", "keras", ("vgg16",), PATHS),
    WorkerSpec("without checks", "keras", ("vgg16_without_checks",), PATHS),
)


def measure(section: Section) -> dict[str, Any]:
    """Interleaved rounds over (batch, path, worker); returns raw samples and per-cell ratios."""
    args = section.args
    cells = [(b, p, i) for b in args.batches for p in PATHS for i in range(len(SPECS))]
    workers: list[Worker] = []
    try:
        for i, spec in enumerate(SPECS):
            workers.append(Worker(spec, section.env, args.project_root, section.workdir / f"worker{i}.log"))
        steps = {}
        for b, p, i in cells:
            ready = workers[i].request(op="prepare", model=SPECS[i].models[0], batch=b, path=p, target_s=args.seconds)
            steps[(b, p, i)] = ready["steps"]
            say(f"  warm-up {SPECS[i].label:<15} b{b} {p:<8} {ready['warm_s']:.3f} s/batch")
        samples: dict[tuple[int, str, int], list[dict[str, float]]] = {c: [] for c in cells}
        waited = 0.0
        for r in range(args.rounds):
            for c in cells if r % 2 == 0 else cells[::-1]:
                if args.quiet_budget - waited > 0:
                    waited += wait_for_quiet(section.cores, min(args.quiet_wait, args.quiet_budget - waited))
                b, p, i = c
                samples[c].append(
                    workers[i].request(op="measure", model=SPECS[i].models[0], batch=b, path=p, steps=steps[c])
                )
            say(f"  round {r + 1}/{args.rounds} (load average {os.getloadavg()[0]:.2f})")
        info = workers[0].hello["info"]
    finally:
        for w in workers:
            w.close()
    rows = []
    for b in args.batches:
        for p in PATHS:
            with_, without = samples[(b, p, 0)], samples[(b, p, 1)]
            rate = [[s["images"] / s["wall"] for s in got] for got in (with_, without)]
            others = [s["others_cpu"] / (s["wall"] * section.cores) for s in with_ + without]
            rows.append(
                {
                    "batch": b,
                    "path": p,
                    "with": summarize(rate[0]),
                    "without": summarize(rate[1]),
                    "ratio": summarize([a / z for a, z in zip(*rate)]),
                    "others_share": statistics.median(others),
                }
            )
    return {
        "info": info,
        "rows": rows,
        "quiet_wait_s": waited,
        "samples": {"|".join(map(str, k)): v for k, v in samples.items()},
    }


def render(results: dict[str, Any]) -> list[str]:
    """The table: images/s with and without the checks, and their ratio per round."""
    r = results["input_checks"]
    info = r["info"]
    lines = [
        "",
        f"vgg16 at {SIZE}x{SIZE}, TensorFlow {info['tensorflow']} (oneDNN {info['onednn']}), Keras {info['keras']}; "
        f"images/s median (min–max) over {results['args']['rounds']} interleaved rounds; ratio = with / without "
        "per round; others = CPU used by other processes, share of all cores.",
        "",
    ]
    rows = [
        [x["batch"], x["path"], rng(x["with"], ".2f"), rng(x["without"], ".2f"), rng(x["ratio"], ".3f"),
         f"{x['others_share']:.0%}"]
        for x in r["rows"]
    ]  # fmt: skip
    return lines + table(["batch", "path", "with checks", "without", "ratio", "others"], "rlrrrr", rows)


_OPTIONS = [
    Option("--batches", "batch sizes", [1, 8], [1], many=True),
    Option("--rounds", "interleaved rounds", 6, 2),
    Option("--seconds", "target seconds per sample", 3.0, 1.0, type=float),
]

main = command(__doc__, {"input_checks": measure}, render, _OPTIONS)

if __name__ == "__main__":
    sys.exit(main())

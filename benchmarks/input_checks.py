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

On a shared machine the rounds' spread is wider than 1%, so a second section
times the checks' own ops alone in one child process (``input_check`` and the
mask of ``predictions`` on a 224x224 batch and its logits, called directly, in a
``tf.function`` and under XLA; the median of ``--calls``), against the same
child's full vgg16 forward pass.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import SIZE, Option, Section, child_json, command, rng, say, summarize, table, wait_for_quiet
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


ALONE = r"""
import json, statistics, sys, time
cfg = json.loads(sys.argv[1])
import numpy as np, keras, tensorflow as tf
import vgg_keras
from vgg_keras.checks import InputCheck, nan_rows
model = vgg_keras.VGG16(weights=None, classifier_activation=None)
check = InputCheck(3, 32, data_format="channels_last")
def ops(x, logits):
    return nan_rows(x, logits + 0.0 * tf.reduce_sum(check(x)[:1, :1, :1, :1]), 32, "channels_last")
def forward(x, logits):
    return model(x, training=False)
out = {}
for batch in cfg["batches"]:
    x = tf.constant(np.random.default_rng(0).standard_normal((batch, 224, 224, 3), dtype=np.float32))
    logits = tf.zeros((batch, 1000))
    for name, fn in (("checks", ops), ("forward", forward)):
        for mode, f in (("direct", fn), ("graph", tf.function(fn)), ("xla", tf.function(fn, jit_compile=True))):
            calls = 3 if name == "forward" else cfg["calls"]
            np.asarray(f(x, logits))
            times = []
            for _ in range(calls):
                t = time.perf_counter()
                np.asarray(f(x, logits))
                times.append(time.perf_counter() - t)
            out.setdefault(str(batch), {}).setdefault(mode, {})[name] = statistics.median(times) * 1000
print(json.dumps(out))
"""


def measure_alone(section: Section) -> dict[str, Any]:
    """The checks' ops alone against the whole forward pass, in ms per call, in one child."""
    args = section.args
    return child_json(section, ALONE, {"batches": args.batches, "calls": args.calls})


def render(results: dict[str, Any]) -> list[str]:
    """The tables: images/s with and without the checks, their ratio per round; the ops alone."""
    return _render_rounds(results) + _render_alone(results)


def _render_alone(results: dict[str, Any]) -> list[str]:
    r = results.get("ops_alone")
    if not r or "error" in r:
        return ["", f"ops alone: {r.get('error') if r else 'not run'}"]
    rows = [
        [b, mode, f"{t['checks']:.3f}", f"{t['forward']:.0f}", f"{t['checks'] / t['forward']:.3%}"]
        for b, modes in r.items()
        for mode, t in modes.items()
    ]
    return [
        "",
        "The checks' ops alone (input_check and the mask on a 224x224 batch and its logits) against the whole "
        "vgg16 forward pass, same process, median ms per call:",
        "",
        *table(["batch", "mode", "checks, ms", "forward, ms", "share"], "rlrrr", rows),
    ]


def _render_rounds(results: dict[str, Any]) -> list[str]:
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
    Option("--calls", "calls of the checks alone per mode", 50, 10),
]

main = command(__doc__, {"input_checks": measure, "ops_alone": measure_alone}, render, _OPTIONS)

if __name__ == "__main__":
    sys.exit(main())

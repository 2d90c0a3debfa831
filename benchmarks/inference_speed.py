"""How fast is vgg_keras at inference against torchvision, and its head against keras.applications'?

Throughput (images/s) of vgg16 and vgg11_bn at 224x224, batch 1 and 8:
torchvision eager (``torch.no_grad``, eval mode) against vgg_keras called
directly, through ``model.predict`` and compiled with XLA
(``tf.function(jit_compile=True)``); in the same rounds, vgg_keras' head
(adaptive 7x7 average pool, dropout) against keras.applications' VGG16. Each
framework lives in its own worker process (:mod:`benchmarks.workers`); the
workers take turns in rounds (one sample of every cell per round, the order
reversed every other round), so drift and load from other processes reach
every cell alike. Ratios are taken per round, between samples measured
seconds apart, then summarized.

Run from the repository root::

    uv run python -m benchmarks.inference_speed            # full run (~9 min on 2 cores)
    uv run python -m benchmarks.inference_speed --quick    # smoke run
    uv run python -m benchmarks.inference_speed --diagnose # threads, layout, allocator, oneDNN variants
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cpu import model_macs
from benchmarks.harness import (
    QUIET_SHARE,
    SIZE,
    Option,
    Section,
    command,
    is_quiet,
    rng,
    summarize,
    table,
    wait_for_quiet,
)
from benchmarks.workers import Worker, WorkerSpec
from parity.cli import log

__all__ = ["main", "run_throughput", "summarize_throughput"]

MODELS = ("vgg16", "vgg11_bn")


BATCHES = (1, 8)


#: Keras paths measured for every (model, batch) cell.
KERAS_PATHS = ("direct", "predict", "xla")


#: The keras.applications comparison (section 4): model vgg16 only.
APPS_PATHS = ("direct", "xla")


def throughput_specs(diagnose: bool) -> list[WorkerSpec]:
    """The workers of the throughput section.

    Args:
        diagnose: Whether to add the variants that explain the differences.

    Returns:
        Worker specs; the first is the torch baseline.
    """
    specs = [
        WorkerSpec("torch eager", "torch", MODELS, ("eager",), baseline=True),
        WorkerSpec("keras", "keras", (*MODELS, "apps_vgg16"), KERAS_PATHS + (("graph",) if diagnose else ())),
    ]
    if diagnose:
        keep_heap = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 36)}
        specs += [
            WorkerSpec("torch eager, 1 thread", "torch", ("vgg16",), ("eager",), opts={"threads": 1}),
            WorkerSpec("torch eager, channels_last", "torch", ("vgg16",), ("eager",), opts={"channels_last": True}),
            WorkerSpec("torch eager, glibc heap kept", "torch", ("vgg16",), ("eager",), env=keep_heap),
            WorkerSpec(
                "torch eager, channels_last + heap kept",
                "torch",
                ("vgg16",),
                ("eager",),
                env=keep_heap,
                opts={"channels_last": True},
            ),
            WorkerSpec("keras, 1 thread", "keras", ("vgg16",), ("direct",), opts={"threads": 1}),
            WorkerSpec(
                "keras, oneDNN off", "keras", ("vgg16",), ("direct", "graph"), env={"TF_ENABLE_ONEDNN_OPTS": "0"}
            ),
        ]
    return specs


def _cells(specs: list[WorkerSpec], batches: Sequence[int]) -> list[tuple[int, str, int, str]]:
    """Every (worker index, model, batch, path) measured once per round."""
    cells = []
    for model in MODELS:
        for batch in batches:
            for i, spec in enumerate(specs):
                if model in spec.models:
                    cells += [(i, model, batch, p) for p in spec.paths]
                if model == "vgg16" and "apps_vgg16" in spec.models:
                    cells += [(i, "apps_vgg16", batch, p) for p in APPS_PATHS]
    return cells


def run_throughput(section: Section) -> dict[str, Any]:
    """Interleaved throughput rounds across worker processes.

    Args:
        section: The command line, the workers' environment, the folder for their logs, the CPU's peak and FMA rate.

    Returns:
        Worker info, warm-up figures, raw samples and per-cell summaries.
    """
    args, env, workdir, peak, fma = section.args, section.env, section.workdir, section.peak, section.fma
    specs = throughput_specs(args.diagnose)
    batches = tuple(args.batches)
    workers: list[Worker] = []
    try:
        for i, spec in enumerate(specs):
            t = time.perf_counter()
            workers.append(Worker(spec, env, args.project_root, workdir / f"worker{i}.log"))
            log(f"  started {spec.label} ({time.perf_counter() - t:.1f} s)", quiet=False)
        cells = _cells(specs, batches)
        prep: dict[str, dict[str, Any]] = {}
        for i, model, batch, path in cells:
            ready = workers[i].request(op="prepare", model=model, batch=batch, path=path, target_s=args.target_seconds)
            prep[_key(i, model, batch, path)] = ready
            log(
                f"  warm-up {specs[i].label:<38} {model:<10} b{batch} {path:<8} "
                f"first call {ready['first_call_s']:6.2f} s, then {ready['warm_s']:.3f} s/batch",
                quiet=False,
            )
        samples: dict[str, list[dict[str, float]]] = {_key(*c): [] for c in cells}
        budget = args.quiet_budget
        waited = 0.0
        gemm: dict[str, list[dict[str, float]]] = {
            s.label: [] for s in specs if s.kind in ("torch", "keras") and not s.opts and not s.env
        }
        for r in range(args.rounds):
            order = cells if r % 2 == 0 else cells[::-1]
            t = time.perf_counter()
            for i, model, batch, path in order:
                key = _key(i, model, batch, path)
                if budget - waited > 0:
                    waited += wait_for_quiet(peak["cores"], min(args.quiet_wait, budget - waited))
                samples[key].append(
                    workers[i].request(op="measure", model=model, batch=batch, path=path, steps=prep[key]["steps"])
                )
            for i, spec in enumerate(specs):
                if spec.label in gemm:
                    gemm[spec.label].append(workers[i].request(op="gemm", n=2048, reps=3))
            quiet = sum(is_quiet(samples[_key(*c)][-1], peak["cores"]) for c in cells)
            log(
                f"  round {r + 1}/{args.rounds} done in {time.perf_counter() - t:.0f} s, "
                f"{quiet}/{len(cells)} samples quiet, "
                f"{waited:.0f} s of the {budget:.0f} s quiet-wait budget used (load avg {os.getloadavg()[0]:.2f})",
                quiet=False,
            )
    finally:
        for w in workers:
            w.close()
    return {
        "workers": [
            {"label": s.label, "env": s.env, "opts": s.opts, **w.hello["info"], "setup_s": w.hello["setup_s"]}
            for s, w in zip(specs, workers)
        ],
        "cells": [dict(zip(("worker", "model", "batch", "path"), (specs[c[0]].label, *c[1:]))) for c in cells],
        "prepare": prep,
        "samples": samples,
        "gemm": {k: [asdict_safe(x) for x in v] for k, v in gemm.items()},
        "quiet_wait_s": waited,
        "summary": summarize_throughput(specs, cells, samples, gemm, peak, fma),
    }


def asdict_safe(x: dict[str, float]) -> dict[str, float]:
    """A plain copy of one reply (without the protocol's ``ok`` flag)."""
    return {k: v for k, v in x.items() if k != "ok"}


def _key(i: int, model: str, batch: int, path: str) -> str:
    """The dictionary key of one cell: worker index, model, batch, path."""
    return f"{i}|{model}|{batch}|{path}"


def summarize_throughput(
    specs: list[WorkerSpec],
    cells: list[tuple[int, str, int, str]],
    samples: dict[str, list[dict[str, float]]],
    gemm: dict[str, list[dict[str, float]]],
    peak: dict[str, Any],
    fma: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Images/s, ratios to torch (per round, then summarized) and peak fractions.

    Besides the fraction of the theoretical peak, two contention-proof figures
    come from the measured FMA rate: the fraction of the cores times one
    core's measured rate, and the FLOP/s per CPU-second the worker actually got, as a fraction
    of one core's measured peak (how well the kernels use the CPU time they get).

    Args:
        specs: The workers.
        cells: The measured cells.
        samples: Raw samples per cell key.
        gemm: Matmul samples per worker label.
        peak: Output of :func:`benchmarks.cpu.cpu_peak`.
        fma: Output of :func:`benchmarks.cpu.measure_fma_peak`, or ``None``.

    Returns:
        ``{"rows": [...], "gemm": {...}}``.
    """
    base = next(i for i, s in enumerate(specs) if s.baseline)
    rows = []
    for i, model, batch, path in cells:
        got = samples[_key(i, model, batch, path)]
        rate = [s["images"] / s["wall"] for s in got]
        arch = "vgg16" if model == "apps_vgg16" else model
        gmac = model_macs(arch) / 1e9
        row: dict[str, Any] = {
            "worker": specs[i].label,
            "model": model,
            "batch": batch,
            "path": path,
            "images_per_s": summarize(rate),
            "gmac_per_image": gmac,
            "peak_fraction": statistics.median(rate) * 2 * gmac / peak["gflops"],
            "cpu_per_wall": statistics.median(s["cpu"] / s["wall"] for s in got),
            "gflops": statistics.median(rate) * 2 * gmac,
            "others_share": statistics.median(s["others_cpu"] / (s["wall"] * peak["cores"]) for s in got),
            "minflt_per_image": statistics.median(s["minflt"] / s["images"] for s in got),
        }
        if fma:
            row["measured_peak_fraction"] = row["gflops"] / (fma["per_core_gflops"] * peak["cores"])
            row["per_cpu_second_fraction"] = statistics.median(
                (s["images"] * 2 * gmac / s["cpu"]) / fma["per_core_gflops"] for s in got if s["cpu"] > 0
            )
        quiet = [s["images"] / s["wall"] for s in got if is_quiet(s, peak["cores"])]
        if quiet:
            row["quiet_images_per_s"] = summarize(quiet)
            row["quiet_peak_fraction"] = statistics.median(quiet) * 2 * gmac / peak["gflops"]
        ref = samples.get(_key(base, arch, batch, "eager"))
        if ref and i != base:
            row["ratio_to_torch"] = summarize([r / (s["images"] / s["wall"]) for r, s in zip(rate, ref)])
            pairs = [(m, s) for m, s in zip(got, ref) if is_quiet(m, peak["cores"]) and is_quiet(s, peak["cores"])]
            if pairs:
                row["quiet_ratio_to_torch"] = summarize(
                    [(m["images"] / m["wall"]) / (s["images"] / s["wall"]) for m, s in pairs]
                )
        if model == "apps_vgg16":
            mine = samples.get(_key(i, "vgg16", batch, path))
            if mine:
                row["vgg_keras_over_apps"] = summarize([(m["images"] / m["wall"]) / r for m, r in zip(mine, rate)])
        rows.append(row)
    return {
        "rows": rows,
        "gemm": {k: summarize([s["gflops"] for s in v]) for k, v in gemm.items() if v},
        "others_share_overall": statistics.median(
            s["others_cpu"] / (s["wall"] * peak["cores"]) for v in samples.values() for s in v
        ),
    }


def _label(row: dict[str, Any]) -> str:
    """A row's runtime / path cell: the worker, and for Keras workers the path."""
    return row["worker"] if row["worker"].startswith("torch") else f"{row['worker']} {row['path']}"


def render(results: dict[str, Any]) -> list[str]:
    """The throughput tables (and the keras.applications comparison) as markdown lines."""
    tp = results.get("throughput")
    if not tp:
        return []
    out: list[str] = []
    for w in tp["workers"]:
        extras = ", ".join(f"{k}={v}" for k, v in w.items() if k not in ("label", "env", "opts", "setup_s"))
        out.append(f"- {w['label']}: {extras}" + (f"; env {w['env']}" if w["env"] else ""))
    out.append("")
    out += _throughput_table(tp, results["args"]["rounds"])
    out += _quiet_table(tp)
    out += _apps_table(tp)
    if tp["summary"]["gemm"]:
        out.append(
            "Square fp32 matmul, 2048x2048, GFLOP/s: "
            + "; ".join(f"{k}: {rng(v, '.0f')}" for k, v in tp["summary"]["gemm"].items())
        )
        out.append("")
    return out


def _throughput_table(tp: dict[str, Any], rounds: int) -> list[str]:
    """Every sample's figures per model, batch and path (keras.applications aside), with their legend.

    Args:
        tp: The throughput section's results.
        rounds: Rounds measured.

    Returns:
        Markdown lines.
    """
    out = [
        f"Throughput at {SIZE}x{SIZE}, images/s: median (min–max) over {rounds} rounds. "
        "Ratio = this path / torch eager in the same round (>1: faster than torch). "
        "Others = CPU used by other processes during the samples, as a share of all cores.",
        "",
        "% of peak: of the theoretical peak above; % measured: of the cores x one core's measured FMA rate; "
        "per CPU-s: FLOP/s per CPU-second the process got, as % of one core's measured rate.",
        "",
    ]
    lines = []
    for row in tp["summary"]["rows"]:
        if row["model"] == "apps_vgg16":
            continue
        s = row["images_per_s"]
        lines.append([
            row["model"], row["batch"], _label(row), rng(s), f"{s['q1']:.2f}–{s['q3']:.2f}",
            rng(row["ratio_to_torch"]) if "ratio_to_torch" in row else "1", f"{row['peak_fraction']:.0%}",
            f"{row['measured_peak_fraction']:.0%}" if "measured_peak_fraction" in row else "-",
            f"{row['per_cpu_second_fraction']:.0%}" if "per_cpu_second_fraction" in row else "-",
            f"{row['cpu_per_wall']:.2f}", f"{row['others_share']:.0%}", f"{row['minflt_per_image']:.0f}",
        ])  # fmt: skip
    out += table(["model", "batch", "runtime / path", "images/s", "IQR", "ratio to torch", "% of peak",
                  "% measured", "per CPU-s", "CPU/wall", "others", "page faults/image"],
                 "lrlrrrrrrrrr", lines)  # fmt: skip
    out.append("")
    return out


def _quiet_table(tp: dict[str, Any]) -> list[str]:
    """The same figures from quiet samples only, or a line saying that every sample, or none, was quiet.

    Args:
        tp: The throughput section's results.

    Returns:
        Markdown lines.
    """
    rows = [r for r in tp["summary"]["rows"] if r["model"] != "apps_vgg16"]
    quiet_rows = [r for r in rows if "quiet_images_per_s" in r]
    if all(r.get("quiet_images_per_s", {}).get("n") == r["images_per_s"]["n"] for r in rows):
        return [f"Every sample was quiet (other processes used < {QUIET_SHARE:.0%} of the machine).", ""]
    if not quiet_rows:
        return [f"No sample was quiet (other processes used >= {QUIET_SHARE:.0%} of the machine throughout).", ""]
    out = [
        f"The same, only samples during which other processes used < {QUIET_SHARE:.0%} of the machine "
        "(ratios: only rounds where both samples were quiet); n = number of such samples.",
        "",
    ]
    lines = []
    for row in quiet_rows:
        q = row["quiet_images_per_s"]
        if "quiet_ratio_to_torch" in row:
            ratio = f"{rng(row['quiet_ratio_to_torch'])} (n={row['quiet_ratio_to_torch']['n']})"
        else:
            ratio = "1" if row["worker"] == tp["workers"][0]["label"] else "-"
        lines.append(
            [row["model"], row["batch"], _label(row), rng(q), q["n"], ratio, f"{row['quiet_peak_fraction']:.0%}"]
        )
    out += table(
        ["model", "batch", "runtime / path", "images/s quiet", "n", "ratio to torch, quiet", "% of peak"],
        "lrlrrrr",
        lines,
    )
    out.append("")
    return out


def _apps_table(tp: dict[str, Any]) -> list[str]:
    """vgg_keras' VGG16 against keras.applications' (nothing when that comparison was not run).

    Args:
        tp: The throughput section's results.

    Returns:
        Markdown lines.
    """
    apps = [r for r in tp["summary"]["rows"] if r["model"] == "apps_vgg16"]
    if not apps:
        return []
    out = [
        "vgg_keras VGG16 (adaptive pool + dropout head) against keras.applications.VGG16, same rounds: "
        "ratio = vgg_keras / keras.applications per round.",
        "",
    ]
    mine = {
        (r["batch"], r["path"]): r for r in tp["summary"]["rows"] if r["model"] == "vgg16" and r["worker"] == "keras"
    }
    lines = []
    for row in apps:
        m = mine.get((row["batch"], row["path"]))
        lines.append([row["batch"], row["path"], rng(m["images_per_s"]) if m else "-", rng(row["images_per_s"]),
                      rng(row["vgg_keras_over_apps"], ".3f")])  # fmt: skip
    out += table(["batch", "path", "vgg_keras images/s", "keras.applications images/s", "ratio"], "rlrrr", lines)
    out.append("")
    return out


main = command(
    __doc__,
    {"throughput": run_throughput},
    render,
    [
        Option("--rounds", "throughput rounds", 9, 2),
        Option("--target-seconds", "approximate duration of one sample", 0.5, 0.15, float),
        Option("--batches", "batch sizes", list(BATCHES), [1], many=True),
    ],
    {"--diagnose": "add torch/TF variants (threads, layout, allocator, oneDNN) to explain differences"},
)


if __name__ == "__main__":
    sys.exit(main())

"""CPU speed of vgg_keras on every Keras backend and precision, side by side with torch eager; load memory.

Run from the repository root::

    uv run python -m benchmarks.backends                  # vgg11_bn and vgg16, batch 1 and 8, fp32 and bf16
    uv run python -m benchmarks.backends --quick          # 2 rounds, vgg11_bn only, no load memory
    uv run python -m benchmarks.backends --precision fp32 bf16 fp16 --out docs/backends_benchmark.json

Two questions, answered in one run:

1. **Throughput** (images/s at 224x224) of torchvision's VGG in eager mode
   (the reference: ``no_grad``, NCHW, fp32; also in torch's
   ``channels_last`` memory format, under ``torch.compile`` and under ``torch.autocast`` bf16/fp16)
   against the same weights in vgg_keras: on Keras' torch backend
   (``predict_on_batch``, the same with ``compile(jit_compile=True)``, which
   Keras runs through ``torch.compile``, and a direct call under ``inference_mode``), on JAX
   (``predict_on_batch``: ``jax.jit``) and on TensorFlow (direct call, which runs a traced graph, and
   the same op by op with ``run_eagerly``,
   ``predict_on_batch`` and XLA; ``--onednn-off`` adds a worker with
   ``TF_ENABLE_ONEDNN_OPTS=0``), each in fp32 and under the Keras policies
   ``mixed_bfloat16`` / ``mixed_float16`` (``--precision``). A worker process
   per framework (:mod:`benchmarks.backend_cells`; a process holds one
   backend) holds its cells; the cells take turns in rounds, the order
   reversed every other round, so load from other processes reaches every
   cell alike. Tables give the median over rounds, the ratio to torch eager
   fp32 (and to torch's autocast at the same precision) taken per round, and
   the CPU other processes used meanwhile, as a share of all cores.
2. **Peak memory of loading** ``vgg_keras.VGG16(weights=PATH)`` on each
   backend (skipped with ``--no-load``): a fresh process imports Keras,
   records its RSS, builds and loads, runs one image, and reports its peak
   RSS (``ru_maxrss``) above the imports. The weights file holds 528 MiB.

The CPU's model name and its AVX-512/AMX flags are printed with the tables:
the figures hold for that CPU only (oneDNN is on by default only where
TensorFlow finds AVX-512 VNNI/BF16/AMX; bf16 runs natively only with
AVX-512 BF16 or AMX).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.backend_cells import GROUPS
from benchmarks.children import check_output
from benchmarks.cpu import read_cpuinfo
from benchmarks.harness import ROOT, child_env, system_busy_seconds, table
from parity.cli import log
from parity.core.atomic import write_atomic

#: The cell every ratio is taken against.
REFERENCE = "torch eager fp32"
#: torch's own cell at each reduced precision (the "vs torch, same precision" column).
SAME_PRECISION = {"bf16": "torch eager bf16 autocast", "fp16": "torch eager fp16 autocast"}


_LOAD = r"""
import os, resource, sys
import numpy as np
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
import keras
import vgg_keras
keras.ops.zeros((1,))  # the backend's runtime started
base = rss_mib()
model = vgg_keras.VGG16(weights=sys.argv[1], classifier_activation=None)
out = keras.ops.convert_to_numpy(model.predict_on_batch(np.zeros((1, 224, 224, 3), np.float32)))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{base:.0f} {peak:.0f} {rss_mib():.0f}")
"""


def cpu_description() -> str:
    """The CPU's model name, CPU count and AVX-512/AMX flags."""
    cpu = read_cpuinfo()
    flags = sorted(f for f in cpu.flags if f.startswith(("avx512", "amx")))
    return f"{cpu.model_name}, {cpu.cores} logical CPUs, flags: {' '.join(flags) or 'no AVX-512'}"


def _env(backend: str, onednn: str) -> dict[str, str]:
    """The environment of a child on Keras ``backend`` (``""``: TensorFlow, unused), with oneDNN set if ``onednn``."""
    extra = {"TF_ENABLE_ONEDNN_OPTS": onednn} if onednn else {}
    return child_env(ROOT, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=backend or "tensorflow", **extra)


def _start(group: str, arch: str, precisions: Sequence[str]) -> tuple[subprocess.Popen[str], list[str]]:
    """Starts one worker; returns it and the names of its cells."""
    log(f"starting: {group} ({arch})", quiet=False)
    backend, onednn = GROUPS[group]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.backend_cells", group, arch, *precisions],
        cwd=ROOT, env=_env(backend, onednn), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"worker {group!r} failed to start")
    return proc, json.loads(line)["cells"]


def _ask(proc: subprocess.Popen[str], cell: str, batch: int, calls: int) -> dict[str, float]:
    """One timed sample of ``cell`` in its worker, with the CPU other processes used meanwhile."""
    assert proc.stdin is not None and proc.stdout is not None
    busy0 = system_busy_seconds()
    proc.stdin.write(json.dumps({"cell": cell, "batch": batch, "calls": calls}) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"cell {cell!r} failed at batch {batch}")
    got = json.loads(line)
    busy = system_busy_seconds() - busy0
    cores = os.cpu_count() or 1
    # The busy time includes the untimed warm-up of a first request; the share is a bound then.
    got["others_share"] = max(0.0, busy - got["cpu_s"]) / (max(got["wall_s"], 1e-9) * cores)
    return got


def run_throughput(
    arch: str, batches: Sequence[int], rounds: int, calls: int, precisions: Sequence[str], groups: Sequence[str]
) -> list[dict[str, Any]]:
    """Times every cell of every worker group at each batch size, in interleaved rounds.

    Returns:
        One row per (batch, cell).
    """
    workers = [_start(group, arch, precisions) for group in groups]
    cells = [(cell, proc) for proc, names in workers for cell in names]
    rows = []
    try:
        for batch in batches:
            for cell, proc in cells:  # warm-up and compilation at this batch, untimed
                _ask(proc, cell, batch, 1)
            samples: dict[str, list[dict[str, float]]] = {cell: [] for cell, _ in cells}
            for r in range(rounds):
                for cell, proc in cells if r % 2 == 0 else cells[::-1]:
                    samples[cell].append(_ask(proc, cell, batch, calls))
                log(f"{arch} batch {batch}: round {r + 1}/{rounds} done", quiet=False)
            rows += _rows(arch, batch, samples)
    finally:
        for proc, _ in workers:
            proc.kill()
            proc.wait()
    return rows


def _rows(arch: str, batch: int, samples: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """Medians and per-round ratios of one batch size's samples."""
    speed = {cell: [batch / s["s_per_call"] for s in values] for cell, values in samples.items()}
    rows = []
    for cell, values in speed.items():
        precision = next((p for p in ("bf16", "fp16") if p in cell.replace(",", " ").split()), "fp32")
        same = SAME_PRECISION.get(precision, REFERENCE)
        row = {"arch": arch, "batch": batch, "cell": cell, "precision": precision,
               "images_per_s": statistics.median(values), "min": min(values), "max": max(values),
               "vs_torch": _ratio(values, speed.get(REFERENCE)),
               "vs_torch_same_precision": _ratio(values, speed.get(same)),
               "others_share": statistics.median(s["others_share"] for s in samples[cell]),
               "samples_images_per_s": values}  # fmt: skip
        rows.append(row)
    return rows


def _ratio(values: list[float], reference: list[float] | None) -> float | None:
    """The median over rounds of ``values / reference``; ``None`` without that reference."""
    if not reference:
        return None
    return statistics.median(v / ref for v, ref in zip(values, reference, strict=True))


def run_load_memory(path: Path) -> list[dict[str, Any]]:
    """Peak RSS of ``VGG16(weights=PATH)`` per backend, each in a fresh process."""
    rows = []
    for backend in ("tensorflow", "jax", "torch"):
        stdout = check_output(f"load on {backend}", [sys.executable, "-c", _LOAD, os.fspath(path)], _env(backend, ""))
        base, peak, after = (float(v) for v in stdout.split()[-3:])
        rows.append({"backend": backend, "imports_mib": base, "peak_mib": peak, "peak_above_imports_mib": peak - base,
                     "after_mib": after})  # fmt: skip
    return rows


def markdown(results: dict[str, Any]) -> str:
    """The throughput tables (one per model and batch size) and the load table."""
    lines = [f"CPU: {results['cpu']}"]
    for arch in results["archs"]:
        for batch in results["batches"]:
            rows = [r for r in results["throughput"] if r["arch"] == arch and r["batch"] == batch]
            lines += ["", f"{arch} at 224x224, batch {batch}, images/s, median of {results['rounds']} rounds:", ""]
            lines += table(
                ["cell", "images/s", "range", "vs torch eager fp32", "vs torch, same precision", "others' CPU"],
                "lrrrrr",
                ([r["cell"], f"{r['images_per_s']:.2f}", f"{r['min']:.2f}–{r['max']:.2f}", _x(r["vs_torch"]),
                  _x(r["vs_torch_same_precision"]), f"{r['others_share']:.0%}"] for r in rows),
            )  # fmt: skip
    if results.get("load"):
        lines += ["", "Loading `vgg_keras.VGG16(weights=PATH)` (528 MiB of weights), peak RSS:", ""]
        lines += table(["backend", "after imports (MiB)", "peak (MiB)", "peak above imports (MiB)"], "llll", (
            [row["backend"], f"{row['imports_mib']:.0f}", f"{row['peak_mib']:.0f}",
             f"{row['peak_above_imports_mib']:.0f}"]
            for row in results["load"]
        ))  # fmt: skip
    return "\n".join(lines)


def _x(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio:.2f}x"


def main(argv: Sequence[str] | None = None) -> int:
    """Measures both questions and prints the tables.

    Args:
        argv: Arguments without the program name.

    Returns:
        Exit code.

    Examples:
        >>> main(["--quick", "--archs", "vgg11_bn", "--precision", "fp32"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["vgg11_bn", "vgg16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16", "fp16"], default=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1, help="timed batches per cell per round")
    parser.add_argument("--onednn-off", action="store_true", help="add a TensorFlow worker with oneDNN off")
    parser.add_argument("--no-load", action="store_true", help="skip the load-memory table")
    parser.add_argument("--quick", action="store_true", help="2 rounds, vgg11_bn, no load table")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.archs, args.no_load = 2, ["vgg11_bn"], True
    groups = [g for g in GROUPS if args.onednn_off or g != "keras-tensorflow-onednn-off"]
    results: dict[str, Any] = {"cpu": cpu_description(), "archs": args.archs, "batches": args.batches,
                               "precisions": args.precision, "rounds": args.rounds, "calls": args.calls,
                               "date": time.strftime("%Y-%m-%d"), "throughput": []}  # fmt: skip
    for arch in args.archs:
        results["throughput"] += run_throughput(arch, args.batches, args.rounds, args.calls, args.precision, groups)
    if not args.no_load:
        results["load"] = _load_table()
    results["max_rss_self_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(markdown(results))
    if args.out is not None:  # written whole or not at all
        write_atomic(args.out, json.dumps(results, indent=2) + "\n")
    log(f"(measured {results['date']})", quiet=False)
    return 0


def _load_table() -> list[dict[str, Any]]:
    """Converts random VGG16 weights to a temporary file and measures loading it on each backend."""
    with tempfile.TemporaryDirectory(prefix="vgg-bench-") as tmp:
        path = Path(tmp) / "vgg16.weights.h5"
        convert = [sys.executable, "-m", "parity.convert", "vgg16", "--init", "random-all", "--output",
                   os.fspath(path), "--quiet", "--no-verify"]  # fmt: skip
        subprocess.run(convert, cwd=ROOT, env=_env("", ""), check=True)
        return run_load_memory(path)


if __name__ == "__main__":
    sys.exit(main())

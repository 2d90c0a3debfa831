"""CPU speed and load memory of vgg_keras on each Keras backend, side by side with torch eager.

Run from the repository root::

    uv run python -m benchmarks.backends                 # vgg16, batch 8, 224x224, 5 rounds
    uv run python -m benchmarks.backends --quick         # 2 rounds, fewer timed calls
    uv run python -m benchmarks.backends --out docs/backends_benchmark.json

Two questions, answered in one run:

1. **Throughput** (images/s, fp32) of torchvision's VGG in eager mode (the
   reference) against the same weights in vgg_keras on TensorFlow (direct call
   and XLA, with oneDNN on and off: ``TF_ENABLE_ONEDNN_OPTS``), on JAX
   (``predict_on_batch``, i.e. ``jax.jit``) and on Keras' torch backend
   (``predict_on_batch``, eager torch under ``no_grad``). Every cell is a
   long-lived worker process (a process holds one backend; oneDNN is chosen at
   TensorFlow's import). The workers take turns in rounds, the order reversed
   every other round, so load from other processes reaches every cell alike;
   the table gives the median over rounds and the ratio to torch eager taken
   per round.
2. **Peak memory of loading** ``vgg_keras.VGG16(weights=PATH)`` on each
   backend: a fresh process imports Keras, records its RSS, builds and loads,
   runs one image, and reports its peak RSS (``ru_maxrss``) above the
   imports. The weights file holds 528 MiB.

The CPU's model name and its AVX-512 flags are printed with the tables: the
figures hold for that CPU only (oneDNN is on by default only where TensorFlow
finds AVX-512 VNNI/BF16/AMX).
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

from benchmarks.children import check_output
from benchmarks.cpu import read_cpuinfo
from benchmarks.harness import ROOT, child_env, table
from parity.cli import log
from parity.core.atomic import write_atomic

#: (cell name, Keras backend or "torch-eager", TF_ENABLE_ONEDNN_OPTS, how the Keras model is run)
CELLS: tuple[tuple[str, str, str, str], ...] = (
    ("torch eager (torchvision)", "reference", "", "torch"),
    ("keras tensorflow, direct call, oneDNN on", "tensorflow", "1", "call"),
    ("keras tensorflow, XLA, oneDNN on", "tensorflow", "1", "xla"),
    ("keras tensorflow, direct call, oneDNN off", "tensorflow", "0", "call"),
    ("keras tensorflow, XLA, oneDNN off", "tensorflow", "0", "xla"),
    ("keras jax, jit (predict_on_batch)", "jax", "", "predict"),
    ("keras torch backend (predict_on_batch)", "torch", "", "predict"),
)

_WORKER = r"""
import json, os, sys, time
import numpy as np
backend, how, arch, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if how == "torch":
    import torch, torchvision
    from parity.core.config import PRESETS
    from parity.convert.random_weights import randomized_state_dict
    model = torchvision.models.get_model(arch, weights=None, init_weights=False).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in randomized_state_dict(PRESETS[arch], 0).items()})
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((batch, 3, 224, 224), dtype=np.float32))
    def step():
        with torch.no_grad():
            model(x)
else:
    import keras
    import vgg_keras
    from parity.core.config import PRESETS
    from parity.convert.weight_arrays import assign_keras_weights, convert_state_dict
    from parity.convert.random_weights import randomized_state_dict
    config = PRESETS[arch]
    model = vgg_keras.build_vgg(config, classifier_activation=None)
    assign_keras_weights(model, convert_state_dict(randomized_state_dict(config, 0), config))
    x = np.random.default_rng(1).standard_normal((batch, 224, 224, 3), dtype=np.float32)
    if how == "call":
        step = lambda: np.asarray(model(x, training=False))
    elif how == "xla":
        import tensorflow as tf
        fn = tf.function(lambda t: model(t, training=False), jit_compile=True)
        xt = tf.constant(x)
        step = lambda: fn(xt).numpy()
    else:
        step = lambda: keras.ops.convert_to_numpy(model.predict_on_batch(x))
for _ in range(3):  # warm-up: tracing, compilation, allocator
    step()
print("ready", flush=True)
for line in sys.stdin:
    calls = int(line)
    started = time.perf_counter()
    for _ in range(calls):
        step()
    print(json.dumps({"s_per_call": (time.perf_counter() - started) / calls}), flush=True)
"""

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
    """The environment of a child on ``backend`` (``"reference"``: TensorFlow), with oneDNN set if ``onednn``."""
    extra = {"TF_ENABLE_ONEDNN_OPTS": onednn} if onednn else {}
    return child_env(
        ROOT, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow" if backend == "reference" else backend, **extra
    )


def run_throughput(arch: str, batch: int, rounds: int, calls: int) -> list[dict[str, Any]]:
    """Starts one worker per cell, then times ``calls`` batches per cell per round."""
    workers = []
    for name, backend, onednn, how in CELLS:
        log(f"starting: {name}", quiet=False)
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, backend, how, arch, str(batch)],
            cwd=ROOT, env=_env(backend, onednn), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        if proc.stdout is None or proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"worker {name!r} failed to start")
        workers.append((name, proc))
    samples: dict[str, list[float]] = {name: [] for name, _ in workers}
    try:
        for r in range(rounds):
            order = workers if r % 2 == 0 else workers[::-1]
            for name, proc in order:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(f"{calls}\n")
                proc.stdin.flush()
                samples[name].append(batch / json.loads(proc.stdout.readline())["s_per_call"])
            log(f"round {r + 1}/{rounds} done", quiet=False)
    finally:
        for _, proc in workers:
            proc.kill()
    reference = samples[CELLS[0][0]]
    rows = []
    for name, values in samples.items():
        ratios = [v / ref for v, ref in zip(values, reference, strict=True)]
        rows.append({"cell": name, "images_per_s": statistics.median(values), "min": min(values), "max": max(values),
                     "vs_torch": statistics.median(ratios)})  # fmt: skip
    return rows


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
    """The two tables."""
    lines = [f"CPU: {results['cpu']}", "", f"Throughput, {results['arch']} at 224x224, batch {results['batch']}, fp32, "
             f"median of {results['rounds']} rounds:", ""]  # fmt: skip
    lines += table(["cell", "images/s", "range", "vs torch eager"], "llll", (
        [row["cell"], f"{row['images_per_s']:.1f}", f"{row['min']:.1f}–{row['max']:.1f}", f"{row['vs_torch']:.2f}x"]
        for row in results["throughput"]
    ))  # fmt: skip
    lines += ["", "Loading `vgg_keras.VGG16(weights=PATH)` (528 MiB of weights), peak RSS:", ""]
    lines += table(["backend", "after imports (MiB)", "peak (MiB)", "peak above imports (MiB)"], "llll", (
        [row["backend"], f"{row['imports_mib']:.0f}", f"{row['peak_mib']:.0f}", f"{row['peak_above_imports_mib']:.0f}"]
        for row in results["load"]
    ))  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Measures both questions and prints the tables.

    Args:
        argv: Arguments without the program name.

    Returns:
        Exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="vgg16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3, help="timed batches per cell per round")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 call")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.calls = 2, 1
    results: dict[str, Any] = {"cpu": cpu_description(), "arch": args.arch, "batch": args.batch, "rounds": args.rounds}
    results["throughput"] = run_throughput(args.arch, args.batch, args.rounds, args.calls)
    with tempfile.TemporaryDirectory(prefix="vgg-bench-") as tmp:
        path = Path(tmp) / "vgg16.weights.h5"
        convert = [
            sys.executable,
            "-m",
            "parity.convert",
            "vgg16",
            "--init",
            "random-all",
            "--output",
            os.fspath(path),
            "--quiet",
            "--no-verify",
        ]
        subprocess.run(convert, cwd=ROOT, env=_env("reference", ""), check=True)
        results["load"] = run_load_memory(path)
    results["max_rss_self_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(markdown(results))
    if args.out is not None:  # written whole or not at all
        write_atomic(args.out, json.dumps(results, indent=2) + "\n")
    log(f"(measured {time.strftime('%Y-%m-%d')})", quiet=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

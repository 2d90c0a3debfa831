"""Speed, size and memory of exported VGGs beside the Keras model and torch eager.

``python -m benchmarks.export_speed --weights FILE.weights.h5 --saved-model DIR --tflite A.tflite B.tflite ...``

Every runtime is measured in its own child process (so its peak RSS is its
own): load, one warm-up call, then latency at batch 1 (median of
``--repeats`` calls) and throughput at batch 8 (images per second, best of
``--repeats // 2`` runs). A TFLite file has a fixed batch of 1 (the converter
cannot keep a dynamic batch through the adaptive pool), so its batch-8 figure
is 8 calls in a row. Threads: torch and TensorFlow use their defaults (all
cores); TFLite gets ``num_threads`` = the core count.

Prints the CPU model and a Markdown table; ``--json PATH`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.children import check_output
from benchmarks.cpu import read_cpuinfo
from benchmarks.harness import ROOT, child_env, table
from parity.cli import log
from parity.core.atomic import write_atomic

CHILD = r"""
import json, os, resource, sys, time
kind, path, weights, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import numpy as np
import torch, torchvision  # before TensorFlow
rng = np.random.default_rng(0)
x8 = rng.standard_normal((8, 3, 224, 224), dtype=np.float32)
t0 = time.perf_counter()
if kind == "torch eager":
    import vgg_torch
    from parity.core.config import VGGConfig
    from parity.convert.to_torch import torch_state_dict_from_keras
    from parity.core.h5file import read_layer_arrays
    from parity.core.weights_file import read_record
    cfg = VGGConfig.from_dict(read_record(weights)["config"])
    model = vgg_torch.build_vgg(cfg, init_weights=False).eval()
    state = torch_state_dict_from_keras(read_layer_arrays(weights), cfg, True)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    def run(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
else:
    import tensorflow as tf
    x8 = np.ascontiguousarray(x8.transpose(0, 2, 3, 1))
    if kind == "keras":
        import vgg_keras
        from parity.core.config import VGGConfig
        from parity.core.weights_file import read_record
        cfg = VGGConfig.from_dict(read_record(weights)["config"])
        model = vgg_keras.build_vgg(cfg, weights=weights, classifier_activation=None)
        fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        run = lambda x: fn(tf.constant(x)).numpy()
    elif kind == "saved_model":
        loaded = tf.saved_model.load(path)
        run = lambda x: loaded.serve(tf.constant(x)).numpy()
    else:
        it = tf.lite.Interpreter(model_path=path, num_threads=os.cpu_count())
        it.allocate_tensors()
        inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        def run(x):
            res = []
            for i in range(len(x)):
                it.set_tensor(inp, x[i : i + 1]); it.invoke(); res.append(it.get_tensor(out).copy())
            return np.concatenate(res)
load_s = time.perf_counter() - t0
run(x8[:1])
lat = []
for _ in range(repeats):
    t = time.perf_counter(); run(x8[:1]); lat.append(time.perf_counter() - t)
thr = []
for _ in range(max(1, repeats // 2)):
    t = time.perf_counter(); run(x8); thr.append(8 / (time.perf_counter() - t))
print(json.dumps({"load_s": load_s, "latency_ms": 1000 * float(np.median(lat)), "throughput": max(thr),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), its core count and whether AVX-512 is there."""
    cpu = read_cpuinfo()
    name = cpu.model_name if cpu.model_name != "unknown" else platform.processor() or "unknown CPU"
    flags = ("AVX-512" if "avx512f" in cpu.flags else "no AVX-512") if cpu.flags else "flags unknown"
    return f"{name}, {os.cpu_count()} vCPUs, {flags}"


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(kind: str, path: Path | None, weights: Path, repeats: int) -> dict[str, Any]:
    """Runs one runtime in a child process and returns its figures."""
    argv = [sys.executable, "-c", CHILD, kind, os.fspath(path or ""), os.fspath(weights), str(repeats)]
    stdout = check_output(kind, argv, child_env(ROOT, TF_CPP_MIN_LOG_LEVEL="3"))
    return json.loads(stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Measures every runtime given and prints the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.export_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, type=Path, help="the converted .weights.h5 the exports came from")
    parser.add_argument("--saved-model", type=Path, help="a SavedModel folder written by python -m parity.export")
    parser.add_argument(
        "--tflite", nargs="*", type=Path, default=[], help=".tflite files written by python -m parity.export"
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    runs: list[tuple[str, str, Path | None, Path]] = [
        ("torch eager (fp32)", "torch eager", None, args.weights),
        ("Keras, tf.function (fp32)", "keras", None, args.weights),
    ]
    if args.saved_model:
        runs.append(("SavedModel (fp32)", "saved_model", args.saved_model, args.saved_model))
    for f in args.tflite:
        quant = (
            json.loads(Path(f"{f}.json").read_text())["export"]["quantization"] if Path(f"{f}.json").is_file() else "?"
        )
        runs.append((f"TFLite ({quant})", "tflite", f, f))
    cpu = cpu_model()
    print(f"CPU: {cpu}", flush=True)
    rows = []
    for label, kind, path, sized in runs:
        started = time.perf_counter()
        figures = measure(kind, path, args.weights, args.repeats)
        figures.update(label=label, size_mb=_size(sized) / 1e6)
        rows.append(figures)
        log(f"  {label}: {figures} ({time.perf_counter() - started:.0f} s)", quiet=False)
    header = ["runtime", "file size", "latency, batch 1", "throughput, batch 8", "peak RSS", "load"]
    print("\n".join(table(header, "llllll", (
        [r["label"], f"{r['size_mb']:.0f} MB", f"{r['latency_ms']:.0f} ms", f"{r['throughput']:.1f} img/s",
         f"{r['peak_rss_mb'] / 1024:.2f} GB", f"{r['load_s']:.1f} s"] for r in rows
    ))))  # fmt: skip
    if args.json:
        write_atomic(args.json, json.dumps({"cpu": cpu, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

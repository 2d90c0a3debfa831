"""The deployment runtimes side by side on the CPU: torch eager, TensorFlow XLA, onnxruntime, OpenVINO.

Run from the repository root::

    uv run python -m benchmarks.runtimes                      # vgg16, 224x224, batch 1 and 8, 2 rounds
    uv run python -m benchmarks.runtimes --rounds 3 --out docs/runtimes_benchmark.json

The cells, all fp32 on the same random weights (every tensor random, seed 0):

- torch eager: torchvision's model under ``no_grad`` (the reference);
- Keras on TensorFlow, XLA: ``vgg_keras`` in a ``tf.function(jit_compile=True)``, oneDNN as TensorFlow
  chooses;
- onnxruntime: the file ``--format onnx`` writes (``parity.export.onnx_graph``), CPU provider, every graph
  optimization;
- OpenVINO: the IR ``--format openvino`` writes, compiled by the CPU plugin with ``INFERENCE_PRECISION_HINT``
  ``f32``; and the same IR at the plugin's default precision, which is bf16 on CPUs with native bf16 (shown
  for its speed: its error is outside the fp32 bound);
- Keras on OpenVINO: ``vgg_keras`` with ``KERAS_BACKEND=openvino``, ``predict_on_batch`` (fp32,
  :mod:`vgg_keras.openvino_precision`).

Each cell runs in a fresh child process of its own, one at a time (the machine this was written for has
24 GiB shared with other work: six full-size VGGs at once do not fit), for ``--rounds`` rounds, the order
reversed every other round. A child loads, warms up, then times batch 1 (latency: median of ``--repeats``
calls) and batch 8 (throughput: median of ``--repeats // 2`` calls), recording the CPU other processes used
meanwhile, and saves its batch-8 output; the parent sets that against torch's (max |diff| / max |torch|).
Ratios to torch eager are taken per round, then the median over rounds. Every runtime uses its default
threads (one per core). The CPU is named with the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.backends import cpu_description
from benchmarks.children import check_output
from benchmarks.harness import ROOT, child_env, table
from parity.cli import log
from parity.core.atomic import write_atomic

__all__ = ["CELLS", "main"]

#: (name, kind, Keras backend of the child)
CELLS: tuple[tuple[str, str, str], ...] = (
    ("torch eager (torchvision)", "torch", "tensorflow"),
    ("Keras on TensorFlow, XLA", "xla", "tensorflow"),
    ("onnxruntime (ONNX file)", "onnxruntime", "tensorflow"),
    ("OpenVINO runtime (IR), fp32", "openvino", "tensorflow"),
    ("OpenVINO runtime (IR), plugin default precision", "openvino-default", "tensorflow"),
    ("Keras on OpenVINO, predict_on_batch", "keras-openvino", "openvino"),
)
BATCHES = (1, 8)

_CHILD = r"""
import json, os, sys, time
kind, arch, folder, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import numpy as np
if kind == "torch":
    import torch, torchvision
from parity.convert.random_weights import randomized_state_dict
from parity.core.config import PRESETS

def busy():
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")

config = PRESETS[arch]
nhwc = kind in ("xla", "keras-openvino")
if kind == "torch":
    model = torchvision.models.get_model(arch, weights=None, init_weights=False).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in randomized_state_dict(config, 0).items()})
    def run(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
elif kind in ("xla", "keras-openvino"):
    import keras
    import vgg_keras
    from parity.convert.weight_arrays import assign_keras_weights, convert_state_dict
    model = vgg_keras.build_vgg(config, classifier_activation=None)
    assign_keras_weights(model, convert_state_dict(randomized_state_dict(config, 0), config))
    if kind == "xla":
        import tensorflow as tf
        fn = tf.function(lambda t: model(t, training=False), jit_compile=True)
        run = lambda x: fn(tf.constant(x)).numpy()
    else:
        run = lambda x: keras.ops.convert_to_numpy(model.predict_on_batch(x))
elif kind == "onnxruntime":
    from parity.export.check import onnx_session
    session = onnx_session(os.path.join(folder, "m.onnx"))
    run = lambda x: session.run(None, {"images": x})[0]
else:
    import openvino as ov
    from parity.export.openvino_ir import compiled_model
    if kind == "openvino":
        compiled = compiled_model(os.path.join(folder, "m.xml"))
    else:
        compiled = ov.Core().compile_model(os.path.join(folder, "m.xml"), "CPU")
    request = compiled.create_infer_request()
    run = lambda x: request.infer({0: x})[0].copy()
figures = {}
for batch, calls in ((1, repeats), (8, max(2, repeats // 2))):
    x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    if nhwc:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    out = run(x)  # warm-up: compilation for this shape, allocation
    walls, others = [], 0.0
    b0, c0 = busy(), time.process_time()
    for _ in range(calls):
        t = time.perf_counter(); out = run(x); walls.append(time.perf_counter() - t)
    others = max(0.0, busy() - b0 - (time.process_time() - c0))
    share = others / (sum(walls) * os.cpu_count())
    figures[str(batch)] = {"s_per_call": float(np.median(walls)), "others_share": share}
    if batch == 8:
        np.save(os.path.join(folder, kind + ".npy"), np.asarray(out, np.float32))
if kind.startswith("openvino") or kind == "keras-openvino":  # what the CPU plugin computes in
    compiled = model.ov_compiled_model if kind == "keras-openvino" else compiled
    figures["precision"] = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
else:
    figures["precision"] = "f32"
print(json.dumps(figures))
"""


def _write_files(arch: str, folder: Path) -> None:
    """The ONNX file and the OpenVINO IR of ``arch``'s random weights (seed 0), NCHW, any batch and size."""
    from parity.convert.random_weights import randomized_state_dict
    from parity.core.config import PRESETS
    from parity.export.onnx_graph import write_onnx
    from parity.export.openvino_ir import write_openvino

    config, state = PRESETS[arch], randomized_state_dict(PRESETS[arch], 0)
    options = {"include_top": True, "data_format": "channels_first", "size": (224, 224)}
    write_onnx(folder / "m.onnx", config, state, **options)
    write_openvino(folder / "m.xml", config, state, **options)


def run_rounds(arch: str, rounds: int, repeats: int, folder: Path) -> dict[str, Any]:
    """Every cell once per round, each in a fresh child; the per-round figures, and the outputs' differences."""
    import numpy as np

    samples: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in CELLS}
    for r in range(rounds):
        for name, kind, backend in CELLS if r % 2 == 0 else CELLS[::-1]:
            env = child_env(ROOT, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
            argv = [sys.executable, "-c", _CHILD, kind, arch, os.fspath(folder), str(repeats)]
            figures = json.loads(check_output(name, argv, env).strip().splitlines()[-1])
            samples[name].append(figures)
            log(f"round {r + 1}/{rounds}: {name}: batch 1 {1000 * figures['1']['s_per_call']:.0f} ms, batch 8 "
                f"{8 / figures['8']['s_per_call']:.2f} images/s", quiet=False)  # fmt: skip
    reference = np.load(folder / "torch.npy")
    differences = {
        name: float(np.max(np.abs(np.load(folder / f"{kind}.npy") - reference)) / np.max(np.abs(reference)))
        for name, kind, _ in CELLS
    }
    return {"samples": samples, "max_rel_vs_torch": differences}


def _rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per cell: median latency and throughput over rounds, their per-round ratios to torch, others' CPU."""
    samples = results["samples"]
    torch_runs = samples[CELLS[0][0]]
    rows = []
    for name, _, _ in CELLS:
        runs = samples[name]
        latency = [1000 * s["1"]["s_per_call"] for s in runs]
        throughput = [8 / s["8"]["s_per_call"] for s in runs]
        rows.append({
            "cell": name,
            "precision": runs[0]["precision"],
            "latency_ms": statistics.median(latency),
            "latency_vs_torch": statistics.median(
                t["1"]["s_per_call"] / s["1"]["s_per_call"] for s, t in zip(runs, torch_runs, strict=True)),
            "throughput": statistics.median(throughput),
            "throughput_vs_torch": statistics.median(
                t["8"]["s_per_call"] / s["8"]["s_per_call"] for s, t in zip(runs, torch_runs, strict=True)),
            "others_share": statistics.median(s[b]["others_share"] for s in runs for b in ("1", "8")),
            "max_rel_vs_torch": results["max_rel_vs_torch"][name],
        })  # fmt: skip
    return rows


def markdown(results: dict[str, Any]) -> str:
    """The table."""
    lines = [f"CPU: {results['cpu']}", "", f"{results['arch']} at 224x224, fp32 weights, median of "
             f"{results['rounds']} rounds; ratios > 1: faster than torch eager", ""]  # fmt: skip
    lines += table(
        ["runtime", "computes in", "batch 1 (ms)", "vs torch", "batch 8 (images/s)", "vs torch",
         "max abs diff / max abs torch", "others' CPU"],
        "llrrrrrr",
        ([r["cell"], r["precision"], f"{r['latency_ms']:.0f}", f"{r['latency_vs_torch']:.2f}x",
          f"{r['throughput']:.2f}", f"{r['throughput_vs_torch']:.2f}x", f"{r['max_rel_vs_torch']:.1e}",
          f"{r['others_share']:.0%}"] for r in results["rows"]),
    )  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Writes the files, runs the rounds and prints the table.

    Args:
        argv: Arguments without the program name.

    Returns:
        Exit code.

    Examples:
        >>> main(["--rounds", "1", "--repeats", "4"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runtimes", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg16")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=6, help="timed calls at batch 1 (half as many at batch 8)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"cpu": cpu_description(), "arch": args.arch, "rounds": args.rounds}
    log(f"CPU: {results['cpu']}", quiet=False)
    with tempfile.TemporaryDirectory(prefix="vgg-runtimes-") as tmp:
        folder = Path(tmp)
        _write_files(args.arch, folder)
        results.update(run_rounds(args.arch, args.rounds, args.repeats, folder))
    results["rows"] = _rows(results)
    results["date"] = time.strftime("%Y-%m-%d")
    print(markdown(results))
    if args.out is not None:  # written whole or not at all
        write_atomic(args.out, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What does ``--format onnx`` cost in memory, and how fast is onnxruntime beside torch eager?

``python -m benchmarks.onnx_export [--arch vgg16] [--checkpoint FILE.pth] [--repeats 10] [--json PATH]``

Memory: ``python -m parity.export ARCH --checkpoint FILE --format onnx`` (write,
then the whole verification: torch on every input set, onnxruntime at two
batches and two sizes, the per-block model) runs as a child; its peak RSS
(``wait4``'s ``ru_maxrss``) is set against a child that only imports what the
export imports (torch, torchvision, onnx, onnxruntime, numpy) and against the
weights' size. Without ``--checkpoint``, a checkpoint of random tensors (seed
0) is written first.

Speed: torch eager (torchvision's model on the checkpoint) and onnxruntime (the
file just written; CPU provider, every graph optimization) each in their own
child: load time, one warm-up call, latency at batch 1 (median of
``--repeats``), throughput at batch 8 (best of ``--repeats // 2``), peak RSS.
Both use their default threads (one per core). One run of each, 224 x 224,
fp32. Prints the CPU and Markdown tables; ``--json PATH`` keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.export_speed import cpu_model
from benchmarks.harness import ROOT, child_env, table
from parity.cli import log
from parity.core.atomic import write_atomic

__all__ = ["main"]

#: What the export imports, for the import footprint.
IMPORTS = "import torch, torchvision, onnx, onnxruntime, numpy; import parity.export.pipeline, parity.export.onnx_graph"

SPEED_CHILD = r"""
import json, sys, time
kind, arch, checkpoint, onnx_path, repeats = sys.argv[1:4] + [sys.argv[4], int(sys.argv[5])]
import numpy as np
import torch, torchvision
x8 = np.random.default_rng(0).standard_normal((8, 3, 224, 224), dtype=np.float32)
t0 = time.perf_counter()
if kind == "torch":
    import vgg_torch
    from parity.core.config import PRESETS
    model = vgg_torch.build_vgg(PRESETS[arch], init_weights=False).eval()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    def run(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
else:
    from parity.export.check import onnx_session
    session = onnx_session(onnx_path)
    run = lambda x: session.run(None, {"images": x})[0]
load_s = time.perf_counter() - t0
run(x8[:1])
lat = []
for _ in range(repeats):
    t = time.perf_counter(); run(x8[:1]); lat.append(time.perf_counter() - t)
thr = []
for _ in range(max(1, repeats // 2)):
    t = time.perf_counter(); run(x8); thr.append(8 / (time.perf_counter() - t))
import resource
print(json.dumps({"load_s": load_s, "latency_ms": 1000 * float(np.median(lat)), "throughput": max(thr),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _measured(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Runs a child to completion: its wall time (s), its own peak RSS (MiB) and its stdout.

    Raises:
        RuntimeError: If it fails, with the end of its stderr.
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:6])} failed: {err.read()[-2000:]}")
        return seconds, usage.ru_maxrss / 1024, out.read()


def _random_checkpoint(arch: str, path: Path) -> None:
    code = (
        "import sys, torch\n"
        "from parity.convert.random_weights import randomized_state_dict\n"
        "from parity.core.config import PRESETS\n"
        "state = randomized_state_dict(PRESETS[sys.argv[1]], 0)\n"
        "torch.save({k: torch.from_numpy(v) for k, v in state.items()}, sys.argv[2])\n"
    )
    _measured([sys.executable, "-c", code, arch, os.fspath(path)], child_env(ROOT))


def main(argv: list[str] | None = None) -> int:
    """Measures the export's peak RSS and both runtimes' speed, and prints the tables."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onnx_export", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg16")
    parser.add_argument("--checkpoint", type=Path, help="a .pth of ARCH (default: random tensors, seed 0)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    from parity.core.config import PRESETS

    cpu = cpu_model()
    print(f"CPU: {cpu}", flush=True)
    weights_mib = PRESETS[args.arch].num_params * 4 / 2**20  # fp32; BN running statistics add under 0.01%
    env = child_env(ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    with tempfile.TemporaryDirectory(prefix="onnx_export_") as work:
        checkpoint = args.checkpoint or Path(work) / f"{args.arch}.pth"
        if args.checkpoint is None:
            log(f"Writing a random {args.arch} checkpoint to {checkpoint}", quiet=False)
            _random_checkpoint(args.arch, checkpoint)
        onnx_path = Path(work) / f"{args.arch}.onnx"
        _, imports_mib, _ = _measured([sys.executable, "-c", IMPORTS], env)
        log(f"  imports: peak {imports_mib:.0f} MiB", quiet=False)
        export_argv = [sys.executable, "-m", "parity.export", args.arch, "--checkpoint", os.fspath(checkpoint),
                       "--format", "onnx", "--output", os.fspath(onnx_path), "--quiet"]  # fmt: skip
        export_s, export_mib, _ = _measured(export_argv, env)
        log(f"  export: {export_s:.1f} s, peak {export_mib:.0f} MiB", quiet=False)
        figures = json.loads(Path(f"{onnx_path}.json").read_text())["verification"]["figures"]
        worst = max(r["max_rel"] for f in figures.values() for r in f["rows"])
        memory = {
            "weights_mib": weights_mib,
            "imports_mib": imports_mib,
            "export_peak_mib": export_mib,
            "export_s": export_s,
            "above_imports_x_weights": (export_mib - imports_mib) / weights_mib,
            "file_mib": onnx_path.stat().st_size / 2**20,
            "worst_relative_difference": worst,
        }
        speed = []
        for label, kind in (("torch eager (fp32)", "torch"), ("onnxruntime (fp32)", "onnxruntime")):
            argv_ = [sys.executable, "-c", SPEED_CHILD, kind, args.arch, os.fspath(checkpoint), os.fspath(onnx_path)]
            _, _, stdout = _measured([*argv_, str(args.repeats)], env)
            row = {"label": label, **json.loads(stdout.strip().splitlines()[-1])}
            speed.append(row)
            log(f"  {label}: {row}", quiet=False)
    m = memory
    print(f"\n{args.arch}, fp32 weights {m['weights_mib']:.0f} MiB; ONNX file {m['file_mib']:.0f} MiB\n")
    print("\n".join(table(["process", "wall time", "peak RSS", "above imports"], "lrrr", [
        ["imports only (torch, torchvision, onnx, onnxruntime)", "", f"{m['imports_mib']:.0f} MiB", ""],
        ["`parity.export --format onnx` (write and verify)", f"{m['export_s']:.0f} s",
         f"{m['export_peak_mib']:.0f} MiB", f"{m['above_imports_x_weights']:.2f}x the weights"],
    ])))  # fmt: skip
    print()
    print("\n".join(table(["runtime", "latency, batch 1", "throughput, batch 8", "peak RSS", "load"], "lrrrr", (
        [r["label"], f"{r['latency_ms']:.0f} ms", f"{r['throughput']:.1f} img/s", f"{r['peak_rss_mib']:.0f} MiB",
         f"{r['load_s']:.1f} s"] for r in speed
    ))))  # fmt: skip
    if args.json:
        write_atomic(args.json, json.dumps({"cpu": cpu, "arch": args.arch, "memory": memory, "speed": speed}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

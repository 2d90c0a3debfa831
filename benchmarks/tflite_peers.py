"""How the project's TFLite file compares with peer converters' on torchvision VGGs: build cost, ops, accuracy, speed.

``python -m benchmarks.tflite_peers [--models vgg11_bn] [--rounds 3] [--routes ours litert-torch onnx2tf]``

One random checkpoint per model (every tensor random: weights, biases, batch
norm's weight, bias, running mean and variance) feeds every route:

- ``ours``: the project's CLI in one step, ``python -m parity.export ARCH
  --checkpoint PTH --format tflite`` (read, written, verified against torch on
  the fixed batch and six photos, renamed into place); ``ours-2step`` the
  two-step route through a converted file (``python -m parity.convert ARCH
  --checkpoint PTH``, then ``parity.export --weights``); ``ours-nchw`` with
  ``--data-format channels_first``; ``ours-int8`` full-integer int8 (the
  command prefixes are ``--convert-cmd`` / ``--export-cmd``, so they survive
  module moves).
- ``litert-torch`` (torch straight to LiteRT, NCHW input as torch has it) and
  ``litert-torch-nhwc`` (wrapped in ``litert_torch.to_channel_last_io``).
- ``onnx2tf`` (``torch.onnx.export``, then onnx2tf's default
  ``flatbuffer_direct`` backend; NHWC input) and ``onnx2tf-nchw`` (``-k
  input``: keeps the NCHW input).

Every environment (the project's and the peers') has its bytecode compiled
before anything is timed (``compileall``), as an installed package has it:
this machine sets ``PYTHONDONTWRITEBYTECODE``, and compiling torch's sources
on every start would add seconds to every route alike.

Peers live in throwaway environments under ``--envs`` (made with ``uv`` when
missing; never the project's lock): litert-torch needs torch < 2.15, onnx2tf
needs Python >= 3.12. A peer that cannot be installed is reported with uv's
error and its routes are skipped. Each route is a measured child (wall time
and peak RSS from ``os.wait4``; a route of two commands reports both and their
sum / maximum).

Every file is then inspected (TensorFlow's ``Analyzer``: the op list, every
TRANSPOSE and what it transposes, whether each FULLY_CONNECTED weight is a
constant) and, per model, one child times torch eager (torchvision, eval,
``inference_mode``) and every file in one ``ai_edge_litert`` Interpreter
(``num_threads`` = ``--threads``, XNNPACK as default), in interleaved rounds
(the order reversed every other round): latency at batch 1 (median over
calls) and images/s at batches 4 and 8 (``resize_tensor_input`` when the file
allows it, else that many calls of batch 1; a resize counts only if the
resized file returns what it returns image by image). Ratios to torch are
taken per round and summarized. The same child checks every file against
torch on the same 8 images (max abs difference / max abs torch logit).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.children import run_child
from benchmarks.harness import Option, Section, command, rng, say, summarize, table

__all__ = ["PEERS", "ROUTES", "main"]

MODELS = ("vgg11_bn", "vgg16")


@dataclass(frozen=True)
class Peer:
    """A peer converter and the throwaway environment it runs in.

    Attributes:
        name: Its name in tables.
        folder: The environment's folder under ``--envs``.
        python: What ``uv venv -p`` is given (overridable per peer on the command line).
        packages: What ``uv pip install`` is given.
        check: Imports that prove the environment works.
        script: The build script (run as ``python -c SCRIPT ARCH PTH OUT LAYOUT``).
    """

    name: str
    folder: str
    python: str
    packages: tuple[str, ...]
    check: str
    script: str


@dataclass(frozen=True)
class Route:
    """One way from the checkpoint to a .tflite file.

    Attributes:
        key: Its name on the command line and in file names.
        label: Its name in tables.
        peer: The peer's name, or ``None`` for the project's CLIs.
        layout: ``nchw`` or ``nhwc``: the input the file takes.
        quantize: The project's ``--quantize`` (its routes only).
        two_step: The project's route through a converted ``.weights.h5`` (convert, then export).
    """

    key: str
    label: str
    peer: str | None
    layout: str
    quantize: str = "none"
    two_step: bool = False


MAKE_PTH = r"""
import math, sys
import torch, torchvision
arch, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = getattr(torchvision.models, arch)(weights=None).eval()
modules = dict(model.named_modules())
new = {}
for key, t in model.state_dict().items():
    name, _, field = key.rpartition(".")
    if field == "num_batches_tracked":
        new[key] = torch.tensor(int(torch.randint(1, 10_000, ())), dtype=torch.long)
    elif isinstance(modules[name], torch.nn.BatchNorm2d):
        new[key] = {"weight": lambda: torch.empty_like(t).uniform_(0.5, 1.5),
                    "running_var": lambda: torch.empty_like(t).uniform_(0.5, 2.0),
                    "running_mean": lambda: torch.randn_like(t) * 0.2}.get(field, lambda: torch.randn_like(t) * 0.1)()
    elif field == "weight":  # He-scaled, so activations stay of order one
        new[key] = torch.randn_like(t) * math.sqrt(2.0 / t[0].numel())
    else:
        new[key] = torch.randn_like(t) * 0.1
model.load_state_dict(new)
torch.save(new, out)
print(f"{out}: {len(new)} tensors, all random")
"""

LITERT_BUILD = r"""
import sys, time
arch, pth, out, layout = sys.argv[1:5]
import torch, torchvision
import litert_torch
t0 = time.perf_counter()
model = getattr(torchvision.models, arch)(weights=None)
model.load_state_dict(torch.load(pth, map_location="cpu", weights_only=True))
model.eval()
x = torch.randn(1, 3, 224, 224)
if layout == "nhwc":
    model = litert_torch.to_channel_last_io(model, args=[0]).eval()
    x = x.permute(0, 2, 3, 1).contiguous()
litert_torch.convert(model, (x,)).export(out)
print(f"wrote {out} in {time.perf_counter() - t0:.1f} s", flush=True)
"""

ONNX2TF_BUILD = r"""
import os, shutil, sys, time
arch, pth, out, layout = sys.argv[1:5]
import torch, torchvision
t0 = time.perf_counter()
work = out + ".onnx2tf"
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
onnx_path = os.path.join(work, f"{arch}.onnx")
model = getattr(torchvision.models, arch)(weights=None)
model.load_state_dict(torch.load(pth, map_location="cpu", weights_only=True))
model.eval()
with torch.inference_mode():
    torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), onnx_path, input_names=["input"], output_names=["logits"], dynamo=True)
del model
print(f"ONNX written in {time.perf_counter() - t0:.1f} s", flush=True)
import onnx2tf
kw = dict(input_onnx_file_path=onnx_path, output_folder_path=work, non_verbose=True)
if layout == "nchw":
    kw["keep_ncw_or_nchw_or_ncdhw_input_names"] = ["input"]
onnx2tf.convert(**kw)
found = [f for f in os.listdir(work) if f.endswith("_float32.tflite")]
shutil.move(os.path.join(work, found[0]), out)
shutil.rmtree(work, ignore_errors=True)
print(f"wrote {out} in {time.perf_counter() - t0:.1f} s", flush=True)
"""

PEERS = {
    "litert-torch": Peer("litert-torch", "env-litert", "3.11", ("litert-torch==0.10.0", "torch<2.15", "torchvision"),
                         "import litert_torch, torch, torchvision", LITERT_BUILD),
    "onnx2tf": Peer("onnx2tf", "env-onnx2tf", "3.12", ("onnx2tf==2.6.9", "torch", "torchvision"),
                    "import onnx2tf, onnxscript, torch, torchvision", ONNX2TF_BUILD),
}  # fmt: skip

ROUTES = {
    r.key: r
    for r in (
        Route("ours", "ours (parity.export --checkpoint)", None, "nhwc"),
        Route("ours-2step", "ours (parity.convert, then parity.export --weights)", None, "nhwc", two_step=True),
        Route("ours-nchw", "ours, --data-format channels_first", None, "nchw"),
        Route("ours-int8", "ours, --quantize int8 (built-in calibration)", None, "nhwc", "int8"),
        Route("litert-torch", "litert-torch 0.10.0", "litert-torch", "nchw"),
        Route("litert-torch-nhwc", "litert-torch 0.10.0, to_channel_last_io", "litert-torch", "nhwc"),
        Route("onnx2tf", "torch.onnx + onnx2tf 2.6.9", "onnx2tf", "nhwc"),
        Route("onnx2tf-nchw", "torch.onnx + onnx2tf 2.6.9, -k input", "onnx2tf", "nchw"),
    )
}

INSPECT = r"""
import contextlib, json, os, re, sys, tempfile
import tensorflow as tf
path = sys.argv[1]
with tempfile.TemporaryFile("w+") as buf:
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(buf.fileno(), 1)
    try:
        tf.lite.experimental.Analyzer.analyze(model_path=path, gpu_compatibility=False)
        sys.stdout.flush()
    finally:
        os.dup2(saved, 1)
    buf.seek(0)
    text = buf.read()
ops, tensors = [], {}
for line in text.splitlines():
    m = re.match(r"\s+Op#(\d+) (\w+)\((.*)\) -> \[(.*)\]", line)
    if m:
        ops.append({"op": m.group(2), "inputs": [int(t) for t in re.findall(r"T#(\d+)", m.group(3))],
                    "outputs": [int(t) for t in re.findall(r"T#(\d+)", m.group(4))]})
        continue
    m = re.match(r"\s+T#(\d+)\((.*?)\) shape(?:_signature)?:\[(.*?)\], type:(\w+)( RO)?", line)
    if m:
        tensors[int(m.group(1))] = {"shape": [int(d) for d in m.group(3).split(",") if d.strip()], "type": m.group(4), "constant": bool(m.group(5))}
print(json.dumps({"ops": ops, "tensors": tensors}))
"""

SPEED = r"""
import json, os, sys, time
cfg = json.loads(open(sys.argv[1]).read())
import numpy as np
import torch, torchvision  # before anything TensorFlow-like
from ai_edge_litert.interpreter import Interpreter
from benchmarks.harness import say, timed, wait_for_quiet, is_quiet
threads, rounds, calls = cfg["threads"], cfg["rounds"], cfg["calls"]
torch.set_num_threads(threads)
model = getattr(torchvision.models, cfg["model"])(weights=None)
model.load_state_dict(torch.load(cfg["pth"], map_location="cpu", weights_only=True))
model.eval()
x8 = np.random.default_rng(0).standard_normal((8, 3, 224, 224), dtype=np.float32)
with torch.inference_mode():
    ref = model(torch.from_numpy(x8)).numpy()
t8 = torch.from_numpy(x8)
t1 = t8[:1].clone()
def torch_run(t):
    with torch.inference_mode():
        return model(t)
runs = {"torch eager": {1: lambda: torch_run(t1), 8: lambda: torch_run(t8)}}
info = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(), "files": {}}
class File:
    def __init__(self, path):
        self.it = Interpreter(model_path=path, num_threads=threads)
        self.it.allocate_tensors()
        d = self.it.get_input_details()[0]
        self.inp, self.out = d["index"], self.it.get_output_details()[0]["index"]
        self.nhwc = int(d["shape"][-1]) == 3
        self.x = np.ascontiguousarray(x8.transpose(0, 2, 3, 1)) if self.nhwc else x8
        self.batch = 1
    def call(self, x):
        self.it.set_tensor(self.inp, x); self.it.invoke(); return self.it.get_tensor(self.out)
    def run(self, n):
        if self.batch == n:
            return self.call(self.x[:n])
        return np.concatenate([self.call(self.x[i:i + 1]).copy() for i in range(n)])
    def resize(self, n):
        shape = list(self.it.get_input_details()[0]["shape"]); shape[0] = n
        self.it.resize_tensor_input(self.inp, shape, strict=False)
        self.it.allocate_tensors()
        self.batch = n
files = {}
for label, path in cfg["files"].items():
    t = time.perf_counter()
    f = File(path)
    got = f.ones = f.run(8)  # image by image, at the file's batch of 1
    diff = float(np.abs(got - ref).max())
    files[label] = f
    runs[label] = {1: (lambda f=f: f.run(1)), 8: (lambda f=f: f.run(8))}
    info["files"][label] = {"layout": "NHWC" if f.nhwc else "NCHW", "input_shape": [int(v) for v in f.it.get_input_details()[0]["shape"]],
                            "max_abs_diff": diff, "max_abs_torch": float(np.abs(ref).max()), "load_and_check_s": time.perf_counter() - t}
    say(f"  {label}: {info['files'][label]}")
samples = {b: {k: [] for k in runs} for b in (1, 4, 8)}
budget, waited = cfg["quiet_budget"], 0.0
def rounds_of(batch, reps):
    global waited
    cells = list(runs)
    for fn in runs.values():
        fn[batch]()  # warm-up at this batch
    for r in range(rounds):
        for k in (cells if r % 2 == 0 else cells[::-1]):
            if budget - waited > 0:
                waited += wait_for_quiet(os.cpu_count(), min(cfg["quiet_wait"], budget - waited))
            one = [timed(runs[k][batch], 1) for _ in range(reps)]
            samples[batch][k].append({"walls": [s["wall"] for s in one], "others_cpu": sum(s["others_cpu"] for s in one),
                                      "wall": sum(s["wall"] for s in one)})
        say(f"  {cfg['model']} batch {batch}: round {r + 1}/{rounds} (load avg {os.getloadavg()[0]:.2f})")
rounds_of(1, calls)
for n in (4, 8):
    runs["torch eager"][n] = (lambda t=t8[:n].clone(): torch_run(t))
    for label, f in list(files.items()):
        res = {"tried": True}
        try:
            f.resize(n)
            got = f.call(f.x[:n])
            # A resize counts if the file returns at batch n what it returns image by image (the summation order
            # may differ: 1e-3 of the largest output is far above that, far below a wrong result).
            gap = float(np.abs(got - f.ones[:n]).max()) if got.shape == f.ones[:n].shape else float("inf")
            res.update(ok=gap <= 1e-3 * float(np.abs(f.ones).max()), max_abs_diff_to_batch_1=gap)
            if not res["ok"]:
                res["why"] = "ran, but its outputs differ from the same file's at batch 1"
        except Exception as e:
            res.update(ok=False, why=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
        if not res["ok"]:
            try:
                f.resize(1)
            except Exception:
                files[label] = f = File(cfg["files"][label])
                f.ones = f.run(8)
            f.batch = 1
        runs[label] = {1: (lambda f=f: f.run(1)), 4: (lambda f=f: f.run(4)), 8: (lambda f=f: f.run(8))}
        info["files"][label][f"resize_to_{n}"] = res
        say(f"  {label}: resize_tensor_input to {n}: {res}")
    rounds_of(n, cfg["calls8"])
import resource
info["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
info["quiet_wait_s"] = waited
print(json.dumps({"info": info, "samples": {str(b): v for b, v in samples.items()}}))
"""


def _tail(text: str, n: int = 1500) -> str:
    """The last ``n`` characters of ``text``, stripped."""
    return text.strip()[-n:]


def ensure_env(peer: Peer, root: Path, python: str) -> dict[str, Any]:
    """Makes the peer's environment with uv unless it already imports; says why when it cannot.

    Args:
        peer: The peer.
        root: Folder of the environments.
        python: What ``uv venv -p`` is given.

    Returns:
        ``{"python": PATH, "ok": bool, "commands": [...], "error": str, "versions": str}``.
    """
    env_dir = root / peer.folder
    exe = env_dir / "bin" / "python"
    cmds = [
        ["uv", "venv", "-q", "-p", python, str(env_dir)],
        ["uv", "pip", "install", "-p", str(env_dir), *peer.packages],
    ]
    out: dict[str, Any] = {"python": str(exe), "commands": [shlex.join(c) for c in cmds], "ok": False}
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    names = [p.split("=")[0].split("<")[0] for p in peer.packages]
    probe = [
        str(exe),
        "-c",
        f"{peer.check}; import importlib.metadata as m; print(' '.join(p + '==' + m.version(p) for p in {names!r}))",
    ]

    def works() -> subprocess.CompletedProcess[str] | None:
        if not exe.exists():
            return None
        done = subprocess.run(probe, capture_output=True, text=True, env=clean, check=False)
        return done if done.returncode == 0 else None

    done = works()
    if done is None:
        if shutil.which("uv") is None:
            out["error"] = "uv not found on PATH"
            return out
        say(f"  making {env_dir} ({peer.name})")
        root.mkdir(parents=True, exist_ok=True)
        for c in cmds if not exe.exists() else cmds[1:]:
            step = subprocess.run(c, capture_output=True, text=True, env=clean, check=False)
            if step.returncode != 0:
                out["error"] = f"`{shlex.join(c)}` failed (exit {step.returncode}):\n{_tail(step.stderr + step.stdout)}"
                say(f"  {peer.name} cannot be installed: {out['error']}")
                return out
        done = works()
        if done is None:
            fail = subprocess.run(probe, capture_output=True, text=True, env=clean, check=False)
            out["error"] = f"installed, but `{peer.check}` fails:\n{_tail(fail.stderr)}"
            say(f"  {peer.name} cannot be imported: {out['error']}")
            return out
    out.update(ok=True, versions=done.stdout.strip().splitlines()[-1])
    return out


def compile_bytecode(python: str) -> None:
    """Compiles an environment's installed packages to bytecode (``compileall``), once, before anything is timed."""
    where = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    say(f"  compiling bytecode in {where}")
    subprocess.run([python, "-m", "compileall", "-q", "-j", "0", where], capture_output=True, check=False)


def _cmd(prefix: str, python: str) -> list[str]:
    """A command prefix such as ``python -m parity.convert``, its leading ``python`` replaced by ``python``."""
    parts = shlex.split(prefix)
    return [python, *parts[1:]] if parts and parts[0] == "python" else parts


def _measured(section: Section, label: str, argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """One measured child: ``{"wall_s", "peak_mib", "others_share"}`` or ``{"error"}``."""
    log = section.workdir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.log"
    try:
        done = run_child(label, argv, env, cwd, log, section.cores)
    except RuntimeError as e:
        say(f"  {label} FAILED, see {log}")
        return {"error": _tail(str(e), 2500), "log": str(log)}
    say(f"  {label:<44} {done.wall_s:6.1f} s  peak RSS {done.peak_mib:6.0f} MiB")
    return {"wall_s": done.wall_s, "peak_mib": done.peak_mib, "others_share": done.others_share, "log": str(log)}


def build_all(section: Section) -> dict[str, Any]:
    """Checkpoints, peer environments and every route's file, each build measured.

    Args:
        section: The command line and the folder the files go to.

    Returns:
        ``{"envs", "checkpoints", "builds": {model: {route: {...}}}}``; also written as ``manifest.json`` in the workdir.
    """
    args, work = section.args, section.workdir
    unknown = [k for k in args.routes if k not in ROUTES]
    if unknown:
        raise SystemExit(f"unknown route(s) {' '.join(unknown)}; choose from {' '.join(ROUTES)}")
    routes = [ROUTES[k] for k in args.routes]
    proj_env = {**section.env}
    peer_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    envs = {}
    for name in dict.fromkeys(r.peer for r in routes if r.peer):
        peer = PEERS[name]
        envs[name] = ensure_env(
            peer, args.envs.resolve(), getattr(args, f"python_{peer.folder.split('-')[1]}") or peer.python
        )
    for python in [sys.executable, *(e["python"] for e in envs.values() if e["ok"])]:
        compile_bytecode(python)
    checkpoints, builds = {}, {}
    for model in args.models:
        pth = work / f"{model}.pth"
        if not pth.exists():
            subprocess.run(
                [sys.executable, "-c", MAKE_PTH, model, str(pth)], check=True, env=proj_env, capture_output=True
            )
        checkpoints[model] = str(pth)
        builds[model] = {}
        h5 = work / f"{model}.weights.h5"
        for r in routes:
            out = work / f"{r.key}_{model}.tflite"
            row: dict[str, Any] = {"route": r.label, "layout": r.layout.upper(), "file": str(out)}
            if args.reuse and out.exists():
                row["reused"] = True
            elif r.peer is None:
                steps = {}
                source = ["--checkpoint", str(pth)]
                if r.two_step:
                    steps["convert"] = _measured(section, f"{model} ours convert", _cmd(args.convert_cmd, sys.executable) + [
                        model, "--checkpoint", str(pth), "--output", str(h5), "--force", "--quiet"], proj_env, args.project_root)  # fmt: skip
                    source = ["--weights", str(h5)]
                fmt = ["--data-format", "channels_first"] if r.layout == "nchw" else []
                fmt += ["--quantize", r.quantize]
                steps["export"] = _measured(section, f"{model} {r.key} export", _cmd(args.export_cmd, sys.executable) + [
                    model, *source, "--format", "tflite", "--output", str(out), *fmt, "--force", "--quiet"],
                    proj_env, args.project_root)  # fmt: skip
                row["steps"] = steps
                if any("error" in s for s in steps.values()):
                    row["error"] = next(s["error"] for s in steps.values() if "error" in s)
                else:
                    row["wall_s"] = sum(s["wall_s"] for s in steps.values())
                    row["peak_mib"] = max(s["peak_mib"] for s in steps.values())
            elif not envs[r.peer]["ok"]:
                row["error"] = f"{r.peer} not installed: {envs[r.peer]['error']}"
            else:
                row.update(_measured(section, f"{model} {r.key}", [envs[r.peer]["python"], "-c", PEERS[r.peer].script, model, str(pth), str(out), r.layout],
                                     peer_env, work))  # fmt: skip
            if "error" not in row and out.exists():
                row["size_mb"] = out.stat().st_size / 1e6
            elif "error" not in row:
                row["error"] = "no file written"
            builds[model][r.key] = row
    result = {"envs": envs, "checkpoints": checkpoints, "builds": builds}
    (work / "manifest.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def describe_ops(found: dict[str, Any]) -> dict[str, Any]:
    """What the op list says: counts, the op sequence, TRANSPOSEs and whether FC weights are constants.

    Args:
        found: ``{"ops": [...], "tensors": {...}}`` from the inspect child.

    Returns:
        ``{"counts", "sequence", "transposes", "fc_weights_constant", "weight_transposes"}``.
    """
    ops, tensors = found["ops"], {int(k): v for k, v in found["tensors"].items()}
    counts: dict[str, int] = {}
    for o in ops:
        counts[o["op"]] = counts.get(o["op"], 0) + 1
    seq: list[list[Any]] = []
    for o in ops:
        if seq and seq[-1][0] == o["op"]:
            seq[-1][1] += 1
        else:
            seq.append([o["op"], 1])
    transposes = []
    for o in ops:
        if o["op"] == "TRANSPOSE":
            src = tensors.get(o["inputs"][0], {})
            transposes.append(
                {
                    "shape": src.get("shape"),
                    "of": "constant (weights, every call)" if src.get("constant") else "activation",
                }
            )
    fc = []
    for o in ops:
        if o["op"] == "FULLY_CONNECTED":
            w = tensors.get(o["inputs"][1], {})
            fc.append({"shape": w.get("shape"), "constant": bool(w.get("constant"))})
    return {
        "counts": counts,
        "sequence": ", ".join(f"{n}x{op}" if n > 1 else op for op, n in seq),
        "transposes": transposes,
        "fully_connected": fc,
        "fc_weights_constant": all(f["constant"] for f in fc),
    }


def inspect_files(section: Section) -> dict[str, Any]:
    """The op findings of every file built (see :func:`describe_ops`)."""
    manifest = json.loads((section.workdir / "manifest.json").read_text())
    out: dict[str, Any] = {}
    for model, rows in manifest["builds"].items():
        out[model] = {}
        for key, row in rows.items():
            if "error" in row:
                continue
            done = subprocess.run(
                [sys.executable, "-c", INSPECT, row["file"]],
                capture_output=True,
                text=True,
                env=section.env,
                check=False,
            )
            if done.returncode != 0:
                out[model][key] = {"error": _tail(done.stderr)}
                continue
            out[model][key] = describe_ops(json.loads(done.stdout.strip().splitlines()[-1]))
            say(f"  {model} {key}: {out[model][key]['sequence']}")
    return out


def time_files(section: Section) -> dict[str, Any]:
    """Per model, one child times torch eager and every file in interleaved rounds; ratios per round.

    Returns:
        ``{model: {"info", "samples", "rows"}}``.
    """
    args, work = section.args, section.workdir
    manifest = json.loads((work / "manifest.json").read_text())
    out: dict[str, Any] = {}
    budget_left = args.quiet_budget
    for model, rows in manifest["builds"].items():
        files = {key: row["file"] for key, row in rows.items() if "error" not in row}
        cfg = {"model": model, "pth": manifest["checkpoints"][model], "files": files, "threads": args.threads, "rounds": args.rounds,
               "calls": args.calls, "calls8": 1, "quiet_wait": args.quiet_wait, "quiet_budget": budget_left / max(1, len(manifest["builds"]))}  # fmt: skip
        cfg_path = work / f"speed_{model}.json"
        cfg_path.write_text(json.dumps(cfg))
        log = work / f"speed_{model}.log"
        with open(log, "w") as err:
            done = subprocess.run([sys.executable, "-c", SPEED, str(cfg_path)], stdout=subprocess.PIPE, stderr=err, text=True, env=section.env,
                                  cwd=args.project_root, check=False)  # fmt: skip
        if done.returncode != 0:
            out[model] = {"error": _tail(log.read_text(), 3000)}
            say(f"  {model}: timing child failed, see {log}")
            continue
        got = json.loads(done.stdout.strip().splitlines()[-1])
        samples = got["samples"]
        table_rows = []
        for key in ["torch eager", *files]:
            lat = [statistics.median(s["walls"]) * 1000 for s in samples["1"][key]]
            base_lat = [statistics.median(s["walls"]) * 1000 for s in samples["1"]["torch eager"]]
            row = {"key": key, "latency_ms": summarize(lat), "latency_vs_torch": summarize([a / b for a, b in zip(lat, base_lat)]),
                   "others_share": statistics.median(s["others_cpu"] / (s["wall"] * section.cores) for b in "148" for s in samples[b][key])}  # fmt: skip
            for n in (4, 8):
                thr = [n / s["wall"] for s in samples[str(n)][key]]
                base_thr = [n / s["wall"] for s in samples[str(n)]["torch eager"]]
                row[f"images_per_s_{n}"] = summarize(thr)
                row[f"throughput_vs_torch_{n}"] = summarize([a / b for a, b in zip(thr, base_thr)])
            table_rows.append(row)
        out[model] = {"info": got["info"], "samples": samples, "rows": table_rows}
    return out


def _mib(v: float) -> str:
    return f"{v / 1024:.2f} GiB"


def render(results: dict[str, Any]) -> list[str]:
    """The report: install notes, build cost, op findings, accuracy, speed."""
    lines: list[str] = []
    b = results["builds"]
    for name, e in b["envs"].items():
        lines.append(
            f"- {name}: "
            + (f"{e['versions']} in `{Path(e['python']).parents[1]}`" if e["ok"] else f"NOT INSTALLED. {e['error']}")
        )
    lines += ["", "Build from the .pth (each route a measured child; peak RSS is the largest process's):", ""]
    rows = []
    for model, routes in b["builds"].items():
        for r in routes.values():
            if "error" in r:
                rows.append([model, r["route"], r["layout"], "failed", "", "", r["error"].splitlines()[0][:120]])
                continue
            steps = " + ".join(
                f"{k} {s['wall_s']:.0f} s / {_mib(s['peak_mib'])}" for k, s in r.get("steps", {}).items()
            )
            rows.append([model, r["route"], r["layout"], "reused" if r.get("reused") else f"{r['wall_s']:.1f} s",
                         "" if r.get("reused") else _mib(r["peak_mib"]), f"{r['size_mb']:.1f} MB", steps])  # fmt: skip
    lines += table(["model", "route", "input", "wall", "peak RSS", "file", "steps"], "lllrrrl", rows)
    lines += ["", "Ops (TensorFlow Analyzer; BatchNorm folded and ReLU fused into CONV_2D in every file):", ""]
    rows = []
    for model, files in results["files"].items():
        for key, f in files.items():
            if "error" in f:
                rows.append([model, key, "inspect failed", "", "", ""])
                continue
            tr = "; ".join(f"{t['of']} {t['shape']}" for t in f["transposes"]) or "none"
            fc = ", ".join(f"{x['shape']}{'' if x['constant'] else ' NOT constant'}" for x in f["fully_connected"])
            rows.append([model, key, f["sequence"], tr, "yes" if f["fc_weights_constant"] else "NO", fc])
    lines += table(["model", "route", "ops", "TRANSPOSE of", "FC weights constant", "FC weight shapes"], "llllll", rows)
    for model, s in results["speed"].items():
        lines += [""]
        if "error" in s:
            lines += [f"{model}: timing failed: {s['error'].splitlines()[-1]}"]
            continue
        info = s["info"]
        args = results["args"]
        lines += [
            (
                f"{model}: torch {info['torch']} eager ({info['torch_threads']} threads) vs ai_edge_litert Interpreter (num_threads={args['threads']}), "
                f"{args['rounds']} interleaved rounds; batch 1: median of {args['calls']} calls a round; batches 4 and 8: one run a round; "
                f"latency ÷ torch below 1 and throughput ÷ torch above 1 are faster than torch; "
                f"ratios per round, median (min–max); timing process peak RSS {_mib(info['peak_rss_mib'])}."
            ),
            "",
        ]
        rows, notes = [], []
        for r in s["rows"]:
            f = info["files"].get(r["key"], {})
            resized = []
            for n in (4, 8):
                rs = f.get(f"resize_to_{n}", {})
                if rs and not rs.get("ok"):
                    notes.append(f"- {r['key']}: `resize_tensor_input(input, [{n}, ...])` fails: {rs.get('why', '')}")
                resized.append(bool(rs.get("ok")))
            batch_as = "torch batches" if not f else ("one call" if all(resized) else "calls of 1 (resize fails)")
            acc = f"{f['max_abs_diff']:.1e} / {f['max_abs_torch']:.1f}" if f else "reference"
            rows.append([r["key"], f.get("layout", "NCHW"), rng(r["latency_ms"], ".0f"), rng(r["latency_vs_torch"]),
                         rng(r["images_per_s_4"]), rng(r["throughput_vs_torch_4"]), rng(r["images_per_s_8"]),
                         rng(r["throughput_vs_torch_8"]), batch_as, acc, f"{r['others_share']:.0%}"])  # fmt: skip
        lines += table(["run", "input", "latency b1, ms", "latency ÷ torch", "img/s b4", "b4 ÷ torch", "img/s b8", "b8 ÷ torch",
                        "batch 4 and 8 as", "max |diff| / max |torch|", "others' CPU"], "llrrrrrrlrr", rows)  # fmt: skip
        lines += [""] + notes if notes else []
    return lines


_OPTIONS = [
    Option("--models", "torchvision architectures", list(MODELS), ["vgg11_bn"], type=str, many=True),
    Option(
        "--routes",
        f"routes to build and time, of {' '.join(ROUTES)}",
        ["ours", "ours-int8", "litert-torch", "onnx2tf"],
        ["ours", "litert-torch", "onnx2tf"],
        type=str,
        many=True,
    ),
    Option("--rounds", "interleaved timing rounds", 5, 2),
    Option("--calls", "batch-1 calls per cell and round", 5, 3),
    Option("--threads", "torch threads and the Interpreter's num_threads", 2, 2),
    Option(
        "--envs",
        "folder of the peers' throwaway environments (made with uv when missing)",
        Path.home() / ".cache" / "vgg-parity-peers",
        Path.home() / ".cache" / "vgg-parity-peers",
        type=Path,
    ),
    Option("--python-litert", "uv venv -p for litert-torch (needs torch < 2.15)", "3.11", "3.11", type=str),
    Option("--python-onnx2tf", "uv venv -p for onnx2tf (needs Python >= 3.12)", "3.12", "3.12", type=str),
    Option(
        "--convert-cmd",
        "the project's convert command prefix ('python' = this interpreter)",
        "python -m parity.convert",
        "python -m parity.convert",
        type=str,
    ),
    Option(
        "--export-cmd",
        "the project's export command prefix",
        "python -m parity.export",
        "python -m parity.export",
        type=str,
    ),
]

main = command(
    __doc__,
    {"builds": build_all, "files": inspect_files, "speed": time_files},
    render,
    _OPTIONS,
    {"--reuse": "keep files (and .pth/.weights.h5) already in --workdir instead of rebuilding them"},
)

if __name__ == "__main__":
    sys.exit(main())

"""CPU benchmarks of the Keras VGG port against torchvision, in one run.

Run from the repository root::

    uv run python benchmarks/bench.py                      # full run (~13 min on 2 cores)
    uv run python benchmarks/bench.py --quick              # smoke run (~4-5 min)
    uv run python benchmarks/bench.py --out results.json   # also save every sample

Four measurements, printed as markdown tables and saved as JSON:

1. Inference throughput (images/s) of vgg16 and vgg11_bn at 224x224, batch 1
   and 8: torchvision eager (``torch.no_grad``, eval mode) against vgg_keras
   called directly, through ``model.predict`` and compiled with XLA
   (``tf.function(jit_compile=True)``). Each framework lives in its own worker
   process; the workers take turns in rounds (one sample of every cell per
   round, the order reversed every other round), so drift and load from other
   processes reach every cell alike. Ratios are taken per round, between
   samples measured seconds apart, then summarized.
2. Conversion of vgg16 with ``python -m parity.convert``: wall time and peak
   RSS, with and without verification, against the import footprint of torch,
   torchvision and Keras, a bare floor (load a ``.pth`` and write its tensors
   to HDF5 as they are) and the Keras route (load, build the Keras model,
   assign, ``save_weights``).
3. Cold load: a fresh process to its first logits with
   ``vgg_keras.VGG16(weights=PATH)`` and with
   ``keras.applications.VGG16(weights=PATH2)``, files of the same size.
4. vgg_keras' head (adaptive 7x7 average pool, dropout) against
   keras.applications' VGG16 at 224x224, in the same rounds as 1.

Every measured process is a child of this one, so peak memory is the child's
own ``ru_maxrss`` (from ``os.wait4``). Each sample also records how much CPU
other processes used meanwhile (``/proc/stat`` minus the worker's own CPU
time), because on a shared machine that is the main source of noise.

torch and TensorFlow never share a worker; the children that need both (the
conversions) import torch and torchvision first, as importing torchvision after
TensorFlow crashes the interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Input side length of every throughput measurement.
SIZE = 224
MODELS = ("vgg16", "vgg11_bn")
BATCHES = (1, 8)
#: Keras paths measured for every (model, batch) cell.
KERAS_PATHS = ("direct", "predict", "xla")
#: The keras.applications comparison (section 4): model vgg16 only.
APPS_PATHS = ("direct", "xla")
MIB = 1024 * 1024
#: A sample is "quiet" when other processes used less than this share of all cores meanwhile.
QUIET_SHARE = 0.15


# --------------------------------------------------------------------------
# CPU peak and model cost
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuInfo:
    """What /proc/cpuinfo and the scheduler say about this machine.

    Attributes:
        vendor: ``vendor_id`` (``AuthenticAMD``, ``GenuineIntel``).
        model_name: ``model name``.
        family: CPU family number.
        model: CPU model number.
        mhz: ``cpu MHz`` of the first processor.
        cores: CPUs this process may run on (``sched_getaffinity``).
        flags: The instruction-set flags.
        hypervisor: Whether the ``hypervisor`` flag is set (a virtual machine).
    """

    vendor: str
    model_name: str
    family: int
    model: int
    mhz: float
    cores: int
    flags: frozenset[str]
    hypervisor: bool


def read_cpuinfo(path: str = "/proc/cpuinfo") -> CpuInfo:
    """Parses the first processor block of ``/proc/cpuinfo``.

    Args:
        path: The file to read.

    Returns:
        The parsed facts; unknown fields are empty or zero.
    """
    fields: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = frozenset(fields.get("flags", "").split())
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return CpuInfo(
        vendor=fields.get("vendor_id", platform.processor() or "unknown"),
        model_name=fields.get("model name", "unknown"),
        family=int(fields.get("cpu family", "0") or 0),
        model=int(fields.get("model", "0") or 0),
        mhz=float(fields.get("cpu MHz", "0") or 0.0),
        cores=cores,
        flags=flags,
        hypervisor="hypervisor" in flags,
    )


def fp32_flops_per_cycle(cpu: CpuInfo) -> tuple[int, str]:
    """Peak fp32 FLOPs per cycle per core, from the vendor, family and ISA flags.

    One fused multiply-add on a vector of ``w`` fp32 lanes is ``2 * w`` FLOPs:
    32 for a 512-bit FMA unit, 16 for a 256-bit one. The peak is that times the
    number of FMA pipes that run at full width.

    Args:
        cpu: The parsed CPU facts.

    Returns:
        FLOPs per cycle per core and the reasoning, in words.
    """
    f = cpu.flags
    avx512 = "avx512f" in f
    if cpu.vendor == "AuthenticAMD":
        if cpu.family >= 0x1A and avx512:
            if cpu.model < 0x20:  # Turin server parts; client Zen 5 keeps a 256-bit datapath
                return 64, "AMD family 1Ah (Zen 5 server): 2 FMA pipes x 512-bit = 2 x 16 lanes x 2 FLOPs"
            return 32, "AMD family 1Ah (Zen 5 client): 2 FMA pipes x 256-bit = 2 x 8 lanes x 2 FLOPs"
        if cpu.family == 0x19 and avx512:
            return 32, "AMD family 19h with AVX-512 (Zen 4): AVX-512 on 2 x 256-bit FMA pipes = 2 x 8 lanes x 2 FLOPs"
        if "fma" in f and "avx2" in f and cpu.family >= 0x17:
            if cpu.family == 0x17 and cpu.model < 0x30:
                return 16, "AMD Zen 1: 2 FMA pipes x 128-bit = 2 x 4 lanes x 2 FLOPs"
            return 32, "AMD Zen 2/3: 2 FMA pipes x 256-bit = 2 x 8 lanes x 2 FLOPs"
    if avx512:
        return 64, "AVX-512, assuming 2 FMA units (Xeon Gold/Platinum class) = 2 x 16 lanes x 2 FLOPs; 32 with one unit"
    if "fma" in f and "avx2" in f:
        return 32, "AVX2 + FMA, assuming 2 FMA units = 2 x 8 lanes x 2 FLOPs"
    if "avx" in f:
        return 16, "AVX without FMA: one 8-lane add + one 8-lane multiply per cycle"
    return 8, "SSE: one 4-lane add + one 4-lane multiply per cycle"


def cpu_peak(cpu: CpuInfo, ghz: float | None = None, flops_per_cycle: int | None = None) -> dict[str, Any]:
    """Theoretical fp32 peak: cores x GHz x FLOPs/cycle/core.

    Args:
        cpu: The parsed CPU facts.
        ghz: Clock to assume; default ``cpu MHz`` from /proc/cpuinfo.
        flops_per_cycle: Override of :func:`fp32_flops_per_cycle`.

    Returns:
        ``{"gflops", "ghz", "cores", "flops_per_cycle", "reason", ...}``.
    """
    fpc, reason = fp32_flops_per_cycle(cpu)
    if flops_per_cycle is not None:
        fpc, reason = flops_per_cycle, "given with --flops-per-cycle"
    clock = ghz if ghz is not None else cpu.mhz / 1000.0
    return {
        "gflops": cpu.cores * clock * fpc,
        "ghz": clock,
        "ghz_source": "--ghz" if ghz is not None else "cpu MHz in /proc/cpuinfo",
        "cores": cpu.cores,
        "flops_per_cycle": fpc,
        "reason": reason,
        "cpu": f"{cpu.vendor} {cpu.model_name} (family {cpu.family:#x}, model {cpu.model:#x})",
        "hypervisor": cpu.hypervisor,
        "isa": sorted(x for x in cpu.flags if x.startswith(("avx", "fma"))),
    }


_FMA_SOURCE = r"""
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __AVX512F__
typedef __m512 vec;
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define LANES 16
#else
typedef __m256 vec;
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
#define LANES 8
#endif
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    vec a0 = SET1(0.f), a1 = SET1(1.f), a2 = SET1(2.f), a3 = SET1(3.f), a4 = SET1(4.f), a5 = SET1(5.f);
    vec a6 = SET1(6.f), a7 = SET1(7.f), a8 = SET1(8.f), a9 = SET1(9.f), a10 = SET1(10.f), a11 = SET1(11.f);
    const vec b = SET1(0.999999f), c = SET1(1e-6f);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long k = 0; k < n; k++) {  /* 12 independent chains: 12 FMAs x LANES x 2 FLOPs per trip */
        a0 = FMA(a0, b, c); a1 = FMA(a1, b, c); a2 = FMA(a2, b, c); a3 = FMA(a3, b, c);
        a4 = FMA(a4, b, c); a5 = FMA(a5, b, c); a6 = FMA(a6, b, c); a7 = FMA(a7, b, c);
        a8 = FMA(a8, b, c); a9 = FMA(a9, b, c); a10 = FMA(a10, b, c); a11 = FMA(a11, b, c);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    vec s = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7)));
    s = ADD(s, ADD(ADD(a8, a9), ADD(a10, a11)));
    float out[LANES];
    memcpy(out, &s, sizeof out);
    double dt = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("%.9f %g\n", dt, (double)out[0]);
    return 0;
}
"""


def measure_fma_peak(workdir: Path, cores: int, iterations: int = 100_000_000) -> dict[str, Any] | None:
    """Measures fp32 FMA throughput with a compiled register-only loop.

    Twelve independent vector FMA chains (enough to cover the FMA latency on
    two pipes) run from registers; the rate shows the clock the cores actually
    run at, which in a virtual machine is often above the ``cpu MHz`` that
    /proc/cpuinfo reports. One copy gives the per-core rate; ``cores`` copies at
    once show whether the virtual CPUs are separate cores.

    Args:
        workdir: Where to compile.
        cores: Copies to run at once for the all-core figure.
        iterations: Loop trips per run.

    Returns:
        ``{"per_core_gflops", "all_cores_gflops", "isa", ...}``, or ``None``
        without a C compiler or AVX2/FMA.
    """
    import shutil

    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    flags = read_cpuinfo().flags
    if cc is None or not ({"avx2", "fma"} <= flags):
        return None
    isa = ["-mavx512f", "-mfma"] if "avx512f" in flags else ["-mavx2", "-mfma"]
    lanes = 16 if "avx512f" in flags else 8
    src, exe = workdir / "fma.c", workdir / "fma"
    src.write_text(_FMA_SOURCE)
    if subprocess.run([cc, "-O2", *isa, "-o", str(exe), str(src)], capture_output=True).returncode != 0:
        return None
    flops = iterations * 12 * lanes * 2

    def batch(copies: int) -> list[float]:
        """GFLOP/s of each of ``copies`` simultaneous runs."""
        procs = [subprocess.Popen([str(exe), str(iterations)], stdout=subprocess.PIPE, text=True) for _ in range(copies)]
        return [flops / float(p.communicate()[0].split()[0]) / 1e9 for p in procs]

    one = [batch(1)[0] for _ in range(5)]
    together = [sum(batch(cores)) for _ in range(3)]
    return {
        "per_core_gflops": max(one),
        "per_core_runs": one,
        "all_cores_gflops": max(together),
        "all_cores_runs": together,
        "isa": "AVX-512" if lanes == 16 else "AVX2",
        "note": "best of 5 single runs and of 3 runs of one copy per core",
    }


def model_macs(arch: str, size: int = SIZE) -> int:
    """Multiply-accumulates of one image's forward pass, from the config.

    Sum over 3x3 convolutions (``same`` padding) of ``H*W*Cin*Cout*9``, each at
    its stage's resolution, plus ``in*out`` per dense layer. Batch norm, ReLU
    and pooling are ignored (well under 0.1%).

    Args:
        arch: A preset name, e.g. ``"vgg16"``.
        size: Input side length.

    Returns:
        MACs per image.
    """
    from parity.core.config import PRESETS, layer_plan

    config = PRESETS[arch]
    side = size
    total = 0
    for spec in layer_plan(config):
        if spec.kind == "conv":
            total += side * side * spec.in_features * spec.out_features * 9
        elif spec.kind == "pool":
            side //= 2
        elif spec.kind == "dense":
            total += spec.in_features * spec.out_features
    return total


# --------------------------------------------------------------------------
# System load
# --------------------------------------------------------------------------


def system_busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (``/proc/stat``).

    Returns:
        user + nice + system + irq + softirq + steal, in seconds; 0 if unreadable.
    """
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
    except OSError:
        return 0.0
    ticks = [int(x) for x in parts[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(cores: int, max_wait_s: float, window_s: float = 0.25) -> float:
    """Waits until other processes use less than ``QUIET_SHARE`` of the machine.

    Call it while this process and its workers are idle: all CPU use seen in
    ``/proc/stat`` during a window is then someone else's.

    Args:
        cores: CPUs of the machine.
        max_wait_s: Give up after this long.
        window_s: Length of each probe.

    Returns:
        Seconds waited.
    """
    t0 = time.perf_counter()
    while True:
        busy0 = system_busy_seconds()
        time.sleep(window_s)
        if (system_busy_seconds() - busy0) / (window_s * cores) < QUIET_SHARE:
            break
        if time.perf_counter() - t0 >= max_wait_s:
            break
    return time.perf_counter() - t0


def _timed(fn: Callable[[], object], calls: int) -> dict[str, float]:
    """Runs ``fn`` ``calls`` times; wall, own CPU, others' CPU and page faults.

    Args:
        fn: The work of one call.
        calls: How many calls make the sample.

    Returns:
        ``{"wall", "cpu", "others_cpu", "minflt"}``; ``others_cpu`` is the CPU
        time other processes took meanwhile.
    """
    busy0 = system_busy_seconds()
    cpu0 = time.process_time()
    flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0
    others = max(0.0, system_busy_seconds() - busy0 - cpu)
    return {"wall": wall, "cpu": cpu, "others_cpu": others, "minflt": float(flt)}


# --------------------------------------------------------------------------
# Workers: one framework per process, driven over JSON lines
# --------------------------------------------------------------------------


class _TorchWorker:
    """torchvision models in eager mode."""

    def __init__(self, opts: dict[str, Any]) -> None:
        import torch
        import torchvision

        self.torch = torch
        if opts.get("threads"):
            torch.set_num_threads(int(opts["threads"]))
        self.channels_last = bool(opts.get("channels_last"))
        torch.manual_seed(0)
        self.models: dict[str, Any] = {}
        for name in opts["models"]:
            model = getattr(torchvision.models, name)(weights=None).eval()
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            self.models[name] = model
        self.inputs: dict[int, Any] = {}
        self.info = {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "parallel_backend": "OpenMP" if "OpenMP" in torch.__config__.parallel_info() else "other",
            "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "channels_last": self.channels_last,
        }

    def _input(self, batch: int) -> Any:
        """A fixed random NCHW batch (channels_last strides if asked), made once per size."""
        if batch not in self.inputs:
            gen = self.torch.Generator().manual_seed(batch)
            x = self.torch.randn(batch, 3, SIZE, SIZE, generator=gen)
            if self.channels_last:
                x = x.contiguous(memory_format=self.torch.channels_last)
            self.inputs[batch] = x
        return self.inputs[batch]

    def call(self, model: str, batch: int, path: str, steps: int) -> tuple[Callable[[], object], int]:
        """The work of one sample.

        Args:
            model: A torchvision model name this worker built.
            batch: Batch size.
            path: Only ``"eager"``.
            steps: Batches per sample.

        Returns:
            A function running one forward pass under ``torch.no_grad`` and how many times to call it.

        Raises:
            ValueError: On another path.
        """
        if path != "eager":
            raise ValueError(f"torch worker runs path 'eager'. Received: path={path!r}")
        m, x, torch = self.models[model], self._input(batch), self.torch

        def fn() -> object:
            with torch.no_grad():
                return m(x)

        return fn, steps

    def gemm(self, n: int) -> Callable[[], object]:
        """Returns a function computing one square fp32 matmul of side ``n``."""
        a = self.torch.randn(n, n)
        b = self.torch.randn(n, n)
        return lambda: self.torch.mm(a, b)


class _KerasWorker:
    """vgg_keras and keras.applications models on the TensorFlow backend."""

    def __init__(self, opts: dict[str, Any]) -> None:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import numpy as np
        import tensorflow as tf

        if opts.get("threads"):
            tf.config.threading.set_intra_op_parallelism_threads(int(opts["threads"]))
            tf.config.threading.set_inter_op_parallelism_threads(int(opts["threads"]))
        import keras

        import vgg_keras

        self.np, self.tf = np, tf
        keras.utils.set_random_seed(0)
        builders: dict[str, Callable[[], Any]] = {
            "vgg16": lambda: vgg_keras.VGG16(weights=None, classifier_activation=None),
            "vgg11_bn": lambda: vgg_keras.VGG11_BN(weights=None, classifier_activation=None),
            "apps_vgg16": lambda: keras.applications.VGG16(weights=None, classifier_activation=None),
        }
        self.models = {name: builders[name]() for name in opts["models"]}
        self.compiled: dict[tuple[str, bool], Any] = {}
        self.inputs: dict[int, Any] = {}
        self.arrays: dict[tuple[int, int], Any] = {}
        try:
            from tensorflow.python.util import _pywrap_util_port

            onednn = bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):
            onednn = None
        self.info = {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "onednn": onednn,
            "data_format": keras.config.image_data_format(),
        }

    def _array(self, batch: int, copies: int = 1) -> Any:
        """A fixed random NHWC numpy array of ``batch * copies`` images, made once."""
        key = (batch, copies)
        if key not in self.arrays:
            rng = self.np.random.default_rng(batch)
            self.arrays[key] = rng.standard_normal((batch * copies, SIZE, SIZE, 3), dtype=self.np.float32)
        return self.arrays[key]

    def _input(self, batch: int) -> Any:
        """The same batch as a TensorFlow tensor, so calls do not convert it each time."""
        if batch not in self.inputs:
            self.inputs[batch] = self.tf.constant(self._array(batch))
        return self.inputs[batch]

    def _function(self, model: str, jit: bool) -> Any:
        """``tf.function`` of the inference call, with or without XLA, made once per model."""
        key = (model, jit)
        if key not in self.compiled:
            m = self.models[model]
            self.compiled[key] = self.tf.function(lambda t: m(t, training=False), jit_compile=jit)
        return self.compiled[key]

    def call(self, model: str, batch: int, path: str, steps: int) -> tuple[Callable[[], object], int]:
        """The work of one sample.

        ``predict`` runs once over ``steps`` batches (its per-call set-up is
        part of what it costs); the other paths run ``steps`` single-batch calls.

        Args:
            model: ``"vgg16"``, ``"vgg11_bn"`` or ``"apps_vgg16"``.
            batch: Batch size.
            path: ``"direct"``, ``"predict"``, ``"xla"`` or ``"graph"``.
            steps: Batches per sample.

        Returns:
            A function and how many times to call it.

        Raises:
            ValueError: On an unknown path.
        """
        np, m = self.np, self.models[model]
        if path == "direct":
            x = self._input(batch)
            return (lambda: np.asarray(m(x, training=False))), steps
        if path == "predict":
            xs = self._array(batch, steps)
            return (lambda: m.predict(xs, batch_size=batch, verbose=0)), 1
        if path in ("xla", "graph"):
            f, x = self._function(model, path == "xla"), self._input(batch)
            return (lambda: np.asarray(f(x))), steps
        raise ValueError(f"keras worker runs direct, predict, xla or graph. Received: path={path!r}")

    def gemm(self, n: int) -> Callable[[], object]:
        """Returns a function computing one square fp32 matmul of side ``n``."""
        a = self.tf.random.normal((n, n))
        b = self.tf.random.normal((n, n))
        return lambda: self.np.asarray(self.tf.linalg.matmul(a, b))


def _serve(kind: str, opts: dict[str, Any]) -> None:
    """Worker main loop: one JSON request per stdin line, one JSON reply per line.

    The reply channel is a duplicate of the original stdout; file descriptor 1
    is pointed at stderr so that library output cannot corrupt the protocol.
    """
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    t0 = time.perf_counter()
    try:
        worker: Any = _TorchWorker(opts) if kind == "torch" else _KerasWorker(opts)
        hello = {"ok": True, "info": worker.info, "setup_s": time.perf_counter() - t0}
    except Exception:
        replies.write(json.dumps({"ok": False, "error": traceback.format_exc()}) + "\n")
        return
    replies.write(json.dumps(hello) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        try:
            if op == "quit":
                replies.write(json.dumps({"ok": True}) + "\n")
                return
            if op == "prepare":
                fn, _ = worker.call(request["model"], request["batch"], request["path"], 1)
                t = time.perf_counter()
                fn()  # tracing, XLA compilation, oneDNN primitive creation
                first = time.perf_counter() - t
                warm = min(_timed(fn, 1)["wall"] for _ in range(2))
                steps = max(1, round(request["target_s"] / warm))
                reply: dict[str, Any] = {"first_call_s": first, "warm_s": warm, "steps": steps}
                if request["path"] == "predict":  # warm the multi-batch input too
                    fn, calls = worker.call(request["model"], request["batch"], "predict", steps)
                    _timed(fn, calls)
            elif op == "measure":
                fn, calls = worker.call(request["model"], request["batch"], request["path"], request["steps"])
                reply = _timed(fn, calls)
                reply["images"] = request["batch"] * request["steps"]
            elif op == "gemm":
                fn = worker.gemm(request["n"])
                fn()
                reply = _timed(fn, request["reps"])
                reply["gflops"] = 2 * request["n"] ** 3 * request["reps"] / reply["wall"] / 1e9
            else:
                raise ValueError(f"unknown op {op!r}")
            reply["ok"] = True
        except Exception:
            reply = {"ok": False, "error": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")


@dataclass
class WorkerSpec:
    """One worker process to start.

    Attributes:
        label: Name in tables, e.g. ``"torch eager"``.
        kind: ``"torch"`` or ``"keras"``.
        models: Models it builds.
        paths: Paths it measures on each (model, batch) cell.
        env: Extra environment variables.
        opts: Worker options (``threads``, ``channels_last``).
        baseline: Whether ratios are taken against this worker's samples.
    """

    label: str
    kind: str
    models: tuple[str, ...]
    paths: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    opts: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False


class Worker:
    """A running worker process."""

    def __init__(self, spec: WorkerSpec, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.spec = spec
        self.log = log
        opts = {**spec.opts, "models": list(spec.models)}
        self._err = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", spec.kind, "--serve-opts", json.dumps(opts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            cwd=cwd,
            env={**env, **spec.env},
            text=True,
        )
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker {self.spec.label!r} exited (code {self.proc.returncode}); its log ends:\n{tail}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"worker {self.spec.label!r} failed:\n{reply.get('error')}")
        return reply

    def request(self, **request: Any) -> dict[str, Any]:
        """Sends one request and waits for its reply."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """Asks the worker to exit and reaps it."""
        try:
            if self.proc.poll() is None:
                self.request(op="quit")
        except (RuntimeError, BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


# --------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and range of a sample.

    Args:
        values: At least one number.

    Returns:
        ``{"median", "q1", "q3", "min", "max", "n"}``.
    """
    v = sorted(values)
    if len(v) >= 2:
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
    else:
        q1 = q3 = v[0]
    return {"median": statistics.median(v), "q1": q1, "q3": q3, "min": v[0], "max": v[-1], "n": len(v)}


# --------------------------------------------------------------------------
# Section 1 and 4: throughput
# --------------------------------------------------------------------------


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
            WorkerSpec("torch eager, channels_last + heap kept", "torch", ("vgg16",), ("eager",), env=keep_heap, opts={"channels_last": True}),
            WorkerSpec("keras, 1 thread", "keras", ("vgg16",), ("direct",), opts={"threads": 1}),
            WorkerSpec("keras, oneDNN off", "keras", ("vgg16",), ("direct", "graph"), env={"TF_ENABLE_ONEDNN_OPTS": "0"}),
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


def run_throughput(
    args: argparse.Namespace, env: dict[str, str], workdir: Path, peak: dict[str, Any], fma: dict[str, Any] | None
) -> dict[str, Any]:
    """Section 1 and 4: interleaved throughput rounds across worker processes.

    Args:
        args: Parsed command line.
        env: Environment of the workers.
        workdir: Folder for worker logs.
        peak: Output of :func:`cpu_peak`.
        fma: Output of :func:`measure_fma_peak`, or ``None``.

    Returns:
        Worker info, warm-up figures, raw samples and per-cell summaries.
    """
    specs = throughput_specs(args.diagnose)
    batches = tuple(args.batches)
    workers: list[Worker] = []
    try:
        for i, spec in enumerate(specs):
            t = time.perf_counter()
            workers.append(Worker(spec, env, args.project_root, workdir / f"worker{i}.log"))
            _say(f"  started {spec.label} ({time.perf_counter() - t:.1f} s)")
        cells = _cells(specs, batches)
        prep: dict[str, dict[str, Any]] = {}
        for i, model, batch, path in cells:
            r = workers[i].request(op="prepare", model=model, batch=batch, path=path, target_s=args.target_seconds)
            prep[_key(i, model, batch, path)] = r
            _say(f"  warm-up {specs[i].label:<38} {model:<10} b{batch} {path:<8} first call {r['first_call_s']:6.2f} s, then {r['warm_s']:.3f} s/batch")
        samples: dict[str, list[dict[str, float]]] = {_key(*c): [] for c in cells}
        budget = args.quiet_budget
        waited = 0.0
        gemm: dict[str, list[dict[str, float]]] = {s.label: [] for s in specs if s.kind in ("torch", "keras") and not s.opts and not s.env}
        for r in range(args.rounds):
            order = cells if r % 2 == 0 else cells[::-1]
            t = time.perf_counter()
            for i, model, batch, path in order:
                key = _key(i, model, batch, path)
                if budget - waited > 0:
                    waited += wait_for_quiet(peak["cores"], min(args.quiet_wait, budget - waited))
                samples[key].append(workers[i].request(op="measure", model=model, batch=batch, path=path, steps=prep[key]["steps"]))
            for i, spec in enumerate(specs):
                if spec.label in gemm:
                    gemm[spec.label].append(workers[i].request(op="gemm", n=2048, reps=3))
            quiet = sum(_quiet(samples[_key(*c)][-1], peak["cores"]) for c in cells)
            _say(f"  round {r + 1}/{args.rounds} done in {time.perf_counter() - t:.0f} s, {quiet}/{len(cells)} samples quiet, "
                 f"{waited:.0f} s of the {budget:.0f} s quiet-wait budget used (load avg {os.getloadavg()[0]:.2f})")
    finally:
        for w in workers:
            w.close()
    return {
        "workers": [{"label": s.label, "env": s.env, "opts": s.opts, **w.hello["info"], "setup_s": w.hello["setup_s"]} for s, w in zip(specs, workers)],
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


def _quiet(sample: dict[str, float], cores: int) -> bool:
    """Whether other processes left this sample (nearly) the whole machine."""
    return sample["others_cpu"] / (sample["wall"] * cores) < QUIET_SHARE


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
        peak: Output of :func:`cpu_peak`.
        fma: Output of :func:`measure_fma_peak`, or ``None``.

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
        quiet = [s["images"] / s["wall"] for s in got if _quiet(s, peak["cores"])]
        if quiet:
            row["quiet_images_per_s"] = summarize(quiet)
            row["quiet_peak_fraction"] = statistics.median(quiet) * 2 * gmac / peak["gflops"]
        ref = samples.get(_key(base, arch, batch, "eager"))
        if ref and i != base:
            row["ratio_to_torch"] = summarize([r / (s["images"] / s["wall"]) for r, s in zip(rate, ref)])
            pairs = [(m, s) for m, s in zip(got, ref) if _quiet(m, peak["cores"]) and _quiet(s, peak["cores"])]
            if pairs:
                row["quiet_ratio_to_torch"] = summarize([(m["images"] / m["wall"]) / (s["images"] / s["wall"]) for m, s in pairs])
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


# --------------------------------------------------------------------------
# Sections 2 and 3: child processes
# --------------------------------------------------------------------------


@dataclass
class ChildRun:
    """One measured child process.

    Attributes:
        label: Name in tables.
        wall_s: Wall time from spawn to exit.
        peak_mib: The child's peak RSS (``ru_maxrss``).
        cpu_s: The child's user + system CPU time.
        others_share: CPU other processes used meanwhile, as a share of all cores.
        stdout: What it printed.
    """

    label: str
    wall_s: float
    peak_mib: float
    cpu_s: float
    others_share: float
    stdout: str = ""


def run_child(label: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path, cores: int) -> ChildRun:
    """Runs one child to completion and takes its own resource usage.

    ``os.wait4`` returns the usage of exactly that child, so the peak RSS is
    its own, not the maximum over earlier children.

    Args:
        label: Name in tables.
        argv: Command line.
        env: Environment.
        cwd: Working directory.
        log: File receiving the child's stderr.
        cores: CPUs of the machine, to express others' CPU as a share.

    Returns:
        The measurements.

    Raises:
        RuntimeError: If the child fails.
    """
    with open(log, "wb") as err, tempfile.TemporaryFile() as out:
        busy0 = system_busy_seconds()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        busy = system_busy_seconds() - busy0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    cpu = usage.ru_utime + usage.ru_stime
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{label} failed (exit code {proc.returncode}): {' '.join(argv)}\n{tail}")
    return ChildRun(label, wall, usage.ru_maxrss / 1024, cpu, max(0.0, busy - cpu) / (wall * cores), stdout)


def _child_main(argv: list[str]) -> None:
    """Entry point of the single-purpose children (``--child NAME ARGS...``)."""
    name, rest = argv[0], argv[1:]
    if name == "imports":
        if "torch" in rest:
            import torch  # noqa: F401
            import torchvision  # noqa: F401
        import keras  # noqa: F401

        import vgg_keras  # noqa: F401
    elif name == "make-pth":
        import torch
        import torchvision

        torch.manual_seed(0)
        torch.save(torchvision.models.vgg16().state_dict(), rest[0])
    elif name == "apps-weights":
        import keras

        keras.applications.VGG16(weights=None, classifier_activation=None).save_weights(rest[0])
    elif name == "floor":
        _child_floor(rest[0], rest[1])
    elif name == "keras-route":
        _child_keras_route(rest[0], rest[1])
    elif name == "cold":
        _child_cold(rest[0], rest[1], float(rest[2]))
    elif name == "trace-convert":
        _child_trace_convert(rest)
    else:
        raise SystemExit(f"unknown child {name!r}")


def _child_floor(pth: str, out: str) -> None:
    """The floor of any conversion: load a .pth and write its tensors to HDF5 as they are (no layout change)."""
    import h5py
    import torch
    import torchvision  # noqa: F401  (the same imports as the converter, torch first)

    import keras  # noqa: F401

    state = torch.load(pth, map_location="cpu", weights_only=True)
    with h5py.File(out, "w") as f:
        for key, tensor in state.items():
            f[key] = tensor.numpy()


def _child_keras_route(pth: str, out: str) -> None:
    """Conversion through a Keras model: load a .pth, build the model, assign, ``save_weights``; no checks."""
    import torch
    import torchvision  # noqa: F401  (the same imports as the converter, torch first)

    import keras  # noqa: F401

    import vgg_keras
    from parity.core.config import PRESETS
    from parity.converter import weight_map

    state = torch.load(pth, map_location="cpu", weights_only=True)
    config = PRESETS["vgg16"]
    model = vgg_keras.build_vgg(config, classifier_activation=None)
    layers = {layer.name: layer for layer in model.layers}
    for m in weight_map(config):
        layers[m.keras_layer].weights[m.keras_index].assign(m.transform(state[m.torch_key].numpy()))
    model.save_weights(out)


def _child_cold(which: str, path: str, spawned: float) -> None:
    """Fresh process to first logits; prints timestamps relative to the spawn."""
    t_start = time.time()
    import numpy as np

    import keras

    if which == "vgg_keras":
        import vgg_keras
    t_imported = time.time()
    if which == "vgg_keras":
        model = vgg_keras.VGG16(weights=path, classifier_activation=None)
    else:
        model = keras.applications.VGG16(weights=path, classifier_activation=None)
    t_loaded = time.time()
    x = np.random.default_rng(0).standard_normal((1, SIZE, SIZE, 3), dtype=np.float32)
    logits = np.asarray(model(x, training=False))
    t_logits = time.time()
    assert logits.shape == (1, 1000) and np.isfinite(logits).all()
    extra: dict[str, float] = {}
    if which == "vgg_keras":  # what the sidecar check inside the load costs
        from parity.core.checkpoint import file_sha256

        t = time.perf_counter()
        file_sha256(path)
        extra["sha256_s"] = time.perf_counter() - t
    result = {
        "interpreter_s": t_start - spawned,
        "imports_s": t_imported - t_start,
        "build_and_load_s": t_loaded - t_imported,
        "first_call_s": t_logits - t_loaded,
        "to_first_logits_s": t_logits - spawned,
        "rss_after_mib": _rss_mib(),
        **extra,
    }
    print(json.dumps(result))


def _rss_mib() -> float:
    """Current RSS of this process in MiB (0 where /proc is absent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _child_trace_convert(cli_args: list[str]) -> None:
    """Runs ``parity.convert`` in-process, reporting RSS and peak RSS per phase.

    The peak is reset (``/proc/self/clear_refs``) before each phase, so each
    phase's own high-water mark is seen. Phases whose function has been renamed
    are simply not reported.
    """
    import functools

    import torch  # noqa: F401
    import torchvision  # noqa: F401

    import keras  # noqa: F401

    import parity.conversion as pc
    import parity.convert as cli
    import parity.converter as pconv
    import parity.core.weights_file as wf

    def status() -> dict[str, float]:
        """VmRSS and VmHWM of this process in MiB."""
        d = {}
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    d[line.split(":")[0]] = int(line.split()[1]) / 1024
        return d

    phases: list[dict[str, Any]] = [{"phase": "imports", "rss_mib": status()["VmRSS"], "peak_mib": status()["VmHWM"], "s": 0.0}]

    def wrap(module: Any, name: str) -> None:
        """Replaces ``module.name`` by a version that records RSS and peak RSS."""
        f = getattr(module, name, None)
        if f is None:
            return

        @functools.wraps(f)
        def traced(*a: Any, **k: Any) -> Any:
            """The wrapped phase."""
            try:
                with open("/proc/self/clear_refs", "w") as cr:
                    cr.write("5")
            except OSError:
                pass
            t = time.perf_counter()
            result = f(*a, **k)
            s = status()
            phases.append({"phase": name, "rss_mib": s["VmRSS"], "peak_mib": s["VmHWM"], "s": time.perf_counter() - t})
            return result

        setattr(module, name, traced)

    for module, name in [
        (pc, "_random_state_dict"),
        (pc, "load_checkpoint"),
        (pconv, "write_keras_weights"),
        (pc, "torch_reference"),
        (pc, "verify_file"),
        (wf.StagedWeights, "commit"),
    ]:
        wrap(module, name)
    code = cli.main(cli_args)
    print(json.dumps({"returncode": code, "phases": phases}))
    if code:
        raise SystemExit(code)


def run_conversion_and_cold(args: argparse.Namespace, env: dict[str, str], workdir: Path, cores: int) -> dict[str, Any]:
    """Sections 2 and 3: conversion cost and cold load.

    Args:
        args: Parsed command line.
        env: Environment of the children.
        workdir: Folder for the files made and the logs.
        cores: CPUs of the machine.

    Returns:
        Runs, summaries and file sizes.
    """
    py = sys.executable
    me = str(Path(__file__).resolve())
    cwd = args.project_root
    pth = workdir / "vgg16_random.pth"
    converted = workdir / "vgg16_cli.weights.h5"
    apps_file = workdir / "vgg16_apps.weights.h5"

    def child(label: str, argv: list[str]) -> ChildRun:
        """Runs and logs one measured child."""
        run = run_child(label, argv, env, cwd, workdir / f"{label.replace(' ', '_').replace('/', '_')}.log", cores)
        _say(f"  {label:<40} {run.wall_s:6.1f} s  peak RSS {run.peak_mib:7.0f} MiB  (others' CPU {run.others_share:.0%})")
        return run

    _say("  preparing files")
    child("make .pth", [py, me, "--child", "make-pth", str(pth)])
    child("make keras.applications file", [py, me, "--child", "apps-weights", str(apps_file)])
    cli = [py, "-m", "parity.convert", "vgg16", "--init", "random", "--seed", "0", "--force", "--quiet", "--output"]
    commands: dict[str, list[str]] = {
        "imports torch+torchvision+keras": [py, me, "--child", "imports", "torch"],
        "imports keras": [py, me, "--child", "imports"],
        "CLI --init random --no-verify": [*cli, str(converted), "--no-verify"],
        "CLI --init random (verify)": [*cli, str(workdir / "vgg16_cli_verified.weights.h5")],
        "CLI --checkpoint .pth --no-verify": [
            py, "-m", "parity.convert", "vgg16", "--checkpoint", str(pth), "--no-verify", "--force", "--quiet",
            "--output", str(workdir / "vgg16_ckpt.weights.h5"),
        ],
        "floor: load .pth, write its tensors to HDF5": [py, me, "--child", "floor", str(pth), str(workdir / "vgg16_floor.h5")],
        "Keras route: load .pth, build, assign, save_weights": [
            py, me, "--child", "keras-route", str(pth), str(workdir / "vgg16_keras_route.weights.h5"),
        ],
    }
    runs: dict[str, list[ChildRun]] = {k: [] for k in commands}
    names = list(commands)
    for r in range(args.conversion_repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            runs[name].append(child(name, commands[name]))
    trace: dict[str, list[dict[str, Any]]] = {}
    if not args.quick:
        for label, extra in [("--no-verify", ["--no-verify"]), ("verifying", [])]:
            t = child(f"phase trace of the CLI ({label})", [py, me, "--child", "trace-convert", "vgg16", "--init", "random",
                                                            *extra, "--force", "--quiet", "--output", str(workdir / "vgg16_trace.weights.h5")])
            trace[label] = json.loads(t.stdout.strip().splitlines()[-1])["phases"]

    cold: dict[str, list[ChildRun]] = {"vgg_keras.VGG16(weights=PATH)": [], "keras.applications.VGG16(weights=PATH2)": []}
    for r in range(args.cold_repeats):
        for which, label in ([("vgg_keras", converted), ("apps", apps_file)] if r % 2 == 0 else [("apps", apps_file), ("vgg_keras", converted)]):
            name = "vgg_keras.VGG16(weights=PATH)" if which == "vgg_keras" else "keras.applications.VGG16(weights=PATH2)"
            cold[name].append(child(f"cold {which}", [py, me, "--child", "cold", which, str(label), repr(time.time())]))

    checkpoint_mib = pth.stat().st_size / MIB
    base_torch = statistics.median(r.peak_mib for r in runs["imports torch+torchvision+keras"])
    base_keras = statistics.median(r.peak_mib for r in runs["imports keras"])
    conv_rows = []
    for name, rs in runs.items():
        peak = statistics.median(r.peak_mib for r in rs)
        row = {
            "run": name,
            "wall_s": summarize([r.wall_s for r in rs]),
            "peak_mib": peak,
            "peak_max_mib": max(r.peak_mib for r in rs),
            "others_share": statistics.median(r.others_share for r in rs),
        }
        if not name.startswith("imports"):
            row["above_imports_mib"] = peak - base_torch
            row["x_checkpoint"] = (peak - base_torch) / checkpoint_mib
        conv_rows.append(row)
    cold_rows = []
    for name, rs in cold.items():
        parsed = [json.loads(r.stdout.strip().splitlines()[-1]) for r in rs]
        row = {
            "run": name,
            "wall_s": summarize([r.wall_s for r in rs]),
            "peak_mib": statistics.median(r.peak_mib for r in rs),
            "above_imports_mib": statistics.median(r.peak_mib for r in rs) - base_keras,
            "others_share": statistics.median(r.others_share for r in rs),
            **{k: summarize([p[k] for p in parsed]) for k in parsed[0]},
        }
        cold_rows.append(row)
    return {
        "checkpoint_mib": checkpoint_mib,
        "files_mib": {p.name: p.stat().st_size / MIB for p in (pth, converted, apps_file) if p.exists()},
        "imports_peak_mib": {"torch+torchvision+keras": base_torch, "keras": base_keras},
        "conversion": conv_rows,
        "conversion_runs": {k: [asdict(r) for r in v] for k, v in runs.items()},
        "trace": trace,
        "cold": cold_rows,
        "cold_runs": {k: [asdict(r) for r in v] for k, v in cold.items()},
    }


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _rng(s: dict[str, float], fmt: str = ".2f") -> str:
    """``median (min–max)`` of a :func:`summarize` result."""
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})"


def markdown(results: dict[str, Any]) -> str:
    """Renders the results as markdown tables.

    Args:
        results: What :func:`main` collected.

    Returns:
        The report.
    """
    out: list[str] = []
    peak = results["peak"]
    out.append(f"CPU: {peak['cpu']}, {peak['cores']} cores{' (virtual machine)' if peak['hypervisor'] else ''}; "
               f"peak {peak['gflops']:.0f} GFLOP/s fp32 = {peak['cores']} cores x {peak['ghz']:.3f} GHz ({peak['ghz_source']}) "
               f"x {peak['flops_per_cycle']} FLOP/cycle ({peak['reason']}).")
    fma = results.get("fma")
    if fma:
        out.append(f"Measured ({fma['isa']} FMA chains in registers, {fma['note']}): {fma['per_core_gflops']:.0f} GFLOP/s on one core "
                   f"(= {fma['per_core_gflops'] / peak['flops_per_cycle']:.2f} GHz x {peak['flops_per_cycle']} FLOP/cycle), "
                   f"{fma['all_cores_gflops']:.0f} GFLOP/s with one copy per core.")
    out.append("")
    tp = results.get("throughput")
    if tp:
        for w in tp["workers"]:
            extras = ", ".join(f"{k}={v}" for k, v in w.items() if k not in ("label", "env", "opts", "setup_s"))
            out.append(f"- {w['label']}: {extras}" + (f"; env {w['env']}" if w["env"] else ""))
        out.append("")
        out.append(f"Throughput at {SIZE}x{SIZE}, images/s: median (min–max) over {results['args']['rounds']} rounds. "
                   "Ratio = this path / torch eager in the same round (>1: faster than torch). "
                   "Others = CPU used by other processes during the samples, as a share of all cores.")
        out.append("")
        out.append("% of peak: of the theoretical peak above; % measured: of the cores x one core's measured FMA rate; "
                   "per CPU-s: FLOP/s per CPU-second the process got, as % of one core's measured rate.")
        out.append("")
        out.append("| model | batch | runtime / path | images/s | IQR | ratio to torch | % of peak | % measured | per CPU-s | CPU/wall | others | page faults/image |")
        out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in tp["summary"]["rows"]:
            if row["model"] == "apps_vgg16":
                continue
            s = row["images_per_s"]
            ratio = _rng(row["ratio_to_torch"]) if "ratio_to_torch" in row else "1"
            label = row["worker"] if row["worker"].startswith("torch") else f"{row['worker']} {row['path']}"
            measured = f"{row['measured_peak_fraction']:.0%}" if "measured_peak_fraction" in row else "-"
            per_cpu = f"{row['per_cpu_second_fraction']:.0%}" if "per_cpu_second_fraction" in row else "-"
            out.append(f"| {row['model']} | {row['batch']} | {label} | {_rng(s)} | {s['q1']:.2f}–{s['q3']:.2f} | {ratio} | "
                       f"{row['peak_fraction']:.0%} | {measured} | {per_cpu} | {row['cpu_per_wall']:.2f} | {row['others_share']:.0%} | "
                       f"{row['minflt_per_image']:.0f} |")
        out.append("")
        rows = [r for r in tp["summary"]["rows"] if r["model"] != "apps_vgg16"]
        quiet_rows = [r for r in rows if "quiet_images_per_s" in r]
        all_quiet = all(r.get("quiet_images_per_s", {}).get("n") == r["images_per_s"]["n"] for r in rows)
        if all_quiet:
            out.append(f"Every sample was quiet (other processes used < {QUIET_SHARE:.0%} of the machine).")
            out.append("")
        elif quiet_rows:
            out.append(f"The same, only samples during which other processes used < {QUIET_SHARE:.0%} of the machine "
                       "(ratios: only rounds where both samples were quiet); n = number of such samples.")
            out.append("")
            out.append("| model | batch | runtime / path | images/s quiet | n | ratio to torch, quiet | % of peak |")
            out.append("|---|---:|---|---:|---:|---:|---:|")
            for row in quiet_rows:
                q = row["quiet_images_per_s"]
                label = row["worker"] if row["worker"].startswith("torch") else f"{row['worker']} {row['path']}"
                if "quiet_ratio_to_torch" in row:
                    ratio = f"{_rng(row['quiet_ratio_to_torch'])} (n={row['quiet_ratio_to_torch']['n']})"
                else:
                    ratio = "1" if row["worker"] == tp["workers"][0]["label"] else "-"
                out.append(f"| {row['model']} | {row['batch']} | {label} | {_rng(q)} | {q['n']} | {ratio} | {row['quiet_peak_fraction']:.0%} |")
            out.append("")
        else:
            out.append(f"No sample was quiet (other processes used >= {QUIET_SHARE:.0%} of the machine throughout).")
            out.append("")
        apps = [r for r in tp["summary"]["rows"] if r["model"] == "apps_vgg16"]
        if apps:
            out.append("vgg_keras VGG16 (adaptive pool + dropout head) against keras.applications.VGG16, same rounds: "
                       "ratio = vgg_keras / keras.applications per round.")
            out.append("")
            out.append("| batch | path | vgg_keras images/s | keras.applications images/s | ratio |")
            out.append("|---:|---|---:|---:|---:|")
            mine = {(r["batch"], r["path"]): r for r in tp["summary"]["rows"] if r["model"] == "vgg16" and r["worker"] == "keras"}
            for row in apps:
                m = mine.get((row["batch"], row["path"]))
                out.append(f"| {row['batch']} | {row['path']} | {_rng(m['images_per_s']) if m else '-'} | {_rng(row['images_per_s'])} | "
                           f"{_rng(row['vgg_keras_over_apps'], '.3f')} |")
            out.append("")
        if tp["summary"]["gemm"]:
            out.append("Square fp32 matmul, 2048x2048, GFLOP/s: " + "; ".join(
                f"{k}: {_rng(v, '.0f')}" for k, v in tp["summary"]["gemm"].items()))
            out.append("")
    cc = results.get("conversion")
    if cc:
        out.append(f"Conversion of vgg16 (checkpoint {cc['checkpoint_mib']:.0f} MiB); peak RSS of the process, "
                   f"'above imports' subtracts the import footprint of torch+torchvision+keras+vgg_keras "
                   f"({cc['imports_peak_mib']['torch+torchvision+keras']:.0f} MiB).")
        out.append("")
        out.append("| run | wall s | peak RSS MiB | above imports MiB | x checkpoint | others |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for row in cc["conversion"]:
            above = f"{row['above_imports_mib']:.0f}" if "above_imports_mib" in row else "-"
            mult = f"{row['x_checkpoint']:.2f}" if "x_checkpoint" in row else "-"
            out.append(f"| {row['run']} | {_rng(row['wall_s'], '.1f')} | {row['peak_mib']:.0f} | {above} | {mult} | {row['others_share']:.0%} |")
        out.append("")
        for label, phases in (cc.get("trace") or {}).items():
            out.append(f"Phases of `python -m parity.convert vgg16 --init random` ({label}; RSS after the phase; peak within it):")
            out.append("")
            out.append("| phase | s | RSS after MiB | peak in phase MiB |")
            out.append("|---|---:|---:|---:|")
            for p in phases:
                out.append(f"| {p['phase']} | {p['s']:.1f} | {p['rss_mib']:.0f} | {p['peak_mib']:.0f} |")
            out.append("")
        out.append("Cold load, fresh process to first logits (batch 1); files: "
                   + ", ".join(f"{k} {v:.0f} MiB" for k, v in cc["files_mib"].items() if not k.endswith(".pth"))
                   + f"; 'above imports' subtracts the keras + vgg_keras import footprint ({cc['imports_peak_mib']['keras']:.0f} MiB).")
        out.append("")
        out.append("| load | to first logits s | interpreter s | imports s | build + load s | first call s | peak RSS MiB | above imports MiB |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for row in cc["cold"]:
            out.append(f"| {row['run']} | {_rng(row['to_first_logits_s'])} | {row['interpreter_s']['median']:.2f} | {row['imports_s']['median']:.2f} | "
                       f"{row['build_and_load_s']['median']:.2f} | {row['first_call_s']['median']:.2f} | {row['peak_mib']:.0f} | {row['above_imports_mib']:.0f} |")
        sha = [r for r in cc["cold"] if "sha256_s" in r]
        if sha:
            out.append("")
            out.append(f"Of vgg_keras' build + load, the sidecar's sha256 check takes {sha[0]['sha256_s']['median']:.2f} s (measured after the logits).")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def _say(msg: str) -> None:
    """Progress message on stderr (stdout carries the report)."""
    print(msg, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short smoke run: batch 1, 2 rounds, one repeat of each process")
    p.add_argument("--out", type=Path, help="write all results and raw samples to this JSON file")
    p.add_argument("--sections", default="throughput,conversion", help="comma list of throughput, conversion (default both; conversion includes cold load)")
    p.add_argument("--rounds", type=int, help="throughput rounds (default 9; quick 2)")
    p.add_argument("--target-seconds", type=float, help="approximate duration of one sample (default 0.5; quick 0.15)")
    p.add_argument("--batches", type=int, nargs="+", help=f"batch sizes (default {' '.join(map(str, BATCHES))}; quick 1)")
    p.add_argument("--conversion-repeats", type=int, help="runs of each conversion process (default 2; quick 1)")
    p.add_argument("--cold-repeats", type=int, help="runs of each cold load (default 3; quick 1)")
    p.add_argument("--quiet-wait", type=float, default=8.0, help="before each sample, wait up to this long for other processes to go quiet (default 8)")
    p.add_argument("--quiet-budget", type=float, help="total seconds all such waits may take (default 150; quick 0)")
    p.add_argument("--diagnose", action="store_true", help="add torch/TF variants (threads, layout, allocator, oneDNN) to explain differences")
    p.add_argument("--ghz", type=float, help="clock for the peak (default: cpu MHz from /proc/cpuinfo)")
    p.add_argument("--flops-per-cycle", type=int, help="fp32 FLOPs per cycle per core for the peak (default: derived from the CPU)")
    p.add_argument("--project-root", type=Path, default=ROOT, help="checkout whose parity/vgg_keras the children run (default: this one)")
    p.add_argument("--workdir", type=Path, help="keep files and logs here (default: a temporary folder, removed)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the selected sections and prints the report.

    Args:
        argv: Arguments without the program name.

    Returns:
        Exit code.
    """
    args = build_parser().parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (2 if quick else 9)
    args.target_seconds = args.target_seconds or (0.15 if quick else 0.5)
    args.batches = args.batches or ([1] if quick else list(BATCHES))
    args.conversion_repeats = args.conversion_repeats or (1 if quick else 2)
    args.cold_repeats = args.cold_repeats or (1 if quick else 3)
    args.quiet_budget = args.quiet_budget if args.quiet_budget is not None else (0.0 if quick else 150.0)
    args.project_root = args.project_root.resolve()
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    if not sections or sections - {"throughput", "conversion"}:
        build_parser().error(f"--sections takes a comma list of throughput, conversion. Received: {args.sections}")

    cpu = read_cpuinfo()
    peak = cpu_peak(cpu, args.ghz, args.flops_per_cycle)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(args.project_root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    results: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "peak": peak,
        "macs": {m: model_macs(m) for m in MODELS},
        "python": sys.version.split()[0],
        "load_average_start": os.getloadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    started = time.perf_counter()
    tmp = None
    if args.workdir:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="vgg-bench-")
        workdir = Path(tmp.name)
    env["KERAS_HOME"] = str(workdir / "keras_home")
    try:
        _say("FMA throughput check")
        results["fma"] = fma = measure_fma_peak(workdir, peak["cores"])
        if "throughput" in sections:
            _say("throughput (sections 1 and 4)")
            results["throughput"] = run_throughput(args, env, workdir, peak, fma)
        if "conversion" in sections:
            _say("conversion and cold load (sections 2 and 3)")
            results["conversion"] = run_conversion_and_cold(args, env, workdir, peak["cores"])
    finally:
        if tmp is not None:
            tmp.cleanup()
    results["elapsed_s"] = time.perf_counter() - started
    results["load_average_end"] = os.getloadavg()
    report = markdown(results)
    print(report)
    print(f"Total {results['elapsed_s'] / 60:.1f} min; load average {results['load_average_start'][0]:.2f} at start, "
          f"{results['load_average_end'][0]:.2f} at end.")
    if args.out:
        results["report"] = report
        args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
        _say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        kind = sys.argv[2]
        opts = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
        _serve(kind, opts)
    elif len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2:])
    else:
        sys.exit(main())

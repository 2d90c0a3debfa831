"""The CPU a benchmark ran on: its name, its theoretical and measured fp32 peak, and each model's cost.

Every figure in ``docs/benchmarks.md`` is printed with the CPU it was measured
on; :func:`cpu_peak` names it and :func:`measure_fma_peak` measures what one
core really does (a chain of FMAs in registers), so throughput can be read as
a fraction of the peak. Standard library only, but :func:`model_macs` reads
the presets.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Input side length of every throughput measurement.
SIZE = 224

__all__ = ["SIZE", "CpuInfo", "cpu_peak", "fp32_flops_per_cycle", "measure_fma_peak", "model_macs", "read_cpuinfo"]


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
        procs = [
            subprocess.Popen([str(exe), str(iterations)], stdout=subprocess.PIPE, text=True) for _ in range(copies)
        ]
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

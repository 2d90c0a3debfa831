"""What every benchmark shares: timing, rounds, load recording, statistics, the command line, tables.

Each benchmark module (``inference_speed``, ``conversion_memory``,
``cold_load``) answers one question and makes its ``main`` with
:func:`command` from its own measurement, table and options. A sample
records the CPU other processes used meanwhile (``/proc/stat`` minus the
sample's own CPU time), because on a shared machine that is the main source
of noise. One-shot child processes (measured or not) are
:mod:`benchmarks.children`'s.

torch and TensorFlow never share a worker; the children that need both (the
conversions) import torch and torchvision first, as importing torchvision after
TensorFlow crashes the interpreter.
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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.cpu import SIZE, cpu_peak, measure_fma_peak, read_cpuinfo  # noqa: E402  (after the path is set)
from parity.cli import log  # noqa: E402
from parity.core.atomic import write_atomic  # noqa: E402

__all__ = [
    "child_json",
    "MIB",
    "QUIET_SHARE",
    "ROOT",
    "SIZE",
    "Main",
    "Option",
    "Section",
    "base_parser",
    "child_env",
    "command",
    "proc_status_mib",
    "rng",
    "rss_mib",
    "run",
    "summarize",
    "system_busy_seconds",
    "table",
    "timed",
]

MIB = 1024 * 1024
#: A sample is "quiet" when other processes used less than this share of all cores meanwhile.
QUIET_SHARE = 0.15


@dataclass(frozen=True)
class Section:
    """What one section of a benchmark measures with.

    Attributes:
        args: Parsed command line.
        env: Environment of its child processes.
        workdir: Folder for the files it makes and the logs.
        peak: Output of :func:`benchmarks.cpu.cpu_peak`.
        fma: Output of :func:`benchmarks.cpu.measure_fma_peak`, or ``None``.
    """

    args: argparse.Namespace
    env: dict[str, str]
    workdir: Path
    peak: dict[str, Any]
    fma: dict[str, Any] | None

    @property
    def cores(self) -> int:
        """CPUs of the machine."""
        return int(self.peak["cores"])


#: One section's work: its :class:`Section` -> its results.
Measure = Callable[[Section], dict[str, Any]]


class Main(Protocol):
    """A benchmark's ``main``: parses ``argv`` (default: the command line), measures, prints; returns the exit code."""

    def __call__(self, argv: Sequence[str] | None = None) -> int: ...


def say(message: str) -> None:
    """Progress on stderr, flushed (stdout carries a child's JSON)."""
    print(message, file=sys.stderr, flush=True)


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


def timed(fn: Callable[[], object], calls: int) -> dict[str, float]:
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


def is_quiet(sample: dict[str, float], cores: int) -> bool:
    """Whether other processes left this sample (nearly) the whole machine."""
    return sample["others_cpu"] / (sample["wall"] * cores) < QUIET_SHARE


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


def rng(s: dict[str, float], fmt: str = ".2f") -> str:
    """``median (min–max)`` of a :func:`summarize` result."""
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})"


def child_env(root: Path, **extra: str) -> dict[str, str]:
    """This process's environment with ``root`` first on ``PYTHONPATH``, and ``extra`` set.

    Args:
        root: Checkout whose packages the children import.
        **extra: Variables to set.

    Returns:
        The environment.
    """
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, **extra}


def child_json(section: Section, script: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Runs ``python -c script cfg_json`` in the section's environment; returns the JSON object it printed last.

    Args:
        section: Environment and project root of the child.
        script: The child's code; it reads its options from ``sys.argv[1]``.
        cfg: Those options.

    Returns:
        The child's last line, parsed, or ``{"error": "child exited N"}``.
    """
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cfg)],
        stdout=subprocess.PIPE,
        text=True,
        env=section.env,
        cwd=section.args.project_root,
        check=False,
    )
    if done.returncode != 0:
        return {"error": f"child exited {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(columns: Sequence[str], align: str, rows: Iterable[Sequence[object]]) -> list[str]:
    """A markdown table.

    Args:
        columns: Header cells.
        align: One letter a column: ``l`` (``---``) or ``r`` (``---:``).
        rows: Cells, already formatted.

    Returns:
        The header, the separator and one line a row.
    """
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def proc_status_mib(*fields: str) -> dict[str, float]:
    """Memory fields of ``/proc/self/status`` in MiB.

    Args:
        *fields: Names such as ``"VmRSS"`` (now) and ``"VmHWM"`` (peak).

    Returns:
        Field -> MiB; empty where /proc is absent.
    """
    found: dict[str, float] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in fields:
                    found[name] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return found


def rss_mib() -> float:
    """Current RSS of this process in MiB (0 where /proc is absent)."""
    return proc_status_mib("VmRSS").get("VmRSS", 0.0)


def cpu_lines(results: dict[str, Any]) -> list[str]:
    """The report's first lines: the CPU, its theoretical peak and its measured FMA rate."""
    out: list[str] = []
    peak = results["peak"]
    out.append(
        f"CPU: {peak['cpu']}, {peak['cores']} cores{' (virtual machine)' if peak['hypervisor'] else ''}; "
        f"peak {peak['gflops']:.0f} GFLOP/s fp32 = {peak['cores']} cores x {peak['ghz']:.3f} GHz "
        f"({peak['ghz_source']}) x {peak['flops_per_cycle']} FLOP/cycle ({peak['reason']})."
    )
    fma = results.get("fma")
    if fma:
        out.append(
            f"Measured ({fma['isa']} FMA chains in registers, {fma['note']}): "
            f"{fma['per_core_gflops']:.0f} GFLOP/s on one core "
            f"(= {fma['per_core_gflops'] / peak['flops_per_cycle']:.2f} GHz x {peak['flops_per_cycle']} FLOP/cycle), "
            f"{fma['all_cores_gflops']:.0f} GFLOP/s with one copy per core."
        )
    out.append("")
    return out


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short smoke run")
    p.add_argument("--out", type=Path, help="write all results and raw samples to this JSON file")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=8.0,
        help="before each sample, wait up to this long for other processes to go quiet (default 8)",
    )
    p.add_argument("--quiet-budget", type=float, help="total seconds all such waits may take (default 150; quick 0)")
    p.add_argument("--ghz", type=float, help="clock for the peak (default: cpu MHz from /proc/cpuinfo)")
    p.add_argument(
        "--flops-per-cycle", type=int, help="fp32 FLOPs per cycle per core for the peak (default: derived from the CPU)"
    )
    p.add_argument(
        "--project-root",
        type=Path,
        default=ROOT,
        help="checkout whose parity/vgg_keras the children run (default: this one)",
    )
    p.add_argument("--workdir", type=Path, help="keep files and logs here (default: a temporary folder, removed)")
    return p


@dataclass(frozen=True)
class Option:
    """An option of one benchmark whose default depends on ``--quick``.

    Attributes:
        flag: The option, e.g. ``"--rounds"``.
        what: Its help, without the defaults.
        full: Default of a full run.
        quick: Default with ``--quick``.
        type: Converter of one value.
        many: Whether it takes one or more values.
    """

    flag: str
    what: str
    full: Any
    quick: Any
    type: Callable[[str], Any] = int
    many: bool = False

    @property
    def dest(self) -> str:
        """The attribute it sets on the parsed arguments."""
        return self.flag.lstrip("-").replace("-", "_")

    def help(self) -> str:
        """Its help, with both defaults."""

        def shown(v: Any) -> str:
            return " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

        return f"{self.what} (default {shown(self.full)}; quick {shown(self.quick)})"


def command(
    doc: str,
    sections: dict[str, Measure],
    render: Callable[[dict[str, Any]], list[str]],
    options: Sequence[Option] = (),
    switches: dict[str, str] | None = None,
) -> Main:
    """A benchmark's ``main``: :func:`base_parser` and its own options, then :func:`run`.

    Args:
        doc: The module's docstring; its first paragraph describes the command.
        sections: Result key -> the measurement that fills it.
        render: Results -> the report's lines after the CPU's.
        options: Options whose default depends on ``--quick``.
        switches: On/off flags -> their help.

    Returns:
        The benchmark's ``main``.
    """

    def main(argv: Sequence[str] | None = None) -> int:
        p = base_parser(doc.split("\n\n")[0])
        for o in options:
            p.add_argument(o.flag, type=o.type, nargs="+" if o.many else None, help=o.help())
        for flag, what in (switches or {}).items():
            p.add_argument(flag, action="store_true", help=what)
        args = p.parse_args(argv)
        for o in options:
            setattr(args, o.dest, getattr(args, o.dest) or (o.quick if args.quick else o.full))
        return run(args, sections, render)

    main.__doc__ = f"Runs: {doc.splitlines()[0]} (``--help`` for the options).\n\nReturns the exit code."
    return main


def run(args: argparse.Namespace, sections: dict[str, Measure], render: Callable[[dict[str, Any]], list[str]]) -> int:
    """Measures the CPU, runs each section, prints the report and saves the results.

    Args:
        args: Parsed command line (:func:`base_parser` and the benchmark's own options).
        sections: Result key -> the measurement that fills it.
        render: Results -> the report's lines after the CPU's.

    Returns:
        Exit code.
    """
    args.quiet_budget = args.quiet_budget if args.quiet_budget is not None else (0.0 if args.quick else 150.0)
    args.project_root = args.project_root.resolve()
    cpu = read_cpuinfo()
    peak = cpu_peak(cpu, args.ghz, args.flops_per_cycle)
    env = child_env(args.project_root, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    results: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "peak": peak,
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
        log("FMA throughput check", quiet=False)
        results["fma"] = fma = measure_fma_peak(workdir, peak["cores"])
        for key, measure in sections.items():
            log(key, quiet=False)
            results[key] = measure(Section(args, env, workdir, peak, fma))
    finally:
        if tmp is not None:
            tmp.cleanup()
    results["elapsed_s"] = time.perf_counter() - started
    results["load_average_end"] = os.getloadavg()
    report = "\n".join(cpu_lines(results) + render(results))
    print(report)
    print(
        f"Total {results['elapsed_s'] / 60:.1f} min; load average {results['load_average_start'][0]:.2f} at start, "
        f"{results['load_average_end'][0]:.2f} at end."
    )
    if args.out:
        results["report"] = report
        write_atomic(args.out, json.dumps(results, indent=1, default=str) + "\n")
        log(f"wrote {args.out}", quiet=False)
    return 0

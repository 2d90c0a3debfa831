"""One-shot child processes of the benchmarks: measured ones, unmeasured ones, and the ``--child`` entry.

A measured child's peak memory is its own ``ru_maxrss`` (from ``os.wait4``),
and the CPU other processes used meanwhile is recorded with it. A benchmark
module that starts copies of itself as children (``python MODULE --child NAME
ARGS...``) ends with :func:`entry`, which runs the named child or the
benchmark.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, Main, Section, summarize, system_busy_seconds
from parity.cli import log

__all__ = ["ChildRun", "Children", "check_output", "child_imports", "child_row", "entry", "run_child"]


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

    def result(self) -> dict[str, Any]:
        """The JSON object the child printed last."""
        return json.loads(self.stdout.strip().splitlines()[-1])


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


@dataclass
class Children:
    """Where a section's measured children run and log, and how their command lines start.

    Attributes:
        script: The benchmark module whose ``--child NAME`` entries :meth:`own` starts.
        env: Environment of the children.
        cwd: Their working directory.
        workdir: Folder receiving one log per label.
        cores: CPUs of the machine.
    """

    script: str
    env: dict[str, str]
    cwd: Path
    workdir: Path
    cores: int

    @classmethod
    def of(cls, script: str, section: Section) -> Children:
        """The children of one benchmark section, run in its project root.

        Args:
            script: The benchmark module (``__file__``).
            section: The section: its environment, folder and cores.

        Returns:
            The section's children.
        """
        return cls(script, section.env, section.args.project_root, section.workdir, section.cores)

    def own(self, name: str, *args: str) -> list[str]:
        """``python SCRIPT --child NAME ARGS...``."""
        return [sys.executable, str(Path(self.script).resolve()), "--child", name, *args]

    def convert(self, output: Path, *extra: str) -> list[str]:
        """``python -m parity.convert vgg16`` from ``--init random`` (seed 0) to ``output``."""
        return [sys.executable, "-m", "parity.convert", "vgg16", "--init", "random", "--seed", "0", "--force",
                "--quiet", "--output", str(output), *extra]  # fmt: skip

    def run(self, label: str, argv: list[str]) -> ChildRun:
        """Runs one measured child (:func:`run_child`) and says what it took."""
        log_path = self.workdir / f"{label.replace(' ', '_').replace('/', '_')}.log"
        done = run_child(label, argv, self.env, self.cwd, log_path, self.cores)
        log(
            f"  {label:<40} {done.wall_s:6.1f} s  peak RSS {done.peak_mib:7.0f} MiB  "
            f"(others' CPU {done.others_share:.0%})",
            quiet=False,
        )
        return done


def child_row(name: str, runs: Sequence[ChildRun]) -> dict[str, Any]:
    """The medians of one command's runs: ``{"run", "wall_s", "peak_mib", "others_share"}``."""
    return {
        "run": name,
        "wall_s": summarize([r.wall_s for r in runs]),
        "peak_mib": statistics.median(r.peak_mib for r in runs),
        "others_share": statistics.median(r.others_share for r in runs),
    }


def check_output(what: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> str:
    """Runs an unmeasured child to completion and returns its stdout.

    Args:
        what: What it does, for the error.
        argv: Command line.
        env: Environment.
        cwd: Working directory.

    Returns:
        What it printed.

    Raises:
        RuntimeError: If it fails, with the end of its stderr.
    """
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-2000:]}")
    return done.stdout


def child_imports(argv: list[str]) -> None:
    """The ``imports`` child: keras and vgg_keras, after torch and torchvision if ``argv`` names ``torch``."""
    if "torch" in argv:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    import keras  # noqa: F401

    import vgg_keras  # noqa: F401


def entry(main: Main, children: dict[str, Callable[[list[str]], None]]) -> int:
    """A benchmark module run as a script: ``--child NAME ARGS...`` runs that child, anything else ``main``.

    Args:
        main: The benchmark.
        children: Child name -> its work, given the remaining arguments.

    Returns:
        Exit code.
    """
    if sys.argv[1:2] != ["--child"]:
        return main()
    name, rest = sys.argv[2], sys.argv[3:]
    if name not in children:
        raise SystemExit(f"unknown child {name!r}")
    children[name](rest)
    return 0

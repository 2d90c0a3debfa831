"""How long from a fresh process to vgg16's first logits, and how much memory, against keras.applications?

``vgg_keras.VGG16(weights=PATH)`` (a converted file, its sidecar's sha256
checked) against ``keras.applications.VGG16(weights=PATH2)`` (a file of the
same size Keras saved), each in a fresh child process, alternating: the
interpreter start, the imports, build + load and the first call, and the
child's own peak RSS. The files are made first, unmeasured.

Run from the repository root::

    uv run python -m benchmarks.cold_load            # 3 runs of each
    uv run python -m benchmarks.cold_load --quick    # 1 run of each
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import MIB, SIZE, ChildRun, base_parser, rng, rss_mib, run, run_child, say, summarize

__all__ = ["main", "run_cold"]


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
        "rss_after_mib": rss_mib(),
        **extra,
    }
    print(json.dumps(result))



def _child_main(argv: list[str]) -> None:
    """Entry point of the single-purpose children (``--child NAME ARGS...``)."""
    name, rest = argv[0], argv[1:]
    if name == "imports":
        import keras  # noqa: F401

        import vgg_keras  # noqa: F401
    elif name == "apps-weights":
        import keras

        keras.applications.VGG16(weights=None, classifier_activation=None).save_weights(rest[0])
    elif name == "cold":
        _child_cold(rest[0], rest[1], float(rest[2]))
    else:
        raise SystemExit(f"unknown child {name!r}")


def run_cold(args: argparse.Namespace, env: dict[str, str], workdir: Path, cores: int) -> dict[str, Any]:
    """Cold loads of the two files, alternating, after the Keras-only import footprint.

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
    converted = workdir / "vgg16_cli.weights.h5"
    apps_file = workdir / "vgg16_apps.weights.h5"

    def child(label: str, argv: list[str]) -> ChildRun:
        """Runs and logs one measured child."""
        run = run_child(label, argv, env, cwd, workdir / f"{label.replace(' ', '_').replace('/', '_')}.log", cores)
        say(f"  {label:<40} {run.wall_s:6.1f} s  peak RSS {run.peak_mib:7.0f} MiB  (others' CPU {run.others_share:.0%})")
        return run

    say("  preparing files")
    child("convert vgg16 (random, no verify)", [
        py, "-m", "parity.convert", "vgg16", "--init", "random", "--seed", "0", "--force", "--quiet", "--output", str(converted), "--no-verify",
    ])
    child("make keras.applications file", [py, me, "--child", "apps-weights", str(apps_file)])
    imports = [child("imports keras", [py, me, "--child", "imports"]) for _ in range(args.cold_repeats)]
    base_keras = statistics.median(r.peak_mib for r in imports)
    cold: dict[str, list[ChildRun]] = {"vgg_keras.VGG16(weights=PATH)": [], "keras.applications.VGG16(weights=PATH2)": []}
    for r in range(args.cold_repeats):
        for which, label in ([("vgg_keras", converted), ("apps", apps_file)] if r % 2 == 0 else [("apps", apps_file), ("vgg_keras", converted)]):
            name = "vgg_keras.VGG16(weights=PATH)" if which == "vgg_keras" else "keras.applications.VGG16(weights=PATH2)"
            cold[name].append(child(f"cold {which}", [py, me, "--child", "cold", which, str(label), repr(time.time())]))
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
        "files_mib": {p.name: p.stat().st_size / MIB for p in (converted, apps_file) if p.exists()},
        "imports_peak_mib": {"keras": base_keras},
        "cold": cold_rows,
        "cold_runs": {k: [asdict(r) for r in v] for k, v in cold.items()},
    }


def render(results: dict[str, Any]) -> list[str]:
    """The cold-load table as markdown lines."""
    out: list[str] = []
    cc = results["cold"]
    out.append("Cold load, fresh process to first logits (batch 1); files: "
               + ", ".join(f"{k} {v:.0f} MiB" for k, v in cc["files_mib"].items() if not k.endswith(".pth"))
               + f"; 'above imports' subtracts the keras + vgg_keras import footprint ({cc['imports_peak_mib']['keras']:.0f} MiB).")
    out.append("")
    out.append("| load | to first logits s | interpreter s | imports s | build + load s | first call s | peak RSS MiB | above imports MiB |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in cc["cold"]:
        out.append(f"| {row['run']} | {rng(row['to_first_logits_s'])} | {row['interpreter_s']['median']:.2f} | {row['imports_s']['median']:.2f} | "
                   f"{row['build_and_load_s']['median']:.2f} | {row['first_call_s']['median']:.2f} | {row['peak_mib']:.0f} | {row['above_imports_mib']:.0f} |")
    sha = [r for r in cc["cold"] if "sha256_s" in r]
    if sha:
        out.append("")
        out.append(f"Of vgg_keras' build + load, the sidecar's sha256 check takes {sha[0]['sha256_s']['median']:.2f} s (measured after the logits).")
    out.append("")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the cold loads and prints the report.

    Args:
        argv: Arguments without the program name.

    Returns:
        Exit code.
    """
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--cold-repeats", type=int, help="runs of each cold load (default 3; quick 1)")
    args = p.parse_args(argv)
    args.cold_repeats = args.cold_repeats or (1 if args.quick else 3)
    return run(args, {"cold": lambda a, env, wd, peak, fma: run_cold(a, env, wd, peak["cores"])}, render)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2:])
    else:
        sys.exit(main())

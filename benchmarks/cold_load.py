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

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.children import Children, ChildRun, child_imports, child_row, entry
from benchmarks.harness import MIB, SIZE, Option, Section, command, rng, rss_mib, summarize, table
from parity.cli import log

__all__ = ["main", "run_cold"]


def _child_cold(which: str, path: str, spawned: float) -> None:
    """Fresh process to first logits; prints timestamps relative to the spawn."""
    t_start = time.time()
    import keras
    import numpy as np

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


def _child_apps_weights(argv: list[str]) -> None:
    """Saves a randomly initialized keras.applications VGG16's weights to ``argv[0]``."""
    import keras

    keras.applications.VGG16(weights=None, classifier_activation=None).save_weights(argv[0])


#: The single-purpose children (``--child NAME ARGS...``).
CHILDREN: dict[str, Callable[[list[str]], None]] = {
    "imports": child_imports,
    "apps-weights": _child_apps_weights,
    "cold": lambda argv: _child_cold(argv[0], argv[1], float(argv[2])),
}


def run_cold(section: Section) -> dict[str, Any]:
    """Cold loads of the two files, alternating, after the Keras-only import footprint.

    Args:
        section: The command line, the children's environment, the folder for files and logs, the CPU.

    Returns:
        The file sizes, the import footprint, a summary row per load and every run.
    """
    args, workdir, children = section.args, section.workdir, Children.of(__file__, section)
    child = children.run
    converted = workdir / "vgg16_cli.weights.h5"
    apps_file = workdir / "vgg16_apps.weights.h5"

    log("  preparing files", quiet=False)
    child("convert vgg16 (random, no verify)", children.convert(converted, "--no-verify"))
    child("make keras.applications file", children.own("apps-weights", str(apps_file)))
    imports = [child("imports keras", children.own("imports")) for _ in range(args.cold_repeats)]
    base_keras = statistics.median(r.peak_mib for r in imports)
    cold: dict[str, list[ChildRun]] = {
        "vgg_keras.VGG16(weights=PATH)": [],
        "keras.applications.VGG16(weights=PATH2)": [],
    }
    for r in range(args.cold_repeats):
        for which, label in (
            [("vgg_keras", converted), ("apps", apps_file)]
            if r % 2 == 0
            else [("apps", apps_file), ("vgg_keras", converted)]
        ):
            name = (
                "vgg_keras.VGG16(weights=PATH)" if which == "vgg_keras" else "keras.applications.VGG16(weights=PATH2)"
            )
            cold[name].append(child(f"cold {which}", children.own("cold", which, str(label), repr(time.time()))))
    cold_rows = []
    for name, rs in cold.items():
        parsed = [r.result() for r in rs]
        row = child_row(name, rs)
        row["above_imports_mib"] = row["peak_mib"] - base_keras
        cold_rows.append({**row, **{k: summarize([p[k] for p in parsed]) for k in parsed[0]}})
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
    out.append(
        "Cold load, fresh process to first logits (batch 1); files: "
        + ", ".join(f"{k} {v:.0f} MiB" for k, v in cc["files_mib"].items() if not k.endswith(".pth"))
        + "; 'above imports' subtracts the keras + vgg_keras import footprint "
        + f"({cc['imports_peak_mib']['keras']:.0f} MiB)."
    )
    out.append("")
    out += table(
        ["load", "to first logits s", "interpreter s", "imports s", "build + load s", "first call s", "peak RSS MiB",
         "above imports MiB"],
        "lrrrrrrr",
        ([row["run"], rng(row["to_first_logits_s"]), f"{row['interpreter_s']['median']:.2f}",
          f"{row['imports_s']['median']:.2f}", f"{row['build_and_load_s']['median']:.2f}",
          f"{row['first_call_s']['median']:.2f}", f"{row['peak_mib']:.0f}", f"{row['above_imports_mib']:.0f}"]
         for row in cc["cold"]),
    )  # fmt: skip
    sha = [r for r in cc["cold"] if "sha256_s" in r]
    if sha:
        out.append("")
        out.append(
            f"Of vgg_keras' build + load, the sidecar's sha256 check takes {sha[0]['sha256_s']['median']:.2f} s "
            "(measured after the logits)."
        )
    out.append("")
    return out


main = command(__doc__, {"cold": run_cold}, render, [Option("--cold-repeats", "runs of each cold load", 3, 1)])


if __name__ == "__main__":
    sys.exit(entry(main, CHILDREN))

"""What does converting vgg16 cost, in time and peak memory, against the floor and the Keras route?

``python -m parity.convert vgg16``: wall time and peak RSS, with and without
verification, from ``--init random`` and from a ``.pth`` checkpoint, against
the import footprint of torch, torchvision and Keras, a bare floor (load a
``.pth`` and write its tensors to HDF5 as they are) and the Keras route (load,
build the Keras model, assign, ``save_weights``). Every measured process is a
child of this one, so its peak is its own ``ru_maxrss``. The full run also
traces the CLI's phases in-process (RSS after each, peak within each).

Run from the repository root::

    uv run python -m benchmarks.conversion_memory            # 2 runs of each command, phase traces
    uv run python -m benchmarks.conversion_memory --quick    # 1 run of each, no traces
"""

from __future__ import annotations

import functools
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
from benchmarks.harness import MIB, Option, Section, command, proc_status_mib, rng, table
from parity.cli import log

__all__ = ["main", "run_conversion"]


def _child_floor(pth: str, out: str) -> None:
    """The floor of any conversion: load a .pth and write its tensors to HDF5 as they are (no layout change)."""
    import torch
    import torchvision  # noqa: F401  (the same imports as the converter, torch first)

    import h5py
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
    from parity.convert.weight_arrays import weight_map
    from parity.core.config import PRESETS

    state = torch.load(pth, map_location="cpu", weights_only=True)
    config = PRESETS["vgg16"]
    model = vgg_keras.build_vgg(config, classifier_activation=None)
    layers = {layer.name: layer for layer in model.layers}
    for m in weight_map(config):
        layers[m.keras_layer].weights[m.keras_index].assign(m.transform(state[m.torch_key].numpy()))
    model.save_weights(out)


def _child_trace_convert(cli_args: list[str]) -> None:
    """Runs ``parity.convert`` in-process, reporting RSS and peak RSS per phase.

    The peak is reset (``/proc/self/clear_refs``) before each phase, so each
    phase's own high-water mark is seen. Phases whose function has been renamed
    are simply not reported.
    """
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    import keras  # noqa: F401

    import parity.convert as cli
    import parity.convert.to_keras as pc
    import parity.convert.weight_arrays as pconv
    import parity.core.weights_file as wf

    def status() -> dict[str, float]:
        """VmRSS and VmHWM of this process in MiB."""
        return proc_status_mib("VmRSS", "VmHWM")

    phases: list[dict[str, Any]] = [
        {"phase": "imports", "rss_mib": status()["VmRSS"], "peak_mib": status()["VmHWM"], "s": 0.0}
    ]

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


def _child_make_pth(argv: list[str]) -> None:
    """Saves a randomly initialized torchvision vgg16's state dict (seed 0) to ``argv[0]``."""
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.vgg16().state_dict(), argv[0])


#: The single-purpose children (``--child NAME ARGS...``).
CHILDREN: dict[str, Callable[[list[str]], None]] = {
    "imports": child_imports,
    "make-pth": _child_make_pth,
    "floor": lambda argv: _child_floor(argv[0], argv[1]),
    "keras-route": lambda argv: _child_keras_route(argv[0], argv[1]),
    "trace-convert": _child_trace_convert,
}


def run_conversion(section: Section) -> dict[str, Any]:
    """Conversion cost: every command in alternating order, then (not quick) the phase traces.

    Args:
        section: The command line, the children's environment, the folder for files and logs, the CPU.

    Returns:
        The checkpoint and file sizes, the import footprints, a summary row per command, every run and the traces.
    """
    args, workdir, children = section.args, section.workdir, Children.of(__file__, section)
    child, own = children.run, children.own
    pth = workdir / "vgg16_random.pth"
    converted = workdir / "vgg16_cli.weights.h5"

    log("  preparing files", quiet=False)
    child("make .pth", own("make-pth", str(pth)))
    commands: dict[str, list[str]] = {
        "imports torch+torchvision+keras": own("imports", "torch"),
        "imports keras": own("imports"),
        "CLI --init random --no-verify": children.convert(converted, "--no-verify"),
        "CLI --init random (verify)": children.convert(workdir / "vgg16_cli_verified.weights.h5"),
        "CLI --checkpoint .pth --no-verify": [
            sys.executable, "-m", "parity.convert", "vgg16", "--checkpoint", str(pth), "--no-verify", "--force",
            "--quiet", "--output", str(workdir / "vgg16_ckpt.weights.h5"),
        ],
        "floor: load .pth, write its tensors to HDF5": own("floor", str(pth), str(workdir / "vgg16_floor.h5")),
        "Keras route: load .pth, build, assign, save_weights": own(
            "keras-route", str(pth), str(workdir / "vgg16_keras_route.weights.h5")
        ),
    }  # fmt: skip
    runs: dict[str, list[ChildRun]] = {k: [] for k in commands}
    names = list(commands)
    for r in range(args.conversion_repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            runs[name].append(child(name, commands[name]))
    trace: dict[str, list[dict[str, Any]]] = {}
    if not args.quick:
        for label, extra in [("--no-verify", ["--no-verify"]), ("verifying", [])]:
            t = child(
                f"phase trace of the CLI ({label})",
                own(
                    "trace-convert",
                    "vgg16",
                    "--init",
                    "random",
                    *extra,
                    "--force",
                    "--quiet",
                    "--output",
                    str(workdir / "vgg16_trace.weights.h5"),
                ),
            )
            trace[label] = t.result()["phases"]

    checkpoint_mib = pth.stat().st_size / MIB
    base_torch = statistics.median(r.peak_mib for r in runs["imports torch+torchvision+keras"])
    base_keras = statistics.median(r.peak_mib for r in runs["imports keras"])
    conv_rows = []
    for name, rs in runs.items():
        row = child_row(name, rs)
        peak = row["peak_mib"]
        row["peak_max_mib"] = max(r.peak_mib for r in rs)
        if not name.startswith("imports"):
            row["above_imports_mib"] = peak - base_torch
            row["x_checkpoint"] = (peak - base_torch) / checkpoint_mib
        conv_rows.append(row)
    return {
        "checkpoint_mib": checkpoint_mib,
        "files_mib": {p.name: p.stat().st_size / MIB for p in (pth, converted) if p.exists()},
        "imports_peak_mib": {"torch+torchvision+keras": base_torch, "keras": base_keras},
        "conversion": conv_rows,
        "conversion_runs": {k: [asdict(r) for r in v] for k, v in runs.items()},
        "trace": trace,
    }


def render(results: dict[str, Any]) -> list[str]:
    """The conversion table and phase traces as markdown lines."""
    out: list[str] = []
    cc = results.get("conversion")
    if cc:
        out.append(
            f"Conversion of vgg16 (checkpoint {cc['checkpoint_mib']:.0f} MiB); peak RSS of the process, "
            f"'above imports' subtracts the import footprint of torch+torchvision+keras+vgg_keras "
            f"({cc['imports_peak_mib']['torch+torchvision+keras']:.0f} MiB)."
        )
        out.append("")
        out += table(["run", "wall s", "peak RSS MiB", "above imports MiB", "x checkpoint", "others"], "lrrrrr", (
            [row["run"], rng(row["wall_s"], ".1f"), f"{row['peak_mib']:.0f}",
             f"{row['above_imports_mib']:.0f}" if "above_imports_mib" in row else "-",
             f"{row['x_checkpoint']:.2f}" if "x_checkpoint" in row else "-", f"{row['others_share']:.0%}"]
            for row in cc["conversion"]
        ))  # fmt: skip
        out.append("")
        for label, phases in (cc.get("trace") or {}).items():
            out.append(
                f"Phases of `python -m parity.convert vgg16 --init random` ({label}; RSS after the phase; "
                "peak within it):"
            )
            out.append("")
            out += table(["phase", "s", "RSS after MiB", "peak in phase MiB"], "lrrr", (
                [p["phase"], f"{p['s']:.1f}", f"{p['rss_mib']:.0f}", f"{p['peak_mib']:.0f}"] for p in phases
            ))  # fmt: skip
            out.append("")
    return out


main = command(
    __doc__,
    {"conversion": run_conversion},
    render,
    [Option("--conversion-repeats", "runs of each conversion process", 2, 1)],
)


if __name__ == "__main__":
    sys.exit(entry(main, CHILDREN))

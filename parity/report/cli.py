"""``python -m parity.report``: how closely vgg_keras reproduces torchvision, per variant and block.

For each preset named (default all eight), each data format, each input size
and each execution mode (eager call, relaxed ``tf.function``, XLA, ``predict``;
default all four), torchvision's model (the reference) and the Keras model with
converted weights run on the same random batch. ``--backend`` runs the same
cases on Keras' TensorFlow, JAX, torch or OpenVINO backends (several allowed), each in a
child process, since a process holds one backend; each backend runs the modes
it has (:data:`parity.compare.BACKEND_MODES`). The sizes run in order on one model per preset,
so every size after the first is a new shape for the same graph, XLA and
predict functions. The report gives max absolute and relative logit differences,
top-1/top-5 agreement and the worst block, as a terminal table, a JSON file and
a PNG plot of per-block differences (log scale) for every variant.

Weights: ``--init random-all --seed N`` (every tensor random, BN statistics
included; works offline) or ``--weights converted`` (torchvision's ImageNet
weights from torch's hub cache against the converted file in Keras' cache).

``--precision fp32 bf16 fp16`` adds reduced-precision cases: the Keras model
built under the dtype policy ``mixed_bfloat16`` / ``mixed_float16`` against
torch's fp32 result, judged per block at the bounds derived from the format
(:mod:`parity.precision`), with torch's own ``autocast`` error beside it.

``--train-steps N`` adds a training section (:func:`parity.report.training_parity.report`):
N SGD steps of a small batch-norm VGG in both frameworks, a per-step loss
table, the final weight difference, ``training_report.json`` and a PNG of both
loss curves.

torch and torchvision are imported before Keras/TensorFlow (the reverse order
crashes when torchvision pulls in triton).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from parity.cli import UsageError, add_verbose_option, hide_framework_logs, log
from parity.compare import BACKEND_MODES, LOGIT_RTOL, MODES, ParityReport
from parity.core.atomic import write_atomic
from parity.core.catalog import get_weights_record
from parity.core.config import ARCHS, PRESETS
from parity.machine import cpu_name, package_versions
from parity.precision import PRECISIONS

__all__ = ["build_parser", "main", "parse_size", "run_report"]

DEFAULT_SIZES = ("224", "32", "225", "200x320")
BACKENDS = tuple(BACKEND_MODES)
DATA_FORMATS = ("channels_last", "channels_first")


def parse_size(text: str) -> tuple[int, int]:
    """Parses ``"224"`` or ``"200x320"`` into ``(height, width)``.

    Raises:
        argparse.ArgumentTypeError: If the text is not a size of at least 32 px.
    """
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 32:
        raise argparse.ArgumentTypeError(f"a size is N or HxW with sides >= 32. Received: {text!r}")
    return parts[0], parts[1]


def _pairs(arch: str, source: str, seed: int, precision: str = "fp32") -> tuple[object, object]:
    """Returns (torch reference, Keras model ending in logits, built under ``precision``'s policy) for one preset."""
    import keras

    from parity.precision import get_precision

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(get_precision(precision).policy)
    try:
        return _fp32_pairs(arch, source, seed)
    finally:
        keras.config.set_dtype_policy(previous)


def _fp32_pairs(arch: str, source: str, seed: int) -> tuple[object, object]:
    """Returns (torch reference, Keras model ending in logits) for one preset, in the current dtype policy."""
    import torch
    import torchvision

    import vgg_keras
    from parity.compare import build_pair
    from parity.convert.random_weights import randomized_state_dict

    config = ARCHS[arch]
    if source != "converted":
        return build_pair(config, randomized_state_dict(config, seed))
    from vgg_keras.weights import converted_weights_path

    path = converted_weights_path(arch)
    if not path.exists():
        raise SystemExit(f"error: no converted weights at {path}: run `python -m parity.convert {arch}` first.")
    record = get_weights_record(arch)
    from vgg_torch.builders import torchvision_load_kwargs

    reference = torchvision.models.get_model(arch, weights=None, **torchvision_load_kwargs(arch)).eval()
    state = torch.hub.load_state_dict_from_url(record.url, progress=True, check_hash=True, weights_only=True)
    reference.load_state_dict(state, strict=True)
    model = vgg_keras.build_vgg(config, weights=os.fspath(path), classifier_activation=None)
    return reference, model


def run_report(
    archs: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    source: str = "random-all",
    seed: int = 0,
    batch: int = 2,
    modes: Sequence[str] = MODES,
    data_formats: Sequence[str] = ("channels_last",),
    precisions: Sequence[str] = ("fp32",),
    inputs: str = "noise",
) -> list[dict[str, object]]:
    """Runs every (preset, precision, data format, size, mode) comparison on this process's Keras backend.

    Args:
        archs: Preset names.
        sizes: Input ``(height, width)`` pairs.
        source: ``"random-all"`` or ``"converted"``.
        seed: Seed of random weights and inputs.
        batch: Images per comparison.
        modes: Execution modes among :data:`parity.compare.MODES`; those the
            backend lacks are skipped.
        data_formats: ``"channels_last"`` and/or ``"channels_first"``.
        precisions: Among :data:`parity.precision.PRECISIONS`: ``"fp32"``
            (within :data:`parity.compare.LOGIT_RTOL`), ``"bf16"``, ``"fp16"``
            (the Keras dtype policy; within the format's derived bounds).
        inputs: ``"noise"`` (``batch`` N(0, 1) images from ``seed``) or
            ``"photos"`` (scikit-image's six, :func:`parity.photos.photo_batch`;
            square sizes only).

    Returns:
        One dict per case: backend, arch, precision, data format, size, mode,
        and the :class:`ParityReport` (or
        :class:`parity.precision.PrecisionReport`) fields.

    Examples:
        >>> from parity.report import run_report
        >>> cases = run_report(["vgg11"], [(32, 32)], modes=["eager"])  # doctest: +SKIP
        >>> [(c["arch"], c["mode"], c["passed"]) for c in cases]  # doctest: +SKIP
        [('vgg11', 'eager', True)]
    """
    import torch  # noqa: F401  (before Keras)
    import torchvision  # noqa: F401

    import keras

    backend = keras.backend.backend()
    modes = [m for m in modes if m in BACKEND_MODES.get(backend, ("eager", "predict"))]
    cases: list[dict[str, object]] = []
    total = len(archs) * len(precisions) * len(data_formats) * len(sizes) * len(modes)
    previous_format = keras.config.image_data_format()
    try:
        for arch, precision, data_format in itertools.product(archs, precisions, data_formats):
            keras.config.set_image_data_format(data_format)
            reference, model = _pairs(arch, source, seed, precision)
            for size in sizes:
                x = _input_batch(inputs, size, batch, seed)
                for fields, seconds in _compare_modes(reference, model, x, modes, precision, ARCHS[arch]):
                    cases.append(
                        {"backend": backend, "arch": arch, "data_format": data_format, "inputs": inputs, **fields}
                    )
                    _log_case(cases[-1], len(cases), total, seconds)
            del reference, model
            keras.backend.clear_session()
    finally:
        keras.config.set_image_data_format(previous_format)
    return cases


def _input_batch(inputs: str, size: tuple[int, int], batch: int, seed: int) -> np.ndarray:
    """The NCHW batch both frameworks run: N(0, 1) noise, or the six photos."""
    if inputs == "photos":
        from parity.photos import photo_batch

        photos = photo_batch(size)
        if photos is None:
            raise UsageError(f"--inputs photos needs scikit-image and square sizes. Received: size {size}")
        return photos
    return np.random.default_rng(seed + 1).standard_normal((batch, 3, *size), dtype=np.float32)


def _top2_gap(logits: np.ndarray) -> float:
    """The smallest gap between an image's two largest logits, relative to max |logits|: how easily top-1 flips."""
    top2 = np.sort(logits.reshape(len(logits), -1), axis=-1)[:, -2:]
    return float(np.min(top2[:, 1] - top2[:, 0]) / max(float(np.max(np.abs(logits))), 1e-30))


def _compare_modes(
    reference: object, model: object, x: np.ndarray, modes: Sequence[str], precision: str, config: object
) -> Iterator[tuple[dict[str, object], float]]:
    """Compares the Keras model with the torch reference on one batch, mode by mode.

    Args:
        reference: The torch model.
        model: The Keras model ending in logits.
        x: The batch, NCHW.
        modes: Execution modes of the Keras model.
        precision: The format the Keras model computes in (``"fp32"``: the fp32 tolerance).
        config: The preset's config (sizes the reduced-precision bounds).

    Yields:
        Per mode: the case's size, mode, :class:`ParityReport` fields and
        worst block, and the seconds the Keras side and the comparison took.
    """
    from parity.compare import compare_outputs, keras_forward, torch_forward

    expected = torch_forward(reference, x)  # type: ignore[arg-type]
    gap = {"top2_gap": _top2_gap(expected["logits"])} if "logits" in expected else {}
    if precision != "fp32":
        for fields, seconds in _compare_reduced(reference, model, x, modes, precision, config, expected):
            yield {**fields, **gap}, seconds
        return
    for mode in modes:
        started = time.perf_counter()
        report: ParityReport = compare_outputs(expected, keras_forward(model, x, mode=mode))  # type: ignore[arg-type]
        fields = {
            "size": [int(side) for side in x.shape[2:]],
            "mode": mode,
            "precision": precision,
            **report.to_dict(),
            "worst_block": report.worst_block.name,
            **gap,
        }
        yield fields, time.perf_counter() - started


def _compare_reduced(
    reference: object,
    model: object,
    x: np.ndarray,
    modes: Sequence[str],
    precision: str,
    config: object,
    expected: dict[str, np.ndarray],
) -> Iterator[tuple[dict[str, object], float]]:
    """:func:`_compare_modes` for bf16/fp16: the format's bounds, and torch's own autocast error beside."""
    from parity.compare import keras_forward
    from parity.precision import compare_at_precision, error_bounds, get_precision, torch_forward_autocast

    fmt = get_precision(precision)
    bounds = error_bounds(config, fmt)  # type: ignore[arg-type]
    torch_run = compare_at_precision(expected, torch_forward_autocast(reference, x, fmt), bounds, fmt)  # type: ignore[arg-type]
    for mode in modes:
        started = time.perf_counter()
        report = compare_at_precision(expected, keras_forward(model, x, mode=mode), bounds, fmt)  # type: ignore[arg-type]
        worst = max(report.blocks, key=lambda b: b.max_rel / report.bounds[b.name])
        fields = {
            "size": [int(side) for side in x.shape[2:]],
            "mode": mode,
            "precision": precision,
            "blocks": [{**vars(b), "bound": report.bounds[b.name]} for b in report.blocks],
            "max_abs": report.blocks[-1].max_abs,
            "max_rel": report.max_rel,
            "top1": report.top1,
            "top5": report.top5,
            "rtol": report.bounds["logits"],
            "floor": report.floor,
            "first_divergent": report.first_over_bound,
            "passed": report.passed,
            "worst_block": worst.name,
            "torch_autocast_max_rel": torch_run.max_rel,
            "torch_autocast_top1": torch_run.top1,
        }
        yield fields, time.perf_counter() - started


def _log_case(case: dict[str, object], done: int, total: int, seconds: float) -> None:
    """Prints one case's progress line on stderr."""
    h, w = case["size"]  # type: ignore[misc]
    log(
        f"[{done}/{total}] {case['backend']} {case['arch']:<9} {case['precision']} {case['data_format']:<14} "
        f"{h}x{w:<4} "
        f"{case['mode']:<7} max rel {case['max_rel']:.2e} top-1 {case['top1']:.0%} ({seconds:.1f} s)",
        quiet=False,
    )


def run_on_backends(
    backends: Sequence[str],
    archs: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    source: str = "random-all",
    seed: int = 0,
    batch: int = 2,
    modes: Sequence[str] = MODES,
    data_formats: Sequence[str] = ("channels_last",),
    verbose: bool = False,
    precisions: Sequence[str] = ("fp32",),
    inputs: str = "noise",
) -> list[dict[str, object]]:
    """Runs :func:`run_report` once per Keras backend, each in a child process.

    Args:
        backends: Keras backends among :data:`BACKENDS`.
        archs: Preset names.
        sizes: Input ``(height, width)`` pairs.
        source: ``"random-all"`` or ``"converted"``.
        seed: Seed of random weights and inputs.
        batch: Images per comparison.
        modes: Execution modes; each backend runs those it has.
        data_formats: ``"channels_last"`` and/or ``"channels_first"``.
        verbose: Let the children print TensorFlow's own log lines.
        precisions: Formats, as :func:`run_report` takes them.
        inputs: ``"noise"`` or ``"photos"``, as :func:`run_report` takes them.

    Returns:
        The cases of every backend, in the order given.

    Raises:
        RuntimeError: If a child process fails (its last output lines quoted).
    """
    cases: list[dict[str, object]] = []
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="parity-report-") as tmp:
            out = Path(tmp) / "cases.json"
            argv = [
                sys.executable, "-m", "parity.report", *archs,
                "--sizes", *(f"{h}x{w}" for h, w in sizes),
                "--seed", str(seed), "--batch", str(batch),
                "--mode", *modes, "--data-format", *data_formats, "--precision", *precisions, "--inputs", inputs,
                "--cases-json", os.fspath(out),
            ]  # fmt: skip
            if source == "converted":
                argv += ["--weights", "converted"]
            if verbose:
                argv.append("--verbose")
            env = {**os.environ, "KERAS_BACKEND": backend}
            result = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=None, text=True)
            if result.returncode not in (0, 1) or not out.exists():
                raise RuntimeError(f"The {backend} backend's run failed with exit code {result.returncode}.")
            cases += json.loads(out.read_text())
    return cases


def format_table(cases: Sequence[dict[str, object]]) -> str:
    """A markdown table of the cases (with bounds and torch's autocast error when a case is below fp32)."""
    if any(c.get("precision", "fp32") != "fp32" for c in cases):
        return _precision_table(cases)
    rows = [
        "| backend | variant | format | input | mode | max abs diff | max rel diff | top-1 | top-5 | worst block "
        "| within 1e-5 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        h, w = c["size"]  # type: ignore[misc]
        rows.append(
            f"| {c['backend']} | {c['arch']} | {c['data_format']} | {h}x{w} | {c['mode']} | {c['max_abs']:.2e} "
            f"| {c['max_rel']:.2e} | {c['top1']:.0%} | {c['top5']:.0%} | {c['worst_block']} "
            f"| {'yes' if c['passed'] else 'NO'} |"
        )
    return "\n".join(rows)


def _precision_table(cases: Sequence[dict[str, object]]) -> str:
    """The table of a run with reduced-precision cases: each judged at its own bound."""
    rows = [
        "| backend | variant | precision | format | input | mode | max rel diff | bound | floor | torch autocast "
        "| top-1 | torch autocast top-1 | top-2 gap | worst block | within bounds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        h, w = c["size"]  # type: ignore[misc]
        torch_rel, torch_top1, gap = c.get("torch_autocast_max_rel"), c.get("torch_autocast_top1"), c.get("top2_gap")
        rows.append(
            f"| {c['backend']} | {c['arch']} | {c.get('precision', 'fp32')} | {c['data_format']} | {h}x{w} "
            f"| {c['mode']} | {c['max_rel']:.2e} | {c['rtol']:.1e} | {c.get('floor', 0.0):.1e} "
            f"| {'–' if torch_rel is None else f'{torch_rel:.2e}'} | {c['top1']:.0%} "
            f"| {'–' if torch_top1 is None else f'{torch_top1:.0%}'} | {'–' if gap is None else f'{gap:.1e}'} "
            f"| {c['worst_block']} | {'yes' if c['passed'] else 'NO'} |"
        )
    return "\n".join(rows)


def plot(cases: Sequence[dict[str, object]], path: Path, source: str = "random-all") -> None:
    """Per-block relative differences, plotted on a log scale into a PNG.

    A row of panels per backend and mode, a panel per input size, a line per
    variant and format.

    Args:
        cases: :func:`run_report`'s output.
        path: The PNG to write (atomically).
        source: ``"random-all"`` or ``"converted"``, named in the title.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(dict.fromkeys(tuple(c["size"]) for c in cases))  # type: ignore[arg-type]
    rows = list(dict.fromkeys((str(c["backend"]), str(c["mode"]), str(c.get("precision", "fp32"))) for c in cases))
    fig, axes = plt.subplots(
        len(rows), len(sizes), figsize=(4.2 * len(sizes), 3.6 * len(rows) + 0.6), sharey=True, squeeze=False
    )
    archs = list(dict.fromkeys(str(c["arch"]) for c in cases))
    formats = list(dict.fromkeys(str(c["data_format"]) for c in cases))
    colors = plt.get_cmap("tab10")
    panels = [(row, key, ax, size) for row, key in enumerate(rows) for ax, size in zip(axes[row], sizes, strict=True)]
    for row, (backend, mode, precision), ax, size in panels:
        for i, arch in enumerate(archs):
            for data_format in formats:
                case = next(
                    (
                        c
                        for c in cases
                        if (c["backend"], c["arch"], c["data_format"], tuple(c["size"]), c["mode"])  # type: ignore[arg-type]
                        == (backend, arch, data_format, size, mode)
                        and c.get("precision", "fp32") == precision
                    ),
                    None,
                )
                if case is None:
                    continue
                blocks = case["blocks"]  # type: ignore[index]
                names = [b["name"] for b in blocks]
                values = [max(b["max_rel"], 1e-9) for b in blocks]
                label = arch if len(formats) == 1 else f"{arch} {data_format.removeprefix('channels_')}"
                style = ("--" if arch.endswith("_bn") else "-") if data_format == formats[0] else ":"
                ax.plot(names, values, marker="o", color=colors(i), linestyle=style, label=label)
        if precision == "fp32":
            ax.axhline(LOGIT_RTOL, color="red", linewidth=1, label=f"tolerance {LOGIT_RTOL:g}")
        ax.set_yscale("log")
        ax.set_title(f"{backend} {mode}{'' if precision == 'fp32' else ' ' + precision}, input {size[0]}x{size[1]}")
        if row == len(rows) - 1:
            ax.set_xlabel("output after")
        ax.tick_params(axis="x", rotation=45)
        ax.grid(True, which="both", alpha=0.3)
    for row in axes:
        row[0].set_ylabel("max |keras - torch| / max |torch|")
    axes[0][-1].legend(fontsize=7, loc="lower right", ncol=2 if len(formats) > 1 else 1)
    weights = "torchvision's ImageNet weights" if source == "converted" else "every weight random"
    fig.suptitle(f"vgg_keras vs torchvision, fp32 CPU, {weights}: relative difference per block")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png")
    plt.close(fig)
    write_atomic(path, png.getvalue())


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m parity.report",
        description="How closely vgg_keras reproduces torchvision, per variant, input size, execution mode and block.",
    )
    parser.add_argument("archs", nargs="*", metavar="ARCH", help=f"among {', '.join(ARCHS)} (default: the VGG presets)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--init", choices=["random-all"], default="random-all", help="every tensor random (default)")
    src.add_argument("--weights", choices=["converted"], help="torchvision's ImageNet weights vs the converted cache")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        default=[parse_size(s) for s in DEFAULT_SIZES],
        metavar="SIZE",
        help=f"input sizes, N or HxW, run in this order on one model (default {' '.join(DEFAULT_SIZES)})",
    )
    parser.add_argument("--batch", type=int, default=2, help="images per comparison with --inputs noise (default 2)")
    parser.add_argument(
        "--inputs",
        choices=["noise", "photos"],
        default="noise",
        help="noise: N(0, 1) images from --seed (default); photos: scikit-image's six photos through torchvision's "
        "ImageNet preprocessing (square sizes; needs scikit-image, in the export extra)",
    )
    parser.add_argument(
        "--mode",
        nargs="+",
        choices=MODES,
        default=list(MODES),
        dest="modes",
        help="execution modes (default: all the backend has)",
    )
    parser.add_argument(
        "--backend",
        nargs="+",
        choices=BACKENDS,
        dest="backends",
        help="Keras backends, each run in a child process (default: this process's backend, in process)",
    )
    parser.add_argument(
        "--data-format",
        nargs="+",
        choices=DATA_FORMATS,
        default=["channels_last"],
        dest="data_formats",
        help="input layouts (default channels_last)",
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=list(PRECISIONS),
        default=["fp32"],
        dest="precisions",
        help="fp32 (default), and/or bf16, fp16: the Keras model under mixed_bfloat16 / mixed_float16, judged at "
        "the format's derived per-block bounds against torch fp32 (torch's autocast error shown beside)",
    )
    parser.add_argument("--cases-json", type=Path, help=argparse.SUPPRESS)  # a child process's results
    parser.add_argument("--out-dir", type=Path, default=Path("."), help="where parity_report.json/.png go")
    parser.add_argument(
        "--train-steps",
        type=int,
        metavar="N",
        help="also run N SGD steps in both frameworks (training_report.json/.png)",
    )
    add_verbose_option(parser)
    return parser


def _check_args(args: argparse.Namespace) -> None:
    """Refuses what argparse cannot check: the step count, unknown presets, a missing ``--out-dir``.

    Raises:
        UsageError: Naming the argument and what was received.
    """
    if args.train_steps is not None and args.train_steps < 1:
        raise UsageError(f"--train-steps must be a positive integer. Received: --train-steps {args.train_steps}")
    unknown = [a for a in args.archs if a not in ARCHS]
    if unknown:
        raise UsageError(f"ARCH must be among {', '.join(ARCHS)}. Received: {' '.join(unknown)}")
    for arch in args.archs:
        smallest = ARCHS[arch].min_input_size
        small = [f"{h}x{w}" for h, w in args.sizes if min(h, w) < smallest]
        if small:
            raise UsageError(
                f"{arch} takes inputs of at least {smallest} px: pass --sizes without the smaller ones, "
                f"e.g. --sizes 224 {smallest} 300x200. Received: --sizes ... {' '.join(small)}"
            )
    if args.inputs == "photos":
        from parity.photos import photos_available

        oblong = [f"{h}x{w}" for h, w in args.sizes if h != w]
        if oblong:
            raise UsageError(f"--inputs photos takes square sizes only. Received: --sizes ... {' '.join(oblong)}")
        if not photos_available():
            raise UsageError("--inputs photos needs scikit-image: uv sync --extra export. Received: --inputs photos")
    if not args.out_dir.is_dir():
        raise UsageError(f"--out-dir does not exist: create it first. Received: --out-dir {args.out_dir}")


def _write_report(
    cases: Sequence[dict[str, object]],
    args: argparse.Namespace,
    source: str,
    modes: Sequence[str],
    formats: Sequence[str],
) -> None:
    """Writes ``parity_report.json`` (the cases with their settings, machine and versions) and the plot.

    Args:
        cases: Every backend's cases.
        args: The parsed arguments (seed, batch, output folder).
        source: ``"random-all"`` or ``"converted"``.
        modes: The execution modes asked for.
        formats: The data formats asked for.
    """
    data = {
        "source": source,
        "seed": args.seed,
        "batch": args.batch,
        "inputs": args.inputs,
        "rtol": LOGIT_RTOL,
        "backends": list(dict.fromkeys(str(c["backend"]) for c in cases)),
        "modes": list(modes),
        "data_formats": list(formats),
        "precisions": list(dict.fromkeys(str(c.get("precision", "fp32")) for c in cases)),
        "machine": {"platform": platform.platform(), "processor": cpu_name(), "cpus": os.cpu_count()},
        "versions": package_versions(),
        "cases": list(cases),
    }
    json_path, png_path = args.out_dir / "parity_report.json", args.out_dir / "parity_report.png"
    write_atomic(json_path, json.dumps(data, indent=2))
    plot(cases, png_path, source)
    log(f"\nwrote {json_path} and {png_path}", quiet=False)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        0 if every case is within tolerance, 1 otherwise, 2 on bad input.

    Examples:
        >>> from parity.report import main
        >>> main(["vgg11", "--sizes", "32", "--mode", "eager", "--out-dir", "."])  # doctest: +SKIP
        0
    """
    args = build_parser().parse_args(argv)
    hide_framework_logs(args.verbose)
    try:
        _check_args(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    archs = args.archs or list(PRESETS)
    source = "converted" if args.weights else "random-all"
    modes = list(dict.fromkeys(args.modes))
    formats = list(dict.fromkeys(args.data_formats))
    precisions = list(dict.fromkeys(args.precisions))
    if args.cases_json is not None:  # a child of run_on_backends
        cases = run_report(archs, args.sizes, source, args.seed, args.batch, modes, formats, precisions, args.inputs)
        write_atomic(args.cases_json, json.dumps(cases))
        return 0 if all(c["passed"] for c in cases) else 1
    if args.backends:
        cases = run_on_backends(
            list(dict.fromkeys(args.backends)),
            archs,
            args.sizes,
            source,
            args.seed,
            args.batch,
            modes,
            formats,
            verbose=args.verbose,
            precisions=precisions,
            inputs=args.inputs,
        )
    else:
        cases = run_report(archs, args.sizes, source, args.seed, args.batch, modes, formats, precisions, args.inputs)
    print(format_table(cases))
    _write_report(cases, args, source, modes, formats)
    passed = all(c["passed"] for c in cases)
    if args.train_steps is not None:
        from parity.report.training_parity import report as training_report

        passed = training_report(args.train_steps, args.out_dir, args.seed) and passed
    return 0 if passed else 1

"""``python -m parity.export ARCH``: a converted VGG as a SavedModel or TFLite file, checked against torchvision.

The weights are a ``.weights.h5`` written by ``python -m parity.convert``
(``--weights FILE``, or ``--weights converted`` for the file
``vgg_keras.VGG16(weights="converted")`` loads). The Keras model is built with
those weights, exported, and the artifact is written under a temporary name
in the target folder; it is then loaded back from disk (``tf.saved_model.load``,
``tf.lite.Interpreter``), run on the fixed verification batch of
``parity.convert`` (and on four scikit-image photos through torchvision's
preprocessing, when scikit-image is installed and the input is square), and
compared with torchvision running the same weights on the same inputs. It is
renamed into place only if every figure is within its format's bound
(:data:`TOLERANCES`), and a sidecar ``PATH.json`` records the provenance of the
weights, the export settings and the figures measured.

The torch reference holds the weights read back from the ``.weights.h5`` into
torchvision's layout (:func:`parity.to_torch.torch_state_dict_from_keras`, the
inverse of the converter, tested bit-exact): the file that was verified against
torch when it was converted is the file exported.

Per-block figures: a SavedModel carries a second endpoint, ``blocks``, that
returns every pooling stage's output (NCHW); a TFLite file is run with its
intermediate tensors kept and the ``block{i}_pool`` tensors read out. The
serving endpoint (``serve``, also ``serving_default``) returns logits (no
softmax), or the last feature map with ``--no-include-top``.

Exit codes: 0 written, 1 the check failed (nothing written), 2 bad input (one
line on stderr ending in ``Received: ...``; nothing written), 130/143
interrupted (temporary files removed).

torch and torchvision are imported before TensorFlow in this process: the
reverse order crashes the interpreter (tensorflow/tensorflow#124205).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from parity.compare import BLOCK_RTOL, LOGIT_RTOL
from parity.core.config import PRESETS, VGGConfig, get_config
from parity.core.atomic import signals_held
from parity.core.errors import first_line, os_reason

if TYPE_CHECKING:
    import keras

__all__ = [
    "EXPORT_FORMAT",
    "FORMATS",
    "QUANTIZATIONS",
    "TOLERANCES",
    "ExportResult",
    "Tolerance",
    "build_export_model",
    "export",
    "main",
    "run_artifact",
]

FORMATS = ("saved_model", "tflite")
QUANTIZATIONS = ("none", "float16", "dynamic-int8")
#: Format tag of the sidecar.
EXPORT_FORMAT = "vgg-parity-export/1"
#: Photos the quantized formats are judged on (scikit-image's sample data, as in tests/test_preprocessing.py).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
DEFAULT_INPUT_SIZE = (224, 224)


@dataclass(frozen=True)
class Tolerance:
    """The bound an export must meet, per quantization.

    Relative differences are max |export - torch| / max |torch| over a batch,
    per output. Top-k figures are over the photos (and the verification batch),
    with logits only.

    Attributes:
        output_rtol: Bound on the final output (logits, or the last block without the top).
        block_rtol: Bound on every intermediate block, or ``None`` (reported, not judged).
        min_top1: Least fraction of images whose top-1 class equals torch's.
        min_top5_overlap: Least mean |top-5 of export ∩ top-5 of torch| / 5.
        reason: Why the bound is what it is.
    """

    output_rtol: float
    block_rtol: float | None
    min_top1: float
    min_top5_overlap: float
    reason: str


#: fp32 exports run the same arithmetic in another order (TensorFlow's graph
#: runtime with oneDNN, or TFLite's XNNPACK kernels): the project's fp32 bound.
FP32_TOLERANCE = Tolerance(
    output_rtol=LOGIT_RTOL,
    block_rtol=BLOCK_RTOL,
    min_top1=1.0,
    min_top5_overlap=1.0,
    reason="fp32 throughout: only the summation order differs from torch (measured about 1e-6); "
    "a layout or weight mistake gives 1e-2 or more",
)
#: float16 stores the weights rounded to half precision (relative step 2**-11,
#: about 4.9e-4) and computes in fp32 on x86 (XNNPACK dequantizes them once).
#: Rounding errors of ~1e4 weights per output add up like a random walk, and
#: grow with depth: measured on vgg11_bn at 224 (random-all weights, seed 0,
#: the verification batch and four photos) 5.0e-4 / 5.1e-4 relative on the
#: logits and at most 6.8e-4 on a block, so 3e-3 leaves a factor of 4.4, while
#: a dropped or transposed block gives 1e-1 or more.
FP16_TOLERANCE = Tolerance(
    output_rtol=3e-3,
    block_rtol=3e-3,
    min_top1=1.0,
    min_top5_overlap=1.0,
    reason="weights rounded to float16 (relative step 4.9e-4), fp32 arithmetic: measured <= 6e-4 on the logits",
)
#: dynamic-int8 stores every kernel as int8 (per output channel for
#: convolutions) and quantizes each layer's input to int8 on the fly, per batch
#: (hybrid kernels). That is 8 bits of resolution twice per layer, over 11
#: layers: measured on vgg11_bn at 224 (as above) 2.7e-2 relative on the
#: logits, at most 4.0e-2 on a block, top-1 agreement 6/6 and top-5 overlap
#: 95% on the photos. 0.1 leaves a factor of 3.7. Top-1 can swap where torch's
#: two best logits are closer than that, which random (not ImageNet-trained)
#: weights make likely, so top-1 is bounded loosely (half the images) and
#: top-5 overlap at 80%. Blocks are reported, not judged (the final output is).
INT8_TOLERANCE = Tolerance(
    output_rtol=0.1,
    block_rtol=None,
    min_top1=0.5,
    min_top5_overlap=0.8,
    reason="int8 weights and int8 activations quantized per batch: measured 1e-2 to 4e-2 on the logits; "
    "top-1 may swap between near-equal logits, judged by top-5 overlap",
)
TOLERANCES: dict[str, Tolerance] = {"none": FP32_TOLERANCE, "float16": FP16_TOLERANCE, "dynamic-int8": INT8_TOLERANCE}


class UsageError(ValueError):
    """A user mistake: reported in one line, exit code 2."""


class Interrupted(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt, so temporary files are removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass(frozen=True)
class ExportResult:
    """What an export produced.

    Attributes:
        output: The written artifact, or ``None`` when the check failed.
        record: The sidecar's content (figures included), written or not.
        passed: Whether every figure is within its bound.
    """

    output: Path | None
    record: dict[str, object]
    passed: bool


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- #
# Checks made before any framework loads
# --------------------------------------------------------------------------- #
def _resolve_weights(arch: str, weights: str) -> Path:
    """The ``.weights.h5`` to export (its record and hash are checked after the frameworks load).

    Raises:
        UsageError: If the file is missing, not a regular readable file, or not a ``.weights.h5``.
    """
    shown = f"weights={weights!r}"
    if weights == "converted":
        from parity.core.catalog import DEFAULT_WEIGHTS, cache_dir, get_weights_record

        path = cache_dir() / get_weights_record(arch, DEFAULT_WEIGHTS).keras_filename
        if not path.is_file():
            raise UsageError(
                f"No converted {arch} weights in {path.parent}: run `python -m parity.convert {arch}` first, "
                f"or pass --weights FILE. Received: {shown}"
            )
        return path
    path = Path(weights).expanduser()
    if not path.name.endswith(".weights.h5"):
        raise UsageError(f"--weights must be 'converted' or a .weights.h5 file written by python -m parity.convert. Received: {shown}")
    if not path.exists():
        raise UsageError(f"No weights file at {path}: convert one with `python -m parity.convert {arch} ...`. Received: {shown}")
    if not path.is_file():
        raise UsageError(f"--weights must name a file, not a folder or device. Received: {shown}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"Weights file is not readable: fix its permissions. Received: {shown}")
    if path.stat().st_size == 0:
        raise UsageError(f"Weights file is empty (an interrupted copy?): convert it again. Received: {shown}")
    return path


def _check_output(path: Path, fmt: str, weights: Path, force: bool) -> Path:
    """Validates the output path before any work is done.

    Raises:
        UsageError: On a wrong suffix, a missing or unwritable folder, an
            existing output without ``force``, or an output that would replace
            the weights or their sidecar.
    """
    shown = f"output={os.fspath(path)!r}"
    if fmt == "tflite" and path.suffix != ".tflite":
        raise UsageError(f"--format tflite writes one file: --output must end in .tflite. Received: {shown}")
    if fmt == "saved_model" and (path.suffix in (".tflite", ".h5", ".keras", ".json") or path.name.endswith(".weights.h5")):
        raise UsageError(f"--format saved_model writes a folder: name a folder, not a {path.suffix} file. Received: {shown}")
    if not path.parent.is_dir():
        raise UsageError(f"Output folder does not exist: create it first. Received: {shown}")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(f"Output folder is not writable: fix its permissions or pick another. Received: {shown}")
    sidecar = _sidecar(path)
    for target in (path, sidecar):
        if target.resolve() in (weights.resolve(), Path(f"{weights}.json").resolve()):
            raise UsageError(f"Output would overwrite the weights or their sidecar: name another path. Received: {shown}")
    if path.exists() or path.is_symlink():
        if not force:
            raise UsageError(f"Output exists: pass --force to overwrite it. Received: {shown}")
        if fmt == "tflite" and path.is_dir():
            raise UsageError(f"Output is a folder, and --format tflite writes a file: name a .tflite file. Received: {shown}")
        if fmt == "saved_model" and not path.is_dir():
            raise UsageError(f"Output is a file, and --format saved_model writes a folder: name another path. Received: {shown}")
    if sidecar.is_dir():
        raise UsageError(f"{sidecar} is a folder, so the sidecar cannot be written: name another output. Received: {shown}")
    return path


def _sidecar(path: Path) -> Path:
    return Path(f"{os.fspath(path)}.json")


def _check_options(arch: str, fmt: str, quantize: str, input_size: Sequence[int] | None, data_format: str, batch_size: int) -> None:
    """Raises UsageError on an option that cannot work, before anything loads."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}. Received: --format {fmt}")
    if fmt == "saved_model" and quantize != "none":
        raise UsageError(
            f"Quantization applies to --format tflite only; a SavedModel keeps fp32 weights. Received: --format saved_model --quantize {quantize}"
        )
    if quantize not in QUANTIZATIONS:
        raise UsageError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}. Received: --quantize {quantize}")
    if data_format not in ("channels_last", "channels_first"):
        raise UsageError(f"--data-format must be channels_last or channels_first. Received: --data-format {data_format}")
    if input_size is not None:
        h, w = input_size
        minimum = 32 if get_config(arch).pool_size is not None else None
        if h < 1 or w < 1 or (minimum is not None and min(h, w) < minimum):
            raise UsageError(f"--input-size must be at least {minimum} x {minimum} (five 2x2 pools). Received: --input-size {h} {w}")
    if isinstance(batch_size, bool) or batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer. Received: --batch-size {batch_size}")
    if batch_size != 1 and fmt != "tflite":
        raise UsageError(f"--batch-size fixes a TFLite file's batch; a SavedModel takes any batch. Received: --batch-size {batch_size}")


# --------------------------------------------------------------------------- #
# Model, artifacts
# --------------------------------------------------------------------------- #
def build_export_model(config: VGGConfig, *, include_top: bool, data_format: str, input_shape: tuple[int | None, int | None]) -> keras.Model:
    """The Keras model that is exported: logits (no softmax), or the last feature map.

    Args:
        config: The network.
        include_top: Whether to include the classifier.
        data_format: Layout of the model's input.
        input_shape: ``(height, width)``; ``None`` for any size.

    Returns:
        The model, weights not loaded.
    """
    import keras

    import vgg_keras

    h, w = input_shape
    shape = (config.in_channels, h, w) if data_format == "channels_first" else (h, w, config.in_channels)
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format(data_format)
    try:
        return vgg_keras.build_vgg(config, include_top=include_top, classifier_activation=None, input_shape=shape)
    finally:
        keras.config.set_image_data_format(previous)


def _block_outputs(model: keras.Model) -> list[keras.KerasTensor]:
    """Each ``block{i}_pool`` layer's output in this model's graph (its latest call, for layers reused in a new graph)."""
    pools = [layer for layer in model.layers if layer.name.startswith("block") and layer.name.endswith("_pool")]
    return [p._inbound_nodes[-1].outputs[0] for p in pools]


def _write_saved_model(model: keras.Model, folder: Path, signature: tuple[int | None, ...]) -> None:
    """Writes what ``model.export(format="tf_saved_model")`` writes, plus a ``blocks`` endpoint.

    ``serve`` (and ``serving_default``) is the model; ``blocks`` returns
    ``{"block1": ..., ...}``, each NCHW, for the per-block check.
    """
    import keras
    import tensorflow as tf

    probe = keras.Model(model.input, _block_outputs(model))
    inner_last = model.get_layer("block1_conv1").data_format == "channels_last"

    def blocks(x: tf.Tensor) -> dict[str, tf.Tensor]:
        outs = probe(x, training=False)
        return {f"block{i}": tf.transpose(o, (0, 3, 1, 2)) if inner_last else o for i, o in enumerate(outs, start=1)}

    spec = tf.TensorSpec(signature, tf.float32, name="images")
    archive = keras.export.ExportArchive()
    archive.track_and_add_endpoint("serve", model, [spec])
    archive.track(probe)
    archive.add_endpoint("blocks", blocks, input_signature=[spec])
    archive.write_out(os.fspath(folder), verbose=False)


def _tflite_bytes(model: keras.Model, scratch: Path, signature: tuple[int, ...], quantize: str) -> bytes:
    """Converts through a static-shape SavedModel (TFLite's converter mishandles a dynamic batch through the adaptive pool)."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track_and_add_endpoint("serve", model, [tf.TensorSpec(signature, tf.float32, name="images")])
    archive.write_out(os.fspath(scratch), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(scratch))
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def run_artifact(path: str | os.PathLike[str], fmt: str, x_nchw: np.ndarray, data_format: str) -> dict[str, np.ndarray]:
    """Loads an exported artifact from disk and runs it on an NCHW batch.

    Args:
        path: The SavedModel folder or ``.tflite`` file.
        fmt: ``"saved_model"`` or ``"tflite"``.
        x_nchw: The batch, NCHW float32 (moved to ``data_format`` here).
        data_format: The artifact's input layout.

    Returns:
        ``{"block1": ..., ..., "output": ...}``, blocks NCHW (absent where the
        artifact does not expose them).
    """
    import tensorflow as tf

    x = np.ascontiguousarray(x_nchw if data_format == "channels_first" else x_nchw.transpose(0, 2, 3, 1), dtype=np.float32)
    out: dict[str, np.ndarray] = {}
    if fmt == "saved_model":
        loaded = tf.saved_model.load(os.fspath(path))  # kept alive: its endpoints hold weak references
        if hasattr(loaded, "blocks"):
            out.update({k: np.asarray(v) for k, v in sorted(loaded.blocks(tf.constant(x)).items(), key=lambda kv: int(kv[0][5:]))})
        out["output"] = _output_nchw(np.asarray(loaded.serve(tf.constant(x))), data_format)
        del loaded
        return out
    with warnings.catch_warnings():
        # TensorFlow 2.20 warns that tf.lite.Interpreter is deprecated (it works), and that keeping every
        # tensor is for debugging (it is: that is how the block outputs are read).
        warnings.filterwarnings("ignore", message=r".*(tf\.lite\.Interpreter is deprecated|experimental_preserve_all_tensors)", category=UserWarning)
        interpreter = tf.lite.Interpreter(model_path=os.fspath(path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    batch = int(inp["shape"][0])
    names = {}
    for d in interpreter.get_tensor_details():
        found = re.search(r"(?:^|/)block(\d+)_pool(?:_\d+)?/", d["name"])
        if found and len(d["shape"]) == 4 and f"block{found.group(1)}" not in names:
            names[f"block{found.group(1)}"] = d["index"]
    collected: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        interpreter.set_tensor(inp["index"], chunk)
        interpreter.invoke()
        for key in sorted(names, key=lambda k: int(k[5:])):
            collected.setdefault(key, []).append(interpreter.get_tensor(names[key])[:n].transpose(0, 3, 1, 2))
        collected.setdefault("output", []).append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[:n].copy())
    out = {k: np.concatenate(v) for k, v in collected.items()}
    out["output"] = _output_nchw(out["output"], data_format)
    return out


def _output_nchw(output: np.ndarray, data_format: str) -> np.ndarray:
    """A feature map (no top) in torch's NCHW; logits as they are."""
    return output.transpose(0, 3, 1, 2) if output.ndim == 4 and data_format == "channels_last" else output


def _tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's relative paths and file contents in sorted order."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(os.fspath(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- #
# Comparison
# --------------------------------------------------------------------------- #
def photo_batch(size: tuple[int, int]) -> np.ndarray | None:
    """scikit-image's four photos through torchvision's ImageNet preprocessing, NCHW.

    At 224 x 224 this is torchvision's ``IMAGENET1K_V1`` transform (resize 256,
    center crop 224); at other square sizes the same with the crop and the
    resize scaled alike. ``None`` if scikit-image is missing or the size is not square.
    """
    h, w = size
    if h != w:
        return None
    try:
        from skimage import data as skimage_data
    except ImportError:
        return None
    import torch
    from torchvision.transforms._presets import ImageClassification

    transform = ImageClassification(crop_size=h, resize_size=round(h * 256 / 224))
    images = [transform(torch.from_numpy(np.ascontiguousarray(getattr(skimage_data, n)().transpose(2, 0, 1)))) for n in PHOTOS]
    return torch.stack(images).numpy()


def _topk_figures(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    k = min(5, ref.shape[-1])
    ref5 = np.argsort(-ref, -1)[:, :k]
    got5 = np.argsort(-got, -1)[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(ref5, got5)])
    return {
        "top1": float(np.mean(ref5[:, 0] == got5[:, 0])),
        "top5_overlap": float(overlap),
        "top1_in_top5": float(np.mean([a[0] in b for a, b in zip(ref5, got5)])),
    }


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], tolerance: Tolerance, has_logits: bool) -> dict[str, object]:
    """Per-output figures of one input set, and whether they meet ``tolerance``.

    Args:
        reference: torch's ``{"block1": ..., "output": ...}``.
        candidate: The artifact's outputs (blocks may be absent).
        tolerance: The bound.
        has_logits: Whether ``"output"`` is logits (top-k figures then).

    Returns:
        ``{"rows": [{name, max_abs, max_ref, max_rel, bound, ok}], "top1", ..., "passed", "failures"}``.
    """
    rows = []
    failures = []
    for name in reference:
        if name not in candidate:
            continue
        ref = np.asarray(reference[name], np.float64)
        got = np.asarray(candidate[name], np.float64)
        if ref.shape != got.shape:
            rows.append({"name": name, "max_abs": float("inf"), "max_ref": float(np.max(np.abs(ref))), "max_rel": float("inf"), "bound": None, "ok": False})
            failures.append(f"{name} has shape {got.shape}, torch {ref.shape}")
            continue
        max_abs = float(np.max(np.abs(ref - got))) if np.isfinite(got).all() else float("inf")
        max_ref = float(np.max(np.abs(ref)))
        rel = max_abs / max_ref if max_ref > 0 else (0.0 if max_abs == 0 else float("inf"))
        bound = tolerance.output_rtol if name == "output" else tolerance.block_rtol
        ok = bound is None or rel <= bound
        rows.append({"name": name, "max_abs": max_abs, "max_ref": max_ref, "max_rel": rel, "bound": bound, "ok": ok})
        if not ok:
            failures.append(f"{name} differs by {rel:.3g} x max |torch| (bound {bound:g})")
    result: dict[str, object] = {"rows": rows, "blocks_compared": any(r["name"] != "output" for r in rows)}
    if has_logits and "output" in candidate and np.shape(candidate["output"]) == np.shape(reference["output"]):
        figures = _topk_figures(np.asarray(reference["output"]), np.asarray(candidate["output"]))
        result.update(figures)
        if figures["top1"] < tolerance.min_top1:
            failures.append(f"top-1 agreement {figures['top1']:.0%} (bound {tolerance.min_top1:.0%})")
        if figures["top5_overlap"] < tolerance.min_top5_overlap:
            failures.append(f"top-5 overlap {figures['top5_overlap']:.0%} (bound {tolerance.min_top5_overlap:.0%})")
    result["failures"] = failures
    result["passed"] = not failures
    return result


def table(figures: dict[str, object], title: str) -> str:
    """The per-block text table of one :func:`compare` result."""
    lines = [title, f"{'output':<8} {'max |diff|':>11} {'max |ref|':>11} {'relative':>10} {'bound':>8}"]
    for r in figures["rows"]:  # type: ignore[union-attr]
        bound = "-" if r["bound"] is None else f"{r['bound']:.0e}"
        flag = "" if r["ok"] else "  <-- over"
        lines.append(f"{r['name']:<8} {r['max_abs']:>11.3e} {r['max_ref']:>11.3e} {r['max_rel']:>10.2e} {bound:>8}{flag}")
    if "top1" in figures:
        lines.append(
            f"top-1 agreement {figures['top1']:.0%}, top-5 overlap {figures['top5_overlap']:.0%}, "
            f"torch's top-1 in export's top-5 {figures['top1_in_top5']:.0%}"
        )
    if not figures["blocks_compared"]:
        lines.append("(this artifact exposes no block outputs: final output only)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# Staging and committing
# --------------------------------------------------------------------------- #
def _temp_name(target: Path, suffix: str) -> Path:
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}{suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[list[Path]]:
    """Temporary paths beside ``target``, all removed on exit (the committed ones are gone by then)."""
    temps: list[Path] = []
    try:
        yield temps
    finally:
        for p in temps:
            _remove(p)


def _fsync_tree(path: Path) -> None:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for f in files:
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def _commit(staged: Path, target: Path, sidecar_text: str, temps: list[Path]) -> None:
    """Renames the artifact, then its sidecar, into place, with SIGINT/SIGTERM held back.

    A folder cannot replace a non-empty folder in one rename: an existing
    SavedModel is first renamed aside (hidden), then removed after the new one is in place.
    """
    _fsync_tree(staged)
    sidecar_tmp = _temp_name(_sidecar(target), ".tmp")
    temps.append(sidecar_tmp)
    with open(sidecar_tmp, "w") as fh:
        fh.write(sidecar_text)
        fh.flush()
        os.fsync(fh.fileno())
    with signals_held():
        if staged.is_dir() and target.exists():
            aside = _temp_name(target, ".old")
            temps.append(aside)
            os.replace(target, aside)
        os.replace(staged, target)
        os.replace(sidecar_tmp, _sidecar(target))
    with contextlib.suppress(OSError):
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- #
# The export
# --------------------------------------------------------------------------- #
def export(
    arch: str,
    *,
    weights: str,
    fmt: str,
    output: str | os.PathLike[str],
    quantize: str = "none",
    input_size: Sequence[int] | None = None,
    include_top: bool | None = None,
    data_format: str = "channels_last",
    batch_size: int = 1,
    force: bool = False,
    quiet: bool = False,
    model_builder: Callable[..., keras.Model] | None = None,
) -> ExportResult:
    """Exports one converted model and checks the artifact against torchvision; the library form of the CLI.

    Args:
        arch: Preset name.
        weights: ``"converted"`` or a ``.weights.h5`` path written by ``python -m parity.convert``.
        fmt: ``"saved_model"`` or ``"tflite"``.
        output: Target folder (SavedModel) or ``.tflite`` file.
        quantize: ``"none"``, ``"float16"`` or ``"dynamic-int8"`` (TFLite only).
        input_size: ``(height, width)``: TFLite's fixed size (default 224 x 224);
            for a SavedModel only the size verified at (its signature takes
            any size >= 32 when the config has the adaptive pool).
        include_top: Whether to export the classifier; default: what the file holds.
        data_format: Input layout of the artifact.
        batch_size: TFLite's fixed batch (the converter cannot keep a dynamic
            batch through the adaptive pool).
        force: Whether to replace an existing output.
        quiet: No progress messages.
        model_builder: Replaces :func:`build_export_model` (tests build broken models with it).

    Returns:
        The result; ``output`` is ``None`` (nothing written) when the check failed.

    Raises:
        UsageError: On bad input; nothing is written.
    """
    if arch not in PRESETS:
        raise UsageError(f"ARCH must be one of {', '.join(PRESETS)}. Received: arch={arch!r}")
    _check_options(arch, fmt, quantize, input_size, data_format, batch_size)
    weights_path = _resolve_weights(arch, weights)
    out_path = _check_output(Path(output).expanduser(), fmt, weights_path, force)

    import torch  # noqa: F401  (before TensorFlow)
    import torchvision

    if "tensorflow" in sys.modules and "torchvision" not in sys.modules:
        raise UsageError("TensorFlow was loaded before torchvision in this process: run python -m parity.export. Received: tensorflow loaded first")
    import keras
    import tensorflow as tf

    from parity.conversion import torch_reference, verification_batch
    from parity.converter import weight_map
    from parity.core.errors import ConversionError
    from parity.to_torch import keras_file_arrays, torch_state_dict_from_keras
    from parity.core.errors import WeightsFileError
    from parity.core.weights_file import read_record
    from vgg_keras.weights import load_converted_weights

    started = time.perf_counter()
    shown = f"weights={weights!r}"
    try:
        record = read_record(weights_path)
    except WeightsFileError as e:
        raise UsageError(str(e)) from None
    if record.get("arch") != arch:
        raise UsageError(
            f"{weights_path.name} holds {record.get('arch')} weights, not {arch}: export them with "
            f"`python -m parity.export {record.get('arch')} ...`. Received: arch={arch!r}, {shown}"
        )
    saved = VGGConfig.from_dict(record["config"])  # type: ignore[arg-type]
    file_top = bool(record.get("include_top", True))
    if include_top is None:
        include_top = file_top
    if include_top and not file_top:
        raise UsageError(f"{weights_path.name} holds convolutional weights only: pass --no-include-top. Received: --include-top")
    config = get_config(arch).replace(num_classes=saved.num_classes, in_channels=saved.in_channels)
    fixed = config.input_size if config.pool_size is None and include_top else None
    if fixed is not None and input_size is not None and tuple(input_size) != tuple(fixed):
        raise UsageError(f"{arch} without the adaptive pool takes {fixed[0]} x {fixed[1]} only. Received: --input-size {input_size[0]} {input_size[1]}")
    size = tuple(input_size or fixed or DEFAULT_INPUT_SIZE)
    spatial: tuple[int | None, int | None] = size if (fmt == "tflite" or fixed is not None) else (None, None)  # type: ignore[assignment]

    builder = model_builder or build_export_model
    _log(f"Building {arch} ({'with' if include_top else 'without'} the top, {data_format}) from {weights_path}", quiet)
    model = builder(config, include_top=include_top, data_format=data_format, input_shape=spatial)
    try:
        weights_record = load_converted_weights(model, weights_path, config, include_top=include_top)
    except WeightsFileError as e:
        raise UsageError(str(e)) from None
    weights_sha = json.loads(_sidecar(weights_path).read_text())["sha256"] if _sidecar(weights_path).is_file() else None

    # The torch reference: the same file's arrays in torchvision's layout.
    try:
        arrays = keras_file_arrays(weights_path)
        wanted = {m.keras_layer for m in weight_map(config, include_top)}
        state = torch_state_dict_from_keras({k: v for k, v in arrays.items() if k in wanted}, config, include_top)
    except (ConversionError, OSError) as e:
        raise UsageError(f"{weights_path} cannot be read back for the torch reference: {first_line(e)}. Received: {shown}") from None
    del arrays
    inputs = {"verification": verification_batch(config, size[0])}
    if size[0] != size[1]:
        inputs["verification"] = np.random.default_rng(1234).standard_normal((2, config.in_channels, *size), dtype=np.float32)
    photos = photo_batch(size) if config.in_channels == 3 else None
    if photos is not None:
        inputs["photos"] = photos
    references = {}
    for key, x in inputs.items():
        ref = torch_reference(state, config, x, include_top)
        references[key] = {**{k: v for k, v in ref.items() if k != "logits"}, "output": ref["logits"] if include_top else ref[f"block{len(config.stages)}"]}
    del state

    tolerance = TOLERANCES[quantize]
    channels = config.in_channels
    signature = (None, channels, *spatial) if data_format == "channels_first" else (None, *spatial, channels)
    tflite_signature = (batch_size, channels, *size) if data_format == "channels_first" else (batch_size, *size, channels)
    figures: dict[str, dict[str, object]] = {}
    passed = False
    committed = False
    with _staging(out_path) as temps:
        try:
            staged = _temp_name(out_path, ".tmp" + (".tflite" if fmt == "tflite" else ""))
            temps.append(staged)
            if fmt == "saved_model":
                _log(f"Writing the SavedModel (input {signature})", quiet)
                _write_saved_model(model, staged, signature)
            else:
                scratch = _temp_name(out_path, ".savedmodel.tmp")
                temps.append(scratch)
                _log(f"Converting to TFLite (input {tflite_signature}, quantization {quantize})", quiet)
                data = _tflite_bytes(model, scratch, tflite_signature, quantize)
                _remove(scratch)
                with open(staged, "wb") as fh:
                    fh.write(data)
                del data
            del model
            keras.backend.clear_session()
            _log(f"Loading {fmt} back from disk and comparing with torchvision", quiet)
            for key, x in inputs.items():
                got = run_artifact(staged, fmt, x, data_format)
                figures[key] = compare(references[key], got, tolerance, include_top)
                title = f"{key}: {x.shape[0]} images {x.shape[2]}x{x.shape[3]}, {fmt}, quantization {quantize}"
                _log(table(figures[key], title), quiet)
            passed = all(f["passed"] for f in figures.values())
            size_bytes = _size(staged)
            sidecar = {
                "format": EXPORT_FORMAT,
                "artifact": out_path.name,
                "export": {
                    "format": fmt,
                    "quantization": quantize,
                    "input_signature": list(tflite_signature if fmt == "tflite" else signature),
                    "input_size_verified": list(size),
                    "data_format": data_format,
                    "include_top": include_top,
                    "output": "logits (no softmax)" if include_top else f"block{len(config.stages)} feature map",
                    "endpoints": ["serve", "serving_default", "blocks"] if fmt == "saved_model" else ["single signature"],
                },
                "arch": arch,
                "config": config.to_dict(),
                "weights": {
                    "file": os.fspath(weights_path.resolve()),
                    "sha256": weights_sha,
                    "source": weights_record.get("source"),
                    "versions": weights_record.get("versions"),
                    "verification": weights_record.get("verification"),
                },
                "versions": {
                    "torch": torch.__version__,
                    "torchvision": torchvision.__version__,
                    "keras": keras.__version__,
                    "tensorflow": tf.__version__,
                    "numpy": np.__version__,
                },
                "verification": {
                    "reference": "torchvision-layout state dict read back from the weights file, run by vgg_torch (eval mode, fp32)",
                    "tolerance": asdict(tolerance),
                    "inputs": {k: list(v.shape) for k, v in inputs.items()},
                    "figures": figures,
                    "passed": passed,
                },
                "size_bytes": size_bytes,
                "sha256": _tree_sha256(staged),
            }
            if not passed:
                failed = "; ".join(f"{k}: {', '.join(f['failures'])}" for k, f in figures.items() if not f["passed"])  # type: ignore[arg-type]
                _log(f"Export check FAILED ({failed}): {out_path} not written.", False)
                return ExportResult(None, sidecar, False)
            _commit(staged, out_path, json.dumps(sidecar, indent=2, default=str) + "\n", temps)
            committed = True
        except OSError as e:
            if committed:
                raise
            raise UsageError(
                f"Could not write {out_path} ({os_reason(e)}); nothing was kept: free some space or pick another folder. "
                f"Received: output={os.fspath(out_path)!r}"
            ) from None
    _log(f"Wrote {out_path} ({size_bytes / 1e6:.1f} MB) and {_sidecar(out_path).name} in {time.perf_counter() - started:.1f} s", quiet)
    return ExportResult(out_path, sidecar, True)


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #
def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (formats and quantizations are checked by :func:`export`, in one line)."""
    parser = argparse.ArgumentParser(
        prog="python -m parity.export",
        description="Export converted VGG weights as a SavedModel or TFLite file, verified against torchvision.",
    )
    parser.add_argument("arch", choices=list(PRESETS), help="torchvision architecture")
    parser.add_argument("--weights", required=True, metavar="FILE|converted", help="a .weights.h5 from python -m parity.convert, or 'converted'")
    parser.add_argument("--format", required=True, metavar="|".join(FORMATS), help="saved_model (a folder) or tflite (a file)")
    parser.add_argument("--quantize", default="none", metavar="|".join(QUANTIZATIONS), help="TFLite only (default none)")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), help="TFLite's fixed input size and the size verified at (default 224 224)")
    parser.add_argument("--include-top", action=argparse.BooleanOptionalAction, default=None, help="export the classifier (default: what the file holds)")
    parser.add_argument("--data-format", default="channels_last", metavar="channels_last|channels_first", help="input layout (default channels_last)")
    parser.add_argument("--batch-size", type=int, default=1, help="TFLite's fixed batch (default 1)")
    parser.add_argument("--output", required=True, metavar="PATH", help="SavedModel folder or .tflite file; its sidecar is PATH.json")
    parser.add_argument("--force", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    return parser


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text.strip())


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        0 written, 1 the check failed (nothing written), 2 bad input (one line
        on stderr ending in ``Received: ...``), 128 + the signal number when
        interrupted (temporary files removed).
    """
    import threading

    args = build_parser().parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        result = export(
            args.arch,
            weights=args.weights,
            fmt=args.format,
            output=args.output,
            quantize=args.quantize,
            input_size=args.input_size,
            include_top=args.include_top,
            data_format=args.data_format,
            batch_size=args.batch_size,
            force=args.force,
            quiet=args.quiet,
        )
    except UsageError as e:
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {_one_line(e.strerror or str(e))}; nothing was written. Received: {e.filename or type(e).__name__}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, Interrupted) else int(signal.SIGINT)
        print(f"error: interrupted before the export finished; nothing was left under the target name. Received: {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if result.output is not None:
        print(result.output)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())

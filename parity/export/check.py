"""Verification of a written export: the bounds, running the artifact from disk, and the figures.

:func:`parity.export.export` writes a SavedModel, TFLite or ONNX file under a
temporary name, then calls :func:`run_artifact` on it (loaded back from disk
by ``tf.saved_model.load``, LiteRT's interpreter or an onnxruntime session) and :func:`compare` on
its outputs against torchvision's; the artifact is renamed into place only if
every figure meets its format's :class:`Tolerance` (:data:`TOLERANCES`).
:func:`photo_batch` gives the six photos the quantized formats are judged
on, :func:`table` the text printed per input set.

The torch reference holds the weights read back from the ``.weights.h5`` into
torchvision's layout (:func:`parity.convert.to_torch.torch_state_dict_from_keras`, the
inverse of the converter, tested bit-exact): the file that was verified against
torch when it was converted is the file exported.

Per-block figures: a SavedModel carries a second endpoint, ``blocks``, that
returns every pooling stage's output (NCHW); a TFLite file is run with its
intermediate tensors kept and the ``block{i}_pool`` tensors read out; an ONNX
file's own nodes and weights up to each ``block{i}_pool`` are run as a second
model (:func:`parity.export.onnx_graph.block_model`). The
serving endpoint (``serve``, also ``serving_default``) returns logits (no
softmax), or the last feature map without the top.

Imports TensorFlow, torch, torchvision and onnxruntime only inside the
functions that need them; the caller has imported torch and torchvision first.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parity.compare import BLOCK_RTOL, LOGIT_RTOL, block_difference
from parity.core.config import VGGConfig
from parity.photos import PHOTOS, photo_batch  # the photos every export is judged on

__all__ = [
    "FP16_TOLERANCE",
    "FP32_TOLERANCE",
    "FULL_INT8_TOLERANCE",
    "INT8_TOLERANCE",
    "PHOTOS",
    "TOLERANCES",
    "Tolerance",
    "TFLiteOp",
    "compare",
    "constant_transposes",
    "float_weight_ops",
    "litert_interpreter",
    "onnx_session",
    "photo_batch",
    "reference_inputs",
    "run_artifact",
    "table",
    "tflite_ops",
    "network_arrays",
    "torch_outputs",
    "torch_state",
]


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
#: int8 (full integer) fixes every activation's scale from the calibration
#: set, then runs int8 kernels throughout (fc1 included), dequantizing only
#: the output. Judged on photos only: the N(0, 1) verification noise is no
#: image, lies outside any photo calibration, and saturates the fixed ranges
#: (measured 0.33 relative there, which says nothing about deployment).
#: Measured on vgg11_bn at 224 (random-all weights, seed 0, the built-in
#: calibration, six photos; AMD EPYC Zen 3, LiteRT 2.3): see docs/export.md.
#: The bound matches dynamic-int8's: 8 bits per weight and per activation.
FULL_INT8_TOLERANCE = Tolerance(
    output_rtol=0.1,
    block_rtol=None,
    min_top1=0.5,
    min_top5_overlap=0.8,
    reason="int8 weights and activations with ranges fixed by calibration; judged on photos only",
)
TOLERANCES: dict[str, Tolerance] = {
    "none": FP32_TOLERANCE,
    "float16": FP16_TOLERANCE,
    "dynamic-int8": INT8_TOLERANCE,
    "int8": FULL_INT8_TOLERANCE,
}


def network_arrays(weights_path: Path, config: VGGConfig, include_top: bool) -> dict[str, list[np.ndarray]]:
    """The weights file's Keras-layout arrays of the layers the export holds, by layer name.

    Raises:
        OSError: If the file cannot be read.
    """
    from parity.convert.weight_arrays import weight_map
    from parity.core.h5file import read_layer_arrays

    arrays = read_layer_arrays(weights_path)
    wanted = {m.keras_layer for m in weight_map(config, include_top)}
    return {k: v for k, v in arrays.items() if k in wanted}


def torch_state(arrays: dict[str, list[np.ndarray]], config: VGGConfig, include_top: bool) -> dict[str, np.ndarray]:
    """:func:`network_arrays` in torchvision's layout, for the torch reference.

    Raises:
        ConversionError: If the arrays do not fit ``config``.
    """
    from parity.convert.to_torch import torch_state_dict_from_keras

    return torch_state_dict_from_keras(arrays, config, include_top)


def reference_inputs(config: VGGConfig, size: tuple[int, int], quantize: str = "none") -> dict[str, np.ndarray]:
    """The NCHW input sets an export is judged on, by name.

    ``"verification"``: :mod:`parity.convert`'s fixed batch (seeded noise of
    two images when ``size`` is not square); ``"photos"``: :func:`photo_batch`,
    where it applies (three input channels, scikit-image installed, square size).
    """
    from parity.convert.to_keras import verification_batch

    inputs = {"verification": verification_batch(config, size[0])}
    if size[0] != size[1]:
        inputs["verification"] = np.random.default_rng(1234).standard_normal(
            (2, config.in_channels, *size), dtype=np.float32
        )
    photos = photo_batch(size) if config.in_channels == 3 else None
    if photos is not None:
        inputs["photos"] = photos
    if quantize == "int8":  # judged on photos only (FULL_INT8_TOLERANCE)
        if photos is None:
            raise ValueError("int8 is judged on photos: it needs scikit-image, 3 channels and a square input")
        del inputs["verification"]
    return inputs


def torch_outputs(
    state: dict[str, np.ndarray], config: VGGConfig, inputs: dict[str, np.ndarray], include_top: bool
) -> dict[str, dict[str, np.ndarray]]:
    """torchvision's outputs on each input set: ``{"block1": ..., "output": ...}``.

    ``"output"`` is what the export returns (logits, or the last block without the top).

    ``"output"`` is the logits with the top, the last block's feature map without it.
    """
    from parity.convert.to_keras import torch_reference

    references = {}
    for key, x in inputs.items():
        ref = torch_reference(state, config, x, include_top)
        references[key] = {
            **{k: v for k, v in ref.items() if k != "logits"},
            "output": ref["logits"] if include_top else ref[[k for k in ref if k.startswith("block")][-1]],
        }
    return references


def run_artifact(
    path: str | os.PathLike[str],
    fmt: str,
    x_nchw: np.ndarray,
    data_format: str,
    batch: int | None = None,
    config: VGGConfig | None = None,
) -> dict[str, np.ndarray]:
    """Loads an exported artifact from disk and runs it on an NCHW batch.

    Args:
        path: The SavedModel folder, ``.tflite``, ``.onnx`` or OpenVINO ``.xml`` file.
        fmt: ``"saved_model"``, ``"tflite"``, ``"onnx"`` or ``"openvino"``.
        x_nchw: The batch, NCHW float32 (moved to ``data_format`` here).
        data_format: The artifact's input layout.
        batch: TFLite, ONNX, OpenVINO: the batch the file is run at, chunk by chunk (``None``: the whole
            batch at once). The output comes from the runtime as deployed (LiteRT with XNNPACK; onnxruntime's
            CPU provider, all graph optimizations on; OpenVINO's CPU plugin in fp32); the blocks, at batches
            above 1, from a second run (TFLite: keeping every tensor; ONNX: the file's own nodes up to each
            block, :func:`onnx_graph.block_model`), or for OpenVINO from the same run, the IR's
            ``block{i}_pool`` tensors added as outputs.
        config: ONNX, OpenVINO: the network the file holds, for its block outputs (``None``: the final output
            only).

    Returns:
        ``{"block1": ..., ..., "output": ...}``, blocks NCHW (absent where the
        artifact does not expose them).
    """
    x = np.ascontiguousarray(
        x_nchw if data_format == "channels_first" else x_nchw.transpose(0, 2, 3, 1), dtype=np.float32
    )
    out: dict[str, np.ndarray] = {}
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(os.fspath(path))  # kept alive: its endpoints hold weak references
        if hasattr(loaded, "blocks"):
            out.update(
                {
                    k: np.asarray(v)
                    for k, v in sorted(loaded.blocks(tf.constant(x)).items(), key=lambda kv: int(kv[0][5:]))
                }
            )
        out["output"] = _output_nchw(np.asarray(loaded.serve(tf.constant(x))), data_format)
        del loaded
        return out
    if fmt == "onnx":
        out = _run_onnx_blocks(path, config, x, batch) if config and (batch is None or batch > 1) else {}
        out["output"] = _run_onnx(os.fspath(path), x, batch)[0]
        out["output"] = _output_nchw(out["output"], data_format)
        return out
    if fmt == "openvino":
        out = _run_openvino(path, config, x, batch)
        out["output"] = _output_nchw(out["output"], data_format)
        return out
    out = _run_tflite_blocks(path, x, batch) if batch is None or batch > 1 else {}
    out["output"] = _run_tflite_output(path, x, batch)
    out["output"] = _output_nchw(out["output"], data_format)
    return out


def litert_interpreter(path: str | os.PathLike[str], *, num_threads: int | None = None, keep_tensors: bool = False):
    """A LiteRT (``ai-edge-litert``) interpreter of a ``.tflite`` file; ``tf.lite`` where LiteRT is not installed.

    Args:
        path: The file.
        num_threads: CPU threads (``None``: the runtime's default).
        keep_tensors: Keep every intermediate tensor readable. The runtime then
            applies no default delegate (XNNPACK), and runs its reference kernels.

    Returns:
        The interpreter, tensors not yet allocated.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # no LiteRT wheel for this platform: TensorFlow's copy of the same runtime
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    with warnings.catch_warnings():
        # tf.lite warns that it is deprecated, and both warn that keeping every tensor is for debugging
        # (it is: that is how the block outputs are read).
        warnings.filterwarnings(
            "ignore", message=r".*(Interpreter is deprecated|experimental_preserve_all_tensors)", category=UserWarning
        )
        return Interpreter(
            model_path=os.fspath(path), num_threads=num_threads, experimental_preserve_all_tensors=keep_tensors
        )


def onnx_session(model: str | os.PathLike[str] | bytes, *, num_threads: int | None = None):
    """An onnxruntime session on the CPU (all graph optimizations, as deployed) of an ONNX file or its bytes.

    Args:
        model: The file, or a serialized model.
        num_threads: Intra-op threads (``None``: the runtime's default, one per core).

    Returns:
        The ``onnxruntime.InferenceSession``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
    options.log_severity_level = 3  # errors only
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _run_onnx(model: str | bytes, x: np.ndarray, batch: int | None) -> list[np.ndarray]:
    """Every output of an ONNX model, run by onnxruntime on each chunk of ``batch`` images."""
    session = onnx_session(model, num_threads=os.cpu_count())
    name = session.get_inputs()[0].name
    chunks = [session.run(None, {name: chunk}) for chunk in _batches(x, batch)]
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _run_onnx_blocks(path: Path, config: VGGConfig, x: np.ndarray, batch: int | None) -> dict[str, np.ndarray]:
    """Every ``block{i}_pool`` output (NCHW) of the file's own nodes and weights up to it."""
    from parity.export.onnx_graph import block_model

    blocks = _run_onnx(block_model(path, config), x, batch)
    return {f"block{i}": b for i, b in enumerate(blocks, start=1)}


def _run_openvino(path: Path, config: VGGConfig | None, x: np.ndarray, batch: int | None) -> dict[str, np.ndarray]:
    """The IR's output, and at batches above 1 its own ``block{i}_pool`` tensors, from OpenVINO's CPU plugin (fp32)."""
    from parity.export.openvino_ir import compiled_model

    stages = len(config.stages) if config and (batch is None or batch > 1) else 0
    compiled = compiled_model(path, blocks=stages, num_threads=os.cpu_count())
    request = compiled.create_infer_request()
    chunks = [
        {o.get_any_name(): v.copy() for o, v in request.infer({0: chunk}).items()} for chunk in _batches(x, batch)
    ]
    names = {"output": "output", **{f"block{i}": f"block{i}_pool" for i in range(1, stages + 1)}}
    return {key: np.concatenate([c[name] for c in chunks]) for key, name in names.items()}


def _batches(x: np.ndarray, batch: int | None) -> list[np.ndarray]:
    """``x`` in chunks of ``batch`` images (``None``: one chunk)."""
    size = len(x) if batch is None else batch
    return [x[i : i + size] for i in range(0, len(x), size)]


def _resized(interpreter, batch: np.ndarray, allocated: tuple[int, ...] | None) -> tuple[int, ...]:
    """Sets this batch as the input, resizing and allocating first if ``allocated`` (the shape last allocated) differs.

    Allocating again at the same shape would make XNNPACK prepare (and pack the weights) again for nothing.

    Returns:
        The shape now allocated.
    """
    inp = interpreter.get_input_details()[0]
    if allocated != batch.shape:
        interpreter.resize_tensor_input(inp["index"], list(batch.shape), strict=True)
        interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], batch)
    return batch.shape


def _run_tflite_output(path: Path, x: np.ndarray, batch: int | None) -> np.ndarray:
    """The file's output as deployed (LiteRT, XNNPACK), resized to each chunk of ``batch`` images."""
    interpreter = litert_interpreter(path, num_threads=os.cpu_count())
    outputs, allocated = [], None
    for chunk in _batches(x, batch):
        allocated = _resized(interpreter, chunk, allocated)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    return np.concatenate(outputs)


def _dequantized(interpreter, detail: dict) -> np.ndarray:
    """A tensor's values as float32 (int8 tensors through their scale and zero point)."""
    value = interpreter.get_tensor(detail["index"])
    scale, zero = detail["quantization"]
    if value.dtype == np.float32 or not scale:
        return value.astype(np.float32)
    return (value.astype(np.float32) - zero) * scale


def _run_tflite_blocks(path: Path, x: np.ndarray, batch: int | None) -> dict[str, np.ndarray]:
    """Every ``block{i}_pool`` tensor (NCHW), read with intermediate tensors kept (reference kernels)."""
    interpreter = litert_interpreter(path, num_threads=os.cpu_count(), keep_tensors=True)
    collected: dict[str, list[np.ndarray]] = {}
    allocated = None
    for chunk in _batches(x, batch):
        allocated = _resized(interpreter, chunk, allocated)
        interpreter.invoke()
        found: dict[str, dict] = {}
        for d in interpreter.get_tensor_details():
            m = re.search(r"(?:^|/)block(\d+)_pool(?:_\d+)?/", d["name"])
            if m and len(d["shape"]) == 4 and f"block{m.group(1)}" not in found:
                found[f"block{m.group(1)}"] = d
        # Numbered by pool, as torch_forward numbers them (AlexNet's block1, block2 and block5 pools: 1, 2, 3).
        for i, key in enumerate(sorted(found, key=lambda k: int(k[5:])), start=1):
            collected.setdefault(f"block{i}", []).append(_dequantized(interpreter, found[key]).transpose(0, 3, 1, 2))
    return {k: np.concatenate(v) for k, v in collected.items()}


def _output_nchw(output: np.ndarray, data_format: str) -> np.ndarray:
    """A feature map (no top) in torch's NCHW; logits as they are."""
    return output.transpose(0, 3, 1, 2) if output.ndim == 4 and data_format == "channels_last" else output


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


def compare(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], tolerance: Tolerance, has_logits: bool
) -> dict[str, object]:
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
        ref, got = np.asarray(reference[name]), np.asarray(candidate[name])
        if ref.shape != got.shape:
            rows.append(
                {
                    "name": name,
                    "max_abs": float("inf"),
                    "max_ref": float(np.max(np.abs(ref))),
                    "max_rel": float("inf"),
                    "bound": None,
                    "ok": False,
                }
            )
            failures.append(f"{name} has shape {got.shape}, torch {ref.shape}")
            continue
        diff = block_difference(name, ref, got)
        rel = diff.max_rel
        bound = tolerance.output_rtol if name == "output" else tolerance.block_rtol
        ok = bound is None or rel <= bound
        rows.append(
            {"name": name, "max_abs": diff.max_abs, "max_ref": diff.max_ref, "max_rel": rel, "bound": bound, "ok": ok}
        )
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
        lines.append(
            f"{r['name']:<8} {r['max_abs']:>11.3e} {r['max_ref']:>11.3e} {r['max_rel']:>10.2e} {bound:>8}{flag}"
        )
    if "top1" in figures:
        lines.append(
            f"top-1 agreement {figures['top1']:.0%}, top-5 overlap {figures['top5_overlap']:.0%}, "
            f"torch's top-1 in export's top-5 {figures['top1_in_top5']:.0%}"
        )
    if not figures["blocks_compared"]:
        lines.append("(this artifact exposes no block outputs: final output only)")
    return "\n".join(lines)


@dataclass(frozen=True)
class TFLiteOp:
    """One operator of a ``.tflite`` file, as :func:`tflite_ops` reads it.

    Attributes:
        name: The builtin operator's name (``"FULLY_CONNECTED"``, ...).
        inputs: ``(dtype name, is a constant, shape)`` per input tensor.
    """

    name: str
    inputs: tuple[tuple[str, bool, tuple[int, ...]], ...]


def tflite_ops(path: str | os.PathLike[str]) -> list[TFLiteOp]:
    """The operators of a ``.tflite`` file in order, with what each reads (TensorFlow's flatbuffer reader)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(os.fspath(path))
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    graph = model.subgraphs[0]
    ops = []
    for op in graph.operators:
        inputs = []
        for i in op.inputs:
            if i < 0:  # an optional input left out
                continue
            tensor = graph.tensors[i]
            data = model.buffers[tensor.buffer].data
            shape = tuple(int(d) for d in tensor.shape) if tensor.shape is not None else ()
            inputs.append((type_names[tensor.type], data is not None and len(data) > 0, shape))
        ops.append(TFLiteOp(op_names[codes[op.opcodeIndex]], tuple(inputs)))
    return ops


def constant_transposes(ops: list[TFLiteOp]) -> list[TFLiteOp]:
    """Every ``TRANSPOSE`` of a constant: weights reordered on every call instead of once, when written."""
    return [op for op in ops if op.name == "TRANSPOSE" and op.inputs and op.inputs[0][1]]


def float_weight_ops(ops: list[TFLiteOp]) -> list[TFLiteOp]:
    """Every convolution or fully connected op whose weights are float: none in a full-integer file."""
    kinds = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    return [op for op in ops if op.name in kinds and len(op.inputs) > 1 and op.inputs[1][0].startswith("FLOAT")]

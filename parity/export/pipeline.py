"""The export's steps, in the order they run: check, read, build, reference, write, verify, commit.

:func:`export` is the library form of ``python -m parity.export`` (:mod:`parity.export.cli`).
Everything that can be refused before a framework loads is refused first
(:mod:`parity.export.options`); then torch and torchvision load before Keras
and TensorFlow (the other order crashes, tensorflow/tensorflow#124205).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from parity.cli import UsageError, log
from parity.core.config import ARCHS, VGGConfig, get_config
from parity.core.errors import first_line, os_reason
from parity.core.weights_file import sidecar_path
from parity.export import check as export_check
from parity.export import write as export_write
from parity.export.calibration import check_calibration
from parity.export.check import TOLERANCES
from parity.export.options import (
    DEFAULT_INPUT_SIZE,
    DEFAULT_VERIFY_BATCH,
    FILE_SUFFIXES,
    check_options,
    check_output,
    default_data_format,
    resolve_export_weights,
)
from parity.frameworks import import_frameworks

if TYPE_CHECKING:
    import keras

__all__ = ["EXPORT_FORMAT", "ExportResult", "export"]

#: Format tag of the sidecar.
EXPORT_FORMAT = "vgg-parity-export/1"
#: The packages an export's figures depend on, by route: through Keras, or written directly (fp32 TFLite, ONNX).
PACKAGES_USED = {
    "keras": ("torch", "torchvision", "keras", "tensorflow", "ai-edge-litert", "numpy"),
    "tflite": ("torch", "torchvision", "ai-edge-litert", "flatbuffers", "numpy"),
    "onnx": ("torch", "torchvision", "onnx", "onnxruntime", "numpy"),
    "openvino": ("torch", "torchvision", "onnx", "openvino", "numpy"),
}
#: What a dynamic-size ONNX or OpenVINO file's second, odd size adds to ``--input-size``: 224 becomes 257 x 321, maps of
#: 8 x 10 cells (adaptive windows of two cells that overlap: torch's floor and ceil both at work); 32 becomes 65 x 129.
ODD_SIZE_STEP = (33, 97)


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


@dataclass(frozen=True)
class ExportPlan:
    """What is exported, settled from the options and the weights file's record.

    Attributes:
        arch: Preset name.
        config: The network (class and input channel counts from the file).
        fmt: ``"saved_model"``, ``"tflite"``, ``"onnx"`` or ``"openvino"``.
        quantize: The quantization.
        include_top: Whether the classifier is exported.
        data_format: The artifact's input layout.
        size: ``(height, width)`` verified at (and TFLite's fixed size).
        spatial: The model's spatial input shape: ``size``, or ``(None, None)`` for a SavedModel or ONNX file that
            takes any size.
        batch_size: The batch a TFLite or ONNX file is verified at besides 1 (it takes any batch).
        calibration: With ``int8``: a folder of calibration images (``None``: the built-in set).
        weights_path: The converted ``.weights.h5``.
        out_path: The artifact.
    """

    arch: str
    config: VGGConfig
    fmt: str
    quantize: str
    include_top: bool
    data_format: str
    size: tuple[int, int]
    spatial: tuple[int | None, int | None]
    batch_size: int
    calibration: Path | None
    weights_path: Path
    out_path: Path

    def signature(self, batch: int | None) -> tuple[int | None, ...]:
        """The input signature at this batch (``None``: any), in the artifact's layout."""
        channels = self.config.in_channels
        if self.data_format == "channels_first":
            return (batch, channels, *self.spatial)
        return (batch, *self.spatial, channels)

    @property
    def input_signature(self) -> tuple[int | None, ...]:
        """The artifact's own signature: any batch (TFLite: of the fixed size)."""
        return self.signature(None)


def _file_record(arch: str, weights_path: Path) -> tuple[VGGConfig, bool, dict[str, object]]:
    """A converted file's config, whether it holds the classifier, and its record.

    Raises:
        UsageError: If the record is unreadable or of another architecture.
    """
    from parity.core.errors import WeightsFileError
    from parity.core.weights_file import read_record

    try:
        record = read_record(weights_path)
    except WeightsFileError as e:
        raise UsageError(str(e)) from None
    if record.get("arch") != arch:
        raise UsageError(
            f"{weights_path.name} holds {record.get('arch')} weights, not {arch}: export them with "
            f"`python -m parity.export {record.get('arch')} ...`. Received: arch={arch!r}, "
            f"weights={os.fspath(weights_path)!r}"
        )
    return VGGConfig.from_dict(record["config"]), bool(record.get("include_top", True)), record  # type: ignore[arg-type]


def _checkpoint_source(
    arch: str, checkpoint: Path, quiet: bool
) -> tuple[dict[str, np.ndarray], VGGConfig, dict[str, object]]:
    """A torch checkpoint's state dict, its config and its provenance record, checked as the converter checks them.

    Raises:
        UsageError: If it is not a checkpoint of ``arch``.
    """
    from parity.convert.to_keras import read_checkpoint
    from parity.core.checkpoint import CheckpointError
    from parity.core.errors import ConversionError

    try:
        state, config, provenance = read_checkpoint(arch, checkpoint, quiet=quiet)
    except (CheckpointError, ConversionError) as e:
        raise UsageError(str(e)) from None
    return state, config, {"source": provenance}


def _plan(
    arch: str,
    saved: VGGConfig,
    file_top: bool,
    weights_path: Path,
    out_path: Path,
    options: dict[str, object],
    input_size: Sequence[int] | None,
    include_top: bool | None,
) -> ExportPlan:
    """The plan, from the weights' config (``saved``) and the options.

    Raises:
        UsageError: If the options do not fit the weights.
    """
    include_top = file_top if include_top is None else include_top
    if include_top and not file_top:
        raise UsageError(
            f"{weights_path.name} holds convolutional weights only: pass --no-include-top. Received: --include-top"
        )
    config = get_config(arch).replace(num_classes=saved.num_classes, in_channels=saved.in_channels)
    fixed = config.input_size if config.pool_size is None and include_top else None
    if fixed is not None and input_size is not None and tuple(input_size) != tuple(fixed):
        raise UsageError(
            f"{arch} without the adaptive pool takes {fixed[0]} x {fixed[1]} only. "
            f"Received: --input-size {input_size[0]} {input_size[1]}"
        )
    size = tuple(input_size or fixed or DEFAULT_INPUT_SIZE)
    if options["quantize"] == "int8" and config.in_channels != 3:
        raise UsageError(
            "--quantize int8 calibrates on and is judged on RGB photos, so it needs 3 input channels. Received: "
            f"{weights_path.name} with {config.in_channels} input channels"
        )
    spatial = size if (options["fmt"] == "tflite" or fixed is not None) else (None, None)
    plan = ExportPlan(
        arch,
        config,
        include_top=include_top,
        size=size,
        spatial=spatial,
        weights_path=weights_path,
        out_path=out_path,
        **options,  # type: ignore[arg-type]
    )
    return plan


def _build(
    plan: ExportPlan, builder: Callable[..., keras.Model], arrays: dict[str, list[np.ndarray]] | None, quiet: bool
) -> keras.Model:
    """The Keras model with the weights loaded: a checkpoint's converted ``arrays``, or the converted file's."""
    from parity.core.errors import WeightsFileError
    from vgg_keras.weights import load_converted_weights

    top = "with" if plan.include_top else "without"
    log(f"Building {plan.arch} ({top} the top, {plan.data_format}) from {plan.weights_path}", quiet)
    model = builder(plan.config, include_top=plan.include_top, data_format=plan.data_format, input_shape=plan.spatial)
    if arrays is not None:
        from parity.convert.weight_arrays import assign_keras_weights

        assign_keras_weights(model, arrays)
        return model
    try:
        load_converted_weights(model, plan.weights_path, plan.config, include_top=plan.include_top)
    except WeightsFileError as e:
        raise UsageError(str(e)) from None
    return model


def _source_path(arch: str, weights: str | None, checkpoint: str | os.PathLike[str] | None) -> Path:
    """The converted file (``weights``) or the torch checkpoint exported, checked before any framework loads.

    Raises:
        UsageError: Unless exactly one is given, and it is a readable file of the right kind.
    """
    if (weights is None) == (checkpoint is None):
        raise UsageError(
            "Pass either --weights (a converted .weights.h5, or 'converted') or --checkpoint (a torch .pth, .pt "
            f"or .safetensors). Received: weights={weights!r}, checkpoint={checkpoint!r}"
        )
    if checkpoint is None:
        return resolve_export_weights(arch, str(weights))
    from parity.core.checkpoint import CheckpointError, check_checkpoint_path

    try:
        return check_checkpoint_path(checkpoint)
    except CheckpointError as e:
        raise UsageError(str(e)) from None


def _file_state(plan: ExportPlan) -> dict[str, np.ndarray]:
    """The converted file's weights in torchvision's layout (read under a shared folder lock, sidecar checked).

    Raises:
        UsageError: If the file is unreadable, fails its sidecar's sha256, or does not fit the network.
    """
    from parity.core.errors import ConversionError

    arrays = _checked_arrays(plan)
    try:
        return export_check.torch_state(arrays, plan.config, plan.include_top)
    except ConversionError as e:
        raise UsageError(
            f"{plan.weights_path} cannot be read back for the torch reference: {first_line(e)}. "
            f"Received: weights={os.fspath(plan.weights_path)!r}"
        ) from None


def _checked_arrays(plan: ExportPlan) -> dict[str, list[np.ndarray]]:
    """The weights file's arrays, read under a shared folder lock after its sidecar's sha256 is checked."""
    from parity.core.atomic import folder_lock
    from parity.core.catalog import cache_dir
    from parity.core.errors import WeightsFileError
    from parity.core.weights_file import check_sidecar_hash

    path = plan.weights_path
    try:
        with folder_lock(path.parent, shared=True):
            check_sidecar_hash(path, required=path.parent.resolve() == cache_dir().resolve())
            return export_check.network_arrays(path, plan.config, plan.include_top)
    except WeightsFileError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"{path} cannot be read: {first_line(e)}. Received: weights={os.fspath(path)!r}") from None


def _references(
    plan: ExportPlan, state: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """The inputs the artifact is judged on, and torchvision's outputs on them (``state``: the weights exported).

    An ONNX or OpenVINO file that takes any height and width is judged at an odd size too (:data:`ODD_SIZE_STEP`).
    """
    inputs = export_check.reference_inputs(plan.config, plan.size, plan.quantize)
    if plan.fmt in ("onnx", "openvino") and plan.spatial == (None, None):
        odd = (plan.size[0] + ODD_SIZE_STEP[0], plan.size[1] + ODD_SIZE_STEP[1])
        noise = np.random.default_rng(1234).standard_normal((2, plan.config.in_channels, *odd), np.float32)
        inputs[f"verification {odd[0]}x{odd[1]}"] = noise
    return inputs, export_check.torch_outputs(state, plan.config, inputs, plan.include_top)


def _writes_directly(plan: ExportPlan) -> bool:
    """Whether the artifact is written from the arrays alone (ONNX, OpenVINO, fp32 TFLite), without Keras or
    TensorFlow."""
    return plan.fmt in ("onnx", "openvino") or (plan.fmt == "tflite" and plan.quantize == "none")


def _route(plan: ExportPlan) -> str:
    """``"onnx"``, ``"openvino"``, ``"tflite"`` (fp32, written directly) or ``"keras"`` (built in Keras, exported by
    TensorFlow)."""
    return plan.fmt if _writes_directly(plan) else "keras"


def _write_artifact(
    plan: ExportPlan,
    source: keras.Model | dict[str, np.ndarray],
    staged: Path,
    temps: list[Path],
    quiet: bool,
) -> None:
    """Writes the SavedModel, the TFLite, the ONNX or the OpenVINO file at ``staged`` (scratch paths go in ``temps``).

    ``source`` is the Keras model, or (ONNX, OpenVINO, fp32 TFLite: :func:`_writes_directly`) the
    torchvision-layout state dict.
    """
    if isinstance(source, dict) and plan.fmt == "openvino":
        from parity.export.openvino_ir import write_openvino

        log(f"Writing the OpenVINO IR through the ONNX graph (input {plan.input_signature}, fp32)", quiet)
        write_openvino(
            staged, plan.config, source, include_top=plan.include_top, data_format=plan.data_format, size=plan.size
        )
        return
    if isinstance(source, dict) and plan.fmt == "onnx":
        from parity.export.onnx_graph import write_onnx

        log(f"Writing the ONNX file from the layer plan (input {plan.input_signature}, fp32)", quiet)
        write_onnx(
            staged, plan.config, source, include_top=plan.include_top, data_format=plan.data_format, size=plan.size
        )
        return
    if isinstance(source, dict):
        from parity.export.flatbuffer import write_tflite

        log(f"Writing the TFLite file from the layer plan (input {plan.input_signature}, fp32)", quiet)
        write_tflite(
            staged, plan.config, source, include_top=plan.include_top, data_format=plan.data_format, size=plan.size
        )
        return
    model = source
    if plan.fmt == "saved_model":
        log(f"Writing the SavedModel (input {plan.input_signature})", quiet)
        export_write.write_saved_model(model, staged, plan.input_signature)
        return
    scratch = export_write.temp_name(plan.out_path, ".savedmodel.tmp")
    temps.append(scratch)
    log(f"Converting to TFLite (input {plan.input_signature}, quantization {plan.quantize})", quiet)
    calibration = _calibration(plan, quiet) if plan.quantize == "int8" else None
    data = export_write.tflite_bytes(model, scratch, plan.input_signature, plan.quantize, calibration)
    export_write.remove(scratch)
    with open(staged, "wb") as fh:
        fh.write(data)


def _calibration(plan: ExportPlan, quiet: bool) -> np.ndarray:
    """The int8 calibration inputs in the artifact's layout: the user's folder, or the built-in set."""
    from parity.export.calibration import calibration_images, default_calibration

    size = plan.size[0]  # square and 3 channels: checked by check_options and _plan
    x = calibration_images(plan.calibration, size) if plan.calibration else default_calibration(size)
    where = plan.calibration or "the built-in set (scikit-image pictures the export is not judged on)"
    log(f"Calibrating int8 on {len(x)} images from {where}", quiet)
    return x if plan.data_format == "channels_first" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _judge(
    plan: ExportPlan,
    staged: Path,
    inputs: dict[str, np.ndarray],
    references: dict[str, dict[str, np.ndarray]],
    quiet: bool,
) -> dict[str, dict[str, object]]:
    """Runs the artifact from disk on every input set and compares it with torchvision's outputs."""
    log(f"Loading {plan.fmt} back from disk and comparing with torchvision", quiet)
    figures: dict[str, dict[str, object]] = {}
    # A TFLite or ONNX file is run at every batch it is checked at: batch 1, and plan.batch_size. The input sets
    # of one size go through one interpreter or session per batch (loading a file packs its weights: once, not
    # once per set).
    batches = (plan.batch_size, 1) if plan.fmt in ("tflite", "onnx", "openvino") else (None,)
    by_size: dict[tuple[int, ...], list[str]] = {}
    for key, x in inputs.items():
        by_size.setdefault(x.shape[1:], []).append(key)
    for batch in batches:
        for keys in by_size.values():
            stops = np.cumsum([len(inputs[k]) for k in keys])[:-1]
            together = export_check.run_artifact(
                staged,
                plan.fmt,
                np.concatenate([inputs[k] for k in keys]),
                plan.data_format,
                batch=batch,
                config=plan.config,
            )
            parts = {name: np.split(v, stops) for name, v in together.items()}
            for i, key in enumerate(keys):
                x, got = inputs[key], {name: v[i] for name, v in parts.items()}
                name = key if batch is None or batch == batches[0] else f"{key} at batch {batch}"
                figures[name] = export_check.compare(references[key], got, TOLERANCES[plan.quantize], plan.include_top)
                at = "" if batch is None else f", run at batch {batch}"
                title = (
                    f"{key}: {x.shape[0]} images {x.shape[2]}x{x.shape[3]}, {plan.fmt}{at}, "
                    f"quantization {plan.quantize}"
                )
                log(export_check.table(figures[name], title), quiet)
    failed = "; ".join(f"{k}: {', '.join(f['failures'])}" for k, f in figures.items() if not f["passed"])  # type: ignore[arg-type]
    if failed:
        log(f"Export check FAILED ({failed}): {plan.out_path} not written.", False)
    return figures


def _sidecar(
    plan: ExportPlan,
    staged: Path,
    weights_record: dict[str, object],
    inputs: dict[str, np.ndarray],
    figures: dict[str, dict[str, object]],
) -> dict[str, object]:
    """The sidecar's content: the export, the weights' provenance, versions, figures, size and sha256."""
    from parity.machine import package_versions

    weights_sidecar = sidecar_path(plan.weights_path)
    if not plan.weights_path.name.endswith(".weights.h5"):  # a torch checkpoint, exported directly
        weights_sha = weights_record["source"]["sha256"]  # type: ignore[index]
    else:
        weights_sha = json.loads(weights_sidecar.read_text())["sha256"] if weights_sidecar.is_file() else None
    stages = len(plan.config.stages)
    endpoints = {
        "saved_model": ["serve", "serving_default", "blocks"],
        "tflite": ["single signature"],
        "onnx": ["one graph: input 'images', output 'output'"],
        "openvino": ["one model: input 'images', output 'output'; compile with INFERENCE_PRECISION_HINT f32"],
    }[plan.fmt]
    return {
        "format": EXPORT_FORMAT,
        "artifact": plan.out_path.name,
        "export": {
            "format": plan.fmt,
            "quantization": plan.quantize,
            "input_signature": list(plan.input_signature),
            "input_size_verified": list(plan.size),
            "data_format": plan.data_format,
            "include_top": plan.include_top,
            "output": "logits (no softmax)" if plan.include_top else f"block{stages} feature map",
            "endpoints": endpoints,
        },
        "arch": plan.arch,
        "config": plan.config.to_dict(),
        "weights": {
            "file": os.fspath(plan.weights_path.resolve()),
            "sha256": weights_sha,
            **{k: weights_record.get(k) for k in ("source", "versions", "verification")},
        },
        "versions": package_versions(PACKAGES_USED[_route(plan)]),
        "verification": {
            "reference": "torchvision-layout state dict read back from the weights file, "
            "run by vgg_torch (eval mode, fp32)",
            "tolerance": asdict(TOLERANCES[plan.quantize]),
            "inputs": {k: list(v.shape) for k, v in inputs.items()},
            "figures": figures,
            "passed": all(f["passed"] for f in figures.values()),
        },
        "size_bytes": sum(export_write.tree_size(p) for p in _artifact_files(plan, staged)),
        "sha256": export_write.tree_sha256(staged),
        **_companion_record(plan, staged),
    }


def _artifact_files(plan: ExportPlan, path: Path) -> list[Path]:
    """The artifact's files: ``path``, and an OpenVINO IR's ``.bin`` beside it."""
    from parity.export.openvino_ir import bin_path

    return [path, bin_path(path)] if plan.fmt == "openvino" else [path]


def _companion_record(plan: ExportPlan, staged: Path) -> dict[str, object]:
    """An OpenVINO IR's ``.bin`` for the sidecar: its name, size and sha256 (``sha256`` above is the ``.xml``'s)."""
    if plan.fmt != "openvino":
        return {}
    weights = _artifact_files(plan, staged)[1]
    name = _artifact_files(plan, plan.out_path)[1].name
    return {"weights_file": {"name": name, "size_bytes": weights.stat().st_size,
                             "sha256": export_write.tree_sha256(weights)}}  # fmt: skip


def export(
    arch: str,
    *,
    weights: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    fmt: str,
    output: str | os.PathLike[str],
    quantize: str = "none",
    input_size: Sequence[int] | None = None,
    include_top: bool | None = None,
    data_format: str | None = None,
    batch_size: int | None = None,
    calibration: str | os.PathLike[str] | None = None,
    force: bool = False,
    quiet: bool = False,
    model_builder: Callable[..., keras.Model] | None = None,
) -> ExportResult:
    """Exports one converted model and checks the artifact against torchvision; the library form of the CLI.

    Args:
        arch: Preset name.
        weights: ``"converted"`` or a ``.weights.h5`` path written by ``python -m parity.convert``.
        checkpoint: Instead of ``weights``: a torch checkpoint of ``arch`` (``.pth``, ``.pt``,
            ``.safetensors``), checked as ``parity.convert`` checks it and exported in the same
            process, without a ``.weights.h5`` in between; the reference runs its own tensors.
        fmt: ``"saved_model"``, ``"tflite"``, ``"onnx"`` or ``"openvino"`` (an IR: the ``.xml`` and a ``.bin``
            beside it, converted by ``openvino.convert_model`` from the ONNX graph).
        output: Target folder (SavedModel), ``.tflite``, ``.onnx`` or ``.xml`` file.
        quantize: ``"none"``, ``"float16"``, ``"dynamic-int8"`` (int8 weights, float activations) or
            ``"int8"`` (full integer: int8 weights and activations, float input and output); TFLite only.
        input_size: ``(height, width)``: TFLite's fixed size (default 224 x 224);
            for a SavedModel, ONNX or OpenVINO file only the size verified at (they
            take any size >= 32 when the config has the adaptive pool; an ONNX or
            OpenVINO file is then verified at an odd size too, 257 x 321 for 224 x 224).
        include_top: Whether to export the classifier; default: what the file holds.
        data_format: Input layout of the artifact; default ``"channels_first"`` for ONNX and OpenVINO (torch's
            NCHW), ``"channels_last"`` otherwise.
        batch_size: TFLite, ONNX and OpenVINO: the batch the file is verified at besides 1
            (default 4); every such file takes any batch.
        calibration: With ``quantize="int8"``: a folder of images from your
            domain; default: a built-in set of 35 crops of scikit-image pictures.
        force: Whether to replace an existing output.
        quiet: No progress messages.
        model_builder: Replaces :func:`parity.export.write.build_export_model` (tests build broken models with
            it); not used by the ONNX and OpenVINO routes, which build no Keras model.

    Returns:
        The result; ``output`` is ``None`` (nothing written) when the check failed.

    Raises:
        UsageError: On bad input; nothing is written.

    Examples:
        >>> from parity.export import export
        >>> result = export("vgg16", weights="converted", fmt="tflite", output="vgg16.tflite")  # doctest: +SKIP
        >>> result.passed, result.output  # doctest: +SKIP
        (True, PosixPath('vgg16.tflite'))
    """
    if arch not in ARCHS:
        raise UsageError(f"ARCH must be one of {', '.join(ARCHS)}. Received: arch={arch!r}")
    data_format = data_format or default_data_format(fmt)
    check_options(arch, fmt, quantize, input_size, data_format, batch_size)
    calibration_folder = check_calibration(calibration, quantize)
    weights_path = _source_path(arch, weights, checkpoint)
    out_path = check_output(Path(output).expanduser(), fmt, weights_path, force)
    started = time.perf_counter()
    options = {
        "fmt": fmt,
        "quantize": quantize,
        "data_format": data_format,
        "batch_size": batch_size or DEFAULT_VERIFY_BATCH,
        "calibration": calibration_folder,
    }
    state = None
    if checkpoint is not None:
        import_frameworks("the export", "python -m parity.export", keras=False)
        state, saved, weights_record = _checkpoint_source(arch, weights_path, quiet)
        file_top = True
    else:
        saved, file_top, weights_record = _file_record(arch, weights_path)
    plan = _plan(arch, saved, file_top, weights_path, out_path, options, input_size, include_top)
    direct = _writes_directly(plan) and (model_builder is None or plan.fmt in ("onnx", "openvino"))
    import_frameworks("the export", "python -m parity.export", keras=not direct)
    if state is None:
        log(f"Reading {plan.arch} from {plan.weights_path}", quiet)
        state = _file_state(plan)
    elif not plan.include_top:
        state = {k: v for k, v in state.items() if k.startswith("features.")}
    inputs, references = _references(plan, state)
    source: keras.Model | dict[str, np.ndarray] = state
    if not direct:
        from parity.convert.weight_arrays import convert_state_dict

        arrays = convert_state_dict(state, plan.config, plan.include_top) if checkpoint is not None else None
        source = _build(plan, model_builder or export_write.build_export_model, arrays, quiet)
        del arrays
    del state
    with export_write.staging(out_path) as temps:
        staged = export_write.temp_name(out_path, ".tmp" + FILE_SUFFIXES.get(fmt, ""))
        temps += _artifact_files(plan, staged)
        try:
            _write_artifact(plan, source, staged, temps, quiet)
            del source
            if not direct:
                import keras

                keras.backend.clear_session()
            sidecar = _sidecar(plan, staged, weights_record, inputs, _judge(plan, staged, inputs, references, quiet))
            if not sidecar["verification"]["passed"]:  # type: ignore[index]
                return ExportResult(None, sidecar, False)
            files = zip(_artifact_files(plan, staged)[1:], _artifact_files(plan, out_path)[1:])
            text = json.dumps(sidecar, indent=2, default=str) + "\n"
            export_write.commit(staged, out_path, text, temps, companion=next(files, None))
        except OSError as e:
            raise UsageError(
                f"Could not write {out_path} ({os_reason(e)}); nothing was kept: free some space or pick another "
                f"folder. Received: output={os.fspath(out_path)!r}"
            ) from None
    seconds = time.perf_counter() - started
    size_mb = sidecar["size_bytes"] / 1e6  # type: ignore[operator]
    written = " + ".join(p.name for p in _artifact_files(plan, out_path)[1:])
    written = f"{out_path} (+ {written}, " if written else f"{out_path} ("
    log(f"Wrote {written}{size_mb:.1f} MB) and {sidecar_path(out_path).name} in {seconds:.1f} s", quiet)
    return ExportResult(out_path, sidecar, True)

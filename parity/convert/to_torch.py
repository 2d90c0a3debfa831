"""``python -m parity.convert --to torch``: a Keras ``.weights.h5`` back to a verified torchvision state dict.

The file's arrays are read by layer name (each ``vars`` group names its
layer), mapped to torchvision's names and layouts with the converter's name
map and the inverse layout transforms
(:func:`parity.convert.weight_arrays.keras_to_state_dict`), and given the
``num_batches_tracked`` counters torchvision's batch-norm layers hold (Keras
does not track the count: they are written as 0; with torch's default
``momentum=0.1`` the counter is never read). Every float tensor is the Keras
array, bit for bit.

Verification is on by default: the state dict is loaded with ``strict=True``
into torchvision's own model, which runs the fixed verification batch; the
Keras file is loaded into a vgg_keras model that runs the same batch; the
output file is written (temporary name, then rename) only if they agree.
Exit codes and messages are those of the forward direction.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from parity.cli import UsageError, check_new_output, check_report_path, log
from parity.convert.to_keras import ConvertResult, check_num_classes, verification_batch, verify_file
from parity.convert.weight_arrays import keras_to_state_dict, weight_map
from parity.core.atomic import write_atomic
from parity.core.config import VGGConfig, get_config, layer_plan
from parity.core.errors import ConversionError, first_line
from parity.core.h5file import read_layer_arrays
from parity.core.state_dicts import LAYOUTS, torchvision_to_timm
from parity.frameworks import import_frameworks
from parity.interrupts import abort_if_interrupted

__all__ = ["TORCH_SUFFIXES", "convert_to_torch", "torch_state_dict_from_keras"]

#: Output formats: torch.save pickles (state dict of tensors only) and safetensors.
TORCH_SUFFIXES = (".pth", ".pt", ".safetensors")


def torch_state_dict_from_keras(
    arrays: Mapping[str, list[np.ndarray]], config: VGGConfig, include_top: bool
) -> dict[str, np.ndarray]:
    """A torchvision state dict (``num_batches_tracked`` included) from Keras layer arrays.

    Args:
        arrays: :func:`parity.core.h5file.read_layer_arrays`' output.
        config: The network.
        include_top: Whether the classifier is included.

    Returns:
        ``{torchvision key: array}`` in torchvision's order.

    Raises:
        ConversionError: Listing layers the network lacks, layers missing and
            shape or count mismatches.
    """
    mapped = weight_map(config, include_top)
    expected: dict[str, int] = {}
    for m in mapped:
        expected[m.keras_layer] = max(expected.get(m.keras_layer, 0), m.keras_index + 1)
    extra = [name for name in arrays if name not in expected]
    counts = [
        f"{name} has {len(arrays[name])} arrays, expected {n}"
        for name, n in expected.items()
        if name in arrays and len(arrays[name]) != n
    ]
    problems = [
        f"{label}: {', '.join(items)}"
        for label, items in (("layers not in the network", extra), ("wrong counts", counts))
        if items
    ]
    if problems:
        raise ConversionError(f"Keras weights do not fit {config.name}: " + "; ".join(problems))
    flat = keras_to_state_dict(arrays, config, include_top)
    state: dict[str, np.ndarray] = {}
    for spec in layer_plan(config, include_top):
        for key in [k for k in flat if k.rpartition(".")[0] == spec.torch_name]:
            state[key] = flat[key].astype(np.float32, copy=False)
        if spec.kind == "bn":
            state[f"{spec.torch_name}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    return state


def _check_output(path: Path, force: bool) -> Path:
    """Refuses a folder, a suffix torch cannot be written as, and what :func:`parity.cli.check_new_output` refuses."""
    shown = f"output={str(path)!r}"
    if path.is_dir():
        raise UsageError(f"Output is a directory: name a {'/'.join(TORCH_SUFFIXES)} file inside it. Received: {shown}")
    if path.suffix not in TORCH_SUFFIXES:
        raise UsageError(f"--output must end in {', '.join(TORCH_SUFFIXES)} with --to torch. Received: {shown}")
    return check_new_output(path, force, shown)


def _torchvision_reference(state: Mapping[str, np.ndarray], arch: str, config: VGGConfig, include_top: bool) -> object:
    """torchvision's own model with the state dict loaded strictly (tensors adopted, not copied)."""
    import torch
    import torchvision

    from vgg_torch.builders import torchvision_load_kwargs

    with torch.device("meta"):
        model = torchvision.models.get_model(
            arch, weights=None, num_classes=config.num_classes, **torchvision_load_kwargs(arch)
        )
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    if include_top:
        model.load_state_dict(tensors, strict=True, assign=True)
    else:
        model.features.load_state_dict(
            {k.removeprefix("features."): v for k, v in tensors.items()}, strict=True, assign=True
        )
    return model.eval()


def _serialize(state: Mapping[str, np.ndarray], suffix: str) -> bytes:
    import torch

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    if suffix == ".safetensors":
        from safetensors.torch import save

        return save(tensors, metadata={"format": "pt"})
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def convert_to_torch(
    arch: str,
    keras_weights: str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    layout: str = "torchvision",
    verify_outputs: bool = True,
    force: bool = False,
    quiet: bool = False,
) -> ConvertResult:
    """Converts a Keras ``.weights.h5`` of a preset to a torchvision (or timm) state dict file.

    Args:
        arch: Preset name.
        keras_weights: The Keras file (full model or features only).
        output: Target ``.pth``, ``.pt`` or ``.safetensors``; defaults to the
            Keras file's name with ``.pth`` in the working directory.
        report: Optional JSON report path.
        num_classes: Expected class count; must agree with the file.
        layout: ``"torchvision"``, or ``"timm"`` for timm's ``vgg*`` models (``pre_logits.fc1`` as a
            7×7 convolution, ``pre_logits.fc2``, ``head.fc``): the verified torchvision state dict
            reshaped, every value kept (:func:`parity.core.state_dicts.torchvision_to_timm`). Needs the
            full model.
        verify_outputs: Whether to compare torchvision's model with the Keras
            model before writing.
        force: Overwrite an existing output.
        quiet: No progress messages.

    Returns:
        A :class:`parity.convert.to_keras.ConvertResult`; ``passed`` is ``False`` (and
        nothing written) on a parity failure.

    Raises:
        UsageError, ConversionError: On bad input; nothing is written.

    Examples:
        >>> from parity.convert import convert_to_torch
        >>> convert_to_torch("vgg16", "vgg16_ft.weights.h5", output="vgg16_ft.pth").passed  # doctest: +SKIP
        True
    """
    source = Path(keras_weights).expanduser()
    shown = f"keras_weights={os.fspath(keras_weights)!r}"
    if not source.is_file() or not os.access(source, os.R_OK):
        raise UsageError(f"--keras-weights must be a readable .weights.h5 file. Received: {shown}")
    check_num_classes(num_classes)
    if layout not in LAYOUTS:
        raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}. Received: --layout {layout}")
    stem = source.name.removesuffix(".weights.h5").removesuffix(".h5")
    out_path = _check_output(Path(output).expanduser() if output else Path.cwd() / f"{stem}.pth", force)
    report_path = check_report_path(report, out_path) if report is not None else None

    import_frameworks()
    started = time.perf_counter()
    log(f"Reading {source}", quiet)
    state, config, include_top = _read_state(source, shown, get_config(arch), num_classes)
    abort_if_interrupted()
    verification: dict[str, object] | None = None
    passed = True
    if verify_outputs:
        verification, passed = _verify(source, state, arch, config, include_top, quiet)
    if report_path is not None:
        data = {"arch": arch, "direction": "keras-to-torch", "source": os.fspath(source.resolve())}
        data |= {"verification": verification, "passed": passed}
        write_atomic(report_path, json.dumps(data, indent=2, default=str) + "\n", before_commit=abort_if_interrupted)
    if not passed:
        log(f"Parity check FAILED: {out_path} not written.", False)
        return ConvertResult(None, verification, False)
    if layout == "timm":
        if not include_top:
            raise UsageError(f"timm's layout is of a full model; {source} holds the features only. Received: {shown}")
        state = torchvision_to_timm(state, config)
    _write(out_path, state, report_path)
    log(f"Wrote {out_path} ({len(state)} tensors, {time.perf_counter() - started:.1f} s)", quiet)
    return ConvertResult(out_path, verification, True)


def _read_state(
    source: Path, shown: str, base: VGGConfig, num_classes: int | None
) -> tuple[dict[str, np.ndarray], VGGConfig, bool]:
    """The Keras file as a torchvision state dict, the config it fits, and whether it has the top."""
    try:
        arrays = read_layer_arrays(source)
    except OSError as e:
        raise UsageError(f"Cannot read {source} as a Keras .weights.h5 ({first_line(e)}). Received: {shown}") from None
    include_top = "predictions" in arrays
    found = int(np.shape(arrays["predictions"][0])[-1]) if include_top and arrays["predictions"] else None
    if num_classes is not None and found is not None and num_classes != found:
        raise UsageError(
            f"--num-classes {num_classes} disagrees with the file's {found}-class `predictions` layer. "
            f"Received: --num-classes {num_classes}"
        )
    config = base.replace(num_classes=found or base.num_classes)
    try:
        return torch_state_dict_from_keras(arrays, config, include_top), config, include_top
    except ConversionError as e:
        raise ConversionError(f"{str(e).rstrip('.')}. Received: {shown} with {len(arrays)} layers") from None


def _verify(
    source: Path, state: Mapping[str, np.ndarray], arch: str, config: VGGConfig, include_top: bool, quiet: bool
) -> tuple[dict[str, object], bool]:
    """torchvision's model with ``state`` against the Keras model with ``source``, on the fixed batch."""
    from parity.compare import torch_forward

    log("Verifying: torchvision's model (strict load) against the Keras model on the fixed batch", quiet)
    x = verification_batch(config)
    reference = torch_forward(_torchvision_reference(state, arch, config, include_top), x, include_top)  # type: ignore[arg-type]
    verification, passed = verify_file(source, config, reference, x, include_top)
    log(str(verification["table"]), quiet)
    abort_if_interrupted()
    return verification, passed


def _write(out_path: Path, state: Mapping[str, np.ndarray], report_path: Path | None) -> None:
    """Writes the checkpoint atomically; on a write error, removes the report written for it."""
    try:
        write_atomic(out_path, _serialize(state, out_path.suffix), before_commit=abort_if_interrupted)
    except OSError as e:
        if report_path is not None:
            report_path.unlink(missing_ok=True)
        raise UsageError(
            f"Could not write {out_path} ({e.strerror or first_line(e)}); nothing was kept: free some space or pick "
            f"another folder. Received: output={str(out_path)!r}"
        ) from None

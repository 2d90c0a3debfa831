"""torchvision VGG weights to a verified Keras file: the conversion :mod:`parity.convert` drives.

Sources, one at a time: torchvision's published weights (``weights=``, the
default, downloaded into torch's hub cache with the hash checked), a local
checkpoint (``checkpoint=``) or a random initialization (``init=``).
The ``.weights.h5`` is written straight from the torch tensors under a
temporary name (:func:`parity.convert.weight_arrays.write_keras_weights`; no Keras model of
the network). Verification is on by default: the torch model runs on one fixed
batch, its weights are freed, the written file is loaded into a Keras model
that runs the same batch, and the file is renamed into place only if they agree.

Everything that can be checked before the work starts is: the source (a
checkpoint path must be a readable, non-empty regular file), the output path
(suffix, folder exists and is writable, not a folder, not an
existing file without ``force``) and the report path. Every file (weights,
sidecar, report) is written under a temporary name in its folder and renamed
when complete.

torch and torchvision are imported before Keras/TensorFlow in this process:
the reverse order crashes the interpreter when torchvision pulls in triton
(tensorflow/tensorflow#124205).

At about 500 lines this file is over the house limit on purpose: it is one
function, :func:`convert`, and the checks and steps only it uses, read top to
bottom in the order they run; the CLI is :mod:`parity.convert`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parity.cli import UsageError, check_new_output, check_report_path, log
from parity.convert.hub import check_hub_reference, fetch_hub_folder, is_hub_reference
from parity.core.catalog import DEFAULT_WEIGHTS, WEIGHTS, WeightsRecord, cache_dir
from parity.core.checkpoint import (
    CheckpointError,
    check_checkpoint_path,
    check_dtypes,
    check_finite,
    load_checkpoint,
    read_checkpoint_file,
    read_folder_config,
    weights_in_folder,
)
from parity.core.config import ARCHS, VGGConfig, get_config
from parity.core.errors import ConversionError, first_line, list_problems, os_reason, shorten
from parity.core.names import check_state_dict, infer_num_classes, preset_matching_state_dict
from parity.core.state_dicts import FoundState, find_state_dict, layout_shapes
from parity.frameworks import import_frameworks
from parity.interrupts import Interrupted, abort_if_interrupted

__all__ = [
    "ConvertResult",
    "UsageError",
    "check_num_classes",
    "convert",
    "read_checkpoint",
    "torch_reference",
    "verification_batch",
    "verify_file",
]

#: Batch the verification runs: 2 images of torchvision's 224x224 crop.
VERIFY_BATCH = 2
VERIFY_SIZE = 224


VERIFY_SEED = 1234


INIT_CHOICES = ("random", "random-all")


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion produced.

    Attributes:
        output: Path of the written ``.weights.h5`` (``None`` if not written).
        report: The verification report as a dict (``None`` with ``--no-verify``).
        passed: Whether verification passed (``True`` with ``--no-verify``).
    """

    output: Path | None
    report: dict[str, object] | None
    passed: bool


def _default_output(
    arch: str, record: WeightsRecord | None, checkpoint: str | None, init: str | None, seed: int
) -> Path:
    """Keras' cache for torchvision weights; the working directory for anything else."""
    if record is not None:
        return cache_dir() / record.keras_filename
    if checkpoint:
        return Path.cwd() / f"{arch}_{Path(checkpoint).name.split('.')[0]}.weights.h5"
    return Path.cwd() / f"{arch}_{str(init).replace('-', '_')}_seed{seed}.weights.h5"


def _check_output(path: Path, force: bool, record: WeightsRecord | None) -> Path:
    """Validates the output path before any work is done.

    Args:
        path: The target ``.weights.h5``.
        force: Whether an existing file may be replaced.
        record: The torchvision weights being converted, if any (their
            default target, Keras' cache, is created when missing).

    Returns:
        The path.

    Raises:
        UsageError: If the path is a folder, has another suffix, lies in a
            missing or unwritable folder, exists (without ``force``), or is the
            cache file of torchvision weights while converting something else.
    """
    shown = f"output={str(path)!r}"
    if path.is_dir():
        raise UsageError(f"Output is a directory: name a .weights.h5 file inside it. Received: {shown}")
    if not path.name.endswith(".weights.h5"):
        raise UsageError(f"--output must end in .weights.h5 (Keras' weights format). Received: {shown}")
    cached = {r.keras_filename for recs in WEIGHTS.values() for r in recs.values()}
    if record is None and path.name in cached and path.parent.resolve() == cache_dir().resolve():
        raise UsageError(
            f"{path} is where weights='converted' looks for torchvision's weights; write random or local "
            f"conversions elsewhere. Received: {shown}"
        )
    if record is not None and path.parent == cache_dir():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(
                f"Keras' cache folder cannot be created ({os_reason(e)}): set KERAS_HOME to a writable "
                f"folder or pass --output. Received: {shown}"
            ) from None
    return check_new_output(path, force, shown)


def _download(record: WeightsRecord, quiet: bool) -> dict[str, np.ndarray]:
    """torchvision's weights, from torch's hub cache, downloaded with the hash checked.

    The file is the one torchvision's ``Weights.get_state_dict(check_hash=True)``
    uses, ``$TORCH_HOME/hub/checkpoints/<file name>``; one already there is used
    as is, as torchvision does. A download goes to a temporary name in that
    folder, which torch.hub removes when the transfer fails or the file's
    sha256 does not start with the prefix in its name, so nothing is kept then.

    Args:
        record: The weights.
        quiet: Whether to hide the progress bar.

    Returns:
        The state dict.

    Raises:
        UsageError: If the download fails or its hash does not match.
        CheckpointError: If the cached file cannot be read as a checkpoint.
    """
    import http.client

    import torch

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    cached = folder / record.filename
    if not cached.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(
                f"torch's hub cache {folder} cannot be created ({os_reason(e)}): set TORCH_HOME to a "
                f"writable folder. Received: weights={record.name!r}"
            ) from None
        log(f"Downloading {record.url} to {cached}", quiet)
        try:
            torch.hub.download_url_to_file(
                record.url, os.fspath(cached), hash_prefix=record.hash_prefix, progress=not quiet
            )
        except RuntimeError as e:
            if "hash" not in str(e):
                raise
            raise UsageError(
                f"Downloaded {record.filename} does not match the sha256 prefix {record.hash_prefix} in its name "
                f"(corrupt transfer or altered file), so it was discarded; try again later. Received: {first_line(e)}"
            ) from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise UsageError(
                f"Could not download {record.url} ({first_line(reason)}). Without network, convert a local file: "
                f"python -m parity.convert {record.arch} --checkpoint PATH. Received: weights={record.name!r}"
            ) from None
    try:
        state, _ = load_checkpoint(cached)
    except CheckpointError as e:
        raise CheckpointError(
            f"The cached download {cached} is unusable; delete it to download it again. {e}"
        ) from None
    return state


def _random_state_dict(config: VGGConfig, init: str, seed: int) -> dict[str, np.ndarray]:
    import torch

    if init == "random-all":
        from parity.convert.random_weights import randomized_state_dict

        return randomized_state_dict(config, seed)
    import vgg_torch

    torch.manual_seed(seed)
    model = vgg_torch.build_vgg(config)  # torchvision's initialization scheme
    return {k: v.numpy() for k, v in model.state_dict().items()}


def verification_batch(config: VGGConfig, size: int = VERIFY_SIZE) -> np.ndarray:
    """The fixed NCHW batch verification runs on."""
    return np.random.default_rng(VERIFY_SEED).standard_normal(
        (VERIFY_BATCH, config.in_channels, size, size), dtype=np.float32
    )


def torch_reference(
    state_dict: dict[str, np.ndarray], config: VGGConfig, x: np.ndarray, include_top: bool
) -> dict[str, np.ndarray]:
    """The torch model's block outputs (and logits) on a batch.

    The model is built on the meta device and takes the state dict's arrays
    as its tensors (``assign=True``), so no copy of the weights is made.

    Args:
        state_dict: The torchvision-layout weights (numpy).
        config: The network.
        x: NCHW input batch.
        include_top: Whether to run the classifier too.

    Returns:
        :func:`parity.compare.torch_forward`'s output.
    """
    import torch

    import vgg_torch
    from parity.compare import torch_forward

    with torch.device("meta"):
        reference = vgg_torch.build_vgg(config, init_weights=False)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}
    if include_top:
        reference.load_state_dict(tensors, strict=True, assign=True)
    else:
        prefix = "features."
        reference.features.load_state_dict(
            {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True, assign=True
        )
    return torch_forward(reference, x, include_top)


def verify_file(
    path: str | os.PathLike[str], config: VGGConfig, reference: dict[str, np.ndarray], x: np.ndarray, include_top: bool
) -> tuple[dict[str, object], bool]:
    """Loads a written ``.weights.h5`` into a Keras model and compares it with the torch outputs.

    Args:
        path: The converted file.
        config: The network.
        reference: :func:`torch_reference`'s outputs on ``x``.
        x: The NCHW batch the reference ran on.
        include_top: Whether to compare logits too.

    Returns:
        The report as a dict and whether it passed.

    Raises:
        ConversionError: If the file does not fit the Keras model.
    """
    import vgg_keras
    from parity.compare import compare_outputs, keras_forward
    from parity.core.h5file import read_keras_weights
    from vgg_keras.layers import Unfilled

    # Every kernel is overwritten right away (strictly: a kernel the file lacks is an error).
    model = vgg_keras.build_vgg(
        config, include_top=include_top, classifier_activation=None, kernel_initializer=Unfilled()
    )
    read_keras_weights(model, path)
    report = compare_outputs(reference, keras_forward(model, x, include_top))
    d = report.to_dict()
    d["input_shape"] = list(x.shape)
    d["table"] = report.table()
    return d, report.passed


@dataclass(frozen=True)
class _Source:
    """Where the weights come from: torchvision's (``record``), a checkpoint, or a random initialization."""

    arch: str
    record: WeightsRecord | None
    checkpoint: str | None
    init: str | None
    seed: int
    key: str | None = None
    given: str | None = None

    @property
    def shown(self) -> str:
        """The source as messages end it (``Received: ...``)."""
        if self.record is not None:
            return f"weights={self.record.name!r}"
        if self.init is not None:
            return f"init={self.init!r}"
        return f"checkpoint={self.given or os.fspath(self.checkpoint)!r}"

    @property
    def include_top(self) -> bool:
        """Whether the converted file holds the classifier (not for torchvision's features-only weights)."""
        return self.record is None or self.record.has_classifier


def check_num_classes(num_classes: object) -> None:
    """Refuses a ``num_classes`` that is not ``None`` or a positive integer."""
    if num_classes is not None and (
        not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1
    ):
        raise UsageError(f"--num-classes must be a positive integer. Received: --num-classes {num_classes}")


def _checked_source(
    arch: str, weights: str | None, checkpoint: str | None, init: str | None, seed: int, key: str | None = None
) -> _Source:
    """The source, checked before any framework loads (a wrong path or name fails in a second).

    An ``hf://`` checkpoint is downloaded here (:mod:`parity.convert.hub`); a folder's
    ``config.json`` must name ``arch``.
    """
    get_config(arch)
    if key is not None and checkpoint is None:
        raise UsageError(f"--key picks the state dict inside a --checkpoint. Received: --key {key}")
    if checkpoint is None and init is None:
        name = weights or DEFAULT_WEIGHTS
        if name not in WEIGHTS[arch]:
            raise UsageError(f"{arch} has published weights {', '.join(WEIGHTS[arch])}. Received: --weights {name}")
        return _Source(arch, WEIGHTS[arch][name], None, None, seed)
    if init is not None:
        if init not in INIT_CHOICES:
            raise UsageError(f"--init must be one of {', '.join(INIT_CHOICES)}. Received: --init {init}")
        if not isinstance(seed, int) or seed < 0:
            raise UsageError(f"--seed must be a non-negative integer. Received: --seed {seed}")
        return _Source(arch, None, None, init, seed)
    if is_hub_reference(checkpoint):
        check_hub_reference(checkpoint)
        return _Source(arch, None, None, None, seed, key, checkpoint)  # fetched by _fetched, after the output checks
    _check_folder(check_checkpoint_path(checkpoint), arch)
    return _Source(arch, None, checkpoint, None, seed, key)


def _fetched(source: _Source) -> _Source:
    """The source with an ``hf://`` checkpoint downloaded (a local folder from then on), and its folder checked."""
    if source.given is None or source.checkpoint is not None:
        return source
    folder = fetch_hub_folder(source.given)
    _check_folder(check_checkpoint_path(folder), source.arch)
    return dataclasses.replace(source, checkpoint=os.fspath(folder))


def _check_folder(path: Path, arch: str) -> None:
    """Refuses a Hugging Face style folder whose ``config.json`` names another architecture than ``arch``."""
    if not path.is_dir():
        return
    declared = (read_folder_config(path) or {}).get("architecture")
    named = declared.split(".")[0] if isinstance(declared, str) else None
    if named is not None and named != arch:
        hint = f": convert it as `python -m parity.convert {named} --checkpoint PATH`" if named in ARCHS else ""
        raise UsageError(
            f"The folder's config.json describes {declared}, not {arch}{hint}. Received: architecture={declared!r}"
        )


def _read_state(
    source: _Source, num_classes: int | None, quiet: bool
) -> tuple[dict[str, np.ndarray], dict[str, object], FoundState | None]:
    """The torch state dict, the provenance the sidecar records, and (from a checkpoint) where it was found."""
    arch, record = source.arch, source.record
    if record is not None:
        log(f"Reading {arch} {record.name} (torch.hub cache, downloaded with its hash checked if absent)", quiet)
        return _download(record, quiet), {"kind": "torchvision", "weights": record.name, "url": record.url}, None
    if source.checkpoint is not None:
        return _read_checkpoint_source(source, quiet)
    log(f"Initializing {arch} ({source.init}, seed {source.seed})", quiet)
    base = get_config(arch)
    state = _random_state_dict(base.replace(num_classes=num_classes or base.num_classes), str(source.init), source.seed)
    return state, {"kind": source.init, "seed": source.seed}, None


def _read_checkpoint_source(
    source: _Source, quiet: bool
) -> tuple[dict[str, np.ndarray], dict[str, object], FoundState]:
    """A checkpoint file or folder: the network's state dict found in it (any wrapper, prefix, layout)."""
    path = Path(str(source.checkpoint))
    folder = path if path.is_dir() else None
    log(f"Reading {source.given or path}", quiet)
    raw, sha = read_checkpoint_file(path)
    found = find_state_dict(raw, get_config(source.arch), key=source.key, source=source.given or os.fspath(path))
    del raw
    file = weights_in_folder(folder) if folder is not None else path
    provenance: dict[str, object] = {"kind": "checkpoint", "path": os.fspath(file.resolve()), "sha256": sha}
    provenance |= {"layout": found.layout, "entry": list(found.entry), "prefix": found.prefix}
    if source.given is not None:
        provenance["hub"] = source.given
    if found.fits:
        where = f" {found.where}" if found.where else ""
        skipped = f" (left out: {shorten(list(found.ignored), 4)})" if found.ignored else ""
        log(f"State dict in {found.layout}'s layout{where}{skipped}", quiet)
    if folder is not None:
        declared = read_folder_config(folder) or {}
        provenance["config"] = {k: declared[k] for k in ("architecture", "num_classes") if k in declared}
        stated = declared.get("num_classes")
        if found.fits and isinstance(stated, int) and stated != found.num_classes:
            raise ConversionError(
                f"The folder's config.json says {stated} classes, its weights have {found.num_classes}: the folder "
                f"is inconsistent; save it again. Received: num_classes={stated}"
            )
    return found.state, provenance, found


def _mismatch_message(found: FoundState, source: _Source, config: VGGConfig) -> str:
    """One line on a state dict whose keys or shapes are not the network's: its layout, what differs, a better ARCH."""
    arch = source.arch
    last = f"{found.prefix}{[k for k in layout_shapes(config, found.layout) if k.endswith('.weight')][-1]}"
    if last in found.missing:
        lead = f"State dict has no {last}, so it is not a full {arch}"
    else:
        lead = f"State dict does not fit {arch}"
    where = f" {found.where}" if found.where else ""
    problems = list_problems(
        {
            "missing keys": list(found.missing),
            "unexpected keys": list(found.unexpected),
            "shape mismatches": list(found.wrong_shapes),
        }
    )
    guess = _preset_fitting(found.state)
    hint = ""
    if guess is not None and guess != arch:
        hint = f" These are {guess} weights: convert them with `python -m parity.convert {guess} --checkpoint PATH`."
    return (
        f"{lead}: the checkpoint looks like {found.layout}'s layout{where}; {'; '.join(problems)}.{hint} "
        f"Received: {found.received}"
    )


def _preset_fitting(state: dict[str, np.ndarray]) -> str | None:
    """The architecture whose keys and shapes ``state`` (the checkpoint's tensors under the prefix) has, if any."""
    for arch, preset in ARCHS.items():
        try:
            if find_state_dict(state, preset).fits:
                return arch
        except CheckpointError:
            continue
    return None


def _checked_state(
    source: _Source,
    state: dict[str, np.ndarray],
    num_classes: int | None,
    quiet: bool,
    found_in: FoundState | None = None,
) -> tuple[dict[str, np.ndarray], VGGConfig]:
    """The state dict checked (finite, float, the preset's keys and shapes) and the config it fits.

    Raises:
        CheckpointError, ConversionError, UsageError: On a state dict that is not the preset's.
    """
    arch, record, base = source.arch, source.record, get_config(source.arch)
    if not source.include_top:
        dropped = [k for k in state if k.startswith("classifier.")]
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        log(f"Dropped the classifier ({len(dropped)} tensors, NaN by design in {record.name}): features only", quiet)
    if source.checkpoint is not None:
        what = f"checkpoint {source.checkpoint}"
    else:
        what = f"{arch} {record.name} checkpoint" if record is not None else "state dict"
    check_finite(state, source=what)
    check_dtypes(state, source=what)
    if found_in is not None and not found_in.fits:
        raise ConversionError(_mismatch_message(found_in, source, base))
    found = infer_num_classes(state, base)
    last = f"classifier.{3 * len(base.hidden)}.weight"
    if source.include_top and found is None:
        raise ConversionError(
            f"State dict has no {last}, so it is not a full {arch}: "
            f"missing keys include the classifier. Received: {source.shown} with {len(state)} tensors"
        )
    if num_classes is not None and found is not None and num_classes != found:
        raise UsageError(
            f"--num-classes {num_classes} disagrees with the checkpoint's {found}-class classifier "
            f"({last} has {found} rows). Received: --num-classes {num_classes}"
        )
    config = base.replace(num_classes=found or base.num_classes)
    top = "" if source.include_top else ", no top"
    log(f"Converting {len(state)} tensors to Keras ({config.num_classes} classes{top})", quiet)
    try:
        check_state_dict(state, config, include_top=source.include_top)
    except ConversionError as e:
        guess = preset_matching_state_dict(state, source.include_top)
        hint = ""
        if guess is not None and guess != arch and source.checkpoint is not None:
            hint = (
                f" These are {guess} weights: convert them with `python -m parity.convert {guess} --checkpoint PATH`."
            )
        raise ConversionError(
            f"{str(e).rstrip('.')}.{hint} Received: {source.shown} with {len(state)} tensors"
        ) from None
    return state, config


def read_checkpoint(
    arch: str, checkpoint: str | os.PathLike[str], *, quiet: bool = False
) -> tuple[dict[str, np.ndarray], VGGConfig, dict[str, object]]:
    """A torch checkpoint of ``arch``, checked as :func:`convert` checks it: finite floats, the keys and shapes.

    Args:
        arch: Preset name.
        checkpoint: A full network's state dict: a ``.pth``/``.pt``/``.bin``/``.ckpt``/``.safetensors``
            file, a Hugging Face style folder or ``hf://org/name``, in torchvision's or timm's layout,
            bare or nested in a training checkpoint.
        quiet: No progress messages.

    Returns:
        The state dict (numpy, torchvision's layout), the config it fits (class count from its
        classifier), and its provenance (``{"kind": "checkpoint", "path", "sha256", "layout",
        "entry", "prefix"}``).

    Raises:
        UsageError, CheckpointError, ConversionError: On a file that is not a checkpoint of ``arch``.

    Examples:
        >>> from parity.convert.to_keras import read_checkpoint
        >>> state, config, provenance = read_checkpoint("vgg16", "finetuned.pth")  # doctest: +SKIP
        >>> config.num_classes, provenance["sha256"][:8]  # doctest: +SKIP
        (10, '3f2a9c1e')
    """
    source = _fetched(_checked_source(arch, None, os.fspath(checkpoint), None, 0))
    state, provenance, found = _read_state(source, None, quiet)
    state, config = _checked_state(source, state, None, quiet, found)
    return state, config, provenance


def _record(source: _Source, config: VGGConfig, provenance: dict[str, object]) -> dict[str, object]:
    """The record the sidecar and the file's attributes hold (``verification`` filled in later)."""
    import torch
    import torchvision

    import keras
    import tensorflow as tf

    versions = {"vgg_parity": _own_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}
    versions |= {"keras": keras.__version__, "tensorflow": tf.__version__, "numpy": np.__version__}
    return {
        "arch": source.arch,
        "config": config.to_dict(),
        "include_top": source.include_top,
        "source": provenance,
        "versions": versions,
        "verification": None,
    }


def convert(
    arch: str,
    *,
    weights: str | None = None,
    checkpoint: str | None = None,
    key: str | None = None,
    init: str | None = None,
    seed: int = 0,
    output: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    verify_outputs: bool = True,
    force: bool = False,
    quiet: bool = False,
) -> ConvertResult:
    """Converts one set of weights; the library form of the CLI.

    Args:
        arch: Preset name.
        weights: torchvision weights name (default source).
        checkpoint: A checkpoint: a file (``.pth``, ``.pt``, ``.bin``, ``.ckpt``, ``.safetensors``),
            a Hugging Face style folder, or ``hf://org/name``; torchvision's or timm's layout,
            bare or nested in a training checkpoint (:func:`parity.core.state_dicts.find_state_dict`).
        key: With ``checkpoint``: the entry or key prefix holding the state dict, where it
            holds several (``"state_dict_ema"``).
        init: ``"random"`` (torchvision's init) or ``"random-all"`` (every
            tensor random, BN statistics included).
        seed: Seed for ``init``.
        output: Target ``.weights.h5``; defaults to Keras' cache for torchvision
            weights and to the working directory otherwise.
        report: Optional JSON report path.
        num_classes: Expected class count; must agree with the checkpoint. With
            ``init`` it sets the class count of the random model.
        verify_outputs: Whether to verify against torch before writing.
        force: Overwrite an existing output.
        quiet: No progress messages.

    Returns:
        The result; ``passed`` is ``False`` (and nothing written) on a parity failure.

    Raises:
        UsageError, CheckpointError, ConversionError: On bad input; nothing is written.

    Examples:
        >>> from parity.convert import convert
        >>> result = convert("vgg16", checkpoint="finetuned.pth", output="vgg16_ft.weights.h5")  # doctest: +SKIP
        >>> result.passed, result.report["max_rel"] < 1e-5  # doctest: +SKIP
        (True, True)
    """
    source = _checked_source(arch, weights, checkpoint, init, seed, key)
    check_num_classes(num_classes)
    default = _default_output(arch, source.record, source.given or source.checkpoint, init, seed)
    out_path = _check_output(Path(output).expanduser() if output else default, force, source.record)
    report_path = check_report_path(report, out_path) if report is not None else None
    source = _fetched(source)

    import_frameworks()
    started = time.perf_counter()
    state, provenance, found = _read_state(source, num_classes, quiet)
    abort_if_interrupted()
    state, config = _checked_state(source, state, num_classes, quiet, found)
    meta = _record(source, config, provenance)
    tensors = len(state)
    try:
        verification, passed, sha = _write_verified(
            state, config, source, out_path, report_path, meta, verify_outputs, quiet
        )
    except OSError as e:
        raise UsageError(
            f"Could not write {out_path} ({e.strerror or first_line(e)}); nothing was kept: free some space or pick "
            f"another folder. Received: output={str(out_path)!r}"
        ) from None
    except ConversionError as e:
        raise ConversionError(f"{str(e).rstrip('.')}. Received: {source.shown} with {tensors} tensors") from None
    if not passed:
        log(f"Parity check FAILED: {out_path} not written.", False)
        return ConvertResult(None, verification, False)
    log(f"Wrote {out_path} (sha256 {str(sha)[:16]}..., {time.perf_counter() - started:.1f} s)", quiet)
    return ConvertResult(out_path, verification, True)


def _write_verified(
    state: dict[str, np.ndarray],
    config: VGGConfig,
    source: _Source,
    out_path: Path,
    report_path: Path | None,
    meta: dict[str, object],
    verify_outputs: bool,
    quiet: bool,
) -> tuple[dict[str, object] | None, bool, str | None]:
    """Writes the file under a temporary name, verifies it, writes the report, and commits the file if it passed.

    The ``.weights.h5`` is written straight from the torch tensors, then (verifying) loaded into a Keras
    model and run: the file checked is the file kept, and the torch weights are freed (``state`` is
    emptied) before the Keras model exists, so the two are never in memory together. A report is
    removed again when the weights are not committed.

    Returns:
        The verification report (``None`` without verifying), whether it passed, and the committed
        file's sha256 (``None`` when it did not pass).

    Raises:
        parity.interrupts.Interrupted: With ``written`` set when the signal came after the file was
            renamed into place.
    """
    from parity.convert.weight_arrays import write_keras_weights
    from parity.core.atomic import write_atomic
    from parity.core.weights_file import stage_converted_weights

    include_top = source.include_top
    verification: dict[str, object] | None = None
    passed = True
    report_kept = False
    with stage_converted_weights(out_path) as staged:
        try:
            write_keras_weights(state, config, staged.path, include_top=include_top)
            abort_if_interrupted()
            if verify_outputs:
                log(f"Verifying against torch on a fixed {VERIFY_BATCH}x3x{VERIFY_SIZE}x{VERIFY_SIZE} batch", quiet)
                x = verification_batch(config)
                reference = torch_reference(state, config, x, include_top)
                state.clear()
                verification, passed = verify_file(staged.path, config, reference, x, include_top)
                kept = ("max_abs", "max_rel", "top1", "top5", "rtol", "input_shape")
                meta["verification"] = {k: verification[k] for k in kept}
                log(str(verification["table"]), quiet)
                abort_if_interrupted()
            if report_path is not None:
                data = {"arch": source.arch, "source": meta["source"], "verification": verification, "passed": passed}
                text = json.dumps(data, indent=2, default=str) + "\n"
                write_atomic(report_path, text, before_commit=abort_if_interrupted)
            if not passed:
                report_kept = True  # the report says why nothing was written
                return verification, False, None
            sha = staged.commit(meta, before_commit=abort_if_interrupted)
            report_kept = True
        except (Interrupted, KeyboardInterrupt) as e:
            if staged.committed:  # a signal held back during the final renames: the file is complete
                report_kept = True
                raise Interrupted(getattr(e, "signum", int(signal.SIGINT)), written=out_path) from None
            raise
        finally:
            if report_path is not None and not report_kept:
                report_path.unlink(missing_ok=True)  # no report of a conversion whose weights were not written
    return verification, True, sha


def _own_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vgg-parity")
    except PackageNotFoundError:
        return "unknown"

"""torchvision VGG weights to a verified Keras file: the conversion :mod:`parity.convert` drives.

Sources, one at a time: torchvision's published weights (``weights=``, the
default, downloaded into torch's hub cache with the hash checked), a local
checkpoint (``checkpoint=``) or a random initialization (``init=``).
The ``.weights.h5`` is written straight from the torch tensors under a
temporary name (:func:`parity.converter.write_keras_weights`; no Keras model of
the network). Verification is on by default: the torch model runs on one fixed
batch, its weights are freed, the written file is loaded into a Keras model
that runs the same batch, and the file is renamed into place only if they agree.

Everything that can be checked before the work starts is: the source (a
checkpoint path must be a readable, non-empty regular file), the output path (suffix, folder exists and is writable, not a folder, not an
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

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parity.core.catalog import DEFAULT_WEIGHTS, WEIGHTS, WeightsRecord, cache_dir
from parity.core.checkpoint import CheckpointError, check_checkpoint_path, check_dtypes, check_finite, load_checkpoint
from parity.core.config import PRESETS, VGGConfig, get_config
from parity.core.errors import ConversionError, first_line, os_reason
from parity.core.names import check_state_dict, infer_num_classes
from parity.interrupts import abort_if_interrupted

__all__ = ["ConvertResult", "UsageError", "convert", "torch_reference", "verification_batch", "verify_file"]

#: Batch the verification runs: 2 images of torchvision's 224x224 crop.
VERIFY_BATCH = 2
VERIFY_SIZE = 224


VERIFY_SEED = 1234


INIT_CHOICES = ("random", "random-all")


class UsageError(ValueError):
    """A user mistake: reported in one line, exit code 2."""


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


def _import_frameworks() -> None:
    """Loads torch and torchvision, then Keras: the only safe order."""
    if "tensorflow" in sys.modules and "torchvision" not in sys.modules:
        raise UsageError(
            "TensorFlow is already loaded in this process, and importing torchvision after it can crash the "
            "interpreter; run the conversion in a fresh process (python -m parity.convert). Received: tensorflow loaded first"
        )
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        raise UsageError(
            "Converting needs torch and torchvision: pip install 'vgg-parity[torch]'. Received: torch not installed"
        ) from None
    import keras  # noqa: F401


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _default_output(arch: str, record: WeightsRecord | None, checkpoint: str | None, init: str | None, seed: int) -> Path:
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
    if not path.parent.is_dir():
        raise UsageError(f"Output folder does not exist: create it first. Received: {shown}")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(f"Output folder is not writable: fix its permissions or pick another. Received: {shown}")
    if path.exists() and not force:
        raise UsageError(f"Output exists: pass --force to overwrite it. Received: {shown}")
    return path


def _check_report(report: str | os.PathLike[str], out_path: Path) -> Path:
    """Validates the ``--report`` path before any work is done.

    Raises:
        UsageError: If it is a folder, lies in a missing or unwritable folder,
            or would overwrite the weights or their sidecar.
    """
    path = Path(report).expanduser()
    shown = f"report={os.fspath(report)!r}"
    if path.is_dir():
        raise UsageError(f"Report is a directory: name a .json file inside it. Received: {shown}")
    if not path.parent.is_dir():
        raise UsageError(f"Report folder does not exist: create it first. Received: {shown}")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(f"Report folder is not writable: fix its permissions or pick another. Received: {shown}")
    if path.resolve() in (out_path.resolve(), Path(f"{out_path}.json").resolve()):
        raise UsageError(f"Report would overwrite the converted weights or their sidecar: name another file. Received: {shown}")
    return path


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
        _log(f"Downloading {record.url} to {cached}", quiet)
        try:
            torch.hub.download_url_to_file(record.url, os.fspath(cached), hash_prefix=record.hash_prefix, progress=not quiet)
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
        raise CheckpointError(f"The cached download {cached} is unusable; delete it to download it again. {e}") from None
    return state


def _matching_preset(state: dict[str, np.ndarray], include_top: bool) -> str | None:
    """The preset whose keys and shapes a state dict has exactly, if any."""
    for arch, preset in PRESETS.items():
        found = infer_num_classes(state, preset)
        try:
            check_state_dict(state, preset.replace(num_classes=found) if include_top and found else preset, include_top)
        except ConversionError:
            continue
        return arch
    return None


def _random_state_dict(config: VGGConfig, init: str, seed: int) -> dict[str, np.ndarray]:
    import torch

    if init == "random-all":
        from parity.random_weights import randomized_state_dict

        return randomized_state_dict(config, seed)
    import vgg_torch

    torch.manual_seed(seed)
    model = vgg_torch.build_vgg(config)  # torchvision's initialization scheme
    return {k: v.numpy() for k, v in model.state_dict().items()}


def verification_batch(config: VGGConfig, size: int = VERIFY_SIZE) -> np.ndarray:
    """The fixed NCHW batch verification runs on."""
    return np.random.default_rng(VERIFY_SEED).standard_normal((VERIFY_BATCH, config.in_channels, size, size), dtype=np.float32)


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
            {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True, assign=True
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
    model = vgg_keras.build_vgg(config, include_top=include_top, classifier_activation=None, kernel_initializer=Unfilled())
    read_keras_weights(model, path)
    report = compare_outputs(reference, keras_forward(model, x, include_top))
    d = report.to_dict()
    d["input_shape"] = list(x.shape)
    d["table"] = report.table()
    return d, report.passed


def convert(
    arch: str,
    *,
    weights: str | None = None,
    checkpoint: str | None = None,
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
        checkpoint: Local checkpoint path.
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
    """
    base = get_config(arch)
    record = None
    if checkpoint is None and init is None:
        name = weights or DEFAULT_WEIGHTS
        if name not in WEIGHTS[arch]:
            raise UsageError(f"{arch} has published weights {', '.join(WEIGHTS[arch])}. Received: --weights {name}")
        record = WEIGHTS[arch][name]
        shown = f"weights={record.name!r}"
    elif init is not None:
        if init not in INIT_CHOICES:
            raise UsageError(f"--init must be one of {', '.join(INIT_CHOICES)}. Received: --init {init}")
        if not isinstance(seed, int) or seed < 0:
            raise UsageError(f"--seed must be a non-negative integer. Received: --seed {seed}")
        shown = f"init={init!r}"
    else:
        shown = f"checkpoint={os.fspath(checkpoint)!r}"
        check_checkpoint_path(checkpoint)  # before the frameworks load: a wrong path fails in a second
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1):
        raise UsageError(f"--num-classes must be a positive integer. Received: --num-classes {num_classes}")
    out_path = _check_output(Path(output).expanduser() if output else _default_output(arch, record, checkpoint, init, seed), force, record)
    report_path = _check_report(report, out_path) if report is not None else None

    _import_frameworks()
    started = time.perf_counter()
    source: dict[str, object]
    if record is not None:
        _log(f"Reading {arch} {record.name} (torch.hub cache, downloaded with its hash checked if absent)", quiet)
        state = _download(record, quiet)
        source = {"kind": "torchvision", "weights": record.name, "url": record.url}
    elif checkpoint is not None:
        _log(f"Reading {checkpoint}", quiet)
        state, sha = load_checkpoint(checkpoint)
        source = {"kind": "checkpoint", "path": os.fspath(Path(checkpoint).resolve()), "sha256": sha}
    else:
        _log(f"Initializing {arch} ({init}, seed {seed})", quiet)
        state = _random_state_dict(base.replace(num_classes=num_classes or base.num_classes), str(init), seed)
        source = {"kind": init, "seed": seed}

    abort_if_interrupted()
    include_top = record is None or record.has_classifier
    if not include_top:
        dropped = [k for k in state if k.startswith("classifier.")]
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        _log(f"Dropped the classifier ({len(dropped)} tensors, NaN by design in {record.name}): features only", quiet)
    what = f"checkpoint {checkpoint}" if checkpoint is not None else f"{arch} {record.name} checkpoint" if record is not None else "state dict"
    check_finite(state, source=what)
    check_dtypes(state, source=what)
    found = infer_num_classes(state, base)
    if include_top and found is None:
        raise ConversionError(
            f"State dict has no classifier.{3 * len(base.hidden)}.weight, so it is not a full {arch}: "
            f"missing keys include the classifier. Received: {shown} with {len(state)} tensors"
        )
    if num_classes is not None and found is not None and num_classes != found:
        raise UsageError(
            f"--num-classes {num_classes} disagrees with the checkpoint's {found}-class classifier "
            f"(classifier.{3 * len(base.hidden)}.weight has {found} rows). Received: --num-classes {num_classes}"
        )
    config = base.replace(num_classes=found or base.num_classes)

    import keras
    import tensorflow as tf
    import torch
    import torchvision

    from parity.converter import write_keras_weights
    from parity.core.atomic import write_atomic
    from parity.core.weights_file import StagedWeights, stage_converted_weights

    tensors = len(state)
    _log(f"Converting {tensors} tensors to Keras ({config.num_classes} classes{'' if include_top else ', no top'})", quiet)
    try:
        check_state_dict(state, config, include_top=include_top)
    except ConversionError as e:
        guess = _matching_preset(state, include_top)
        hint = ""
        if guess is not None and guess != arch and checkpoint is not None:
            hint = f" These are {guess} weights: convert them with `python -m parity.convert {guess} --checkpoint PATH`."
        raise ConversionError(f"{str(e).rstrip('.')}.{hint} Received: {shown} with {tensors} tensors") from None

    meta = {
        "arch": arch,
        "config": config.to_dict(),
        "include_top": include_top,
        "source": source,
        "versions": {
            "vgg_parity": _own_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
        },
        "verification": None,
    }
    verification: dict[str, object] | None = None
    passed = True
    report_written = False
    staged: StagedWeights | None = None
    try:
        # The .weights.h5 is written straight from the torch tensors, then (verifying) loaded into a Keras
        # model and run: the file checked is the file kept, and the torch weights are freed before the
        # Keras model exists, so the two are never in memory together.
        with stage_converted_weights(out_path) as staged:
            write_keras_weights(state, config, staged.path, include_top=include_top)
            abort_if_interrupted()
            if verify_outputs:
                _log(f"Verifying against torch on a fixed {VERIFY_BATCH}x3x{VERIFY_SIZE}x{VERIFY_SIZE} batch", quiet)
                x = verification_batch(config)
                reference = torch_reference(state, config, x, include_top)
                del state
                verification, passed = verify_file(staged.path, config, reference, x, include_top)
                meta["verification"] = {k: verification[k] for k in ("max_abs", "max_rel", "top1", "top5", "rtol", "input_shape")}
                _log(str(verification["table"]), quiet)
                abort_if_interrupted()
            if report_path is not None:
                report_data = {"arch": arch, "source": source, "verification": verification, "passed": passed}
                write_atomic(report_path, json.dumps(report_data, indent=2, default=str) + "\n", before_commit=abort_if_interrupted)
                report_written = True
            if not passed:
                _log(f"Parity check FAILED: {out_path} not written.", False)
                return ConvertResult(None, verification, False)
            sha = staged.commit(meta, before_commit=abort_if_interrupted)
    except BaseException as e:
        if staged is not None and staged.committed:
            # A signal that arrived during the final renames, delivered after them: the file is complete.
            e.written = out_path  # type: ignore[attr-defined]
            raise
        if report_written and report_path is not None:
            report_path.unlink(missing_ok=True)  # no report of a conversion whose weights were not written
        if isinstance(e, OSError):
            raise UsageError(
                f"Could not write {out_path} ({e.strerror or first_line(e)}); nothing was kept: free some space or pick "
                f"another folder. Received: output={str(out_path)!r}"
            ) from None
        if isinstance(e, ConversionError):
            raise ConversionError(f"{str(e).rstrip('.')}. Received: {shown} with {tensors} tensors") from None
        raise
    _log(f"Wrote {out_path} (sha256 {sha[:16]}..., {time.perf_counter() - started:.1f} s)", quiet)
    return ConvertResult(out_path, verification, True)


def _own_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vgg-parity")
    except PackageNotFoundError:
        return "unknown"


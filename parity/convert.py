"""``python -m parity.convert ARCH``: torchvision VGG weights to a verified Keras file.

Sources, one at a time: torchvision's published weights (``--weights``, the
default, downloaded into torch's hub cache with the hash checked), a local
checkpoint (``--checkpoint``) or a random initialization (``--init``).
Verification is on by default: the torch model and the Keras model run on one
fixed batch and the file is written only if they agree.

Exit codes: 0 success, 1 parity failure, 2 bad input.

torch and torchvision are imported before Keras/TensorFlow in this process:
the reverse order crashes the interpreter when torchvision pulls in triton
(tensorflow/tensorflow#124205).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parity.catalog import DEFAULT_WEIGHTS, WEIGHTS, WeightsRecord, cache_dir
from parity.checkpoint import CheckpointError, check_finite, load_checkpoint, normalize_state_dict
from parity.config import PRESETS, VGGConfig, get_config
from parity.converter import ConversionError, infer_num_classes

__all__ = ["ConvertResult", "convert", "main"]

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


def _default_output(arch: str, args: argparse.Namespace, record: WeightsRecord | None) -> Path:
    if record is not None:
        return cache_dir() / record.keras_filename
    if args.checkpoint:
        return Path.cwd() / f"{arch}_{Path(args.checkpoint).name.split('.')[0]}.weights.h5"
    return Path.cwd() / f"{arch}_{args.init.replace('-', '_')}_seed{args.seed}.weights.h5"


def _check_output(path: Path, force: bool, record: WeightsRecord | None) -> Path:
    """Validates the output path before any work is done."""
    if not path.name.endswith(".weights.h5"):
        raise UsageError(f"--output must end in .weights.h5 (Keras' weights format). Received: output={str(path)!r}")
    cached = {r.keras_filename for recs in WEIGHTS.values() for r in recs.values()}
    if record is None and path.name in cached and path.parent.resolve() == cache_dir().resolve():
        raise UsageError(
            f"{path} is where weights='converted' looks for torchvision's weights; write random or local "
            f"conversions elsewhere. Received: output={str(path)!r}"
        )
    if record is not None and path.parent == cache_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    if not path.parent.is_dir():
        raise UsageError(f"Output folder does not exist: create it first. Received: output={str(path)!r}")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(f"Output folder is not writable: fix its permissions or pick another. Received: output={str(path)!r}")
    if path.is_dir():
        raise UsageError(f"Output is a directory: name a .weights.h5 file. Received: output={str(path)!r}")
    if path.exists() and not force:
        raise UsageError(f"Output exists: pass --force to overwrite it. Received: output={str(path)!r}")
    return path


def _download(record: WeightsRecord, quiet: bool) -> dict[str, np.ndarray]:
    """torchvision's weights download: hub cache, hash checked, progress bar."""
    import urllib.error

    import torch

    try:
        # The same call torchvision's Weights.get_state_dict(check_hash=True) makes.
        raw = torch.hub.load_state_dict_from_url(record.url, progress=not quiet, check_hash=True, weights_only=True)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        raise UsageError(
            f"Could not download {record.url} ({getattr(e, 'reason', e)}). Without network, convert a local file: "
            f"python -m parity.convert {record.arch} --checkpoint PATH. Received: weights={record.name!r}"
        ) from None
    except RuntimeError as e:
        if "hash" in str(e):
            raise UsageError(
                f"Downloaded {record.filename} does not match its sha256 prefix {record.hash_prefix}; it was discarded. "
                f"Try again later. Received: {str(e).splitlines()[0]}"
            ) from None
        raise
    return normalize_state_dict(raw, source=record.url)


def _random_state_dict(config: VGGConfig, init: str, seed: int) -> dict[str, np.ndarray]:
    import torch

    if init == "random-all":
        from parity.random_weights import randomized_state_dict

        return randomized_state_dict(config, seed)
    import vgg_torch

    torch.manual_seed(seed)
    model = vgg_torch.build_vgg(config)  # torchvision's initialization scheme
    return {k: v.numpy() for k, v in model.state_dict().items()}


def verify(
    state_dict: dict[str, np.ndarray],
    config: VGGConfig,
    keras_model: object,
    include_top: bool,
    size: int = VERIFY_SIZE,
) -> tuple[dict[str, object], bool]:
    """Runs the torch reference and the Keras model on one fixed batch.

    Args:
        state_dict: The torchvision-layout weights (numpy).
        config: The network.
        keras_model: Keras model holding the converted weights, ending in logits.
        include_top: Whether to compare logits too.
        size: Input side length.

    Returns:
        The report as a dict and whether it passed.
    """
    import torch

    import vgg_torch
    from parity.compare import compare_outputs, keras_forward, torch_forward

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
    x = np.random.default_rng(VERIFY_SEED).standard_normal((VERIFY_BATCH, config.in_channels, size, size), dtype=np.float32)
    report = compare_outputs(torch_forward(reference, x, include_top), keras_forward(keras_model, x, include_top))  # type: ignore[arg-type]
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
        num_classes: Expected class count; must agree with the checkpoint.
        verify_outputs: Whether to verify against torch before writing.
        force: Overwrite an existing output.
        quiet: No progress messages.

    Returns:
        The result; ``passed`` is ``False`` (and nothing written) on a parity failure.

    Raises:
        UsageError, CheckpointError, ConversionError: On bad input; nothing is written.
    """
    args = argparse.Namespace(checkpoint=checkpoint, init=init, seed=seed)
    base = get_config(arch)
    record = None
    if checkpoint is None and init is None:
        name = weights or DEFAULT_WEIGHTS
        if name not in WEIGHTS[arch]:
            raise UsageError(f"{arch} has published weights {', '.join(WEIGHTS[arch])}. Received: --weights {name}")
        record = WEIGHTS[arch][name]
    elif init is not None and init not in INIT_CHOICES:
        raise UsageError(f"--init must be one of {', '.join(INIT_CHOICES)}. Received: --init {init}")
    out_path = _check_output(Path(output).expanduser() if output else _default_output(arch, args, record), force, record)
    report_path = None
    if report is not None:
        report_path = Path(report).expanduser()
        if not report_path.parent.is_dir():
            raise UsageError(f"Report folder does not exist: create it first. Received: report={str(report)!r}")

    _import_frameworks()
    started = time.perf_counter()
    source: dict[str, object]
    if record is not None:
        _log(f"Downloading {arch} {record.name} from {record.url} (hash-checked, cached by torch.hub)", quiet)
        state = _download(record, quiet)
        source = {"kind": "torchvision", "weights": record.name, "url": record.url}
    elif checkpoint is not None:
        _log(f"Reading {checkpoint}", quiet)
        state, sha = load_checkpoint(checkpoint)
        source = {"kind": "checkpoint", "path": os.fspath(Path(checkpoint).resolve()), "sha256": sha}
    else:
        _log(f"Initializing {arch} ({init}, seed {seed})", quiet)
        state = _random_state_dict(base, str(init), seed)
        source = {"kind": init, "seed": seed}

    include_top = record is None or record.has_classifier
    if not include_top:
        dropped = [k for k in state if k.startswith("classifier.")]
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        _log(f"Dropped the classifier ({len(dropped)} tensors, NaN by design in {record.name}): features only", quiet)
    check_finite(state)
    found = infer_num_classes(state, base)
    if include_top and found is None:
        raise ConversionError(
            f"State dict has no classifier.{3 * len(base.hidden)}.weight, so it is not a full {arch}: "
            f"missing keys include the classifier. Received: {len(state)} keys"
        )
    if num_classes is not None and found is not None and num_classes != found:
        raise UsageError(f"--num-classes {num_classes} disagrees with the checkpoint's {found}-class classifier. Received: --num-classes {num_classes}")
    config = base.replace(num_classes=found or base.num_classes)

    import keras

    import vgg_keras
    from parity.converter import assign_keras_weights, convert_state_dict

    _log(f"Converting {len(state)} tensors to Keras ({config.num_classes} classes{'' if include_top else ', no top'})", quiet)
    converted = convert_state_dict(state, config, include_top=include_top)
    model = vgg_keras.build_vgg(config, include_top=include_top, classifier_activation=None)
    assign_keras_weights(model, converted)
    del converted

    verification: dict[str, object] | None = None
    passed = True
    if verify_outputs:
        _log(f"Verifying against torch on a fixed {VERIFY_BATCH}x3x{VERIFY_SIZE}x{VERIFY_SIZE} batch", quiet)
        verification, passed = verify(state, config, model, include_top)
        _log(str(verification["table"]), quiet)
    if report_path is not None:
        _write_json(report_path, {"arch": arch, "source": source, "verification": verification, "passed": passed})
    if not passed:
        _log(f"Parity check FAILED: {out_path} not written.", False)
        return ConvertResult(None, verification, False)

    import tensorflow as tf
    import torch
    import torchvision

    from vgg_keras.weights import save_converted_weights

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
        "verification": None
        if verification is None
        else {k: verification[k] for k in ("max_abs", "max_rel", "top1", "top5", "rtol", "input_shape")},
    }
    sha = save_converted_weights(model, out_path, meta)
    _log(f"Wrote {out_path} (sha256 {sha[:16]}..., {time.perf_counter() - started:.1f} s)", quiet)
    return ConvertResult(out_path, verification, True)


def _own_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vgg-parity")
    except PackageNotFoundError:
        return "unknown"


def _write_json(path: Path, data: dict[str, object]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m parity.convert",
        description="Convert torchvision VGG weights to a verified Keras .weights.h5 file.",
    )
    parser.add_argument("arch", choices=list(PRESETS), help="torchvision architecture")
    src = parser.add_mutually_exclusive_group()
    names = sorted({n for recs in WEIGHTS.values() for n in recs})
    src.add_argument("--weights", choices=names, help=f"torchvision's published weights (default {DEFAULT_WEIGHTS})")
    src.add_argument("--checkpoint", metavar="PATH", help="a local .pth/.pt/.safetensors checkpoint")
    src.add_argument("--init", choices=INIT_CHOICES, help="random weights: torchvision's init, or every tensor random")
    parser.add_argument("--seed", type=int, default=0, help="seed for --init (default 0)")
    parser.add_argument("--output", metavar="PATH", help="target .weights.h5 (default: Keras' cache for torchvision weights)")
    parser.add_argument("--report", metavar="PATH", help="write the verification report as JSON")
    parser.add_argument("--num-classes", type=int, help="expected class count; must match the checkpoint")
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison with torch")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        0 on success, 1 on a parity failure, 2 on bad input.
    """
    args = build_parser().parse_args(argv)
    try:
        result = convert(
            args.arch,
            weights=args.weights,
            checkpoint=args.checkpoint,
            init=args.init,
            seed=args.seed,
            output=args.output,
            report=args.report,
            num_classes=args.num_classes,
            verify_outputs=not args.no_verify,
            force=args.force,
            quiet=args.quiet,
        )
    except (UsageError, CheckpointError, ConversionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result.output is not None:
        print(result.output)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())

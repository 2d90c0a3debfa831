"""Reading checkpoints as people save them, safely, into numpy arrays.

:func:`read_checkpoint_file` returns what a file holds, for
:func:`parity.core.state_dicts.find_state_dict` to find the network's state
dict in it; :func:`load_checkpoint` unwraps the simple cases itself: a bare
state dict, one wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``, keys
prefixed ``module.`` (DataParallel). Files: PyTorch files
(``.pth``, ``.pt``, ``.bin``, ``.ckpt``, any name) read with
``torch.load(weights_only=True)``, which never unpickles arbitrary objects and
so never runs code stored in a file, and ``.safetensors`` files (no torch
needed), or a Hugging Face style folder holding ``model.safetensors`` or
``pytorch_model.bin`` beside a ``config.json``. The format is recognized from
the file's first bytes, not its name.

Every failure is a :class:`CheckpointError` with a one-line message that ends
in ``Received: ...``: a missing, empty, truncated or unreadable file, a folder,
a device or pipe, a file of another format (a Keras ``.weights.h5``, text,
random bytes), a pickle that needs Python objects beyond tensors, entries that
are not tensors, tensors that are not floating point, NaN or Inf values.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from parity.core.errors import first_line, os_reason, shorten

__all__ = [
    "FOLDER_WEIGHTS",
    "CheckpointError",
    "check_checkpoint_path",
    "check_dtypes",
    "check_finite",
    "describe_value",
    "file_sha256",
    "is_tensor",
    "load_checkpoint",
    "normalize_state_dict",
    "read_checkpoint_file",
    "read_folder_config",
    "tensor_to_numpy",
    "weights_in_folder",
]

#: The weights files of a Hugging Face style folder, in the order they are looked for.
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_WRAPPERS = ("state_dict", "model", "model_state_dict", "net", "module")
#: Buffers that are integer by design; every other tensor must be floating point.
_INTEGER_SUFFIXES = (".num_batches_tracked",)
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
#: Largest safetensors JSON header accepted when sniffing (the format's own limit).
_SAFETENSORS_MAX_HEADER = 100_000_000


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or holds no usable state dict."""


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], str]:
    """Reads a checkpoint into ``{name: numpy array}`` and its sha256.

    Args:
        path: A PyTorch file (``.pth``, ``.pt``, ``.bin``), a ``.safetensors`` file, or a
            Hugging Face style folder (:func:`weights_in_folder`).

    Returns:
        The normalized state dict and the file's sha256.

    Raises:
        CheckpointError: If the path is missing, unreadable, not a regular
            file, empty, not a checkpoint, truncated, would need unpickling
            arbitrary objects (code), or holds no tensors.
    """
    raw, sha = read_checkpoint_file(path)
    return normalize_state_dict(raw, source=os.fspath(path)), sha


def read_checkpoint_file(path: str | os.PathLike[str]) -> tuple[object, str]:
    """Reads a checkpoint as saved, without looking for the state dict in it, and its sha256.

    Args:
        path: A PyTorch file (``.pth``, ``.pt``, ``.bin``, ``.ckpt``, any name; read with
            ``torch.load(weights_only=True)``), a ``.safetensors`` file, or a Hugging Face style
            folder (:func:`weights_in_folder`).

    Returns:
        What ``torch.load`` or safetensors returned, and the sha256 of the file read.

    Raises:
        CheckpointError: As :func:`load_checkpoint`.

    Examples:
        >>> from parity.core.checkpoint import read_checkpoint_file
        >>> raw, sha = read_checkpoint_file("epoch=3-step=120.ckpt")  # doctest: +SKIP
        >>> sorted(raw)[:2]  # doctest: +SKIP
        ['epoch', 'optimizer_states']
    """
    p = check_checkpoint_path(path)
    if p.is_dir():
        p = weights_in_folder(p)
    shown = f"checkpoint={os.fspath(path)!r}"
    try:
        with open(p, "rb") as f:
            head = f.read(16)
        sha = file_sha256(p)
    except OSError as e:
        raise CheckpointError(
            f"Checkpoint could not be read ({os_reason(e)}): fix its permissions or copy it again. Received: {shown}"
        ) from None
    kind = _sniff(head)
    if kind == "hdf5":
        raise CheckpointError(
            "This is an HDF5 file (a Keras .weights.h5?), not a PyTorch checkpoint: load converted files with "
            f"weights=PATH, convert .pth or .safetensors files. Received: {shown}"
        )
    if p.suffix == ".safetensors" or kind == "safetensors":
        return _load_safetensors(p, shown), sha
    return _load_torch(p, shown), sha


def weights_in_folder(folder: str | os.PathLike[str]) -> Path:
    """The weights file of a Hugging Face style folder: ``model.safetensors``, else ``pytorch_model.bin``.

    Such a folder is what timm's ``push_to_hub`` and ``save_pretrained`` write, beside a
    ``config.json`` (:func:`read_folder_config`).

    Args:
        folder: The folder.

    Returns:
        The path of the weights file in it.

    Raises:
        CheckpointError: If the folder holds neither file.
    """
    for name in FOLDER_WEIGHTS:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"Checkpoint is a directory without {' or '.join(FOLDER_WEIGHTS)} (a Hugging Face style folder holds one): "
        f"pass the .pth/.safetensors file inside. Received: checkpoint={os.fspath(folder)!r}"
    )


def read_folder_config(folder: str | os.PathLike[str]) -> dict[str, object] | None:
    """The ``config.json`` of a Hugging Face style folder, or ``None`` where there is none.

    Args:
        folder: The folder.

    Returns:
        The parsed JSON object.

    Raises:
        CheckpointError: If ``config.json`` exists but is not a readable JSON object.
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not readable JSON ({first_line(e)}): download or save the folder again. Received: {path}"
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds no JSON object. Received: {type(config).__name__}")
    return config


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, read in 1 MiB chunks.

    Raises:
        OSError: If the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """Checks, without reading it, that a path can be a checkpoint: cheap, so callers run it before any work.

    Args:
        path: The checkpoint path.

    Returns:
        The path.

    A folder is accepted when it holds a weights file (:func:`weights_in_folder`), which is checked.

    Raises:
        CheckpointError: If the path does not exist, cannot be accessed, is a
            folder without weights, a device, pipe or socket, is not readable or is empty.
    """
    p = Path(path)
    shown = f"checkpoint={os.fspath(path)!r}"
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint not found: check the path. Received: {shown}") from None
    except OSError as e:
        raise CheckpointError(
            f"Checkpoint cannot be accessed ({os_reason(e)}): check the path. Received: {shown}"
        ) from None
    if stat.S_ISDIR(st.st_mode):
        check_checkpoint_path(weights_in_folder(p))
        return p
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(
            "Checkpoint is not a regular file (a device, pipe or socket): pass a saved .pth/.safetensors file. "
            f"Received: {shown}"
        )
    if not os.access(p, os.R_OK):
        raise CheckpointError(f"Checkpoint is not readable (permission denied): fix its permissions. Received: {shown}")
    if st.st_size == 0:
        raise CheckpointError(f"Checkpoint is empty (0 bytes): download or save it again. Received: {shown}")
    return p


def _sniff(head: bytes) -> str:
    """Names a file's format from its first bytes: hdf5, zip, safetensors or pickle."""
    if head.startswith(_HDF5_MAGIC):
        return "hdf5"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= _SAFETENSORS_MAX_HEADER:
        return "safetensors"
    return "pickle"


def _load_safetensors(p: Path, shown: str) -> Mapping[str, object]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise CheckpointError(
            f"Reading .safetensors needs the safetensors package: pip install safetensors. Received: {shown}"
        ) from None
    try:
        return load_file(os.fspath(p))
    except Exception as e:  # safetensors raises its own SafetensorError and others
        raise CheckpointError(
            f"Not a valid safetensors file (truncated or corrupt?): {first_line(e)}; save or download it again. "
            f"Received: {shown}"
        ) from None


def _load_torch(p: Path, shown: str) -> Mapping[str, object]:
    import pickle

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": noise beside a one-line error
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        needed = re.search(r"GLOBAL\s+([\w.]+)", text)
        if needed or "global" in text.lower():
            what = f" (it needs {needed.group(1)})" if needed else ""
            raise CheckpointError(
                "Checkpoint holds Python objects beyond tensors, and loading it could run arbitrary code, "
                "so it is refused and nothing in it was run; re-save it as a plain state dict "
                "(torch.save(model.state_dict(), path)) or as "
                f".safetensors. Received: {shown}{what}"
            ) from None
        raise CheckpointError(
            f"Not a PyTorch checkpoint (truncated, corrupt or another format): {_torch_detail(text)}. Received: {shown}"
        ) from None
    except Exception as e:  # torch.load raises RuntimeError, EOFError, KeyError, ValueError, ... on bad bytes
        raise CheckpointError(
            "Not a readable PyTorch checkpoint (truncated, corrupt or another format): "
            f"{_torch_detail(str(e)) or type(e).__name__}. Received: {shown}"
        ) from None


def normalize_state_dict(raw: object, source: str = "<state dict>") -> dict[str, np.ndarray]:
    """Unwraps, strips ``module.`` and converts tensors to numpy.

    Args:
        raw: What ``torch.load`` or ``safetensors`` returned.
        source: Name used in error messages.

    Returns:
        ``{key: numpy array}``; tensors share memory with ``raw`` where possible.

    Raises:
        CheckpointError: If no mapping of tensors is found.
    """
    state = raw
    for _ in range(2):  # e.g. {"model": {"state_dict": ...}}
        if isinstance(state, Mapping) and not _is_tensor_map(state):
            inner = next((state[k] for k in _WRAPPERS if k in state and isinstance(state[k], Mapping)), None)
            if inner is not None:
                state = inner
    if not isinstance(state, Mapping) or not any(is_tensor(v) for v in state.values()):
        raise CheckpointError(
            "Checkpoint holds no state dict (expected a mapping of names to tensors, bare or under "
            f"'state_dict' or 'model'). Received: checkpoint={source!r} holding {describe_value(state)}"
        )
    keys = list(state)
    if all(isinstance(k, str) and k.startswith("module.") for k in keys):
        state = {k[len("module.") :]: v for k, v in state.items()}
    out: dict[str, np.ndarray] = {}
    for k, v in state.items():
        if not isinstance(k, str) or not is_tensor(v):
            raise CheckpointError(
                f"Checkpoint entry {k!r} is not a tensor ({describe_value(v)}): expected a plain state dict of "
                f"tensors. Received: checkpoint={source!r}"
            )
        out[k] = tensor_to_numpy(k, v, source)
    return out


def check_dtypes(state_dict: Mapping[str, np.ndarray], source: str = "checkpoint") -> None:
    """Raises if a weight is not a real floating-point tensor (int8, bool, complex, ...).

    ``num_batches_tracked`` buffers are integer by design and allowed.

    Args:
        state_dict: Names to numpy arrays.
        source: Name used in the message.

    Raises:
        CheckpointError: Listing the tensors and their dtypes.
    """
    bad = [
        f"{k} ({v.dtype})"
        for k, v in state_dict.items()
        if not k.endswith(_INTEGER_SUFFIXES) and not np.issubdtype(v.dtype, np.floating)
    ]
    if bad:
        raise CheckpointError(
            f"The {source} has {len(bad)} weight tensor(s) that are not floating point "
            f"(quantized or not weights at all); export float32/float16 weights. Received: {shorten(bad)}"
        )


def check_finite(state_dict: Mapping[str, np.ndarray], source: str = "checkpoint") -> None:
    """Raises if any floating tensor holds NaN or Inf, naming the tensors.

    Args:
        state_dict: Names to numpy arrays.
        source: Name used in the message.

    Raises:
        CheckpointError: Listing the non-finite tensors and their NaN and Inf counts.
    """
    bad = []
    for k, v in state_dict.items():
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            nan = int(np.isnan(v).sum())
            inf = int(np.isinf(v).sum())
            bad.append(f"{k} ({', '.join(s for s in (f'{nan} NaN' if nan else '', f'{inf} Inf' if inf else '') if s)})")
    if bad:
        raise CheckpointError(
            f"The {source} has NaN or Inf values in {len(bad)} tensor(s), so the converted model would compute NaN; "
            f"fix or re-export it. Received: {shorten(bad)}"
        )


def is_tensor(v: object) -> bool:
    """Whether a checkpoint entry is a numpy array or a torch tensor (or parameter)."""
    return isinstance(v, np.ndarray) or type(v).__name__ in ("Tensor", "Parameter")


def _is_tensor_map(m: Mapping[object, object]) -> bool:
    return bool(m) and all(is_tensor(v) for v in m.values())


def tensor_to_numpy(key: str, v: object, source: str) -> np.ndarray:
    """A checkpoint entry as a numpy array: float16, bfloat16 and float64 as float32, memory shared where it can be.

    Raises:
        CheckpointError: If the tensor cannot be held by numpy (sparse, quantized, meta).
    """
    if isinstance(v, np.ndarray):
        return v
    import torch

    assert isinstance(v, torch.Tensor)
    try:
        t = v.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16, torch.float64):
            t = t.float()
        return t.numpy()
    except Exception as e:  # sparse, quantized, meta or other tensors numpy cannot hold
        raise CheckpointError(
            f"Checkpoint entry {key!r} is a {v.dtype} tensor ({v.layout}) that cannot be converted: {first_line(e)}. "
            f"Received: checkpoint={source!r}"
        ) from None


def describe_value(v: object) -> str:
    """What a checkpoint entry that is not a tensor holds, in a few words."""
    if isinstance(v, Mapping):
        return f"a mapping of {len(v)} entries without tensors"
    return f"type {type(v).__name__}"


def _torch_detail(text: str) -> str:
    """The informative line of a torch.load error, without its boilerplate."""
    boilerplate = (
        "Weights only load failed",
        "In PyTorch 2.6",
        "Check the documentation",
        "Please file an issue",
        "Re-running",
    )
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(boilerplate):
            line = line.removeprefix("WeightsUnpickler error:").strip()
            if line:
                sentence = line.split(". ", 1)[0].rstrip(".")
                return sentence[:200]
    return ""

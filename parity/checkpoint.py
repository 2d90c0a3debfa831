"""Reading checkpoints as people save them, safely, into numpy arrays.

Accepted: a bare state dict, one wrapped as ``{"state_dict": ...}`` or
``{"model": ...}``, keys prefixed ``module.`` (DataParallel); ``.pth``/``.pt``
files read with ``torch.load(weights_only=True)`` (never unpickling arbitrary
objects) and ``.safetensors`` files (no torch needed).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["CheckpointError", "check_finite", "load_checkpoint", "normalize_state_dict"]

_WRAPPERS = ("state_dict", "model", "model_state_dict", "net", "module")


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or holds no usable state dict."""


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], str]:
    """Reads a checkpoint into ``{name: numpy array}`` and its sha256.

    Args:
        path: A ``.pth``, ``.pt``, ``.bin`` or ``.safetensors`` file.

    Returns:
        The normalized state dict and the file's sha256.

    Raises:
        CheckpointError: If the path is missing, unreadable, not a checkpoint,
            would need unpickling arbitrary code, or holds no tensors.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"Checkpoint not found: check the path. Received: checkpoint={os.fspath(path)!r}")
    if p.is_dir():
        raise CheckpointError(f"Checkpoint is a directory, not a file: pass the .pth/.safetensors file inside. Received: checkpoint={os.fspath(path)!r}")
    if not os.access(p, os.R_OK):
        raise CheckpointError(f"Checkpoint is not readable (permission denied): fix its permissions. Received: checkpoint={os.fspath(path)!r}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"Checkpoint is empty (0 bytes): download or save it again. Received: checkpoint={os.fspath(path)!r}")
    digest = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if p.suffix == ".safetensors":
        raw = _load_safetensors(p)
    else:
        raw = _load_torch(p)
    return normalize_state_dict(raw, source=os.fspath(path)), digest.hexdigest()


def _load_safetensors(p: Path) -> Mapping[str, object]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise CheckpointError(f"Reading .safetensors needs the safetensors package: pip install safetensors. Received: checkpoint={os.fspath(p)!r}") from None
    try:
        return load_file(os.fspath(p))
    except Exception as e:  # safetensors raises its own SafetensorError and others
        raise CheckpointError(f"Not a valid safetensors file (truncated or corrupt?): {_first_line(e)}. Received: checkpoint={os.fspath(p)!r}") from None


def _load_torch(p: Path) -> Mapping[str, object]:
    import pickle
    import zipfile

    import torch

    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e) or "weights_only" in str(e):
            raise CheckpointError(
                "Checkpoint holds Python objects beyond tensors, and loading it could run arbitrary code, so it is refused; "
                "re-save it as a plain state dict (torch.save(model.state_dict(), path)) or as .safetensors. "
                f"Received: checkpoint={os.fspath(p)!r}"
            ) from None
        raise CheckpointError(f"Not a PyTorch checkpoint (unpickling failed: {_first_line(e)}). Received: checkpoint={os.fspath(p)!r}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError) as e:
        raise CheckpointError(f"Not a readable PyTorch checkpoint (truncated or corrupt?): {_first_line(e)}. Received: checkpoint={os.fspath(p)!r}") from None


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
    if not isinstance(state, Mapping) or not state or not _is_tensor_map(state):
        raise CheckpointError(
            "Checkpoint holds no state dict (expected a mapping of names to tensors, bare or under "
            f"'state_dict' or 'model'). Received: checkpoint={source!r}"
        )
    keys = list(state)
    if all(isinstance(k, str) and k.startswith("module.") for k in keys):
        state = {k[len("module."):]: v for k, v in state.items()}
    out: dict[str, np.ndarray] = {}
    for k, v in state.items():
        if not isinstance(k, str) or not _is_array(v):
            raise CheckpointError(f"Checkpoint entry {k!r} is not a tensor: expected a plain state dict. Received: checkpoint={source!r}")
        out[k] = _to_numpy(v)
    return out


def check_finite(state_dict: Mapping[str, np.ndarray]) -> None:
    """Raises if any floating tensor holds NaN or Inf, naming the tensors.

    Raises:
        CheckpointError: Listing the non-finite tensors.
    """
    bad = [k for k, v in state_dict.items() if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all()]
    if bad:
        shown = ", ".join(bad[:8]) + (f" ... and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise CheckpointError(f"Checkpoint has NaN or Inf values in {len(bad)} tensor(s): {shown}. Received: non-finite tensors")


def _is_array(v: object) -> bool:
    return isinstance(v, np.ndarray) or type(v).__name__ in ("Tensor", "Parameter")


def _is_tensor_map(m: Mapping[object, object]) -> bool:
    return bool(m) and all(_is_array(v) for v in m.values())


def _to_numpy(v: object) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v
    import torch

    assert isinstance(v, torch.Tensor)
    t = v.detach().cpu()
    if t.dtype in (torch.float16, torch.bfloat16, torch.float64):
        t = t.float()
    return t.numpy()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__

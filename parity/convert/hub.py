"""``--checkpoint hf://ORG/NAME[@REVISION]``: a Hugging Face hub repository, fetched as a local folder.

The repository is downloaded with ``huggingface_hub.snapshot_download`` into
its own cache (``HF_HOME``), only the files a conversion reads: ``config.json``
and ``model.safetensors``, or ``pytorch_model.bin`` where the repository has
no safetensors file. The folder then converts as any Hugging Face style folder
does (:func:`parity.core.checkpoint.weights_in_folder`). huggingface_hub is
not a dependency of this project: it is imported only here, only for
``hf://``, and its absence or a failed download is one line that says what to
do instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from parity.cli import UsageError
from parity.core.checkpoint import FOLDER_WEIGHTS
from parity.core.errors import first_line

__all__ = ["HUB_SCHEME", "check_hub_reference", "fetch_hub_folder", "is_hub_reference"]

#: The prefix that names a hub repository instead of a local path.
HUB_SCHEME = "hf://"


def is_hub_reference(checkpoint: str | os.PathLike[str]) -> bool:
    """Whether a ``--checkpoint`` argument names a hub repository (``hf://org/name``)."""
    return isinstance(checkpoint, str) and checkpoint.startswith(HUB_SCHEME)


def check_hub_reference(reference: str) -> tuple[str, str]:
    """Splits ``hf://org/name@revision`` into the repository id and the revision (``""`` for the default).

    Raises:
        UsageError: If the reference is not ``hf://ORG/NAME`` with an optional ``@REVISION``.
    """
    repo_id, _, revision = reference.removeprefix(HUB_SCHEME).partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UsageError(f"A hub checkpoint is hf://ORG/NAME, optionally @REVISION. Received: checkpoint={reference!r}")
    return repo_id, revision


def fetch_hub_folder(reference: str) -> Path:
    """Downloads a hub repository's config and weights, and returns the local folder holding them.

    Args:
        reference: ``hf://org/name``, optionally ``@revision`` (a branch, tag or commit).

    Returns:
        The snapshot folder (in huggingface_hub's cache).

    Raises:
        UsageError: If the reference is malformed, huggingface_hub is not installed, or the download
            fails (no network, no such repository).

    Examples:
        >>> from parity.convert.hub import fetch_hub_folder
        >>> fetch_hub_folder("hf://timm/vgg16.tv_in1k")  # doctest: +SKIP
        PosixPath('/root/.cache/huggingface/hub/models--timm--vgg16.tv_in1k/snapshots/...')
    """
    shown = f"checkpoint={reference!r}"
    repo_id, revision = check_hub_reference(reference)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UsageError(
            "hf:// checkpoints are downloaded with huggingface_hub, which is not installed: pip install "
            f"huggingface_hub, or download the folder yourself and pass its path. Received: {shown}"
        ) from None
    try:
        folder = Path(
            snapshot_download(repo_id, revision=revision or None, allow_patterns=["config.json", FOLDER_WEIGHTS[0]])
        )
        if not (folder / FOLDER_WEIGHTS[0]).is_file():
            folder = Path(
                snapshot_download(repo_id, revision=revision or None, allow_patterns=list(FOLDER_WEIGHTS[1:]))
            )
    except Exception as e:  # huggingface_hub raises its own HTTP, offline and not-found errors
        raise UsageError(
            f"Could not download {repo_id} from the Hugging Face hub ({type(e).__name__}: {first_line(e)}); without "
            f"network, pass a local folder or file with --checkpoint. Received: {shown}"
        ) from None
    return folder

"""Downloading CIFAR-10: the official archives, their md5, and extraction without path traversal.

``python -m parity.cifar download DIR`` runs :func:`download`.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from parity.cifar.data import BIN_DIR, PY_DIR, CifarError
from parity.core.errors import first_line

__all__ = ["ARCHIVES", "Archive", "download"]


@dataclass(frozen=True)
class Archive:
    """One official CIFAR-10 archive.

    Attributes:
        url: Where it is published.
        md5: Its published md5.
        folder: The folder it extracts to.
    """

    url: str
    md5: str
    folder: str


ARCHIVES: dict[str, Archive] = {
    "binary": Archive(
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", BIN_DIR
    ),
    "python": Archive(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", PY_DIR
    ),
}


def _safe_members(tar: tarfile.TarFile, folder: str) -> list[tarfile.TarInfo]:
    """The archive's members, if every one is a plain file or folder inside ``folder``.

    Raises:
        CifarError: On an absolute path, ``..``, a link, a device or a member outside ``folder``.
    """
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if (
            m.name.startswith(("/", "\\"))
            or ".." in parts
            or not parts
            or parts[0] != folder
            or not (m.isfile() or m.isdir())
        ):
            raise CifarError(
                f"The archive holds {m.name!r}, which is not a plain file inside {folder}/, so nothing was extracted. "
                f"Received: member {m.name!r}"
            )
    return members


def download(root: str | os.PathLike[str], kind: str = "binary") -> Path:
    """Downloads and extracts an official CIFAR-10 archive, checking its published md5.

    The archive is downloaded under a temporary name in ``root``, checked,
    and extracted only if every member is a plain file inside the expected
    folder (no absolute paths, ``..`` or links).

    Args:
        root: An existing folder.
        kind: ``"binary"`` or ``"python"``.

    Returns:
        The extracted batch folder.

    Raises:
        CifarError: If the download fails, the md5 differs or the archive is unsafe.
    """
    import urllib.request

    archive = ARCHIVES[kind]
    out = Path(root).expanduser()
    if not out.is_dir():
        raise CifarError(f"The download folder must exist. Received: {out}")
    tmp = out / f".{Path(archive.url).name}.{os.getpid()}.part"
    try:
        try:
            with urllib.request.urlopen(archive.url, timeout=60) as response, open(tmp, "wb") as f:  # noqa: S310 (fixed https URL)
                while chunk := response.read(1 << 20):
                    f.write(chunk)
        except OSError as e:
            raise CifarError(
                f"Could not download {archive.url} ({first_line(getattr(e, 'reason', e))}); without network, "
                f"copy {BIN_DIR}/ or {PY_DIR}/ into {out}. Received: {type(e).__name__}"
            ) from None
        md5 = hashlib.md5(tmp.read_bytes(), usedforsecurity=False).hexdigest()
        if md5 != archive.md5:
            raise CifarError(
                f"{archive.url} does not have its published md5 {archive.md5}; it was discarded. Received: md5 {md5}"
            )
        with tarfile.open(tmp, "r:gz") as tar:
            members = _safe_members(tar, archive.folder)
            tar.extractall(out, members=members, filter="data")
    finally:
        tmp.unlink(missing_ok=True)
    return out / archive.folder

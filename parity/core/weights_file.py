"""The converted weights file: a Keras ``.weights.h5`` with a provenance record and a hashed sidecar.

A converted file is an ordinary Keras ``.weights.h5`` (``model.load_weights``
reads it, keras.applications' VGG16/VGG19 included) with a provenance record in
its root attribute ``vgg_parity``: architecture, config, source (torchvision
weights name, checkpoint hash or random seed), library versions and the
verification figures. A sidecar ``<file>.json`` holds the same record plus the
sha256 of the ``.weights.h5``, which :func:`check_sidecar_hash` checks.

Files are staged under a temporary name in the target folder, flushed, and
renamed into place with their sidecar under the folder lock of
:mod:`parity.core.atomic`. Every refusal names the file and the command that
replaces it (:func:`fix_command`). Needs h5py, never torch or Keras.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py

from parity.core.atomic import fsync_path, new_held_temp, renaming_into, write_temp
from parity.core.catalog import WEIGHTS, cache_dir
from parity.core.checkpoint import file_sha256
from parity.core.errors import WeightsFileError, first_line, os_reason

__all__ = [
    "FORMAT",
    "TEMP_SUFFIX",
    "StagedWeights",
    "check_sidecar_hash",
    "fix_command",
    "read_record",
    "sidecar_path",
    "stage_converted_weights",
]

#: Format tag stored in every record; bumped if the layout of files changes.
FORMAT = "vgg-parity/1"


_ATTR = "vgg_parity"
#: The suffix of a converted file's temporary name while it is written (``.<name>.<hex>.tmp.weights.h5``).
TEMP_SUFFIX = ".tmp.weights.h5"


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The provenance sidecar of a weights file: ``<file>.json``."""
    return Path(f"{os.fspath(path)}.json")


def fix_command(path: Path) -> str:
    """How to replace a bad weights file, as advice for an error message.

    It resolves the path and searches the catalog, so callers build it only
    in the message they raise, never up front.
    """
    try:
        in_cache = path.parent.resolve() == cache_dir().resolve()
    except OSError:
        in_cache = False
    if in_cache:
        for recs in WEIGHTS.values():
            for r in recs.values():
                if r.keras_filename == path.name:
                    return f"run `python -m parity.convert {r.arch} --weights {r.name} --force` to replace it"
    return f"convert it again with `python -m parity.convert ARCH ... --output {path} --force`"


def read_record(path: str | os.PathLike[str]) -> dict[str, object]:
    """Reads the provenance record embedded in a converted weights file.

    Args:
        path: A ``.weights.h5`` written by ``python -m parity.convert``.

    Returns:
        The record.

    Raises:
        WeightsFileError: If the file is unreadable, corrupt or has no record.
    """
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get(_ATTR)
    except (OSError, ValueError, RuntimeError) as e:
        raise WeightsFileError(
            f"{path} is not a readable HDF5 weights file (corrupt or truncated): {fix_command(Path(path))}. "
            f"Received: {type(e).__name__}: {first_line(e)}"
        ) from None
    if raw is None:
        raise WeightsFileError(
            f"{path} has no vgg-parity record, so it was not written by `python -m parity.convert`; "
            f"load it with model.load_weights() if you trust it. Received: weights={os.fspath(path)!r}"
        )
    try:
        record = json.loads(raw)
    except (TypeError, ValueError):
        raise WeightsFileError(
            f"{path} has an unreadable vgg-parity record: {fix_command(Path(path))}. Received: {raw!r:.80}"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise WeightsFileError(
            f"{path} was written in another format than {FORMAT}: {fix_command(Path(path))}. "
            f"Received: format={record.get('format') if isinstance(record, dict) else record!r}"
        )
    return record


def check_sidecar_hash(path: Path, *, required: bool) -> None:
    """Checks a converted file against the sha256 in its sidecar ``<file>.json``.

    Args:
        path: The ``.weights.h5`` file.
        required: Whether a missing sidecar is an error (in Keras' cache it
            is); otherwise a missing sidecar is not checked.

    Raises:
        WeightsFileError: If the sidecar is unreadable or has no sha256, the
            file cannot be read or its hash disagrees, or a required sidecar
            is missing. The message names the file and the command that replaces it.
    """
    sidecar = sidecar_path(path)
    if sidecar.exists():
        try:
            expected = json.loads(sidecar.read_text())["sha256"]
            if not isinstance(expected, str):
                raise TypeError(expected)
        except (OSError, ValueError, KeyError, TypeError):
            raise WeightsFileError(
                f"{sidecar} is unreadable or has no sha256, so {path.name} cannot be checked: {fix_command(path)}. "
                f"Received: {sidecar}"
            ) from None
        try:
            actual = file_sha256(path)
        except OSError as e:
            raise WeightsFileError(
                f"{path} cannot be read ({os_reason(e)}): {fix_command(path)}. Received: {path}"
            ) from None
        if actual != expected:
            raise WeightsFileError(
                f"{path} does not match the sha256 in {sidecar.name} (truncated, corrupt or modified), "
                f"so it is not loaded: {fix_command(path)}. "
                f"Received: sha256={actual[:16]}..., expected {expected[:16]}..."
            )
    elif required:
        raise WeightsFileError(
            f"{path} has no {sidecar.name} beside it, so its integrity cannot be checked and it is not loaded: "
            f"{fix_command(path)}. Received: {path}"
        )


class StagedWeights:
    """A converted weights file being written under a temporary name beside its target.

    Made by :func:`stage_converted_weights`. Write the ``.weights.h5`` to
    :attr:`path`, then :meth:`commit` it.

    Attributes:
        path: The temporary ``.weights.h5`` to write (it exists, empty).
        target: Where :meth:`commit` puts it.
        committed: Whether the renames of :meth:`commit` happened. A signal
            that arrived during them is delivered right after, so a caller
            that catches it can tell that the file is complete and in place.
    """

    def __init__(self, path: Path, target: Path) -> None:
        self.path = path
        self.target = target
        self.committed = False
        self._sidecar: Path | None = None

    def commit(self, record: dict[str, object], *, before_commit: Callable[[], None] | None = None) -> str:
        """Embeds the record, writes the sidecar and renames both into place.

        The record goes into the file's root attribute, the file is flushed to
        disk and hashed, the sidecar is written the same way; then, under an
        exclusive lock on the folder, both are renamed over their targets and
        the folder is flushed. SIGINT and SIGTERM are held back during the two
        renames (in the main thread), so the weights and their sidecar are
        replaced together.

        Args:
            record: Provenance record (JSON-serializable), without ``sha256``.
            before_commit: Called just before the renames; raising there
                abandons the write (e.g. when a signal arrived meanwhile).

        Returns:
            The sha256 of the committed file.

        Raises:
            OSError: If writing fails (disk full, permissions).
        """
        record = {"format": FORMAT, **record}
        with h5py.File(self.path, "a") as f:
            f.attrs[_ATTR] = json.dumps(record, sort_keys=True)
        fsync_path(self.path)
        sha = file_sha256(self.path)
        self._sidecar = write_temp(
            sidecar_path(self.target), json.dumps({**record, "sha256": sha}, indent=2, sort_keys=True) + "\n"
        )
        with renaming_into(self.target.parent, before_commit):
            os.replace(self.path, self.target)
            os.replace(self._sidecar, sidecar_path(self.target))
            self.committed = True
        return sha

    def _discard(self) -> None:
        self.path.unlink(missing_ok=True)
        if self._sidecar is not None:
            self._sidecar.unlink(missing_ok=True)


@contextlib.contextmanager
def stage_converted_weights(path: str | os.PathLike[str]) -> Iterator[StagedWeights]:
    """A temporary ``.weights.h5`` beside ``path``, removed on exit unless committed.

    A writer killed at any point leaves at most a hidden temporary file
    (``.<name>.*.tmp.weights.h5``), never a partial file under ``path``, and
    holds it while it lives (:func:`parity.core.atomic.new_held_temp`), so
    :func:`parity.core.atomic.remove_stale_temps` can tell a killed writer's
    leftover from a live writer's file; on any exception,
    or when the block ends without :meth:`StagedWeights.commit`, the temporary
    files are removed.

    Args:
        path: Target ``.weights.h5`` path; its folder must exist.

    Yields:
        The staged file.

    Raises:
        ValueError: If ``path`` does not end in ``.weights.h5``.
        OSError: If the temporary file cannot be created.
    """
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"Converted weights must be saved as a .weights.h5 file. Received: path={os.fspath(path)!r}")
    fd, tmp = new_held_temp(path, TEMP_SUFFIX)  # held until the block ends: not stale while this process lives
    staged = StagedWeights(tmp, path)
    try:
        yield staged
    finally:
        staged._discard()
        os.close(fd)

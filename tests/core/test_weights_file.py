"""The converted file's commit: the weights and their sidecar replace an existing pair together or not at all."""

from __future__ import annotations

import io
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from parity.core.errors import WeightsFileError
from parity.core.weights_file import check_sidecar_hash, read_record, sidecar_path, stage_converted_weights


class _Abandon(Exception):
    """Raised from ``before_commit``: the write is interrupted just before the renames."""


def _write(path: Path, value: float, *, before_commit: object = None) -> None:
    """Writes a tiny converted file whose one dataset holds ``value``, with its record and sidecar."""
    with stage_converted_weights(path) as staged:
        with h5py.File(staged.path, "w") as f:
            f.create_dataset("w", data=np.full((4,), value, np.float32))
        staged.commit({"arch": "tiny", "value": value}, before_commit=before_commit)


def _pair(path: Path) -> tuple[bytes, bytes]:
    return path.read_bytes(), sidecar_path(path).read_bytes()


@pytest.fixture
def old(tmp_path: Path) -> Path:
    """A committed file and sidecar that a second commit tries to replace."""
    path = tmp_path / "m.weights.h5"
    _write(path, 1.0)
    check_sidecar_hash(path, required=True)
    return path


def test_targets_untouched_until_the_renames_and_after_an_interruption(old: Path) -> None:
    """Interrupted just before the renames, the old pair is still in place, byte for byte, and still checks."""
    before = _pair(old)
    seen: list[tuple[bytes, bytes]] = []

    def interrupt() -> None:
        seen.append(_pair(old))  # the new file and its sidecar are complete by now, under hidden names
        raise _Abandon

    with pytest.raises(_Abandon):
        _write(old, 2.0, before_commit=interrupt)
    assert seen == [before], "the weights or the sidecar were written in place before the renames"
    assert _pair(old) == before
    check_sidecar_hash(old, required=True)
    assert read_record(old)["value"] == 1.0
    assert sorted(p.name for p in old.parent.iterdir()) == sorted([old.name, sidecar_path(old).name])


def test_sidecar_is_never_opened_for_writing_under_its_own_name(old: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file the commit writes is a hidden temporary one: a reader never sees a sidecar half written."""
    targets = {os.fspath(old), os.fspath(sidecar_path(old))}
    written: list[str] = []
    real_open, real_os_open = io.open, os.open

    def spy_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            written.append(os.fspath(file))
        return real_open(file, mode, *args, **kwargs)

    def spy_os_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR):
            written.append(os.fspath(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(io, "open", spy_open)
    monkeypatch.setattr("builtins.open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    _write(old, 3.0)
    monkeypatch.undo()
    assert written and not targets & set(written), written
    assert all(Path(p).name.startswith(".") for p in written), written
    check_sidecar_hash(old, required=True)
    assert read_record(old)["value"] == 3.0


def test_sidecar_hash_is_of_the_committed_file(old: Path) -> None:
    """The sidecar pins the bytes now under the target name: changing one byte is refused."""
    data = bytearray(old.read_bytes())
    data[-1] ^= 0xFF
    old.write_bytes(bytes(data))
    with pytest.raises(WeightsFileError, match="does not match the sha256"):
        check_sidecar_hash(old, required=True)

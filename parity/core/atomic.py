"""Files written under a temporary name and renamed into place, under a folder lock, signals held back.

A writer killed at any point leaves at most a hidden temporary file
(``.<name>.*.tmp*``) beside its target, never a partial file under the target
name. Writers of one folder hold an exclusive advisory lock on the folder
while they rename, readers a shared one (:func:`folder_lock`), so a reader
never pairs one writer's file with another's. SIGINT and SIGTERM are held
back during the renames and delivered right after. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; writes stay atomic, concurrent writers are not serialized
    fcntl = None  # type: ignore[assignment]

__all__ = ["folder_lock", "fsync_path", "new_temp", "renaming_into", "signals_held", "write_atomic", "write_temp"]


def write_atomic(
    path: str | os.PathLike[str], data: str | bytes, *, before_commit: Callable[[], None] | None = None
) -> None:
    """Writes a file under a temporary name in its folder, then renames it.

    Args:
        path: Target path; its folder must exist.
        data: The content (text is written as UTF-8).
        before_commit: Called just before the rename; raising there abandons the write.

    Raises:
        OSError: If writing fails; no temporary file is left behind.
    """
    path = Path(path)
    tmp = write_temp(path, data)
    try:
        with renaming_into(path.parent, before_commit):
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def folder_lock(folder: Path, *, shared: bool) -> Iterator[int | None]:
    """Holds an advisory lock on a folder (not on a file in it: nothing is left behind).

    Writers take it exclusively around their renames, readers shared around
    check-and-load. Where locks are unavailable (no ``fcntl``, a file system
    without ``flock``, an unreadable folder) this yields ``None`` and does not lock.

    Yields:
        The folder's open descriptor (for ``fsync``), or ``None``.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield None
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            except OSError:
                pass
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def renaming_into(folder: Path, before_commit: Callable[[], None] | None) -> Iterator[None]:
    """The block that renames finished temporary files over their targets in ``folder``.

    It runs under an exclusive lock on the folder with SIGINT and SIGTERM held
    back, after ``before_commit`` (raising there abandons the renames), and the
    folder is flushed after it.
    """
    with folder_lock(folder, shared=False) as fd, signals_held():
        if before_commit is not None:
            before_commit()
        yield
        if fd is not None:
            _fsync_fd(fd)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Holds SIGINT and SIGTERM back for a few renames, then delivers them to the usual handlers.

    Only the main thread can set handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    signums = [signal.SIGINT, signal.SIGTERM]
    previous = {s: signal.getsignal(s) for s in signums}
    for s in signums:
        signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


def new_temp(target: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """Creates a new hidden file beside ``target`` with the permissions the umask gives any new file.

    Returns:
        Its descriptor (open for writing) and its path.
    """
    while True:
        path = target.with_name(f".{target.name}.{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue


def write_temp(target: Path, data: str | bytes) -> Path:
    """Writes ``data`` to a flushed temporary file beside ``target`` and returns its path."""
    fd, path = new_temp(target)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def fsync_path(path: Path) -> None:
    """Flushes a written file to disk."""
    with open(path, "rb+") as f:
        f.flush()
        os.fsync(f.fileno())


def _fsync_fd(fd: int) -> None:
    """Flushes an open folder to disk, where the file system can."""
    with contextlib.suppress(OSError):  # some file systems cannot fsync a folder
        os.fsync(fd)

"""Files written under a temporary name and renamed into place, under a folder lock, signals held back.

A writer killed at any point leaves at most a hidden temporary file
(``.<name>.*.tmp*``) beside its target, never a partial file under the target
name. Writers of one folder hold an exclusive advisory lock on the folder
while they rename, readers a shared one (:func:`folder_lock`), so a reader
never pairs one writer's file with another's. SIGINT and SIGTERM are held
back during the renames and delivered right after.

A writer of a large file holds its temporary file (:func:`new_held_temp`): an
open-file-description lock on it, which the kernel drops when the writer exits,
however it exits. :func:`remove_stale_temps` removes, under the folder lock,
the temporary files of a target that no live process holds: those a killed
writer left. :func:`claim` lets one process at a time produce a file, so that
the others wait and use its result. Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; writes stay atomic, concurrent writers are not serialized
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "claim",
    "folder_lock",
    "fsync_path",
    "is_held",
    "new_held_temp",
    "new_temp",
    "remove_stale_temps",
    "renaming_into",
    "signals_held",
    "write_atomic",
    "write_temp",
]

#: Linux's open-file-description locks: tied to one open file, released when the last descriptor of it closes
#: (a killed process's included), and independent of ``flock``, which HDF5 takes on the files it opens.
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None) if fcntl is not None else None


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


def _ofd_lock(fd: int, kind: int) -> bool:
    """Takes an open-file-description lock on a whole file without waiting; whether it was granted."""
    assert _OFD_SETLK is not None
    try:
        fcntl.fcntl(fd, _OFD_SETLK, struct.pack("hhqqi4x", kind, os.SEEK_SET, 0, 0, 0))
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def new_held_temp(target: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """:func:`new_temp`, held by this process for as long as the descriptor stays open.

    The file is created and locked under a shared lock on the folder, so
    :func:`remove_stale_temps` (which takes it exclusively) never sees it
    created but not yet held. Where open-file-description locks are missing
    (not Linux), it is not held, and :func:`remove_stale_temps` removes nothing.

    Returns:
        Its descriptor (open for writing; closing it releases the hold) and its path.
    """
    with folder_lock(target.parent, shared=True):
        fd, path = new_temp(target, suffix)
        if _OFD_SETLK is not None:
            try:
                _ofd_lock(fd, fcntl.F_WRLCK)
            except OSError:
                pass  # a file system without these locks: the file is merely not held
    return fd, path


def is_held(path: Path) -> bool:
    """Whether a live process holds a temporary file made by :func:`new_held_temp` (``True`` when unknown)."""
    if _OFD_SETLK is None:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        return not _ofd_lock(fd, fcntl.F_RDLCK)
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the probe's own lock


def remove_stale_temps(target: Path, suffix: str = ".tmp") -> list[Path]:
    """Removes the temporary files of ``target`` (``.<name>.*<suffix>``) that no live process holds.

    Run under an exclusive lock on the folder: no writer creates or renames a
    temporary file meanwhile. Files of writers still running are kept.

    Args:
        target: The file whose leftovers are removed.
        suffix: The temporary files' suffix, as given to :func:`new_held_temp`.

    Returns:
        The files removed.
    """
    removed = []
    with folder_lock(target.parent, shared=False):
        for path in sorted(target.parent.glob(f".{target.name}.*{suffix}")):
            if not is_held(path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


@contextlib.contextmanager
def claim(target: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Lets one process at a time produce ``target``; the others wait here for it to finish.

    The claim is an exclusive ``flock`` on a hidden ``.<name>.lock`` beside the
    target, removed by the process that releases it. A process that waited
    checks that the lock file it got is still the one in the folder (the
    releaser may have removed it) and otherwise takes a new one. A killed
    holder's lock is released by the kernel; its file is reused and removed by
    the next claim.

    Where the lock file cannot be created (a read-only folder) or ``flock`` is
    missing, nothing is locked.

    Args:
        target: The file to produce; its folder must exist.
        on_wait: Called once if another process holds the claim, before waiting.
    """
    lock = target.with_name(f".{target.name}.lock")
    if fcntl is None:
        yield
        return
    waited = False
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # a read-only folder: nothing can be produced there, and the producer will say so
            yield
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None and not waited:
                    on_wait()
                waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(lock)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
            break
        os.close(fd)  # released and removed while this process waited: take the lock anew
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        os.close(fd)

"""What every ``python -m parity.*`` entry point does around its work: signals, error lines, exit codes.

A ``main`` parses its arguments, then hands the work to :func:`run_cli`,
which reports every way it can end in the same form:

- a usage error (the exception types the CLI names): ``error: <message on
  one line>``, exit 2;
- an :class:`OSError` that escaped the work: ``error: <the OS's words>;
  nothing was written. Received: <file name>``, exit 2;
- SIGINT or SIGTERM: ``error: <what the CLI says was kept>. Received:
  SIGTERM``, exit 128 + the signal number. SIGTERM raises
  :class:`parity.interrupts.Interrupted` (SIGINT already raises
  ``KeyboardInterrupt``), so temporary files are removed on the way out.

It also holds what the commands share before and around their work: the one
:class:`UsageError`, the output-path checks (:func:`check_writable_folder`,
:func:`check_new_output`, :func:`check_report_path`), the progress logger
(:func:`log`) and the ``--verbose`` option that lets TensorFlow's own log lines
through (:func:`add_verbose_option`, :func:`hide_framework_logs`).

This is a module of its own, not part of :mod:`parity.interrupts`: library
code (the conversion, :mod:`parity.convert.to_torch`) imports that one in the middle
of its work to check for a signal, and it stays a flag and an exception with
nothing to print, while this one is used by ``main`` functions only and holds
their reporting policy. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from parity import interrupts
from parity.interrupts import Interrupted

__all__ = [
    "UsageError",
    "add_verbose_option",
    "check_new_output",
    "check_report_path",
    "check_writable_folder",
    "hide_framework_logs",
    "log",
    "one_line",
    "report_result",
    "run_cli",
]

R = TypeVar("R")


class UsageError(ValueError):
    """A user mistake, found before or during the work: reported in one line, exit code 2."""


def log(msg: str, quiet: bool) -> None:
    """Prints a progress line on stderr unless ``quiet``."""
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


#: TensorFlow's C++ log threshold that hides its INFO, WARNING and ERROR lines (a failure still raises in Python).
_QUIET_TF_LOG_LEVEL = "3"


def add_verbose_option(parser: argparse.ArgumentParser) -> None:
    """Adds ``--verbose``: let TensorFlow's own log lines through (see :func:`hide_framework_logs`)."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's own log lines (CPU features, oneDNN, CUDA probing), hidden by default",
    )


def hide_framework_logs(verbose: bool) -> None:
    """Hides TensorFlow's C++ log lines unless ``verbose``; call before TensorFlow is imported.

    On a machine without a GPU, TensorFlow prints its CPU features, whether
    oneDNN is on and ``failed call to cuInit`` at import and first use; none of
    it is about the command's work, and every real failure still raises. Sets
    ``TF_CPP_MIN_LOG_LEVEL=3`` unless the environment already chose a level;
    child processes inherit it.

    Args:
        verbose: Leave TensorFlow's logging as the environment has it.

    Examples:
        >>> hide_framework_logs(verbose=False)  # doctest: +SKIP
        >>> os.environ["TF_CPP_MIN_LOG_LEVEL"]  # doctest: +SKIP
        '3'
    """
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _QUIET_TF_LOG_LEVEL)


def check_writable_folder(folder: Path, shown: str, noun: str = "Output folder") -> None:
    """Refuses a folder that is missing or cannot be written to.

    Args:
        folder: The folder something will be written into.
        shown: What the user passed, for the message's ``Received:`` part.
        noun: How the message names the folder.

    Raises:
        UsageError: If the folder does not exist or is not writable.
    """
    if not folder.is_dir():
        raise UsageError(f"{noun} does not exist: create it first. Received: {shown}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{noun} is not writable: fix its permissions or pick another. Received: {shown}")


def check_new_output(path: Path, force: bool, shown: str) -> Path:
    """Refuses an output file whose folder is missing or unwritable, or that exists without ``force``.

    Args:
        path: The file to be written.
        force: Whether an existing file may be replaced.
        shown: What the user passed, for the message's ``Received:`` part.

    Returns:
        The path.

    Raises:
        UsageError: On a missing or unwritable folder, or an existing output without ``force``.
    """
    check_writable_folder(path.parent, shown)
    if (path.exists() or path.is_symlink()) and not force:
        raise UsageError(f"Output exists: pass --force to overwrite it. Received: {shown}")
    return path


def check_report_path(report: str | os.PathLike[str], out_path: Path) -> Path:
    """Validates a ``--report`` path before any work is done.

    Args:
        report: The JSON report to write.
        out_path: The main output, which the report must not replace (nor its sidecar).

    Returns:
        The report's path.

    Raises:
        UsageError: If it is a folder, lies in a missing or unwritable folder,
            or would overwrite the main output or its sidecar.
    """
    path = Path(report).expanduser()
    shown = f"report={os.fspath(report)!r}"
    if path.is_dir():
        raise UsageError(f"Report is a directory: name a .json file inside it. Received: {shown}")
    check_writable_folder(path.parent, shown, "Report folder")
    if path.resolve() in (out_path.resolve(), Path(f"{out_path}.json").resolve()):
        raise UsageError(
            f"Report would overwrite the converted weights or their sidecar: name another file. Received: {shown}"
        )
    return path


class CheckedResult(Protocol):
    """What a converting or exporting tool returns: the written file (``None`` if none) and the verdict."""

    @property
    def output(self) -> Path | None: ...

    @property
    def passed(self) -> bool: ...


def one_line(text: str) -> str:
    """``text`` with each line break, and the blanks around it, folded into one space."""
    return re.sub(r"\s*\n\s*", " ", text.strip())


def report_result(result: CheckedResult) -> int:
    """Prints the written path (if any) on stdout; 0 when the check passed, else 1."""
    if result.output is not None:
        print(result.output)
    return 0 if result.passed else 1


def run_cli(
    work: Callable[[], R],
    *,
    usage_errors: tuple[type[Exception], ...],
    interrupted_message: str | Callable[[Interrupted | KeyboardInterrupt], str],
    finish: Callable[[R], int],
    keeps_swallowed_signals: bool = False,
) -> int:
    """Runs a CLI's work with SIGTERM raising, and turns how it ended into an exit code.

    Args:
        work: The CLI's work (arguments already parsed).
        usage_errors: Exceptions that mean bad input: one line on stderr, exit 2.
        interrupted_message: What is said after ``error: `` when SIGINT or
            SIGTERM stops the work, before ``. Received: SIGNAME``; a function
            of the exception when it depends on how far the work got.
        finish: Turns the work's result into the exit code (and prints it);
            called after the signal handlers are restored.
        keeps_swallowed_signals: The work calls
            :func:`parity.interrupts.abort_if_interrupted` before it commits, so
            an :class:`Interrupted` raised where Python cannot propagate it (a
            weakref callback, a ``__del__``) is not printed: the work stops at
            its next check instead.

    Returns:
        ``finish``'s code; 2 on a usage error or an :class:`OSError`; 128 + the
        signal number when interrupted.
    """
    interrupts.reset()
    handlers: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        handlers[signal.SIGTERM] = signal.signal(signal.SIGTERM, interrupts.raise_interrupted)  # SIGINT already raises
    previous_hook = sys.unraisablehook

    def quiet_unraisable(info: object) -> None:
        if not isinstance(getattr(info, "exc_value", None), Interrupted):
            previous_hook(info)  # type: ignore[arg-type]

    if keeps_swallowed_signals:
        sys.unraisablehook = quiet_unraisable
    try:
        result = work()
    except usage_errors as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        print(
            f"error: {one_line(e.strerror or str(e))}; nothing was written. Received: {e.filename or type(e).__name__}",
            file=sys.stderr,
        )
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, Interrupted) else int(signal.SIGINT)
        what = interrupted_message if isinstance(interrupted_message, str) else interrupted_message(e)
        print(f"error: {what}. Received: {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    finally:
        sys.unraisablehook = previous_hook
        for signum, handler in handlers.items():
            if handler is not None:  # None: set outside Python, cannot be put back from here
                signal.signal(signum, handler)  # type: ignore[arg-type]
    return finish(result)

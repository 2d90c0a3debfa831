"""SIGTERM and SIGINT during a conversion: an exception that unwinds, and a flag that survives being swallowed.

:func:`parity.cli.run_cli` (the body of the CLIs' ``main``) installs
:func:`raise_interrupted` for SIGTERM (SIGINT already raises ``KeyboardInterrupt``). The conversion calls
:func:`abort_if_interrupted` between its steps and just before each rename,
so a signal whose exception some library code swallowed still stops it before
anything is committed. Standard library only.
"""

from __future__ import annotations

__all__ = ["Interrupted", "abort_if_interrupted", "raise_interrupted", "reset"]


class Interrupted(BaseException):
    """SIGTERM (or SIGINT) arrived: unwinds like KeyboardInterrupt, so temporary files are removed.

    Attributes:
        signum: The signal number.
        written: A file that was complete and renamed into place when the
            signal was delivered (a signal held back during the final renames),
            or ``None``: nothing was kept.
    """

    def __init__(self, signum: int, written: object = None) -> None:
        super().__init__(signum)
        self.signum = signum
        self.written = written


#: The last SIGTERM received under :func:`parity.cli.run_cli`, kept in case library code swallows the exception.
_received_signal: int | None = None


def raise_interrupted(signum: int, frame: object) -> None:
    """The SIGTERM handler: records the signal and raises :class:`Interrupted`."""
    global _received_signal
    _received_signal = signum
    raise Interrupted(signum)


def abort_if_interrupted() -> None:
    """Raises if a signal arrived, even one whose exception some library code swallowed."""
    if _received_signal is not None:
        raise Interrupted(_received_signal)


def reset() -> None:
    """Forgets a signal received by an earlier run in this process."""
    global _received_signal
    _received_signal = None

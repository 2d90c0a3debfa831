"""Pieces of the one-line error messages the converter and the loaders raise (no framework imports)."""

from __future__ import annotations

__all__ = ["first_line", "os_reason", "shorten"]


def first_line(e: object) -> str:
    """The first line of an exception's text (at most 200 characters), or its type name."""
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def os_reason(e: OSError) -> str:
    """``"Permission denied"`` and the like: the OS's words for a failed call."""
    return e.strerror or type(e).__name__


def shorten(items: list[str], limit: int = 8) -> str:
    """``"a, b, c ... and 5 more"``: a list of names cut to ``limit``."""
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more

"""The errors the converter and the loaders raise, and the pieces of their one-line messages (no framework imports)."""

from __future__ import annotations

__all__ = ["ConversionError", "WeightsFileError", "first_line", "list_problems", "os_reason", "shorten"]


class ConversionError(ValueError):
    """The state dict does not fit the config or the Keras model."""


class WeightsFileError(ValueError):
    """A weights file is missing, corrupt, tampered with, or does not fit the model."""


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


def list_problems(found: dict[str, list[str]]) -> list[str]:
    """``"label: a, b, c"`` for every non-empty list of names."""
    return [f"{label}: {shorten(names)}" for label, names in found.items() if names]

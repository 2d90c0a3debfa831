"""Loading torch, torchvision and Keras in the one order that works in a single process.

Importing torchvision (which pulls in triton on CUDA builds of torch) after
TensorFlow crashes the interpreter (tensorflow/tensorflow#124205), so every
tool that needs both calls :func:`import_frameworks` before its first Keras
or TensorFlow import.
"""

from __future__ import annotations

import sys

from parity.cli import UsageError

__all__ = ["import_frameworks"]


def import_frameworks(
    what: str = "the conversion", command: str = "python -m parity.convert", *, keras: bool = True
) -> None:
    """Loads torch and torchvision, then Keras: the only safe order.

    Args:
        what: The work that needs them, for the message.
        command: The command that runs it in a fresh process, for the message.
        keras: Whether to load Keras (and so TensorFlow) too; work that needs torch alone passes ``False``.

    Raises:
        UsageError: If TensorFlow is loaded already (without torchvision), or
            torch or torchvision is not installed.
    """
    if "tensorflow" in sys.modules and "torchvision" not in sys.modules:
        raise UsageError(
            "TensorFlow is already loaded in this process, and importing torchvision after it can crash the "
            f"interpreter; run {what} in a fresh process ({command}). Received: tensorflow loaded first"
        )
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        raise UsageError(
            "Converting needs torch and torchvision: pip install 'vgg-parity[torch]'. Received: torch not installed"
        ) from None
    if keras:
        import keras as _keras  # noqa: F401

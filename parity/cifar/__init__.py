"""``python -m parity.cifar``: CIFAR-10 folders read with numpy alone, written, downloaded.

Modules, by role: :mod:`~parity.cifar.data` (layout and the data class),
:mod:`~parity.cifar.read` (both published layouts, a restricted unpickler),
:mod:`~parity.cifar.write` (writers, scikit-learn's digits as CIFAR),
:mod:`~parity.cifar.download` (md5-checked download), :mod:`~parity.cifar.cli`.
"""

from parity.cifar.cli import build_parser, main
from parity.cifar.read import RestrictedUnpickler, load_cifar10

__all__ = ["RestrictedUnpickler", "build_parser", "load_cifar10", "main"]

"""``python -m parity.train``: the CIFAR-10 recipe in torch and Keras from one initialization and one batch order.

Modules, by role: :mod:`~parity.train.cli` (the command line),
:mod:`~parity.train.loop` (the recipe, both trainers, the loop),
:mod:`~parity.train.outputs` (what a run writes). The data is read by :mod:`parity.cifar`.
"""

from parity.train.cli import build_parser, main

__all__ = ["build_parser", "main"]

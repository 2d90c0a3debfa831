"""``python -m parity.convert``: torchvision weights to a verified Keras file, and back.

Modules, by role: :mod:`~parity.convert.cli` (the command line),
:mod:`~parity.convert.to_keras` (the pipeline to a ``.weights.h5``),
:mod:`~parity.convert.to_torch` (a ``.weights.h5`` back to a torch checkpoint),
:mod:`~parity.convert.weight_arrays` (torch state dict <-> Keras arrays and
files), :mod:`~parity.convert.random_weights` (every-tensor-random state dicts).

Examples:
    >>> from parity.convert import convert
    >>> result = convert("vgg11_bn", init="random-all", seed=0, output="v.weights.h5")  # doctest: +SKIP
    >>> result.passed  # doctest: +SKIP
    True
"""

from parity.convert.cli import build_parser, main
from parity.convert.to_keras import ConvertResult, convert
from parity.convert.to_torch import convert_to_torch

__all__ = ["ConvertResult", "build_parser", "convert", "convert_to_torch", "main"]

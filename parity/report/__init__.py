"""``python -m parity.report``: how far the Keras models are from torch, per block, mode, backend and size.

Modules, by role: :mod:`~parity.report.cli` (the command line, tables, plot),
:mod:`~parity.report.training_parity` (initialization, gradients and training
steps against torch), :mod:`~parity.report.gpu` (the GPU tier,
``python -m parity.report.gpu``).
"""

from parity.report.cli import build_parser, main, parse_size, run_report

__all__ = ["build_parser", "main", "parse_size", "run_report"]

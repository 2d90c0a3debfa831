"""``python -m parity.export``: a converted file as a SavedModel or TFLite file, checked against torch first.

Modules, by role: :mod:`~parity.export.cli` (the command line), :mod:`~parity.export.pipeline` (the steps),
:mod:`~parity.export.options` (option checks made before any framework
loads), :mod:`~parity.export.write` (build, write, commit),
:mod:`~parity.export.check` (run the artifact from disk, judge it).
"""

from parity.export.cli import build_parser, main
from parity.export.pipeline import ExportResult, export

__all__ = ["ExportResult", "build_parser", "export", "main"]

"""``python -m parity.export``: a converted file as a SavedModel, TFLite, ONNX or OpenVINO file, checked against torch
first.

Modules, by role: :mod:`~parity.export.cli` (the command line), :mod:`~parity.export.pipeline` (the steps),
:mod:`~parity.export.options` (option checks made before any framework
loads), :mod:`~parity.export.write` (build, write, commit),
:mod:`~parity.export.check` (run the artifact from disk, judge it); the files written straight from the
layer plan: :mod:`~parity.export.flatbuffer` (fp32 TFLite), :mod:`~parity.export.onnx_graph` (ONNX), both
from :mod:`~parity.export.folding`; :mod:`~parity.export.openvino_ir` (the OpenVINO IR, from the ONNX graph).
"""

from parity.export.cli import build_parser, main
from parity.export.pipeline import ExportResult, export

__all__ = ["ExportResult", "build_parser", "export", "main"]

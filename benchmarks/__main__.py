"""``python -m benchmarks``: every benchmark in turn, or the list of them.

One module per measured question, each runnable alone (``--help`` for its
options, ``--quick`` for a smoke run, ``--out FILE`` to keep every sample):

- ``python -m benchmarks.inference_speed``: images/s of vgg_keras (direct,
  ``predict``, XLA) against torchvision eager, and vgg_keras' head against
  keras.applications', in interleaved rounds (~9 min on 2 cores).
- ``python -m benchmarks.conversion_memory``: wall time and peak RSS of
  ``python -m parity.convert vgg16`` against the import footprint, a bare
  floor and the Keras route, with per-phase traces (~4 min).
- ``python -m benchmarks.cold_load``: a fresh process to vgg16's first logits,
  vgg_keras against keras.applications (~1 min).
- ``python -m benchmarks.backends``: images/s on every Keras backend (TensorFlow
  direct, ``predict`` and XLA; JAX ``jit``; torch) in fp32, ``mixed_bfloat16``
  and ``mixed_float16``, at batch 1 and 8, against torch eager and its
  autocast, and the peak RSS of ``VGG16(weights=PATH)`` per backend.

Run alone (not by ``python -m benchmarks``): ``python -m benchmarks.export_speed``
(exported SavedModel and TFLite files), ``python -m benchmarks.onnx_export``
(peak RSS of ``parity.export --format onnx`` for vgg16 against its imports and
weights; onnxruntime beside torch eager at batch 1 and 8, ~5 min), ``python -m benchmarks.runtimes``
(torch eager, TensorFlow XLA, onnxruntime, OpenVINO's runtime on the IR and Keras' OpenVINO backend at
batch 1 and 8, each in a fresh process in turn, ~10 min), ``python -m benchmarks.tflite_peers``
(the project's TFLite files beside litert-torch's and onnx2tf's: build time and
memory from a ``.pth``, ops, speed at batch 1, 4 and 8; the peers are installed
in throwaway environments, ~15 min), ``python -m benchmarks.bf16`` (Keras
``mixed_bfloat16`` under XLA beside fp32 and torch's bf16 autocast),
``python -m benchmarks.train_speed`` (training steps of the CIFAR-10 recipe) and
``python -m benchmarks.input_checks`` (vgg16 with and without the run-time
input checks and the NaN mask, ~8 min).

Shared machinery: :mod:`benchmarks.harness` (timing, rounds, load recording,
statistics, the command line, tables), :mod:`benchmarks.children` (one-shot
child processes, measured or not), :mod:`benchmarks.cpu` (CPU name and peak),
:mod:`benchmarks.workers` (the throughput worker processes).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from benchmarks import backends, cold_load, conversion_memory, inference_speed

BENCHMARKS = {
    "inference_speed": inference_speed.main,
    "conversion_memory": conversion_memory.main,
    "cold_load": cold_load.main,
    "backends": backends.main,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs every benchmark (``--quick`` passes on), or lists them with ``--list``.

    Args:
        argv: ``[--list] [--quick]``.

    Returns:
        Exit code: the first non-zero one of the benchmarks, else 0.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if "--list" in args or "-h" in args or "--help" in args:
        print(__doc__)
        return 0
    unknown = [a for a in args if a != "--quick"]
    if unknown:
        print(
            "error: python -m benchmarks takes --quick or --list; run a module for its options. "
            f"Received: {' '.join(unknown)}",
            file=sys.stderr,
        )
        return 2
    for name, run in BENCHMARKS.items():
        print(f"## {name}\n", flush=True)
        code = run(args)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())

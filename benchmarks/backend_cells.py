"""The worker of :mod:`benchmarks.backends`: one process holds one framework's cells.

``python -m benchmarks.backend_cells GROUP ARCH PRECISION...`` builds the
cells of ``GROUP`` (:data:`GROUPS`) for ``ARCH`` on random weights (every
tensor random, seed 0), prints one JSON line naming them, then answers
requests on stdin, one JSON object a line: ``{"cell", "batch", "calls"}`` ->
``{"s_per_call", "cpu_s"}``. The first request for a (cell, batch) runs the
cell twice untimed first (tracing, compilation, allocator). ``cpu_s`` is the
worker's own CPU time over the timed calls, so the parent can tell the CPU
other processes took meanwhile.

Each cell takes the input as its user would hand it over: torch a tensor,
Keras a NumPy batch in the model's ``image_data_format`` (``channels_last``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np

#: Worker group -> (KERAS_BACKEND or "" for plain torch, TF_ENABLE_ONEDNN_OPTS or "").
GROUPS: dict[str, tuple[str, str]] = {
    "torch": ("", ""),
    "keras-torch": ("torch", ""),
    "keras-jax": ("jax", ""),
    "keras-tensorflow": ("tensorflow", ""),
    "keras-tensorflow-onednn-off": ("tensorflow", "0"),
}

#: Keras dtype policy of each precision.
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}

Cell = Callable[[int], object]


def _state(arch: str) -> dict[str, np.ndarray]:
    from parity.convert.random_weights import randomized_state_dict
    from parity.core.config import PRESETS

    return randomized_state_dict(PRESETS[arch], seed=0)


def _batch(batch: int, nchw: bool) -> np.ndarray:
    x = np.random.default_rng(1).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    return x if nchw else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def torch_cells(arch: str, precisions: list[str]) -> dict[str, Cell]:
    """torchvision's model in eager mode: the reference, and its channels_last memory format and autocast."""
    import torch
    import torchvision

    model = torchvision.models.get_model(arch, weights=None, init_weights=False).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in _state(arch).items()})
    last = torchvision.models.get_model(arch, weights=None, init_weights=False).eval()
    last.load_state_dict(model.state_dict())
    last = last.to(memory_format=torch.channels_last)

    def run(m: torch.nn.Module, dtype: torch.dtype | None, memory: torch.memory_format) -> Cell:
        def cell(batch: int) -> object:
            x = torch.from_numpy(_batch(batch, nchw=True)).contiguous(memory_format=memory)
            with torch.no_grad(), torch.autocast("cpu", dtype or torch.bfloat16, enabled=dtype is not None):
                return m(x).float().numpy()

        return cell

    cells = {}
    if "fp32" in precisions:
        cells["torch eager fp32"] = run(model, None, torch.contiguous_format)
        cells["torch eager fp32, channels_last memory"] = run(last, None, torch.channels_last)
        cells["torch fp32, torch.compile"] = run(torch.compile(model), None, torch.contiguous_format)
    if "bf16" in precisions:
        cells["torch eager bf16 autocast"] = run(model, torch.bfloat16, torch.contiguous_format)
    if "fp16" in precisions:
        cells["torch eager fp16 autocast"] = run(model, torch.float16, torch.contiguous_format)
    return cells


def _keras_model(arch: str, policy: str) -> object:
    import keras

    import vgg_keras
    from parity.convert.weight_arrays import assign_keras_weights, convert_state_dict
    from parity.core.config import PRESETS

    keras.config.set_dtype_policy(policy)
    try:
        model = vgg_keras.build_vgg(PRESETS[arch], classifier_activation=None)
    finally:
        keras.config.set_dtype_policy("float32")
    assign_keras_weights(model, convert_state_dict(_state(arch), PRESETS[arch]))
    return model


def keras_cells(backend: str, arch: str, precisions: list[str], label: str = "") -> dict[str, Cell]:
    """vgg_keras on one backend: ``predict_on_batch`` everywhere; the direct call on JAX (one ``jax.jit``) and
    TensorFlow (a traced graph, and op by op with ``run_eagerly``); XLA on TensorFlow."""
    cells = {}
    for precision in precisions:
        model = _keras_model(arch, POLICIES[precision])
        name = f"keras {backend}{label} {precision}"
        cells[f"{name}, predict_on_batch"] = _predict(model)
        if backend == "torch":
            cells[f"{name}, call under inference_mode"] = _torch_call(model)
            compiled = _keras_model(arch, POLICIES[precision])
            compiled.compile(jit_compile=True)  # Keras' torch trainer wraps its predict step in torch.compile
            cells[f"{name}, predict_on_batch, torch.compile"] = _predict(compiled)
        if backend == "jax":
            cells[f"{name}, direct call"] = _call(model)
        if backend == "tensorflow":
            cells[f"{name}, direct call"] = _call(model)
            eager = _keras_model(arch, POLICIES[precision])
            eager.run_eagerly = True  # op by op, as Keras' own functional model calls it
            cells[f"{name}, direct call, run_eagerly"] = _call(eager)
            cells[f"{name}, XLA"] = _tf_xla(model)
    return cells


def _predict(model: object) -> Cell:
    import keras

    return lambda batch: keras.ops.convert_to_numpy(model.predict_on_batch(_batch(batch, nchw=False)))


def _torch_call(model: object) -> Cell:
    import torch

    def cell(batch: int) -> object:
        with torch.inference_mode():
            return model(_batch(batch, nchw=False), training=False).float().numpy()

    return cell


def _call(model: object) -> Cell:
    return lambda batch: np.asarray(model(_batch(batch, nchw=False), training=False))


def _tf_xla(model: object) -> Cell:
    import tensorflow as tf

    fn = tf.function(lambda t: tf.cast(model(t, training=False), tf.float32), jit_compile=True)
    return lambda batch: fn(tf.constant(_batch(batch, nchw=False))).numpy()


def build(group: str, arch: str, precisions: list[str]) -> dict[str, Cell]:
    """The cells of one worker group."""
    if group == "torch":
        return torch_cells(arch, precisions)
    backend, onednn = GROUPS[group]
    return keras_cells(backend, arch, precisions, label=" (oneDNN off)" if onednn == "0" else "")


def serve(cells: dict[str, Cell]) -> None:
    """Answers timing requests on stdin until it closes."""
    warm: set[tuple[str, int]] = set()
    print(json.dumps({"cells": list(cells)}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        cell, batch, calls = cells[request["cell"]], int(request["batch"]), int(request["calls"])
        if (request["cell"], batch) not in warm:
            cell(batch)
            cell(batch)
            warm.add((request["cell"], batch))
        cpu0, t0 = time.process_time(), time.perf_counter()
        for _ in range(calls):
            cell(batch)
        wall = time.perf_counter() - t0
        print(json.dumps({"s_per_call": wall / calls, "wall_s": wall, "cpu_s": time.process_time() - cpu0}), flush=True)


if __name__ == "__main__":
    group, arch, *precisions = sys.argv[1:]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    serve(build(group, arch, precisions))

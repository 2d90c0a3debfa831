"""The GPU tier on Keras' JAX, torch and TensorFlow backends (one child process each).

``python -m parity.report.gpu`` turns TF32 off everywhere, then compares, for
all eight presets in both data formats: torch on the GPU against torch on the
CPU, Keras on the GPU against Keras on the CPU, and Keras on the GPU against
torch on the GPU. Skips cleanly where torch or the backend sees no GPU (the
TensorFlow case needs ``uv run --extra gpu``). With ``PARITY_GPU_RESULTS=DIR``
the measured figures are copied there as ``gpu_<backend>.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch

import pytest

from parity.report.gpu import GPU_RTOL, NO_GPU_EXIT
from tests.conftest import run_python


@pytest.mark.gpu
@pytest.mark.full
@pytest.mark.parametrize("backend", ["jax", "torch", "tensorflow"])
def test_gpu_tier(backend: str, tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"Keras' {backend} backend needs {backend}, which is not installed here")
    out = tmp_path / f"gpu_{backend}.json"
    env = {"KERAS_BACKEND": backend, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    result = run_python("", "-m", "parity.report.gpu", "--json", os.fspath(out), env=env, timeout=1200)
    if result.returncode == NO_GPU_EXIT:
        pytest.skip(result.stderr.strip().splitlines()[-1])
    if os.environ.get("PARITY_GPU_RESULTS") and out.exists():
        shutil.copy(out, Path(os.environ["PARITY_GPU_RESULTS"]) / out.name)
    assert out.exists(), result.stderr[-3000:]
    data = json.loads(out.read_text())
    failed = [c for c in data["cases"] if not c["passed"]]
    assert result.returncode == 0 and not failed, (GPU_RTOL, failed, result.stderr[-2000:])
    assert len(data["cases"]) == 16

"""Shared fixtures.

torch and torchvision are imported here, before anything imports TensorFlow:
importing torchvision (which pulls in triton on CUDA builds of torch) after
TensorFlow crashes the interpreter (tensorflow/tensorflow#124205). Tests of the
other order, and of code that must run without torch, use subprocesses.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import torch  # noqa: E402  (must precede TensorFlow)
import torchvision  # noqa: E402,F401

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from parity.core.config import PRESETS, VGGConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: Tiny configs for the fast tier: a few channels, 32x32 inputs.
TINY = VGGConfig(stages=((4,), (8, 8), (8,)), hidden=(16, 16), num_classes=7, pool_size=(2, 2), name="tiny")
TINY_BN = TINY.replace(batch_norm=True, name="tiny_bn")
#: CIFAR-style: no adaptive pool, 3 stages on 32x32 flatten a 4x4 map, 10 classes, one linear layer.
CIFAR = VGGConfig(
    stages=((8, 8), (16, 16), (16,)),
    batch_norm=True,
    pool_size=None,
    input_size=(32, 32),
    hidden=(),
    num_classes=10,
    name="cifar",
)
TINY_CONFIGS = {"tiny": TINY, "tiny_bn": TINY_BN, "cifar": CIFAR}


#: The presets whose full-size cases are in the default run: one with batch norm, the cheapest, and the
#: README's model. Every other preset's full-size case is in the extended tier.
DEFAULT_PRESETS = ("vgg11_bn", "vgg16")


def preset_params(
    presets: Iterable[str] = PRESETS,
    *,
    default: Iterable[str] = DEFAULT_PRESETS,
    marks: Sequence[pytest.MarkDecorator] = (),
) -> list[object]:
    """Presets as pytest params: those outside ``default`` are also marked ``extended``.

    Args:
        presets: The presets to parametrize over.
        default: The presets kept in the default run.
        marks: Marks for every param (``pytest.mark.full`` for full-size cases).
    """
    keep = set(default)
    return [pytest.param(a, id=a, marks=[*marks, *(() if a in keep else (pytest.mark.extended,))]) for a in presets]


#: Markers that keep a test out of the quick tier.
NOT_QUICK = ("full", "slow", "extended")


@pytest.hookimpl(tryfirst=True)  # before -m selects, so that -m quick sees the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks ``quick`` every test that is neither ``full``, ``slow`` nor ``extended``."""
    for item in items:
        if not any(item.get_closest_marker(name) for name in NOT_QUICK):
            item.add_marker(pytest.mark.quick)


@pytest.fixture(autouse=True)
def _isolated_keras_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own Keras cache and torch hub cache."""
    home = tmp_path_factory.mktemp("keras_home")
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    yield home


@pytest.fixture(autouse=True)
def _release_full_size_models(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a full-size test, frees its models now rather than at some later garbage collection.

    A Keras model and its traced functions refer to each other, so only the
    cycle collector frees them, and it runs on counts of Python objects, not
    on bytes: without this, dozens of 0.5 GB models pile up over the suite.
    """
    yield
    if request.node.get_closest_marker("full") is not None:
        keras.backend.clear_session()
        gc.collect()


@pytest.fixture(autouse=True)
def _channels_last() -> Iterator[None]:
    keras.config.set_image_data_format("channels_last")
    yield
    keras.config.set_image_data_format("channels_last")


def run_python(
    code: str, *args: str, env: dict[str, str] | None = None, unset: Sequence[str] = (), timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Runs Python code in a fresh interpreter of this venv, from the repo root.

    ``env`` adds to this process's environment; ``unset`` names variables the child must not inherit.
    """
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def child_result(script: str, backend: str, config: VGGConfig) -> dict:
    """Runs ``script`` on Keras' ``backend`` with ``config`` in ``$CONFIG``; its ``RESULT {json}`` line, parsed."""
    result = run_python(script, env={"KERAS_BACKEND": backend, "CONFIG": json.dumps(config.to_dict())})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.split("RESULT ", 1)[1])


#: A stand-in ``tensorflow`` package put first on a child's path: importing
#: it records the attempt in a file and fails, so the child proves that nothing
#: it runs needs TensorFlow, not merely that nothing it ran happened to import it.
_TENSORFLOW_BLOCKER = """
import os, traceback
with open(os.environ["TF_IMPORT_LOG"], "a") as f:
    f.write("".join(traceback.format_stack(limit=8)) + "\\n")
raise ImportError("TensorFlow is blocked in this process")
"""


def tensorflow_blocked(folder: Path) -> tuple[dict[str, str], Path]:
    """The environment of a child in which importing TensorFlow fails, and the file each attempt is logged to."""
    blocker = folder / "blocker" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(_TENSORFLOW_BLOCKER)
    log = folder / "tensorflow_imports.log"
    path = os.pathsep.join([os.fspath(blocker.parent), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path, "TF_IMPORT_LOG": os.fspath(log)}, log


def tensorflow_has_nchw_cpu_kernels() -> bool:
    """Whether TensorFlow can run an NCHW convolution on the CPU.

    It can with oneDNN, which TensorFlow turns on by default only on CPUs with
    AVX-512 VNNI/BF16/AMX; ``TF_ENABLE_ONEDNN_OPTS=0`` turns it off anywhere.
    """
    import tensorflow as tf

    try:
        with tf.device("/CPU:0"):
            tf.nn.conv2d(tf.zeros((1, 1, 2, 2)), tf.zeros((1, 1, 1, 1)), 1, "SAME", data_format="NCHW")
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        return False
    return True


def torch_state_dict(np_state: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """numpy state dict -> torch tensors (copies)."""
    return {k: torch.from_numpy(np.array(v)) for k, v in np_state.items()}

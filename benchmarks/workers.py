"""Worker processes for the throughput rounds: one framework per process, driven over JSON lines.

:class:`Worker` starts ``python benchmarks/workers.py --serve KIND OPTS``;
the child builds its models (:class:`_TorchWorker`: torchvision eager;
:class:`_KerasWorker`: vgg_keras and keras.applications on TensorFlow) and
answers ``prepare``, ``measure``, ``gemm`` and ``quit`` requests, one JSON
line each way. The reply channel is a duplicate of the original stdout, so
library output cannot corrupt the protocol.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import SIZE, timed

__all__ = ["Worker", "WorkerSpec"]


class _TorchWorker:
    """torchvision models in eager mode."""

    def __init__(self, opts: dict[str, Any]) -> None:
        import torch
        import torchvision

        self.torch = torch
        if opts.get("threads"):
            torch.set_num_threads(int(opts["threads"]))
        self.channels_last = bool(opts.get("channels_last"))
        torch.manual_seed(0)
        self.models: dict[str, Any] = {}
        for name in opts["models"]:
            model = getattr(torchvision.models, name)(weights=None).eval()
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            self.models[name] = model
        self.inputs: dict[int, Any] = {}
        self.info = {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "parallel_backend": "OpenMP" if "OpenMP" in torch.__config__.parallel_info() else "other",
            "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "channels_last": self.channels_last,
        }

    def _input(self, batch: int) -> Any:
        """A fixed random NCHW batch (channels_last strides if asked), made once per size."""
        if batch not in self.inputs:
            gen = self.torch.Generator().manual_seed(batch)
            x = self.torch.randn(batch, 3, SIZE, SIZE, generator=gen)
            if self.channels_last:
                x = x.contiguous(memory_format=self.torch.channels_last)
            self.inputs[batch] = x
        return self.inputs[batch]

    def call(self, model: str, batch: int, path: str, steps: int) -> tuple[Callable[[], object], int]:
        """The work of one sample.

        Args:
            model: A torchvision model name this worker built.
            batch: Batch size.
            path: Only ``"eager"``.
            steps: Batches per sample.

        Returns:
            A function running one forward pass under ``torch.no_grad`` and how many times to call it.

        Raises:
            ValueError: On another path.
        """
        if path != "eager":
            raise ValueError(f"torch worker runs path 'eager'. Received: path={path!r}")
        m, x, torch = self.models[model], self._input(batch), self.torch

        def fn() -> object:
            with torch.no_grad():
                return m(x)

        return fn, steps

    def gemm(self, n: int) -> Callable[[], object]:
        """Returns a function computing one square fp32 matmul of side ``n``."""
        a = self.torch.randn(n, n)
        b = self.torch.randn(n, n)
        return lambda: self.torch.mm(a, b)


class _KerasWorker:
    """vgg_keras and keras.applications models on the TensorFlow backend."""

    def __init__(self, opts: dict[str, Any]) -> None:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import numpy as np
        import tensorflow as tf

        if opts.get("threads"):
            tf.config.threading.set_intra_op_parallelism_threads(int(opts["threads"]))
            tf.config.threading.set_inter_op_parallelism_threads(int(opts["threads"]))
        import keras

        import vgg_keras
        from vgg_keras.checks import without_checks

        self.np, self.tf = np, tf
        keras.utils.set_random_seed(0)
        builders: dict[str, Callable[[], Any]] = {
            "vgg16": lambda: vgg_keras.VGG16(weights=None, classifier_activation=None),
            "vgg11_bn": lambda: vgg_keras.VGG11_BN(weights=None, classifier_activation=None),
            "apps_vgg16": lambda: keras.applications.VGG16(weights=None, classifier_activation=None),
            "vgg16_without_checks": lambda: without_checks(vgg_keras.VGG16(weights=None, classifier_activation=None)),
        }
        self.models = {name: builders[name]() for name in opts["models"]}
        self.compiled: dict[tuple[str, bool], Any] = {}
        self.inputs: dict[int, Any] = {}
        self.arrays: dict[tuple[int, int], Any] = {}
        try:
            from tensorflow.python.util import _pywrap_util_port

            onednn = bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):
            onednn = None
        self.info = {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "onednn": onednn,
            "data_format": keras.config.image_data_format(),
        }

    def _array(self, batch: int, copies: int = 1) -> Any:
        """A fixed random NHWC numpy array of ``batch * copies`` images, made once."""
        key = (batch, copies)
        if key not in self.arrays:
            rng = self.np.random.default_rng(batch)
            self.arrays[key] = rng.standard_normal((batch * copies, SIZE, SIZE, 3), dtype=self.np.float32)
        return self.arrays[key]

    def _input(self, batch: int) -> Any:
        """The same batch as a TensorFlow tensor, so calls do not convert it each time."""
        if batch not in self.inputs:
            self.inputs[batch] = self.tf.constant(self._array(batch))
        return self.inputs[batch]

    def _function(self, model: str, jit: bool) -> Any:
        """``tf.function`` of the inference call, with or without XLA, made once per model."""
        key = (model, jit)
        if key not in self.compiled:
            m = self.models[model]
            self.compiled[key] = self.tf.function(lambda t: m(t, training=False), jit_compile=jit)
        return self.compiled[key]

    def call(self, model: str, batch: int, path: str, steps: int) -> tuple[Callable[[], object], int]:
        """The work of one sample.

        ``predict`` runs once over ``steps`` batches (its per-call set-up is
        part of what it costs); the other paths run ``steps`` single-batch calls.

        Args:
            model: ``"vgg16"``, ``"vgg11_bn"`` or ``"apps_vgg16"``.
            batch: Batch size.
            path: ``"direct"``, ``"predict"``, ``"xla"`` or ``"graph"``.
            steps: Batches per sample.

        Returns:
            A function and how many times to call it.

        Raises:
            ValueError: On an unknown path.
        """
        np, m = self.np, self.models[model]
        if path == "direct":
            x = self._input(batch)
            return (lambda: np.asarray(m(x, training=False))), steps
        if path == "predict":
            xs = self._array(batch, steps)
            return (lambda: m.predict(xs, batch_size=batch, verbose=0)), 1
        if path in ("xla", "graph"):
            f, x = self._function(model, path == "xla"), self._input(batch)
            return (lambda: np.asarray(f(x))), steps
        raise ValueError(f"keras worker runs direct, predict, xla or graph. Received: path={path!r}")

    def gemm(self, n: int) -> Callable[[], object]:
        """Returns a function computing one square fp32 matmul of side ``n``."""
        a = self.tf.random.normal((n, n))
        b = self.tf.random.normal((n, n))
        return lambda: self.np.asarray(self.tf.linalg.matmul(a, b))


def _serve(kind: str, opts: dict[str, Any]) -> None:
    """Worker main loop: one JSON request per stdin line, one JSON reply per line.

    The reply channel is a duplicate of the original stdout; file descriptor 1
    is pointed at stderr so that library output cannot corrupt the protocol.
    """
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    t0 = time.perf_counter()
    try:
        worker: Any = _TorchWorker(opts) if kind == "torch" else _KerasWorker(opts)
        hello = {"ok": True, "info": worker.info, "setup_s": time.perf_counter() - t0}
    except Exception:
        replies.write(json.dumps({"ok": False, "error": traceback.format_exc()}) + "\n")
        return
    replies.write(json.dumps(hello) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        try:
            if op == "quit":
                replies.write(json.dumps({"ok": True}) + "\n")
                return
            if op == "prepare":
                fn, _ = worker.call(request["model"], request["batch"], request["path"], 1)
                t = time.perf_counter()
                fn()  # tracing, XLA compilation, oneDNN primitive creation
                first = time.perf_counter() - t
                warm = min(timed(fn, 1)["wall"] for _ in range(2))
                steps = max(1, round(request["target_s"] / warm))
                reply: dict[str, Any] = {"first_call_s": first, "warm_s": warm, "steps": steps}
                if request["path"] == "predict":  # warm the multi-batch input too
                    fn, calls = worker.call(request["model"], request["batch"], "predict", steps)
                    timed(fn, calls)
            elif op == "measure":
                fn, calls = worker.call(request["model"], request["batch"], request["path"], request["steps"])
                reply = timed(fn, calls)
                reply["images"] = request["batch"] * request["steps"]
            elif op == "gemm":
                fn = worker.gemm(request["n"])
                fn()
                reply = timed(fn, request["reps"])
                reply["gflops"] = 2 * request["n"] ** 3 * request["reps"] / reply["wall"] / 1e9
            else:
                raise ValueError(f"unknown op {op!r}")
            reply["ok"] = True
        except Exception:
            reply = {"ok": False, "error": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")


@dataclass
class WorkerSpec:
    """One worker process to start.

    Attributes:
        label: Name in tables, e.g. ``"torch eager"``.
        kind: ``"torch"`` or ``"keras"``.
        models: Models it builds.
        paths: Paths it measures on each (model, batch) cell.
        env: Extra environment variables.
        opts: Worker options (``threads``, ``channels_last``).
        baseline: Whether ratios are taken against this worker's samples.
    """

    label: str
    kind: str
    models: tuple[str, ...]
    paths: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    opts: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False


class Worker:
    """A running worker process."""

    def __init__(self, spec: WorkerSpec, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.spec = spec
        self.log = log
        opts = {**spec.opts, "models": list(spec.models)}
        self._err = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", spec.kind, "--serve-opts", json.dumps(opts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            cwd=cwd,
            env={**env, **spec.env},
            text=True,
        )
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"worker {self.spec.label!r} exited (code {self.proc.returncode}); its log ends:\n{tail}"
            )
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"worker {self.spec.label!r} failed:\n{reply.get('error')}")
        return reply

    def request(self, **request: Any) -> dict[str, Any]:
        """Sends one request and waits for its reply."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """Asks the worker to exit and reaps it."""
        try:
            if self.proc.poll() is None:
                self.request(op="quit")
        except (RuntimeError, BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        _serve(sys.argv[2], json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
    else:
        raise SystemExit("usage: workers.py --serve torch|keras --serve-opts JSON (started by benchmarks.harness)")

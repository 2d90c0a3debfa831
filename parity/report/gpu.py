"""``python -m parity.report.gpu``: the GPU tier, on this process's Keras backend.

For each preset, the same random weights (every tensor random, batch-norm
statistics included) go into torchvision's model on the CPU and on the GPU, and
into a vgg_keras model on the CPU and on the GPU. Three comparisons per preset
and data format, on one 224x224 batch:

* torch on the GPU against torch on the CPU;
* Keras on the GPU against Keras on the CPU;
* Keras on the GPU against torch on the GPU (eager call and ``predict``).

TF32 is turned off in every framework before anything runs (torch's matmul and
cuDNN flags, JAX's default matmul precision, TensorFlow's TF32 switch): with
TF32 a GPU result differs from the CPU's by 1e-3, not 1e-6. A process holds one
Keras backend, so run it once per backend (``KERAS_BACKEND=jax``, ``torch``,
``tensorflow``); TensorFlow needs the ``gpu`` extra to see a GPU.

Exit status: 0 when every comparison is within :data:`GPU_RTOL`, 1 otherwise,
3 when torch or the Keras backend sees no GPU (nothing was compared).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parity.cli import log
from parity.core.config import PRESETS
from parity.machine import package_versions

__all__ = ["GPU_RTOL", "NO_GPU_EXIT", "backend_sees_gpu", "disable_tf32", "main", "run"]

#: GPU against CPU and Keras-GPU against torch-GPU, relative to max |logit|,
#: TF32 off: cuDNN and XLA pick other convolution algorithms than the CPU's
#: direct ones (implicit GEMM, Winograd, FFT), whose fp32 rounding differs
#: more than two CPU libraries do; measured on an H200 in docs/gpu.md.
GPU_RTOL = 1e-4
#: Exit status when no GPU is visible: the caller skips, it does not fail.
NO_GPU_EXIT = 3


def disable_tf32(backend: str) -> None:
    """Turns TF32 off in torch and in the Keras backend's framework.

    Args:
        backend: ``"jax"``, ``"torch"`` or ``"tensorflow"``.
    """
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.set_float32_matmul_precision("highest")
    if backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)


def backend_sees_gpu(backend: str) -> bool:
    """Whether torch and the Keras backend's framework both see a CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        return False
    if backend == "jax":
        import jax

        try:
            return bool(jax.devices("gpu"))
        except RuntimeError:
            return False
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return True


def _keras_model(arch: str, state: dict[str, np.ndarray], device: str) -> object:
    """A vgg_keras model ending in logits, its variables on ``device``, with ``state`` assigned."""
    import keras

    import vgg_keras
    from parity.convert.weight_arrays import assign_keras_weights, convert_state_dict

    config = PRESETS[arch]
    with keras.device(device):
        model = vgg_keras.build_vgg(config, classifier_activation=None)
        assign_keras_weights(model, convert_state_dict(state, config))
    return model


def _keras_cpu_logits(arch: str, state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray | str:
    """The Keras model's logits computed on the CPU in this process, or why that cannot run here.

    Keras 3.15's torch backend fails to create integer variables (dropout's
    seed state) inside ``keras.device("cpu")``; on that backend the CPU side
    is then reported as unavailable and the GPU is compared with torch's CPU
    result instead (``keras_gpu_vs_torch_cpu``), which the CPU suite ties to
    Keras' CPU result.
    """
    import keras

    from parity.compare import keras_forward

    try:
        model = _keras_model(arch, state, "cpu")
        with keras.device("cpu"):
            return keras_forward(model, x)["logits"]
    except RuntimeError as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|."""
    return float(np.max(np.abs(a.astype(np.float64) - b)) / np.max(np.abs(b)))


def run(
    archs: Sequence[str],
    data_formats: Sequence[str] = ("channels_last",),
    size: int = 224,
    batch: int = 2,
    seed: int = 0,
    speed_arch: str | None = "vgg16",
    speed_batch: int = 64,
) -> dict[str, object]:
    """Runs the comparisons on this process's backend; the GPU must be visible.

    Args:
        archs: Preset names.
        data_formats: Keras data formats to build.
        size: Input height and width.
        batch: Images per comparison.
        seed: Seed of the weights and inputs.
        speed_arch: Preset whose GPU throughput is also timed (``None``: none).
        speed_batch: Batch size of the throughput run.

    Returns:
        A JSON-ready dict: backend, versions, device names, one case per
        (preset, data format), and the throughput figures.
    """
    import torch
    import torchvision  # noqa: F401  (before Keras: torchvision after TensorFlow crashes)

    import keras

    from parity.convert.random_weights import randomized_state_dict

    backend = keras.backend.backend()
    disable_tf32(backend)
    cases = []
    for arch in archs:
        state = randomized_state_dict(PRESETS[arch], seed)
        x = np.random.default_rng(seed + 1).standard_normal((batch, 3, size, size), dtype=np.float32)
        torch_cpu, torch_gpu = _torch_logits(arch, state, x)
        for data_format in data_formats:
            keras.config.set_image_data_format(data_format)
            started = time.perf_counter()
            case = _keras_case(arch, data_format, state, x, torch_cpu, torch_gpu)
            cases.append(case)
            log(
                f"{backend} {arch:<9} {data_format:<14} "
                + " ".join(f"{k} {v:.2e}" for k, v in case.items() if "_vs_" in k)
                + f" ({time.perf_counter() - started:.1f} s)",
                quiet=False,
            )
    keras.config.set_image_data_format("channels_last")
    result: dict[str, object] = {
        "backend": backend,
        "rtol": GPU_RTOL,
        "size": size,
        "batch": batch,
        "gpu": torch.cuda.get_device_name(0),
        "versions": package_versions(),
        "cases": cases,
    }
    if speed_arch is not None:
        result["speed"] = _throughput(speed_arch, speed_batch, seed)
    return result


def _torch_logits(arch: str, state: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's logits for ``x`` with ``state`` loaded, on the CPU and on the GPU.

    Args:
        arch: Preset name.
        state: The weights, torchvision layout.
        x: The batch, NCHW.

    Returns:
        ``(CPU logits, GPU logits)``.
    """
    import torch
    import torchvision

    from parity.compare import torch_forward

    reference = torchvision.models.get_model(arch, weights=None, init_weights=False).eval()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    torch_cpu = torch_forward(reference, x)["logits"]
    with torch.no_grad():
        torch_gpu = reference.cuda()(torch.from_numpy(x).cuda()).cpu().numpy()
    return torch_cpu, torch_gpu


def _keras_case(
    arch: str,
    data_format: str,
    state: dict[str, np.ndarray],
    x: np.ndarray,
    torch_cpu: np.ndarray,
    torch_gpu: np.ndarray,
) -> dict[str, object]:
    """Runs the Keras model on the GPU (eager call and ``predict``) and the CPU, and compares it with torch.

    Args:
        arch: Preset name.
        data_format: The Keras data format the model is built in (already set).
        state: The weights, torchvision layout.
        x: The batch, NCHW.
        torch_cpu: torch's logits on the CPU.
        torch_gpu: torch's logits on the GPU.

    Returns:
        The case: every ``*_vs_*`` relative difference, whether top-1 agrees,
        and whether it passed.
    """
    import keras

    from parity.compare import keras_forward

    gpu_model = _keras_model(arch, state, "gpu:0")
    keras_gpu = keras_forward(gpu_model, x)["logits"]
    keras_gpu_predict = keras_forward(gpu_model, x, mode="predict")["logits"]
    del gpu_model
    keras_cpu = _keras_cpu_logits(arch, state, x)
    keras.backend.clear_session()
    case: dict[str, object] = {
        "arch": arch,
        "data_format": data_format,
        "torch_gpu_vs_torch_cpu": _rel(torch_gpu, torch_cpu),
        "keras_gpu_vs_torch_gpu": _rel(keras_gpu, torch_gpu),
        "keras_gpu_predict_vs_torch_gpu": _rel(keras_gpu_predict, torch_gpu),
        "keras_gpu_vs_torch_cpu": _rel(keras_gpu, torch_cpu),
    }
    if isinstance(keras_cpu, str):
        case["keras_cpu_unavailable"] = keras_cpu
    else:
        case["keras_gpu_vs_keras_cpu"] = _rel(keras_gpu, keras_cpu)
        case["keras_cpu_vs_torch_cpu"] = _rel(keras_cpu, torch_cpu)
    case["top1_agrees"] = bool(np.array_equal(np.argmax(keras_gpu, -1), np.argmax(torch_gpu, -1)))
    rels = [float(v) for k, v in case.items() if "_vs_" in k]  # type: ignore[arg-type]
    case["passed"] = bool(case["top1_agrees"] and max(rels) <= GPU_RTOL)
    return case


def _throughput(arch: str, batch: int, seed: int) -> dict[str, object]:
    """Images per second on the GPU at 224x224, fp32 (TF32 off): torch eager, Keras ``predict`` and eager call."""
    import torch
    import torchvision

    import keras

    from parity.convert.random_weights import randomized_state_dict

    state = randomized_state_dict(PRESETS[arch], seed)
    x = np.random.default_rng(seed).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    reference = torchvision.models.get_model(arch, weights=None, init_weights=False).eval().cuda()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    xt = torch.from_numpy(x).cuda()

    def torch_step() -> None:
        with torch.no_grad():
            reference(xt)
        torch.cuda.synchronize()

    keras.config.set_image_data_format("channels_last")
    model = _keras_model(arch, state, "gpu:0")
    xk = np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def keras_predict() -> None:
        model.predict(xk, batch_size=batch, verbose=0)

    def keras_call() -> None:
        keras.ops.convert_to_numpy(model(xk, training=False))

    figures = {}
    for name, step in (("torch_eager", torch_step), ("keras_predict", keras_predict), ("keras_call", keras_call)):
        for _ in range(3):  # warm-up: compilation, autotuning, allocator
            step()
        times = []
        for _ in range(5):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        figures[name] = batch / float(np.median(times))
    return {"arch": arch, "batch": batch, "images_per_s": figures}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``python -m parity.report.gpu``.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        0 if every comparison is within tolerance, 1 otherwise, 2 on bad
        input, 3 without a GPU.

    Examples:
        >>> from parity.report.gpu import main
        >>> main(["vgg11", "--data-format", "channels_last", "--no-speed", "--json", "gpu.json"])  # doctest: +SKIP
        0
    """
    parser = argparse.ArgumentParser(prog="python -m parity.report.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("archs", nargs="*", metavar="ARCH", help="presets (default: all eight)")
    parser.add_argument("--data-format", nargs="+", default=["channels_last", "channels_first"], dest="data_formats",
                        choices=["channels_last", "channels_first"])  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--no-speed", action="store_true", help="skip the throughput figures")
    args = parser.parse_args(argv)
    unknown = [a for a in args.archs if a not in PRESETS]
    if unknown:
        print(f"error: ARCH must be among {', '.join(PRESETS)}. Received: {' '.join(unknown)}", file=sys.stderr)
        return 2
    import torch  # noqa: F401  (before Keras: torchvision after TensorFlow crashes)
    import torchvision  # noqa: F401

    import keras

    backend = keras.backend.backend()
    if not backend_sees_gpu(backend):
        print(f"no CUDA GPU visible to torch and to Keras' {backend} backend: nothing compared", file=sys.stderr)
        return NO_GPU_EXIT
    result = run(args.archs or list(PRESETS), args.data_formats, speed_arch=None if args.no_speed else "vgg16")
    if args.json is not None:
        from parity.core.atomic import write_atomic

        write_atomic(args.json, json.dumps(result, indent=2))
    print(json.dumps(result.get("speed", {})))
    return 0 if all(c["passed"] for c in result["cases"]) else 1  # type: ignore[union-attr]


if __name__ == "__main__":
    sys.exit(main())

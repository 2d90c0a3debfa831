"""The TFLite graph ``parity.export`` writes: no weight transposed at run time, any batch, full-integer int8.

Small VGGs (narrow stages and classifier, every weight random, biases and
batch-norm statistics included) keep each conversion to seconds; the same
code writes the full-size files (tests/parity/export/test_cli.py and the
extended tier). Each file is run by LiteRT as deployed (XNNPACK) and
compared with the Keras model it was converted from, which the parity tests
compare with torch.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from parity.core.config import PRESETS
from parity.export import write as export_write
from parity.export.check import (
    TFLiteOp,
    constant_transposes,
    float_weight_ops,
    litert_interpreter,
    tflite_ops,
)

#: fp32 TFLite against the Keras model: the same arithmetic in another order (XNNPACK); a wrong row order or
#: pool fold gives 1e-1 or more.
FP32_RTOL = 1e-5
#: int8 against the float model on its own calibration inputs: 8 bits per weight and activation over 11 layers
#: (measured 1e-2 to 4e-2 at full size); a layer left unquantized or a wrong scale does not move this, a wrong
#: graph does (1 or more).
INT8_RTOL = 0.15

SMALL = PRESETS["vgg11_bn"].replace(
    stages=((8,), (16,), (16, 16), (32, 32), (32, 32)), hidden=(48, 40), num_classes=10, name="small"
)


def _small_model(size: int) -> keras.Model:
    """A small vgg11_bn with the top, every weight random (BN statistics and biases too), seed 0."""
    model = export_write.build_export_model(
        SMALL, include_top=True, data_format="channels_last", input_shape=(size, size)
    )
    rng = np.random.default_rng(0)
    for v in model.weights:
        shape = tuple(v.shape)
        if "moving_variance" in v.path or v.path.endswith("gamma"):
            v.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        else:
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 10
            v.assign((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32))
    return model


def _write(model: keras.Model, tmp_path: Path, quantize: str = "none", calibration: np.ndarray | None = None) -> Path:
    size = model.input.shape[1]
    data = export_write.tflite_bytes(model, tmp_path / "scratch", (None, size, size, 3), quantize, calibration)
    path = tmp_path / f"m_{quantize}.tflite"
    path.write_bytes(data)
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    """The file at batch ``len(x)``: resized, allocated and run by LiteRT with its default delegate (XNNPACK)."""
    interpreter = litert_interpreter(path, num_threads=2)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(x.shape), strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


@pytest.mark.parametrize("size", [32, 64, 224])  # adaptive pool folded into fc1 (1x1, 2x2), identity (7x7)
def test_fp32_file_has_no_constant_transpose_and_takes_batch_1_and_4(tmp_path: Path, size: int) -> None:
    model = _small_model(size)
    path = _write(model, tmp_path)
    ops = tflite_ops(path)
    assert constant_transposes(ops) == []
    assert [op.name for op in ops].count("FULLY_CONNECTED") == 3
    assert all(op.inputs[1][1] for op in ops if op.name == "FULLY_CONNECTED"), "every FC weight a constant"
    x = np.random.default_rng(1).standard_normal((4, size, size, 3)).astype(np.float32)
    ref = np.asarray(model(x, training=False))
    assert _rel(_run(path, x), ref) <= FP32_RTOL
    assert _rel(_run(path, x[:1]), ref[:1]) <= FP32_RTOL


def test_tiling_pool_becomes_an_average_pool(tmp_path: Path) -> None:
    """448 px: block 5 is 14 x 14, which the 7 x 7 adaptive pool tiles evenly."""
    model = _small_model(448)
    path = _write(model, tmp_path)
    assert "AVERAGE_POOL_2D" in [op.name for op in tflite_ops(path)]
    x = np.random.default_rng(2).standard_normal((2, 448, 448, 3)).astype(np.float32)
    assert _rel(_run(path, x), np.asarray(model(x, training=False))) <= FP32_RTOL


def test_int8_file_quantizes_every_weight_and_stays_within_its_bound(tmp_path: Path) -> None:
    model = _small_model(64)
    calibration = np.random.default_rng(3).standard_normal((16, 64, 64, 3)).astype(np.float32)
    path = _write(model, tmp_path, "int8", calibration)
    ops = tflite_ops(path)
    assert float_weight_ops(ops) == []
    assert constant_transposes(ops) == []
    assert [op.name for op in ops].count("FULLY_CONNECTED") == 3
    ref = np.asarray(model(calibration[:4], training=False))
    assert _rel(_run(path, calibration[:4]), ref) <= INT8_RTOL
    assert _rel(_run(path, calibration[:1]), ref[:1]) <= INT8_RTOL


def test_float_file_fails_the_int8_check(tmp_path: Path) -> None:
    """A file with fc1 (or any layer) in float is what float_weight_ops reports."""
    ops = tflite_ops(_write(_small_model(32), tmp_path))
    assert len(float_weight_ops(ops)) == 8 + 3  # 8 convolutions and 3 fully connected layers


def test_constant_transpose_check_bites() -> None:
    """The op list of the former export (fc1 transposed on every call) is what the check reports."""
    transposed = TFLiteOp("TRANSPOSE", (("FLOAT32", True, (25088, 4096)), ("INT32", True, (2,))))
    activation = TFLiteOp("TRANSPOSE", (("FLOAT32", False, (1, 3, 224, 224)), ("INT32", True, (4,))))
    assert constant_transposes([activation, transposed]) == [transposed]


def test_fixed_batch_file_refuses_another_batch(tmp_path: Path) -> None:
    """A file converted with a fixed batch fails the resize that every exported file passes."""
    model = _small_model(32)
    data = export_write.tflite_bytes(model, tmp_path / "scratch", (1, 32, 32, 3), "none")
    path = tmp_path / "fixed.tflite"
    path.write_bytes(data)
    with pytest.raises((RuntimeError, ValueError)):
        _run(path, np.zeros((4, 32, 32, 3), np.float32))

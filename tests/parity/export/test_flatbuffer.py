"""The fp32 TFLite file written from the layer plan (``parity.export.flatbuffer``), against torch itself.

Small VGGs (narrow stages and classifier; every tensor random, biases and
batch-norm statistics included) keep each case under a second; the same code
writes the full-size files (tests/parity/export/test_cli.py, the extended
tier). Each file is run by LiteRT as deployed (XNNPACK, resized to the batch)
and compared with ``vgg_torch`` on the same torchvision-layout weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

import numpy as np
import pytest

import parity.export.flatbuffer as flatbuffer
import parity.export.folding as folding
from parity.convert.random_weights import randomized_state_dict
from parity.convert.to_keras import torch_reference
from parity.core.config import PRESETS, RECIPES, VGGConfig
from parity.export.check import constant_transposes, litert_interpreter, tflite_ops

#: fp32 file against torch: the same arithmetic in another order (XNNPACK), with batch norm folded in float64
#: (measured <= 4e-6 at full size); a wrong flatten order, pool fold or BN epsilon gives 1e-3 or more.
FP32_RTOL = 1e-5

SMALL = PRESETS["vgg11_bn"].replace(
    stages=((8,), (16,), (16, 16), (32, 32), (32, 32)), hidden=(48, 40), num_classes=10, name="small"
)
SMALL_PLAIN = SMALL.replace(batch_norm=False, name="small_plain")
#: The CIFAR recipe's shape without an adaptive pool (fc1 reads the 4x4 map directly), narrowed.
SMALL_CIFAR = RECIPES["cifar10_vgg16"].replace(
    stages=((8, 8), (16, 16), (16, 16, 16)), hidden=(24, 24), name="small_cifar"
)


def _write(tmp_path: Path, config: VGGConfig, size: tuple[int, int], *, top: bool = True, fmt: str = "channels_last"):
    state = randomized_state_dict(config, seed=0, include_top=top)
    path = tmp_path / "m.tflite"
    flatbuffer.write_tflite(path, config, state, include_top=top, data_format=fmt, size=size)
    return path, state


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    """The file at batch ``len(x)``: resized, allocated and run by LiteRT with its default delegate (XNNPACK)."""
    interpreter = litert_interpreter(path, num_threads=2)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(x.shape), strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, np.ascontiguousarray(x))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def _check_against_torch(path: Path, state: dict, config: VGGConfig, size, *, top: bool = True, fmt="channels_last"):
    x = np.random.default_rng(1).standard_normal((4, config.in_channels, *size), dtype=np.float32)
    ref = torch_reference(state, config, x, top)
    ref = ref["logits"] if top else ref[f"block{len(config.stages)}"]
    feed = x if fmt == "channels_first" else x.transpose(0, 2, 3, 1)
    for batch in (4, 1):
        got = _run(path, feed[:batch])
        if not top and fmt == "channels_last":
            got = got.transpose(0, 3, 1, 2)
        assert _rel(got, ref[:batch]) <= FP32_RTOL, f"batch {batch}"


@pytest.mark.parametrize(
    "size",
    [(224, 224), (448, 448), (32, 32), (64, 64), (225, 225), (200, 320)],
    ids=["identity-pool", "average-pool", "folded-1x1", "folded-2x2", "odd", "non-square"],
)
def test_file_matches_torch_at_batch_4_and_1(tmp_path: Path, size: tuple[int, int]) -> None:
    path, state = _write(tmp_path, SMALL, size)
    ops = [op.name for op in tflite_ops(path)]
    assert constant_transposes(tflite_ops(path)) == []
    assert ops.count("CONV_2D") == 8 and ops.count("FULLY_CONNECTED") == 3 and "TRANSPOSE" not in ops
    assert ("AVERAGE_POOL_2D" in ops) == (size == (448, 448))
    _check_against_torch(path, state, SMALL, size)


@pytest.mark.parametrize("config", [SMALL_PLAIN, SMALL_CIFAR], ids=["no-batch-norm", "no-adaptive-pool"])
def test_other_configs_match_torch(tmp_path: Path, config: VGGConfig) -> None:
    size = config.input_size or (64, 64)
    path, state = _write(tmp_path, config, size)
    _check_against_torch(path, state, config, size)


@pytest.mark.parametrize("top", [True, False], ids=["logits", "features"])
def test_channels_first_file_transposes_the_input_once(tmp_path: Path, top: bool) -> None:
    path, state = _write(tmp_path, SMALL, (64, 64), top=top, fmt="channels_first")
    ops = tflite_ops(path)
    assert [op.name for op in ops].count("TRANSPOSE") == (1 if top else 2)
    assert constant_transposes(ops) == []
    _check_against_torch(path, state, SMALL, (64, 64), top=top, fmt="channels_first")


def test_features_only_file_returns_the_last_block(tmp_path: Path) -> None:
    path, state = _write(tmp_path, SMALL, (64, 64), top=False)
    assert "FULLY_CONNECTED" not in [op.name for op in tflite_ops(path)]
    _check_against_torch(path, state, SMALL, (64, 64), top=False)


def test_weights_are_constants_in_the_layout_their_ops_read(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, SMALL, (224, 224))
    ops = tflite_ops(path)
    convs = [op for op in ops if op.name == "CONV_2D"]
    assert all(op.inputs[1][1] for op in ops if op.name in ("CONV_2D", "FULLY_CONNECTED"))
    assert convs[0].inputs[1][2] == (8, 3, 3, 3)  # [out, kh, kw, in]
    fc = [op.inputs[1][2] for op in ops if op.name == "FULLY_CONNECTED"]
    assert fc == [(48, 32 * 7 * 7), (40, 48), (10, 40)]  # [out, in]


def test_weight_buffers_are_aligned(tmp_path: Path) -> None:
    """Every weight's bytes start at an ALIGNMENT boundary of the file (SIMD loads; the converter's habit)."""
    from ai_edge_litert import schema_py_generated as schema

    path, _ = _write(tmp_path, SMALL, (224, 224))
    raw = path.read_bytes()
    model = schema.Model.GetRootAs(raw, 0)
    starts = [
        model.Buffers(i).DataAsNumpy().ctypes.data - np.frombuffer(raw, np.uint8).ctypes.data
        for i in range(1, model.BuffersLength())
        if model.Buffers(i).DataLength()
    ]
    assert starts and all(s % flatbuffer.ALIGNMENT == 0 for s in starts)


def test_adaptive_pool_matrix_is_torchs() -> None:
    for size, out in [(1, 7), (2, 7), (6, 7), (7, 7), (13, 7), (14, 7), (10, 3)]:
        x = torch.arange(size, dtype=torch.float64).reshape(1, 1, size) ** 1.5
        expected = torch.nn.functional.adaptive_avg_pool1d(x, out)[0, 0].numpy()
        got = flatbuffer.adaptive_pool_matrix(size, out) @ x[0, 0].numpy()
        assert np.max(np.abs(got - expected)) <= 1e-12, (size, out)


# The checks bite: the mistakes a hand-written graph could make fail the comparison with torch.


def test_wrong_batch_norm_epsilon_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folding, "BN_EPSILON", 1e-3)
    path, state = _write(tmp_path, SMALL, (64, 64))
    with pytest.raises(AssertionError):
        _check_against_torch(path, state, SMALL, (64, 64))


def test_wrong_flatten_order_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fc1's columns left in torch's C*H*W order instead of the H*W*C order the NHWC map is flattened in."""
    real = flatbuffer._fc1_for_map

    def chw_rows(config: VGGConfig, kernel: np.ndarray, shape: list[int]):
        _, window = real(config, kernel, shape)
        return np.asarray(kernel, np.float32), window  # torch's columns, as they are

    monkeypatch.setattr(flatbuffer, "_fc1_for_map", chw_rows)
    path, state = _write(tmp_path, SMALL, (224, 224))
    with pytest.raises(AssertionError):
        _check_against_torch(path, state, SMALL, (224, 224))


def test_pool_fold_with_wrong_windows_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evenly split windows instead of torch's overlapping ones (floor start, ceil end)."""

    def even(size: int, out: int) -> np.ndarray:
        m = np.zeros((out, size))
        for i in range(out):
            lo = min(i * size // out, size - 1)
            m[i, lo : max(lo + 1, (i + 1) * size // out)] = 1.0
        return m / m.sum(1, keepdims=True)

    monkeypatch.setattr(flatbuffer, "adaptive_pool_matrix", even)
    path, state = _write(tmp_path, SMALL, (200, 320))
    with pytest.raises(AssertionError):
        _check_against_torch(path, state, SMALL, (200, 320))


def test_fixed_batch_file_fails_the_resize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the -1 shape signature the file is fixed at batch 1, and batch 4 is refused."""
    real = flatbuffer._Graph.activation

    def fixed(self, name: str, shape):
        index = real(self, name, shape)
        self.tensors[index].shapeSignature = None
        return index

    monkeypatch.setattr(flatbuffer._Graph, "activation", fixed)
    path, state = _write(tmp_path, SMALL, (64, 64))
    with pytest.raises((RuntimeError, ValueError, AssertionError)):
        _check_against_torch(path, state, SMALL, (64, 64))

"""The ONNX file written from the layer plan (``parity.export.onnx_graph``), run by onnxruntime, against torch itself.

Small VGGs (narrow stages and classifier; every tensor random, biases and
batch-norm statistics included) keep each case under a second; the same code
writes the full-size files (tests/parity/export/test_cli.py). Each file is
run by onnxruntime as deployed (CPU provider, every graph optimization) and
compared with ``vgg_torch`` on the same torchvision-layout weights, by
max |onnx - torch| / max |torch|.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import parity.export.folding as folding
import parity.export.onnx_graph as onnx_graph
from parity.convert.random_weights import randomized_state_dict
from parity.convert.to_keras import torch_reference
from parity.core.config import PRESETS, RECIPES, VGGConfig
from parity.core.layouts import dense_columns_chw_to_hwc
from parity.export.check import onnx_session

#: ONNX file against torch: the same fp32 arithmetic in another order (onnxruntime's kernels), with batch norm
#: folded in float64 (measured <= 1.0e-6 here); a wrong flatten order, pool window or BN epsilon gives 1e-3 or more.
FP32_RTOL = 1e-5
#: The adaptive pool alone against torch's: window sums in another order, then the same division (measured 3.9e-7).
POOL_RTOL = 1e-6

SMALL = PRESETS["vgg11_bn"].replace(
    stages=((8,), (16,), (16, 16), (32, 32), (32, 32)), hidden=(48, 40), num_classes=10, name="small"
)
SMALL_PLAIN = SMALL.replace(batch_norm=False, name="small_plain")
#: The CIFAR recipe's shape without an adaptive pool (fc1 reads the 4x4 map directly), narrowed.
SMALL_CIFAR = RECIPES["cifar10_vgg16"].replace(
    stages=((8, 8), (16, 16), (16, 16, 16)), hidden=(24, 24), name="small_cifar"
)
#: Sizes one file is checked at: the identity pool, 1x1 and 2x2 maps, odd, non-square, an evenly tiled map.
SIZES = [(224, 224), (32, 32), (64, 64), (225, 225), (200, 320), (33, 97), (448, 448)]


def _write(
    tmp_path: Path, config: VGGConfig, *, top: bool = True, fmt: str = "channels_first", size=(224, 224)
) -> tuple[Path, dict[str, np.ndarray]]:
    state = randomized_state_dict(config, seed=0, include_top=top)
    path = tmp_path / "m.onnx"
    onnx_graph.write_onnx(path, config, state, include_top=top, data_format=fmt, size=size)
    return path, state


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def _worst_against_torch(path: Path, state: dict, config: VGGConfig, sizes, *, top: bool = True, fmt="channels_first"):
    """The worst relative difference to torch over ``sizes``, at batch 2 and at batch 1, from one session."""
    session = onnx_session(path, num_threads=2)
    worst = 0.0
    for size in sizes:
        x = np.random.default_rng(1).standard_normal((2, config.in_channels, *size), dtype=np.float32)
        ref = torch_reference(state, config, x, top)
        ref = ref["logits"] if top else ref[f"block{len(config.stages)}"]
        feed = x if fmt == "channels_first" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        for batch in (2, 1):
            got = session.run(None, {onnx_graph.INPUT_NAME: feed[:batch]})[0]
            if not top and fmt == "channels_last":
                got = got.transpose(0, 3, 1, 2)
            worst = max(worst, _rel(got, ref[:batch]))
    return worst


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(path).graph.node]


def test_one_file_matches_torch_at_every_size_and_batch(tmp_path: Path) -> None:
    path, state = _write(tmp_path, SMALL)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    assert _worst_against_torch(path, state, SMALL, SIZES) <= FP32_RTOL


def test_input_and_output_shapes_are_dynamic(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, SMALL)
    graph = onnx.load(path).graph

    def dims(value: onnx.ValueInfoProto) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["output"]
    assert dims(graph.input[0]) == ["batch", 3, "height", "width"]
    assert dims(graph.output[0]) == ["batch", 10]


@pytest.mark.parametrize("config", [SMALL_PLAIN, SMALL_CIFAR], ids=["no-batch-norm", "no-adaptive-pool"])
def test_other_configs_match_torch(tmp_path: Path, config: VGGConfig) -> None:
    size = config.input_size or (64, 64)
    path, state = _write(tmp_path, config, size=size)
    assert _worst_against_torch(path, state, config, [size]) <= FP32_RTOL
    if config.pool_size is None:  # fc1 reads the map: height and width are fixed
        shape = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_param or d.dim_value for d in shape] == ["batch", 3, *size]


@pytest.mark.parametrize("top", [True, False], ids=["logits", "features"])
def test_channels_last_file_transposes_the_input_once(tmp_path: Path, top: bool) -> None:
    path, state = _write(tmp_path, SMALL, top=top, fmt="channels_last")
    transposes = [n.name for n in onnx.load(path).graph.node if n.op_type == "Transpose"]
    assert transposes == (["to_nchw", "avgpool/cols_t"] if top else ["to_nchw", "output"])
    assert _worst_against_torch(path, state, SMALL, [(64, 64), (45, 77)], top=top, fmt="channels_last") <= FP32_RTOL


def test_features_only_file_returns_the_last_block_at_any_size(tmp_path: Path) -> None:
    path, state = _write(tmp_path, SMALL, top=False)
    assert "Gemm" not in _ops(path) and "MatMul" not in _ops(path)
    assert _worst_against_torch(path, state, SMALL, [(32, 32), (64, 96), (225, 225)], top=False) <= FP32_RTOL


def test_weights_are_stored_as_torch_stores_them(tmp_path: Path) -> None:
    """Conv kernels OIHW, Gemm weights [out, in] read with transB=1, fc1's columns in torch's C*H*W order."""
    path, state = _write(tmp_path, SMALL_PLAIN)
    model = onnx.load(path)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert np.array_equal(weights["block1_conv1/kernel"], state["features.0.weight"])
    assert np.array_equal(weights["fc1/kernel"], state["classifier.0.weight"])
    assert np.array_equal(weights["predictions/bias"], state["classifier.6.bias"])
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert [helper.get_attribute_value(a) for n in gemms for a in n.attribute] == [1, 1, 1]  # transB
    assert [n.name for n in model.graph.node if n.op_type == "Transpose"] == ["avgpool/cols_t"]  # a [q, w] mask


def test_batch_norm_is_folded_once_in_float64(tmp_path: Path) -> None:
    path, state = _write(tmp_path, SMALL)
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    kernel, bias = folding.fold_batch_norm(state["features.0.weight"], state["features.0.bias"], state, "features.1")
    assert np.array_equal(weights["block1_conv1/kernel"], kernel.astype(np.float32))
    assert np.array_equal(weights["block1_conv1/bias"], bias.astype(np.float32))
    assert "BatchNormalization" not in _ops(path)


def test_block_model_runs_the_files_own_blocks(tmp_path: Path) -> None:
    path, state = _write(tmp_path, SMALL)
    blocks = onnx.load_from_string(onnx_graph.block_model(path, SMALL))
    assert "Gemm" not in [n.op_type for n in blocks.graph.node]
    assert not any(t.name.startswith(("fc", "predictions")) for t in blocks.graph.initializer)
    x = np.random.default_rng(2).standard_normal((2, 3, 45, 77), dtype=np.float32)
    ref = torch_reference(state, SMALL, x, True)
    got = onnx_session(blocks.SerializeToString()).run(None, {"images": x})
    assert [o.name for o in blocks.graph.output] == [f"block{i}_pool" for i in range(1, 6)]
    assert max(_rel(g, ref[f"block{i}"]) for i, g in enumerate(got, start=1)) <= FP32_RTOL


def _pool_model(grid: tuple[int, int]) -> bytes:
    """The adaptive pool's nodes alone, on an input of any shape ``[N, C, h, w]``."""
    g = onnx_graph._Graph()
    out = onnx_graph._adaptive_pool(g, "x", grid)
    graph = helper.make_graph(
        g.nodes,
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c", "h", "w"])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["n", "c", *grid])],
        [numpy_helper.from_array(a, name) for name, a in g.constants],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_graph.OPSET)])
    model.ir_version = onnx_graph.IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


@pytest.mark.parametrize("grid", [(7, 7), (3, 5)], ids=["7x7", "3x5"])
def test_adaptive_pool_is_torchs_at_every_map_size(grid: tuple[int, int]) -> None:
    """Every map of 1 to 30 rows and a spread of widths: the pool computed from the map's shape is torch's."""
    session = onnx_session(_pool_model(grid), num_threads=2)
    rng = np.random.default_rng(3)
    worst = 0.0
    for h, w in itertools.product(range(1, 31), (1, 2, 6, 7, 8, 13, 14, 29, 57)):
        x = rng.standard_normal((2, 3, h, w), dtype=np.float32)
        expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), grid).numpy()
        worst = max(worst, _rel(session.run(None, {"x": x})[0], expected))
    assert worst <= POOL_RTOL


# The checks bite: the mistakes a hand-written graph could make fail the comparison with torch.


def test_fc1_columns_in_the_nhwc_order_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fc1's columns reordered to H*W*C (the TFLite file's order) while the NCHW map flattens in C*H*W."""
    monkeypatch.setattr(onnx_graph, "_fc1_kernel", lambda kernel, c, grid: dense_columns_chw_to_hwc(kernel, c, *grid))
    path, state = _write(tmp_path, SMALL)
    assert _worst_against_torch(path, state, SMALL, [(224, 224)]) > 100 * FP32_RTOL


def test_nhwc_flatten_with_fc1_in_torchs_order_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The map flattened in H*W*C order (as a Keras port flattens it) with fc1's rows left in torch's order."""

    def nhwc_flatten(g: onnx_graph._Graph, x: str) -> str:
        return g.node("Flatten", [g.node("Transpose", [x], "to_nhwc", perm=[0, 2, 3, 1])], "flatten", axis=1)

    monkeypatch.setattr(onnx_graph, "_flatten", nhwc_flatten)
    path, state = _write(tmp_path, SMALL)
    assert _worst_against_torch(path, state, SMALL, [(224, 224)]) > 100 * FP32_RTOL


def test_pool_windows_without_torchs_ceil_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows ending at floor((i + 1) * size / out) instead of torch's ceil: wrong wherever the map is not 7."""
    real = onnx_graph._window_bounds

    def floor_end(g: onnx_graph._Graph, size: str, out: int, name: str) -> tuple[str, str]:
        start, _ = real(g, size, out, name)
        i1 = g.constant(f"{name}/floor_i1", np.arange(1, out + 1, dtype=np.int64))
        p = g.constant(f"{name}/floor_out", np.asarray(out, np.int64))
        end = g.node("Div", [g.node("Mul", [i1, size], f"{name}/floor_num"), p], f"{name}/floor_end")
        return start, g.node("Max", [end, g.node("Add", [start, g.constant(f"{name}/1", np.int64(1))], f"{name}/s1")],
                             f"{name}/floor_end_nonempty")  # fmt: skip

    monkeypatch.setattr(onnx_graph, "_window_bounds", floor_end)
    path, state = _write(tmp_path, SMALL)
    assert _worst_against_torch(path, state, SMALL, [(224, 224)]) <= FP32_RTOL  # a 7 x 7 map: the identity either way
    assert _worst_against_torch(path, state, SMALL, [(200, 320)]) > 100 * FP32_RTOL


def test_wrong_batch_norm_epsilon_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folding, "BN_EPSILON", 1e-3)
    path, state = _write(tmp_path, SMALL)
    assert _worst_against_torch(path, state, SMALL, [(64, 64)]) > 100 * FP32_RTOL


def test_fixed_batch_file_fails_at_batch_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An input declared with batch 1 instead of a named dimension: onnxruntime refuses batch 2."""
    real = onnx_graph.onnx_input_shape
    monkeypatch.setattr(onnx_graph, "onnx_input_shape", lambda *a, **k: [1, *real(*a, **k)[1:]])
    path, state = _write(tmp_path, SMALL)
    with pytest.raises(Exception, match="(?i)invalid|dimension"):
        _worst_against_torch(path, state, SMALL, [(64, 64)])

"""AlexNet's geometry in the directly written files: ONNX (onnxruntime) and fp32 TFLite (LiteRT), against torch.

A tiny-width AlexNet (torchvision's kernels 11/5/3/3/3, stride 4 and padding 2 on the first convolution,
3x3 stride-2 pools after blocks 1, 2 and 5, an adaptive pool to 6x6), every tensor random, at torchvision's
crop, its smallest input and a non-square size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import parity.export.flatbuffer as flatbuffer
import parity.export.onnx_graph as onnx_graph
from parity.convert.random_weights import randomized_state_dict
from parity.convert.to_keras import torch_reference
from parity.core.config import ALEXNET
from parity.export.check import litert_interpreter, onnx_session

#: fp32 files against torch: the same arithmetic in another order (measured about 1e-6 on these files);
#: a padding put on the wrong side or a pool with the wrong stride gives 1e-1 or more.
FP32_RTOL = 1e-5
TINY_ALEXNET = ALEXNET.replace(stages=((4,), (6,), (8,), (8,), (6,)), hidden=(16, 16), num_classes=7, name="tiny")
SIZES = [(224, 224), (63, 63), (300, 200)]


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def _reference(state: dict[str, np.ndarray], x: np.ndarray, top: bool) -> np.ndarray:
    ref = torch_reference(state, TINY_ALEXNET, x, top)
    return ref["logits"] if top else ref["block3"]  # the third pool: block5_pool


def _inputs(size: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(size[1]).standard_normal((2, 3, *size), dtype=np.float32)


@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
@pytest.mark.parametrize("top", [True, False], ids=["logits", "features"])
def test_onnx_file_matches_torch_at_every_size(tmp_path: Path, fmt: str, top: bool) -> None:
    state = randomized_state_dict(TINY_ALEXNET, seed=0, include_top=top)
    path = tmp_path / "alexnet.onnx"
    onnx_graph.write_onnx(path, TINY_ALEXNET, state, include_top=top, data_format=fmt, size=(224, 224))
    onnx.checker.check_model(onnx.load(path), full_check=True)
    session = onnx_session(path, num_threads=2)
    for size in SIZES:
        x = _inputs(size)
        feed = x if fmt == "channels_first" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        got = session.run(None, {onnx_graph.INPUT_NAME: feed})[0]
        if not top and fmt == "channels_last":
            got = got.transpose(0, 3, 1, 2)
        assert _rel(got, _reference(state, x, top)) <= FP32_RTOL, size


def test_onnx_block_model_reads_alexnets_three_pools(tmp_path: Path) -> None:
    state = randomized_state_dict(TINY_ALEXNET, seed=1)
    path = tmp_path / "alexnet.onnx"
    onnx_graph.write_onnx(path, TINY_ALEXNET, state, include_top=True, data_format="channels_first", size=(63, 63))
    blocks = onnx.load_from_string(onnx_graph.block_model(path, TINY_ALEXNET))
    assert [o.name for o in blocks.graph.output] == ["block1_pool", "block2_pool", "block5_pool"]
    conv = next(n for n in onnx.load(path).graph.node if n.op_type == "Conv")
    attrs = {a.name: list(a.ints) for a in conv.attribute}
    assert attrs == {"kernel_shape": [11, 11], "pads": [2, 2, 2, 2], "strides": [4, 4]}


def _run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    interpreter = litert_interpreter(path, num_threads=2)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(x.shape), strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, np.ascontiguousarray(x))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
def test_tflite_file_matches_torch(tmp_path: Path, size: tuple[int, int], fmt: str) -> None:
    state = randomized_state_dict(TINY_ALEXNET, seed=2)
    path = tmp_path / "alexnet.tflite"
    flatbuffer.write_tflite(path, TINY_ALEXNET, state, include_top=True, data_format=fmt, size=size)
    x = _inputs(size)
    feed = x if fmt == "channels_first" else x.transpose(0, 2, 3, 1)
    for batch in (2, 1):
        assert _rel(_run_tflite(path, feed[:batch]), _reference(state, x[:batch], True)) <= FP32_RTOL, batch


def test_tflite_features_only(tmp_path: Path) -> None:
    state = randomized_state_dict(TINY_ALEXNET, seed=3, include_top=False)
    path = tmp_path / "alexnet.tflite"
    flatbuffer.write_tflite(path, TINY_ALEXNET, state, include_top=False, data_format="channels_last", size=(300, 200))
    x = _inputs((300, 200))
    got = _run_tflite(path, x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert got.shape[2:] == (8, 5)
    assert _rel(got, _reference(state, x, False)) <= FP32_RTOL


def test_tflite_padding_on_the_wrong_side_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check bites: torch's 2 zeros put as 1 before and 3 after (same shapes) miss the tolerance."""
    original = np.asarray

    def shifted(value: object, *args: object, **kwargs: object) -> np.ndarray:
        if isinstance(value, list) and value == [[0, 0], [2, 2], [2, 2], [0, 0]]:
            value = [[0, 0], [1, 3], [1, 3], [0, 0]]
        return original(value, *args, **kwargs)

    monkeypatch.setattr(flatbuffer.np, "asarray", shifted)
    state = randomized_state_dict(TINY_ALEXNET, seed=2)
    path = tmp_path / "alexnet.tflite"
    flatbuffer.write_tflite(path, TINY_ALEXNET, state, include_top=True, data_format="channels_last", size=(224, 224))
    monkeypatch.undo()
    x = _inputs((224, 224))
    assert _rel(_run_tflite(path, x.transpose(0, 2, 3, 1)), _reference(state, x, True)) > FP32_RTOL


@pytest.mark.full
@pytest.mark.extended
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_cli_exports_full_size_alexnet_from_a_checkpoint(tmp_path: Path, fmt: str) -> None:
    """``python -m parity.export alexnet --checkpoint X.pth``: written, then checked against torchvision."""
    import torch

    from parity.export import main

    checkpoint = tmp_path / "alexnet.pth"
    torch.save({k: torch.from_numpy(v) for k, v in randomized_state_dict(ALEXNET, seed=1).items()}, checkpoint)
    out = tmp_path / f"alexnet.{fmt}"
    argv = ["alexnet", "--checkpoint", str(checkpoint), "--format", fmt, "--output", str(out), "--quiet"]
    assert main(argv) == 0
    assert out.is_file()

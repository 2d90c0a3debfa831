"""The OpenVINO IR (``parity.export.openvino_ir``), run by OpenVINO's CPU plugin, against torch itself.

Small VGGs (narrow stages and classifier; every tensor random, biases and
batch-norm statistics included) keep each case to seconds; the same code
writes the full-size files (``test_checkpoint_to_verified_openvino`` below and
in tests/parity/export/test_cli.py). Each IR is read back from disk, compiled
for the CPU in fp32 and compared with ``vgg_torch`` on the same
torchvision-layout weights, by max |openvino - torch| / max |torch|.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

import parity.export.onnx_graph as onnx_graph
import parity.export.openvino_ir as openvino_ir
from parity.convert.random_weights import randomized_state_dict
from parity.convert.to_keras import torch_reference
from parity.core.config import PRESETS, VGGConfig
from parity.core.layouts import dense_columns_chw_to_hwc
from parity.export import main
from parity.export.check import TOLERANCES, run_artifact
from tests.conftest import preset_params, run_python, tensorflow_blocked
from tests.parity.export.conftest import ARCH, SEED

#: IR against torch: the ONNX graph's fp32 arithmetic (batch norm folded in float64) run by OpenVINO's CPU
#: kernels in another order (measured <= 6e-7 here); a wrong flatten order, BN epsilon or fp16 weights give 1e-4
#: or more.
FP32_RTOL = 1e-5

SMALL = PRESETS["vgg11_bn"].replace(
    stages=((8,), (16,), (16, 16), (32, 32), (32, 32)), hidden=(48, 40), num_classes=10, name="small"
)
#: The identity pool, 1x1 maps, odd and non-square sizes.
SIZES = [(224, 224), (32, 32), (225, 225), (97, 161)]


def _write(
    tmp_path: Path, config: VGGConfig = SMALL, *, top: bool = True, fmt: str = "channels_first"
) -> tuple[Path, dict[str, np.ndarray]]:
    state = randomized_state_dict(config, seed=0, include_top=top)
    path = tmp_path / "m.xml"
    openvino_ir.write_openvino(path, config, state, include_top=top, data_format=fmt, size=(224, 224))
    return path, state


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def _worst_against_torch(path: Path, state: dict, sizes, *, top: bool = True, fmt: str = "channels_first") -> float:
    """The worst relative difference to torch over ``sizes``, at batch 2 and at batch 1, from one compiled model."""
    compiled = openvino_ir.compiled_model(path, num_threads=2)
    worst = 0.0
    for size in sizes:
        x = np.random.default_rng(1).standard_normal((2, 3, *size), dtype=np.float32)
        ref = torch_reference(state, SMALL, x, top)
        ref = ref["logits"] if top else ref[f"block{len(SMALL.stages)}"]
        feed = x if fmt == "channels_first" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        for batch in (2, 1):
            got = compiled(feed[:batch])["output"]
            if not top and fmt == "channels_last":
                got = got.transpose(0, 3, 1, 2)
            worst = max(worst, _rel(got, ref[:batch]))
    return worst


pytestmark = pytest.mark.slow  # each case converts a file (a few seconds)


@pytest.fixture(scope="module")
def small_ir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """SMALL's IR, NCHW, with the classifier: the file the checks below read."""
    return _write(tmp_path_factory.mktemp("ir"))


def test_ir_matches_torch_at_every_size_and_batch(small_ir: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, state = small_ir
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.bin", "m.xml"]  # the scratch ONNX file is gone
    assert _worst_against_torch(path, state, SIZES) <= FP32_RTOL
    # fp32 on every CPU, not only where bf16 would show in the figure above
    assert openvino_ir.compiled_model(path).get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32


def test_batch_and_size_are_dynamic_and_weights_fp32(small_ir: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = small_ir
    model = ov.Core().read_model(path)
    assert [i.get_any_name() for i in model.inputs] == ["images"] and model.outputs[0].get_any_name() == "output"
    assert str(model.inputs[0].get_partial_shape()) == "[?,3,?,?]"
    assert str(model.outputs[0].get_partial_shape()) == "[?,10]"
    types = {
        op.get_output_element_type(0).get_type_name() for op in model.get_ops() if op.get_type_name() == "Constant"
    }
    assert "f16" not in types and "f32" in types


def test_channels_last_features_ir(tmp_path: Path) -> None:
    path, state = _write(tmp_path, top=False, fmt="channels_last")
    assert _worst_against_torch(path, state, [(64, 64), (45, 77)], top=False, fmt="channels_last") <= FP32_RTOL


def test_checker_reads_the_irs_own_blocks(small_ir: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, state = small_ir
    x = np.random.default_rng(2).standard_normal((3, 3, 45, 77), dtype=np.float32)
    got = run_artifact(path, "openvino", x, "channels_first", batch=2, config=SMALL)
    ref = torch_reference(state, SMALL, x, True)
    assert sorted(got) == ["block1", "block2", "block3", "block4", "block5", "output"]
    assert max(_rel(got[f"block{i}"], ref[f"block{i}"]) for i in range(1, 6)) <= FP32_RTOL
    assert _rel(got["output"], ref["logits"]) <= FP32_RTOL


# The checks bite: mistakes in the file fail the comparison with torch.


def test_nhwc_flatten_with_fc1_in_torchs_order_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The map flattened in H*W*C order (as a Keras port flattens it) with fc1's rows left in torch's order."""

    def nhwc_flatten(g: onnx_graph._Graph, x: str) -> str:
        return g.node("Flatten", [g.node("Transpose", [x], "to_nhwc", perm=[0, 2, 3, 1])], "flatten", axis=1)

    monkeypatch.setattr(onnx_graph, "_flatten", nhwc_flatten)
    path, state = _write(tmp_path)
    assert _worst_against_torch(path, state, [(224, 224)]) > 100 * FP32_RTOL


def test_fc1_columns_in_the_nhwc_order_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_graph, "_fc1_kernel", lambda kernel, c, grid: dense_columns_chw_to_hwc(kernel, c, *grid))
    path, state = _write(tmp_path)
    assert _worst_against_torch(path, state, [(224, 224)]) > 100 * FP32_RTOL


def test_fp16_weights_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``openvino.save_model``'s default (weights compressed to fp16) is outside the fp32 bound."""
    real = ov.save_model
    monkeypatch.setattr(ov, "save_model", lambda model, path, compress_to_fp16: real(model, path))
    path, state = _write(tmp_path)
    assert _worst_against_torch(path, state, [(64, 64)]) > 3 * FP32_RTOL


def test_bf16_inference_fails_where_the_cpu_has_it(
    small_ir: tuple[Path, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compiled without the f32 hint, on a CPU with native bf16 (the plugin's default there), the file is off."""
    if ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT") != ov.Type.bf16:
        pytest.skip("this CPU infers in fp32 by default: nothing to show")
    monkeypatch.setattr(openvino_ir, "PRECISION_CONFIG", {})
    path, state = small_ir
    assert _worst_against_torch(path, state, [(64, 64)]) > 100 * FP32_RTOL


# --------------------------------------------------------------------------- the CLI
def _args(source: tuple[str, ...], out: Path, *extra: str, arch: str = ARCH) -> list[str]:
    return [arch, *source, "--format", "openvino", "--output", os.fspath(out), *extra]


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _assert_figures(sidecar: dict, sets: set[str], batch: int) -> None:
    """Every set judged at ``batch`` and at 1, blocks included at ``batch``, all within the fp32 bound."""
    figures = sidecar["verification"]["figures"]
    assert set(figures) == sets | {f"{k} at batch 1" for k in sets}
    stages = len(sidecar["config"]["stages"])
    for name, f in figures.items():
        assert f["passed"] and max(r["max_rel"] for r in f["rows"]) <= TOLERANCES["none"].output_rtol, name
        if "at batch 1" not in name:
            assert {r["name"] for r in f["rows"]} == {f"block{i}" for i in range(1, stages + 1)} | {"output"}
    assert sidecar["export"]["format"] == "openvino" and sidecar["export"]["data_format"] == "channels_first"
    assert "tensorflow" not in sidecar["versions"] and sidecar["versions"]["openvino"]
    assert sidecar["verification"]["passed"]


def test_features_ir_is_verified_without_tensorflow(features_file: Path, tmp_path: Path) -> None:
    """A features-only IR at 32 px, judged at 32 and 65 x 129, at batch 2 and 1; TensorFlow never loaded."""
    env, tensorflow_imports = tensorflow_blocked(tmp_path / "child")
    out = tmp_path / "out" / "m.xml"
    out.parent.mkdir()
    args = _args(("--weights", os.fspath(features_file)), out, "--input-size", "32", "32", "--batch-size", "2")
    done = run_python("", "-m", "parity.export", *args, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert not tensorflow_imports.exists(), tensorflow_imports.read_text()[-3000:]
    sidecar = json.loads(Path(f"{out}.json").read_text())
    _assert_figures(sidecar, {"verification", "photos", "verification 65x129"}, batch=2)
    assert sidecar["export"]["input_signature"] == [None, 3, None, None]
    assert sidecar["weights_file"]["name"] == "m.bin"
    assert sidecar["size_bytes"] == out.stat().st_size + (out.parent / "m.bin").stat().st_size
    assert _listing(out.parent) == ["m.bin", "m.xml", "m.xml.json"]


def test_wrong_ir_is_refused_and_neither_file_written(
    features_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch norm folded with the wrong epsilon: the check fails at block1, exit 1, no .xml, .bin or scratch left."""
    import parity.export.folding

    monkeypatch.setattr(parity.export.folding, "BN_EPSILON", 1e-3)
    code = main(_args(("--weights", os.fspath(features_file)), tmp_path / "m.xml", "--input-size", "32", "32"))
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Export check FAILED" in err and "block1 differs" in err
    assert _listing(tmp_path) == []


def test_force_replaces_both_files(features_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing pair: refused without --force (the .bin alone too), replaced whole with it."""
    (tmp_path / "m.bin").write_bytes(b"old weights")
    code = main(_args(("--weights", os.fspath(features_file)), tmp_path / "m.xml", "--input-size", "32", "32"))
    err = capsys.readouterr().err
    assert code == 2 and "m.bin exists beside the output: pass --force" in err and "Received: " in err, err
    (tmp_path / "m.xml").write_text("<old/>")
    args = _args(("--weights", os.fspath(features_file)), tmp_path / "m.xml", "--input-size", "32", "32", "--force")
    assert main([*args, "--quiet"]) == 0, capsys.readouterr().err
    assert _listing(tmp_path) == ["m.bin", "m.xml", "m.xml.json"]
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    assert run_artifact(tmp_path / "m.xml", "openvino", x, "channels_first")["output"].shape == (1, 512, 1, 1)


@pytest.mark.full
@pytest.mark.parametrize("arch", preset_params(default=("vgg11_bn",), marks=[pytest.mark.full]))
def test_checkpoint_to_verified_openvino(arch: str, tmp_path: Path) -> None:
    """A .pth to an IR judged at 224 and 257 x 321 at batch 2 and 1, then run again at 97 x 161 here.

    The export runs in a child process with TensorFlow blocked; the IR is then compiled in this process
    (torch, TensorFlow and OpenVINO together) and run against torch on the same tensors.
    """
    import torch

    checkpoint = tmp_path / f"{arch}.pth"
    state = randomized_state_dict(PRESETS[arch], SEED)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, checkpoint)
    env, tensorflow_imports = tensorflow_blocked(tmp_path / "child")
    out = tmp_path / "out" / f"{arch}.xml"
    out.parent.mkdir()
    args = _args(("--checkpoint", os.fspath(checkpoint)), out, "--batch-size", "2", arch=arch)
    done = run_python("", "-m", "parity.export", *args, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert not tensorflow_imports.exists(), tensorflow_imports.read_text()[-3000:]
    sidecar = json.loads(Path(f"{out}.json").read_text())
    _assert_figures(sidecar, {"verification", "photos", "verification 257x321"}, batch=2)
    x = np.random.default_rng(5).standard_normal((2, 3, 97, 161), dtype=np.float32)  # 3 x 5 maps
    ref = torch_reference(state, PRESETS[arch], x, True)["logits"]
    compiled = openvino_ir.compiled_model(out)
    for batch in (2, 1):
        assert _rel(compiled(x[:batch])["output"], ref[:batch]) <= TOLERANCES["none"].output_rtol
    assert _listing(out.parent) == [f"{arch}.bin", f"{arch}.xml", f"{arch}.xml.json"]

"""``python -m parity.convert`` end to end, checkpoint formats, and ``weights="converted"``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import h5py
import keras
import numpy as np
import pytest

import parity.core.names
import parity.core.weights_file
import vgg_keras
import vgg_keras.model
import vgg_keras.weights
import vgg_torch
from parity.compare import LOGIT_RTOL
from parity.convert import main
from parity.convert.random_weights import randomized_state_dict
from parity.core.catalog import get_weights_record
from parity.core.config import PRESETS
from tests.conftest import run_python, torch_state_dict

pytestmark = pytest.mark.full


def _weights(path: Path) -> list[np.ndarray]:
    with h5py.File(path, "r") as f:
        out: list[np.ndarray] = []
        f.visititems(lambda name, obj: out.append(np.array(obj)) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_cli_end_to_end_in_subprocess(tmp_path: Path) -> None:
    out, report = tmp_path / "v11.weights.h5", tmp_path / "report.json"
    result = run_python(
        "",
        "-m",
        "parity.convert",
        "vgg11",
        "--init",
        "random-all",
        "--seed",
        "3",
        "--output",
        str(out),
        "--report",
        str(report),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(out)
    assert "logits" in result.stderr and "top-1 agreement 100%" in result.stderr
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["verification"]["max_rel"] <= LOGIT_RTOL
    sidecar = json.loads(parity.core.weights_file.sidecar_path(out).read_text())
    assert sidecar["arch"] == "vgg11" and sidecar["source"] == {"kind": "random-all", "seed": 3}
    assert set(sidecar["versions"]) >= {"torch", "torchvision", "keras", "tensorflow", "numpy"}
    assert sidecar["sha256"] == parity.core.weights_file.file_sha256(out)

    # The file gives torch's logits in Keras.
    model = vgg_keras.VGG11(weights=str(out), classifier_activation=None)
    ref = vgg_torch.vgg11(init_weights=False).eval()
    ref.load_state_dict(torch_state_dict(randomized_state_dict(PRESETS["vgg11"], 3)))
    x = np.random.default_rng(5).standard_normal((2, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    got = np.asarray(model(x.transpose(0, 2, 3, 1)))
    assert np.max(np.abs(got - expected)) <= LOGIT_RTOL * np.max(np.abs(expected))


@pytest.fixture(scope="module")
def ten_class_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 10-class vgg11_bn, every tensor random, saved the ways people save it."""
    from safetensors.numpy import save_file

    root = tmp_path_factory.mktemp("ckpt")
    sd = randomized_state_dict(PRESETS["vgg11_bn"].replace(num_classes=10), seed=7)
    tensors = torch_state_dict(sd)
    paths = {
        "bare": root / "bare.pth",
        "state_dict": root / "wrapped.pt",
        "model_module": root / "ddp.pth",
        "safetensors": root / "weights.safetensors",
    }
    torch.save(tensors, paths["bare"])
    torch.save({"state_dict": tensors, "epoch": 3}, paths["state_dict"])
    torch.save(
        {"model": {f"module.{k}": v for k, v in tensors.items()}, "optimizer": {"lr": torch.tensor(0.1)}},
        paths["model_module"],
    )
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, paths["safetensors"])
    return paths


@pytest.mark.extended
def test_checkpoint_formats_convert_alike(ten_class_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    outputs = {}
    for kind, path in ten_class_checkpoints.items():
        out = tmp_path / f"{kind}.weights.h5"
        args = ["vgg11_bn", "--checkpoint", str(path), "--output", str(out), "--quiet"]
        assert main(args if kind == "bare" else [*args, "--no-verify"]) == 0, kind
        outputs[kind] = _weights(out)
    for kind, arrays in outputs.items():
        assert all(np.array_equal(a, b) for a, b in zip(arrays, outputs["bare"], strict=True)), kind
    model = vgg_keras.VGG11_BN(weights=str(tmp_path / "bare.weights.h5"), classes=10)
    assert model.output.shape[-1] == 10
    record = parity.core.weights_file.read_record(tmp_path / "bare.weights.h5")
    assert record["source"]["kind"] == "checkpoint" and len(record["source"]["sha256"]) == 64
    with pytest.raises(ValueError, match="10-class classifier: pass classes=10"):
        vgg_keras.VGG11_BN(weights=str(tmp_path / "bare.weights.h5"))
    features = vgg_keras.VGG11_BN(weights=str(tmp_path / "bare.weights.h5"), include_top=False)
    assert np.array_equal(
        features.get_layer("block5_conv2").kernel.numpy(), model.get_layer("block5_conv2").kernel.numpy()
    )
    # Kernels are built unfilled and overwritten by the load; afterwards the layers report torchvision's init,
    # so a clone is sane.
    assert {
        layer.get_config()["kernel_initializer"]["class_name"] for layer in model.layers if hasattr(layer, "kernel")
    } == {
        "KaimingNormalFanOut",
        "TorchLinearNormal",
    }
    clone = keras.models.clone_model(model)
    assert all(np.isfinite(w.numpy()).all() for w in clone.weights)


@pytest.mark.parametrize("mistake", ["flatten_order", "bn_epsilon_1e-3"])
def test_verification_fails_on_deliberate_mistakes(
    mistake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if mistake == "flatten_order":
        monkeypatch.setattr(parity.core.names, "dense_rows_chw_to_hwc", lambda w, c, h, ww: w.T)
        arch, first = "vgg11", "logits"
    else:
        monkeypatch.setattr(vgg_keras.model, "BN_EPSILON", 1e-3)
        arch, first = "vgg11_bn", "block1"
    out, report = tmp_path / "bad.weights.h5", tmp_path / "r.json"
    assert main([arch, "--init", "random-all", "--output", str(out), "--report", str(report)]) == 1
    assert "first over tolerance" in capsys.readouterr().err
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["verification"]["first_divergent"] == first
    assert not out.exists() and not list(tmp_path.glob("*.h5*"))


@pytest.mark.extended
def test_converted_on_demand_after_tensorflow_is_loaded(tmp_path: Path) -> None:
    """The risky order: TensorFlow first, then a conversion that needs torchvision."""
    import os

    record = get_weights_record("vgg11")
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    # torch.hub uses a cached file of the published name without downloading.
    torch.save(torch_state_dict(randomized_state_dict(PRESETS["vgg11"], seed=11)), hub / record.filename)
    code = (
        "import sys, tensorflow, vgg_keras, numpy as np\n"
        "m = vgg_keras.VGG11(weights='converted', input_shape=(32, 32, 3))\n"
        "p = m(np.ones((1, 32, 32, 3), 'float32'))\n"
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules\n"
        "print('sum', float(np.sum(p)))\n"
    )
    first = run_python(code)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Converting vgg11 IMAGENET1K_V1" in first.stderr
    cached = vgg_keras.weights.converted_weights_path("vgg11")
    assert cached.exists() and parity.core.weights_file.sidecar_path(cached).exists()
    assert parity.core.weights_file.read_record(cached)["source"]["kind"] == "torchvision"
    again = run_python(code)
    assert again.returncode == 0 and "Converting" not in again.stderr, again.stderr[-3000:]
    assert float(first.stdout.split()[-1]) == pytest.approx(1.0, abs=1e-4)  # softmax sums to 1


def test_converted_without_torch_names_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "torchvision") else real(name, *a)
    )
    with pytest.raises(FileNotFoundError, match=r"run `python -m parity.convert vgg13 --weights IMAGENET1K_V1`"):
        vgg_keras.VGG13(weights="converted")


def test_bad_arch_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["vgg17"])
    assert info.value.code == 2

"""``--checkpoint`` beyond a bare torchvision state dict: timm's layout, Hugging Face style folders, ``hf://``,
Lightning checkpoints, ``--key``, refusals that name the keys, and ``--to torch --layout timm``.

The refusals use state dicts of full-size keys and shapes whose tensors are one element expanded (files of a few
kilobytes) and run before any weight is converted. Conversions at full size are marked ``full`` (vgg11_bn, in
the default run) and ``extended`` (the other seven presets).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import torch

import h5py
import numpy as np
import pytest

import vgg_keras
from parity.compare import LOGIT_RTOL, keras_forward
from parity.convert import main
from parity.convert.random_weights import randomized_state_dict
from parity.core.checkpoint import load_checkpoint
from parity.core.config import PRESETS, VGGConfig, torch_state_shapes
from parity.core.errors import ConversionError
from parity.core.state_dicts import layout_shapes, torchvision_to_timm
from parity.core.weights_file import read_record
from tests.conftest import preset_params, torch_state_dict
from tests.timm_vgg import TimmVGG

#: fp32 logits of the converted Keras model against the model the checkpoint came from: 1e-5 × max |logit|.
RTOL = LOGIT_RTOL


def _refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Runs the converter; asserts exit code 2 and one ``error: ... Received: ...`` line, and returns it."""
    code = main([*args, "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert " Received: " in lines[0], lines[0]
    return lines[0]


def _expanded(config: VGGConfig) -> dict[str, torch.Tensor]:
    """Every key and shape of a config's torchvision state dict, each tensor one element expanded."""
    return {k: torch.ones(()).expand(*shape) for k, shape in torch_state_shapes(config).items()}


def _timm_expanded(arch: str) -> dict[str, torch.Tensor]:
    """Every key and shape of a preset's timm state dict, each tensor one element expanded."""
    return {k: torch.ones(()).expand(*shape) for k, shape in layout_shapes(PRESETS[arch], "timm").items()}


def _hf_folder(folder: Path, state: dict[str, np.ndarray], arch: str, num_classes: int) -> Path:
    """A folder as timm's ``save_pretrained``/``push_to_hub`` writes it: model.safetensors and config.json."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, folder / "model.safetensors")
    config = {"architecture": arch, "num_classes": num_classes, "num_features": 4096, "global_pool": "avg"}
    config["pretrained_cfg"] = {"tag": "tv_in1k", "input_size": [3, 224, 224], "classifier": "head.fc"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# --------------------------------------------------------------------------- refusals (quick)


def test_timm_state_dict_with_a_stray_key_names_it_and_the_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _timm_expanded("vgg11_bn") | {"features.99.weight": torch.ones(3)}
    path = tmp_path / "timm.pth"
    torch.save(state, path)
    out = tmp_path / "out" / "x.weights.h5"
    out.parent.mkdir()
    line = _refused(capsys, "vgg11_bn", "--checkpoint", str(path), "--output", str(out))
    assert "timm's layout" in line and line.endswith("Received: unexpected=['features.99.weight'], missing=[]")
    assert list(out.parent.iterdir()) == []
    # The check bites: without the stray key the same file gets past the key check (to the NaN-free check of
    # values, which these expanded ones pass, and on); refused here only for its class count.
    torch.save({k: v for k, v in state.items() if k != "features.99.weight"}, path)
    line = _refused(capsys, "vgg11_bn", "--checkpoint", str(path), "--num-classes", "10", "--output", str(out))
    assert "--num-classes 10 disagrees" in line


def test_lightning_checkpoint_missing_a_key_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = _expanded(PRESETS["vgg11"])
    del state["classifier.3.bias"]
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    line = _refused(capsys, "vgg11", "--checkpoint", str(path), "--output", str(tmp_path / "x.weights.h5"))
    assert "torchvision's layout under 'state_dict', prefix 'net.'" in line
    assert line.endswith("Received: unexpected=[], missing=['net.classifier.3.bias']")


def test_timm_features_only_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = {k: v for k, v in _timm_expanded("vgg11").items() if k.startswith(("features.", "pre_logits."))}
    path = tmp_path / "no_head.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, path)
    line = _refused(capsys, "vgg11", "--checkpoint", str(path), "--output", str(tmp_path / "x.weights.h5"))
    assert "no head.fc.weight, so it is not a full vgg11" in line and "timm's layout" in line
    assert "missing=['head.fc.weight', 'head.fc.bias']" in line


def test_folder_of_another_architecture_is_refused_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "vgg16.tv_in1k"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"not read")
    (folder / "config.json").write_text(json.dumps({"architecture": "vgg16", "num_classes": 1000}))
    line = _refused(capsys, "vgg11", "--checkpoint", str(folder), "--output", str(tmp_path / "x.weights.h5"))
    assert "config.json describes vgg16, not vgg11" in line and "python -m parity.convert vgg16" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _refused(capsys, "vgg11", "--checkpoint", str(empty), "--output", str(tmp_path / "x.weights.h5"))
    assert "is a directory without model.safetensors or pytorch_model.bin" in line


def test_hf_reference_without_huggingface_hub(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails, as where it is not installed
    line = _refused(capsys, "vgg16", "--checkpoint", "hf://timm/vgg16.tv_in1k")
    assert "pip install huggingface_hub" in line and line.endswith("Received: checkpoint='hf://timm/vgg16.tv_in1k'")
    line = _refused(capsys, "vgg16", "--checkpoint", "hf://vgg16")
    assert "hf://ORG/NAME" in line
    # A bad output is refused before anything is downloaded.
    line = _refused(capsys, "vgg16", "--checkpoint", "hf://timm/vgg16.tv_in1k", "--output", "x.h5")
    assert "--output must end in .weights.h5" in line


def test_hf_reference_offline(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def offline(repo_id: str, **kwargs: object) -> str:
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=offline))
    line = _refused(capsys, "vgg16", "--checkpoint", "hf://timm/vgg16.tv_in1k")
    assert "Could not download timm/vgg16.tv_in1k" in line and "pass a local folder or file" in line


def test_options_of_the_other_direction_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused(capsys, "vgg11", "--init", "random", "--layout", "timm")
    assert "--layout picks the layout --to torch writes" in line
    line = _refused(capsys, "vgg11", "--init", "random", "--key", "ema")
    assert "--key picks the state dict inside a --checkpoint" in line


# --------------------------------------------------------------------------- conversions (full size)


def _compare_with_timm(out: Path, arch: str, timm_state: dict[str, np.ndarray], num_classes: int) -> float:
    """Max |Keras − timm| / max |timm logit| at 224 px: the converted file against the model it came from."""
    config = PRESETS[arch].replace(num_classes=num_classes)
    reference = TimmVGG(config)
    reference.load_state_dict(torch_state_dict(timm_state), strict=True)
    x = np.random.default_rng(2).standard_normal((2, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        expected = reference.eval()(torch.from_numpy(x)).numpy()
    model = vgg_keras.build_vgg(config, classifier_activation=None)
    model.load_weights(out)
    got = keras_forward(model, x)["logits"]
    return float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        out: dict[str, np.ndarray] = {}
        f.visititems(lambda name, obj: out.update({name: np.array(obj)}) if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.mark.full
def test_timm_folder_lightning_and_hub_convert_alike_and_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arch, classes = "vgg11_bn", 10
    state = randomized_state_dict(PRESETS[arch].replace(num_classes=classes), seed=21)  # every tensor random
    timm_state = torchvision_to_timm(state, PRESETS[arch].replace(num_classes=classes))
    folder = _hf_folder(tmp_path / "vgg11_bn.tv_in1k", timm_state, arch, classes)
    out = tmp_path / "folder.weights.h5"
    assert main([arch, "--checkpoint", str(folder), "--output", str(out), "--quiet"]) == 0
    assert _compare_with_timm(out, arch, timm_state, classes) <= RTOL
    source = read_record(out)["source"]
    assert source["layout"] == "timm" and source["config"] == {"architecture": arch, "num_classes": classes}

    # Lightning, and hf:// through a stand-in for huggingface_hub that serves the folder: the same arrays.
    ckpt = tmp_path / "epoch=3.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in torch_state_dict(state).items()}, "epoch": 3}, ckpt)
    fetched: list[tuple[str, object]] = []

    def snapshot_download(repo_id: str, revision: object = None, allow_patterns: object = None) -> str:
        fetched.append((repo_id, revision))
        return str(folder)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=snapshot_download))
    expected = _arrays(out)
    for name, checkpoint in (("lightning", str(ckpt)), ("hub", "hf://timm/vgg11_bn.tv_in1k@main")):
        other = tmp_path / f"{name}.weights.h5"
        assert main([arch, "--checkpoint", checkpoint, "--output", str(other), "--no-verify", "--quiet"]) == 0
        got = _arrays(other)
        assert got.keys() == expected.keys() and all(np.array_equal(got[k], v) for k, v in expected.items()), name
    assert fetched == [("timm/vgg11_bn.tv_in1k", "main")]
    assert read_record(tmp_path / "hub.weights.h5")["source"]["hub"] == "hf://timm/vgg11_bn.tv_in1k@main"

    # And back in timm's layout, bit for bit.
    back = tmp_path / "back.safetensors"
    args = [arch, "--to", "torch", "--keras-weights", str(out), "--layout", "timm", "--output", str(back)]
    assert main([*args, "--quiet"]) == 0
    written, _ = load_checkpoint(back)
    counters = {k for k in written if k.endswith("num_batches_tracked")}
    assert written.keys() - counters == timm_state.keys() - counters
    assert all(np.array_equal(written[k], timm_state[k]) for k in timm_state if k not in counters)


@pytest.mark.full
@pytest.mark.parametrize("arch", preset_params(default=()))
def test_timm_checkpoint_of_every_preset(arch: str, tmp_path: Path) -> None:
    config = PRESETS[arch]
    timm_state = torchvision_to_timm(randomized_state_dict(config, seed=22), config)
    path = tmp_path / f"{arch}.pth"
    torch.save(torch_state_dict(timm_state), path)
    out = tmp_path / f"{arch}.weights.h5"
    assert main([arch, "--checkpoint", str(path), "--output", str(out), "--quiet"]) == 0
    assert _compare_with_timm(out, arch, timm_state, config.num_classes) <= RTOL


def test_read_checkpoint_takes_a_folder_with_pytorch_model_bin(tmp_path: Path) -> None:
    """What ``parity.export --checkpoint`` reads through: a timm folder whose weights are a pickle, read safely."""
    from parity.convert.to_keras import read_checkpoint

    folder = tmp_path / "vgg11_bn.tv_in1k"
    folder.mkdir()
    torch.save(_timm_expanded("vgg11_bn"), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"architecture": "vgg11_bn.tv_in1k", "num_classes": 1000}))
    state, config, provenance = read_checkpoint("vgg11_bn", folder, quiet=True)
    assert config.num_classes == 1000 and state["classifier.0.weight"].shape == (4096, 512 * 7 * 7)
    assert provenance["layout"] == "timm" and str(provenance["path"]).endswith("pytorch_model.bin")
    assert provenance["config"] == {"architecture": "vgg11_bn.tv_in1k", "num_classes": 1000}
    # A config.json that disagrees with the weights' class count is refused.
    (folder / "config.json").write_text(json.dumps({"architecture": "vgg11_bn", "num_classes": 10}))
    with pytest.raises(ConversionError, match=r"config.json says 10 classes, its weights have 1000.*num_classes=10"):
        read_checkpoint("vgg11_bn", folder, quiet=True)

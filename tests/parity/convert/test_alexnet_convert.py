"""``python -m parity.convert alexnet`` both ways, a checkpoint, and ``weights=PATH`` / ``weights="converted"``.

Full size, so in the extended tier; the quick tier converts a tiny-width AlexNet both ways
(``test_tiny_alexnet_file_round_trip_is_bit_exact``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torchvision

import numpy as np
import pytest

import parity.core.weights_file
import vgg_keras
from parity.compare import LOGIT_RTOL
from parity.convert import main
from parity.convert.random_weights import randomized_state_dict
from parity.core.checkpoint import load_checkpoint
from parity.core.config import ALEXNET
from tests.conftest import torch_state_dict
from vgg_keras.weights import converted_weights_path

SEED = 3


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AlexNet with every tensor random, converted torch -> Keras by the CLI (verified before writing)."""
    out = tmp_path_factory.mktemp("alexnet") / "alexnet.weights.h5"
    assert main(["alexnet", "--init", "random-all", "--seed", str(SEED), "--output", str(out), "--quiet"]) == 0
    return out


def _torchvision(state: dict[str, np.ndarray]) -> torch.nn.Module:
    model = torchvision.models.alexnet().eval()
    model.load_state_dict(torch_state_dict(state), strict=True)
    return model


@pytest.mark.full
@pytest.mark.extended
def test_keras_file_gives_torchvisions_logits_and_round_trips(converted: Path, tmp_path: Path) -> None:
    state = randomized_state_dict(ALEXNET, SEED)
    sidecar = parity.core.weights_file.read_record(converted)
    assert sidecar["arch"] == "alexnet" and sidecar["config"] == ALEXNET.to_dict()

    model = vgg_keras.AlexNet(weights=str(converted), classifier_activation=None)
    x = np.random.default_rng(5).standard_normal((2, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        expected = _torchvision(state)(torch.from_numpy(x)).numpy()
    got = np.asarray(model(x.transpose(0, 2, 3, 1)))
    assert np.max(np.abs(got - expected)) <= LOGIT_RTOL * np.max(np.abs(expected))

    back = tmp_path / "back.pth"
    assert main(["alexnet", "--to", "torch", "--keras-weights", str(converted), "--output", str(back), "--quiet"]) == 0
    again, _ = load_checkpoint(back)
    assert list(again) == list(state)
    assert all(np.array_equal(again[k], v) for k, v in state.items())  # bit for bit both ways

    # A checkpoint (wrapped as training scripts save them) converts to the same file contents.
    wrapped = tmp_path / "trained.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in torch_state_dict(state).items()}, "epoch": 3}, wrapped)
    out = tmp_path / "from_checkpoint.weights.h5"
    assert main(["alexnet", "--checkpoint", str(wrapped), "--output", str(out), "--quiet"]) == 0
    reloaded = vgg_keras.AlexNet(weights=str(out), classifier_activation=None)
    assert all(np.array_equal(a, b) for a, b in zip(reloaded.get_weights(), model.get_weights()))


@pytest.mark.full
@pytest.mark.extended
def test_weights_converted_reads_the_cache(converted: Path) -> None:
    """``weights="converted"`` finds AlexNet's cache entry (staged here: no download is possible)."""
    path = converted_weights_path("alexnet")
    assert path.name == "vgg_parity_alexnet_imagenet1k_v1.weights.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(converted, path)
    shutil.copyfile(parity.core.weights_file.sidecar_path(converted), parity.core.weights_file.sidecar_path(path))
    features = vgg_keras.AlexNet(weights="converted", include_top=False, pooling="avg")
    assert tuple(features.output.shape) == (None, 256)
    model = vgg_keras.AlexNet(weights="converted")
    from_file = vgg_keras.AlexNet(weights=str(converted))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), from_file.get_weights()))
    with pytest.raises(ValueError, match="Received: classes=10"):
        vgg_keras.AlexNet(weights="converted", classes=10)


@pytest.mark.full
@pytest.mark.extended
def test_vgg_checkpoint_is_refused_with_the_right_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from parity.core.config import PRESETS

    state = torch_state_dict(randomized_state_dict(PRESETS["vgg11"], seed=1))
    path = tmp_path / "vgg11.pth"
    torch.save(state, path)
    assert main(["alexnet", "--checkpoint", str(path), "--output", str(tmp_path / "x.weights.h5")]) != 0
    err = capsys.readouterr().err
    assert "parity.convert vgg11 --checkpoint" in err and "Received:" in err


@pytest.mark.parametrize("include_top", [True, False])
def test_tiny_alexnet_file_round_trip_is_bit_exact(include_top: bool, tmp_path: Path) -> None:
    """torch -> Keras file -> torch, every tensor random: the name map and layouts of AlexNet's geometry."""
    from parity.convert.to_torch import torch_state_dict_from_keras
    from parity.convert.weight_arrays import write_keras_weights
    from parity.core.h5file import read_layer_arrays

    config = ALEXNET.replace(stages=((4,), (6,), (8,), (8,), (6,)), hidden=(16, 16), num_classes=7, name="tiny")
    state = randomized_state_dict(config, seed=4, include_top=include_top)
    path = tmp_path / "w.weights.h5"
    write_keras_weights(state, config, path, include_top=include_top)
    arrays = read_layer_arrays(path)
    assert arrays["block1_conv1"][0].shape == (11, 11, 3, 4)
    back = torch_state_dict_from_keras(arrays, config, include_top=include_top)
    assert list(back) == list(state)
    assert all(np.array_equal(back[k], v) for k, v in state.items())

"""Finding the state dict in a checkpoint, timm's layout, and what timm's head computes (tiny configs)."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

import numpy as np
import pytest

import vgg_keras
import vgg_torch
from parity.compare import LOGIT_RTOL, keras_forward
from parity.convert.random_weights import randomized_state_dict
from parity.convert.weight_arrays import assign_keras_weights, convert_state_dict
from parity.core.checkpoint import CheckpointError, read_checkpoint_file
from parity.core.config import PRESETS, VGGConfig
from parity.core.state_dicts import find_state_dict, layout_shapes, timm_to_torchvision, torchvision_to_timm
from tests.conftest import TINY, TINY_BN, torch_state_dict
from tests.timm_vgg import TimmVGG

#: fp32 logits of two implementations of one function, as everywhere in the project: 1e-5 × max |logit|.
RTOL = LOGIT_RTOL
#: timm's head and torchvision's differ above the pooled size by far more than float noise: at least
#: 1% of the largest logit (measured on the tiny configs: 6.3% and 8.6% at 24 px, 7.2% and 26% at 32 px;
#: within 3.3e-7 at and below 16 px).
HEADS_DIFFER = 1e-2
#: The tiny configs' pooled map is 2×2 after three 2× pools: 16 px is what 224 px is to a preset.
AT_GRID, BELOW_GRID, ABOVE_GRID = 16, 8, 24


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)))


def _batch(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 3, size, size), dtype=np.float32)


def _timm_model(config: VGGConfig, timm_state: dict[str, np.ndarray]) -> TimmVGG:
    model = TimmVGG(config)
    model.load_state_dict(torch_state_dict(timm_state), strict=True)  # timm's key names and shapes, exactly
    return model.eval()


def _keras_logits(config: VGGConfig, state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    model = vgg_keras.build_vgg(config.replace(input_size=None), classifier_activation=None)
    assign_keras_weights(model, convert_state_dict(state, config))
    return keras_forward(model, x)["logits"]


def _torch_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("config", [TINY, TINY_BN], ids=["tiny", "tiny_bn"])
def test_timm_checkpoint_gives_timms_logits_at_and_below_the_pooled_size(config: VGGConfig) -> None:
    torchvision_state = randomized_state_dict(config, seed=3)  # every tensor random, BN statistics included
    timm_state = torchvision_to_timm(torchvision_state, config)
    timm = _timm_model(config, timm_state)
    found = find_state_dict(torch_state_dict(timm_state), config)
    assert found.fits and found.layout == "timm" and found.entry == () and found.prefix == ""
    assert found.state.keys() == torchvision_state.keys()
    assert all(np.array_equal(found.state[k], v) for k, v in torchvision_state.items())  # reshapes only
    for size in (AT_GRID, BELOW_GRID):
        x = _batch(size)
        expected = _torch_logits(timm, x)
        got = _keras_logits(config, found.state, x)
        assert _max_abs(got, expected) <= RTOL * np.max(np.abs(expected)), size


def test_timm_head_differs_above_the_pooled_size_and_keras_keeps_torchvisions() -> None:
    config = TINY_BN
    state = randomized_state_dict(config, seed=4)
    timm = _timm_model(config, torchvision_to_timm(state, config))
    torchvision_model = vgg_torch.build_vgg(config, init_weights=False)
    torchvision_model.load_state_dict(torch_state_dict(state))
    x = _batch(ABOVE_GRID)
    keras_logits = _keras_logits(config, state, x)
    ours = _torch_logits(torchvision_model.eval(), x)
    theirs = _torch_logits(timm, x)
    scale = np.max(np.abs(ours))
    assert _max_abs(keras_logits, ours) <= RTOL * scale  # Keras computes torchvision's head
    assert _max_abs(theirs, ours) >= HEADS_DIFFER * scale  # which is not timm's fully convolutional one


def test_fc1_rows_in_hwc_order_are_caught() -> None:
    """The planted mistake: reading fc1's 7×7 filter position-major instead of channel-major."""
    config = TINY
    timm_state = torchvision_to_timm(randomized_state_dict(config, seed=5), config)
    expected = _torch_logits(_timm_model(config, timm_state), _batch(AT_GRID))
    right = timm_to_torchvision(timm_state, config)
    wrong = dict(right)
    fc1 = timm_state["pre_logits.fc1.weight"]
    wrong["classifier.0.weight"] = np.ascontiguousarray(fc1.transpose(0, 2, 3, 1)).reshape(fc1.shape[0], -1)
    scale = np.max(np.abs(expected))
    assert _max_abs(_keras_logits(config, right, _batch(AT_GRID)), expected) <= RTOL * scale
    assert _max_abs(_keras_logits(config, wrong, _batch(AT_GRID)), expected) > RTOL * scale


@pytest.mark.parametrize("arch", list(PRESETS))
def test_timm_layout_has_timms_documented_shapes(arch: str) -> None:
    shapes = layout_shapes(PRESETS[arch], "timm")
    assert shapes["pre_logits.fc1.weight"] == (4096, 512, 7, 7)
    assert shapes["pre_logits.fc2.weight"] == (4096, 4096, 1, 1)
    assert shapes["head.fc.weight"] == (1000, 4096)
    assert not any(k.startswith("classifier.") for k in shapes)
    torchvision_keys = {k for k in layout_shapes(PRESETS[arch], "torchvision") if k.startswith("features.")}
    assert torchvision_keys == {k for k in shapes if k.startswith("features.")}


def test_timm_layout_round_trips_bit_for_bit() -> None:
    state = randomized_state_dict(TINY_BN, seed=6)
    back = timm_to_torchvision(torchvision_to_timm(state, TINY_BN), TINY_BN)
    assert back.keys() == state.keys() and all(np.array_equal(back[k], v) for k, v in state.items())


# --------------------------------------------------------------------------- wrapped checkpoints


def _lightning(state: dict[str, torch.Tensor], attribute: str) -> dict[str, object]:
    """What Lightning's ``Trainer.save_checkpoint`` holds for a LightningModule with the network as ``attribute``."""
    first = next(iter(state.values()))
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.5.0",
        "state_dict": {f"{attribute}.{k}": v for k, v in state.items()}
        | {"criterion.weight": torch.ones(7)},  # a loss module's buffer: another module of the LightningModule
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 3}}}},
        "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.5)}},
        "optimizer_states": [
            {"state": {0: {"momentum_buffer": torch.zeros_like(first)}}, "param_groups": [{"lr": 0.1}]}
        ],
        "lr_schedulers": [{"step_size": 30, "gamma": 0.1}],
        "hyper_parameters": {"lr": 0.1, "arch": "vgg11_bn"},
    }


@pytest.mark.parametrize("attribute", ["model", "net", "backbone"])
@pytest.mark.parametrize("layout", ["torchvision", "timm"])
def test_lightning_checkpoint_is_found_by_its_keys(tmp_path: Path, attribute: str, layout: str) -> None:
    config = TINY_BN
    state = randomized_state_dict(config, seed=7)
    saved = state if layout == "torchvision" else torchvision_to_timm(state, config)
    path = tmp_path / "epoch=3-step=120.ckpt"
    torch.save(_lightning(torch_state_dict(saved), attribute), path)
    raw, _ = read_checkpoint_file(path)  # torch.load(weights_only=True)
    found = find_state_dict(raw, config)
    assert found.fits and found.layout == layout
    assert found.entry == ("state_dict",) and found.prefix == f"{attribute}."
    assert "criterion.weight" in found.ignored and "optimizer_states" in found.ignored
    assert all(np.array_equal(found.state[k], v) for k, v in state.items())


@pytest.mark.parametrize("wrapper", ["model", "ema", "model_ema", "module"])
def test_any_single_entry_holding_the_network_is_found(wrapper: str) -> None:
    state = randomized_state_dict(TINY, seed=8)
    tensors = torch_state_dict(state)
    found = find_state_dict({wrapper: {f"module.{k}": v for k, v in tensors.items()}, "step": 10}, TINY)
    assert found.fits and found.entry == (wrapper,) and found.prefix == "module."
    assert all(np.array_equal(found.state[k], v) for k, v in state.items())


def test_several_fitting_state_dicts_are_refused_until_one_is_picked() -> None:
    live, ema = (torch_state_dict(randomized_state_dict(TINY, seed=s)) for s in (9, 10))
    ckpt = {"state_dict": live, "state_dict_ema": ema, "epoch": 5}
    with pytest.raises(CheckpointError, match=r"holds 2 state dicts that fit tiny .*--key ENTRY") as info:
        find_state_dict(ckpt, TINY)
    assert "\n" not in str(info.value) and "Received: checkpoint=" in str(info.value)
    picked = find_state_dict(ckpt, TINY, key="state_dict_ema")
    assert picked.fits and torch.equal(torch.from_numpy(picked.state["features.0.weight"]), ema["features.0.weight"])
    # A key prefix inside one state dict picks the same way: a LightningModule with its EMA copy as an attribute.
    both = {"state_dict": {f"model.{k}": v for k, v in live.items()} | {f"ema_model.{k}": v for k, v in ema.items()}}
    with pytest.raises(CheckpointError, match="holds 2 state dicts"):
        find_state_dict(both, TINY)
    picked = find_state_dict(both, TINY, key="ema_model")
    assert picked.fits and picked.prefix == "ema_model."
    with pytest.raises(CheckpointError, match=r"no entry and no key prefix 'nope'.*Received: --key nope"):
        find_state_dict(ckpt, TINY, key="nope")


def test_a_stray_key_is_named_with_the_layout() -> None:
    state = torch_state_dict(torchvision_to_timm(randomized_state_dict(TINY, seed=11), TINY))
    stray = {"state_dict": {f"model.{k}": v for k, v in state.items()} | {"model.features.99.weight": torch.ones(3)}}
    found = find_state_dict(stray, TINY)
    assert not found.fits and found.layout == "timm" and found.prefix == "model."
    assert found.unexpected == ("model.features.99.weight",) and found.missing == ()
    assert found.received == "unexpected=['model.features.99.weight'], missing=[]"
    del stray["state_dict"]["model.head.fc.bias"]
    assert find_state_dict(stray, TINY).missing == ("model.head.fc.bias",)
    # The check bites: the same dict without the stray key (and with its bias) fits.
    assert find_state_dict({f"model.{k}": v for k, v in state.items()}, TINY).fits


def test_no_state_dict_is_refused() -> None:
    with pytest.raises(CheckpointError, match="holds no state dict"):
        find_state_dict({"epoch": 3, "optimizer_states": [{"lr": 0.1}]}, TINY)


def test_torchvision_presets_keep_their_own_keys() -> None:
    """The finder takes torchvision's own state dicts as they are (no prefix, no wrapper)."""
    with torch.device("meta"):
        keys = list(torchvision.models.vgg11_bn().state_dict())
    fake = {k: np.zeros(1, np.float32) for k in keys}
    found = find_state_dict(fake, PRESETS["vgg11_bn"])
    assert found.layout == "torchvision" and found.prefix == "" and not found.missing and not found.unexpected

"""Any number of input channels: keras.applications' rule with weights=None, timm's with converted weights.

The adaptation (:func:`parity.core.layouts.adapt_input_channels`) is checked three
ways: against its definition on numbers, against what it promises a
convolution does (a grey image through the summed kernel equals the RGB image
``(g, g, g)`` through the original), and end to end: torch with its state
dict's ``features.0.weight`` adapted, against Keras loading the unadapted
3-channel converted file into an n-channel model.
"""

from __future__ import annotations

from pathlib import Path

import torch

import keras
import numpy as np
import pytest

import parity.core.weights_file
import vgg_keras
import vgg_keras.weights
import vgg_torch
from parity.compare import LOGIT_RTOL, keras_forward, torch_forward
from parity.convert.random_weights import randomized_state_dict
from parity.convert.weight_arrays import write_keras_weights
from parity.core.config import PRESETS, VGGConfig
from parity.core.errors import WeightsFileError
from parity.core.layouts import (
    KERAS_IN_AXIS,
    TORCH_IN_AXIS,
    adapt_input_channels,
    can_adapt_input_channels,
    conv_oihw_to_hwio,
)
from parity.core.weights_file import sidecar_path, stage_converted_weights
from tests.conftest import TINY_CONFIGS, torch_state_dict

#: torch (adapted state dict) against Keras (adapted while loading) on the tiny
#: configs, logits of order 1: only fp32 summation order differs between the
#: two frameworks' kernels; measured up to 3.1e-6 over all cases here. A
#: missing 3/n rescale moves the logits by 0.5 or more (asserted below).
CHANNELS_ATOL = 1e-5
#: conv(adapted kernel, replicated input) against conv(RGB kernel, input): the
#: same sums in another order, in float32.
CONV_ATOL = 1e-5


def _write_converted(sd: dict[str, np.ndarray], config: VGGConfig, path: Path, include_top: bool = True) -> Path:
    """A converted file with its provenance record, as ``python -m parity.convert`` writes it."""
    with stage_converted_weights(path) as staged:
        write_keras_weights(sd, config, staged.path, include_top=include_top)
        staged.commit(
            {"arch": config.name, "config": config.to_dict(), "include_top": include_top, "source": {"kind": "test"}}
        )
    return path


def _adapted_torch(
    sd: dict[str, np.ndarray], config: VGGConfig, channels: int, rescale: bool = True
) -> torch.nn.Module:
    """torch reference: the state dict's first kernel adapted, loaded into an n-channel model.

    Features only if ``sd`` holds only features.
    """
    sd = dict(sd)
    kernel = adapt_input_channels(sd["features.0.weight"], channels, TORCH_IN_AXIS)
    if not rescale and channels not in (1, 3):
        kernel = kernel * np.float32(channels / 3)  # the wrong adaptation: repeated but not rescaled
    sd["features.0.weight"] = kernel
    model = vgg_torch.build_vgg(config.replace(in_channels=channels), init_weights=False)
    if any(k.startswith("classifier.") for k in sd):
        model.load_state_dict(torch_state_dict(sd), strict=True)
    else:
        model.features.load_state_dict(
            {k.removeprefix("features."): v for k, v in torch_state_dict(sd).items()}, strict=True
        )
    return model.eval()


def test_adaptation_by_definition() -> None:
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)  # torch OIHW
    assert adapt_input_channels(kernel, 3, TORCH_IN_AXIS) is kernel
    grey = adapt_input_channels(kernel, 1, TORCH_IN_AXIS)
    assert grey.shape == (5, 1, 3, 3) and np.max(np.abs(grey[:, 0] - kernel.sum(axis=1))) == 0.0
    for n in (2, 4, 5, 6, 7):
        got = adapt_input_channels(kernel, n, TORCH_IN_AXIS)
        expected = np.concatenate([kernel] * -(-n // 3), axis=1)[:, :n] * np.float32(3 / n)
        assert got.shape == (5, n, 3, 3) and got.dtype == np.float32
        assert np.max(np.abs(got - expected)) == 0.0
        # Keras layout: the same numbers, on axis 2.
        keras_got = adapt_input_channels(conv_oihw_to_hwio(kernel), n, KERAS_IN_AXIS)
        assert np.max(np.abs(keras_got - conv_oihw_to_hwio(got))) == 0.0
    four = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    assert adapt_input_channels(four, 4, TORCH_IN_AXIS) is four


@pytest.mark.parametrize(
    ("kernel_shape", "channels", "axis", "fragment"),
    [
        ((5, 4, 3, 3), 2, 1, "Only a 3-channel"),
        ((5, 6, 3, 3), 1, 1, "Only a 3-channel"),
        ((5, 3, 3, 3), 0, 1, "positive integer"),
        ((5, 3, 3, 3), 2, 4, "`axis` must be an axis"),
    ],
)
def test_adaptation_refuses_what_it_cannot_do(
    kernel_shape: tuple[int, ...], channels: int, axis: int, fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        adapt_input_channels(np.zeros(kernel_shape, np.float32), channels, axis)
    assert "Received:" in str(info.value) and "\n" not in str(info.value)


def test_the_predicate_says_what_the_adaptation_does() -> None:
    for have in range(1, 8):
        for want in range(1, 8):
            kernel = np.zeros((2, have, 3, 3), np.float32)
            try:
                adapt_input_channels(kernel, want, TORCH_IN_AXIS)
                adapts = True
            except ValueError:
                adapts = False
            assert can_adapt_input_channels(have, want) == adapts, (have, want)


@pytest.mark.parametrize("channels", [1, 6])
def test_adapted_conv_sees_replicated_input_as_rgb(channels: int) -> None:
    """1 channel: grey g through the summed kernel == (g, g, g) through RGB. 6: (x, x) == x."""
    rng = np.random.default_rng(1)
    kernel = torch.from_numpy(rng.standard_normal((8, 3, 3, 3)).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((2, 3 if channels == 6 else 1, 16, 16)).astype(np.float32))
    rgb = x.repeat(1, 3, 1, 1) if channels == 1 else x
    adapted = torch.from_numpy(adapt_input_channels(kernel.numpy(), channels, TORCH_IN_AXIS))
    wide = x if channels == 1 else x.repeat(1, 2, 1, 1)
    expected = torch.nn.functional.conv2d(rgb, kernel, padding=1)
    got = torch.nn.functional.conv2d(wide, adapted, padding=1)
    assert (got - expected).abs().max().item() <= CONV_ATOL


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("channels", [1, 2, 4, 5])
@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_keras_weights_file_adapted_like_torch_state_dict(
    name: str, channels: int, data_format: str, tmp_path: Path
) -> None:
    keras.config.set_image_data_format(data_format)
    cfg = TINY_CONFIGS[name]
    sd = randomized_state_dict(cfg, seed=channels)
    path = _write_converted(sd, cfg, tmp_path / f"{name}.weights.h5")
    n_cfg = cfg.replace(in_channels=channels)
    model = vgg_keras.build_vgg(n_cfg, weights=str(path), classifier_activation=None)
    shape = (channels, None, None) if data_format == "channels_first" else (None, None, channels)
    assert tuple(model.input.shape)[1:] == (
        shape if cfg.pool_size is not None else tuple(32 if s is None else s for s in shape)
    )
    x = np.random.default_rng(2).standard_normal((2, channels, 32, 32), dtype=np.float32)
    expected = torch_forward(_adapted_torch(sd, cfg, channels), x)["logits"]
    got = keras_forward(model, x)["logits"]
    assert np.max(np.abs(got - expected)) <= CHANNELS_ATOL
    if channels not in (1, 3):
        # The check bites: the same kernels without the 3/n rescale are far off.
        wrong = torch_forward(_adapted_torch(sd, cfg, channels, rescale=False), x)["logits"]
        assert np.max(np.abs(got - wrong)) > 100 * CHANNELS_ATOL


@pytest.mark.slow
def test_weights_none_any_channels_both_formats() -> None:
    for data_format in ("channels_last", "channels_first"):
        keras.config.set_image_data_format(data_format)
        for channels in (1, 2, 4, 13):
            shape = (channels, None, None) if data_format == "channels_first" else (None, None, channels)
            model = vgg_keras.VGG11(weights=None, include_top=False, input_shape=shape)
            assert model.get_layer("block1_conv1").kernel.shape == (3, 3, channels, 64)
            tensor = keras.Input(shape=(channels, 32, 32) if data_format == "channels_first" else (32, 32, channels))
            assert (
                vgg_keras.VGG11(include_top=False, input_tensor=tensor).get_layer("block1_conv1").kernel.shape[2]
                == channels
            )
        keras.config.set_image_data_format("channels_last")


def test_channels_unknown_or_config_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="must have 3 channels.*Received: input_shape=\\(None, None, None\\)"):
        vgg_keras.VGG11(include_top=False, input_shape=(None, None, None))
    with pytest.raises(ValueError, match=r"config.replace\(in_channels=...\)"):
        vgg_keras.build_vgg(TINY_CONFIGS["tiny"], input_shape=(32, 32, 4))


def test_file_for_other_channels_that_cannot_adapt_is_refused(tmp_path: Path) -> None:
    cfg = TINY_CONFIGS["tiny"].replace(in_channels=4)
    path = _write_converted(randomized_state_dict(cfg), cfg, tmp_path / "four.weights.h5")
    with pytest.raises(WeightsFileError, match="cannot be adapted to 2.*Received: in_channels=2"):
        vgg_keras.build_vgg(cfg.replace(in_channels=2), weights=str(path))
    # 4 -> 4 loads unchanged.
    vgg_keras.build_vgg(cfg, weights=str(path))


def test_a_load_builds_its_fix_advice_once_and_only_for_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real = parity.core.weights_file.fix_command

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(parity.core.weights_file, "fix_command", counting)
    monkeypatch.setattr(vgg_keras.weights, "fix_command", counting)
    cfg = TINY_CONFIGS["tiny"]
    path = _write_converted(randomized_state_dict(cfg), cfg, tmp_path / "tiny.weights.h5")
    vgg_keras.build_vgg(cfg, weights=str(path))
    assert calls == []
    sidecar = sidecar_path(path)
    sidecar.write_text(sidecar.read_text().replace('"sha256": "', '"sha256": "0'))
    with pytest.raises(WeightsFileError, match="does not match the sha256"):
        vgg_keras.build_vgg(cfg, weights=str(path))
    assert calls == [path]
    sidecar.unlink()
    path.write_bytes(b"not hdf5")
    calls.clear()
    with pytest.raises(WeightsFileError, match="not a readable HDF5 weights file"):
        vgg_keras.build_vgg(cfg, weights=str(path))
    assert calls == [path]


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_preset_features_file_with_input_shape_channels(data_format: str, tmp_path: Path) -> None:
    """keras.applications' call, VGG11_BN(include_top=False, input_shape=(..., 2)), with a converted 3-channel file."""
    keras.config.set_image_data_format(data_format)
    cfg = PRESETS["vgg11_bn"]
    sd = randomized_state_dict(cfg, seed=4, include_top=False)
    path = _write_converted(sd, cfg, tmp_path / "vgg11_bn_features.weights.h5", include_top=False)
    shape = (2, None, None) if data_format == "channels_first" else (None, None, 2)
    model = vgg_keras.VGG11_BN(weights=str(path), include_top=False, input_shape=shape)
    x = np.random.default_rng(7).standard_normal((2, 2, 32, 32), dtype=np.float32)
    expected = torch_forward(_adapted_torch(sd, cfg, 2), x, include_top=False)["block5"]
    got = keras_forward(model, x, include_top=False)["block5"]
    # Deep features are not of order 1: the parity suite's relative tolerance (fp32 summation order) applies.
    assert np.max(np.abs(got - expected)) <= LOGIT_RTOL * np.max(np.abs(expected))


@pytest.mark.full
@pytest.mark.parametrize(
    ("arch", "channels", "data_format"),
    [("vgg11_bn", 1, "channels_first"), ("vgg11", 4, "channels_last")],
)
@pytest.mark.extended
def test_preset_converted_file_with_n_channels(arch: str, channels: int, data_format: str, tmp_path: Path) -> None:
    keras.config.set_image_data_format(data_format)
    cfg = PRESETS[arch]
    sd = randomized_state_dict(cfg, seed=5)
    path = _write_converted(sd, cfg, tmp_path / f"{arch}.weights.h5")
    shape = (channels, None, None) if data_format == "channels_first" else (None, None, channels)
    model = getattr(vgg_keras, arch.upper())(weights=str(path), input_shape=shape, classifier_activation=None)
    x = np.random.default_rng(6).standard_normal((2, channels, 64, 64), dtype=np.float32)
    expected = torch_forward(_adapted_torch(sd, cfg, channels), x)["logits"]
    got = keras_forward(model, x)["logits"]
    # Preset logits reach ~10-100: the same relative floor as the parity suite.
    assert np.max(np.abs(got - expected)) <= LOGIT_RTOL * np.max(np.abs(expected))

"""The converter's pieces: layout transforms, the generated name map, strictness, and checks that bite."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

import parity.converter
import vgg_keras
import vgg_keras.model
from parity.compare import ParityReport, build_pair, compare_outputs, keras_forward, torch_forward
from parity.config import PRESETS, VGGConfig
from parity.converter import ConversionError, assign_keras_weights, convert_state_dict, infer_num_classes, weight_map
from parity.layouts import conv_oihw_to_hwio, dense_out_in_to_in_out, dense_rows_chw_to_hwc
from parity.random_weights import randomized_state_dict
from tests.conftest import TINY_CONFIGS

#: Float64 reference vs float64 transform: only summation order differs.
FLOAT64_ATOL = 1e-9


def test_conv_oihw_to_hwio_moves_each_element() -> None:
    w = np.arange(5 * 4 * 3 * 3, dtype=np.float32).reshape(5, 4, 3, 3)
    k = conv_oihw_to_hwio(w)
    assert k.shape == (3, 3, 4, 5)
    assert k[2, 1, 3, 4] == w[4, 3, 2, 1]


def test_dense_transpose() -> None:
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(dense_out_in_to_in_out(w), w.T)


def test_first_dense_rows_follow_flatten_orders() -> None:
    rng = np.random.default_rng(0)
    c, h, w, out = 5, 3, 4, 6
    fmap_chw = rng.standard_normal((c, h, w))
    torch_w = rng.standard_normal((out, c * h * w))
    torch_y = torch_w @ fmap_chw.reshape(-1)  # torch.flatten: C, H, W order
    keras_y = fmap_chw.transpose(1, 2, 0).reshape(-1) @ dense_rows_chw_to_hwc(torch_w, c, h, w)  # Keras: H, W, C
    assert np.max(np.abs(torch_y - keras_y)) <= FLOAT64_ATOL
    # The plain transpose is the classic bug: it must not agree.
    wrong_y = fmap_chw.transpose(1, 2, 0).reshape(-1) @ torch_w.T
    assert np.max(np.abs(torch_y - wrong_y)) > 1e-2
    with pytest.raises(ValueError, match="needs 60 inputs"):
        dense_rows_chw_to_hwc(torch_w[:, :59], c, h, w)


@pytest.mark.parametrize("arch", list(PRESETS))
def test_name_map_covers_torchvision_state_dict(arch: str) -> None:
    with torch.device("meta"):
        keys = [k for k in torchvision.models.get_model(arch).state_dict() if not k.endswith("num_batches_tracked")]
    mapped = [m.torch_key for m in weight_map(PRESETS[arch])]
    assert sorted(mapped) == sorted(keys)
    assert len(set(mapped)) == len(mapped)
    first_dense = next(m for m in weight_map(PRESETS[arch]) if m.keras_layer == "fc1" and m.keras_index == 0)
    assert first_dense.torch_key == "classifier.0.weight"


def test_conversion_is_strict() -> None:
    cfg = TINY_CONFIGS["tiny_bn"]
    sd = randomized_state_dict(cfg)
    with pytest.raises(ConversionError, match=r"unexpected keys: extra\.weight"):
        convert_state_dict({**sd, "extra.weight": np.zeros(1, np.float32)}, cfg)
    missing = {k: v for k, v in sd.items() if k != "features.1.running_var"}
    with pytest.raises(ConversionError, match=r"missing keys: features\.1\.running_var"):
        convert_state_dict(missing, cfg)
    wrong = {**sd, "features.0.weight": np.zeros((5, 3, 3, 3), np.float32)}
    with pytest.raises(ConversionError, match=r"shape mismatches: features\.0\.weight \(5, 3, 3, 3\) != \(4, 3, 3, 3\)"):
        convert_state_dict(wrong, cfg)
    with pytest.raises(ConversionError, match=r"unexpected keys: classifier\.0\.weight"):
        convert_state_dict(sd, cfg, include_top=False)


def test_assignment_is_strict() -> None:
    cfg = TINY_CONFIGS["tiny"]
    weights = convert_state_dict(randomized_state_dict(cfg), cfg)
    model = vgg_keras.build_vgg(cfg)
    before = model.get_layer("fc1").kernel.numpy().copy()
    partial = {k: v for k, v in weights.items() if k != "block2_conv2"}
    with pytest.raises(ConversionError, match="model layers left unassigned: block2_conv2"):
        assign_keras_weights(model, partial)
    with pytest.raises(ConversionError, match="layers not in the model: fc1"):
        assign_keras_weights(vgg_keras.build_vgg(cfg, include_top=False), weights)
    other = vgg_keras.build_vgg(cfg.replace(num_classes=3))
    with pytest.raises(ConversionError, match="shape mismatches: predictions"):
        assign_keras_weights(other, weights)
    assert np.array_equal(model.get_layer("fc1").kernel.numpy(), before)  # nothing assigned on failure


def test_num_classes_read_from_checkpoint() -> None:
    cfg = PRESETS["vgg11_bn"]
    with torch.device("meta"):
        sd = {k: np.empty(v.shape, np.float32) for k, v in torchvision.models.vgg11_bn(num_classes=10).state_dict().items()}
    assert infer_num_classes(sd, cfg) == 10


def _parity(cfg: VGGConfig, size: tuple[int, int], seed: int = 0) -> ParityReport:
    reference, model = build_pair(cfg, randomized_state_dict(cfg, seed))
    x = np.random.default_rng(seed + 1).standard_normal((3, 3, *size), dtype=np.float32)
    return compare_outputs(torch_forward(reference, x), keras_forward(model, x))


def test_wrong_flatten_order_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parity.converter, "dense_rows_chw_to_hwc", lambda w, c, h, ww: w.T)
    report = _parity(TINY_CONFIGS["tiny"], (37, 45))
    assert not report.passed
    assert report.first_divergent == "logits"


def test_bn_epsilon_1e3_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vgg_keras.model, "BN_EPSILON", 1e-3)
    report = _parity(TINY_CONFIGS["tiny_bn"], (37, 45))
    assert not report.passed
    assert report.first_divergent == "block1"

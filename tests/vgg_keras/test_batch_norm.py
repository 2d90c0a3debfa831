"""Batch norm in training mode: outputs and running statistics as torch computes them."""

from __future__ import annotations

from pathlib import Path

import torch

import h5py
import keras
import numpy as np
import pytest

import vgg_keras
from parity.compare import build_pair
from parity.convert.random_weights import randomized_state_dict
from parity.convert.weight_arrays import weight_map
from parity.core.config import BN_EPSILON, BN_MOMENTUM_TORCH
from parity.core.h5file import read_keras_weights
from tests.conftest import TINY_BN
from vgg_keras.layers import BatchNormalization

#: Max |diff| relative to max |torch| for training-mode outputs and running
#: statistics in fp32. Both frameworks compute the same formulas; only the
#: order of the per-channel reductions differs, which measures 1.7e-7 here.
#: Stock Keras batch norm is off by (1 - momentum) * var / (n - 1) per step in
#: the moving variance: 2.3e-2 relative after 5 steps at n = 32 values per channel.
BN_RTOL: float = 1e-5


def _rel(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(ours, np.float64) - ref)) / np.max(np.abs(ref)))


def _layer_diffs(layer_class: type[keras.layers.BatchNormalization], steps: int = 5) -> dict[str, float]:
    """Runs one BN layer in both frameworks for some training steps; worst relative diff per quantity."""
    rng = np.random.default_rng(0)
    channels = 6
    reference = torch.nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM_TORCH)
    gamma, beta = rng.uniform(0.5, 1.5, channels).astype(np.float32), rng.normal(0, 0.3, channels).astype(np.float32)
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(gamma))
        reference.bias.copy_(torch.from_numpy(beta))
    layer = layer_class(axis=-1, epsilon=BN_EPSILON, momentum=1.0 - BN_MOMENTUM_TORCH)
    layer.build((None, 4, 4, channels))
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    worst = {"output": 0.0, "running_mean": 0.0, "running_var": 0.0}
    reference.train()
    for _ in range(steps):
        x = (rng.standard_normal((2, channels, 4, 4)) * 2 + 1).astype(np.float32)  # n = 2 * 4 * 4 = 32
        with torch.no_grad():
            expected = reference(torch.from_numpy(x)).numpy()
        got = keras.ops.convert_to_numpy(layer(np.transpose(x, (0, 2, 3, 1)), training=True))
        worst["output"] = max(worst["output"], _rel(np.transpose(got, (0, 3, 1, 2)), expected))
        worst["running_mean"] = max(
            worst["running_mean"], _rel(layer.moving_mean.numpy(), reference.running_mean.numpy())
        )
        worst["running_var"] = max(
            worst["running_var"], _rel(layer.moving_variance.numpy(), reference.running_var.numpy())
        )
    return worst


def test_layer_matches_torch_in_training() -> None:
    diffs = _layer_diffs(BatchNormalization)
    assert all(v <= BN_RTOL for v in diffs.values()), diffs


def test_stock_keras_batch_norm_fails() -> None:
    diffs = _layer_diffs(keras.layers.BatchNormalization)
    assert diffs["output"] <= BN_RTOL and diffs["running_mean"] <= BN_RTOL
    assert diffs["running_var"] > 100 * BN_RTOL, diffs


def test_model_training_forward_and_running_stats() -> None:
    config = TINY_BN.replace(dropout=0.0)
    reference, model = build_pair(config, randomized_state_dict(config, seed=3))
    reference.train()
    rng = np.random.default_rng(1)
    bns = [m for m in weight_map(config) if "running" in m.torch_key]
    for _ in range(3):
        x = rng.standard_normal((2, 3, 32, 32), dtype=np.float32)
        with torch.no_grad():
            expected = reference(torch.from_numpy(x)).numpy()
        got = keras.ops.convert_to_numpy(model(np.transpose(x, (0, 2, 3, 1)), training=True))
        assert _rel(got, expected) <= BN_RTOL
    state = reference.state_dict()
    for m in bns:
        ours = model.get_layer(m.keras_layer).weights[m.keras_index].numpy()
        assert _rel(ours, state[m.torch_key].numpy()) <= BN_RTOL, m.torch_key


@pytest.mark.slow
def test_weights_file_interchangeable_with_stock_batch_norm(tmp_path: Path) -> None:
    model = vgg_keras.build_vgg(TINY_BN)
    assert all(type(layer) is BatchNormalization for layer in model.layers if "_bn" in layer.name)
    for layer in model.layers:
        for w in layer.weights:
            w.assign(np.random.default_rng(len(w.path)).standard_normal(w.shape).astype(np.float32))
    path = tmp_path / "ours.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "r") as f:
        groups: list[str] = []
        f.visit(groups.append)
    assert any(g.endswith("/batch_normalization/vars") for g in groups)  # the class name Keras' own layer writes

    def stock(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, BatchNormalization):
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    plain = keras.models.clone_model(model, clone_function=stock)
    assert not any(type(layer) is BatchNormalization for layer in plain.layers)
    for load in (plain.load_weights, lambda p: read_keras_weights(plain, p)):
        load(path)
        assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(plain.weights, model.weights, strict=True))
    plain.save_weights(tmp_path / "stock.weights.h5")
    again = vgg_keras.build_vgg(TINY_BN)
    again.load_weights(tmp_path / "stock.weights.h5")
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(again.weights, model.weights, strict=True))


def test_serializes() -> None:
    model = vgg_keras.build_vgg(TINY_BN)
    restored = keras.models.model_from_json(model.to_json())
    assert type(restored.get_layer("block1_bn1")) is BatchNormalization


def test_inference_unchanged() -> None:
    layer = BatchNormalization(axis=-1, epsilon=BN_EPSILON)
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 3)).astype(np.float32)
    stock = keras.layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON)
    assert np.array_equal(keras.ops.convert_to_numpy(layer(x)), keras.ops.convert_to_numpy(stock(x)))

"""The paper-style AlexNet recipe: one config, both frameworks, its parameter count, parity, the refused export."""

from __future__ import annotations

from pathlib import Path

import torch

import numpy as np
import pytest

import vgg_keras
import vgg_torch
from parity.compare import build_pair, compare_outputs, keras_forward, torch_forward
from parity.convert.random_weights import randomized_state_dict
from parity.core.config import RECIPES, get_named_config, layer_plan
from parity.core.errors import ConversionError

CONFIG = RECIPES["paper_alexnet"]
#: Counted by hand from the recipe: convolutions 34,944 + 614,656 + 885,120 + 1,327,488 + 884,992; three batch
#: norms 2 x (96 + 256 + 256); fc1 9,216 x 4,096 + 4,096; fc2 4,096 x 4,096 + 4,096; predictions 4,096 x 10 + 10.
PAPER_ALEXNET_PARAMS = 58_323_530
#: The recipe's widths narrowed, every other field (kernels, strides, paddings, pools, batch norms) kept.
TINY = CONFIG.replace(stages=((4,), (6,), (8,), (8,), (6,)), hidden=(16, 16), name="tiny_paper_alexnet")


def test_recipe_is_the_documented_network() -> None:
    assert get_named_config("paper_alexnet") is CONFIG
    assert CONFIG.num_params == PAPER_ALEXNET_PARAMS
    assert CONFIG.head_grid == (6, 6) and CONFIG.flat_features == 9216 and CONFIG.dropout == 0.2
    plan = [(s.kind, s.keras_name, s.torch_name) for s in layer_plan(CONFIG) if s.kind in ("pool", "bn")]
    assert plan == [
        ("pool", "block1_pool", "features.2"),
        ("bn", "block1_pool_bn", "features.3"),
        ("pool", "block2_pool", "features.6"),
        ("bn", "block2_pool_bn", "features.7"),
        ("pool", "block5_pool", "features.14"),
        ("bn", "block5_pool_bn", "features.15"),
    ]
    with torch.device("meta"):
        model = vgg_torch.paper_alexnet()
    assert sum(p.numel() for p in model.parameters()) == PAPER_ALEXNET_PARAMS
    assert [type(m).__name__ for m in model.features][:4] == ["Conv2d", "ReLU", "MaxPool2d", "BatchNorm2d"]
    assert model.features[0].padding == (0, 0) and model.features[4].padding == (2, 2)


@pytest.mark.full
@pytest.mark.extended
def test_keras_recipe_parameter_count() -> None:
    model = vgg_keras.PAPER_ALEXNET()
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == PAPER_ALEXNET_PARAMS


@pytest.mark.cpu_kernels
def test_tiny_recipe_keras_matches_torch() -> None:
    reference, model = build_pair(TINY, randomized_state_dict(TINY, seed=6))
    x = np.random.default_rng(7).standard_normal((2, 3, 227, 227), dtype=np.float32)
    expected = torch_forward(reference, x)
    for mode in ("eager", "predict"):
        compare_outputs(expected, keras_forward(model, x, mode=mode)).check()


def test_direct_export_refuses_batch_norm_after_pools(tmp_path: Path) -> None:
    from parity.export.onnx_graph import write_onnx

    state = randomized_state_dict(TINY, seed=1)
    with pytest.raises(ConversionError, match="Received: pool_batch_norm=True"):
        write_onnx(tmp_path / "m.onnx", TINY, state, include_top=True, data_format="channels_first", size=(227, 227))

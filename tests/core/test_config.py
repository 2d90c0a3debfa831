"""The framework-free schema."""

from __future__ import annotations

import inspect
import json

import torchvision

import pytest

from parity.core.catalog import WEIGHTS, get_weights_record
from parity.core.config import PRESETS, RECIPES, VGGConfig, get_config, layer_plan
from tests.conftest import CIFAR, TINY, run_python


def test_importing_schema_loads_no_framework() -> None:
    code = (
        "import sys, parity.core.config, parity.core.catalog, parity.convert.weight_arrays, parity.core.layouts, "
        "parity.convert.random_weights\n"
        "loaded = [m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("arch", list(PRESETS))
def test_preset_param_count_equals_torchvision_meta(arch: str) -> None:
    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    assert PRESETS[arch].num_params == weights.meta["num_params"]
    assert get_weights_record(arch).num_params == weights.meta["num_params"]


def test_catalog_matches_torchvision() -> None:
    for arch, records in WEIGHTS.items():
        enum = torchvision.models.get_model_weights(arch)
        assert set(records) == {w.name for w in enum}, arch
        for name, record in records.items():
            tv = enum[name]
            assert record.url == tv.url
            assert record.num_params == tv.meta["num_params"]
            t = tv.transforms()
            assert record.transforms.crop_size == t.crop_size[0]
            assert record.transforms.resize_size == t.resize_size[0]
            assert record.transforms.mean == pytest.approx(tuple(t.mean))
            assert record.transforms.std == pytest.approx(tuple(t.std))
            assert record.has_classifier == (tv.meta["categories"] is not None)


def test_layer_plan_names_follow_both_schemes() -> None:
    plan = list(layer_plan(get_config("vgg16_bn")))
    convs = [s for s in plan if s.kind == "conv"]
    assert (convs[0].keras_name, convs[0].torch_name) == ("block1_conv1", "features.0")
    assert (convs[-1].keras_name, convs[-1].torch_name) == ("block5_conv3", "features.40")
    dense = [(s.keras_name, s.torch_name) for s in plan if s.kind == "dense"]
    assert dense == [("fc1", "classifier.0"), ("fc2", "classifier.3"), ("predictions", "classifier.6")]


def test_round_trip_dict_and_hashable() -> None:
    for cfg in (*PRESETS.values(), TINY, CIFAR):
        again = VGGConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg and hash(again) == hash(cfg)


def test_dropout_defaults_to_torchvisions() -> None:
    """torchvision's ``VGG(dropout=0.5)``: the schema's default, every preset's and the CIFAR recipe's."""
    assert inspect.signature(torchvision.models.VGG).parameters["dropout"].default == 0.5
    assert VGGConfig(stages=((4,),)).dropout == 0.5
    torchvision_style = {**PRESETS, "cifar10_vgg16": RECIPES["cifar10_vgg16"]}  # paper_alexnet: 0.2 by design
    assert {name: cfg.dropout for name, cfg in torchvision_style.items()} == dict.fromkeys(torchvision_style, 0.5)


def test_cifar_config_flattens_fixed_grid() -> None:
    assert CIFAR.head_grid == (4, 4)
    assert CIFAR.flat_features == 16 * 4 * 4


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"stages": ()}, "at least one stage"),
        ({"stages": ((64, 0),)}, "positive integer conv widths"),
        ({"stages": ((64, 1.5),)}, "positive integer conv widths"),
        ({"hidden": (0,)}, "`hidden`"),
        ({"num_classes": 0}, "`num_classes`"),
        ({"num_classes": True}, "`num_classes`"),
        ({"dropout": 1.0}, "`dropout`"),
        ({"dropout": -0.1}, "`dropout`"),
        ({"pool_size": (7, 0)}, "`pool_size`"),
        ({"pool_size": (7, 7, 7)}, "`pool_size`"),
        ({"pool_size": None, "input_size": None}, "needs a fixed `input_size`"),
        ({"pool_size": None, "input_size": (16, 16)}, "at least 32 px"),
        ({"batch_norm": 1}, "`batch_norm`"),
        ({"in_channels": 0}, "`in_channels`"),
    ],
)
def test_invalid_config_raises_clear_error(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match="Received:") as info:
        get_config("vgg11").replace(**changes)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="Received: arch='vgg17'"):
        get_config("vgg17")

"""The schema's convolution and pool geometry and classifier dropout placement (AlexNet beside VGG)."""

from __future__ import annotations

import json

import pytest

from parity.core.config import (
    ALEXNET,
    ARCHS,
    PRESETS,
    Conv,
    Pool,
    VGGConfig,
    get_config,
    layer_plan,
    preset_matching_config,
    torch_state_shapes,
)

#: The keys every VGG config's dict had before the schema knew other geometries: files that store a
#: config (converted weights, exports, training outputs) must stay byte for byte the same.
VGG_DICT_KEYS = [
    "stages",
    "batch_norm",
    "pool_size",
    "input_size",
    "hidden",
    "num_classes",
    "dropout",
    "in_channels",
    "name",
]


def test_vgg_presets_keep_their_dicts_and_geometry() -> None:
    for arch, config in PRESETS.items():
        assert list(config.to_dict()) == VGG_DICT_KEYS, arch
        assert config.min_input_size == 2 ** len(config.stages) == 32
        assert config.is_vgg_geometry
        convs = [s for s in layer_plan(config) if s.kind == "conv"]
        assert {(s.kernel, s.stride, s.padding) for s in convs} == {(3, 1, 1)}
        pools = [s for s in layer_plan(config) if s.kind == "pool"]
        assert [s.keras_name for s in pools] == [f"block{b}_pool" for b in range(1, 6)]
        assert {(s.kernel, s.stride) for s in pools} == {(2, 2)}


def test_explicit_vgg_geometry_is_the_default() -> None:
    stages = PRESETS["vgg11"].stages
    explicit = PRESETS["vgg11"].replace(
        convs=tuple(tuple(Conv() for _ in s) for s in stages), pools=tuple(Pool() for _ in stages)
    )
    assert explicit == PRESETS["vgg11"] and explicit.convs is None and explicit.pools is None


def test_alexnet_plan_follows_torchvision_and_keras_names() -> None:
    plan = [(s.kind, s.keras_name, s.torch_name) for s in layer_plan(ALEXNET)]
    assert [t for k, _, t in plan if k != "relu"] == [
        "features.0",
        "features.2",
        "features.3",
        "features.5",
        "features.6",
        "features.8",
        "features.10",
        "features.12",
        "classifier.0",
        "classifier.1",
        "classifier.3",
        "classifier.4",
        "classifier.6",
    ]
    keras_names = [n for k, n, _ in plan if k in ("conv", "pool", "dense")]
    assert keras_names == [
        "block1_conv1",
        "block1_pool",
        "block2_conv1",
        "block2_pool",
        "block3_conv1",
        "block4_conv1",
        "block5_conv1",
        "block5_pool",
        "fc1",
        "fc2",
        "predictions",
    ]
    assert torch_state_shapes(ALEXNET)["features.0.weight"] == (64, 3, 11, 11)
    assert ALEXNET.flat_features == 256 * 6 * 6
    assert get_config("alexnet") is ARCHS["alexnet"] is ALEXNET
    assert preset_matching_config(ALEXNET.replace(num_classes=10)) == "alexnet"


def test_alexnet_round_trips_through_json() -> None:
    again = VGGConfig.from_dict(json.loads(json.dumps(ALEXNET.to_dict())))
    assert again == ALEXNET and hash(again) == hash(ALEXNET)
    assert again.convs is not None and again.convs[0] == (Conv(11, 4, 2),)


def test_head_grid_without_adaptive_pool_follows_the_geometry() -> None:
    config = ALEXNET.replace(pool_size=None, input_size=(227, 227), hidden=(), num_classes=10)
    # torch: 227 -> conv 11/4/2: 56 -> pool 27 -> conv 27 -> pool 13 -> 13 -> 13 -> 13 -> pool 6.
    assert config.head_grid == (6, 6)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"convs": ((Conv(),),)}, "shaped as `stages`"),
        ({"convs": ((Conv(0, 1, 1),),) * 5}, "`convs`"),
        ({"convs": ((Conv(3, 1, -1),),) * 5}, "`convs`"),
        ({"convs": ((3,),) * 5}, "`convs`"),
        ({"pools": (Pool(),)}, "each of the 5 stages"),
        ({"pools": (Pool(0, 2),) * 5}, "`pools`"),
        ({"classifier_dropout": "middle"}, "`classifier_dropout`"),
        ({"pool_size": None, "input_size": (62, 62)}, "at least 63 px"),
    ],
)
def test_invalid_geometry_raises_clear_error(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match="Received:") as info:
        ALEXNET.replace(**changes)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)

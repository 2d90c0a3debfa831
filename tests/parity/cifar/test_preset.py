"""The ``cifar10_vgg16`` recipe against the recipe written out by hand.

The schema, both builders, and converted weights.
"""

from __future__ import annotations

import json

import torch
from torch import nn

import numpy as np
import pytest

import vgg_keras
import vgg_torch
from parity.compare import LOGIT_RTOL, build_pair, compare_outputs, keras_forward, torch_forward
from parity.convert.random_weights import randomized_state_dict
from parity.core.config import PRESETS, RECIPES, VGGConfig, get_named_config, layer_plan

#: The recipe's feature list, as the classic small-image VGG16 writes it.
FEATURES = [32, 32, "M", 64, 64, 128, 128, 128, "M", 256, 256, 256, 512, 512, 512, "M"]


class ReferenceCifarVGG16(nn.Module):
    """The recipe's torch module, written by hand: the reference the preset must equal."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in FEATURES:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 4 * 4, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


CONFIG = RECIPES["cifar10_vgg16"]


def test_recipe_sits_beside_the_torchvision_presets() -> None:
    assert get_named_config("cifar10_vgg16") is CONFIG and get_named_config("vgg16") is PRESETS["vgg16"]
    assert "cifar10_vgg16" not in PRESETS  # torchvision's eight stay exactly torchvision's
    with pytest.raises(ValueError, match="Received: name='cifar10_vgg17'"):
        get_named_config("cifar10_vgg17")
    assert VGGConfig.from_dict(json.loads(json.dumps(CONFIG.to_dict()))) == CONFIG
    convs = [s for s in layer_plan(CONFIG) if s.kind == "conv"]
    pools = [s for s in layer_plan(CONFIG) if s.kind == "pool"]
    assert len(convs) == 13 and len(pools) == 3 and not CONFIG.batch_norm and CONFIG.pool_size is None
    assert CONFIG.flat_features == 512 * 4 * 4 and CONFIG.dropout == 0.5


def test_torch_module_tree_and_parameters_equal_the_recipe() -> None:
    reference, ours = ReferenceCifarVGG16(), vgg_torch.cifar10_vgg16()
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    assert list(ours.state_dict()) == list(expected)
    assert [type(m) for m in ours.features] == [type(m) for m in reference.features]
    assert [type(m) for m in ours.classifier] == [type(m) for m in reference.classifier]
    assert isinstance(ours.avgpool, nn.Identity)
    count = sum(p.numel() for p in reference.parameters())
    assert sum(p.numel() for p in ours.parameters()) == count == CONFIG.num_params == 58_190_506
    # Same weights, same function (no hidden layer differs in what it computes).
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), reference.eval()(x))


def test_torch_init_is_torchvisions() -> None:
    torch.manual_seed(0)
    model = vgg_torch.cifar10_vgg16()
    fc = model.classifier[0].weight.detach()
    assert abs(float(fc.std()) - 0.01) < 1e-3 and float(model.classifier[0].bias.detach().abs().max()) == 0.0
    conv = model.features[-3].weight.detach()  # 512 -> 512: kaiming fan-out, std sqrt(2 / (512 * 9))
    assert abs(float(conv.std()) / (2 / (512 * 9)) ** 0.5 - 1) < 0.02


def test_keras_trainable_parameters_equal_torch() -> None:
    model = vgg_keras.CIFAR10_VGG16()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == CONFIG.num_params == sum(p.numel() for p in ReferenceCifarVGG16().parameters())
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)


@pytest.mark.slow
def test_converted_weights_give_equal_logits() -> None:
    state = randomized_state_dict(CONFIG, seed=3)
    reference, model = build_pair(CONFIG, state)
    hand = ReferenceCifarVGG16()
    hand.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    x = np.random.default_rng(4).standard_normal((4, 3, 32, 32), dtype=np.float32)
    expected = torch_forward(reference, x)
    with torch.no_grad():
        assert np.array_equal(hand.eval()(torch.from_numpy(x)).numpy(), expected["logits"])
    report = compare_outputs(expected, keras_forward(model, x))
    assert report.max_rel <= LOGIT_RTOL, report.table()
    assert report.top1 == 1.0

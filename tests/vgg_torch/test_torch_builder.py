"""vgg_torch against torchvision itself."""

from __future__ import annotations

import torch
import torchvision

import numpy as np
import pytest

import vgg_torch
from parity.convert.random_weights import randomized_state_dict
from parity.core.config import PRESETS
from tests.conftest import CIFAR, TINY_BN, preset_params, torch_state_dict

#: Same weights, same kernels, same input: torch must give bit-identical outputs.
SAME_KERNELS_ATOL = 0.0
#: Relative tolerance on init statistics estimated from >= 1,728 samples.
INIT_STD_RTOL = 0.15


@pytest.mark.full
@pytest.mark.parametrize("arch", preset_params())
def test_state_dict_keys_shapes_and_outputs_equal_torchvision(arch: str) -> None:
    ours = getattr(vgg_torch, arch)(init_weights=False).eval()
    ref = torchvision.models.get_model(arch, weights=None, init_weights=False).eval()
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert [v.shape for v in ours_sd.values()] == [v.shape for v in ref_sd.values()]
    n_params = sum(p.numel() for p in ours.parameters())
    assert n_params == torchvision.models.get_model_weights(arch).IMAGENET1K_V1.meta["num_params"]

    weights = torch_state_dict(randomized_state_dict(PRESETS[arch], seed=1))
    ours.load_state_dict(weights, strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)  # and back: strict both ways
    x = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(x) - ref(x)).abs().max().item()
    assert diff <= SAME_KERNELS_ATOL


@pytest.mark.slow
def test_keyword_arguments_as_torchvision() -> None:
    model = vgg_torch.vgg11_bn(num_classes=10, dropout=0.2, init_weights=False)
    assert model.classifier[-1].out_features == 10
    assert model.classifier[2].p == 0.2
    ref = torchvision.models.vgg11_bn(num_classes=10, dropout=0.2)
    model.load_state_dict(ref.state_dict(), strict=True)


def test_dropout_defaults_to_torchvisions() -> None:
    """torchvision's ``VGG(dropout=0.5)``, from the config and from the preset builders."""
    model = vgg_torch.build_vgg(TINY_BN)
    assert [m.p for m in model.classifier if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]
    with torch.device("meta"):
        preset = vgg_torch.vgg11(init_weights=False)
        reference = torchvision.models.vgg11()
    ps = [m.p for m in preset.classifier if isinstance(m, torch.nn.Dropout)]
    assert ps == [m.p for m in reference.classifier if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]


def test_init_scheme_matches_torchvision() -> None:
    torch.manual_seed(0)
    model = vgg_torch.build_vgg(TINY_BN.replace(stages=((64, 64), (64,), (64,)), hidden=(256, 256)))
    conv = model.features[0]
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=INIT_STD_RTOL)
    assert torch.all(conv.bias == 0)
    bn = model.features[1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    fc = model.classifier[0]
    assert fc.weight.std().item() == pytest.approx(0.01, rel=INIT_STD_RTOL)
    assert torch.all(fc.bias == 0)


def test_custom_configs_build_and_run() -> None:
    model = vgg_torch.build_vgg(CIFAR).eval()
    with torch.no_grad():
        assert model(torch.zeros(3, 3, 32, 32)).shape == (3, 10)
    assert isinstance(model.avgpool, torch.nn.Identity)
    assert model.classifier[0].in_features == 16 * 4 * 4
    assert sum(p.numel() for p in model.parameters()) == CIFAR.num_params
    model.load_state_dict(torch_state_dict(randomized_state_dict(CIFAR)), strict=True)
    assert np.isfinite(model(torch.zeros(1, 3, 32, 32)).detach().numpy()).all()

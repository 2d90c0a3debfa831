"""vgg_torch.alexnet against torchvision.models.alexnet itself."""

from __future__ import annotations

import inspect

import torch
import torchvision
from torchvision.models import _api as tv_api

import pytest

import vgg_torch
from parity.convert.random_weights import randomized_state_dict
from parity.core.catalog import get_weights_record
from parity.core.config import ALEXNET
from tests.conftest import torch_state_dict

#: Same weights, same kernels, same input: torch must give bit-identical outputs.
SAME_KERNELS_ATOL = 0.0
#: Relative tolerance on a weight standard deviation estimated from 23,232 samples.
INIT_STD_RTOL = 0.05
#: torchvision's AlexNet_Weights.IMAGENET1K_V1 meta, as its source states it (not read back from our catalog).
TORCHVISION_NUM_PARAMS = 61_100_840
TORCHVISION_MIN_SIZE = 63


def _signature(fn: object) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_state_dict_and_parameter_count_equal_torchvision() -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialization
        ours = vgg_torch.alexnet()
        ref = torchvision.models.alexnet()
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert [v.shape for v in ours_sd.values()] == [v.shape for v in ref_sd.values()]
    meta = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta
    n_params = sum(p.numel() for p in ours.parameters())
    assert n_params == meta["num_params"] == TORCHVISION_NUM_PARAMS == ALEXNET.num_params
    assert get_weights_record("alexnet").num_params == TORCHVISION_NUM_PARAMS
    assert meta["min_size"] == (ALEXNET.min_input_size,) * 2 == (TORCHVISION_MIN_SIZE,) * 2


@pytest.mark.full
@pytest.mark.extended
def test_outputs_equal_torchvision_at_full_size() -> None:
    ours = vgg_torch.alexnet().eval()
    ref = torchvision.models.alexnet().eval()
    ours.load_state_dict(torch_state_dict(randomized_state_dict(ALEXNET, seed=3)), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    generator = torch.Generator().manual_seed(0)
    for h, w in ((224, 224), (63, 63), (300, 200)):
        x = torch.randn(2, 3, h, w, generator=generator)
        with torch.no_grad():
            diff = (ours(x) - ref(x)).abs().max().item()
        assert diff <= SAME_KERNELS_ATOL, (h, w)


def test_too_small_input_fails_in_both() -> None:
    """62 px leaves no pixel for the last pool, in torchvision as in the schema's ``min_input_size``."""
    with torch.device("meta"):
        ref = torchvision.models.alexnet()
    ref.features(torch.zeros(1, 3, 63, 63, device="meta"))
    with pytest.raises(RuntimeError):
        ref.features(torch.zeros(1, 3, 62, 62, device="meta"))
    assert ALEXNET.feature_size(62) < 1 <= ALEXNET.feature_size(63)


def test_builder_is_a_function_with_torchvision_signature() -> None:
    ours, theirs = vgg_torch.alexnet, torchvision.models.alexnet
    assert inspect.isfunction(ours)
    assert (ours.__name__, ours.__module__) == ("alexnet", "vgg_torch.builders")
    assert _signature(ours) == _signature(theirs)
    assert ours.__doc__ and "``alexnet``" in ours.__doc__ and "AlexNet_Weights" in ours.__doc__
    assert torchvision.models.get_model_weights(ours) is torchvision.models.AlexNet_Weights


def test_keyword_arguments_as_torchvision() -> None:
    with torch.device("meta"):
        model = vgg_torch.alexnet(num_classes=10, dropout=0.2)
    assert model.classifier[-1].out_features == 10
    assert [m.p for m in model.classifier if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2]
    assert [type(m).__name__ for m in model.classifier][:3] == ["Dropout", "Linear", "ReLU"]
    with pytest.raises(TypeError, match="Received: init_weights=False"):
        vgg_torch.alexnet(init_weights=False)  # torchvision's AlexNet has no such argument either
    with pytest.raises(TypeError):
        torchvision.models.alexnet(init_weights=False)


def test_initialization_is_torchvisions_pytorch_default() -> None:
    """torchvision's AlexNet keeps PyTorch's default init (not VGG's Kaiming fan-out, zero biases)."""
    torch.manual_seed(0)
    ours = vgg_torch.alexnet(num_classes=10)
    torch.manual_seed(0)
    ref = torchvision.models.alexnet(num_classes=10)
    for a, b in zip(ours.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)  # same draws in the same order
    conv = ours.features[0]
    fan_in = 3 * 11 * 11
    assert conv.weight.std().item() == pytest.approx((1.0 / (3 * fan_in)) ** 0.5, rel=INIT_STD_RTOL)
    assert conv.bias.abs().max().item() > 0


class _FakeDownload:
    """Stands in for torchvision's download: records the call, returns a state dict."""

    def __init__(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.state_dict = state_dict
        self.calls: list[tuple[str, dict[str, object]]] = []

    def __call__(self, url: str, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        self.calls.append((url, {**dict(zip(("model_dir", "map_location", "progress", "check_hash"), args)), **kwargs}))
        return {k: v.clone() for k, v in self.state_dict.items()}


@pytest.mark.full
@pytest.mark.extended
def test_weights_are_downloaded_hash_checked_and_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    state = torch_state_dict(randomized_state_dict(ALEXNET, seed=5))
    fake = _FakeDownload(state)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", fake)
    model = vgg_torch.alexnet(weights="DEFAULT", progress=False)
    [(url, kwargs)] = fake.calls
    assert url == torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url == get_weights_record("alexnet").url
    assert kwargs["progress"] is False and kwargs["check_hash"] is True
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(ValueError, match="Received: num_classes=10"):
        vgg_torch.alexnet(weights="IMAGENET1K_V1", num_classes=10)
    with pytest.raises(TypeError, match="AlexNet_Weights"):
        vgg_torch.alexnet(weights=torchvision.models.VGG11_Weights.IMAGENET1K_V1)


#: AlexNet's geometry with a few channels, for the quick tier.
TINY_ALEXNET = ALEXNET.replace(stages=((4,), (6,), (8,), (8,), (6,)), hidden=(16, 16), num_classes=7, name="tiny")


def _tiny_reference() -> torch.nn.Sequential:
    """torchvision's AlexNet source with TINY_ALEXNET's widths (features, avgpool, flatten, classifier)."""
    nn = torch.nn
    features = nn.Sequential(
        nn.Conv2d(3, 4, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(4, 6, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(6, 8, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 6, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    classifier = nn.Sequential(
        nn.Dropout(),
        nn.Linear(6 * 6 * 6, 16),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(16, 16),
        nn.ReLU(inplace=True),
        nn.Linear(16, 7),
    )
    return nn.Sequential(features, nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten(), classifier)


def test_tiny_alexnet_geometry_equals_torchvisions_source() -> None:
    ours = vgg_torch.build_vgg(TINY_ALEXNET, init_weights=False).eval()
    ref = _tiny_reference().eval()
    state = torch_state_dict(randomized_state_dict(TINY_ALEXNET, seed=2))
    ours.load_state_dict(state, strict=True)
    ref.load_state_dict({k.replace("features.", "0.", 1).replace("classifier.", "3.", 1): v for k, v in state.items()})
    generator = torch.Generator().manual_seed(0)
    for h, w in ((224, 224), (63, 63), (300, 200)):
        x = torch.randn(2, 3, h, w, generator=generator)
        with torch.no_grad():
            diff = (ours(x) - ref(x)).abs().max().item()
        assert diff <= SAME_KERNELS_ATOL, (h, w)

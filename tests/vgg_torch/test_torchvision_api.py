"""vgg_torch's builders where torchvision's own code calls them: signature, weights, registry, SSD.

There is no network here: the weights path is tested with torchvision's
download (``torchvision.models._api.load_state_dict_from_url``) replaced by a
function that records its arguments and returns a random state dict.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable

import torch
import torchvision
from torchvision.models import _api as tv_api
from torchvision.models.detection import ssd as tv_ssd

import numpy as np
import pytest

import vgg_torch
from parity.core.config import PRESETS


def _signature(fn: Callable[..., object]) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("arch", list(PRESETS))
def test_builders_are_functions_with_torchvision_signature(arch: str) -> None:
    ours, theirs = getattr(vgg_torch, arch), getattr(torchvision.models, arch)
    assert inspect.isfunction(ours)
    assert (ours.__name__, ours.__qualname__, ours.__module__) == (arch, arch, "vgg_torch.builders")
    assert _signature(ours) == _signature(theirs)
    assert ours.__doc__ and f"``{arch}``" in ours.__doc__ and "Args:" in ours.__doc__
    assert torchvision.models.get_model_weights(ours) is torchvision.models.get_model_weights(arch)
    assert pickle.loads(pickle.dumps(ours)) is ours


class _FakeDownload:
    """Stands in for torchvision's download: records the call, returns a state dict."""

    def __init__(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.state_dict = state_dict
        self.calls: list[tuple[str, dict[str, object]]] = []

    def __call__(self, url: str, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        self.calls.append((url, {**dict(zip(("model_dir", "map_location", "progress", "check_hash"), args)), **kwargs}))
        return {k: v.clone() for k, v in self.state_dict.items()}


def _random_state(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """A state dict with every tensor random: torchvision's init, then random biases and BN statistics.

    torch's generator fills VGG's 133M+ parameters several times faster than numpy's.
    """
    torch.manual_seed(seed)
    sd = vgg_torch.build_vgg(PRESETS[arch]).state_dict()
    for key, value in sd.items():
        if key.endswith((".bias", ".running_mean")):
            value.normal_(0.0, 0.1)
        elif key.endswith((".running_var", ".weight")) and value.ndim == 1:
            value.uniform_(0.5, 1.5)
        elif key.endswith("num_batches_tracked"):
            value.fill_(int(torch.randint(1, 10_000, ())))
    return sd


@pytest.fixture(scope="module")
def vgg11_bn_state() -> dict[str, torch.Tensor]:
    return _random_state("vgg11_bn", seed=21)


@pytest.mark.slow
def test_weights_are_downloaded_hash_checked_and_loaded(
    vgg11_bn_state: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakeDownload(vgg11_bn_state)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", fake)
    model = vgg_torch.vgg11_bn(weights=torchvision.models.VGG11_BN_Weights.IMAGENET1K_V1, progress=False)
    [(url, kwargs)] = fake.calls
    assert url == torchvision.models.VGG11_BN_Weights.IMAGENET1K_V1.url
    assert kwargs["progress"] is False and kwargs["check_hash"] is True
    loaded = model.state_dict()
    assert list(loaded) == list(vgg11_bn_state)
    assert all(torch.equal(loaded[k], vgg11_bn_state[k]) for k in loaded)  # BN running stats and counters too
    assert not torch.equal(loaded["features.1.running_var"], torch.ones_like(loaded["features.1.running_var"]))


@pytest.mark.parametrize("weights", ["IMAGENET1K_V1", "DEFAULT", "VGG11_BN_Weights.IMAGENET1K_V1"])
def test_weights_by_name(
    weights: str, vgg11_bn_state: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakeDownload(vgg11_bn_state)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", fake)
    model = vgg_torch.vgg11_bn(weights=weights)
    assert [(url, kw["progress"], kw["check_hash"]) for url, kw in fake.calls] == [
        (torchvision.models.VGG11_BN_Weights.IMAGENET1K_V1.url, True, True)
    ]
    assert torch.equal(model.classifier[6].bias, vgg11_bn_state["classifier.6.bias"])


def test_legacy_pretrained_as_torchvision(
    vgg11_bn_state: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakeDownload(vgg11_bn_state)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", fake)
    with pytest.warns(UserWarning, match="'pretrained' is deprecated"):
        vgg_torch.vgg11_bn(pretrained=False, init_weights=False)
    assert fake.calls == []
    with pytest.warns(UserWarning, match="'pretrained' is deprecated"):
        model = vgg_torch.vgg11_bn(pretrained=True)
    assert [url for url, _ in fake.calls] == [torchvision.models.VGG11_BN_Weights.IMAGENET1K_V1.url]
    assert torch.equal(model.features[0].weight, vgg11_bn_state["features.0.weight"])


def test_num_classes_from_categories_and_conflicts_raise_before_download(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeDownload({})
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", fake)
    with pytest.raises(ValueError, match=r"num_classes must be 1000.*Received: num_classes=10$"):
        vgg_torch.vgg11(weights="DEFAULT", num_classes=10)
    # torchvision raises for the same call too (its own message).
    with pytest.raises(ValueError, match="num_classes"):
        torchvision.models.vgg11(weights="DEFAULT", num_classes=10)
    assert fake.calls == []


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"weights": "IMAGENET1K_V2"}, ValueError, "IMAGENET1K_V1, DEFAULT"),
        ({"weights": torchvision.models.VGG16_Weights.DEFAULT}, TypeError, "VGG11_Weights"),
        ({"aux_logits": True}, TypeError, "num_classes, init_weights, dropout"),
        ({"pretrained": True, "weights": "DEFAULT"}, TypeError, "not both"),
        ({"num_classes": 0}, ValueError, "`num_classes` must be a positive integer"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment) as info:
        vgg_torch.vgg11(**kwargs)
    assert "Received:" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.full
def test_weights_refused_after_tensorflow_without_torchvision() -> None:
    from tests.conftest import run_python

    code = (
        "import tensorflow, vgg_torch, sys\n"
        "assert 'torchvision' not in sys.modules\n"
        "m = vgg_torch.vgg11(num_classes=3, init_weights=False)\n"  # no weights: works
        "try:\n    vgg_torch.vgg11(weights='DEFAULT')\nexcept RuntimeError as e:\n    print('refused:', e)\n"
    )
    result = run_python(code, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: Loading weights needs torchvision" in result.stdout


@pytest.fixture
def private_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[..., torch.nn.Module]]:
    """torchvision's registry, emptied of its VGGs for this test only (restored afterwards)."""
    registry = {k: v for k, v in tv_api.BUILTIN_MODELS.items() if k not in PRESETS}
    monkeypatch.setattr(tv_api, "BUILTIN_MODELS", registry)
    return registry


def test_registry_accepts_our_builders(private_registry: dict[str, Callable[..., torch.nn.Module]]) -> None:
    for arch in PRESETS:
        tv_api.register_model()(getattr(vgg_torch, arch))  # registered under __name__
    assert all(torchvision.models.get_model_builder(arch) is getattr(vgg_torch, arch) for arch in PRESETS)
    assert torchvision.models.list_models(module=vgg_torch) == sorted(PRESETS)
    assert torchvision.models.get_model_weights("vgg16_bn") is torchvision.models.VGG16_BN_Weights
    model = torchvision.models.get_model("vgg11", num_classes=5, init_weights=False)
    assert isinstance(model, vgg_torch.VGG) and model.classifier[-1].out_features == 5
    with pytest.raises(ValueError, match="already registered"):
        tv_api.register_model()(vgg_torch.vgg11)
    tv_api.register_model("vgg11_from_vgg_parity")(vgg_torch.vgg11)
    assert torchvision.models.get_model_builder("vgg11_from_vgg_parity") is vgg_torch.vgg11


def test_registry_untouched_afterwards() -> None:
    assert torchvision.models.get_model_builder("vgg16") is torchvision.models.vgg16


@pytest.mark.slow
def test_ssd300_vgg16_builds_on_ours_with_backbone_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    sd = _random_state("vgg16", seed=31)
    fake = _FakeDownload(sd)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", fake)
    calls: list[dict[str, object]] = []

    def spy(**kwargs: object) -> torch.nn.Module:
        calls.append(kwargs)
        return vgg_torch.vgg16(**kwargs)

    monkeypatch.setattr(tv_ssd, "vgg16", spy)
    model = torchvision.models.detection.ssd300_vgg16(
        weights=None, weights_backbone=torchvision.models.VGG16_Weights.IMAGENET1K_FEATURES, progress=False
    )
    assert calls == [{"weights": torchvision.models.VGG16_Weights.IMAGENET1K_FEATURES, "progress": False}]
    assert fake.calls[0][0] == torchvision.models.VGG16_Weights.IMAGENET1K_FEATURES.url
    # torchvision keeps features up to conv5_3 (index 29, without its ReLU) in `features`.
    got = model.backbone.features[0].weight.detach()
    assert torch.equal(got, sd["features.0.weight"])
    assert np.isfinite(model.backbone.scale_weight.detach().numpy()).all()

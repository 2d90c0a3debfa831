"""vgg_keras.AlexNet: keras.applications' signature, layer names, parameter count, input sizes, data formats."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest

import vgg_keras
from parity.core.config import ALEXNET
from vgg_keras.model import TO_CHANNELS_LAST, internal_data_format

#: torchvision's AlexNet_Weights.IMAGENET1K_V1 meta: parameters and smallest input, as its source states them.
TORCHVISION_NUM_PARAMS = 61_100_840
TORCHVISION_MIN_SIZE = 63
#: AlexNet's geometry with a few channels.
TINY_ALEXNET = ALEXNET.replace(stages=((4,), (6,), (8,), (8,), (6,)), hidden=(16, 16), num_classes=7, name="tiny")


def test_signature_is_keras_applications() -> None:
    ours = inspect.signature(vgg_keras.AlexNet).parameters
    theirs = inspect.signature(keras.applications.VGG16).parameters
    assert list(ours) == list(theirs)
    # As the VGG builders: no download by default (weights="converted" is the ImageNet choice), and the
    # name defaults to the architecture's.
    differ = ("weights", "name")
    assert {n: p.default for n, p in ours.items() if n not in differ} == {
        n: p.default for n, p in theirs.items() if n not in differ
    }
    assert vgg_keras.AlexNet.__name__ == "AlexNet"
    doc = vgg_keras.AlexNet.__doc__ or ""
    assert "63x63" in doc and "(None, 256)" in doc and "6x6" in doc


def test_layer_names() -> None:
    model = vgg_keras.build_vgg(TINY_ALEXNET)
    names = [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert names == [
        "input_check",
        "block1_pad1",
        "block1_conv1",
        "block1_pool",
        "block2_conv1",
        "block2_pool",
        "block3_conv1",
        "block4_conv1",
        "block5_conv1",
        "block5_pool",
        "avgpool",
        "flatten",
        "fc1_dropout",
        "fc1",
        "fc2_dropout",
        "fc2",
        "predictions",
    ]
    assert model.get_layer("block1_conv1").kernel.shape == (11, 11, 3, 4)
    assert model.get_layer("predictions").activation is keras.activations.softmax


@pytest.mark.full
@pytest.mark.extended
def test_full_size_parameter_count() -> None:
    model = vgg_keras.AlexNet()
    assert model.count_params() == TORCHVISION_NUM_PARAMS
    assert model.get_layer("block1_conv1").kernel.shape == (11, 11, 3, 64)


def test_smallest_input_is_torchvisions() -> None:
    model = vgg_keras.build_vgg(TINY_ALEXNET, input_shape=(TORCHVISION_MIN_SIZE,) * 2 + (3,))
    assert tuple(model(np.zeros((1, 63, 63, 3), np.float32)).shape) == (1, 7)
    with pytest.raises(ValueError, match=r"at least 63x63 px: .*Received: input_shape=\(62, 63, 3\)"):
        vgg_keras.AlexNet(input_shape=(62, 63, 3))


def test_without_top_and_pooling() -> None:
    features = vgg_keras.build_vgg(TINY_ALEXNET, include_top=False)
    # torch: 224 -> conv 55 -> pool 27 -> conv 27 -> pool 13 -> 13 -> 13 -> 13 -> pool 6; 300 -> 8, 200 -> 5.
    assert tuple(features(np.zeros((1, 224, 224, 3), np.float32)).shape) == (1, 6, 6, 6)
    assert tuple(features(np.zeros((1, 300, 200, 3), np.float32)).shape) == (1, 8, 5, 6)
    pooled = vgg_keras.build_vgg(TINY_ALEXNET, include_top=False, pooling="max")
    assert tuple(pooled.output.shape) == (None, 6)


@pytest.mark.cpu_kernels
def test_channels_first() -> None:
    keras.config.set_image_data_format("channels_first")
    model = vgg_keras.build_vgg(TINY_ALEXNET, classifier_activation=None)
    assert tuple(model(np.zeros((2, 3, 300, 200), np.float32)).shape) == (2, 7)
    inner = internal_data_format("channels_first")
    assert any(layer.name == TO_CHANNELS_LAST for layer in model.layers) == (inner == "channels_last")
    assert model.get_layer("block1_pad1").data_format == inner
    features = vgg_keras.build_vgg(TINY_ALEXNET, include_top=False)
    assert tuple(features(np.zeros((1, 3, 224, 224), np.float32)).shape) == (1, 6, 6, 6)


def test_vgg_models_keep_their_layers() -> None:
    """VGG's 3x3 stride-1 convolutions pad with "same": no padding layers appear in VGG models."""
    model = vgg_keras.build_vgg(ALEXNET.replace(stages=((4,), (8,)), convs=None, pools=None, pool_size=(2, 2)))
    assert not [layer.name for layer in model.layers if "_pad" in layer.name]
    assert {layer.padding for layer in model.layers if isinstance(layer, keras.layers.Conv2D)} == {"same"}


#: A uniform draw of n values in (-b, b) has std b / sqrt(3), with a relative standard error of about
#: sqrt(0.2 / n): 2.8% at STD_MIN_VALUES values, so a 20% band is 7 standard errors. Smaller tensors (the
#: biases) get the range test only. Normal draws (the VGG scheme) or zeros fail the range test.
STD_RTOL = 0.2
STD_MIN_VALUES = 256
#: Every tensor checked has at least this many values (the tiny config's widths and classes).
MIN_VALUES = 16
#: The largest of n >= 16 uniform draws in (-b, b) is above b/2 unless all n fall inside (-b/2, b/2):
#: probability 2^-16 per tensor.
REACH = 0.5


def _torch_default_ranges(tensors: dict[str, tuple[np.ndarray, int]]) -> list[str]:
    """Names of tensors that do not look like U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bad = []
    for name, (value, fan_in) in tensors.items():
        bound = 1.0 / np.sqrt(fan_in)
        top, std = float(np.abs(value).max()), float(value.std())
        std_ok = value.size < STD_MIN_VALUES or abs(std / (bound / np.sqrt(3.0)) - 1.0) <= STD_RTOL
        if not (REACH * bound <= top <= bound and std_ok):
            bad.append(f"{name}: max {top:.3g}, std {std:.3g}, bound {bound:.3g}")
    return bad


def _keras_tensors(config) -> dict[str, tuple[np.ndarray, int]]:
    model = vgg_keras.build_vgg(config, classifier_activation=None)
    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense):
            kernel = np.asarray(layer.kernel)
            fan_in = int(np.prod(kernel.shape[:-1]))
            out[f"{layer.name}.kernel"] = (kernel, fan_in)
            out[f"{layer.name}.bias"] = (np.asarray(layer.bias), fan_in)
    return out


def test_keras_alexnet_starts_from_pytorchs_defaults_as_torchvisions() -> None:
    import torch

    import vgg_torch

    config = TINY_ALEXNET.replace(stages=((16,), (16,), (16,), (16,), (16,)), num_classes=MIN_VALUES)
    assert _torch_default_ranges(_keras_tensors(config)) == []
    # torch's own model of the config passes the same check (and so it is PyTorch's default there too).
    reference = vgg_torch.build_vgg(config)
    tensors = {}
    for name, module in reference.named_modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            fan_in = int(np.prod(module.weight.shape[1:]))
            tensors[f"{name}.weight"] = (module.weight.detach().numpy(), fan_in)
            tensors[f"{name}.bias"] = (module.bias.detach().numpy(), fan_in)
    assert _torch_default_ranges(tensors) == []
    # The check bites: the VGG scheme (normal kernels, zero biases) fails it.
    assert len(_torch_default_ranges(_keras_tensors(config.replace(init="vgg")))) >= len(tensors) // 2

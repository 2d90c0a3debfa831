"""vgg_keras's builders: names, parameter counts, shapes, data formats, defaults, errors."""

from __future__ import annotations

import inspect

import torchvision

import keras
import numpy as np
import pytest

import vgg_keras
import vgg_keras.model
from parity.core.config import PRESETS
from tests.conftest import CIFAR, TINY, TINY_BN, preset_params, run_python, tensorflow_has_nchw_cpu_kernels
from vgg_keras.checks import INPUT_CHECK
from vgg_keras.model import TO_CHANNELS_FIRST, TO_CHANNELS_LAST
from vgg_keras.recipes import CIFAR10_VGG16

BUILDERS = {arch: getattr(vgg_keras, arch.upper()) for arch in PRESETS}


def _trainable(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.full
@pytest.mark.parametrize("arch", preset_params(["vgg16", "vgg19"]))
def test_layer_names_as_keras_applications(arch: str) -> None:
    ours = BUILDERS[arch](input_shape=(224, 224, 3))
    ref = getattr(keras.applications, arch.upper())(weights=None)
    # Input layers are named by Keras' global counter (input_layer, input_layer_1, ...).
    ref_names = [layer.name for layer in ref.layers if not isinstance(layer, keras.layers.InputLayer)]
    our_names = [layer.name for layer in ours.layers if not isinstance(layer, keras.layers.InputLayer)]
    # Every keras.applications layer, in the same order; ours adds the input check, the adaptive
    # pool and torchvision's two dropouts, which hold no weights.
    assert [n for n in our_names if n in ref_names] == ref_names
    assert set(our_names) - set(ref_names) == {"input_check", "avgpool", "fc1_dropout", "fc2_dropout"}
    assert [layer.name for layer in ours.layers if layer.weights] == [
        layer.name for layer in ref.layers if layer.weights
    ]
    assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in ref.weights]


@pytest.mark.full
@pytest.mark.parametrize("arch", preset_params())
def test_trainable_params_equal_torchvision(arch: str) -> None:
    model = BUILDERS[arch]()
    expected = torchvision.models.get_model_weights(arch).IMAGENET1K_V1.meta["num_params"]
    assert _trainable(model) == expected
    # BN moving mean/variance are Keras weights too (torch keeps them as buffers).
    bn_stats = sum(
        2 * layer.weights[2].shape[0] for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert model.count_params() == expected + bn_stats
    assert (bn_stats > 0) == arch.endswith("_bn")


@pytest.mark.full
@pytest.mark.parametrize(("size", "arch"), [((32, 32), "vgg11"), ((224, 224), "vgg16_bn"), ((200, 320), "vgg13")])
def test_output_shapes_with_top_at_any_size(size: tuple[int, int], arch: str) -> None:
    model = BUILDERS[arch](input_shape=(*size, 3), classifier_activation=None)
    out = model(np.zeros((2, *size, 3), np.float32))
    assert tuple(out.shape) == (2, 1000)


@pytest.mark.full
def test_any_size_model_accepts_several_sizes() -> None:
    model = vgg_keras.VGG11(classes=5)
    for size in ((32, 32), (33, 47), (64, 96)):
        assert tuple(model(np.zeros((1, *size, 3), np.float32)).shape) == (1, 5)


def test_tiny_shapes_and_pooling() -> None:
    model = vgg_keras.build_vgg(TINY_BN)
    assert tuple(model(np.zeros((2, 32, 32, 3), np.float32)).shape) == (2, 7)
    assert _trainable(model) == TINY_BN.num_params
    feats = vgg_keras.build_vgg(TINY, include_top=False)
    assert tuple(feats(np.zeros((1, 32, 40, 3), np.float32)).shape) == (1, 4, 5, 8)
    for pooling in ("avg", "max"):
        pooled = vgg_keras.build_vgg(TINY, include_top=False, pooling=pooling)
        assert tuple(pooled(np.zeros((1, 32, 40, 3), np.float32)).shape) == (1, 8)


def test_cifar_config_fixed_input() -> None:
    model = vgg_keras.build_vgg(CIFAR)
    assert tuple(model.input.shape) == (None, 32, 32, 3)
    assert tuple(model.output.shape) == (None, 10)
    assert model.get_layer("predictions").kernel.shape == (16 * 4 * 4, 10)
    with pytest.raises(ValueError, match="4x4 grid"):
        vgg_keras.build_vgg(CIFAR, input_shape=(64, 64, 3))
    assert tuple(vgg_keras.build_vgg(CIFAR, include_top=False, input_shape=(64, 64, 3)).output.shape) == (
        None,
        8,
        8,
        16,
    )


#: keras.applications' default: ``classifier_activation="softmax"``, so predictions are probabilities.
DEFAULT_ACTIVATION = "softmax"
#: Softmax outputs sum to 1 up to float32 rounding over a handful of classes.
SOFTMAX_SUM_ATOL = 1e-6


@pytest.mark.parametrize("builder", [*BUILDERS.values(), CIFAR10_VGG16], ids=[*BUILDERS, "CIFAR10_VGG16"])
def test_builders_default_to_softmax(builder: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Called without ``classifier_activation``, each builder asks for softmax (spied, so nothing is built)."""
    assert inspect.signature(builder).parameters["classifier_activation"].default == DEFAULT_ACTIVATION
    seen: dict[str, object] = {}
    monkeypatch.setattr(vgg_keras.model, "build_vgg", lambda config, **kwargs: seen.update(kwargs))
    monkeypatch.setattr(vgg_keras.recipes, "build_vgg", lambda config, **kwargs: seen.update(kwargs))
    builder()
    assert seen["classifier_activation"] == DEFAULT_ACTIVATION


def test_build_vgg_defaults_to_softmax_and_torchvisions_dropout() -> None:
    model = vgg_keras.build_vgg(TINY)
    assert model.get_layer("predictions").get_config()["activation"] == DEFAULT_ACTIVATION
    probs = keras.ops.convert_to_numpy(model(np.random.default_rng(0).standard_normal((2, 33, 35, 3)), training=False))
    assert np.max(np.abs(probs.sum(-1) - 1.0)) <= SOFTMAX_SUM_ATOL and probs.min() >= 0.0
    rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert rates == [0.5, 0.5]  # torchvision's VGG(dropout=0.5), after fc1 and fc2
    assert vgg_keras.build_vgg(TINY.replace(dropout=0.25)).get_layer("fc1_dropout").rate == 0.25


@pytest.mark.cpu_kernels
def test_channels_first() -> None:
    """NCHW in and out; inside, NHWC on TensorFlow (it has no NCHW CPU kernels without oneDNN)."""
    keras.config.set_image_data_format("channels_first")
    model = vgg_keras.build_vgg(TINY_BN, input_shape=(3, 32, 48))
    layers = [layer.name for layer in model.layers]
    assert layers[1:3] == [INPUT_CHECK, TO_CHANNELS_LAST] and TO_CHANNELS_FIRST not in layers
    assert model.get_layer("block1_conv1").data_format == "channels_last"
    assert model.get_layer("block1_bn1").axis in (-1, [-1], 3, [3])
    assert tuple(model(np.zeros((1, 3, 32, 48), np.float32)).shape) == (1, 7)
    feats = vgg_keras.build_vgg(TINY, include_top=False)
    assert feats.layers[-1].name == TO_CHANNELS_FIRST
    assert tuple(feats(np.zeros((1, 3, 32, 32), np.float32)).shape) == (1, 8, 4, 4)
    pooled = vgg_keras.build_vgg(TINY, include_top=False, pooling="max")
    assert tuple(pooled(np.zeros((1, 3, 32, 32), np.float32)).shape) == (1, 8)
    with pytest.raises(ValueError, match="3 channels on the first axis"):
        vgg_keras.build_vgg(TINY, input_shape=(32, 32, 3))
    # Same weights, in the same shapes and order, as the channels_last model.
    keras.config.set_image_data_format("channels_last")
    last = vgg_keras.build_vgg(TINY_BN)
    assert [(w.path, w.shape) for w in last.weights] == [(w.path, w.shape) for w in model.weights]


def test_bn_layers_use_torch_epsilon_and_momentum() -> None:
    model = vgg_keras.VGG11_BN(input_shape=(32, 32, 3), include_top=False)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert [b.name for b in bns] == [
        "block1_bn1",
        "block2_bn1",
        "block3_bn1",
        "block3_bn2",
        "block4_bn1",
        "block4_bn2",
        "block5_bn1",
        "block5_bn2",
    ]
    assert all(b.epsilon == 1e-5 and b.momentum == pytest.approx(0.9) for b in bns)


def test_input_tensor() -> None:
    tensor = keras.Input((32, 32, 3))
    model = vgg_keras.build_vgg(TINY, input_tensor=tensor)
    assert model.inputs[0] is tensor


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"input_shape": (16, 16, 3)}, "at least 32x32"),
        ({"input_shape": (224, 31, 3)}, "at least 32x32"),
        ({"input_shape": (224, 224, None)}, "must have 3 channels"),
        ({"input_shape": (224, 224)}, "must have 3 entries"),
        ({"pooling": "min", "include_top": False}, "`pooling` must be None, 'avg' or 'max'"),
        ({"pooling": "avg"}, "applies only with include_top=False"),
        ({"classes": 0}, "`classes` must be a positive integer"),
        ({"weights": "imagenet"}, "`weights` must be None, 'converted'"),
        ({"weights": "converted", "classes": 10}, "`classes` must be 1000"),
        ({"weights": "IMAGENET1K_FEATURES"}, "no usable classifier"),
        ({"weights": "/nonexistent/x.weights.h5"}, "No weights file"),
        ({"classifier_activation": "nope"}, "nope"),
        ({"include_top": "yes"}, "`include_top` must be True or False"),
    ],
)
def test_bad_arguments_raise_before_building(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        vgg_keras.VGG16(**kwargs)
    assert fragment in str(info.value)


def test_converted_weights_only_for_presets() -> None:
    with pytest.raises(ValueError, match="only for the eight torchvision presets"):
        vgg_keras.build_vgg(TINY, weights="converted")


@pytest.mark.slow
def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, vgg_keras, numpy as np\n"
        "m = vgg_keras.VGG11(input_shape=(32, 32, 3))\n"
        "m(np.zeros((1, 32, 32, 3), 'float32'))\n"
        "import vgg_keras.weights\n"
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules\n"
        "print('ok')\n"
    )
    result = run_python(code)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


#: Our Conv2D against the numpy formula: only float32 summation order differs.
CONV_BIAS_ATOL = 1e-4


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_conv_bias_right_when_width_equals_filters(data_format: str) -> None:
    from vgg_keras.layers import Conv2D

    if data_format == "channels_first" and not tensorflow_has_nchw_cpu_kernels():
        pytest.skip("TensorFlow without oneDNN has no NCHW Conv2D kernel on the CPU (VGGs compute NHWC there)")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 12, 16)).astype(np.float32)  # NCHW, width 16 == filters
    layer = Conv2D(16, 3, padding="same", data_format=data_format)
    stock = keras.layers.Conv2D(16, 3, padding="same", data_format=data_format)
    x_in = x if data_format == "channels_first" else x.transpose(0, 2, 3, 1)
    layer.build(x_in.shape)
    stock.build(x_in.shape)
    kernel, bias = rng.standard_normal((3, 3, 8, 16)).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    layer.set_weights([kernel, bias])
    stock.set_weights([kernel, bias])
    conv = np.asarray(keras.ops.conv(x_in, kernel, padding="same", data_format=data_format))
    expected = conv + (bias[None, :, None, None] if data_format == "channels_first" else bias)
    assert np.max(np.abs(np.asarray(layer(x_in)) - expected)) <= CONV_BIAS_ATOL
    assert layer.__class__.__name__ == "Conv2D"  # weight files address layers by class name
    if data_format == "channels_first":
        # Documents the stock layer's mistake this class exists for; if a Keras
        # release fixes it, this line fails and the workaround can go.
        assert np.max(np.abs(np.asarray(stock(x_in)) - expected)) > 1e-2

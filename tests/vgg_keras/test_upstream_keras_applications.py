"""keras.applications' own tests, run against vgg_keras's eight VGG builders and ``AlexNet``.

Ported from keras/src/applications/applications_test.py (Keras 3.15,
``ApplicationsTest``): the same cases with the same assertions, the
constructors swapped for ours and ``last_dim`` of 512 (VGG) or 256 (AlexNet). absl's
``parameterized`` becomes ``pytest.mark.parametrize``; upstream runs every case
in both data formats, and so does this file.
"""

from __future__ import annotations

import keras
import pytest
from keras.src.saving import serialization_lib

import vgg_keras
from parity.core.config import PRESETS
from tests.conftest import preset_params

#: Channels of the last convolution (upstream's ``last_dim``): 512 for every VGG, 256 for AlexNet.
LAST_DIMS = {**{arch: 512 for arch in PRESETS}, "alexnet": 256}
#: Every builder these tests run on.
APPS = list(LAST_DIMS)
DATA_FORMATS = ["channels_first", "channels_last"]
#: Presets whose classifier is built in the quick tier; vgg16 runs in the default run (-m full), the rest are extended.
QUICK_TOP = {"vgg11_bn"}


def _app(arch: str) -> object:
    return vgg_keras.AlexNet if arch == "alexnet" else getattr(vgg_keras, arch.upper())


def _top_params(arch: str) -> object:
    """With the classifier: vgg11_bn quick; vgg16 and AlexNet (61M parameters) full, in the default run."""
    if arch in QUICK_TOP:
        return arch
    return preset_params([arch], default=["vgg16", "alexnet"], marks=[pytest.mark.full])[0]


@pytest.mark.parametrize("image_data_format", DATA_FORMATS)
@pytest.mark.parametrize("arch", APPS)
def test_application_notop_variable_input_channels(arch: str, image_data_format: str) -> None:
    keras.config.set_image_data_format(image_data_format)
    app = _app(arch)

    # Test compatibility with 1 channel
    if image_data_format == "channels_first":
        input_shape = (1, None, None)
        correct_output_shape = [None, LAST_DIMS[arch], None, None]
    else:
        input_shape = (None, None, 1)
        correct_output_shape = [None, None, None, LAST_DIMS[arch]]

    model = app(weights=None, include_top=False, input_shape=input_shape)
    assert list(model.outputs[0].shape) == correct_output_shape

    # Test compatibility with 4 channels
    input_shape = (4, None, None) if image_data_format == "channels_first" else (None, None, 4)
    model = app(weights=None, include_top=False, input_shape=input_shape)
    assert list(model.outputs[0].shape) == correct_output_shape


@pytest.mark.parametrize("image_data_format", DATA_FORMATS)
@pytest.mark.parametrize("arch", APPS)
def test_application_base(arch: str, image_data_format: str) -> None:
    pytest.skip(
        "needs weights='imagenet' and the elephant.jpg download (no network here, and our ImageNet weights are "
        "torchvision's, converted); its serialization part runs in test_application_base_serialization, and "
        "real-image correctness of converted weights is what parity.convert's verification and "
        "tests/parity/report/test_model_parity.py check"
    )


@pytest.mark.parametrize("arch", [_top_params(a) for a in APPS])
def test_application_base_serialization(arch: str) -> None:
    # The last three lines of upstream's test_application_base, with weights=None.
    model = _app(arch)(weights=None)
    config = serialization_lib.serialize_keras_object(model)
    reconstructed_model = serialization_lib.deserialize_keras_object(config)
    assert len(model.weights) == len(reconstructed_model.weights)


@pytest.mark.parametrize("image_data_format", DATA_FORMATS)
@pytest.mark.parametrize("arch", APPS)
def test_application_notop_custom_input_shape(arch: str, image_data_format: str) -> None:
    keras.config.set_image_data_format(image_data_format)
    if image_data_format == "channels_first":
        input_shape = (3, 123, 123)
        last_dim_axis = 1
    else:
        input_shape = (123, 123, 3)
        last_dim_axis = -1
    model = _app(arch)(weights=None, include_top=False, input_shape=input_shape)
    assert list(model.outputs[0].shape)[last_dim_axis] == LAST_DIMS[arch]


@pytest.mark.parametrize("image_data_format", DATA_FORMATS)
@pytest.mark.parametrize("arch", APPS)
def test_application_notop_custom_input_tensor(arch: str, image_data_format: str) -> None:
    keras.config.set_image_data_format(image_data_format)
    if image_data_format == "channels_first":
        input_shape = (4, 200, 200)
        last_dim_axis = 1
    else:
        input_shape = (200, 200, 4)
        last_dim_axis = -1
    inputs_custom = keras.layers.Input(shape=input_shape, name="custom_input")
    inputs_custom = keras.layers.Conv2D(3, (2, 2), padding="valid", strides=(2, 2))(inputs_custom)
    model = _app(arch)(weights=None, include_top=False, input_tensor=inputs_custom)
    assert list(model.outputs[0].shape)[last_dim_axis] == LAST_DIMS[arch]


@pytest.mark.parametrize("image_data_format", DATA_FORMATS)
@pytest.mark.parametrize("arch", APPS)
def test_application_pooling(arch: str, image_data_format: str) -> None:
    keras.config.set_image_data_format(image_data_format)
    model = _app(arch)(weights=None, include_top=False, pooling="max")
    assert list(model.outputs[0].shape) == [None, LAST_DIMS[arch]]


@pytest.mark.parametrize("image_data_format", DATA_FORMATS)
@pytest.mark.parametrize("arch", [_top_params(a) for a in APPS])
def test_application_classifier_activation(arch: str, image_data_format: str) -> None:
    # Upstream parameterizes this case by data format but never sets it; we set it.
    keras.config.set_image_data_format(image_data_format)
    model = _app(arch)(weights=None, include_top=True, classifier_activation="softmax")
    last_layer_act = model.layers[-1].activation.__name__
    assert last_layer_act == "softmax"

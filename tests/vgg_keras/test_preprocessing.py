"""vgg_keras.preprocessing against torchvision's ``weights.transforms()``.

Pipelines are compared in pixel units (images scaled to [0, 1], before
normalization), where the tolerances mean something: 1/255 is one uint8 level.
The normalized outputs are checked too, against the same tolerance divided by
the smallest std.

At about 500 lines this file is over the house limit on purpose: it mirrors
:mod:`vgg_keras.preprocessing` and shares one set of photos, sizes and bounds
across the tensor path, the PIL path, ``tf.data`` and the label decoding.
"""

from __future__ import annotations

import os

# torch and torchvision first: importing them after TensorFlow crashes the interpreter.
import torch
import torchvision  # noqa: F401

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import functools  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

PIL_Image = pytest.importorskip("PIL.Image")
skimage_data = pytest.importorskip("skimage.data")

from torchvision.models import VGG16_Weights  # noqa: E402
from torchvision.models._meta import _IMAGENET_CATEGORIES  # noqa: E402
from torchvision.transforms import functional as tvF  # noqa: E402
from torchvision.transforms._presets import ImageClassification  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from parity.core.catalog import get_weights_record  # noqa: E402
from vgg_keras import preprocessing as prep  # noqa: E402
from vgg_keras import resize_crop  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- #
# Tolerances, in [0, 1] pixel units (1/255 = one uint8 level)
# --------------------------------------------------------------------------- #
#: uint8 input vs torchvision's uint8 tensor path. Both resize in float32 and
#: round half-to-even back to integers, so nearly every value is identical; the
#: two resamplers' float32 results differ by up to ~0.007 levels (measured), which
#: flips the rounding of values that sit on a .5 tie: one level, on a few values.
TENSOR_PATH_ATOL = 1.0 / 255 + 1e-6
#: ...and those flips are rare: measured at most 0.12% of values (upsampling
#: 225x224, where many results land on ties); without rounding it is ~100%.
TENSOR_PATH_MAX_MISMATCH_FRACTION = 0.005
#: float input (no rounding) vs torchvision's float tensor path: only the two
#: resamplers' float32 arithmetic differs (measured max 0.0071 levels).
FLOAT_PATH_ATOL = 0.02 / 255
#: uint8 input vs torchvision's PIL path. PIL resamples in fixed-point integer
#: arithmetic with its own rounding: one level at most (measured exactly 1/255,
#: as between torchvision's own tensor and PIL paths).
PIL_PATH_ATOL = 1.0 / 255 + 1e-6
#: preprocess_input vs torchvision's convert_image_dtype + normalize: the same
#: float32 operations, identical up to float32 rounding (a few ulps; graph-mode
#: fusion may reorder them). In pixel units: divide by std for normalized values.
NORMALIZE_ATOL = 1e-6
#: A pipeline that is wrong in one detail (no antialiasing, crop offset off by
#: one) must miss torchvision by much more than the tolerance on some image.
WRONG_PIPELINE_MIN_DIFF = 10.0 / 255


# --------------------------------------------------------------------------- #
# Images
# --------------------------------------------------------------------------- #
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
#: (height, width): odd, tall, wide, tiny, larger than 256, smaller than the
#: crop, exactly 256, and 256 x 353 (crop offset 64.5: half-to-even gives 64).
SYNTHETIC_SIZES = (
    (100, 37),
    (37, 100),
    (301, 257),
    (257, 301),
    (511, 333),
    (640, 1000),
    (200, 200),
    (225, 224),
    (255, 999),
    (256, 256),
    (256, 353),
    (1, 5),
)


@functools.cache
def _photo(name: str) -> np.ndarray:
    return getattr(skimage_data, name)()


@functools.cache
def _synthetic(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(h * 10007 + w).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _image(key: str) -> np.ndarray:
    if key in PHOTOS:
        return _photo(key)
    h, w = (int(v) for v in key.split("x"))
    return _synthetic(h, w)


IMAGES = [*PHOTOS, *(f"{h}x{w}" for h, w in SYNTHETIC_SIZES)]


# --------------------------------------------------------------------------- #
# torchvision references, returned as HWC float32 in [0, 1] pixel units
# --------------------------------------------------------------------------- #
def _tv_tensor(image: np.ndarray, transform: Callable[..., torch.Tensor]) -> np.ndarray:
    """torchvision on a uint8 CHW tensor; the normalized output, HWC."""
    return transform(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))).numpy().transpose(1, 2, 0)


def _tv_pil(image: np.ndarray, transform: Callable[..., torch.Tensor]) -> np.ndarray:
    """torchvision on a PIL image; the normalized output, HWC."""
    return transform(PIL_Image.fromarray(image)).numpy().transpose(1, 2, 0)


def _pixels(normalized: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    return (normalized.astype(np.float64) * np.asarray(std) + np.asarray(mean)).astype(np.float32)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _ours(image: np.ndarray, weights: str = "IMAGENET1K_V1") -> np.ndarray:
    return prep.preprocess_images(image, "vgg16", weights)


# --------------------------------------------------------------------------- #
# The pipeline vs torchvision
# --------------------------------------------------------------------------- #
def test_catalog_matches_torchvision_transforms() -> None:
    for name in ("IMAGENET1K_V1", "IMAGENET1K_FEATURES"):
        tv = VGG16_Weights[name].transforms()
        t = get_weights_record("vgg16", name).transforms
        assert tv.resize_size == [t.resize_size] and tv.crop_size == [t.crop_size]
        np.testing.assert_allclose(tv.mean, t.mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(tv.std, t.std, rtol=0, atol=1e-12)
        layer = prep.preprocessor_for("vgg16", name)
        assert (layer.resize_size, layer.crop_size, layer.mean, layer.std) == (
            t.resize_size,
            t.crop_size,
            t.mean,
            t.std,
        )


@pytest.mark.parametrize("key", IMAGES)
def test_uint8_matches_torchvision_tensor_path(key: str) -> None:
    image = _image(key)
    tv = VGG16_Weights.IMAGENET1K_V1.transforms()
    ref_norm = _tv_tensor(image, tv)
    ours_norm = _ours(image)
    ref, ours = _pixels(ref_norm, tv.mean, tv.std), _pixels(ours_norm, tv.mean, tv.std)
    assert ours.shape == (224, 224, 3) and ours_norm.dtype == np.float32
    assert _max_diff(ours, ref) <= TENSOR_PATH_ATOL
    assert np.mean(np.abs(ours - ref) > 1e-6) <= TENSOR_PATH_MAX_MISMATCH_FRACTION
    # Normalization is consistent: the same bound, scaled by 1/std.
    assert _max_diff(ours_norm, ref_norm) <= (TENSOR_PATH_ATOL + NORMALIZE_ATOL) / min(tv.std)


@pytest.mark.parametrize("key", IMAGES)
def test_uint8_matches_torchvision_pil_path(key: str) -> None:
    image = _image(key)
    tv = VGG16_Weights.IMAGENET1K_V1.transforms()
    ref_norm = _tv_pil(image, tv)
    ours_norm = _ours(image)
    assert _max_diff(_pixels(ours_norm, tv.mean, tv.std), _pixels(ref_norm, tv.mean, tv.std)) <= PIL_PATH_ATOL
    assert _max_diff(ours_norm, ref_norm) <= (PIL_PATH_ATOL + NORMALIZE_ATOL) / min(tv.std)


@pytest.mark.parametrize("key", ["astronaut", "rocket", "301x257", "225x224", "255x999"])
def test_float_input_matches_torchvision_float_tensor_path(key: str) -> None:
    """Float [0, 255] input is not rounded after resizing, like a float tensor in torchvision."""
    image = _image(key)
    tv = VGG16_Weights.IMAGENET1K_V1.transforms()
    # torchvision's float tensors are in [0, 1]; the resize is linear, so this is the same image.
    ref = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255
    ref_norm = tv(ref).numpy().transpose(1, 2, 0)
    ours_norm = _ours(image.astype(np.float32))
    assert _max_diff(_pixels(ours_norm, tv.mean, tv.std), _pixels(ref_norm, tv.mean, tv.std)) <= FLOAT_PATH_ATOL


def test_batch_matches_torchvision_batched_tensor() -> None:
    images = np.stack([_synthetic(301, 257), _synthetic(301, 257)[::-1]])
    tv = VGG16_Weights.IMAGENET1K_V1.transforms()
    ref = tv(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))).numpy().transpose(0, 2, 3, 1)
    ours = _ours(images)
    assert ours.shape == (2, 224, 224, 3)
    assert _max_diff(_pixels(ours, tv.mean, tv.std), _pixels(ref, tv.mean, tv.std)) <= TENSOR_PATH_ATOL


@pytest.mark.parametrize("key", ["astronaut", "coffee", "100x37", "256x353"])
def test_features_weights_use_their_own_statistics(key: str) -> None:
    image = _image(key)
    tv = VGG16_Weights.IMAGENET1K_FEATURES.transforms()
    assert tv.mean != VGG16_Weights.IMAGENET1K_V1.transforms().mean
    ref_norm = _tv_tensor(image, tv)
    ours_norm = _ours(image, "IMAGENET1K_FEATURES")
    assert _max_diff(_pixels(ours_norm, tv.mean, tv.std), _pixels(ref_norm, tv.mean, tv.std)) <= TENSOR_PATH_ATOL
    # std is 1/255 here, so one level is 1.0 in normalized units.
    assert _max_diff(ours_norm, ref_norm) <= (TENSOR_PATH_ATOL + NORMALIZE_ATOL) / min(tv.std)
    # With the default statistics instead, the output is far off.
    assert _max_diff(_ours(image), ref_norm) > 1.0


@pytest.mark.parametrize("resize_size", [200, 199])
@pytest.mark.parametrize("key", ["chelsea", "301x257", "200x200", "1x5"])
def test_resize_smaller_than_crop_pads_like_torchvision(resize_size: int, key: str) -> None:
    image = _image(key)
    tv = ImageClassification(crop_size=224, resize_size=resize_size)
    layer = prep.ImageClassificationPreprocessor(resize_size=resize_size, crop_size=224)
    ours = np.asarray(layer(image))
    for ref, atol in ((_tv_tensor(image, tv), TENSOR_PATH_ATOL), (_tv_pil(image, tv), PIL_PATH_ATOL)):
        assert _max_diff(_pixels(ours, tv.mean, tv.std), _pixels(ref, tv.mean, tv.std)) <= atol


def test_resize_and_crop_geometry_matches_torchvision() -> None:
    from torchvision.transforms.functional import _compute_resized_output_size

    sizes = [
        (h, w) for h in (*range(1, 60, 7), 223, 224, 225, 255, 256, 257, 301, 333, 1000) for w in range(1, 700, 13)
    ]
    expected = [tuple(_compute_resized_output_size((h, w), [256])) for h, w in sizes]
    assert [resize_crop.resized_size(h, w, 256) for h, w in sizes] == expected
    hs, ws = (tf.constant([s[i] for s in sizes]) for i in (0, 1))
    new_h, new_w = resize_crop._tf_resized_size(hs, ws, 256)
    assert list(zip(new_h.numpy().tolist(), new_w.numpy().tolist())) == expected

    # Crop boxes: compare where torchvision's center_crop puts a marker pixel.
    for h, w in [(224, 224), (225, 226), (227, 229), (256, 353), (383, 256), (100, 37), (224, 230), (230, 1)]:
        idx = torch.arange(h * w, dtype=torch.float64).reshape(1, h, w) + 1
        ref = tvF.center_crop(idx, [224]).numpy()[0]
        pt, pb, pl, pr, top, left = resize_crop.center_crop_box(h, w, 224)
        ours = np.pad(idx.numpy()[0], [(pt, pb), (pl, pr)])[top : top + 224, left : left + 224]
        np.testing.assert_array_equal(ours, ref)
        dyn = [int(v) for v in resize_crop._tf_center_crop_box(tf.constant(h), tf.constant(w), 224)]
        assert dyn == [pt, pb, pl, pr, top, left]


# --------------------------------------------------------------------------- #
# The checks bite
# --------------------------------------------------------------------------- #
def test_omitting_antialias_exceeds_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    resize = tf.image.resize

    def no_antialias(*args: object, **kwargs: object) -> tf.Tensor:
        return resize(*args, **{**kwargs, "antialias": False})

    monkeypatch.setattr(tf.image, "resize", no_antialias)
    tv = VGG16_Weights.IMAGENET1K_V1.transforms()
    image = _photo("astronaut")  # downscaled 2x: aliasing shows
    diff = _max_diff(_pixels(_ours(image), tv.mean, tv.std), _pixels(_tv_tensor(image, tv), tv.mean, tv.std))
    assert diff > WRONG_PIPELINE_MIN_DIFF > TENSOR_PATH_ATOL


def test_wrong_crop_rounding_exceeds_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    right = resize_crop.center_crop_box

    def half_up(height: int, width: int, crop: int) -> tuple[int, ...]:
        pt, pb, pl, pr, _, _ = right(height, width, crop)
        return pt, pb, pl, pr, int((height + pt + pb - crop) / 2.0 + 0.5), int((width + pl + pr - crop) / 2.0 + 0.5)

    monkeypatch.setattr(resize_crop, "center_crop_box", half_up)
    tv = VGG16_Weights.IMAGENET1K_V1.transforms()
    image = _synthetic(256, 353)  # left offset (353 - 224) / 2 = 64.5: torchvision takes 64
    diff = _max_diff(_pixels(_ours(image), tv.mean, tv.std), _pixels(_tv_tensor(image, tv), tv.mean, tv.std))
    assert diff > WRONG_PIPELINE_MIN_DIFF


def test_not_rounding_uint8_exceeds_mismatch_fraction() -> None:
    """Why uint8 input is rounded after resizing: torchvision does it, and the fraction check notices."""
    image = _photo("chelsea")
    tv = VGG16_Weights.IMAGENET1K_V1.transforms()
    ref = _pixels(_tv_tensor(image, tv), tv.mean, tv.std)
    unrounded = _pixels(_ours(image.astype(np.float32)), tv.mean, tv.std)
    assert _max_diff(unrounded, ref) <= 0.5 / 255 + FLOAT_PATH_ATOL  # within half a level everywhere...
    assert (
        np.mean(np.abs(unrounded - ref) > 1e-6) > 20 * TENSOR_PATH_MAX_MISMATCH_FRACTION
    )  # ...but off almost everywhere


# --------------------------------------------------------------------------- #
# The layer in tf.data, in a model, channels first, serialization
# --------------------------------------------------------------------------- #
def test_layer_in_tf_data_map_with_mixed_sizes() -> None:
    keys = ["chelsea", "100x37", "255x999", "256x256"]
    images = [_image(k) for k in keys]
    layer = prep.preprocessor_for("vgg16")
    ds = tf.data.Dataset.from_generator(
        lambda: iter(images), output_signature=tf.TensorSpec(shape=(None, None, 3), dtype=tf.uint8)
    )
    ds = ds.map(layer).batch(len(images))
    (batch,) = list(ds)
    assert batch.shape == (len(images), 224, 224, 3) and batch.dtype == tf.float32
    tv = VGG16_Weights.IMAGENET1K_V1.transforms()
    for ours, image in zip(batch.numpy(), images):
        ref = _tv_tensor(image, tv)
        assert _max_diff(_pixels(ours, tv.mean, tv.std), _pixels(ref, tv.mean, tv.std)) <= TENSOR_PATH_ATOL


def _dataset(images: list[np.ndarray], shape: tuple[int | None, ...] = (None, None, 3)) -> tf.data.Dataset:
    """The images, one element each, of the given static shape (``None``: unknown)."""
    spec = tf.TensorSpec(shape=shape, dtype=tf.uint8)
    return tf.data.Dataset.from_generator(lambda: iter(images), output_signature=spec)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_layer_on_a_ragged_batch_resizes_each_image(data_format: str) -> None:
    images = [_synthetic(100, 37), _synthetic(37, 100), _synthetic(60, 80)]
    shape = (None, None, 3)
    if data_format == "channels_first":
        images = [np.ascontiguousarray(image.transpose(2, 0, 1)) for image in images]
        shape = (3, None, None)
    layer = prep.preprocessor_for("vgg16", data_format=data_format)
    ragged = [b.numpy() for b in _dataset(images, shape).ragged_batch(2).map(layer)]
    one_by_one = [b.numpy() for b in _dataset(images, shape).map(layer).batch(2)]
    assert [b.shape[0] for b in ragged] == [2, 1]
    for r, o in zip(ragged, one_by_one):
        np.testing.assert_array_equal(r, o)
    eager = layer(next(iter(_dataset(images, shape).ragged_batch(2))))
    np.testing.assert_array_equal(eager.numpy(), one_by_one[0])


def test_ragged_batch_that_is_not_images_is_refused_in_one_line() -> None:
    layer = prep.preprocessor_for("vgg16")
    grey = _dataset([np.zeros((40, 50), np.uint8), np.zeros((60, 30), np.uint8)], (None, None)).ragged_batch(2)
    with pytest.raises(
        ValueError, match=r"^A ragged batch must be rank 4 .*Received: images.shape=\(None, None, None\)$"
    ):
        grey.map(layer)
    rgba = _dataset([np.zeros((40, 50, 4), np.uint8), np.zeros((60, 30, 4), np.uint8)], (None, None, 4))
    rgba = rgba.ragged_batch(2)
    with pytest.raises(
        ValueError, match=r"^`images` must be RGB with 3 channels .*Received: images.shape=\(None, None, None, 4\)$"
    ):
        rgba.map(layer)


def test_padded_batch_mixes_the_padding_into_the_images() -> None:
    """Why docs/preprocessing.md says to batch after the map (or ragged_batch): padding is resized in."""
    images = [_synthetic(100, 37), _synthetic(60, 80)]
    layer = prep.preprocessor_for("vgg16")
    (padded,) = [b.numpy() for b in _dataset(images).padded_batch(2).map(layer)]
    (right,) = [b.numpy() for b in _dataset(images).map(layer).batch(2)]
    assert _max_diff(padded, right) > 1.0


def test_tf_data_map_runs_our_functions_as_written(caplog: pytest.LogCaptureFixture) -> None:
    """No AutoGraph warning, and a refusal inside ds.map is our one line, not an "in user code" trace."""
    ds = tf.data.Dataset.from_tensor_slices(np.zeros((2, 8, 8, 3), np.uint8))
    with caplog.at_level("WARNING"):
        assert list(ds.map(prep.preprocess_input))[0].shape == (8, 8, 3)
        assert list(ds.map(prep.preprocessor_for("vgg16")))[0].shape == (224, 224, 3)
    assert not [r for r in caplog.records if "AutoGraph" in r.getMessage()]
    rgba = tf.data.Dataset.from_tensor_slices(np.zeros((2, 8, 8, 4), np.uint8))
    with pytest.raises(ValueError) as e:
        rgba.map(prep.preprocess_input)
    assert str(e.value) == "`x` must be RGB with 3 channels on axis -1 (channels_last). Received: x.shape=(8, 8, 4)"


def test_layer_in_keras_model_and_saved(tmp_path: Path) -> None:
    inputs = keras.Input(shape=(None, None, 3), dtype="uint8")
    x = prep.preprocessor_for("vgg16")(inputs)
    assert tuple(x.shape) == (None, 224, 224, 3)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    images = np.stack([_synthetic(301, 257), _synthetic(301, 257)[:, ::-1]])
    expected = _ours(images).mean(axis=(1, 2))
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, rtol=0, atol=NORMALIZE_ATOL)
    path = tmp_path / "pre.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, rtol=0, atol=NORMALIZE_ATOL)
    layer = prep.ImageClassificationPreprocessor.from_config(model.layers[1].get_config())
    assert (layer.resize_size, layer.crop_size, layer.mean, layer.std) == (
        256,
        224,
        prep.IMAGENET_MEAN,
        prep.IMAGENET_STD,
    )


def test_channels_first() -> None:
    images = np.stack([_photo("chelsea")[:300, :400], _synthetic(300, 400)])
    last = _ours(images)
    first = prep.preprocess_images(images.transpose(0, 3, 1, 2), data_format="channels_first")
    assert first.shape == (2, 3, 224, 224)
    np.testing.assert_array_equal(first, last.transpose(0, 3, 1, 2))
    single = prep.preprocess_images(images[0].transpose(2, 0, 1), data_format="channels_first")
    np.testing.assert_array_equal(single, first[0])
    keras.config.set_image_data_format("channels_first")  # the default follows Keras
    assert prep.preprocessor_for().data_format == "channels_first"
    np.testing.assert_array_equal(prep.preprocess_images(images.transpose(0, 3, 1, 2)), first)
    cropped = images[:, :224, :224]
    np.testing.assert_allclose(
        prep.preprocess_input(cropped.transpose(0, 3, 1, 2)),
        prep.preprocess_input(cropped, data_format="channels_last").transpose(0, 3, 1, 2),
        rtol=0,
        atol=0,
    )


def test_list_of_images_of_different_sizes() -> None:
    images = [_photo("coffee"), _synthetic(100, 37)]
    out = prep.preprocess_images(images)
    assert out.shape == (2, 224, 224, 3)
    for o, image in zip(out, images):
        np.testing.assert_array_equal(o, _ours(image))


# --------------------------------------------------------------------------- #
# preprocess_input
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("weights", ["IMAGENET1K_V1", "IMAGENET1K_FEATURES"])
def test_preprocess_input_matches_torchvision_normalization(weights: str) -> None:
    image = _photo("coffee")[:224, :224]
    t = get_weights_record("vgg16", weights).transforms
    ref = tvF.normalize(
        tvF.convert_image_dtype(torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.float), t.mean, t.std
    )
    ours = prep.preprocess_input(image, mean=t.mean, std=t.std)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
    atol = NORMALIZE_ATOL / min(t.std)
    assert _max_diff(ours, ref.numpy().transpose(1, 2, 0)) <= atol
    # float [0, 255] input, a TF tensor and a symbolic Keras tensor give the same.
    assert _max_diff(prep.preprocess_input(image.astype(np.float32), mean=t.mean, std=t.std), ours) <= atol
    as_tf = prep.preprocess_input(tf.constant(image), mean=t.mean, std=t.std)
    assert isinstance(as_tf, tf.Tensor) and _max_diff(as_tf.numpy(), ours) <= atol
    inputs = keras.Input(shape=(224, 224, 3))
    model = keras.Model(inputs, prep.preprocess_input(inputs, mean=t.mean, std=t.std))
    assert _max_diff(model.predict(image[None].astype(np.float32), verbose=0)[0], ours) <= atol


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_preprocess_input_does_not_modify_its_input(dtype: type) -> None:
    x = _synthetic(16, 24).astype(dtype)
    before = x.copy()
    out = prep.preprocess_input(x)
    np.testing.assert_array_equal(x, before)
    assert x.dtype == dtype and not np.shares_memory(out, x)
    assert out.dtype == np.float32


# --------------------------------------------------------------------------- #
# decode_predictions
# --------------------------------------------------------------------------- #
def test_decode_predictions_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a test")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    prep.imagenet_class_names.cache_clear()  # really read the file, under the patch
    names = prep.imagenet_class_names()
    assert names == tuple(_IMAGENET_CATEGORIES)
    assert names[:2] == ("tench", "goldfish")

    preds = np.zeros((2, 1000), np.float32)
    preds[0, [0, 1, 2, 3]] = [0.5, 0.3, 0.1, 0.1]  # a tie: index order
    preds[1, 999] = 1.0
    out = prep.decode_predictions(preds, top=3)
    assert out[0] == [
        ("0", "tench", 0.5),
        ("1", "goldfish", pytest.approx(0.3)),
        ("2", "great white shark", pytest.approx(0.1)),
    ]
    assert out[1][0] == ("999", names[999], 1.0) and len(out[1]) == 3
    assert [len(r) for r in prep.decode_predictions(tf.constant(preds))] == [5, 5]


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: prep.decode_predictions(np.zeros(1000)), r"\(samples, 1000\)\. Received: preds\.shape=\(1000,\)"),
        (lambda: prep.decode_predictions(np.zeros((2, 10))), r"Received: preds\.shape=\(2, 10\)"),
        (lambda: prep.decode_predictions(np.zeros((1, 1000)), top=0), r"Received: top=0"),
        (lambda: prep.preprocess_input(np.zeros((4, 4, 4))), r"3 channels.*Received: x\.shape=\(4, 4, 4\)"),
        (lambda: prep.preprocess_input(np.zeros((3, 4, 4)), data_format="channels_last"), r"Received: x\.shape"),
        (lambda: prep.preprocess_input(np.zeros((4, 4, 3)), data_format="nhwc"), r"Received: data_format='nhwc'"),
        (lambda: prep.preprocess_input(np.zeros((4, 4, 3), bool)), r"Received: x\.dtype=bool"),
        (lambda: prep.preprocess_input(np.zeros((4, 4, 3)), std=(1, 0, 1)), r"Received: std="),
        (lambda: prep.preprocess_images(np.zeros((8, 8), np.uint8)), r"rank 3.*Received: images\.shape=\(8, 8\)"),
        (
            lambda: prep.preprocess_images(np.zeros((8, 8, 4), np.uint8)),
            r"3 channels.*Received: images\.shape=\(8, 8, 4\)",
        ),
        (lambda: prep.preprocess_images(np.zeros((8, 8, 3), np.int32)), r"uint8.*Received: images\.dtype=int32"),
        (lambda: prep.preprocess_images(np.zeros((0, 8, 3), np.uint8)), r"empty.*Received: images\.shape=\(0, 8, 3\)"),
        (lambda: prep.preprocess_images([np.zeros((8, 8), np.uint8)]), r"Received: images\[0\]\.shape=\(8, 8\)"),
        (
            lambda: prep.preprocess_images([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.int64)]),
            r"Received: images\[1\]\.dtype=int64",
        ),
        (lambda: prep.preprocess_images(np.zeros((8, 8, 3), np.uint8), arch="vgg17"), r"Received: arch='vgg17'"),
        (lambda: prep.preprocessor_for("vgg19", "IMAGENET1K_FEATURES"), r"Received: weights='IMAGENET1K_FEATURES'"),
        (lambda: prep.ImageClassificationPreprocessor(crop_size=0), r"Received: crop_size=0"),
        (lambda: prep.ImageClassificationPreprocessor(mean=(0.5, 0.5)), r"Received: mean=\(0\.5, 0\.5\)"),
    ],
)
def test_bad_inputs_raise_clear_errors(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_layer_errors_name_the_problem() -> None:
    layer = prep.preprocessor_for()
    with pytest.raises(ValueError, match=r"3 channels.*Received: images\.shape=\(2, 8, 8, 1\)"):
        layer(np.zeros((2, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match=r"rank 3.*Received: images\.shape=\(None, 8\)"):
        layer(keras.Input(shape=(8,)))


@pytest.mark.slow
def test_module_imports_without_torch(tmp_path: Path) -> None:
    """Preprocessing and labels in a process where torch and torchvision cannot be imported.

    Stand-in ``torch`` and ``torchvision`` packages come first on the child's
    path: importing either records the attempt and fails. (Putting ``None`` in
    ``sys.modules`` instead breaks scipy, which probes ``sys.modules["torch"]``.)
    """
    log = tmp_path / "imports.log"
    for name in ("torch", "torchvision"):
        (tmp_path / "blocked" / name).mkdir(parents=True)
        (tmp_path / "blocked" / name / "__init__.py").write_text(
            f"open({str(log)!r}, 'a').write({name!r} + '\\n')\nraise ImportError('{name} is blocked here')\n"
        )
    code = (
        "from vgg_keras.preprocessing import preprocess_images, decode_predictions\n"
        "import numpy as np\n"
        "x = preprocess_images(np.zeros((300, 200, 3), np.uint8))\n"
        "assert x.shape == (224, 224, 3), x.shape\n"
        "assert decode_predictions(np.eye(1000)[:1])[0][0][1] == 'tench'\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocked"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert not log.exists(), f"imported: {log.read_text()}"
    assert result.returncode == 0, result.stderr[-3000:]


#: End to end, logits may differ by pixel rounding (1/255 on a few values) passed
#: through 11 layers; measured about 1e-4 relative here, so 1e-3 leaves margin
#: while a wrong channel order or normalization gives differences of order 1.
END_TO_END_RTOL = 1e-3


@pytest.mark.full
def test_image_to_label_end_to_end_agrees_with_torchvision() -> None:
    """Photo -> each framework's pipeline -> each framework's model, same weights: same top-1."""
    import vgg_keras
    from parity.convert.random_weights import randomized_state_dict
    from parity.convert.weight_arrays import assign_keras_weights, convert_state_dict
    from parity.core.config import PRESETS

    cfg = PRESETS["vgg11"]
    sd = randomized_state_dict(cfg, seed=21)
    ref = torchvision.models.vgg11().eval()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    model = vgg_keras.VGG11(classifier_activation=None)
    assign_keras_weights(model, convert_state_dict(sd, cfg))
    photos = [skimage_data.astronaut(), skimage_data.chelsea(), skimage_data.coffee(), skimage_data.rocket()]
    transforms = torchvision.models.VGG11_Weights.IMAGENET1K_V1.transforms()
    with torch.no_grad():
        torch_logits = torch.stack(
            [ref(transforms(torch.from_numpy(p).permute(2, 0, 1))[None])[0] for p in photos]
        ).numpy()
    keras_logits = np.concatenate(
        [np.asarray(model(vgg_keras.preprocess_images(p, arch="vgg11")[None])) for p in photos]
    )
    assert np.array_equal(np.argmax(torch_logits, -1), np.argmax(keras_logits, -1))
    rel = np.max(np.abs(torch_logits - keras_logits)) / np.max(np.abs(torch_logits))
    print(f"end-to-end max relative logit difference {rel:.2e}")
    assert rel <= END_TO_END_RTOL

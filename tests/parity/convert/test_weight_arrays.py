"""The converter's pieces: layout transforms, the generated name map, strictness, and checks that bite."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

import h5py
import keras
import numpy as np
import pytest

import parity.convert.weight_arrays
import parity.core.h5file
import parity.core.names
import vgg_keras
import vgg_keras.model
from parity.compare import ParityReport, build_pair, compare_outputs, keras_forward, torch_forward
from parity.convert.random_weights import randomized_state_dict
from parity.convert.weight_arrays import assign_keras_weights, convert_state_dict, weight_map, write_keras_weights
from parity.core.config import PRESETS, VGGConfig
from parity.core.errors import ConversionError
from parity.core.h5file import read_keras_weights
from parity.core.layouts import conv_oihw_to_hwio, dense_out_in_to_in_out, dense_rows_chw_to_hwc
from parity.core.names import infer_num_classes
from tests.conftest import TINY_CONFIGS

#: Float64 reference vs float64 transform: only summation order differs.
FLOAT64_ATOL = 1e-9


def test_conv_oihw_to_hwio_moves_each_element() -> None:
    w = np.arange(5 * 4 * 3 * 3, dtype=np.float32).reshape(5, 4, 3, 3)
    k = conv_oihw_to_hwio(w)
    assert k.shape == (3, 3, 4, 5)
    assert k[2, 1, 3, 4] == w[4, 3, 2, 1]


def test_dense_transpose() -> None:
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(dense_out_in_to_in_out(w), w.T)


def test_first_dense_rows_follow_flatten_orders() -> None:
    rng = np.random.default_rng(0)
    c, h, w, out = 5, 3, 4, 6
    fmap_chw = rng.standard_normal((c, h, w))
    torch_w = rng.standard_normal((out, c * h * w))
    torch_y = torch_w @ fmap_chw.reshape(-1)  # torch.flatten: C, H, W order
    keras_y = fmap_chw.transpose(1, 2, 0).reshape(-1) @ dense_rows_chw_to_hwc(torch_w, c, h, w)  # Keras: H, W, C
    assert np.max(np.abs(torch_y - keras_y)) <= FLOAT64_ATOL
    # The plain transpose is the classic bug: it must not agree.
    wrong_y = fmap_chw.transpose(1, 2, 0).reshape(-1) @ torch_w.T
    assert np.max(np.abs(torch_y - wrong_y)) > 1e-2
    with pytest.raises(ValueError, match="needs 60 inputs"):
        dense_rows_chw_to_hwc(torch_w[:, :59], c, h, w)


def test_transforms_convert_slabs_of_output_features() -> None:
    """f(x[a:b]) == f(x)[..., a:b]: what lets the file writer convert one slab at a time."""
    rng = np.random.default_rng(0)
    c, h, w = 5, 3, 4
    cases = {
        "conv": (conv_oihw_to_hwio, rng.standard_normal((7, 4, 3, 3))),
        "dense": (dense_out_in_to_in_out, rng.standard_normal((7, 9))),
        "first dense": (lambda x: dense_rows_chw_to_hwc(x, c, h, w), rng.standard_normal((7, c * h * w))),
    }
    for name, (f, x) in cases.items():
        whole = f(x)
        for a, b in [(0, 1), (2, 5), (5, 7)]:
            assert np.array_equal(f(x[a:b]), whole[..., a:b]), name


@pytest.mark.parametrize("arch", list(PRESETS))
def test_name_map_covers_torchvision_state_dict(arch: str) -> None:
    with torch.device("meta"):
        keys = [k for k in torchvision.models.get_model(arch).state_dict() if not k.endswith("num_batches_tracked")]
    mapped = [m.torch_key for m in weight_map(PRESETS[arch])]
    assert sorted(mapped) == sorted(keys)
    assert len(set(mapped)) == len(mapped)
    first_dense = next(m for m in weight_map(PRESETS[arch]) if m.keras_layer == "fc1" and m.keras_index == 0)
    assert first_dense.torch_key == "classifier.0.weight"


def test_conversion_is_strict() -> None:
    cfg = TINY_CONFIGS["tiny_bn"]
    sd = randomized_state_dict(cfg)
    with pytest.raises(ConversionError, match=r"unexpected keys: extra\.weight"):
        convert_state_dict({**sd, "extra.weight": np.zeros(1, np.float32)}, cfg)
    missing = {k: v for k, v in sd.items() if k != "features.1.running_var"}
    with pytest.raises(ConversionError, match=r"missing keys: features\.1\.running_var"):
        convert_state_dict(missing, cfg)
    wrong = {**sd, "features.0.weight": np.zeros((5, 3, 3, 3), np.float32)}
    with pytest.raises(
        ConversionError, match=r"shape mismatches: features\.0\.weight \(5, 3, 3, 3\) != \(4, 3, 3, 3\)"
    ):
        convert_state_dict(wrong, cfg)
    with pytest.raises(ConversionError, match=r"unexpected keys: classifier\.0\.weight"):
        convert_state_dict(sd, cfg, include_top=False)
    # A batch-norm step counter is optional where torchvision has one, and unexpected anywhere else.
    convert_state_dict({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, cfg)
    with pytest.raises(ConversionError, match=r"unexpected keys: features\.0\.num_batches_tracked"):
        convert_state_dict({**sd, "features.0.num_batches_tracked": np.array(1)}, cfg)


def test_assignment_is_strict() -> None:
    cfg = TINY_CONFIGS["tiny"]
    weights = convert_state_dict(randomized_state_dict(cfg), cfg)
    model = vgg_keras.build_vgg(cfg)
    before = model.get_layer("fc1").kernel.numpy().copy()
    partial = {k: v for k, v in weights.items() if k != "block2_conv2"}
    with pytest.raises(ConversionError, match="model layers left unassigned: block2_conv2"):
        assign_keras_weights(model, partial)
    with pytest.raises(ConversionError, match="layers not in the model: fc1"):
        assign_keras_weights(vgg_keras.build_vgg(cfg, include_top=False), weights)
    other = vgg_keras.build_vgg(cfg.replace(num_classes=3))
    with pytest.raises(ConversionError, match="shape mismatches: predictions"):
        assign_keras_weights(other, weights)
    assert np.array_equal(model.get_layer("fc1").kernel.numpy(), before)  # nothing assigned on failure


def test_num_classes_read_from_checkpoint() -> None:
    cfg = PRESETS["vgg11_bn"]
    with torch.device("meta"):
        sd = {
            k: np.empty(v.shape, np.float32)
            for k, v in torchvision.models.vgg11_bn(num_classes=10).state_dict().items()
        }
    assert infer_num_classes(sd, cfg) == 10


def _parity(cfg: VGGConfig, size: tuple[int, int], seed: int = 0) -> ParityReport:
    reference, model = build_pair(cfg, randomized_state_dict(cfg, seed))
    x = np.random.default_rng(seed + 1).standard_normal((3, 3, *size), dtype=np.float32)
    return compare_outputs(torch_forward(reference, x), keras_forward(model, x))


def test_wrong_flatten_order_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parity.core.names, "dense_rows_chw_to_hwc", lambda w, c, h, ww: w.T)
    report = _parity(TINY_CONFIGS["tiny"], (37, 45))
    assert not report.passed
    assert report.first_divergent == "logits"


@pytest.mark.cpu_kernels
def test_fc1_rows_reordered_without_an_adaptive_pool() -> None:
    """The CIFAR-style config flattens its last 4x4 map straight into the first dense layer."""
    cfg = TINY_CONFIGS["cifar"]
    assert cfg.pool_size is None and cfg.head_grid == (4, 4)
    sd = randomized_state_dict(cfg, seed=3)
    kernel = convert_state_dict(sd, cfg)["predictions"][0]
    torch_w = sd["classifier.0.weight"]  # (out, C*H*W), the only dense layer
    channels, (h, w) = cfg.out_channels, cfg.head_grid
    for c, row, col in [(0, 0, 1), (5, 2, 3), (channels - 1, h - 1, w - 1)]:
        np.testing.assert_array_equal(kernel[(row * w + col) * channels + c], torch_w[:, (c * h + row) * w + col])
    _parity(cfg, (32, 32)).check()


def test_bn_epsilon_1e3_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vgg_keras.model, "BN_EPSILON", 1e-3)
    report = _parity(TINY_CONFIGS["tiny_bn"], (37, 45))
    assert not report.passed
    assert report.first_divergent == "block1"


def _file_contents(path: Path) -> tuple[dict[str, dict[str, object]], dict[str, np.ndarray]]:
    """Every group of a .weights.h5 with its attributes, and every dataset's value."""
    groups: dict[str, dict[str, object]] = {}
    datasets: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        groups["/"] = dict(f.attrs)

        def visit(name: str, obj: h5py.Group | h5py.Dataset) -> None:
            if isinstance(obj, h5py.Dataset):
                datasets[name] = obj[()]
            else:
                groups[name] = dict(obj.attrs)

        f.visititems(visit)
    return groups, datasets


#: SLAB_BYTES for the tiny configs: small enough that every kernel is written in several slabs.
TINY_SLAB_BYTES = 64


@pytest.mark.parametrize("slab_bytes", [parity.core.h5file.SLAB_BYTES, TINY_SLAB_BYTES], ids=["whole", "slabs"])
@pytest.mark.parametrize("include_top", [True, False], ids=["top", "notop"])
@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_written_file_equals_keras_save_weights(
    name: str, include_top: bool, slab_bytes: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file written from the torch tensors is the file Keras saves for the same weights."""
    monkeypatch.setattr(parity.core.h5file, "SLAB_BYTES", slab_bytes)
    cfg = TINY_CONFIGS[name]
    sd = randomized_state_dict(cfg)
    if not include_top:
        sd = {k: v for k, v in sd.items() if k.startswith("features.")}
    ours = tmp_path / "ours.weights.h5"
    write_keras_weights(sd, cfg, ours, include_top=include_top)
    model = vgg_keras.build_vgg(cfg, include_top=include_top, classifier_activation=None)
    assign_keras_weights(model, convert_state_dict(sd, cfg, include_top=include_top))
    theirs = tmp_path / "keras.weights.h5"
    model.save_weights(theirs)

    our_groups, our_data = _file_contents(ours)
    their_groups, their_data = _file_contents(theirs)
    # Keras numbers input layers process-wide (input_layer_7, ...): the one name that may differ.
    for groups in (our_groups, their_groups):
        groups["layers/input_layer/vars"].pop("name")
    assert our_groups == their_groups
    assert sorted(our_data) == sorted(their_data)
    for key, value in their_data.items():
        assert our_data[key].dtype == value.dtype and our_data[key].shape == value.shape, key
        assert np.array_equal(our_data[key], value), key  # bit-identical: the same transforms, only written in slabs
    # Keras' own loader reads it, and so does ours, to the same variables.
    for load in (lambda m: m.load_weights(ours), lambda m: read_keras_weights(m, ours)):
        other = vgg_keras.build_vgg(cfg, include_top=include_top, classifier_activation=None)
        load(other)
        for a, b in zip(model.weights, other.weights, strict=True):
            assert np.array_equal(a.numpy(), b.numpy()), a.path


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("include_top", [True, False], ids=["top", "notop"])
def test_one_file_for_both_data_formats(include_top: bool, tmp_path: Path) -> None:
    """A file written under channels_first is the channels_last file, and loads into both layouts."""
    cfg = TINY_CONFIGS["tiny_bn"]
    sd = randomized_state_dict(cfg, seed=3)
    if not include_top:
        sd = {k: v for k, v in sd.items() if k.startswith("features.")}
    last_file, first_file = tmp_path / "last.weights.h5", tmp_path / "first.weights.h5"
    write_keras_weights(sd, cfg, last_file, include_top=include_top)
    keras.config.set_image_data_format("channels_first")
    write_keras_weights(sd, cfg, first_file, include_top=include_top)
    assert _file_contents(first_file)[0].keys() == _file_contents(last_file)[0].keys()
    x = np.random.default_rng(4).standard_normal((2, 3, 40, 36), dtype=np.float32)
    outputs = []
    for data_format in ("channels_first", "channels_last"):
        keras.config.set_image_data_format(data_format)
        for load in (lambda m: m.load_weights(first_file), lambda m: read_keras_weights(m, last_file)):
            model = vgg_keras.build_vgg(cfg, include_top=include_top, classifier_activation=None)
            load(model)
            out = np.asarray(model(x if data_format == "channels_first" else x.transpose(0, 2, 3, 1)))
            outputs.append(out if include_top or data_format == "channels_first" else out.transpose(0, 3, 1, 2))
    for out in outputs[1:]:
        assert np.array_equal(out, outputs[0])  # the same weights and the same NHWC computation


def test_mapped_shapes_are_keras_shapes() -> None:
    for cfg in TINY_CONFIGS.values():
        layers = {layer.name: layer for layer in vgg_keras.build_vgg(cfg).layers}
        for m in weight_map(cfg):
            assert m.keras_shape == tuple(layers[m.keras_layer].weights[m.keras_index].shape), m


def test_writer_refuses_a_name_map_that_leaves_a_keras_variable_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = TINY_CONFIGS["tiny_bn"]
    original = parity.convert.weight_arrays.weight_map
    monkeypatch.setattr(
        parity.convert.weight_arrays,
        "weight_map",
        lambda c, top=True: [m for m in original(c, top) if m.torch_key != "features.1.running_var"],
    )
    path = tmp_path / "x.weights.h5"
    with pytest.raises(ConversionError, match=r"Keras variables the name map leaves unassigned: block1_bn1\[3\]"):
        write_keras_weights(randomized_state_dict(cfg), cfg, path)
    assert not path.exists()


def test_writer_is_strict_about_the_state_dict(tmp_path: Path) -> None:
    cfg = TINY_CONFIGS["tiny"]
    path = tmp_path / "x.weights.h5"
    with pytest.raises(ConversionError, match=r"unexpected keys: extra\.weight"):
        write_keras_weights({**randomized_state_dict(cfg), "extra.weight": np.zeros(1, np.float32)}, cfg, path)
    assert not path.exists()


def test_reading_is_strict(tmp_path: Path) -> None:
    cfg = TINY_CONFIGS["tiny"]
    sd = randomized_state_dict(cfg)
    full = tmp_path / "full.weights.h5"
    write_keras_weights(sd, cfg, full)
    features = tmp_path / "features.weights.h5"
    write_keras_weights({k: v for k, v in sd.items() if k.startswith("features.")}, cfg, features, include_top=False)

    model = vgg_keras.build_vgg(cfg)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ConversionError, match="layers missing from the file: fc1, fc2, predictions"):
        read_keras_weights(model, features)
    with pytest.raises(
        ConversionError, match=r"shape mismatches: predictions \[\(16, 7\), \(7,\)\] != \[\(16, 3\), \(3,\)\]"
    ):
        read_keras_weights(vgg_keras.build_vgg(cfg.replace(num_classes=3)), full)
    notop = vgg_keras.build_vgg(cfg, include_top=False)
    with pytest.raises(ConversionError, match="layers not in the model: fc1, fc2, predictions"):
        read_keras_weights(notop, full)
    read_keras_weights(notop, full, strict=False)  # a full file serves include_top=False when asked
    features_only = vgg_keras.build_vgg(cfg, include_top=False)
    read_keras_weights(features_only, features)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(notop.weights, features_only.weights, strict=True))
    assert all(
        np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights, strict=True)
    )  # nothing assigned on failure


def test_assigned_variables_do_not_share_memory_with_the_arrays() -> None:
    """The variables get private buffers: changing the source arrays afterwards changes nothing."""
    cfg = TINY_CONFIGS["tiny"]
    weights = convert_state_dict(randomized_state_dict(cfg), cfg)
    weights = {k: [np.array(a, dtype=np.float32, order="C") for a in v] for k, v in weights.items()}
    model = vgg_keras.build_vgg(cfg)
    assign_keras_weights(model, weights)
    kernel = weights["fc1"][0]
    expected = kernel.copy()
    kernel[...] = 0.0
    assert np.array_equal(model.get_layer("fc1").kernel.numpy(), expected)

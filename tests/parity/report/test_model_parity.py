"""The parity suite: torchvision (reference) against vgg_keras with converted weights.

Every weight is random (BN statistics and biases too), so a wrong mapping of
any tensor shows. Each comparison checks every pooling stage and the logits,
and names the first block that diverges.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torchvision

import keras
import numpy as np
import pytest
import tensorflow as tf

import parity.convert.weight_arrays
import vgg_keras
from parity.compare import LOGIT_RTOL, MODES, ParityError, build_pair, compare_outputs, keras_forward, torch_forward
from parity.convert.random_weights import randomized_state_dict
from parity.convert.weight_arrays import assign_keras_weights, convert_state_dict
from parity.core.config import PRESETS, VGGConfig
from tests.conftest import TINY_CONFIGS, preset_params, torch_state_dict

#: Sizes people feed: the crop, the smallest (adaptive pool upsamples 1x1 to
#: 7x7), odd, non-square, and 64 px where block 1's width equals its 64
#: channels (a case stock Keras Conv2D gets wrong in channels_first).
SIZES = [(224, 224), (32, 32), (225, 225), (200, 320), (64, 64)]
#: Sizes whose full-size cases are in the default run: the canonical size and the smallest; the others are extended.
DEFAULT_SIZES = ((224, 224), (32, 32))


def _size_param(size: tuple[int, int]) -> object:
    return pytest.param(size, id=f"{size[0]}x{size[1]}", marks=() if size in DEFAULT_SIZES else pytest.mark.extended)


SIZE_PARAMS = [_size_param(s) for s in SIZES]
#: Batch 1 and batch 8 runs of the same images in Keras: oneDNN picks other
#: kernels (and summation orders) per batch size; measured 3.5e-6 relative on
#: vgg11, so the logit tolerance applies.
BATCH_CONSISTENCY_RTOL = LOGIT_RTOL
#: GPU (TF32 off, deterministic kernels) against CPU, and torch CUDA against
#: Keras on GPU: cuDNN may choose Winograd/FFT convolution algorithms whose
#: fp32 rounding differs more than CPU direct convolution does.
GPU_RTOL = 1e-4


@dataclass
class Pair:
    config: VGGConfig
    reference: torch.nn.Module
    keras_last: keras.Model
    weights: dict[str, list[np.ndarray]]


def _inputs(size: tuple[int, int], batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, *size), dtype=np.float32)


@pytest.fixture(scope="module", params=preset_params(default=["vgg11_bn"]))  # vgg16: the CLI test
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    arch = request.param
    cfg = PRESETS[arch]
    sd = randomized_state_dict(cfg, seed=list(PRESETS).index(arch))
    keras.config.set_image_data_format("channels_last")
    reference, model = build_pair(cfg, sd)  # reference: torchvision's own model
    yield Pair(cfg, reference, model, convert_state_dict(sd, cfg))
    keras.backend.clear_session()


@pytest.mark.full
@pytest.mark.parametrize("size", SIZE_PARAMS)
def test_logits_and_blocks_match_torchvision(pair: Pair, size: tuple[int, int]) -> None:
    """In every mode: eager, a relaxed tf.function, XLA and predict.

    The sizes run in this order on one ``(None, None, 3)`` model, whose graph,
    XLA and predict functions are kept between sizes: every size after the
    first is a new size for the same trace, as in a user's program.
    """
    x = _inputs(size, batch=2)
    expected = torch_forward(pair.reference, x)
    for mode in MODES:
        report = compare_outputs(expected, keras_forward(pair.keras_last, x, mode=mode))
        report.check()
        assert report.max_rel <= LOGIT_RTOL and report.top1 == 1.0 and report.top5 == 1.0, mode


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_two_sizes_in_a_row_on_one_model(mode: str) -> None:
    """predict and a relaxed tf.function retrace with unknown sizes at the second size."""
    cfg = TINY_CONFIGS["tiny_bn"].replace(pool_size=(7, 7))
    reference, model = build_pair(cfg, randomized_state_dict(cfg, seed=13))
    for size in [(32, 32), (64, 48), (33, 33), (200, 72), (32, 32)]:
        x = _inputs(size, batch=2, seed=14)
        compare_outputs(torch_forward(reference, x), keras_forward(model, x, mode=mode)).check()


@pytest.mark.full
def test_batch_8_equals_batch_1(pair: Pair) -> None:
    x = _inputs((32, 48), batch=8, seed=3)
    whole = np.asarray(pair.keras_last(x.transpose(0, 2, 3, 1)))
    single = np.concatenate([np.asarray(pair.keras_last(x[i : i + 1].transpose(0, 2, 3, 1))) for i in range(8)])
    assert np.max(np.abs(whole - single)) <= BATCH_CONSISTENCY_RTOL * np.max(np.abs(single))
    compare_outputs(torch_forward(pair.reference, x), keras_forward(pair.keras_last, x)).check()


@pytest.mark.full
@pytest.mark.cpu_kernels
@pytest.mark.parametrize("size", [_size_param(s) for s in [(224, 224), (64, 64), (32, 32)]])
def test_channels_first_matches_torchvision(pair: Pair, size: tuple[int, int]) -> None:
    keras.config.set_image_data_format("channels_first")
    model = vgg_keras.build_vgg(pair.config, classifier_activation=None)
    assign_keras_weights(model, pair.weights)
    x = _inputs(size, batch=2, seed=4)
    expected = torch_forward(pair.reference, x)
    for mode in MODES:
        compare_outputs(expected, keras_forward(model, x, mode=mode)).check()


@pytest.mark.full
@pytest.mark.parametrize("arch", preset_params(["vgg16", "vgg19"]))
def test_weights_load_into_keras_applications(arch: str, tmp_path: Path) -> None:
    cfg = PRESETS[arch]
    sd = randomized_state_dict(cfg, seed=42)
    ours = vgg_keras.build_vgg(cfg, classifier_activation=None)
    assign_keras_weights(ours, convert_state_dict(sd, cfg))
    path = tmp_path / f"{arch}.weights.h5"
    ours.save_weights(path)
    ref = getattr(keras.applications, arch.upper())(weights=None, classifier_activation=None)
    ref.load_weights(path)
    x = _inputs((224, 224), batch=2, seed=5).transpose(0, 2, 3, 1)
    expected, got = np.asarray(ref(x)), np.asarray(ours(x))
    # At 224 the adaptive pool is the identity, so the two graphs compute the same thing.
    assert np.max(np.abs(expected - got)) <= LOGIT_RTOL * np.max(np.abs(expected))


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", list(TINY_CONFIGS))
@pytest.mark.slow
def test_tiny_configs(name: str, data_format: str) -> None:
    keras.config.set_image_data_format(data_format)
    cfg = TINY_CONFIGS[name]
    reference, model = build_pair(cfg, randomized_state_dict(cfg, seed=9))
    sizes = [(32, 32)] if cfg.pool_size is None else [(32, 32), (33, 57), (64, 64)]
    for size in sizes:
        x = _inputs(size, batch=3, seed=10)
        expected = torch_forward(reference, x)
        for mode in MODES:
            compare_outputs(expected, keras_forward(model, x, mode=mode)).check()


#: Odd sides, each odd after the first pool too: 2x2 max pools with stride 2 drop the last row and column
#: (torch's floor; "same" padding would keep them and give a larger map, ceil), at every stage.
ODD_SIZES = [(35, 37), (45, 39)]


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("size", ODD_SIZES, ids=[f"{h}x{w}" for h, w in ODD_SIZES])
def test_max_pools_floor_odd_sizes_as_torch(size: tuple[int, int]) -> None:
    """Each block's shape and values at odd sizes, tiny model, eager: the quick proof of torch's pooling."""
    cfg = TINY_CONFIGS["tiny"]
    reference, model = build_pair(cfg, randomized_state_dict(cfg, seed=21))
    x = _inputs(size, batch=2, seed=22)
    expected = torch_forward(reference, x)
    got = keras_forward(model, x)
    assert [got[f"block{b}"].shape[2:] for b in (1, 2, 3)] == [(size[0] // 2**b, size[1] // 2**b) for b in (1, 2, 3)]
    compare_outputs(expected, got).check()


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.slow
def test_exported_saved_model_matches_torchvision(data_format: str, tmp_path: Path) -> None:
    """model.export serves any size (its signature has unknown spatial sizes), 32 px included."""
    keras.config.set_image_data_format(data_format)
    cfg = TINY_CONFIGS["tiny_bn"].replace(pool_size=(7, 7))
    reference, model = build_pair(cfg, randomized_state_dict(cfg, seed=15))
    model.export(tmp_path / "served", format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "served"))  # keep it: .serve holds only weak references
    for size in [(32, 32), (224, 224), (45, 97)]:
        x = _inputs(size, batch=2, seed=16)
        logits = np.asarray(loaded.serve(x if data_format == "channels_first" else x.transpose(0, 2, 3, 1)))
        expected = torch_forward(reference, x)["logits"]
        assert np.max(np.abs(logits - expected)) <= LOGIT_RTOL * np.max(np.abs(expected)), size


def test_broken_converter_fails_and_names_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """A converter that swaps BN running mean and variance is caught at block 1."""
    original = parity.convert.weight_arrays.weight_map

    def swapped(config: VGGConfig, include_top: bool = True) -> list[parity.convert.weight_arrays.WeightMapping]:
        out = []
        for m in original(config, include_top):
            if m.keras_index in (2, 3) and m.torch_key.endswith(("running_mean", "running_var")):
                m = replace(m, keras_index=5 - m.keras_index)
            out.append(m)
        return _reorder(out)

    monkeypatch.setattr(parity.convert.weight_arrays, "weight_map", swapped)
    cfg = TINY_CONFIGS["tiny_bn"]
    reference, model = build_pair(cfg, randomized_state_dict(cfg, seed=12))
    x = _inputs((32, 32), batch=2)
    report = compare_outputs(torch_forward(reference, x), keras_forward(model, x))
    with pytest.raises(ParityError, match="diverge first at block1"):
        report.check()


def _reorder(
    mappings: list[parity.convert.weight_arrays.WeightMapping],
) -> list[parity.convert.weight_arrays.WeightMapping]:
    """Keeps layer order but sorts each layer's weights by Keras index."""
    layers: dict[str, list[parity.convert.weight_arrays.WeightMapping]] = {}
    for m in mappings:
        layers.setdefault(m.keras_layer, []).append(m)
    return [m for ms in layers.values() for m in sorted(ms, key=lambda m: m.keras_index)]


def _gpu_available() -> bool:
    return torch.cuda.is_available() and bool(tf.config.list_physical_devices("GPU"))


@pytest.fixture
def _no_tf32_deterministic() -> Iterator[None]:
    """TF32 off everywhere (TensorFlow enables it by default), deterministic kernels; restored afterwards.

    TensorFlow has no public switch to turn op determinism off again, so that one stays on.
    """
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (
        cuda.allow_tf32,
        cudnn.allow_tf32,
        cudnn.benchmark,
        cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
    )
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    cuda.allow_tf32 = cudnn.allow_tf32 = cudnn.benchmark = False
    cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=False)
    tf.config.experimental.enable_tensor_float_32_execution(False)
    tf.config.experimental.enable_op_determinism()
    yield
    cuda.allow_tf32, cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic = saved[:4]
    torch.use_deterministic_algorithms(saved[4])
    tf.config.experimental.enable_tensor_float_32_execution(tf32)


@pytest.mark.gpu
@pytest.mark.full
@pytest.mark.skipif(not _gpu_available(), reason="no CUDA GPU visible to both torch and TensorFlow")
@pytest.mark.parametrize("arch", ["vgg11_bn", "vgg16", "vgg19_bn"])
@pytest.mark.usefixtures("_no_tf32_deterministic")
def test_gpu_matches_cpu_and_torch_cuda(arch: str) -> None:
    cfg = PRESETS[arch]
    sd = randomized_state_dict(cfg, seed=77)
    reference = torchvision.models.get_model(arch, weights=None, init_weights=False).eval()
    reference.load_state_dict(torch_state_dict(sd))
    x = _inputs((224, 224), batch=4, seed=78)
    cpu_ref = torch_forward(reference, x)
    with torch.no_grad():
        gpu_ref = reference.cuda()(torch.from_numpy(x).cuda()).cpu().numpy()
    reference.cpu()
    with tf.device("/GPU:0"):
        model = vgg_keras.build_vgg(cfg, classifier_activation=None)
        assign_keras_weights(model, convert_state_dict(sd, cfg))
        gpu_keras = keras_forward(model, x)
    with tf.device("/CPU:0"):
        cpu_keras = keras_forward(model, x)
    scale = np.max(np.abs(cpu_ref["logits"]))
    diffs = {
        "torch cuda vs torch cpu": np.max(np.abs(gpu_ref - cpu_ref["logits"])) / scale,
        "keras gpu vs torch cuda": np.max(np.abs(gpu_keras["logits"] - gpu_ref)) / scale,
        "keras gpu vs keras cpu": np.max(np.abs(gpu_keras["logits"] - cpu_keras["logits"])) / scale,
    }
    print(arch, {k: f"{v:.2e}" for k, v in diffs.items()})
    assert all(v <= GPU_RTOL for v in diffs.values()), diffs
    compare_outputs(cpu_ref, gpu_keras, rtol=GPU_RTOL, block_rtol=GPU_RTOL).check()

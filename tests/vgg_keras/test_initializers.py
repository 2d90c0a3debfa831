"""torchvision's initialization in Keras: same distribution per layer, shown statistically."""

from __future__ import annotations

import math

import torch

import keras
import numpy as np
import pytest

import vgg_keras
import vgg_torch
from parity.convert.weight_arrays import weight_map
from parity.core.config import VGGConfig, layer_plan
from vgg_keras.initializers import KaimingNormalFanOut, TorchLinearNormal

#: Wide enough that every kernel has >= 10k elements, so the statistics separate
#: Glorot from Kaiming/N(0, 0.01) by many standard errors; small enough to build in a second.
MEDIUM = VGGConfig(
    stages=((64,), (128,), (128, 128)), hidden=(512, 512), num_classes=100, pool_size=(2, 2), name="medium"
)
#: A per-layer statistic may differ between the two frameworks' samples by this
#: many standard errors of the difference: 5 sigma is exceeded by chance with
#: probability 6e-7 per statistic, so about 1e-5 over the test's ~20 statistics.
SIGMAS: float = 5.0


def init_mismatches(model: keras.Model, reference: torch.nn.Module, config: VGGConfig) -> list[str]:
    """Compares each Keras weight's sample mean and std with the torch tensor's.

    Both samples are i.i.d. with the torch tensor's distribution if the scheme
    matches. With ``n`` elements and standard deviation ``s``, the sample mean
    has standard error ``s / sqrt(n)`` and the sample std ``s / sqrt(2 n)``
    (normal draws); the difference of two independent samples has sqrt(2) times
    that. Tensors that torch fills with a constant must be that constant exactly.

    Returns:
        One line per statistic out of bounds.
    """
    state = {k: v.detach().numpy().astype(np.float64) for k, v in reference.state_dict().items()}
    problems = []
    for m in weight_map(config):
        ours = np.asarray(model.get_layer(m.keras_layer).weights[m.keras_index].numpy(), np.float64)
        theirs = state[m.torch_key]
        s, n = theirs.std(), theirs.size
        if s == 0:
            if not np.array_equal(ours.ravel(), np.full(n, theirs.ravel()[0])):
                problems.append(
                    f"{m.torch_key}: expected all {theirs.ravel()[0]}, got mean {ours.mean():.3g} std {ours.std():.3g}"
                )
            continue
        mean_bound = SIGMAS * math.sqrt(2.0) * s / math.sqrt(n)
        std_bound = SIGMAS * math.sqrt(2.0) * s / math.sqrt(2.0 * n)
        if abs(ours.mean() - theirs.mean()) > mean_bound:
            problems.append(f"{m.torch_key}: mean {ours.mean():.4g} vs {theirs.mean():.4g} (bound {mean_bound:.2g})")
        if abs(ours.std() - s) > std_bound:
            problems.append(f"{m.torch_key}: std {ours.std():.4g} vs {s:.4g} (bound {std_bound:.2g})")
    return problems


@pytest.mark.parametrize("batch_norm", [False, True])
def test_default_init_matches_torchvision(batch_norm: bool) -> None:
    config = MEDIUM.replace(batch_norm=batch_norm)
    torch.manual_seed(0)
    keras.utils.set_random_seed(1)
    assert init_mismatches(vgg_keras.build_vgg(config), vgg_torch.build_vgg(config), config) == []


def test_glorot_fails_the_check() -> None:
    torch.manual_seed(0)
    keras.utils.set_random_seed(1)
    model = vgg_keras.build_vgg(MEDIUM, kernel_initializer="glorot_uniform")
    problems = init_mismatches(model, vgg_torch.build_vgg(MEDIUM), MEDIUM)
    kernels = [m.torch_key for m in weight_map(MEDIUM) if m.torch_key.endswith("weight")]
    # Glorot's std is sqrt(2 / (fan_in + fan_out)). Only the first conv's (3 -> 64: 0.0576 vs Kaiming's
    # 0.0589 over 1728 draws) is within sampling error; every other kernel's std is caught.
    assert {p.split(":")[0] for p in problems if " std " in p} == set(kernels) - {"features.0.weight"}


def test_same_shaped_layers_draw_different_values() -> None:
    model = vgg_keras.build_vgg(MEDIUM, include_top=False)
    a, b = model.get_layer("block3_conv1").kernel.numpy(), model.get_layer("block3_conv2").kernel.numpy()
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_initializers_serialize_and_clone() -> None:
    model = vgg_keras.build_vgg(MEDIUM.replace(batch_norm=True), include_top=True)
    classes = {
        layer.name: type(layer.kernel_initializer).__name__ for layer in model.layers if hasattr(layer, "kernel")
    }
    assert set(classes.values()) == {"KaimingNormalFanOut", "TorchLinearNormal"}
    assert classes["block1_conv1"] == "KaimingNormalFanOut" and classes["predictions"] == "TorchLinearNormal"
    restored = keras.models.model_from_json(model.to_json())
    assert type(restored.get_layer("fc1").kernel_initializer) is TorchLinearNormal
    clone = keras.models.clone_model(model)
    assert type(clone.get_layer("block2_conv1").kernel_initializer) is KaimingNormalFanOut
    for init in (KaimingNormalFanOut(seed=3), TorchLinearNormal(seed=3)):
        again = keras.initializers.deserialize(keras.initializers.serialize(init))
        assert type(again) is type(init) and np.array_equal(again((8, 8)), init((8, 8)))


def test_kaiming_fan_out_is_torchs_for_conv_kernels() -> None:
    # Keras' fan_out of an (kh, kw, in, out) kernel is out * kh * kw, as torch's of (out, in, kh, kw).
    kernel = KaimingNormalFanOut(seed=0)((3, 3, 64, 256)).numpy()
    expected = math.sqrt(2.0 / (256 * 9))
    assert abs(kernel.std() - expected) < SIGMAS * expected / math.sqrt(2 * kernel.size)


def test_glorot_and_custom_initializers_still_apply() -> None:
    model = vgg_keras.build_vgg(MEDIUM, kernel_initializer="glorot_uniform")
    assert {type(layer.kernel_initializer).__name__ for layer in model.layers if hasattr(layer, "kernel")} == {
        "GlorotUniform"
    }
    model = vgg_keras.build_vgg(MEDIUM, include_top=False, kernel_initializer=keras.initializers.Zeros())
    assert not np.any(model.get_layer("block1_conv1").kernel.numpy())


def test_plan_covers_every_kernel() -> None:
    kinds = [spec.kind for spec in layer_plan(MEDIUM)]
    assert kinds.count("conv") == 4 and kinds.count("dense") == 3

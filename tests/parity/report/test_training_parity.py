"""Gradient parity: loss and every parameter's gradient as torch autograd computes them."""

from __future__ import annotations

import torch

import numpy as np
import pytest

from parity.compare import build_pair
from parity.convert.random_weights import randomized_state_dict
from parity.convert.weight_arrays import convert_state_dict, keras_to_state_dict, weight_map
from parity.core.config import PRESETS, VGGConfig
from parity.core.layouts import (
    conv_hwio_to_oihw,
    conv_oihw_to_hwio,
    dense_in_out_to_out_in,
    dense_out_in_to_in_out,
    dense_rows_chw_to_hwc,
    dense_rows_hwc_to_chw,
)
from parity.report.training_parity import (
    GRAD_RTOL,
    cancelled_biases,
    gradient_diffs,
    keras_gradients,
    torch_gradients,
    training_batches,
)
from tests.conftest import TINY_CONFIGS, preset_params


def test_inverse_layouts_undo_forward() -> None:
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((5, 3, 3, 2))
    assert np.array_equal(conv_hwio_to_oihw(conv_oihw_to_hwio(kernel)), kernel)
    dense = rng.standard_normal((6, 4))
    assert np.array_equal(dense_in_out_to_out_in(dense_out_in_to_in_out(dense)), dense)
    first = rng.standard_normal((6, 4 * 2 * 3))
    assert np.array_equal(dense_rows_hwc_to_chw(dense_rows_chw_to_hwc(first, 4, 2, 3), 4, 2, 3), first)
    # Not a transpose: the row order really changes.
    assert not np.array_equal(dense_rows_chw_to_hwc(first, 4, 2, 3), first.T)
    with pytest.raises(ValueError, match=r"Received: kernel.shape=\(25, 6\)"):
        dense_rows_hwc_to_chw(rng.standard_normal((25, 6)), 4, 2, 3)


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_state_dict_round_trip_through_keras_layout(name: str) -> None:
    config = TINY_CONFIGS[name]
    state = randomized_state_dict(config, seed=2)
    back = keras_to_state_dict(convert_state_dict(state, config), config)
    assert list(back) == [m.torch_key for m in weight_map(config)]
    assert all(np.array_equal(back[k], state[k]) for k in back)


def _gradient_case(
    config: VGGConfig, seed: int = 0
) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray], object]:
    state = randomized_state_dict(config, seed)
    reference, model = build_pair(config, state)
    ((x, y),) = training_batches(config, 1, batch=2, size=32, seed=seed + 1)
    loss64, grads64 = torch_gradients(reference, x, y, "float64")
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})  # undo the BN statistics update
    loss32, grads32 = torch_gradients(reference, x, y)
    loss_keras, grads_keras = keras_gradients(model, config, x, y)
    losses = {"float64": loss64, "float32": loss32, "keras": loss_keras}
    return losses, grads64, grads32, grads_keras, (model, x, y)


def _check(config: VGGConfig) -> None:
    losses, grads64, grads32, grads_keras, _ = _gradient_case(config)
    scale = cancelled_biases(config)
    floor = max(d.max_rel for d in gradient_diffs(grads64, grads32, scale))
    # The tolerance stays well above the float32 floor of this very case.
    assert floor <= GRAD_RTOL / 5, floor
    assert abs(losses["keras"] - losses["float32"]) / abs(losses["float32"]) <= GRAD_RTOL
    diffs = gradient_diffs(grads32, grads_keras, scale)
    assert [d.name for d in diffs] == [name for name, _ in torch.nn.Module.named_parameters(_torch_model(config))]
    worst = max(diffs, key=lambda d: d.max_rel)
    assert worst.max_rel <= GRAD_RTOL, worst


def _torch_model(config: VGGConfig) -> torch.nn.Module:
    import vgg_torch

    with torch.device("meta"):
        return vgg_torch.build_vgg(config, init_weights=False)


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
@pytest.mark.slow
def test_gradients_match_torch_tiny(name: str) -> None:
    _check(TINY_CONFIGS[name].replace(dropout=0.0))


@pytest.mark.slow
def test_gradients_match_torch_channels_first() -> None:
    import keras

    keras.config.set_image_data_format("channels_first")  # the conftest fixture restores channels_last
    _check(TINY_CONFIGS["tiny_bn"].replace(dropout=0.0))


@pytest.mark.full
@pytest.mark.parametrize("arch", preset_params(["vgg11_bn", "vgg16"], default=[]))
def test_gradients_match_torch_full_size(arch: str) -> None:
    _check(PRESETS[arch].replace(dropout=0.0))


@pytest.mark.slow
def test_gradient_check_bites() -> None:
    config = TINY_CONFIGS["tiny_bn"].replace(dropout=0.0)
    _, _, grads32, grads_keras, (model, x, y) = _gradient_case(config)
    scale = cancelled_biases(config)
    # The first dense kernel's gradient mapped back by a plain transpose (rows left in HWC order): caught.
    fc1 = grads_keras["classifier.0.weight"]
    keras_layout = dense_rows_chw_to_hwc(fc1, config.out_channels, *config.head_grid)
    wrong = dict(grads_keras, **{"classifier.0.weight": np.ascontiguousarray(keras_layout.T)})
    assert max(d.max_rel for d in gradient_diffs(grads32, wrong, scale)) > 1e-2
    # Batch norm with its moving statistics (inference mode) in the Keras forward pass: caught.
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(np.transpose(x, (0, 2, 3, 1)), training=False))
    variables = [w for layer in model.layers for w in layer.weights if w.trainable]
    grads = iter(tape.gradient(loss, variables))
    by_layer = {
        layer.name: [np.asarray(next(grads)) for w in layer.weights if w.trainable]
        for layer in model.layers
        if layer.weights
    }
    inference = keras_to_state_dict(by_layer, config)
    assert max(d.max_rel for d in gradient_diffs(grads32, inference, scale)) > 1e-2


def _run(**kwargs: object) -> object:
    from parity.report.training_parity import TRAIN_TINY_BN, run_training

    return run_training(TRAIN_TINY_BN, randomized_state_dict(TRAIN_TINY_BN, seed=0), 20, steps_per_epoch=10, **kwargs)


@pytest.mark.slow
def test_twenty_steps_match_torch() -> None:
    from parity.report.training_parity import TRAIN_LOSS_RTOL, TRAIN_WEIGHT_RTOL

    run = _run()
    assert run.learning_rates == [0.05] * 10 + [pytest.approx(0.005)] * 10  # the rate changes mid-run
    assert max(run.loss_rel) <= TRAIN_LOSS_RTOL
    names = [d.name for d in run.weights]
    assert "features.1.running_var" in names and "classifier.6.weight" in names
    assert run.worst_weight.max_rel <= TRAIN_WEIGHT_RTOL and run.passed
    assert "| 20 | 0.005 |" in run.table()


@pytest.mark.slow
def test_twenty_steps_with_keras_sgd_fail() -> None:
    import keras

    run = _run(keras_optimizer=lambda schedule: keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=5e-4))
    assert not run.passed and run.worst_weight.max_rel > 1e-2


@pytest.mark.slow
def test_twenty_steps_with_stock_batch_norm_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    import vgg_keras.model
    from parity.report.training_parity import TRAIN_WEIGHT_RTOL

    monkeypatch.setattr(vgg_keras.model, "BatchNormalization", keras.layers.BatchNormalization)
    run = _run()
    worst = {d.name: d.max_rel for d in run.weights}
    assert max(v for k, v in worst.items() if k.endswith("running_var")) > 10 * TRAIN_WEIGHT_RTOL
    assert not run.passed


def test_training_needs_dropout_zero() -> None:
    from parity.report.training_parity import run_training

    config = TINY_CONFIGS["tiny_bn"]
    with pytest.raises(ValueError, match="Received: dropout=0.5"):
        run_training(config, randomized_state_dict(config), 1)


@pytest.mark.slow
def test_keras_fit_with_torch_sgd_matches_torch_training() -> None:
    """``model.fit`` with TorchSGD and StepLR ends where torch's loop ends (README's fine-tune recipe)."""
    import keras

    from parity.report.training_parity import TRAIN_TINY_BN, TRAIN_WEIGHT_RTOL, keras_state
    from vgg_keras.optimizers import StepLR, TorchSGD

    config, steps, per_epoch = TRAIN_TINY_BN, 12, 4
    reference, model = build_pair(config, randomized_state_dict(config, seed=6))
    batches = training_batches(config, steps, seed=7)
    torch_opt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(torch_opt, step_size=1, gamma=0.5)
    reference.train()
    for step, (x, y) in enumerate(batches):
        torch_opt.zero_grad()
        torch.nn.functional.cross_entropy(reference(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        torch_opt.step()
        if (step + 1) % per_epoch == 0:
            scheduler.step()
    schedule = StepLR(0.05, step_size=1, gamma=0.5, steps_per_epoch=per_epoch)
    model.compile(
        optimizer=TorchSGD(schedule, momentum=0.9, weight_decay=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.concatenate([np.transpose(b[0], (0, 2, 3, 1)) for b in batches])
    y = np.concatenate([b[1] for b in batches])
    # One pass over the 12 batches; the schedule counts its "epochs" of 4 optimizer steps itself.
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
    expected = {k: v.numpy() for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    diffs = gradient_diffs(expected, keras_state(model, config))
    worst = max(diffs, key=lambda d: d.max_rel)
    assert worst.max_rel <= TRAIN_WEIGHT_RTOL, worst


@pytest.mark.slow
def test_imports_stay_lazy() -> None:
    from tests.conftest import run_python

    code = (
        "import sys, parity.report.training_parity, parity.convert.to_torch\n"
        "loaded = [m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "import vgg_keras.optimizers, vgg_keras.initializers\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr

"""TorchSGD and StepLR against torch.optim.SGD and StepLR, step by step."""

from __future__ import annotations

import itertools

import torch

import keras
import numpy as np
import pytest

from vgg_keras.optimizers import StepLR, TorchSGD

STEPS = 40
SHAPES = ((5, 3), (7,), (2, 3, 3, 4))
#: Max |diff| / max |torch| of the weights after STEPS steps in float64: the
#: same formulas, rounded differently only where torch fuses a multiply-add
#: (``add(x, alpha=...)``), which TorchSGD emulates for float32 only; measured
#: 2.6e-15. A wrong formula is off by 1e-3 or more. (float32 is compared bit for bit.)
RTOL_FLOAT64: float = 1e-13
#: float32 with ``exact_rounding=False`` (unfused multiply-adds): half an ulp
#: per operation, compounded over STEPS steps; measured 1.3e-6.
RTOL_UNFUSED: float = 1e-5

OPTIONS = [
    dict(momentum=m, dampening=d, weight_decay=wd, nesterov=n)
    for m, d, wd, n in itertools.product((0.0, 0.9), (0.0, 0.3), (0.0, 0.05), (False, True))
    if not (n and (m == 0 or d != 0)) and not (m == 0 and d != 0)
]


def _problem(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    start = [rng.standard_normal(s) for s in SHAPES]
    curvature = [rng.uniform(0.1, 2.0, s) for s in SHAPES]
    drift = [rng.standard_normal(s) for s in SHAPES]
    return start, curvature, drift


def _gradient(w: np.ndarray, curvature: np.ndarray, drift: np.ndarray, step: int) -> np.ndarray:
    """A gradient that depends on the weights, so a difference compounds over steps."""
    return curvature * w + np.sin(step) * drift


def run_torch(
    options: dict[str, object], lr: float, schedule: tuple[int, float, int] | None, dtype: str
) -> list[np.ndarray]:
    """``torch.optim.SGD`` (and ``StepLR(step_size, gamma)`` stepped every ``steps_per_epoch`` steps)."""
    start, curvature, drift = _problem()
    params = [torch.nn.Parameter(torch.from_numpy(w.astype(dtype))) for w in start]
    opt = torch.optim.SGD(params, lr=lr, **options)  # type: ignore[arg-type]
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=schedule[0], gamma=schedule[1]) if schedule else None
    for step in range(STEPS):
        for p, c, d in zip(params, curvature, drift, strict=True):
            p.grad = torch.from_numpy(_gradient(p.detach().numpy(), c, d, step).astype(dtype))
        opt.step()
        if scheduler is not None and (step + 1) % schedule[2] == 0:
            scheduler.step()
    return [p.detach().numpy().copy() for p in params]


def run_keras(optimizer: keras.optimizers.Optimizer, dtype: str) -> list[np.ndarray]:
    start, curvature, drift = _problem()
    variables = [keras.Variable(w.astype(dtype), dtype=dtype) for w in start]
    for step in range(STEPS):
        grads = [
            _gradient(v.numpy(), c, d, step).astype(dtype) for v, c, d in zip(variables, curvature, drift, strict=True)
        ]
        optimizer.apply_gradients(zip(grads, variables, strict=True))
    return [v.numpy() for v in variables]


def _rel(ours: list[np.ndarray], ref: list[np.ndarray]) -> float:
    return max(
        float(np.max(np.abs(a.astype(np.float64) - b)) / np.max(np.abs(b))) for a, b in zip(ours, ref, strict=True)
    )


SCHEDULE = (2, 0.5, 3)  # StepLR(step_size=2 epochs, gamma=0.5), 3 steps per epoch: 6 rate changes in 40 steps


def _compare(options: dict[str, object], scheduled: bool, dtype: str, lr: float, exact_rounding: bool = True) -> float:
    schedule = SCHEDULE if scheduled else None
    expected = run_torch(options, lr, schedule, dtype)
    rate = StepLR(lr, step_size=SCHEDULE[0], gamma=SCHEDULE[1], steps_per_epoch=SCHEDULE[2]) if scheduled else lr
    return _rel(run_keras(TorchSGD(rate, exact_rounding=exact_rounding, **options), dtype), expected)  # type: ignore[arg-type]


IDS = {"ids": lambda o: "-".join(f"{k}={v}" for k, v in o.items())}


@pytest.mark.parametrize("options", OPTIONS, **IDS)
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "steplr"])
def test_torch_sgd_equals_torch_bit_for_bit_in_float32(options: dict[str, object], scheduled: bool) -> None:
    assert _compare(options, scheduled, "float32", lr=0.1) == 0.0


@pytest.mark.parametrize("options", OPTIONS, **IDS)
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "steplr"])
def test_torch_sgd_equals_torch_in_float64(options: dict[str, object], scheduled: bool) -> None:
    # Keras keeps a float rate in a float32 variable (torch rounds it so only for float32 weights):
    # a rate exact in float32 lets the float64 run compare the formulas alone.
    assert _compare(options, scheduled, "float64", lr=0.125) <= RTOL_FLOAT64


def test_unfused_rounding_within_tolerance() -> None:
    worst = max(_compare(options, True, "float32", lr=0.1, exact_rounding=False) for options in OPTIONS)
    assert 0.0 < worst <= RTOL_UNFUSED


def test_keras_sgd_with_a_schedule_fails() -> None:
    options = dict(momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False)
    expected = run_torch(options, 0.1, SCHEDULE, "float64")
    schedule = StepLR(0.1, step_size=SCHEDULE[0], gamma=SCHEDULE[1], steps_per_epoch=SCHEDULE[2])
    # Same learning rates, same momentum: Keras' buffer holds lr * g, so a rate change acts late.
    got = run_keras(keras.optimizers.SGD(schedule, momentum=0.9), "float64")
    assert _rel(got, expected) > 1e-3
    # At a constant rate without weight decay the two agree (to rounding: Keras' SGD casts momentum to float32).
    assert (
        _rel(
            run_keras(keras.optimizers.SGD(0.125, momentum=0.9), "float32"), run_torch(options, 0.125, None, "float32")
        )
        <= RTOL_UNFUSED
    )


def test_keras_decoupled_weight_decay_fails() -> None:
    options = dict(momentum=0.9, dampening=0.0, weight_decay=0.05, nesterov=False)
    got = run_keras(keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.05), "float64")
    assert _rel(got, run_torch(options, 0.1, None, "float64")) > 1e-3


def test_steplr_rates() -> None:
    schedule = StepLR(0.1, step_size=2, gamma=0.5, steps_per_epoch=3)
    rates = [float(schedule(step)) for step in range(13)]
    assert rates == [0.1] * 6 + [0.05] * 6 + [0.025]


def test_serialization() -> None:
    opt = TorchSGD(StepLR(0.1, 2, 0.5, 3), momentum=0.9, dampening=0.1, weight_decay=1e-4)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again) is TorchSGD and again.get_config() == opt.get_config()
    assert again.weight_decay is None  # Keras' decoupled decay stays off
    assert isinstance(again.learning_rate, StepLR) or float(again.learning_rate) == 0.1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(momentum=-0.1), "momentum=-0.1"),
        (dict(weight_decay=-1.0), "weight_decay=-1.0"),
        (dict(momentum=0.0, nesterov=True), "momentum=0.0"),
        (dict(momentum=0.9, dampening=0.1, nesterov=True), "dampening=0.1"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=f"Received: .*{needle}"):
        TorchSGD(0.1, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Received: step_size=0"):
        StepLR(0.1, step_size=0)

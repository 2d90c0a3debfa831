"""Training parity: the same loss, gradients and optimizer steps in torch and Keras.

Both models start from the same weights (:func:`parity.compare.build_pair`)
and see the same batches, with dropout 0 (dropout masks cannot match across
frameworks) and batch norm in training mode. Keras gradients are carried back
to torch's names and layouts with the converter's own name map and the
inverse layout transforms (:func:`parity.convert.weight_arrays.keras_to_state_dict`), so
every parameter is compared with the torch tensor it came from.

The Keras side uses the TensorFlow backend (``tf.GradientTape``). torch is
imported before TensorFlow, as everywhere in this project.

At about 590 lines this file is over the house limit: the gradient comparison
(top half) and the N-step runs with their report (bottom half) share the
batches, the name map round trip and the tolerances, and are kept together
until the training tools settle; splitting them is the next step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from parity.cli import log
from parity.core.config import VGGConfig

if TYPE_CHECKING:
    import torch

    import keras

__all__ = [
    "GRAD_RTOL",
    "TRAIN_TINY_BN",
    "TRAIN_LOSS_RTOL",
    "TRAIN_WEIGHT_RTOL",
    "GradientDiff",
    "TrainingRun",
    "cancelled_biases",
    "cross_entropy_torch",
    "gradient_diffs",
    "keras_gradients",
    "keras_sgd_step",
    "keras_state",
    "plot_losses",
    "report",
    "run_training",
    "torch_gradients",
    "torch_sgd_step",
    "training_batches",
    "worst_diff",
]

#: Max |keras grad - torch grad| / max |torch grad|, per parameter tensor, in
#: fp32 on CPU, and the same for the loss. The floor, measured as torch
#: float32 against torch float64 on the same weights and batch (batch 2 at
#: 32x32, every weight random), is 5.6e-7 to 1.1e-6 on the tiny configs,
#: 1.1e-6 on vgg16 and 5.2e-6 on vgg11_bn: float32 rounding of the same sums.
#: Keras against torch float32 measures 5e-7 to 9.4e-6 (two float32 runs, so
#: up to twice the floor). The tolerance is 10x the worst floor. A layout
#: mistake or batch norm in inference mode gives 1e-1 or more.
GRAD_RTOL: float = 5e-5
#: Per-step |keras loss - torch loss| / |torch loss| over a 20-step run
#: (tiny_bn, SGD momentum 0.9, weight decay 5e-4, StepLR x0.1 after step 10).
#: The optimizer step is bit-identical, so the drift is the float32 rounding of
#: the forward and backward passes, fed into the next step's weights: measured
#: 2.2e-7 at most over the 20 steps. Keras' SGD instead gives 0.47.
TRAIN_LOSS_RTOL: float = 1e-5
#: Max |diff| / max |torch| of every weight and batch-norm statistic after that
#: run: measured 2.3e-6 (a running mean); 10x that. Keras' SGD gives 0.56,
#: stock Keras batch norm 7.6e-3 in the running variances.
TRAIN_WEIGHT_RTOL: float = 3e-5


def cross_entropy_torch(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``torch.nn.functional.cross_entropy`` on logits, mean over the batch."""
    import torch

    return torch.nn.functional.cross_entropy(logits, labels)


def torch_gradients(
    model: torch.nn.Module, x_nchw: np.ndarray, labels: np.ndarray, dtype: str = "float32"
) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and every parameter's gradient of a torch VGG in training mode.

    Args:
        model: A torchvision-layout VGG (its weights are not changed; with
            batch norm its running statistics are, as in any training step).
        x_nchw: Input batch, NCHW.
        labels: Integer class labels.
        dtype: ``"float32"``, or ``"float64"`` to run a float64 copy (the
            floor against which float32 differences are judged).

    Returns:
        ``(mean cross-entropy, {parameter name: gradient})``.
    """
    import copy

    import torch

    if dtype == "float64":
        model = copy.deepcopy(model).double()
    model.train()
    model.zero_grad(set_to_none=True)
    x = torch.from_numpy(np.ascontiguousarray(x_nchw)).to(torch.float64 if dtype == "float64" else torch.float32)
    loss = cross_entropy_torch(model(x), torch.from_numpy(np.asarray(labels, np.int64)))
    loss.backward()
    grads = {name: p.grad.detach().numpy().copy() for name, p in model.named_parameters()}
    return float(loss.detach()), grads


def keras_gradients(
    model: keras.Model, config: VGGConfig, x_nchw: np.ndarray, labels: np.ndarray
) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and every trainable weight's gradient of a vgg_keras model, in torch's names and layouts.

    Args:
        model: A model of ``config`` ending in logits (``classifier_activation=None``).
        config: The network.
        x_nchw: Input batch, NCHW (moved to the model's data format here).
        labels: Integer class labels.

    Returns:
        ``(mean cross-entropy, {torch parameter name: gradient})``.
    """
    import keras
    import tensorflow as tf

    from parity.convert.weight_arrays import keras_to_state_dict

    layers = _weighted_layers(model)
    trainable = {name: [w for w in layer.weights if w.trainable] for name, layer in layers.items()}
    variables = [v for vs in trainable.values() for v in vs]
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x = _to_model_layout(model, x_nchw)
    with tf.GradientTape() as tape:
        loss = loss_fn(labels, model(x, training=True))
    grads = iter(tape.gradient(loss, variables))
    by_layer = {name: [np.asarray(next(grads)) for _ in vs] for name, vs in trainable.items()}
    return float(loss), keras_to_state_dict(by_layer, config)


def keras_state(model: keras.Model, config: VGGConfig) -> dict[str, np.ndarray]:
    """A vgg_keras model's weights (batch-norm statistics included) as a torchvision state dict.

    Args:
        model: A model of ``config`` with its classifier.
        config: The network.

    Returns:
        ``{torchvision key: array}`` (without ``num_batches_tracked``).
    """
    from parity.convert.weight_arrays import keras_to_state_dict

    return keras_to_state_dict(
        {n: [w.numpy() for w in layer.weights] for n, layer in _weighted_layers(model).items()}, config
    )


def _weighted_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    return {layer.name: layer for layer in model.layers if layer.weights}


def _to_model_layout(model: keras.Model, x_nchw: np.ndarray) -> np.ndarray:
    from vgg_keras.model import input_data_format

    x = np.asarray(x_nchw, dtype=np.float32)
    if input_data_format(model) == "channels_first":
        return x
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


@dataclass(frozen=True)
class GradientDiff:
    """Difference of one parameter's gradient.

    Attributes:
        name: torch parameter name.
        max_abs: Max |candidate - reference|.
        max_ref: Max |reference|.
        max_rel: ``max_abs / max_ref``.
    """

    name: str
    max_abs: float
    max_ref: float
    max_rel: float


def worst_diff(diffs: Sequence[GradientDiff]) -> GradientDiff:
    """The tensor that differs most, relative to its scale."""
    return max(diffs, key=lambda d: d.max_rel)


def cancelled_biases(config: VGGConfig) -> dict[str, str]:
    """Conv biases whose gradient is exactly zero, each with its layer's kernel.

    Batch norm subtracts the batch mean per channel, which removes any
    constant the convolution adds: the loss does not depend on those biases,
    and their float32 gradient is rounding residue of the size of the
    kernel's gradient errors. They are compared relative to the kernel's
    gradient.

    Args:
        config: The network.

    Returns:
        ``{conv bias key: conv weight key}``; empty without batch norm.
    """
    from parity.core.config import layer_plan

    if not config.batch_norm:
        return {}
    return {f"{s.torch_name}.bias": f"{s.torch_name}.weight" for s in layer_plan(config) if s.kind == "conv"}


def gradient_diffs(
    reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], scale_of: Mapping[str, str] | None = None
) -> list[GradientDiff]:
    """Compares two gradient (or weight) dicts tensor by tensor.

    Args:
        reference: ``{name: array}``.
        candidate: The same names and shapes.
        scale_of: ``{name: other name}`` for tensors compared relative to
            another reference tensor's max |value| (see :func:`cancelled_biases`).

    Returns:
        One :class:`GradientDiff` per name, in ``reference``'s order.

    Raises:
        ValueError: If the names or shapes differ.
    """
    if list(reference) != list(candidate):
        raise ValueError(
            f"Both must hold the same tensors. Received: {sorted(set(reference) ^ set(candidate))} in only one"
        )
    out = []
    for name, ref in reference.items():
        ref64 = np.asarray(ref, np.float64)
        got = np.asarray(candidate[name], np.float64)
        if got.shape != ref64.shape:
            raise ValueError(f"{name} has shape {got.shape}, expected {ref64.shape}. Received: shape={got.shape}")
        max_abs = float(np.max(np.abs(got - ref64))) if np.isfinite(got).all() else math.inf
        max_ref = float(np.max(np.abs(np.asarray(reference[(scale_of or {}).get(name, name)], np.float64))))
        rel = max_abs / max_ref if max_ref > 0 else (0.0 if max_abs == 0 else math.inf)
        out.append(GradientDiff(name, max_abs, max_ref, rel))
    return out


def training_batches(
    config: VGGConfig, steps: int, batch: int = 2, size: int = 32, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed random NCHW batches and labels, one per step.

    Args:
        config: The network (channels, classes).
        steps: Number of batches.
        batch: Images per batch.
        size: Input side in pixels.
        seed: numpy seed.

    Returns:
        ``[(x float32 NCHW, labels int64)] * steps``.
    """
    rng = np.random.default_rng(seed)
    return [
        (
            rng.standard_normal((batch, config.in_channels, size, size), dtype=np.float32),
            rng.integers(0, config.num_classes, batch).astype(np.int64),
        )
        for _ in range(steps)
    ]


@dataclass(frozen=True)
class TrainingRun:
    """The same SGD run in both frameworks.

    Attributes:
        config: The network's name.
        steps: Optimizer steps.
        learning_rates: The rate of each step.
        torch_losses: torch's loss before each step.
        keras_losses: Keras' loss before each step.
        loss_rel: ``|keras - torch| / |torch|`` per step.
        weights: Final difference of every state-dict tensor (parameters and
            batch-norm statistics), torch as reference.
    """

    config: str
    steps: int
    learning_rates: list[float]
    torch_losses: list[float]
    keras_losses: list[float]
    loss_rel: list[float]
    weights: list[GradientDiff]

    @property
    def worst_weight(self) -> GradientDiff:
        """The state-dict tensor that differs most (relative)."""
        return worst_diff(self.weights)

    @property
    def passed(self) -> bool:
        """Whether every step's loss and every final tensor is within tolerance."""
        return max(self.loss_rel) <= TRAIN_LOSS_RTOL and self.worst_weight.max_rel <= TRAIN_WEIGHT_RTOL

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        d = asdict(self)
        d["passed"] = self.passed
        d["worst_weight"] = self.worst_weight.name
        d["loss_rtol"], d["weight_rtol"] = TRAIN_LOSS_RTOL, TRAIN_WEIGHT_RTOL
        return d

    def table(self) -> str:
        """Per-step losses and the final weight difference, as a markdown table."""
        rows = ["| step | lr | torch loss | keras loss | relative diff |", "|---|---|---|---|---|"]
        for i, (lr, t, k, r) in enumerate(
            zip(self.learning_rates, self.torch_losses, self.keras_losses, self.loss_rel, strict=True), start=1
        ):
            rows.append(f"| {i} | {lr:g} | {t:.6f} | {k:.6f} | {r:.1e} |")
        w = self.worst_weight
        rows.append("")
        rows.append(
            f"After {self.steps} steps: max weight difference {w.max_rel:.1e} x max |torch| ({w.name}); "
            f"{'within' if self.passed else 'NOT within'} loss {TRAIN_LOSS_RTOL:g} / weights {TRAIN_WEIGHT_RTOL:g}"
        )
        return "\n".join(rows)


def run_training(
    config: VGGConfig,
    state_dict: Mapping[str, np.ndarray],
    steps: int = 20,
    *,
    lr: float = 0.05,
    momentum: float = 0.9,
    dampening: float = 0.0,
    weight_decay: float = 5e-4,
    nesterov: bool = False,
    step_size: int = 1,
    gamma: float = 0.1,
    steps_per_epoch: int = 10,
    batch: int = 2,
    size: int = 32,
    seed: int = 0,
    keras_optimizer: Callable[[object], keras.optimizers.Optimizer] | None = None,
) -> TrainingRun:
    """Runs the same SGD steps in torch and in Keras and compares them.

    torch: ``torch.optim.SGD`` with ``StepLR(step_size, gamma)`` stepped every
    ``steps_per_epoch`` steps. Keras: :class:`vgg_keras.optimizers.TorchSGD`
    with :class:`vgg_keras.optimizers.StepLR`, one ``train_on_batch``-equivalent
    step per batch (forward in training mode, cross-entropy on logits,
    gradient, update).

    Args:
        config: The network; its ``dropout`` must be 0.
        state_dict: Start weights (torchvision layout, numpy).
        steps: Optimizer steps.
        lr: Initial learning rate.
        momentum: SGD momentum.
        dampening: SGD dampening.
        weight_decay: SGD (coupled) weight decay.
        nesterov: Nesterov momentum.
        step_size: StepLR's epochs between decays.
        gamma: StepLR's decay factor.
        steps_per_epoch: Steps per StepLR epoch.
        batch: Images per step.
        size: Input side in pixels.
        seed: Seed of the batches.
        keras_optimizer: Builds the Keras optimizer from the schedule instead
            of TorchSGD (to show what another optimizer does).

    Returns:
        The comparison.

    Raises:
        ValueError: If the config has dropout.
    """
    import torch

    from parity.compare import build_pair
    from vgg_keras.optimizers import StepLR, TorchSGD

    if config.dropout != 0:
        raise ValueError(
            f"Training parity needs dropout 0 (masks differ between frameworks). Received: dropout={config.dropout}"
        )
    reference, model = build_pair(config, state_dict)
    reference.train()
    options = dict(momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
    torch_opt = torch.optim.SGD(reference.parameters(), lr=lr, **options)
    scheduler = torch.optim.lr_scheduler.StepLR(torch_opt, step_size=step_size, gamma=gamma)
    schedule = StepLR(lr, step_size=step_size, gamma=gamma, steps_per_epoch=steps_per_epoch)
    optimizer = keras_optimizer(schedule) if keras_optimizer is not None else TorchSGD(schedule, **options)
    torch_step, keras_step = torch_sgd_step(reference, torch_opt), keras_sgd_step(model, optimizer)
    rates, torch_losses, keras_losses = [], [], []
    for step, (x, y) in enumerate(training_batches(config, steps, batch, size, seed)):
        rates.append(float(torch_opt.param_groups[0]["lr"]))
        torch_losses.append(torch_step(x, y))
        if (step + 1) % steps_per_epoch == 0:
            scheduler.step()
        keras_losses.append(keras_step(x, y))
    return _training_run(config, reference, model, rates, torch_losses, keras_losses)


def torch_sgd_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> Callable[[np.ndarray, np.ndarray], float]:
    """torch's training step: forward in training mode, cross-entropy, backward, ``optimizer.step()``.

    Args:
        model: The torch model, in training mode.
        optimizer: Its optimizer.

    Returns:
        ``step(x_nchw, labels) -> loss before the update``.
    """
    import torch

    def step(x: np.ndarray, y: np.ndarray) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = cross_entropy_torch(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def keras_sgd_step(
    model: keras.Model, optimizer: keras.optimizers.Optimizer
) -> Callable[[np.ndarray, np.ndarray], float]:
    """Keras' training step: a ``tf.function`` with forward in training mode, cross-entropy on logits and the update.

    Args:
        model: The Keras model ending in logits.
        optimizer: Its optimizer.

    Returns:
        ``step(x_nchw, labels) -> loss before the update`` (the batch moved
        to the model's data format).
    """
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables

    @tf.function(jit_compile=False, reduce_retracing=True)
    def keras_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    def step(x: np.ndarray, y: np.ndarray) -> float:
        return float(keras_step(_to_model_layout(model, x), y))

    return step


def _training_run(
    config: VGGConfig,
    reference: torch.nn.Module,
    model: keras.Model,
    rates: list[float],
    torch_losses: list[float],
    keras_losses: list[float],
) -> TrainingRun:
    """Compares the two runs: the loss of each step, and every state-dict tensor at the end.

    Args:
        config: The network.
        reference: The trained torch model.
        model: The trained Keras model.
        rates: The learning rate of each step.
        torch_losses: torch's loss of each step.
        keras_losses: Keras' loss of each step.

    Returns:
        The comparison, torch as reference.
    """
    rel = [abs(k - t) / abs(t) for t, k in zip(torch_losses, keras_losses, strict=True)]
    expected = {
        k: v.detach().numpy() for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    return TrainingRun(
        config.name,
        len(rates),
        rates,
        torch_losses,
        keras_losses,
        rel,
        gradient_diffs(expected, keras_state(model, config)),
    )


def plot_losses(run: TrainingRun, path: Path) -> None:
    """Both loss curves overlaid, and their relative difference, as a PNG (written atomically).

    Args:
        run: :func:`run_training`'s result.
        path: The PNG to write.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from parity.core.atomic import write_atomic

    steps = list(range(1, run.steps + 1))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True, height_ratios=(2, 1))
    top.plot(steps, run.torch_losses, marker="o", label="torch (torch.optim.SGD + StepLR)")
    top.plot(steps, run.keras_losses, marker="x", linestyle="--", label="Keras (TorchSGD + StepLR)")
    for i in range(1, run.steps):
        if run.learning_rates[i] != run.learning_rates[i - 1]:
            top.axvline(i + 0.5, color="grey", linewidth=1, linestyle=":")
    top.set_ylabel("cross-entropy")
    top.legend(fontsize=8)
    top.set_title(f"{run.config}: the same {run.steps} SGD steps in both frameworks (fp32 CPU)")
    bottom.plot(steps, [max(r, 1e-12) for r in run.loss_rel], marker="o", color="black")
    bottom.axhline(TRAIN_LOSS_RTOL, color="red", linewidth=1, label=f"tolerance {TRAIN_LOSS_RTOL:g}")
    bottom.set_yscale("log")
    bottom.set_xlabel("step")
    bottom.set_ylabel("|keras - torch| / |torch|\n(0 drawn at 1e-12)")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png")
    plt.close(fig)
    write_atomic(path, png.getvalue())


def report(steps: int, out_dir: Path, seed: int = 0, arch: str = "tiny_bn") -> bool:
    """The training section of ``python -m parity.report --train-steps N``.

    Runs :func:`run_training` (SGD with momentum 0.9 and weight decay 5e-4,
    the rate divided by 10 halfway), prints the per-step table and writes
    ``training_report.json`` and ``training_report.png`` (both loss curves
    overlaid) into ``out_dir``.

    Args:
        steps: Optimizer steps.
        out_dir: An existing folder.
        seed: Seed of the start weights (every tensor random) and batches.
        arch: ``"tiny_bn"`` (:data:`TRAIN_TINY_BN`) or a preset name, run
            with dropout 0 on 32x32 inputs.

    Returns:
        Whether every step's loss and every final weight is within tolerance.
    """
    import json

    from parity.convert.random_weights import randomized_state_dict
    from parity.core.atomic import write_atomic
    from parity.core.config import PRESETS

    config = (PRESETS[arch] if arch in PRESETS else TRAIN_TINY_BN).replace(dropout=0.0)
    run = run_training(
        config, randomized_state_dict(config, seed), steps, seed=seed, steps_per_epoch=max(1, (steps + 1) // 2)
    )
    print(f"\nTraining: {steps} SGD steps of {config.name} in both frameworks\n")
    print(run.table())
    json_path, png_path = out_dir / "training_report.json", out_dir / "training_report.png"
    write_atomic(json_path, json.dumps({"seed": seed, **run.to_dict()}, indent=2))
    plot_losses(run, png_path)
    log(f"wrote {json_path} and {png_path}", quiet=False)
    return run.passed


#: The default network of the training report: three small stages with batch norm, 32x32 input.
TRAIN_TINY_BN = VGGConfig(
    stages=((4,), (8, 8), (8,)),
    batch_norm=True,
    hidden=(16, 16),
    num_classes=7,
    pool_size=(2, 2),
    dropout=0.0,
    name="tiny_bn",
)

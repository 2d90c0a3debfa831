"""The CIFAR-10 VGG recipe, trained the same way in torch and in Keras: the recipe, the two trainers and the loop.

The recipe's values are the defaults of :class:`Recipe`: ``ToTensor()`` then
``Normalize((0.5,) * 3, (0.5,) * 3)``, batch 512 from a shuffled training set,
no augmentation, mean cross-entropy, ``SGD(lr=0.005, momentum=0.9)``,
``StepLR(step_size=5, gamma=0.9)`` stepped once per epoch, 50 epochs.

torch trains with ``torch.optim.SGD`` and ``torch.optim.lr_scheduler.StepLR``
(:class:`TorchTrainer`). Keras trains with a custom step (a ``tf.function``
holding the forward pass in training mode, the mean cross-entropy,
``tf.GradientTape`` and the update), with :class:`vgg_keras.optimizers.TorchSGD`
(torch's update, rounding included) and :class:`vgg_keras.optimizers.StepLR`
(torch's schedule, counted in optimizer steps) (:class:`KerasTrainer`); not
``model.fit``, so that each step sees exactly the batch torch sees, and both
frameworks share one progress bar and one metric code. When :func:`train` runs
both, they start from one torch initialization (torchvision's scheme,
converted with :func:`parity.convert.weight_arrays.convert_state_dict`) and take their
batches in one order (one numpy permutation per epoch, shared). Only the
dropout masks differ (each framework draws its own), which is why their curves
are close but not equal; with dropout 0 they agree to float32 rounding over the
first steps.

torch is imported before Keras/TensorFlow (the other order can crash the
interpreter); training Keras alone does not import torch at all. The
gradient-by-gradient parity checks of the report are another module,
:mod:`parity.report.training_parity`; the command line is :mod:`parity.train`, what a run
writes :mod:`parity.train.outputs`.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from parity.cifar.data import CifarData, normalize
from parity.cli import log
from parity.core.config import VGGConfig

__all__ = [
    "FRAMEWORKS",
    "Curves",
    "KerasTrainer",
    "Progress",
    "Recipe",
    "TorchTrainer",
    "Trainer",
    "cross_entropy",
    "epoch_orders",
    "initial_state",
    "train",
]

FRAMEWORKS = ("torch", "keras")


@dataclass(frozen=True)
class Recipe:
    """The training hyperparameters (the CIFAR-10 VGG recipe by default).

    Attributes:
        epochs: Passes over the training set.
        batch_size: Images per step; the last step of an epoch takes the rest.
        lr: SGD's initial learning rate.
        momentum: SGD's momentum.
        step_size: StepLR's epochs between decays.
        gamma: StepLR's decay factor.
        seed: Seed of the initialization, the dropout masks and the batch order.
        limit: Use only the first ``limit`` training and test images.
    """

    epochs: int = 50
    batch_size: int = 512
    lr: float = 0.005
    momentum: float = 0.9
    step_size: int = 5
    gamma: float = 0.9
    seed: int = 0
    limit: int | None = None

    def steps_per_epoch(self, n: int) -> int:
        """Optimizer steps in one epoch of ``n`` images."""
        return math.ceil(n / self.batch_size)


@dataclass
class Curves:
    """One framework's run: lists with one entry per epoch (``step_loss``: per step)."""

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    images_per_s: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of logits, in float64 (the test loss of both frameworks, one code)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


# --- progress --------------------------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar per epoch on stderr (only the final line when stderr is not a terminal)."""

    WIDTH = 24

    def __init__(self, label: str, total: int, quiet: bool = False) -> None:
        self.label, self.total, self.quiet = label, total, quiet
        self.live = sys.stderr.isatty() and not quiet
        self.started = time.perf_counter()

    def line(self, step: int, loss: float, acc: float, images: int) -> str:
        filled = round(self.WIDTH * step / self.total)
        rate = images / max(time.perf_counter() - self.started, 1e-9)
        return (
            f"{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {step}/{self.total} "
            f"loss {loss:.4f} acc {100 * acc:5.1f}% {rate:7.1f} img/s"
        )

    def update(self, step: int, loss: float, acc: float, images: int) -> None:
        if self.live:
            print(f"\r{self.line(step, loss, acc, images)}", end="", file=sys.stderr, flush=True)

    def done(self, text: str) -> None:
        log(("\r" if self.live else "") + text, self.quiet)


# --- the two trainers ------------------------------------------------------------------------------------------------


class TorchTrainer:
    """torch's loop: ``SGD`` + ``StepLR``, ``cross_entropy``, ``model.train()`` / ``eval()``."""

    name = "torch"

    def __init__(self, config: VGGConfig, state: dict[str, np.ndarray], recipe: Recipe) -> None:
        import torch

        import vgg_torch

        self.torch = torch
        self.model = vgg_torch.build_vgg(config, init_weights=False)
        self.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=recipe.lr, momentum=recipe.momentum)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=recipe.step_size, gamma=recipe.gamma)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, x_nchw: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        torch = self.torch
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(torch.from_numpy(x_nchw))
        target = torch.from_numpy(y)
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()), int((logits.detach().argmax(1) == target).sum())

    def end_epoch(self) -> None:
        self.scheduler.step()

    def logits(self, x_nchw: np.ndarray) -> np.ndarray:
        self.model.eval()
        with self.torch.no_grad():
            return self.model(self.torch.from_numpy(x_nchw)).numpy()

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()}


class KerasTrainer:
    """Keras' loop: a ``tf.function`` step with ``TorchSGD`` + ``StepLR`` and mean cross-entropy on logits."""

    name = "keras"

    def __init__(
        self,
        config: VGGConfig,
        state: dict[str, np.ndarray] | None,
        recipe: Recipe,
        steps_per_epoch: int,
        jit_compile: bool = False,
    ) -> None:
        import keras
        import tensorflow as tf

        import vgg_keras
        from parity.convert.weight_arrays import assign_keras_weights, convert_state_dict
        from vgg_keras.optimizers import StepLR, TorchSGD

        self.config = config
        self.model = vgg_keras.build_vgg(config, classifier_activation=None)
        if state is not None:
            assign_keras_weights(self.model, convert_state_dict(state, config))
        self.schedule = StepLR(
            recipe.lr, step_size=recipe.step_size, gamma=recipe.gamma, steps_per_epoch=steps_per_epoch
        )
        self.optimizer = TorchSGD(self.schedule, momentum=recipe.momentum)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # mean over the batch, as torch's
        model, optimizer = self.model, self.optimizer
        variables = model.trainable_variables

        @tf.function(jit_compile=jit_compile, reduce_retracing=True)
        def train_step(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = loss_fn(y, logits)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=-1), y), tf.int32))
            return loss, correct

        @tf.function(jit_compile=jit_compile, reduce_retracing=True)
        def predict(x: tf.Tensor) -> tf.Tensor:
            return model(x, training=False)

        self._train_step, self._predict = train_step, predict

    def lr(self) -> float:
        return float(self.schedule(self.optimizer.iterations))

    def step(self, x_nchw: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        loss, correct = self._train_step(np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)), y)
        return float(loss), int(correct)

    def end_epoch(self) -> None:
        """Nothing: StepLR counts optimizer steps."""

    def logits(self, x_nchw: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))))

    def state_dict(self) -> dict[str, np.ndarray]:
        from parity.report.training_parity import keras_state

        return keras_state(self.model, self.config)


Trainer = TorchTrainer | KerasTrainer


def _evaluate(trainer: Trainer, x: np.ndarray, y: np.ndarray, batch: int) -> tuple[float, float]:
    logits = np.concatenate([trainer.logits(x[i : i + batch]) for i in range(0, len(x), batch)])
    return cross_entropy(logits, y), float(np.mean(logits.argmax(1) == y))


def initial_state(config: VGGConfig, seed: int) -> dict[str, np.ndarray]:
    """torchvision's initialization of ``config``, drawn by torch with ``seed``, as numpy arrays."""
    import torch

    import vgg_torch

    torch.manual_seed(seed)
    return {k: v.numpy().copy() for k, v in vgg_torch.build_vgg(config).state_dict().items()}


def epoch_orders(n: int, epochs: int, seed: int) -> list[np.ndarray]:
    """The shuffled order of each epoch: one numpy permutation per epoch, shared by both frameworks."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(epochs)]


def train(
    config: VGGConfig,
    data: CifarData,
    recipe: Recipe,
    frameworks: Sequence[str] = FRAMEWORKS,
    *,
    jit_compile: bool = False,
    quiet: bool = False,
    threads: int | None = None,
    orders: dict[str, list[np.ndarray]] | None = None,
    check: Callable[[], None] | None = None,
) -> tuple[dict[str, Curves], dict[str, Trainer]]:
    """Trains ``config`` on ``data`` in each framework, epoch by epoch in turn.

    Args:
        config: The network (``num_classes`` must cover the labels).
        data: The images (already limited).
        recipe: Hyperparameters.
        frameworks: ``("torch",)``, ``("keras",)`` or both.
        jit_compile: Compile Keras' step with XLA.
        quiet: No progress output.
        threads: CPU threads of each framework (``None``: their defaults, all cores).
        orders: Batch order per framework (default: :func:`epoch_orders`,
            the same for both); for showing what another order does.
        check: Called between steps (raises to stop, e.g. on a signal).

    Returns:
        ``({framework: curves}, {framework: trainer})``.

    Examples:
        >>> from parity.cifar.write import digits_as_cifar
        >>> from parity.core.config import get_named_config
        >>> from parity.train.loop import Recipe, train
        >>> data = digits_as_cifar().limit(256)
        >>> config = get_named_config("cifar10_vgg16").replace(num_classes=10, dropout=0.0)
        >>> curves, trainers = train(config, data, Recipe(epochs=2, batch_size=32), quiet=True)  # doctest: +SKIP
        >>> [len(c.test_acc) for c in curves.values()]  # doctest: +SKIP
        [2, 2]
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with _framework_threads(frameworks, threads):
        trainers = _make_trainers(config, recipe, frameworks, len(data.train_images), jit_compile)
        shared = epoch_orders(len(data.train_images), recipe.epochs, recipe.seed)
        chosen = {name: (orders or {}).get(name, shared) for name in trainers}
        curves = _run_epochs(trainers, data, recipe, chosen, quiet, check)
    return curves, trainers


@contextlib.contextmanager
def _framework_threads(frameworks: Sequence[str], threads: int | None) -> Iterator[None]:
    """Imports torch first when it trains, and gives each framework ``threads`` CPU threads for the run.

    torch's thread count is the process's: it is restored for the caller on
    exit. TensorFlow's thread pools are fixed once it has run in this
    process: they are set where that is still possible.

    Args:
        frameworks: The frameworks that train.
        threads: CPU threads of each (``None``: leave their defaults).

    Yields:
        Nothing; the run happens inside the block.
    """
    previous: int | None = None
    if "torch" in frameworks:
        import torch

        import vgg_torch  # noqa: F401  (torch and torchvision before TensorFlow)

        if threads is not None and torch.get_num_threads() != threads:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
    try:
        if "keras" in frameworks and threads is not None:
            import tensorflow as tf

            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # TensorFlow already running in this process: its thread pools are fixed
                pass
        yield
    finally:
        if previous is not None:
            torch.set_num_threads(previous)


def _make_trainers(
    config: VGGConfig, recipe: Recipe, frameworks: Sequence[str], n: int, jit_compile: bool
) -> dict[str, Trainer]:
    """Builds each framework's trainer from one torch initialization (Keras alone: its own).

    Args:
        config: The network.
        recipe: Hyperparameters (the seed included).
        frameworks: The frameworks that train.
        n: Training images (for Keras' per-step schedule).
        jit_compile: Compile Keras' step with XLA.

    Returns:
        ``{framework: trainer}``, torch first.
    """
    trainers: dict[str, Trainer] = {}
    state = None
    if "torch" in frameworks:
        import torch

        torch.manual_seed(recipe.seed)
        state = initial_state(config, recipe.seed)
        trainers["torch"] = TorchTrainer(config, state, recipe)
    if "keras" in frameworks:
        import keras

        keras.utils.set_random_seed(recipe.seed)
        trainers["keras"] = KerasTrainer(config, state, recipe, recipe.steps_per_epoch(n), jit_compile)
    return trainers


def _run_epochs(
    trainers: dict[str, Trainer],
    data: CifarData,
    recipe: Recipe,
    orders: dict[str, list[np.ndarray]],
    quiet: bool,
    check: Callable[[], None] | None,
) -> dict[str, Curves]:
    """Runs every epoch, each framework in turn, evaluating on the test set after each.

    Args:
        trainers: ``{framework: trainer}``.
        data: The images.
        recipe: Hyperparameters.
        orders: Each framework's batch order per epoch.
        quiet: No progress output.
        check: Called between steps.

    Returns:
        ``{framework: curves}``.
    """
    x_train, x_test = normalize(data.train_images), normalize(data.test_images)
    steps = recipe.steps_per_epoch(len(x_train))
    curves = {name: Curves() for name in trainers}
    for epoch in range(recipe.epochs):
        for name, trainer in trainers.items():
            lr = trainer.lr()
            bar = Progress(f"{name:5s} epoch {epoch + 1}/{recipe.epochs}", steps, quiet)
            started = time.perf_counter()
            loss, acc, seen = _train_epoch(
                trainer, x_train, data.train_labels, orders[name][epoch], recipe, curves[name], bar, check
            )
            seconds = time.perf_counter() - started
            trainer.end_epoch()
            test_loss, test_acc = _evaluate(trainer, x_test, data.test_labels, recipe.batch_size)
            _record_epoch(curves[name], loss, acc, test_loss, test_acc, lr, seconds, seen)
            bar.done(
                f"{bar.line(steps, loss, acc, seen)}  test loss {test_loss:.4f} acc {100 * test_acc:5.1f}%"
                f"  lr {lr:.6g}  {seconds:.1f} s"
            )
    return curves


def _train_epoch(
    trainer: Trainer,
    x: np.ndarray,
    y: np.ndarray,
    order: np.ndarray,
    recipe: Recipe,
    curves: Curves,
    bar: Progress,
    check: Callable[[], None] | None,
) -> tuple[float, float, int]:
    """One pass over the training set in ``order``, each step's loss appended to ``curves.step_loss``.

    Args:
        trainer: The framework's trainer.
        x: Normalized training images, NCHW.
        y: Their labels.
        order: This epoch's permutation of the images.
        recipe: Hyperparameters (the batch size).
        curves: The framework's curves.
        bar: The epoch's progress bar.
        check: Called before each step.

    Returns:
        ``(mean train loss, train accuracy, images seen)``.
    """
    total_loss, correct, seen = 0.0, 0, 0
    for i in range(recipe.steps_per_epoch(len(x))):
        if check is not None:
            check()
        idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
        loss, right = trainer.step(x[idx], y[idx])
        curves.step_loss.append(loss)
        total_loss += loss * len(idx)
        correct += right
        seen += len(idx)
        bar.update(i + 1, total_loss / seen, correct / seen, seen)
    return total_loss / seen, correct / seen, seen


def _record_epoch(
    c: Curves, loss: float, acc: float, test_loss: float, test_acc: float, lr: float, seconds: float, seen: int
) -> None:
    """Appends one epoch's figures to a framework's curves."""
    c.train_loss.append(loss)
    c.train_acc.append(acc)
    c.test_loss.append(test_loss)
    c.test_acc.append(test_acc)
    c.lr.append(lr)
    c.seconds.append(seconds)
    c.images_per_s.append(seen / seconds)

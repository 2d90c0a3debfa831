"""``python -m parity.train``: the CIFAR-10 VGG recipe, trained the same way in torch and in Keras.

The recipe's values are the defaults: ``ToTensor()`` then ``Normalize((0.5,)
* 3, (0.5,) * 3)``, batch 512 from a shuffled training set, no augmentation,
mean cross-entropy, ``SGD(lr=0.005, momentum=0.9)``, ``StepLR(step_size=5,
gamma=0.9)`` stepped once per epoch, 50 epochs.

torch trains with ``torch.optim.SGD`` and ``torch.optim.lr_scheduler.StepLR``.
Keras trains with a custom step (a ``tf.function`` holding the forward pass in
training mode, the mean cross-entropy, ``tf.GradientTape`` and the update),
with :class:`vgg_keras.optimizers.TorchSGD` (torch's update, rounding
included) and :class:`vgg_keras.optimizers.StepLR` (torch's schedule, counted
in optimizer steps); not ``model.fit``, so that each step sees exactly the
batch torch sees, and both frameworks share one progress bar and one metric
code. With ``--framework both`` the two start from one torch initialization
(torchvision's scheme, converted with :func:`parity.converter.convert_state_dict`)
and take their batches in one order (one numpy permutation per epoch, shared).
Only the dropout masks differ (each framework draws its own), which is why
their curves are close but not equal; with ``--dropout 0`` they agree to
float32 rounding over the first steps.

Written into ``--output``, each file under a temporary name and renamed when
complete: ``history.json`` (per epoch and framework: train loss and accuracy,
test loss and accuracy, learning rate, seconds, images/s; per step: train
loss), ``curves.png`` (both frameworks overlaid), ``keras.weights.h5`` (with
its provenance sidecar, loadable by ``vgg_keras.build_vgg(config,
weights=path)``) and ``torch.pth`` (a state dict).

Exit codes: 0 success, 2 bad input (one line on stderr ending in ``Received:
...``, nothing written), 130/143 interrupted by SIGINT/SIGTERM (one line; no
file written, never a partial one).

torch is imported before Keras/TensorFlow (the other order can crash the
interpreter); ``--framework keras`` does not import torch at all.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from parity.cifar import load_cifar10
from parity.cifar_data import CifarData, CifarError, normalize
from parity.core.config import PRESETS, RECIPES, VGGConfig, get_named_config
from parity.core.errors import first_line, os_reason
from parity.machine import cpu_name

__all__ = ["FRAMEWORKS", "OUTPUT_FILES", "Recipe", "cpu_name", "cross_entropy", "main", "train"]

FRAMEWORKS = ("torch", "keras")
#: Files one run writes into ``--output`` (the sidecar of the Keras weights aside).
OUTPUT_FILES = ("history.json", "curves.png", "keras.weights.h5", "torch.pth")


class UsageError(ValueError):
    """A user mistake: reported in one line, exit code 2."""


class Interrupted(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


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
        if not self.quiet:
            print(("\r" if self.live else "") + text, file=sys.stderr, flush=True)


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
        self, config: VGGConfig, state: dict[str, np.ndarray] | None, recipe: Recipe, steps_per_epoch: int, jit_compile: bool = False
    ) -> None:
        import keras
        import tensorflow as tf

        import vgg_keras
        from parity.converter import assign_keras_weights, convert_state_dict
        from vgg_keras.optimizers import StepLR, TorchSGD

        self.config = config
        self.model = vgg_keras.build_vgg(config, classifier_activation=None)
        if state is not None:
            assign_keras_weights(self.model, convert_state_dict(state, config))
        self.schedule = StepLR(recipe.lr, step_size=recipe.step_size, gamma=recipe.gamma, steps_per_epoch=steps_per_epoch)
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
        from parity.training import keras_state

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
    """
    import os as _os

    _os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if "torch" in frameworks:
        import torch

        import vgg_torch  # noqa: F401  (torch and torchvision before TensorFlow)

        torch.manual_seed(recipe.seed)
        if threads is not None and torch.get_num_threads() != threads:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                return train(config, data, recipe, frameworks, jit_compile=jit_compile, quiet=quiet, threads=threads, orders=orders, check=check)
            finally:
                torch.set_num_threads(previous)  # the thread count is the process's: restored for the caller
    if "keras" in frameworks and threads is not None:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already running in this process: its thread pools are fixed
            pass
    n = len(data.train_images)
    steps = recipe.steps_per_epoch(n)
    state = initial_state(config, recipe.seed) if "torch" in frameworks else None
    trainers: dict[str, Trainer] = {}
    if "torch" in frameworks:
        assert state is not None
        trainers["torch"] = TorchTrainer(config, state, recipe)
    if "keras" in frameworks:
        import keras

        keras.utils.set_random_seed(recipe.seed)
        trainers["keras"] = KerasTrainer(config, state, recipe, steps, jit_compile)
    shared = epoch_orders(n, recipe.epochs, recipe.seed)
    orders = {name: (orders or {}).get(name, shared) for name in trainers}
    x_train, x_test = normalize(data.train_images), normalize(data.test_images)
    y_train, y_test = data.train_labels, data.test_labels
    curves = {name: Curves() for name in trainers}
    for epoch in range(recipe.epochs):
        for name, trainer in trainers.items():
            lr = trainer.lr()
            bar = Progress(f"{name:5s} epoch {epoch + 1}/{recipe.epochs}", steps, quiet)
            started = time.perf_counter()
            total_loss, correct, seen = 0.0, 0, 0
            order = orders[name][epoch]
            for i in range(steps):
                if check is not None:
                    check()
                idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
                loss, right = trainer.step(x_train[idx], y_train[idx])
                curves[name].step_loss.append(loss)
                total_loss += loss * len(idx)
                correct += right
                seen += len(idx)
                bar.update(i + 1, total_loss / seen, correct / seen, seen)
            seconds = time.perf_counter() - started
            trainer.end_epoch()
            test_loss, test_acc = _evaluate(trainer, x_test, y_test, recipe.batch_size)
            c = curves[name]
            c.train_loss.append(total_loss / seen)
            c.train_acc.append(correct / seen)
            c.test_loss.append(test_loss)
            c.test_acc.append(test_acc)
            c.lr.append(lr)
            c.seconds.append(seconds)
            c.images_per_s.append(seen / seconds)
            bar.done(
                f"{bar.line(steps, total_loss / seen, correct / seen, seen)}  test loss {test_loss:.4f} acc {100 * test_acc:5.1f}%"
                f"  lr {lr:.6g}  {seconds:.1f} s"
            )
    return curves, trainers


# --- outputs ---------------------------------------------------------------------------------------------------------


def plot_curves(curves: dict[str, Curves], title: str) -> bytes:
    """Loss and test accuracy per epoch, the frameworks overlaid, as PNG bytes (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"torch": "tab:red", "keras": "tab:blue"}
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for name, c in curves.items():
        epochs = np.arange(1, len(c.train_loss) + 1)
        ax_loss.plot(epochs, c.train_loss, "-o", ms=3, color=colors[name], label=f"{name} train")
        ax_loss.plot(epochs, c.test_loss, "--s", ms=3, color=colors[name], label=f"{name} test")
        ax_acc.plot(epochs, [100 * a for a in c.test_acc], "-o", ms=3, color=colors[name], label=f"{name} test")
    ax_loss.set(xlabel="epoch", ylabel="mean cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png")
    plt.close(fig)
    return png.getvalue()


def _versions(frameworks: Sequence[str]) -> dict[str, str]:
    out = {"numpy": np.__version__, "python": platform.python_version()}
    if "torch" in frameworks:
        import torch

        out["torch"] = torch.__version__
    if "keras" in frameworks:
        import keras
        import tensorflow as tf

        out["keras"], out["tensorflow"] = keras.__version__, tf.__version__
    return out


def write_outputs(
    out: Path,
    config: VGGConfig,
    recipe: Recipe,
    data: CifarData,
    curves: dict[str, Curves],
    trainers: dict[str, Trainer],
    before_commit: Callable[[], None] | None = None,
) -> list[Path]:
    """Writes the weights, ``history.json`` and ``curves.png``, each atomically.

    Returns:
        The paths written.
    """
    from parity.core.atomic import write_atomic
    from parity.core.weights_file import stage_converted_weights

    written = []
    versions = _versions(list(trainers))
    history: dict[str, object] = {
        "config": config.to_dict(),
        "recipe": asdict(recipe),
        "data": {"source": data.source, "train_images": len(data.train_images), "test_images": len(data.test_images)},
        "cpu": cpu_name(),
        "versions": versions,
        "frameworks": {name: asdict(c) for name, c in curves.items()},
        "final": {name: {"train_loss": c.train_loss[-1], "test_loss": c.test_loss[-1], "test_acc": c.test_acc[-1]} for name, c in curves.items()},
    }
    if len(curves) == 2:
        history["final"]["test_acc_diff"] = curves["keras"].test_acc[-1] - curves["torch"].test_acc[-1]  # type: ignore[index]
    if "keras" in trainers:
        from parity.converter import write_keras_weights

        path = out / "keras.weights.h5"
        with stage_converted_weights(path) as staged:
            write_keras_weights(trainers["keras"].state_dict(), config, staged.path)
            record = {
                "arch": config.name,
                "config": config.to_dict(),
                "include_top": True,
                "source": {"kind": "trained", "framework": "keras", "recipe": asdict(recipe), "data": data.source},
                "versions": versions,
                "verification": None,
            }
            staged.commit(record, before_commit=before_commit)
        written.append(path)
    if "torch" in trainers:
        import torch

        buffer = io.BytesIO()
        torch.save({k: torch.from_numpy(v) for k, v in trainers["torch"].state_dict().items()}, buffer)
        write_atomic(out / "torch.pth", buffer.getvalue(), before_commit=before_commit)
        written.append(out / "torch.pth")
    title = f"{config.name} on {Path(data.source.split(' (')[0]).name}: {len(data.train_images)} train / {len(data.test_images)} test images, {cpu_name()}"
    write_atomic(out / "curves.png", plot_curves(curves, title), before_commit=before_commit)
    write_atomic(out / "history.json", json.dumps(history, indent=1) + "\n", before_commit=before_commit)
    written += [out / "curves.png", out / "history.json"]
    return written


# --- CLI -------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    d = Recipe()
    names = [*RECIPES, *PRESETS]
    parser = argparse.ArgumentParser(
        prog="python -m parity.train",
        description="Train a VGG on a CIFAR-10 folder in torch, Keras or both, from the same start and batch order.",
    )
    parser.add_argument("arch", nargs="?", default="cifar10_vgg16", choices=names, help="preset or recipe (default cifar10_vgg16)")
    parser.add_argument("--config", metavar="FILE", help="a VGGConfig as JSON (VGGConfig.to_dict()), instead of ARCH")
    parser.add_argument("--data", metavar="DIR", required=True, help="CIFAR-10 folder (binary or Python version)")
    parser.add_argument("--framework", choices=("torch", "keras", "both"), default="both")
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"default {d.lr}")
    parser.add_argument("--momentum", type=float, default=d.momentum, help=f"default {d.momentum}")
    parser.add_argument("--step-size", type=int, default=d.step_size, help=f"StepLR's step_size (default {d.step_size})")
    parser.add_argument("--gamma", type=float, default=d.gamma, help=f"StepLR's gamma (default {d.gamma})")
    parser.add_argument("--dropout", type=float, help="override the config's dropout (0 makes both frameworks agree step by step)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the init, dropout and batch order (default 0)")
    parser.add_argument("--limit", type=int, help="use only the first N training and N test images")
    parser.add_argument("--threads", type=int, help="CPU threads per framework (default: all cores)")
    parser.add_argument("--jit-compile", action="store_true", help="compile Keras' step with XLA")
    parser.add_argument("--output", metavar="DIR", default="train_output", help="folder for the results (default ./train_output)")
    parser.add_argument("--force", action="store_true", help="overwrite results already in --output")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def _config(args: argparse.Namespace, data_classes: int) -> VGGConfig:
    if args.config is not None:
        try:
            raw = json.loads(Path(args.config).read_text())
            config = VGGConfig.from_dict(raw)
        except OSError as e:
            raise UsageError(f"--config cannot be read ({os_reason(e)}). Received: --config {args.config}") from None
        except (ValueError, TypeError) as e:
            raise UsageError(f"--config must be a VGGConfig as JSON ({first_line(e)}). Received: --config {args.config}") from None
    else:
        config = get_named_config(args.arch)
    try:
        if args.dropout is not None:
            config = config.replace(dropout=args.dropout)
        if config.num_classes != data_classes:
            config = config.replace(num_classes=data_classes)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if config.in_channels != 3:
        raise UsageError(f"CIFAR-10 images have 3 channels. Received: in_channels={config.in_channels}")
    if config.pool_size is None and config.input_size != (32, 32):
        raise UsageError(f"A config without an adaptive pool must be built for 32x32 CIFAR images. Received: input_size={config.input_size}")
    if config.min_input_size > 32:
        raise UsageError(f"{len(config.stages)} max-pool stages do not fit 32x32 images (at most 5). Received: {len(config.stages)} stages")
    return config


def _check_args(args: argparse.Namespace) -> Recipe:
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--step-size", args.step_size)):
        if value < 1:
            raise UsageError(f"{flag} must be a positive integer. Received: {flag} {value}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be a positive integer. Received: --threads {args.threads}")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be a positive integer. Received: --limit {args.limit}")
    for flag, value in (("--lr", args.lr), ("--momentum", args.momentum), ("--gamma", args.gamma)):
        if not math.isfinite(value) or value < 0 or (flag == "--lr" and value == 0):
            raise UsageError(f"{flag} must be a finite {'positive' if flag == '--lr' else 'non-negative'} number. Received: {flag} {value}")
    return Recipe(args.epochs, args.batch_size, args.lr, args.momentum, args.step_size, args.gamma, args.seed, args.limit)


def _check_output(folder: str, force: bool, frameworks: Sequence[str]) -> Path:
    out = Path(folder).expanduser()
    shown = f"Received: --output {folder}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output must be a folder. {shown}")
    if not out.parent.is_dir():
        raise UsageError(f"--output's parent folder does not exist: create it first. {shown}")
    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise UsageError(f"--output cannot be created ({os_reason(e)}). {shown}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--output is not writable: fix its permissions or pick another. {shown}")
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not force:
        raise UsageError(f"--output already holds {', '.join(existing)}: pass --force to overwrite. {shown}")
    return out


_received_signal: int | None = None


def _raise_interrupted(signum: int, frame: object) -> None:
    global _received_signal
    _received_signal = signum
    raise Interrupted(signum)


def _abort_if_interrupted() -> None:
    if _received_signal is not None:
        raise Interrupted(_received_signal)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        0 on success, 2 on bad input (one line on stderr), 128 + the signal
        number when interrupted (nothing written).
    """
    global _received_signal
    args = build_parser().parse_args(argv)
    frameworks = FRAMEWORKS if args.framework == "both" else (args.framework,)
    _received_signal = None
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    where = "before training"
    written: list[Path] = []
    try:
        recipe = _check_args(args)
        data = load_cifar10(args.data).limit(recipe.limit)
        config = _config(args, len(data.classes))
        out = _check_output(args.output, args.force, frameworks)
        if "torch" in frameworks:
            try:
                import torch  # noqa: F401  (torch and torchvision before TensorFlow)
                import torchvision  # noqa: F401
            except ImportError:
                raise UsageError("--framework torch/both needs torch: pip install 'vgg-parity[torch]'. Received: torch not installed") from None
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        if "keras" in frameworks and os.environ["KERAS_BACKEND"] != "tensorflow":
            raise UsageError(f"Keras training here uses the TensorFlow backend. Received: KERAS_BACKEND={os.environ['KERAS_BACKEND']}")
        if not args.quiet:
            print(
                f"Training {config.name} ({config.num_params:,} parameters) on {data.source}: {len(data.train_images)} train / "
                f"{len(data.test_images)} test images, {', '.join(frameworks)}, {recipe.epochs} epochs of "
                f"{recipe.steps_per_epoch(len(data.train_images))} steps (batch {recipe.batch_size}), on {cpu_name()}",
                file=sys.stderr,
            )
        where = "during training"
        curves, trainers = train(
            config, data, recipe, frameworks, jit_compile=args.jit_compile, quiet=args.quiet, threads=args.threads,
            check=_abort_if_interrupted,
        )
        where = "while writing the results"
        written = write_outputs(out, config, recipe, data, curves, trainers, before_commit=_abort_if_interrupted)
    except (UsageError, CifarError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, Interrupted) else int(signal.SIGINT)
        print(
            f"error: interrupted {where}; no file was left half-written (temporary files removed). "
            f"Received: {signal.Signals(signum).name}",
            file=sys.stderr,
        )
        return 128 + signum
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if not args.quiet:
        finals = ", ".join(f"{n} {100 * c.test_acc[-1]:.2f}%" for n, c in curves.items())
        print(f"Final test accuracy: {finals}. Wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

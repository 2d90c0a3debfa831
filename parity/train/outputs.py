"""What one training run writes: ``history.json``, ``curves.png`` and the weights of each framework.

Written into ``--output`` by :func:`write_outputs`, each file under a temporary
name and renamed when complete: ``history.json`` (per epoch and framework:
train loss and accuracy, test loss and accuracy, learning rate, seconds,
images/s; per step: train loss), ``curves.png`` (both frameworks overlaid,
:func:`plot_curves`), ``keras.weights.h5`` (with its provenance sidecar,
loadable by ``vgg_keras.build_vgg(config, weights=path)``) and ``torch.pth``
(a state dict).
"""

from __future__ import annotations

import io
import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from parity.cifar.data import CifarData
from parity.core.config import VGGConfig
from parity.machine import cpu_name, package_versions
from parity.train.loop import Curves, Recipe, Trainer

__all__ = ["OUTPUT_FILES", "plot_curves", "write_outputs"]

#: Files one run writes into ``--output`` (the sidecar of the Keras weights aside).
OUTPUT_FILES = ("history.json", "curves.png", "keras.weights.h5", "torch.pth")


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
    """Python's version and the installed versions of numpy and the frameworks that trained."""
    packages = (
        "numpy",
        *(("torch",) if "torch" in frameworks else ()),
        *(("keras", "tensorflow") if "keras" in frameworks else ()),
    )
    return {**package_versions(packages), "python": platform.python_version()}


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
        "final": {
            name: {"train_loss": c.train_loss[-1], "test_loss": c.test_loss[-1], "test_acc": c.test_acc[-1]}
            for name, c in curves.items()
        },
    }
    if len(curves) == 2:
        history["final"]["test_acc_diff"] = curves["keras"].test_acc[-1] - curves["torch"].test_acc[-1]  # type: ignore[index]
    if "keras" in trainers:
        from parity.convert.weight_arrays import write_keras_weights

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
    title = (
        f"{config.name} on {Path(data.source.split(' (')[0]).name}: "
        f"{len(data.train_images)} train / {len(data.test_images)} test images, {cpu_name()}"
    )
    write_atomic(out / "curves.png", plot_curves(curves, title), before_commit=before_commit)
    write_atomic(out / "history.json", json.dumps(history, indent=1) + "\n", before_commit=before_commit)
    written += [out / "curves.png", out / "history.json"]
    return written

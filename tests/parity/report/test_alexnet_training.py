"""Training parity on AlexNet's geometry: the same SGD steps (TorchSGD + StepLR in Keras) from the same weights.

Tiny widths, every tensor random, dropout 0 (masks differ between frameworks). The start weights are the
same random tensors in both; Keras' counterpart of PyTorch's default initialization (torchvision's AlexNet
init) is not part of this.
"""

from __future__ import annotations

import pytest

from parity.convert.random_weights import randomized_state_dict
from parity.core.config import ALEXNET, RECIPES

TINY_ALEXNET = ALEXNET.replace(stages=((4,), (6,), (8,), (8,), (6,)), hidden=(16, 16), num_classes=7, dropout=0.0)
TINY_PAPER = RECIPES["paper_alexnet"].replace(stages=((4,), (6,), (8,), (8,), (6,)), hidden=(16, 16), dropout=0.0)


@pytest.mark.slow
@pytest.mark.parametrize(("config", "size"), [(TINY_ALEXNET, 63), (TINY_PAPER, 227)], ids=["alexnet", "paper"])
def test_sgd_steps_match_torch(config: object, size: int) -> None:
    from parity.report.training_parity import TRAIN_LOSS_RTOL, run_training

    run = run_training(config, randomized_state_dict(config, seed=2), 8, lr=1e-3, steps_per_epoch=4, size=size)
    assert min(run.torch_losses) > 0  # a loss still to learn from: its relative difference is meaningful
    assert max(run.loss_rel) <= TRAIN_LOSS_RTOL and run.passed, run.table()


@pytest.mark.slow
def test_keras_sgd_does_not_match() -> None:
    """The check bites: Keras' own SGD (another momentum and weight-decay rule) ends elsewhere."""
    import keras

    from parity.report.training_parity import run_training

    run = run_training(
        TINY_ALEXNET,
        randomized_state_dict(TINY_ALEXNET, seed=2),
        8,
        lr=1e-3,
        steps_per_epoch=4,
        size=63,
        keras_optimizer=lambda schedule: keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=5e-4),
    )
    assert not run.passed

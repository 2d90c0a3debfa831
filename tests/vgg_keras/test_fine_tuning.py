"""Fine-tuning a batch-norm VGG: Keras' ``training=False`` trap, and :func:`vgg_keras.freeze_batch_norm`.

Keras' transfer-learning guide calls the base as ``base(x, training=False)``
and unfreezes it to fine-tune; in Keras 3.15, ``fit`` then still updates the
base's batch-norm statistics (ours and stock Keras layers alike). The first
tests pin that behaviour down (if Keras changes it, they fail and
docs/training.md needs updating); the others show that freezing batch norm
keeps the statistics, ``gamma`` and ``beta`` fixed while the convolutions
train, in eager, graph and XLA ``fit`` and in a custom loop (``predict`` unchanged).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import vgg_keras
from tests.conftest import TINY, TINY_BN

#: How ``fit`` runs the step: ``run_eagerly``, a ``tf.function``, XLA.
MODES = {"eager": {"run_eagerly": True}, "graph": {}, "xla": {"jit_compile": True}}
#: One step of SGD at 0.1 on unit-normal inputs moves some moving mean by far more than this (measured 0.1 to 0.3).
MOVED = 1e-2


def _fine_tuned(base: keras.Model, freeze: bool) -> keras.Model:
    """The guide's model: ``base(x, training=False)``, a new head, the base unfrozen."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    base.trainable = True
    if freeze:
        vgg_keras.freeze_batch_norm(model)
    return model


def _tiny_bn_base() -> keras.Model:
    keras.utils.set_random_seed(0)
    return vgg_keras.build_vgg(TINY_BN, include_top=False, input_shape=(32, 32, 3))


def _batch_norms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def _state(layers: list[keras.layers.Layer]) -> list[np.ndarray]:
    return [np.array(w) for layer in layers for w in layer.weights]


def _max_moved(before: list[np.ndarray], after: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(a - b))) for a, b in zip(after, before))


def _fit_one_step(model: keras.Model, mode: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 3, 4)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **MODES[mode],
    )
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)


@pytest.mark.parametrize("mode", MODES)
def test_training_false_still_updates_batch_norm_statistics(mode: str) -> None:
    base = _tiny_bn_base()
    model = _fine_tuned(base, freeze=False)
    before = _state(_batch_norms(base))
    _fit_one_step(model, mode)
    assert _max_moved(before, _state(_batch_norms(base))) > MOVED


def test_stock_keras_batch_norm_has_the_same_trap() -> None:
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()])
    model = _fine_tuned(base, freeze=False)
    before = _state(_batch_norms(base))
    _fit_one_step(model, "graph")
    assert _max_moved(before, _state(_batch_norms(base))) > MOVED


@pytest.mark.parametrize("mode", MODES)
def test_frozen_batch_norm_keeps_its_weights_while_the_convolutions_train(mode: str) -> None:
    base = _tiny_bn_base()
    model = _fine_tuned(base, freeze=True)
    norms = _batch_norms(base)
    convs = [layer for layer in base.layers if isinstance(layer, keras.layers.Conv2D)]
    bn_before, conv_before = _state(norms), _state(convs)
    _fit_one_step(model, mode)
    assert _max_moved(bn_before, _state(norms)) == 0.0
    assert _max_moved(conv_before, _state(convs)) > 0.0


def test_frozen_batch_norm_in_a_custom_training_loop() -> None:
    base = _tiny_bn_base()
    model = _fine_tuned(base, freeze=True)
    norms = _batch_norms(base)
    before = _state(norms)
    x = tf.constant(np.random.default_rng(2).standard_normal((4, 32, 32, 3), dtype=np.float32))
    inference = np.asarray(model(x, training=False))
    np.testing.assert_allclose(model.predict(x, verbose=0), inference, rtol=0, atol=1e-6)
    with tf.GradientTape() as tape:
        out = model(x, training=True)  # frozen batch norm normalizes with its moving statistics
        loss = tf.reduce_mean(out**2)
    np.testing.assert_allclose(np.asarray(out), inference, rtol=0, atol=1e-6)
    keras.optimizers.SGD(0.1).apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    assert _max_moved(before, _state(norms)) == 0.0


def test_freeze_batch_norm_names_what_it_froze_and_nothing_else() -> None:
    base = _tiny_bn_base()
    model = _fine_tuned(base, freeze=False)
    norms = _batch_norms(base)
    assert vgg_keras.freeze_batch_norm(model) == ["block1_bn1", "block2_bn1", "block2_bn2", "block3_bn1"]
    assert [layer.name for layer in norms] == ["block1_bn1", "block2_bn1", "block2_bn2", "block3_bn1"]
    assert not any(layer.trainable for layer in norms)
    assert base.trainable and all(layer.trainable for layer in model.layers + base.layers if layer not in norms)
    assert vgg_keras.freeze_batch_norm(vgg_keras.build_vgg(TINY)) == []


def test_freeze_batch_norm_refuses_what_is_not_a_model() -> None:
    with pytest.raises(ValueError, match=r"^`model` must be a Keras model or layer\. Received: model=str$"):
        vgg_keras.freeze_batch_norm("vgg16_bn")  # type: ignore[arg-type]

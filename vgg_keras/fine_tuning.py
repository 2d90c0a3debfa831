"""Fine-tuning a batch-norm VGG without moving its batch-norm statistics.

The Keras transfer-learning guide calls the pretrained base as
``base(inputs, training=False)`` and says batch norm then stays in inference
mode once the base is unfrozen. In Keras 3.15 it does not: ``fit`` still runs
every ``BatchNormalization`` layer of the base in training mode, so its moving
mean and variance follow the new data (stock Keras layers do the same;
measured in docs/training.md). A ``BatchNormalization`` layer whose
``trainable`` is ``False`` always runs in inference mode: that is what
:func:`freeze_batch_norm` sets, as torchvision's ``FrozenBatchNorm2d`` does.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras

__all__ = ["freeze_batch_norm"]


def freeze_batch_norm(model: keras.layers.Layer) -> list[str]:
    """Puts every batch-norm layer of a model in inference mode for good.

    Sets ``trainable = False`` on each ``keras.layers.BatchNormalization``
    (ours included) in ``model`` and in the models nested in it. Those layers
    then normalize with their moving statistics in ``fit``, in
    ``model(x, training=True)`` and in every execution mode, never update them,
    and their ``gamma`` and ``beta`` are no longer trained; every other layer
    keeps its ``trainable`` flag. Call it before ``compile`` (or compile
    again): Keras collects the trainable weights when it compiles.

    Example:

    ```python
    base = vgg_keras.VGG16_BN(weights="converted", include_top=False)
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    vgg_keras.freeze_batch_norm(model)  # base.trainable stays True: convolutions are fine-tuned
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    ```

    Args:
        model: A Keras model or layer.

    Returns:
        The names of the layers frozen, in the order the model holds them
        (empty for a model without batch norm).

    Raises:
        ValueError: If ``model`` is not a Keras layer or model.
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"`model` must be a Keras model or layer. Received: model={type(model).__name__}")
    frozen = []
    for layer in _layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def _layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """``layer`` and every layer nested in it (models inside models), depth first."""
    yield layer
    for child in getattr(layer, "layers", ()):
        yield from _layers(child)

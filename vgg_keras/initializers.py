"""torchvision's VGG initialization as Keras initializers.

torchvision's ``VGG._initialize_weights`` draws every ``Conv2d`` weight from
``kaiming_normal_(mode="fan_out", nonlinearity="relu")``, that is N(0, 2 / fan_out)
with ``fan_out = out_channels * kh * kw``, and every ``Linear`` weight from
N(0, 0.01); biases are zero and batch norm starts at gamma 1, beta 0. Keras'
layers default to Glorot uniform kernels instead.

:class:`KaimingNormalFanOut` is exactly torch's distribution for a Keras
``(kh, kw, in, out)`` kernel: Keras' ``fan_out`` of such a kernel is also
``out * kh * kw``, and the draw is an untruncated normal. :class:`TorchLinearNormal`
is N(0, 0.01). Both are registered, so ``model.to_json()`` and
``keras.models.clone_model`` keep them. Zero biases and BN's 1/0 are Keras'
defaults already.
"""

from __future__ import annotations

import keras

__all__ = [
    "LINEAR_STDDEV",
    "KaimingNormalFanOut",
    "TorchLinearNormal",
    "conv_kernel_initializer",
    "dense_kernel_initializer",
]

#: Standard deviation torchvision draws every Linear weight of VGG with.
LINEAR_STDDEV: float = 0.01


@keras.saving.register_keras_serializable(package="vgg_keras")
class KaimingNormalFanOut(keras.initializers.VarianceScaling):
    """torch's ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``: N(0, 2 / fan_out).

    Args:
        seed: An integer, a ``keras.random.SeedGenerator`` or ``None``, as for
            any Keras random initializer.
    """

    def __init__(self, seed: int | keras.random.SeedGenerator | None = None) -> None:
        super().__init__(scale=2.0, mode="fan_out", distribution="untruncated_normal", seed=seed)

    def get_config(self) -> dict[str, object]:
        """Returns the seed only: the rest is fixed by the class."""
        return {"seed": super().get_config()["seed"]}


@keras.saving.register_keras_serializable(package="vgg_keras")
class TorchLinearNormal(keras.initializers.RandomNormal):
    """torchvision's VGG ``Linear`` init: N(0, :data:`LINEAR_STDDEV`).

    Args:
        seed: An integer, a ``keras.random.SeedGenerator`` or ``None``.
    """

    def __init__(self, seed: int | keras.random.SeedGenerator | None = None) -> None:
        super().__init__(mean=0.0, stddev=LINEAR_STDDEV, seed=seed)

    def get_config(self) -> dict[str, object]:
        """Returns the seed only: the rest is fixed by the class."""
        return {"seed": super().get_config()["seed"]}


def conv_kernel_initializer(
    kernel_initializer: str | keras.initializers.Initializer | None,
) -> str | keras.initializers.Initializer:
    """The initializer of one convolution kernel.

    Args:
        kernel_initializer: ``None`` or ``"torchvision"`` for torchvision's
            scheme, anything else (``"glorot_uniform"``, an initializer) as given.

    Returns:
        A new :class:`KaimingNormalFanOut` (one per layer, so layers of the
        same shape draw different values), or ``kernel_initializer``.
    """
    return KaimingNormalFanOut() if kernel_initializer in (None, "torchvision") else kernel_initializer


def dense_kernel_initializer(
    kernel_initializer: str | keras.initializers.Initializer | None,
) -> str | keras.initializers.Initializer:
    """The initializer of one dense kernel; see :func:`conv_kernel_initializer`."""
    return TorchLinearNormal() if kernel_initializer in (None, "torchvision") else kernel_initializer

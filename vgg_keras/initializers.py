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

import math

import keras

__all__ = [
    "LINEAR_STDDEV",
    "TorchDefaultBias",
    "TorchDefaultUniform",
    "KaimingNormalFanOut",
    "TorchLinearNormal",
    "conv_kernel_initializer",
    "dense_kernel_initializer",
    "torch_default_initializers",
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


@keras.saving.register_keras_serializable(package="vgg_keras")
class TorchDefaultUniform(keras.initializers.VarianceScaling):
    """PyTorch's default ``Conv2d``/``Linear`` weight: ``kaiming_uniform_(a=sqrt(5))``, U(-b, b), b = 1/sqrt(fan_in).

    The gain for ``a = sqrt(5)`` is sqrt(1/3), so the bound ``gain * sqrt(3 / fan_in)`` is ``1 / sqrt(fan_in)``:
    Keras' uniform variance scaling with ``scale = 1/3`` on ``fan_in`` (``kh * kw * in`` for a ``(kh, kw, in, out)``
    kernel, ``in`` for a dense one), as torch counts it.

    Examples:
        >>> import numpy as np
        >>> w = np.asarray(TorchDefaultUniform(seed=0)((3, 3, 16, 32)))
        >>> bool(np.abs(w).max() <= 1 / np.sqrt(3 * 3 * 16))
        True
    """

    def __init__(self, seed: int | keras.random.SeedGenerator | None = None) -> None:
        super().__init__(scale=1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seed)

    def get_config(self) -> dict[str, object]:
        """Returns the seed only: the rest is fixed by the class."""
        return {"seed": super().get_config()["seed"]}


@keras.saving.register_keras_serializable(package="vgg_keras")
class TorchDefaultBias(keras.initializers.RandomUniform):
    """PyTorch's default ``Conv2d``/``Linear`` bias: U(-b, b), b = 1/sqrt(fan_in) of the layer's weight.

    Args:
        fan_in: The weight's fan-in (``kh * kw * in_channels``, or ``in_features``).
        seed: Keras seed.

    Examples:
        >>> import numpy as np
        >>> b = np.asarray(TorchDefaultBias(fan_in=100, seed=0)((64,)))
        >>> bool(np.abs(b).max() <= 0.1)
        True
    """

    def __init__(self, fan_in: int, seed: int | keras.random.SeedGenerator | None = None) -> None:
        if not isinstance(fan_in, int) or fan_in < 1:
            raise ValueError(f"fan_in must be a positive integer. Received: fan_in={fan_in!r}")
        bound = 1.0 / math.sqrt(fan_in)
        super().__init__(minval=-bound, maxval=bound, seed=seed)
        self.fan_in = fan_in

    def get_config(self) -> dict[str, object]:
        """Returns the fan-in and the seed."""
        return {"fan_in": self.fan_in, "seed": super().get_config()["seed"]}


def torch_default_initializers(fan_in: int) -> dict[str, keras.initializers.Initializer]:
    """Keyword arguments that give a Keras ``Conv2D`` or ``Dense`` PyTorch's default initialization.

    Args:
        fan_in: The layer's weight fan-in.

    Returns:
        ``{"kernel_initializer": ..., "bias_initializer": ...}``.
    """
    return {"kernel_initializer": TorchDefaultUniform(), "bias_initializer": TorchDefaultBias(fan_in)}

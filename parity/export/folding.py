"""What the directly written files (TFLite, ONNX) share: the feature layers, batch norm folded in.

Both writers walk the layer plan (:func:`parity.core.config.layer_plan`) over
torchvision's state dict with :func:`feature_layers`: each convolution with
the batch norm after it folded in, in float64 (the writer rounds once to
float32), and each max pool. The result is what torch computes in eval mode up
to that one rounding.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from parity.core.config import BN_EPSILON, VGGConfig, layer_plan
from parity.core.errors import ConversionError

__all__ = ["BN_TENSORS", "FeatureLayer", "feature_layers", "fold_batch_norm"]

#: A batch norm's tensors in torchvision's state dict, in the order :func:`fold_batch_norm` reads them.
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


def fold_batch_norm(
    kernel: np.ndarray, bias: np.ndarray, state: Mapping[str, np.ndarray], bn: str
) -> tuple[np.ndarray, np.ndarray]:
    """An OIHW kernel and its bias with batch norm ``bn`` (torch's module path) folded in, in float64.

    Args:
        kernel: The convolution's ``(out, in, kh, kw)`` weight.
        bias: Its ``(out,)`` bias.
        state: torchvision's state dict (numpy), holding ``{bn}.weight``, ``.bias``, ``.running_mean``,
            ``.running_var``.
        bn: The batch norm's module path, e.g. ``"features.1"``.

    Returns:
        The folded kernel and bias, float64 (the caller rounds them once).

    Examples:
        >>> import numpy as np
        >>> state = {"bn.weight": np.ones(2), "bn.bias": np.zeros(2), "bn.running_mean": np.zeros(2),
        ...          "bn.running_var": np.full(2, 1 - 1e-5)}
        >>> k, b = fold_batch_norm(np.ones((2, 1, 3, 3)), np.ones(2), state, "bn")
        >>> float(k[0, 0, 0, 0]), float(b[1])
        (1.0, 1.0)
    """
    gamma, beta, mean, var = (np.asarray(state[f"{bn}.{k}"], np.float64) for k in BN_TENSORS)
    scale = gamma / np.sqrt(var + BN_EPSILON)
    return kernel.astype(np.float64) * scale[:, None, None, None], (bias.astype(np.float64) - mean) * scale + beta


@dataclass(frozen=True)
class FeatureLayer:
    """One layer of the convolutional part as a directly written file holds it.

    Attributes:
        kind: ``"conv"`` (ReLU after) or ``"pool"`` (max pool, no padding, torch's floor).
        name: Its Keras name (``block{b}_conv{i}``, ``block{b}_pool``).
        kernel: A convolution's OIHW kernel with its batch norm folded in (float64 where folded), else ``None``.
        bias: Its bias, likewise.
        size: Kernel (or pool window) side: 3 (2 for a pool) in every VGG.
        stride: Stride: 1 (2 for a pool) in every VGG.
        padding: A convolution's zeros on each side: 1 in every VGG; 0 for a pool.
    """

    kind: str
    name: str
    kernel: np.ndarray | None = None
    bias: np.ndarray | None = None
    size: int = 3
    stride: int = 1
    padding: int = 0


def feature_layers(config: VGGConfig, state: Mapping[str, np.ndarray]) -> Iterator[FeatureLayer]:
    """The convolutions (each batch norm folded into the convolution before it) and max pools, in order.

    Args:
        config: The network.
        state: torchvision's state dict (numpy).

    Yields:
        One :class:`FeatureLayer` per convolution and per pool.

    Raises:
        ConversionError: If a batch norm follows a max pool (``config.pool_batch_norm``).
    """
    if config.pool_batch_norm:
        raise ConversionError(
            "A batch norm after a max pool cannot be folded into a convolution, so this network is not written "
            f"directly; export it through Keras (a SavedModel). Received: pool_batch_norm=True ({config.name})"
        )
    specs = list(layer_plan(config, include_top=False))
    for i, spec in enumerate(specs):
        if spec.kind == "conv":
            kernel, bias = state[f"{spec.torch_name}.weight"], state[f"{spec.torch_name}.bias"]
            following = specs[i + 1] if i + 1 < len(specs) else None
            if following is not None and following.kind == "bn":
                kernel, bias = fold_batch_norm(kernel, bias, state, following.torch_name)
            yield FeatureLayer("conv", spec.keras_name, kernel, bias, spec.kernel, spec.stride, spec.padding)
        elif spec.kind == "pool":
            yield FeatureLayer("pool", spec.keras_name, size=spec.kernel, stride=spec.stride)

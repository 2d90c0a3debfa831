"""State dicts with every tensor randomized, for tests that must be able to fail.

torchvision's initialization leaves batch norm the identity (gamma 1, beta 0,
mean 0, variance 1) and biases zero, so a converter that drops or swaps those
tensors would still pass. These state dicts randomize all of them, with scales
that keep activations of order one through 19 layers.
"""

from __future__ import annotations

import math

import numpy as np

from parity.core.config import VGGConfig, layer_plan

__all__ = ["randomized_state_dict"]


def randomized_state_dict(config: VGGConfig, seed: int = 0, include_top: bool = True) -> dict[str, np.ndarray]:
    """Builds a torchvision-layout state dict with every tensor random.

    Args:
        config: The network.
        seed: Seed of the numpy generator.
        include_top: Whether to include the classifier.

    Returns:
        ``{torchvision key: float32 array}`` (``num_batches_tracked`` as int64).
    """
    rng = np.random.default_rng(seed)
    sd: dict[str, np.ndarray] = {}

    def normal(shape: tuple[int, ...], std: float) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    for spec in layer_plan(config, include_top):
        t, i, o = spec.torch_name, spec.in_features, spec.out_features
        if spec.kind == "conv":
            k = spec.kernel
            sd[f"{t}.weight"] = normal((o, i, k, k), math.sqrt(2.0 / (k * k * i)))
            sd[f"{t}.bias"] = normal((o,), 0.1)
        elif spec.kind == "bn":
            sd[f"{t}.weight"] = rng.uniform(0.5, 1.5, o).astype(np.float32)
            sd[f"{t}.bias"] = normal((o,), 0.1)
            sd[f"{t}.running_mean"] = normal((o,), 0.2)
            sd[f"{t}.running_var"] = rng.uniform(0.5, 2.0, o).astype(np.float32)
            sd[f"{t}.num_batches_tracked"] = np.array(int(rng.integers(1, 10_000)), dtype=np.int64)
        elif spec.kind == "dense":
            sd[f"{t}.weight"] = normal((o, i), math.sqrt(2.0 / i))
            sd[f"{t}.bias"] = normal((o,), 0.1)
    return sd

"""Reduced precision: how far a bf16 or fp16 run may be from torch's fp32 result, derived from the format.

A Keras model built under the dtype policy ``mixed_bfloat16`` (or
``mixed_float16``) keeps fp32 weights and computes in the low format; torch's
``autocast`` does the same. Neither matches fp32 to 1e-5, so parity at reduced
precision needs its own tolerance, and one that a wrong run cannot meet.

**Upper bound, per block.** Each rounding to the format changes a value by
at most ``u``, relative, with ``u`` the format's unit roundoff (half its
machine epsilon: ``2**-8`` for bf16, ``2**-11`` for fp16). A run rounds at
``r`` points before an output: the input cast, and per convolution or dense
layer its weights, its output and its output again after the bias add (Keras
adds the bias in the low format; products accumulate in fp32), per batch norm
its output, and the adaptive pool's output. Rounding errors behave as
independent, zero-mean draws, so after ``r`` of them the relative error grows
as ``sqrt(r) * u``, not ``r * u`` (the probabilistic analysis of Higham and
Mary, SIAM J. Sci. Comput. 41(5), 2019). The bound of an output is
``LAMBDA * sqrt(r) * u`` relative to its max |fp32 value|, the measure of
:func:`parity.compare.block_difference`. The worst-case analysis (every
rounding aligned, ``|W| |x|`` with no cancellation) is no use here: it
grows by the layers' absolute gains and passes 1e6 by block 4 of vgg11_bn.

**Floor, on the logits.** Under a mixed policy the logits come out in the low
format, so they carry at least its rounding, and errors from every layer
before add to that: a run is accepted as reduced precision only if its logits
differ from fp32 by at least ``u / 2`` of ``max |logits|`` (:data:`FLOOR_ULPS`).
A model left in fp32 (about 1e-6) fails this at once; so does an fp16 run
judged as bf16, whose error is about eight times smaller than bf16's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from parity.compare import LOGIT_RTOL, BlockDiff, ParityError, block_difference
from parity.core.config import layer_plan

if TYPE_CHECKING:
    import torch

    from parity.core.config import VGGConfig

__all__ = [
    "FLOOR_ULPS",
    "LAMBDA",
    "PRECISIONS",
    "Precision",
    "PrecisionReport",
    "compare_at_precision",
    "error_bounds",
    "get_precision",
    "rounding_points",
    "torch_forward_autocast",
]

#: Multiple of the probabilistic error scale ``sqrt(r) * u`` allowed. Measured (random weights, vgg11_bn and
#: vgg16 at 224 px, torch's autocast and Keras on three backends; docs/backends.md) the worst block of a run
#: reaches 0.3 to 0.8 of ``sqrt(r) * u``; 2 leaves room for other inputs and weights, and stays under the next
#: format's error: every bf16 run has a block over fp16's bound (1.3x to 2.2x of it), so a wrong policy fails.
LAMBDA: float = 2.0
#: The logits of a reduced-precision run must differ from fp32 by at least this many unit roundoffs
#: (relative to max |logits|): their own rounding to the format gives up to one, the layers before add more.
FLOOR_ULPS: float = 0.5


@dataclass(frozen=True)
class Precision:
    """A numeric format as Keras and torch name it.

    Attributes:
        name: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        policy: The Keras dtype policy (``keras.config.set_dtype_policy``).
        torch_dtype: The ``torch`` dtype name autocast computes in.
        unit_roundoff: Half the format's machine epsilon: ``2**-(mantissa bits + 1)``.
    """

    name: str
    policy: str
    torch_dtype: str
    unit_roundoff: float


#: The formats: fp32 (8-bit exponent, 23-bit mantissa), bf16 (8, 7), fp16 (5, 10).
PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", "float32", "float32", 2.0**-24),
    "bf16": Precision("bf16", "mixed_bfloat16", "bfloat16", 2.0**-8),
    "fp16": Precision("fp16", "mixed_float16", "float16", 2.0**-11),
}


def get_precision(name: str) -> Precision:
    """The :class:`Precision` named ``name``.

    Raises:
        ValueError: For an unknown name.
    """
    if name not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {', '.join(PRECISIONS)}. Received: precision={name!r}")
    return PRECISIONS[name]


def torch_forward_autocast(model: torch.nn.Module, x_nchw: np.ndarray, precision: Precision) -> dict[str, np.ndarray]:
    """:func:`parity.compare.torch_forward` under ``torch.autocast("cpu", ...)`` (plain fp32 for ``fp32``).

    Args:
        model: A torchvision-layout VGG.
        x_nchw: Input batch, NCHW float32.
        precision: The format autocast computes in.

    Returns:
        ``{"block1": ..., "logits": ...}`` as float32 numpy arrays.
    """
    import torch

    from parity.compare import torch_forward

    if precision.name == "fp32":
        return torch_forward(model, x_nchw)
    model.eval()
    out: dict[str, np.ndarray] = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=getattr(torch, precision.torch_dtype)):
        x = torch.from_numpy(np.ascontiguousarray(x_nchw, dtype=np.float32))
        for layer in model.features:
            x = layer(x)
            if isinstance(layer, torch.nn.MaxPool2d):
                out[f"block{len(out) + 1}"] = x.float().numpy()
        out["logits"] = model.classifier(torch.flatten(model.avgpool(x), 1)).float().numpy()
    return out


def rounding_points(config: VGGConfig) -> dict[str, int]:
    """How many roundings to the low format a mixed-precision run makes before each output.

    Args:
        config: The network.

    Returns:
        ``{"block1": r, ..., "logits": r}``: 1 for the input cast, 3 per
        convolution or dense layer (weights, output, bias add), 1 per batch
        norm, 1 for the adaptive pool.
    """
    count = 1
    points: dict[str, int] = {}
    for spec in layer_plan(config):
        if spec.kind in ("conv", "dense"):
            count += 3
        elif spec.kind == "bn":
            count += 1
        elif spec.kind == "pool":
            points[f"block{spec.block}"] = count
            if spec.block == len(config.stages) and config.pool_size is not None:
                count += 1
    points["logits"] = count
    return points


def error_bounds(config: VGGConfig, precision: Precision) -> dict[str, float]:
    """The per-output relative error bound of a run in ``precision``: ``LAMBDA * sqrt(r) * u``.

    Args:
        config: The network.
        precision: The format.

    Returns:
        ``{"block1": bound, ..., "logits": bound}``, relative to each output's max |fp32 value|.

    Examples:
        >>> from parity.core.config import PRESETS
        >>> round(error_bounds(PRESETS["vgg16"], PRECISIONS["bf16"])["logits"], 3)
        0.055
    """
    u = precision.unit_roundoff
    return {name: LAMBDA * math.sqrt(r) * u for name, r in rounding_points(config).items()}


@dataclass(frozen=True)
class PrecisionReport:
    """A reduced-precision run against fp32, judged at its format's bounds.

    Attributes:
        precision: The format's name.
        blocks: Per output, the difference to the fp32 reference.
        bounds: Per output, the derived relative bound.
        floor: The least relative logit difference a run in this format shows.
        top1: Fraction of samples whose top-1 class agrees with fp32.
        top5: Fraction whose top-5 sets agree.
    """

    precision: str
    blocks: list[BlockDiff]
    bounds: dict[str, float]
    floor: float
    top1: float
    top5: float

    @property
    def max_rel(self) -> float:
        """The logits' relative difference."""
        return self.blocks[-1].max_rel

    @property
    def first_over_bound(self) -> str | None:
        """The first output over its bound, or ``None``."""
        return next((b.name for b in self.blocks if not b.max_rel <= self.bounds[b.name]), None)

    @property
    def passed(self) -> bool:
        """Within every bound, and (below fp32) at or above the floor: the run computed in this format."""
        return self.first_over_bound is None and self.max_rel >= self.floor

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "precision": self.precision,
            "max_rel": self.max_rel,
            "bound": self.bounds["logits"],
            "floor": self.floor,
            "blocks": {b.name: {"max_rel": b.max_rel, "bound": self.bounds[b.name]} for b in self.blocks},
            "top1": self.top1,
            "top5": self.top5,
            "passed": self.passed,
        }

    def check(self) -> None:
        """Raises unless :attr:`passed`.

        Raises:
            ParityError: Naming the block over its bound, or the logits under the floor.
        """
        name = self.first_over_bound
        if name is not None:
            b = next(b for b in self.blocks if b.name == name)
            raise ParityError(
                f"{self.precision}: {name} is {b.max_rel:.3g} x max |fp32| from fp32, over its derived bound "
                f"{self.bounds[name]:.3g}. Received: max_rel={b.max_rel:.3g}"
            )
        if self.max_rel < self.floor:
            raise ParityError(
                f"{self.precision}: the logits are only {self.max_rel:.3g} x max |fp32| from fp32, under the "
                f"floor {self.floor:.3g} of a run in that format: the model did not compute in {self.precision} "
                f"(left in fp32, or another policy). Received: max_rel={self.max_rel:.3g}"
            )


def compare_at_precision(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    bounds: Mapping[str, float],
    precision: Precision,
) -> PrecisionReport:
    """Compares a run in ``precision`` with the fp32 reference, block by block.

    Args:
        reference: fp32 torch outputs (:func:`parity.compare.torch_forward`).
        candidate: The run's outputs, same keys and layout (any float dtype).
        bounds: :func:`error_bounds` of the reference for ``precision``.
        precision: The format the candidate claims to compute in; for fp32
            the bounds are :data:`parity.compare.LOGIT_RTOL` and no floor.

    Returns:
        The report; :meth:`PrecisionReport.check` raises on failure.

    Raises:
        ValueError: If the runs' outputs differ in names or shapes.

    Examples:
        >>> bf16 = PRECISIONS["bf16"]
        >>> report = compare_at_precision(expected, keras_forward(model, x), bounds, bf16)  # doctest: +SKIP
        >>> report.check()  # doctest: +SKIP
    """
    if list(reference) != list(candidate) or list(reference) != list(bounds):
        raise ValueError(f"Runs and bounds must name the same outputs. Received: {list(reference)}, {list(candidate)}")
    blocks = []
    for name in reference:
        if np.shape(reference[name]) != np.shape(candidate[name]):
            raise ValueError(f"Output {name!r} differs in shape. Received: shape={np.shape(candidate[name])}")
        blocks.append(block_difference(name, reference[name], np.asarray(candidate[name], dtype=np.float32)))
    fp32 = precision.name == "fp32"
    ref, got = np.asarray(reference["logits"]), np.asarray(candidate["logits"], dtype=np.float32)
    k = min(5, ref.shape[-1])
    top5 = np.all(np.sort(np.argsort(-ref, -1)[:, :k], -1) == np.sort(np.argsort(-got, -1)[:, :k], -1), -1)
    return PrecisionReport(
        precision=precision.name,
        blocks=blocks,
        bounds={name: LOGIT_RTOL for name in reference} if fp32 else dict(bounds),
        floor=0.0 if fp32 else FLOOR_ULPS * precision.unit_roundoff,
        top1=float(np.mean(np.argmax(ref, -1) == np.argmax(got, -1))),
        top5=float(np.mean(top5)),
    )

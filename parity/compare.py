"""Running a torch and a Keras VGG on the same tensors and comparing them block by block.

A divergence is located, not just detected: the report gives the difference
after every pooling stage and names the first block whose difference exceeds
the tolerance. Both runners return activations in torch's NCHW layout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    import keras

    from parity.core.config import VGGConfig

__all__ = [
    "LOGIT_RTOL",
    "BACKEND_MODES",
    "MODES",
    "BlockDiff",
    "ParityError",
    "ParityReport",
    "block_difference",
    "build_pair",
    "compare_outputs",
    "keras_forward",
    "torch_forward",
]

#: Tolerance on max |diff| relative to max |reference| in fp32 on CPU. The
#: floor measured here is about 1e-6 (summation order differs between oneDNN
#: and torch's kernels); any layout or BN mistake gives 1e-2 or more.
LOGIT_RTOL: float = 1e-5
#: Same tolerance per pooling stage: the error grows with depth and stays far
#: below this for a correct port.
BLOCK_RTOL: float = 1e-5


class ParityError(AssertionError):
    """Two models that should agree do not."""


@dataclass(frozen=True)
class BlockDiff:
    """Difference of one output between reference and candidate.

    Attributes:
        name: ``"block1"`` ... ``"blockN"`` (after each max pool), or ``"logits"``.
        max_abs: Max absolute difference.
        max_ref: Max absolute value of the reference.
        max_rel: ``max_abs / max_ref``.
    """

    name: str
    max_abs: float
    max_ref: float
    max_rel: float


@dataclass(frozen=True)
class ParityReport:
    """Result of one comparison.

    Attributes:
        blocks: One entry per compared output, in forward order.
        max_abs: Max absolute difference of the final output.
        max_rel: The same relative to the reference's max absolute value.
        top1: Fraction of samples whose top-1 class agrees (``None`` without logits).
        top5: Fraction of samples whose top-5 class sets agree (``None`` without logits).
        rtol: The tolerance applied.
        first_divergent: First block over tolerance, or ``None``.
    """

    blocks: list[BlockDiff]
    max_abs: float
    max_rel: float
    top1: float | None
    top5: float | None
    rtol: float
    first_divergent: str | None = None

    @property
    def passed(self) -> bool:
        """Whether every output is within tolerance and every top-k agrees."""
        return self.first_divergent is None and self.top1 in (None, 1.0) and self.top5 in (None, 1.0)

    @property
    def worst_block(self) -> BlockDiff:
        """The block with the largest relative difference."""
        return max(self.blocks, key=lambda b: b.max_rel)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        d = asdict(self)
        d["passed"] = self.passed
        return d

    def check(self) -> None:
        """Raises if the comparison failed.

        Raises:
            ParityError: Naming the first divergent block and its difference.
        """
        if self.passed:
            return
        if self.first_divergent is not None:
            b = next(b for b in self.blocks if b.name == self.first_divergent)
            raise ParityError(
                f"Outputs diverge first at {b.name}: max |diff| {b.max_abs:.3g} = {b.max_rel:.3g} x max |ref| "
                f"(tolerance {self.rtol:g}); top-1 agreement {self.top1}, top-5 {self.top5}"
            )
        raise ParityError(f"Top-k disagreement: top-1 agreement {self.top1}, top-5 {self.top5}")

    def table(self) -> str:
        """A small per-block text table."""
        rows = [f"{'output':<10} {'max |diff|':>12} {'max |ref|':>12} {'relative':>10}"]
        for b in self.blocks:
            flag = "  <-- first over tolerance" if b.name == self.first_divergent else ""
            rows.append(f"{b.name:<10} {b.max_abs:>12.3e} {b.max_ref:>12.3e} {b.max_rel:>10.2e}{flag}")
        if self.top1 is not None:
            rows.append(f"top-1 agreement {self.top1:.0%}, top-5 agreement {self.top5:.0%}")
        return "\n".join(rows)


def block_difference(name: str, reference: np.ndarray, candidate: np.ndarray) -> BlockDiff:
    """max |candidate - reference| of one output, absolute and relative to max |reference| (float64).

    A candidate holding NaN or inf differs by inf; so does any difference from an all-zero reference.
    """
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    max_abs = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    if not np.isfinite(got).all():
        max_abs = float("inf")
    max_ref = float(np.max(np.abs(ref))) if ref.size else 0.0
    rel = max_abs / max_ref if max_ref > 0 else (0.0 if max_abs == 0 else float("inf"))
    return BlockDiff(name, max_abs, max_ref, rel)


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    rtol: float = LOGIT_RTOL,
    block_rtol: float = BLOCK_RTOL,
) -> ParityReport:
    """Compares two runs output by output.

    Args:
        reference: ``{"block1": ..., ..., "logits": ...}`` from the reference model.
        candidate: The same keys from the model under test, same layout.
        rtol: Tolerance of the final output, relative to its max absolute value.
        block_rtol: Tolerance of the intermediate blocks, likewise.

    Returns:
        The report; call :meth:`ParityReport.check` to raise on failure.

    Raises:
        ValueError: If the two runs have different keys or shapes.
    """
    if list(reference) != list(candidate):
        raise ValueError(f"Both runs must have the same outputs. Received: {list(reference)} and {list(candidate)}")
    blocks = []
    first = None
    names = list(reference)
    for name in names:
        ref_shape, got_shape = np.shape(reference[name]), np.shape(candidate[name])
        if ref_shape != got_shape:
            raise ValueError(
                f"Output {name!r} has shape {got_shape}, expected {ref_shape}. Received: shape={got_shape}"
            )
        diff = block_difference(name, reference[name], candidate[name])
        blocks.append(diff)
        tol = rtol if name == names[-1] else block_rtol
        if first is None and not diff.max_rel <= tol:
            first = name
    final = blocks[-1]
    top1 = top5 = None
    if "logits" in reference:
        ref, got = np.asarray(reference["logits"]), np.asarray(candidate["logits"])
        top1 = float(np.mean(np.argmax(ref, -1) == np.argmax(got, -1)))
        k = min(5, ref.shape[-1])
        ref5 = np.sort(np.argsort(-ref, -1)[:, :k], -1)
        got5 = np.sort(np.argsort(-got, -1)[:, :k], -1)
        top5 = float(np.mean(np.all(ref5 == got5, -1)))
    return ParityReport(blocks, final.max_abs, final.max_rel, top1, top5, rtol, first)


def torch_forward(model: torch.nn.Module, x_nchw: np.ndarray, include_top: bool = True) -> dict[str, np.ndarray]:
    """Runs a torchvision-layout VGG in eval mode, keeping each block's output.

    Args:
        model: A torchvision ``VGG`` or :class:`vgg_torch.VGG`.
        x_nchw: Input batch, NCHW float32.
        include_top: Whether to run the classifier (``"logits"`` key).

    Returns:
        ``{"block1": ..., "blockN": ..., "logits": ...}`` as NCHW / NC numpy arrays.
    """
    import torch

    model.eval()
    out: dict[str, np.ndarray] = {}
    block = 0
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(x_nchw, dtype=np.float32))
        for layer in model.features:
            x = layer(x)
            if isinstance(layer, torch.nn.MaxPool2d):
                block += 1
                out[f"block{block}"] = x.numpy().copy()
        if include_top:
            x = model.classifier(torch.flatten(model.avgpool(x), 1))
            out["logits"] = x.numpy().copy()
    return out


#: How :func:`keras_forward` runs a model: a plain call, a ``tf.function``
#: that relaxes its shapes after a second input size (``reduce_retracing``), an
#: XLA-compiled ``tf.function`` (``jit_compile=True``), or ``Model.predict``.
#: One function of each mode is kept per model, so a second input size is a
#: second call of the same trace, as in a user's program.
MODES: tuple[str, ...] = ("eager", "graph", "xla", "predict")
#: The modes each Keras backend runs: ``tf.function`` and XLA exist only on
#: TensorFlow. On JAX, ``predict`` runs the model under ``jax.jit``; on torch,
#: eagerly under ``torch.no_grad``; on OpenVINO (inference only), both compile
#: the graph with OpenVINO's CPU plugin in fp32 (:mod:`vgg_keras.openvino_precision`).
BACKEND_MODES: dict[str, tuple[str, ...]] = {
    "tensorflow": MODES,
    "jax": ("eager", "predict"),
    "torch": ("eager", "predict"),
    "openvino": ("eager", "predict"),
}

#: The attribute of a model that holds its runners: it lives and dies with the
#: model (a global cache keyed by the model would keep every model's weights).
_RUNNERS_ATTR = "_parity_runners"


def _runner(model: keras.Model, include_top: bool, mode: str) -> Callable[[np.ndarray], list[object]]:
    """The cached probe of ``model`` (block outputs and logits) run in ``mode``."""
    import keras

    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {', '.join(MODES)}. Received: mode={mode!r}")
    cache: dict[str, object] | None = model.__dict__.get(_RUNNERS_ATTR)
    if cache is None:
        cache = {}
        object.__setattr__(model, _RUNNERS_ATTR, cache)  # untracked by Keras: not a layer or weight
    key = f"{mode}/{include_top}"
    if key not in cache:
        pools = [layer for layer in model.layers if layer.name.endswith("_pool") and layer.name.startswith("block")]
        outputs = [p.output for p in pools] + ([model.get_layer("predictions").output] if include_top else [])
        probe = keras.Model(model.input, outputs)
        if mode == "eager":
            cache[key] = lambda x: probe(x, training=False)
        elif mode == "predict":
            cache[key] = lambda x: probe.predict(x, batch_size=len(x), verbose=0)
        else:
            if keras.backend.backend() != "tensorflow":
                raise ValueError(
                    f"Mode {mode!r} runs a tf.function and needs the TensorFlow backend; use 'eager' or 'predict'. "
                    f"Received: mode={mode!r}, backend={keras.backend.backend()!r}"
                )
            import tensorflow as tf

            def call(x: object) -> object:
                return probe(x, training=False)

            fn = tf.function(call, reduce_retracing=True) if mode == "graph" else tf.function(call, jit_compile=True)
            cache[key] = lambda x: fn(tf.constant(x))
    return cache[key]  # type: ignore[return-value]


def keras_forward(
    model: keras.Model, x_nchw: np.ndarray, include_top: bool = True, mode: str = "eager"
) -> dict[str, np.ndarray]:
    """Runs a vgg_keras model on an NCHW batch, keeping each block's output.

    The input is moved to the model's data format, and the block outputs back
    to NCHW, so results compare directly with :func:`torch_forward`.

    Args:
        model: A model from :func:`vgg_keras.build_vgg` (layers ``block{b}_pool``).
        x_nchw: Input batch, NCHW float32.
        include_top: Whether the model ends in ``predictions`` (``"logits"`` key;
            build it with ``classifier_activation=None`` to get logits).
        mode: One of :data:`MODES`.

    Returns:
        The same keys as :func:`torch_forward`.

    Raises:
        ValueError: If ``mode`` is unknown or needs another backend.
    """
    import keras

    from vgg_keras.model import input_data_format

    inner_first = model.get_layer("block1_conv1").data_format == "channels_first"
    input_first = input_data_format(model) == "channels_first"
    x = np.asarray(x_nchw, dtype=np.float32)
    if not input_first:
        x = np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))
    results = _runner(model, include_top, mode)(x)
    results = [np.asarray(keras.ops.convert_to_numpy(r)) for r in results]
    out: dict[str, np.ndarray] = {}
    blocks = len(results) - (1 if include_top else 0)
    for i, r in enumerate(results[:blocks], start=1):
        out[f"block{i}"] = r if inner_first else np.transpose(r, (0, 3, 1, 2))
    if include_top:
        out["logits"] = results[-1]
    return out


def build_pair(config: VGGConfig, state_dict: Mapping[str, np.ndarray]) -> tuple[torch.nn.Module, keras.Model]:
    """The same weights in a torch reference and in a vgg_keras model ending in logits.

    The reference is torchvision's own model when the config is one of its
    architectures (:data:`parity.core.config.ARCHS`), and
    :class:`vgg_torch.VGG` otherwise (torchvision builds only its own). The
    Keras model uses the current ``image_data_format()``.

    Args:
        config: The network.
        state_dict: torchvision-layout weights (numpy).

    Returns:
        ``(torch model in eval mode, Keras model)``.
    """
    import torch
    import torchvision

    import vgg_keras
    import vgg_torch
    from parity.convert.weight_arrays import assign_keras_weights, convert_state_dict
    from parity.core.config import ARCHS

    preset = ARCHS.get(config.name)
    if preset is not None and preset.replace(num_classes=config.num_classes, dropout=config.dropout) == config:
        from vgg_torch.builders import torchvision_load_kwargs

        reference = torchvision.models.get_model(
            config.name,
            weights=None,
            num_classes=config.num_classes,
            dropout=config.dropout,
            **torchvision_load_kwargs(config.name),
        )
    else:
        reference = vgg_torch.build_vgg(config, init_weights=False)
    reference.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}, strict=True
    )
    model = vgg_keras.build_vgg(config, classifier_activation=None)
    assign_keras_weights(model, convert_state_dict(state_dict, config))
    return reference.eval(), model

"""Finding a VGG state dict inside a checkpoint, in torchvision's or timm's layout.

A checkpoint is whatever ``torch.load`` or safetensors returned: a bare state
dict, or one nested in a training checkpoint (Lightning's ``.ckpt``:
``{"state_dict": {"model.features.0.weight": ...}, "epoch": 3,
"optimizer_states": ...}``; ``{"model": ...}``; ``{"ema": ...}``; keys
prefixed ``module.`` or the attribute name the model had in a training
module). :func:`find_state_dict` looks at every mapping of tensors in it and
every prefix of their keys, and keeps the one whose keys are exactly the
network's, in one of two layouts:

- ``torchvision``: ``features.N.*`` and ``classifier.{0,3,6}.*`` (Linear layers).
- ``timm``: the same ``features.N.*``; the first linear layer as a convolution
  over the whole feature map (``pre_logits.fc1.weight``, ``(4096, 512, 7, 7)``),
  the second as a 1×1 convolution (``pre_logits.fc2``), the last as
  ``head.fc``. timm's ``vgg*`` models and the Hugging Face hub's
  ``timm/vgg16.tv_in1k`` and siblings store torchvision's weights this way.

No list of known prefixes or wrapper names is consulted: the prefix is what
precedes the network's own key names. Entries outside the chosen mapping and
prefix (optimizer state, epoch, a loss module's buffers, other models) are
left out and named in :attr:`FoundState.ignored`; inside it, every key must
be one of the network's. :func:`timm_to_torchvision` and
:func:`torchvision_to_timm` change layouts by reshaping only, so every value
is kept bit for bit. Pure numpy; torch tensors are converted as they are picked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from parity.core.checkpoint import CheckpointError, describe_value, is_tensor, tensor_to_numpy
from parity.core.config import VGGConfig, layer_plan, torch_state_shapes
from parity.core.errors import ConversionError

__all__ = [
    "LAYOUTS",
    "FoundState",
    "find_state_dict",
    "layout_shapes",
    "timm_to_torchvision",
    "torchvision_to_timm",
]

#: The key layouts :func:`find_state_dict` recognizes.
LAYOUTS = ("torchvision", "timm")
#: How deep into nested mappings state dicts are looked for (Lightning's is one level down).
_MAX_DEPTH = 3
#: How many names a one-line message shows of each list.
_SHOWN = 3


def _classifier_names(config: VGGConfig) -> list[str]:
    """The torchvision module names of the classifier's linear layers, in order."""
    return [spec.torch_name for spec in layer_plan(config) if spec.kind == "dense"]


def _timm_names(config: VGGConfig) -> dict[str, str]:
    """torchvision classifier module -> timm module (``{}`` where timm has no such head)."""
    names = _classifier_names(config)
    if len(names) != 3 or config.pool_size is None or not config.is_vgg_geometry:
        return {}  # timm's VGG head; timm has no AlexNet
    return dict(zip(names, ("pre_logits.fc1", "pre_logits.fc2", "head.fc")))


def layout_shapes(config: VGGConfig, layout: str) -> dict[str, tuple[int, ...]]:
    """Every float tensor of the network in a layout, with its shape (``num_batches_tracked`` aside).

    Args:
        config: The network (with two hidden layers and an adaptive pool for ``timm``).
        layout: One of :data:`LAYOUTS`.

    Returns:
        ``{key: shape}``; empty for ``timm`` when the config has no timm counterpart.
    """
    shapes = torch_state_shapes(config, include_top=True)
    if layout == "torchvision":
        return shapes
    renames = _timm_names(config)
    if not renames:
        return {}
    height, width = config.head_grid
    fc1, fc2, _ = renames
    out: dict[str, tuple[int, ...]] = {}
    for key, shape in shapes.items():
        module, _, slot = key.rpartition(".")
        if module not in renames:
            out[key] = shape
        elif slot == "weight" and module == fc1:
            out[f"{renames[module]}.weight"] = (shape[0], config.out_channels, height, width)
        elif slot == "weight" and module == fc2:
            out[f"{renames[module]}.weight"] = (shape[0], shape[1], 1, 1)
        else:
            out[f"{renames[module]}.{slot}"] = shape
    return out


def timm_to_torchvision(state: Mapping[str, np.ndarray], config: VGGConfig) -> dict[str, np.ndarray]:
    """timm's VGG keys and shapes to torchvision's, values unchanged.

    ``pre_logits.fc1`` is a ``kh×kw`` convolution over a ``kh×kw`` map: one
    output per filter, the sum over channels and positions, which is the
    Linear layer whose rows are the filter flattened in C·H·W order, the
    order ``torch.flatten`` gives torchvision's classifier. So the weight is
    reshaped to ``(out, C·H·W)``; ``pre_logits.fc2`` (1×1) to ``(out, in)``.

    Args:
        state: timm-layout names to arrays.
        config: The network.

    Returns:
        torchvision-layout names to arrays (views where numpy can).
    """
    back = {timm: tv for tv, timm in _timm_names(config).items()}
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        module, _, slot = key.rpartition(".")
        if module in back:
            key = f"{back[module]}.{slot}"
            if slot == "weight":
                value = value.reshape(value.shape[0], -1)
        out[key] = value
    return out


def torchvision_to_timm(state: Mapping[str, np.ndarray], config: VGGConfig) -> dict[str, np.ndarray]:
    """torchvision's VGG keys and shapes to timm's, values unchanged (the inverse of :func:`timm_to_torchvision`).

    Args:
        state: torchvision-layout names to arrays.
        config: The network (with two hidden layers and an adaptive pool).

    Returns:
        timm-layout names to arrays.

    Raises:
        ConversionError: If the config has no timm counterpart.
    """
    renames = _timm_names(config)
    if not renames:
        raise ConversionError(
            "timm's layout needs two hidden layers and an adaptive pool, as timm's VGG has. "
            f"Received: hidden={config.hidden}, pool_size={config.pool_size}"
        )
    shapes = layout_shapes(config, "timm")
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        module, _, slot = key.rpartition(".")
        if module in renames:
            key = f"{renames[module]}.{slot}"
            if slot == "weight":
                value = value.reshape(value.shape[0], *shapes[key][1:])
        out[key] = value
    return out


@dataclass(frozen=True)
class FoundState:
    """The network's state dict as found in a checkpoint, and how well it fits.

    Attributes:
        state: The tensors under :attr:`prefix` with the prefix removed, as numpy arrays: in
            torchvision's layout when :attr:`fits`, else in the checkpoint's own.
        layout: The layout of the checkpoint's keys (one of :data:`LAYOUTS`).
        entry: Where the mapping sits in the checkpoint: ``()`` for a bare state dict,
            ``("state_dict",)`` for Lightning's.
        prefix: What precedes the network's key names (``""``, ``"module."``, ``"model."``).
        ignored: Names of the entries left out (outside the mapping or the prefix).
        missing: The network's keys absent from the checkpoint (checkpoint names, prefix included).
        unexpected: Keys under the prefix that are not the network's (checkpoint names).
        wrong_shapes: ``"key (found) != (expected)"`` for every shape mismatch.
        num_classes: Rows of the last layer, or ``None`` when it is absent.
    """

    state: dict[str, np.ndarray]
    layout: str
    entry: tuple[str, ...]
    prefix: str
    ignored: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    wrong_shapes: tuple[str, ...]
    num_classes: int | None

    @property
    def fits(self) -> bool:
        """Whether the keys and shapes are exactly the network's."""
        return not (self.missing or self.unexpected or self.wrong_shapes)

    @property
    def where(self) -> str:
        """``"under 'state_dict', prefix 'model.'"``: the location in words ("" for a bare state dict)."""
        parts = [f"under {'/'.join(map(repr, self.entry))}"] if self.entry else []
        parts += [f"prefix {self.prefix!r}"] if self.prefix else []
        return ", ".join(parts)

    @property
    def received(self) -> str:
        """``"unexpected=[...], missing=[...]"``: the first few names of each, for ``Received:``."""
        return f"unexpected={list(self.unexpected[:_SHOWN])}, missing={list(self.missing[:_SHOWN])}"


@dataclass(frozen=True)
class _Match:
    entry: tuple[str, ...]
    mapping: Mapping[object, object]
    prefix: str
    layout: str
    found: int
    unexpected: int

    def rank(self) -> tuple[int, int, int, int]:
        """Most of the network's keys, then fewest strangers, then torchvision's layout, then shallowest."""
        return (-self.found, self.unexpected, LAYOUTS.index(self.layout), len(self.entry))


def find_state_dict(
    raw: object, config: VGGConfig, *, key: str | None = None, source: str = "checkpoint"
) -> FoundState:
    """Finds the network's state dict in a checkpoint, in torchvision's or timm's layout.

    Every mapping that holds tensors (to three levels deep) and every prefix of
    its keys is tried against the network's key set in each layout; the one
    that holds all of the network's keys is kept, or, when none does, the one
    holding most (so a refusal can name what is missing and what is not the
    network's). ``num_batches_tracked`` counters are optional.

    Args:
        raw: What ``torch.load`` or safetensors returned.
        config: The network.
        key: An entry of the checkpoint (``"ema"``, ``"state_dict_ema"``) or a key prefix
            (``"ema_model"``) to take the state dict from, when it holds several.
        source: The checkpoint's name in messages.

    Returns:
        The state dict found, converted to numpy; check :attr:`FoundState.fits`.

    Raises:
        CheckpointError: If the checkpoint holds no mapping of tensors, has no entry or prefix ``key``,
            holds several state dicts that fit (naming them, to pick one with ``key``), or an entry
            under the prefix is not a tensor.

    Examples:
        >>> from parity.core.config import get_config
        >>> from parity.core.state_dicts import find_state_dict
        >>> ckpt = {"state_dict": {"model.features.0.weight": ...}, "epoch": 3}  # doctest: +SKIP
        >>> found = find_state_dict(ckpt, get_config("vgg11"))  # doctest: +SKIP
        >>> found.layout, found.entry, found.prefix, found.fits  # doctest: +SKIP
        ('torchvision', ('state_dict',), 'model.', True)
    """
    shown = f"checkpoint={source!r}"
    candidates = _tensor_mappings(raw, (), 0)
    required = ""
    if key is not None:
        if isinstance(raw, Mapping) and key in raw:
            candidates = [(entry, m) for entry, m in candidates if entry[:1] == (key,)]
            if not candidates:
                raise CheckpointError(
                    f"Checkpoint entry {key!r} holds no tensors: name the entry that holds the state dict. "
                    f"Received: --key {key} in {shown}"
                )
        else:
            required = f"{key}."
            if not any(isinstance(k, str) and k.startswith(required) for _, m in candidates for k in m):
                entries = list(raw)[:8] if isinstance(raw, Mapping) else []
                raise CheckpointError(
                    f"Checkpoint has no entry and no key prefix {key!r} (its entries: {entries}): name one with "
                    f"--key. Received: --key {key} in {shown}"
                )
    if not candidates:
        raise CheckpointError(
            "Checkpoint holds no state dict (expected a mapping of names to tensors, bare or nested as training "
            f"checkpoints nest it). Received: {shown} holding {describe_value(raw)}"
        )
    matches = [
        match
        for layout in LAYOUTS
        if (expected := set(layout_shapes(config, layout)))
        for entry, mapping in candidates
        for match in _prefix_matches(entry, mapping, layout, expected, _counters(config), required)
    ]
    if not matches:  # nothing recognized: report against torchvision's layout, the whole first mapping
        entry, mapping = candidates[0]
        matches = [_Match(entry, mapping, required, "torchvision", 0, len(mapping))]
    complete = {
        (m.entry, m.prefix): m for m in sorted(matches, key=_Match.rank, reverse=True) if m.found == _full(m, config)
    }
    if len(complete) > 1:
        places = [f"{'/'.join(e) or 'top level'} prefix {p!r}" for e, p in complete]
        raise CheckpointError(
            f"Checkpoint holds {len(complete)} state dicts that fit {config.name} ({'; '.join(places)}): pick one "
            f"with --key ENTRY (an entry's name, or a key prefix without its dot). Received: {shown}"
        )
    best = min(matches, key=_Match.rank)
    return _found(best, config, raw, source)


def _full(match: _Match, config: VGGConfig) -> int:
    return len(layout_shapes(config, match.layout))


def _counters(config: VGGConfig) -> set[str]:
    return {f"{spec.torch_name}.num_batches_tracked" for spec in layer_plan(config) if spec.kind == "bn"}


def _tensor_mappings(node: object, entry: tuple[str, ...], depth: int) -> list[tuple[tuple[str, ...], Mapping]]:
    """Every mapping holding at least one tensor, with the entry names leading to it."""
    if not isinstance(node, Mapping):
        return []
    found = [(entry, node)] if any(is_tensor(v) for v in node.values()) else []
    if depth < _MAX_DEPTH:
        for k, v in node.items():
            if isinstance(v, Mapping):
                found += _tensor_mappings(v, (*entry, str(k)), depth + 1)
    return found


def _prefix_matches(
    entry: tuple[str, ...],
    mapping: Mapping[object, object],
    layout: str,
    expected: set[str],
    counters: set[str],
    required: str,
) -> list[_Match]:
    """For each prefix that precedes one of the network's keys: how many it covers, how many keys it adds."""
    names = [k for k in mapping if isinstance(k, str) and k.startswith(required)]
    covered: dict[str, set[str]] = {}
    for name in names:
        cuts = [0] + [i + 1 for i, c in enumerate(name) if c == "."]
        for cut in cuts:
            if cut >= len(required) and name[cut:] in expected:
                covered.setdefault(name[:cut], set()).add(name[cut:])
    matches = []
    for prefix, keys in covered.items():
        under = [n[len(prefix) :] for n in names if n.startswith(prefix)]
        strangers = sum(1 for n in under if n not in expected and n not in counters)
        matches.append(_Match(entry, mapping, prefix, layout, len(keys), strangers))
    return matches


def _found(match: _Match, config: VGGConfig, raw: object, source: str) -> FoundState:
    """The match's tensors as numpy, checked against its layout's keys and shapes; torchvision's layout if they fit."""
    prefix, mapping = match.prefix, match.mapping
    shapes = layout_shapes(config, match.layout)
    counters = _counters(config)
    state: dict[str, np.ndarray] = {}
    ignored: list[str] = []
    for k, v in mapping.items():
        if not (isinstance(k, str) and k.startswith(prefix)):
            ignored.append(str(k))
            continue
        if not is_tensor(v):
            raise CheckpointError(
                f"Checkpoint entry {k!r} is not a tensor ({describe_value(v)}): expected a plain state dict of "
                f"tensors. Received: checkpoint={source!r}"
            )
        state[k[len(prefix) :]] = tensor_to_numpy(k, v, source)
    if match.entry and isinstance(raw, Mapping):
        ignored += [str(k) for k in raw if k != match.entry[0]]
    last = [k for k in shapes if k.endswith(".weight")][-1]
    num_classes = int(state[last].shape[0]) if last in state and np.ndim(state[last]) >= 1 else None
    sized = config.replace(num_classes=num_classes) if num_classes else config
    expected = layout_shapes(sized, match.layout)
    missing = tuple(f"{prefix}{k}" for k in expected if k not in state)
    unexpected = tuple(f"{prefix}{k}" for k in state if k not in expected and k not in counters)
    wrong = tuple(
        f"{prefix}{k} {tuple(np.shape(state[k]))} != {shape}"
        for k, shape in expected.items()
        if k in state and tuple(np.shape(state[k])) != shape
    )
    if match.layout == "timm" and not (missing or unexpected or wrong):
        state = timm_to_torchvision(state, config)
    return FoundState(state, match.layout, match.entry, prefix, tuple(ignored), missing, unexpected, wrong, num_classes)

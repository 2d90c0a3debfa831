"""torchvision state dict <-> Keras VGG weights, driven by the name map of the config schema.

The name map (:func:`parity.core.names.weight_map`) says where each torch
tensor goes and how its layout changes. Here it is applied, raising, listing
names, on any torch key left unused, any Keras weight left unassigned, and any
shape mismatch.

Two ways into Keras:

- :func:`convert_state_dict` + :func:`assign_keras_weights`: converted arrays
  set on a Keras model in memory (tests, :func:`parity.compare.build_pair`).
- :func:`write_keras_weights`: a Keras ``.weights.h5`` written straight from
  the torch tensors, slab by slab, without a Keras model of the network. The
  file's groups and attributes are those Keras itself writes for the same
  layers (:func:`keras_file_layout`);
  :func:`parity.core.h5file.read_keras_weights` loads it back by layer name,
  each variable read straight into its own memory. Writing VGG16 (528 MiB)
  this way needs the checkpoint plus one 64 MiB slab, where a Keras model and
  ``save_weights`` hold up to four more copies of the 392 MiB first dense layer.

:func:`keras_to_state_dict` goes back: Keras arrays (trained weights,
gradients) to torchvision's names and layouts.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from parity.core.config import VGGConfig
from parity.core.errors import ConversionError, list_problems
from parity.core.h5file import KerasFileLayout, assign_variable, write_weights_file
from parity.core.names import WeightMapping, check_state_dict, weight_map

if TYPE_CHECKING:
    import h5py
    import keras

__all__ = [
    "WeightMapping",
    "assign_keras_weights",
    "convert_state_dict",
    "keras_file_layout",
    "keras_to_state_dict",
    "weight_map",
    "write_keras_weights",
]


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray], config: VGGConfig, include_top: bool = True
) -> dict[str, list[np.ndarray]]:
    """Converts a torchvision-layout state dict to Keras layer weights in memory.

    Args:
        state_dict: Names to numpy arrays (torch tensors converted with ``.numpy()``).
        config: The network the state dict belongs to.
        include_top: Whether to convert the classifier; with ``False`` the
            state dict must hold the features only.

    Returns:
        ``{keras layer name: [arrays in layer.get_weights() order]}``.

    Raises:
        ConversionError: Listing every unused key, missing key and shape mismatch.
    """
    check_state_dict(state_dict, config, include_top)
    out: dict[str, list[np.ndarray]] = {}
    for m in weight_map(config, include_top):
        slots = out.setdefault(m.keras_layer, [])
        assert len(slots) == m.keras_index, "weight_map must list each layer's weights in order"
        slots.append(m.transform(np.asarray(state_dict[m.torch_key])))
    return out


def keras_to_state_dict(
    weights: Mapping[str, Sequence[np.ndarray]], config: VGGConfig, include_top: bool = True
) -> dict[str, np.ndarray]:
    """Maps Keras layer arrays back to torchvision's names and layouts; the inverse of :func:`convert_state_dict`.

    Args:
        weights: ``{keras layer name: arrays in layer.weights order}`` (weights,
            or gradients of the trainable ones: a layer's list may stop early).
        config: The network.
        include_top: Whether the classifier is included.

    Returns:
        ``{torchvision key: array}`` for every mapped array present
        (``num_batches_tracked`` excluded), in torchvision's order.

    Raises:
        ConversionError: Listing mapped layers absent from ``weights`` and shape mismatches.
    """
    mappings = weight_map(config, include_top)
    missing = sorted({m.keras_layer for m in mappings if m.keras_layer not in weights})
    wrong = [
        f"{m.keras_layer}[{m.keras_index}] {tuple(np.shape(weights[m.keras_layer][m.keras_index]))} != {m.keras_shape}"
        for m in mappings
        if m.keras_layer in weights
        and m.keras_index < len(weights[m.keras_layer])
        and tuple(np.shape(weights[m.keras_layer][m.keras_index])) != m.keras_shape
    ]
    problems = list_problems({"layers missing": missing, "shape mismatches": wrong})
    if problems:
        raise ConversionError(f"Keras arrays do not fit {config.name}: " + "; ".join(problems))
    return {
        m.torch_key: np.ascontiguousarray(m.inverse(np.asarray(weights[m.keras_layer][m.keras_index])))
        for m in mappings
        if m.keras_index < len(weights[m.keras_layer])
    }


def keras_file_layout(config: VGGConfig, include_top: bool = True) -> KerasFileLayout:
    """The ``.weights.h5`` layout Keras writes for the model of a config.

    Keras names a layer's group after its class and position
    (``layers/conv2d_3/vars``) and records the layer's name as the ``name``
    attribute of that ``vars`` group. Neither depends on the widths, so the
    layout is read from a file Keras saves for a one-channel-wide copy of the
    network: the same layers, a few hundred parameters.

    Args:
        config: The network.
        include_top: Whether the model has its classifier.

    Returns:
        The layout.

    Raises:
        ConversionError: If this Keras version does not save each layer as
            one group named after it, holding datasets ``0..n-1``.
    """
    import h5py
    import keras

    import vgg_keras

    narrow = config.replace(
        stages=tuple(tuple(1 for _ in stage) for stage in config.stages),
        hidden=tuple(1 for _ in config.hidden),
        num_classes=1,
    )
    # The file is the same for both data formats (weight shapes do not depend
    # on it); build channels_last so a channels_first keras.json adds no
    # `to_channels_last` group.
    saved_format = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_last")
    try:
        model = vgg_keras.build_vgg(narrow, include_top=include_top, classifier_activation=None)
    finally:
        keras.config.set_image_data_format(saved_format)
    groups: list[tuple[str, tuple[tuple[str, object], ...]]] = []
    variables: dict[str, tuple[str, ...]] = {}
    with tempfile.TemporaryDirectory(prefix="vgg_parity_layout_") as folder:
        path = Path(folder) / "layout.weights.h5"
        model.save_weights(path)
        with h5py.File(path, "r") as f:
            datasets: set[str] = set()

            def visit(name: str, obj: h5py.Group | h5py.Dataset) -> None:
                if isinstance(obj, h5py.Group):
                    groups.append((name, tuple((k, v) for k, v in obj.attrs.items())))
                else:
                    datasets.add(name)

            groups.append(("/", tuple((k, v) for k, v in f.attrs.items())))
            f.visititems(visit)
            for layer in model.layers:
                if not layer.weights:
                    continue
                found = [
                    name for name, attrs in groups if name.endswith("/vars") and dict(attrs).get("name") == layer.name
                ]
                paths = tuple(f"{found[0]}/{i}" for i in range(len(layer.weights))) if len(found) == 1 else ()
                if not paths or {p for p in datasets if p.startswith(f"{found[0]}/")} != set(paths):
                    raise ConversionError(
                        f"Keras {_keras_version()} does not save {layer.name!r} as one group named after the layer "
                        "with "
                        f"datasets 0..{len(layer.weights) - 1}, so the converter cannot place its weights; use the "
                        "Keras "
                        f"version in uv.lock. Received: {len(found)} groups named {layer.name!r}"
                    )
                variables[layer.name] = paths
    return KerasFileLayout(tuple(groups), variables)


def write_keras_weights(
    state_dict: Mapping[str, np.ndarray],
    config: VGGConfig,
    path: str | os.PathLike[str],
    include_top: bool = True,
) -> None:
    """Writes a Keras ``.weights.h5`` straight from a torchvision-layout state dict.

    No Keras model of the network is built: each tensor is transformed and
    written in slabs of at most ``SLAB_BYTES`` of output features, so the
    memory needed beyond the state dict is one slab
    (:data:`parity.core.h5file.SLAB_BYTES`). The file loads with
    ``model.load_weights`` like one written by ``model.save_weights``.

    Args:
        state_dict: Names to numpy arrays (torch tensors converted with ``.numpy()``).
        config: The network the state dict belongs to.
        path: The file to write, replaced if it exists and removed if the
            write fails. Write to a temporary name and rename it when complete
            (:func:`parity.core.weights_file.stage_converted_weights` does).
        include_top: Whether to write the classifier; with ``False`` the
            state dict must hold the features only.

    Raises:
        ConversionError: If the state dict does not fit the config, or the
            name map and Keras' layout disagree; the file is then not written.
        OSError: If the file cannot be written; it is removed then.
    """
    check_state_dict(state_dict, config, include_top)
    mappings = weight_map(config, include_top)
    layout = keras_file_layout(config, include_top)
    planned = {(m.keras_layer, m.keras_index) for m in mappings}
    saved = {(layer, i) for layer, paths in layout.variables.items() for i in range(len(paths))}
    problems = list_problems(
        {
            "Keras variables the name map leaves unassigned": [f"{k}[{i}]" for k, i in sorted(saved - planned)],
            "mapped weights Keras has no variable for": [f"{k}[{i}]" for k, i in sorted(planned - saved)],
        }
    )
    if problems:
        raise ConversionError(f"The name map of {config.name} does not fit Keras' file layout: " + "; ".join(problems))
    try:
        write_weights_file(Path(path), state_dict, mappings, layout)
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise


def _keras_version() -> str:
    import keras

    return keras.__version__


def assign_keras_weights(model: keras.Model, weights: Mapping[str, list[np.ndarray]]) -> None:
    """Sets converted weights on a Keras model, checking every shape first.

    Args:
        model: A model built from the same config.
        weights: :func:`convert_state_dict`'s output.

    Raises:
        ConversionError: Listing converted layers the model lacks, weighted
            layers left unassigned and shape mismatches; nothing is assigned then.
    """
    layers = {layer.name: layer for layer in model.layers if layer.weights}
    unknown = [name for name in weights if name not in layers]
    unassigned = [name for name in layers if name not in weights]
    wrong = []
    for name, arrays in weights.items():
        if name in layers:
            shapes = [tuple(v.shape) for v in layers[name].weights]
            got = [tuple(a.shape) for a in arrays]
            if shapes != got:
                wrong.append(f"{name} {got} != {shapes}")
    problems = list_problems(
        {"layers not in the model": unknown, "model layers left unassigned": unassigned, "shape mismatches": wrong}
    )
    if problems:
        raise ConversionError(f"Converted weights do not fit Keras model {model.name!r}: " + "; ".join(problems))
    for name, arrays in weights.items():
        for variable, array in zip(layers[name].weights, arrays, strict=True):
            assign_variable(variable, array)

"""Keras ``.weights.h5`` files read and written with h5py, layer by layer, slab by slab.

:func:`write_weights_file` writes the groups and attributes Keras itself
writes for a model (a :class:`KerasFileLayout`, which
:func:`parity.convert.weight_arrays.keras_file_layout` reads off a file Keras saves) and
every mapped torch tensor, transformed in slabs of at most :data:`SLAB_BYTES`.
:func:`read_keras_weights` loads such a file into a Keras model by layer name,
each variable read straight into its own memory (:func:`assign_variable`).
Importing this module loads neither torch nor TensorFlow: Keras and
TensorFlow are touched only through the model passed in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from parity.core.errors import ConversionError, list_problems
from parity.core.names import WeightMapping

if TYPE_CHECKING:
    import h5py
    import keras

__all__ = [
    "SLAB_BYTES",
    "KerasFileLayout",
    "assign_variable",
    "layer_groups",
    "read_keras_weights",
    "read_layer_arrays",
    "write_weights_file",
]

#: Largest temporary buffer the file writer makes (the first dense layer of
#: VGG16 alone is 392 MiB).
SLAB_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class KerasFileLayout:
    """Where Keras' ``save_weights`` puts each layer of a model in a ``.weights.h5``.

    Attributes:
        groups: Every group of the file (parents first) with its attributes.
        variables: Keras layer name -> dataset paths of its variables, in
            ``layer.weights`` order.
    """

    groups: tuple[tuple[str, tuple[tuple[str, object], ...]], ...]
    variables: Mapping[str, tuple[str, ...]]


def write_weights_file(
    path: Path, state_dict: Mapping[str, np.ndarray], mappings: list[WeightMapping], layout: KerasFileLayout
) -> None:
    """Writes the groups of ``layout`` and every mapped tensor, in slabs, to a new HDF5 file.

    Args:
        path: The file to create (replaced if it exists).
        state_dict: Names to numpy arrays, checked against the config already.
        mappings: The name map (:func:`parity.core.names.weight_map`).
        layout: Where Keras puts each layer's variables.

    Raises:
        ConversionError: If a transform gives a slab of the wrong shape.
        OSError: If the file cannot be written.
    """
    import h5py

    with h5py.File(path, "w") as f:
        for name, attrs in layout.groups:
            group = f if name == "/" else f.require_group(name)
            for key, value in attrs:
                group.attrs[key] = value
        for m in mappings:
            source = np.asarray(state_dict[m.torch_key])
            dataset = f.create_dataset(
                layout.variables[m.keras_layer][m.keras_index], shape=m.keras_shape, dtype=np.float32
            )
            for start, stop in _slabs(source):
                part = m.transform(source[start:stop])
                if part.shape != (*m.keras_shape[:-1], stop - start):
                    raise ConversionError(
                        f"{m.torch_key} transforms to a Keras array of the wrong shape for {m.keras_layer}: expected "
                        f"{m.keras_shape} in slabs of its last axis. "
                        f"Received: slab {start}:{stop} of shape {part.shape}"
                    )
                dataset[..., start:stop] = np.ascontiguousarray(part, dtype=np.float32)


def read_keras_weights(
    model: keras.Model,
    path: str | os.PathLike[str],
    strict: bool = True,
    kernel_adapters: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> None:
    """Loads a ``.weights.h5`` into a model by layer name, checking every shape first.

    Each ``vars`` group of the file names its layer (an attribute Keras writes).
    Each variable is read straight into the buffer that becomes its memory
    (see :func:`assign_variable`), where ``model.load_weights`` reads it and then
    converts it twice: loading VGG16 this way needs its 528 MiB and nothing more.

    Args:
        model: The model to fill.
        path: A file written by :func:`parity.convert.weight_arrays.write_keras_weights` or ``save_weights``.
        strict: Whether weighted layers of the file that the model lacks are an
            error; with ``False`` they are skipped, so a full model's file
            loads into the same network built with ``include_top=False``.
        kernel_adapters: Layer name -> function applied to that layer's
            stored kernel (variable 0) before the shape check and assignment,
            e.g. :func:`parity.core.layouts.adapt_input_channels` for a first
            convolution with another input channel count.

    Raises:
        ConversionError: Listing layers the file lacks, layers the model lacks
            (with ``strict``) and shape mismatches; nothing is assigned then.
        OSError: If the file cannot be read as HDF5.
    """
    import h5py

    layers = {layer.name: layer for layer in model.layers if layer.weights}
    with h5py.File(path, "r") as f:
        stored = layer_groups(f)
        adapted = {
            name: adapt(stored[name]["0"][()])
            for name, adapt in (kernel_adapters or {}).items()
            if name in stored and "0" in stored[name]
        }
        wrong = []
        for name in layers.keys() & stored.keys():
            want = [tuple(v.shape) for v in layers[name].weights]
            group = stored[name]
            got = [tuple(group[str(i)].shape) if str(i) in group else None for i in range(len(group))]
            if name in adapted:
                got[0] = tuple(adapted[name].shape)
            if want != got:
                wrong.append(f"{name} {got} != {want}")
        problems = list_problems(
            {
                "layers missing from the file": [n for n in layers if n not in stored],
                "layers not in the model": [n for n in stored if n not in layers] if strict else [],
                "shape mismatches": sorted(wrong),
            }
        )
        if problems:
            raise ConversionError(f"{os.fspath(path)} does not fit Keras model {model.name!r}: " + "; ".join(problems))
        for name, layer in layers.items():
            for i, variable in enumerate(layer.weights):
                assign_variable(variable, adapted[name] if i == 0 and name in adapted else stored[name][str(i)])


def layer_groups(f: h5py.File) -> dict[str, h5py.Group]:
    """Each layer's ``vars`` group in a Keras ``.weights.h5``, by layer name (the group's ``name`` attribute).

    Args:
        f: The open file.

    Returns:
        ``{layer name: group}`` for every group that holds a layer's variables.
    """
    import h5py

    found: dict[str, h5py.Group] = {}

    def visit(name: str, obj: h5py.Group | h5py.Dataset) -> None:
        if isinstance(obj, h5py.Group) and name.rpartition("/")[2] == "vars" and len(obj) and "name" in obj.attrs:
            found[str(obj.attrs["name"])] = obj

    f.visititems(visit)
    return found


def read_layer_arrays(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """Reads every layer's arrays from a Keras ``.weights.h5``, by layer name.

    Args:
        path: A file written by ``model.save_weights`` or ``python -m parity.convert``.

    Returns:
        ``{keras layer name: arrays in layer.weights order}``.

    Raises:
        ConversionError: If a layer's group does not hold datasets ``0..n-1``.
        OSError: If the file cannot be read as HDF5.
    """
    import h5py

    arrays: dict[str, list[np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        for layer, group in layer_groups(f).items():
            keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
            if keys != [str(i) for i in range(len(keys))]:
                raise ConversionError(
                    f"{group.name.lstrip('/')} must hold datasets 0..{len(keys) - 1}. Received: {sorted(group.keys())}"
                )
            arrays[layer] = [np.array(group[k]) for k in keys]
    return arrays


def _slabs(array: np.ndarray) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` ranges of the first axis, each at most :data:`SLAB_BYTES` (at least one row)."""
    if array.ndim == 0:
        raise ConversionError(f"Weights must have at least one axis. Received: a scalar of dtype {array.dtype}")
    rows = max(1, SLAB_BYTES // max(1, array.nbytes // max(1, array.shape[0])))
    for start in range(0, array.shape[0], rows):
        yield start, min(start + rows, array.shape[0])


#: Byte alignment of the buffers handed to TensorFlow; it adopts aligned numpy memory without a copy.
_TF_ALIGNMENT = 128


def assign_variable(variable: keras.Variable, source: np.ndarray | h5py.Dataset) -> None:
    """Sets a variable from a numpy array or an HDF5 dataset with one buffer of its size.

    Keras' ``variable.assign(array)`` converts the array to a tensor and then
    copies it into the variable: two full-size temporaries (784 MiB for VGG16's
    392 MiB fc1 kernel), which TensorFlow's allocator may keep. On TensorFlow
    the value is instead read into a fresh aligned numpy buffer and handed to
    ``AssignVariableOp``, which adopts an aligned buffer without copying, so
    the buffer becomes the variable's memory. The buffer is private, so the
    variable never shares memory with the caller's arrays. Other backends use
    ``variable.assign``.

    Args:
        variable: The Keras variable.
        source: Its new value, of the variable's shape.
    """
    import keras

    dtype = np.dtype(keras.backend.standardize_dtype(variable.dtype))
    target = variable.value
    if keras.backend.backend() != "tensorflow" or not hasattr(target, "handle"):
        variable.assign(np.asarray(source[()], dtype=dtype))
        return
    import tensorflow as tf

    buffer = _aligned_empty(tuple(source.shape), dtype)
    if hasattr(source, "read_direct") and source.dtype == dtype and source.size:
        source.read_direct(buffer)
    else:
        buffer[...] = source[()]
    tf.raw_ops.AssignVariableOp(resource=target.handle, value=buffer)


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts on a :data:`_TF_ALIGNMENT` boundary."""
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(size + _TF_ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % _TF_ALIGNMENT
    return raw[start : start + size].view(dtype).reshape(shape)

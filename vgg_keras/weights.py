"""``weights=`` for the Keras builder: which file a name means, and loading it into a model.

:func:`resolve_weights` turns ``"converted"``, a torchvision weights name or a
path into a file, converting missing cache entries on demand
(:mod:`vgg_keras.on_demand`). :func:`load_converted_weights` checks the file
against its sidecar's hash (:mod:`parity.core.weights_file`) and its record's
config against the model, adapts a first convolution to another input channel
count, and reads it by layer name (:func:`parity.core.h5file.read_keras_weights`),
all under a shared lock on the folder (:func:`parity.core.atomic.folder_lock`),
so a concurrent writer cannot swap the file in between. Loading refuses,
naming the file and the command that replaces it, a file that is truncated or
corrupt, disagrees with its sidecar's hash, lacks its sidecar in the cache, or
does not fit the model. This module needs Keras and h5py, never torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from parity.core.atomic import folder_lock
from parity.core.catalog import DEFAULT_WEIGHTS, WEIGHTS, cache_dir, get_weights_record
from parity.core.config import LAYER_FIELDS, VGGConfig, layer_plan, preset_matching_config
from parity.core.errors import WeightsFileError, first_line
from parity.core.h5file import read_keras_weights
from parity.core.layouts import KERAS_IN_AXIS, adapt_input_channels, can_adapt_input_channels
from parity.core.weights_file import check_sidecar_hash, fix_command, read_record
from vgg_keras.on_demand import convert_on_demand

__all__ = ["converted_weights_path", "load_converted_weights", "resolve_weights"]


def converted_weights_path(arch: str, weights: str = DEFAULT_WEIGHTS) -> Path:
    """Path where ``weights="converted"`` looks for one set of converted weights.

    Args:
        arch: Preset name, e.g. ``"vgg16"``.
        weights: torchvision weights name.

    Returns:
        The path (which may not exist yet).
    """
    return cache_dir() / get_weights_record(arch, weights).keras_filename


def resolve_weights(weights: str, config: VGGConfig, *, include_top: bool) -> Path:
    """Turns a ``weights=`` argument into the path of a file to load.

    ``"converted"`` and torchvision weights names resolve to Keras' cache. A
    missing cached file is converted on demand when torch and torchvision are
    installed, in a child process (this process has TensorFlow loaded, and
    importing torchvision's triton after TensorFlow crashes the interpreter).

    Args:
        weights: ``"converted"``, a weights name (``"IMAGENET1K_V1"``,
            ``"IMAGENET1K_FEATURES"``) or a path to a ``.weights.h5`` file.
        config: The model's config.
        include_top: Whether the model has its classifier.

    Returns:
        Path of an existing weights file.

    Raises:
        ValueError: If the weights do not fit the model.
        FileNotFoundError: If the file is absent and cannot be made here.
        RuntimeError: If on-demand conversion fails.
    """
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "`weights` must be None, 'converted', a torchvision weights name or a .weights.h5 path. "
            f"Received: weights={weights!r}"
        )
    text = os.fspath(weights)
    names = {n for recs in WEIGHTS.values() for n in recs}
    if text != "converted" and text not in names:
        path = Path(text).expanduser()
        if not text.endswith(".weights.h5"):
            raise ValueError(
                "`weights` must be None, 'converted', a torchvision weights name "
                f"({', '.join(sorted(names))}) or a path ending in .weights.h5. Received: weights={weights!r}"
            )
        if not path.is_file():
            raise FileNotFoundError(f"No weights file at {path}. Received: weights={weights!r}")
        return path

    arch = preset_matching_config(config)
    if arch is None:
        raise ValueError(
            "Converted ImageNet weights exist only for the eight torchvision presets and alexnet; this config "
            "matches none. "
            f"Pass the path of your own converted file instead. Received: weights={weights!r}"
        )
    record = get_weights_record(arch, DEFAULT_WEIGHTS if text == "converted" else text)
    if include_top and not record.has_classifier:
        raise ValueError(
            f"{arch} {record.name} has no usable classifier (NaN by design in torchvision); "
            f"use include_top=False. Received: weights={weights!r}, include_top=True"
        )
    if include_top and config.num_classes != 1000:
        raise ValueError(
            f"With converted ImageNet weights and include_top=True, `classes` must be 1000. "
            f"Received: classes={config.num_classes}"
        )
    path = cache_dir() / record.keras_filename
    if path.exists() and not path.is_file():
        raise WeightsFileError(
            f"{path} is not a regular file: remove it, then {fix_command(path)}. Received: weights={weights!r}"
        )
    if not path.exists():
        convert_on_demand(record, path)
    return path


def load_converted_weights(
    model: keras.Model, path: str | os.PathLike[str], config: VGGConfig, *, include_top: bool
) -> dict[str, object]:
    """Checks a converted file against its sidecar and the model, then loads it.

    The sha256 of the file must equal the one in its sidecar ``<file>.json``;
    in Keras' cache the sidecar is required, elsewhere it is checked when
    present. Checking and loading happen under a shared lock on the folder, so
    a concurrent writer cannot swap the file in between.

    Args:
        model: A model built from ``config``.
        path: The ``.weights.h5`` file.
        config: The model's config.
        include_top: Whether the model has its classifier.

    Returns:
        The file's provenance record.

    Raises:
        WeightsFileError: If the file is corrupt or truncated, its hash
            disagrees with its sidecar, its sidecar is missing (in the cache) or
            unreadable, or its layers or class count do not fit the model. The
            message names the file and the command that replaces it.
    """
    path = Path(path)
    with folder_lock(path.parent, shared=True):
        return _check_and_load(model, path, config, include_top)


def _check_and_load(model: keras.Model, path: Path, config: VGGConfig, include_top: bool) -> dict[str, object]:
    # fix_command(path) is computed only where a message needs it: at most once per load.
    in_cache = path.parent.resolve() == cache_dir().resolve()
    check_sidecar_hash(path, required=in_cache)
    record = read_record(path)
    try:
        saved = VGGConfig.from_dict(record["config"])  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsFileError(
            f"{path} has an invalid config in its record: {fix_command(path)}. Received: {first_line(e)}"
        ) from None
    for field in LAYER_FIELDS:
        if getattr(saved, field) != getattr(config, field):
            raise WeightsFileError(
                f"{path} holds weights for {record.get('arch')} ({field}={getattr(saved, field)!r}), "
                f"which do not fit this model ({field}={getattr(config, field)!r}). "
                f"Received: weights={os.fspath(path)!r}"
            )
    adapters: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    if saved.in_channels != config.in_channels:
        if not can_adapt_input_channels(saved.in_channels, config.in_channels):
            raise WeightsFileError(
                f"{path} holds a first convolution for {saved.in_channels} input channels, which cannot be adapted to "
                f"{config.in_channels}: build the model with {saved.in_channels} channels. "
                f"Received: in_channels={config.in_channels}"
            )
        first_conv = next(spec.keras_name for spec in layer_plan(config) if spec.kind == "conv")
        adapters[first_conv] = lambda kernel: adapt_input_channels(kernel, config.in_channels, KERAS_IN_AXIS)
    if include_top:
        if not record.get("include_top", True):
            raise WeightsFileError(
                f"{path} holds convolutional weights only: build the model with include_top=False. "
                "Received: include_top=True"
            )
        if saved.num_classes != config.num_classes:
            raise WeightsFileError(
                f"{path} has a {saved.num_classes}-class classifier: pass classes={saved.num_classes}, "
                f"or include_top=False. Received: classes={config.num_classes}"
            )
    try:
        # A full model's file also serves include_top=False.
        read_keras_weights(model, path, strict=False, kernel_adapters=adapters)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise WeightsFileError(
            f"{path} could not be loaded (corrupt?): {fix_command(path)}. Received: {type(e).__name__}: {first_line(e)}"
        ) from None
    return record

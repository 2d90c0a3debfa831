"""Building and writing an export: the Keras model, the SavedModel or TFLite bytes, and the atomic commit.

:func:`parity.export.export` builds the model with :func:`build_export_model`,
writes it under a temporary name inside :func:`staging` with
:func:`write_saved_model` or :func:`tflite_bytes`, and, once
:mod:`parity.export.check` has passed it, moves it and its sidecar into place
with :func:`commit` (SIGINT and SIGTERM held back during the renames).
:func:`tree_sha256` and :func:`tree_size` describe a file or a folder for the
sidecar.

Imports Keras and TensorFlow only inside the functions that need them; the
caller has imported torch and torchvision first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from parity.core.atomic import renaming_into, write_temp
from parity.core.config import VGGConfig
from parity.core.weights_file import sidecar_path

if TYPE_CHECKING:
    import keras

__all__ = [
    "build_export_model",
    "commit",
    "remove",
    "staging",
    "temp_name",
    "tflite_bytes",
    "tree_sha256",
    "tree_size",
    "write_saved_model",
]


def build_export_model(
    config: VGGConfig, *, include_top: bool, data_format: str, input_shape: tuple[int | None, int | None]
) -> keras.Model:
    """The Keras model that is exported: logits (no softmax), or the last feature map.

    Args:
        config: The network.
        include_top: Whether to include the classifier.
        data_format: Layout of the model's input.
        input_shape: ``(height, width)``; ``None`` for any size.

    Returns:
        The model, weights not loaded.
    """
    import keras

    import vgg_keras

    h, w = input_shape
    shape = (config.in_channels, h, w) if data_format == "channels_first" else (h, w, config.in_channels)
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format(data_format)
    try:
        return vgg_keras.build_vgg(config, include_top=include_top, classifier_activation=None, input_shape=shape)
    finally:
        keras.config.set_image_data_format(previous)


def _block_outputs(model: keras.Model) -> list[keras.KerasTensor]:
    """Each ``block{i}_pool`` layer's output in this model's graph (its latest call, for reused layers)."""
    pools = [layer for layer in model.layers if layer.name.startswith("block") and layer.name.endswith("_pool")]
    return [p._inbound_nodes[-1].outputs[0] for p in pools]


def write_saved_model(model: keras.Model, folder: Path, signature: tuple[int | None, ...]) -> None:
    """Writes what ``model.export(format="tf_saved_model")`` writes, plus a ``blocks`` endpoint.

    ``serve`` (and ``serving_default``) is the model; ``blocks`` returns
    ``{"block1": ..., ...}``, each NCHW, for the per-block check.
    """
    import keras
    import tensorflow as tf

    probe = keras.Model(model.input, _block_outputs(model))
    inner_last = model.get_layer("block1_conv1").data_format == "channels_last"

    def blocks(x: tf.Tensor) -> dict[str, tf.Tensor]:
        outs = probe(x, training=False)
        return {f"block{i}": tf.transpose(o, (0, 3, 1, 2)) if inner_last else o for i, o in enumerate(outs, start=1)}

    spec = tf.TensorSpec(signature, tf.float32, name="images")
    archive = keras.export.ExportArchive()
    archive.track_and_add_endpoint("serve", model, [spec])
    archive.track(probe)
    archive.add_endpoint("blocks", blocks, input_signature=[spec])
    archive.write_out(os.fspath(folder), verbose=False)


def _pool_matrix(pool: keras.layers.Layer, height: int, width: int) -> np.ndarray:
    """The ``(out_h * out_w, height * width)`` matrix of an adaptive average pool, read off the layer itself.

    The pool is linear and acts on every channel alike, so running it on the
    ``height * width`` one-hot images of one channel gives its columns.
    """
    basis = np.eye(height * width, dtype=np.float32).reshape(height * width, height, width, 1)
    pooled = np.asarray(pool(basis))
    return pooled.reshape(height * width, -1).T


def _classifier_constants(model: keras.Model, feature_shape: tuple[int, int, int]) -> tuple[list[tuple], str]:
    """Each ``Dense`` layer's kernel as ``[out, in]`` and bias, with fc1 fitted to the feature map it reads.

    ``FULLY_CONNECTED`` reads its weights as ``[out, in]``; Keras stores
    ``[in, out]``, and TFLite's converter leaves a ``TRANSPOSE`` of any
    constant too large to fold (fc1's 102M weights) to run on every call. So
    each kernel is stored already transposed. fc1's rows are in Keras'
    flatten order (H, W, C), which is the order the feature map is reshaped
    in. Where the adaptive pool is not the identity and does not tile the map
    evenly, it is folded into fc1 (both are linear): fc1 then reads the
    block-5 map directly, and no pool op is left.

    Returns:
        ``[(kernel_out_in, bias), ...]`` and how the pool is run: ``"none"``
        (identity or absent), ``"average_pool"`` (even tiling) or ``"folded"``.
    """
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    kernels = [np.asarray(d.kernel) for d in dense]
    h, w, c = feature_shape
    mode = "none"
    pools = [layer for layer in model.layers if layer.name == "avgpool"]
    if pools and tuple(pools[0].output_size) != (h, w):
        out_h, out_w = pools[0].output_size
        if h % out_h == 0 and w % out_w == 0:
            mode = "average_pool"
        else:
            mode = "folded"
            matrix = _pool_matrix(pools[0], h, w)  # (out_h * out_w, h * w)
            fc1 = kernels[0].reshape(out_h * out_w, c, -1)
            kernels[0] = np.einsum("ps,pco->sco", matrix, fc1).reshape(h * w * c, -1)
    return [(np.ascontiguousarray(k.T), np.asarray(d.bias)) for k, d in zip(kernels, dense)], mode


def deploy_function(model: keras.Model) -> tuple[keras.Model, Callable]:
    """The graph a TFLite file is converted from: Keras' feature layers, then the classifier on constants.

    The feature layers (convolutions, batch norm, pools, and the input
    transpose of a ``channels_first`` model) are the model's own; the
    classifier is ``tf.matmul(x, kernel_out_in, transpose_b=True)`` per
    layer (see :func:`_classifier_constants`), after a reshape to
    ``[-1, H*W*C]`` so that the batch stays dynamic.

    Args:
        model: The export model (logits, or the feature map without the top), weights loaded, of a
            fixed input height and width.

    Returns:
        The feature sub-model (to be tracked) and ``serve(x)``.
    """
    import keras
    import tensorflow as tf

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        return model, lambda x: model(x, training=False)
    pools = [layer for layer in model.layers if layer.name.startswith("block") and layer.name.endswith("_pool")]
    features = keras.Model(model.input, pools[-1].output)
    h, w, c = features.output.shape[1:]
    if model.get_layer(pools[-1].name).data_format != "channels_last":
        raise NotImplementedError("TFLite export computes in channels_last; this model computes in channels_first")
    constants, pool_mode = _classifier_constants(model, (h, w, c))
    if pool_mode == "average_pool":
        out_h, out_w = model.get_layer("avgpool").output_size
        window = (h // out_h, w // out_w)
    kernels = [(tf.constant(k), tf.constant(b)) for k, b in constants]

    def serve(x: tf.Tensor) -> tf.Tensor:
        y = features(x, training=False)
        if pool_mode == "average_pool":
            y = tf.nn.avg_pool2d(y, window, window, "VALID")
        y = tf.reshape(y, [-1, int(np.prod(y.shape[1:]))])
        for i, (kernel, bias) in enumerate(kernels):
            y = tf.matmul(y, kernel, transpose_b=True) + bias
            if i < len(kernels) - 1:
                y = tf.nn.relu(y)
        return y

    return features, serve


def tflite_bytes(
    model: keras.Model,
    scratch: Path,
    signature: tuple[int | None, ...],
    quantize: str,
    calibration: np.ndarray | None = None,
) -> bytes:
    """Converts :func:`deploy_function`'s graph, through a SavedModel at ``scratch``, to TFLite.

    Args:
        model: The export model, weights loaded.
        scratch: A free path for the intermediate SavedModel.
        signature: The input signature; its batch is ``None`` (any batch).
        quantize: ``"none"``, ``"float16"``, ``"dynamic-int8"`` or ``"int8"``.
        calibration: With ``"int8"``: the representative inputs, in the signature's layout.

    Returns:
        The ``.tflite`` file's bytes.
    """
    import keras
    import tensorflow as tf

    tracked, serve = deploy_function(model)
    spec = tf.TensorSpec(signature, tf.float32, name="images")
    archive = keras.export.ExportArchive()
    archive.track(tracked)
    archive.add_endpoint("serve", serve, input_signature=[spec])
    archive.write_out(os.fspath(scratch), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(scratch))
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        if calibration is None:
            raise ValueError(f"int8 needs calibration inputs. Received: calibration={calibration!r}")
        samples = calibration.astype(np.float32)
        converter.representative_dataset = lambda: ([samples[i : i + 1]] for i in range(len(samples)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.float32  # float in and out, int8 inside
        converter.inference_output_type = tf.float32
    return converter.convert()


def tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's relative paths and file contents in sorted order."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(os.fspath(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def tree_size(path: Path) -> int:
    """Bytes in a file, or in all the files of a folder."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def temp_name(target: Path, suffix: str) -> Path:
    """A hidden, unused name beside ``target``: ``.NAME.<random>SUFFIX``."""
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}{suffix}")


def remove(path: Path) -> None:
    """Deletes a file, link or folder if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def staging(target: Path) -> Iterator[list[Path]]:
    """Temporary paths beside ``target``, all removed on exit (the committed ones are gone by then)."""
    temps: list[Path] = []
    try:
        yield temps
    finally:
        for p in temps:
            remove(p)


def _fsync_tree(path: Path) -> None:
    """Flushes a file, or every file of a folder, to disk."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for f in files:
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def commit(
    staged: Path,
    target: Path,
    sidecar_text: str,
    temps: list[Path],
    companion: tuple[Path, Path] | None = None,
) -> None:
    """Renames the artifact, then its sidecar, into place, with the folder locked and SIGINT/SIGTERM held back.

    A folder cannot replace a non-empty folder in one rename: an existing
    SavedModel is first renamed aside (hidden), then removed after the new one is in place.

    An artifact of two files (an OpenVINO IR: ``companion`` is the staged and
    the target ``.bin``) is replaced in three renames: the old ``.xml`` aside,
    the new ``.bin``, the new ``.xml``. A reader sees the old pair, no ``.xml``,
    or the new pair; never an ``.xml`` with another export's ``.bin``.
    """
    _fsync_tree(staged)
    if companion is not None:
        _fsync_tree(companion[0])
    sidecar_tmp = write_temp(sidecar_path(target), sidecar_text)
    temps.append(sidecar_tmp)
    with renaming_into(target.parent, before_commit=None):  # folder locked, signals held, folder flushed after
        if (staged.is_dir() or companion is not None) and target.exists():
            aside = temp_name(target, ".old")
            temps.append(aside)
            os.replace(target, aside)
        if companion is not None:
            os.replace(*companion)
        os.replace(staged, target)
        os.replace(sidecar_tmp, sidecar_path(target))

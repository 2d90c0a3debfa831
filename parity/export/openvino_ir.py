"""The fp32 OpenVINO IR (``.xml`` + ``.bin``), converted by ``openvino.convert_model`` from the ONNX graph.

The route: :func:`parity.export.onnx_graph.write_onnx` writes the ONNX file
from the layer plan and torchvision's weights (batch norm folded in float64,
the adaptive pool computed from the map's shape), and OpenVINO's own ONNX
frontend reads it. Neither step imports TensorFlow, torch or Keras; the
graph keeps the ONNX file's dynamic batch (and height and width, wherever the
network allows) and its tensor names, ``images``, ``block{i}_pool`` and
``output``, so the checker reads the file's own block outputs
(:func:`compiled_model` with ``blocks``). The weights stay fp32
(``compress_to_fp16=False``; ``openvino.save_model`` compresses to fp16 by
default).

OpenVINO's CPU plugin infers in bfloat16 by default on CPUs with native bf16
(AVX-512 BF16 or AMX); the file is verified, and should be deployed, with
``INFERENCE_PRECISION_HINT`` ``f32`` (:data:`PRECISION_CONFIG`).

An IR is two files: the ``.bin`` (weights) beside the ``.xml`` (graph), found
by its name. :func:`bin_path` names it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from parity.core.config import VGGConfig
from parity.export.onnx_graph import write_onnx

if TYPE_CHECKING:
    import openvino

__all__ = ["PRECISION_CONFIG", "bin_path", "compiled_model", "write_openvino"]

#: The compile config the file is verified with: fp32 on every CPU.
PRECISION_CONFIG: dict[str, str] = {"INFERENCE_PRECISION_HINT": "f32"}


def bin_path(xml: str | os.PathLike[str]) -> Path:
    """The weights file of an IR: ``m.xml`` -> ``m.bin``, where OpenVINO looks for it.

    Examples:
        >>> bin_path("out/vgg16.xml").name
        'vgg16.bin'
    """
    return Path(xml).with_suffix(".bin")


def write_openvino(
    path: str | os.PathLike[str],
    config: VGGConfig,
    state: Mapping[str, np.ndarray],
    *,
    include_top: bool,
    data_format: str,
    size: tuple[int, int],
) -> None:
    """Writes the IR at ``path`` (``.xml``) and :func:`bin_path` beside it, through an ONNX file.

    Args:
        path: The ``.xml`` file.
        config: The network.
        state: torchvision-layout weights (numpy), batch-norm statistics included.
        include_top: Whether to write the classifier (logits out) or end at the last feature map.
        data_format: The input layout: ``"channels_first"`` (NCHW) or ``"channels_last"``.
        size: ``(height, width)``: the only size a config without the adaptive pool takes.

    Examples:
        >>> from parity.convert.random_weights import randomized_state_dict
        >>> from parity.core.config import PRESETS
        >>> state = randomized_state_dict(PRESETS["vgg11"], seed=0)  # doctest: +SKIP
        >>> write_openvino("vgg11.xml", PRESETS["vgg11"], state, include_top=True,
        ...                data_format="channels_first", size=(224, 224))  # doctest: +SKIP
    """
    import openvino as ov

    xml = Path(path)
    onnx_path = xml.with_name(f"{xml.name}.onnx.tmp")
    try:
        write_onnx(onnx_path, config, state, include_top=include_top, data_format=data_format, size=size)
        model = ov.convert_model(onnx_path)
        ov.save_model(model, xml, compress_to_fp16=False)
    finally:
        onnx_path.unlink(missing_ok=True)


def compiled_model(
    path: str | os.PathLike[str], *, blocks: int = 0, num_threads: int | None = None
) -> openvino.CompiledModel:
    """The IR read from disk and compiled for OpenVINO's CPU plugin in fp32.

    Args:
        path: The ``.xml`` file (its ``.bin`` beside it).
        blocks: How many ``block{i}_pool`` tensors to add as outputs after ``output`` (0: none).
        num_threads: Inference threads (``None``: the plugin's default, one per core).

    Returns:
        The compiled model; its outputs are named ``output`` and ``block1_pool`` ....

    Examples:
        >>> compiled = compiled_model("vgg16.xml")  # doctest: +SKIP
        >>> compiled(images_nchw)["output"].shape  # doctest: +SKIP
        (2, 1000)
    """
    import openvino as ov

    core = ov.Core()
    model = core.read_model(os.fspath(path))
    if blocks:
        model.add_outputs([f"block{i}_pool" for i in range(1, blocks + 1)])
    config: dict[str, object] = dict(PRECISION_CONFIG)
    if num_threads is not None:
        config["INFERENCE_NUM_THREADS"] = num_threads
    return core.compile_model(model, "CPU", config)

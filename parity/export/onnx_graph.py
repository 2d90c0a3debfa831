"""The fp32 ONNX file, written straight from the layer plan and torchvision's state dict.

ONNX computes in torch's NCHW, so every weight is stored as torch stores it:

- each convolution a ``Conv`` (torch's kernel, stride and padding: 3x3, 1, 1 in VGG) with
  batch norm, where there is one, folded into kernel and bias in float64
  before one rounding to float32 (:func:`parity.export.folding.feature_layers`),
  then a ``Relu``;
- each max pool a ``MaxPool`` (torch's window and stride, floor: 2x2, 2 in VGG);
- the adaptive average pool, for any map of ``h x w`` cells, computed at run
  time from the map's own shape: for output cell ``i`` torch averages rows
  ``floor(i*h/p)`` to ``ceil((i+1)*h/p)`` (exclusive); ``Shape``, ``Range``
  and integer ``Div`` build the 0/1 window masks of both axes, two
  ``MatMul`` sum the windows and one ``Div`` divides by their sizes, as torch
  does. At 224 px the masks are the identity and the sums exact;
- the classifier a ``Flatten`` (C·H·W, torch's own order: fc1 is stored as it
  is) and one ``Gemm`` per layer (``transB=1``, weights ``[out, in]`` as
  torch stores them), with a ``Relu`` after each hidden one.

The batch is dynamic, and so are height and width wherever the network allows
(with the adaptive pool, or without the top): any size of at least the network's
smallest (32 px for VGG, 63 for AlexNet). A
``channels_last`` file starts with one ``Transpose`` to NCHW (and, without the
top, ends with one back). Each stage's output is named ``block{i}_pool``, so
the checker can run the file's own nodes up to each block
(:func:`block_model`).

The file is streamed to disk: the graph's nodes are serialized by ``onnx``,
and each weight is appended as a ``TensorProto`` whose ``raw_data`` is written
from the array itself, so writing vgg16 needs no copy of the weights beyond
the state dict. Nothing here imports torch or TensorFlow.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from parity.core.config import VGGConfig, layer_plan
from parity.export.folding import FeatureLayer, feature_layers

if TYPE_CHECKING:
    import onnx

__all__ = ["INPUT_NAME", "IR_VERSION", "OPSET", "OUTPUT_NAME", "block_model", "onnx_input_shape", "write_onnx"]

#: ONNX's operator set: 17 is read by onnxruntime >= 1.13, TensorRT >= 8.6, OpenVINO >= 2022.3 and most NPU toolchains.
OPSET = 17
#: The IR version that goes with :data:`OPSET` (what ``onnx`` 1.13 writes), so older readers accept the file.
IR_VERSION = 8
#: The graph's input and output names.
INPUT_NAME = "images"
OUTPUT_NAME = "output"


def onnx_input_shape(
    config: VGGConfig, *, include_top: bool, data_format: str, size: tuple[int, int]
) -> list[int | str]:
    """The input's shape as the file declares it: named dimensions are dynamic.

    Height and width are fixed (``size``) only with the top of a config without the adaptive pool.
    """
    spatial: list[int | str] = ["height", "width"]
    if include_top and config.pool_size is None:
        spatial = list(size)
    if data_format == "channels_first":
        return ["batch", config.in_channels, *spatial]
    return ["batch", *spatial, config.in_channels]


class _Graph:
    """Nodes and named constants of one graph; weights kept as the arrays themselves until written."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[tuple[str, np.ndarray]] = []

    def constant(self, name: str, array: np.ndarray) -> str:
        self.constants.append((name, np.ascontiguousarray(array)))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, **attrs: object) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output


def _conv(g: _Graph, x: str, layer: FeatureLayer) -> str:
    """``Conv`` (torch's OIHW kernel as it is, torch's stride and padding) then ``Relu``."""
    name = layer.name
    w = g.constant(f"{name}/kernel", np.asarray(layer.kernel, np.float32))
    b = g.constant(f"{name}/bias", np.asarray(layer.bias, np.float32))
    y = g.node(
        "Conv",
        [x, w, b],
        name,
        kernel_shape=[layer.size] * 2,
        pads=[layer.padding] * 4,
        strides=[layer.stride] * 2,
    )
    return g.node("Relu", [y], f"{name}_relu")


def _window_bounds(g: _Graph, size: str, out: int, name: str) -> tuple[str, str]:
    """Start and end (exclusive) of torch's ``out`` adaptive windows over ``size`` cells, int64 ``[out]``.

    ``start = floor(i * size / out)``, ``end = ceil((i + 1) * size / out)``; ONNX's integer ``Div`` truncates,
    which is the floor for these non-negative operands.
    """
    i = g.constant(f"{name}/i", np.arange(out, dtype=np.int64))
    i1 = g.constant(f"{name}/i_plus_1", np.arange(1, out + 1, dtype=np.int64))
    p = g.constant(f"{name}/out", np.asarray(out, np.int64))
    p1 = g.constant(f"{name}/out_minus_1", np.asarray(out - 1, np.int64))
    start = g.node("Div", [g.node("Mul", [i, size], f"{name}/i_size"), p], f"{name}/start")
    end_num = g.node("Add", [g.node("Mul", [i1, size], f"{name}/i1_size"), p1], f"{name}/i1_size_ceil")
    return start, g.node("Div", [end_num, p], f"{name}/end")


def _window_masks(g: _Graph, shape: str, axis: int, out: int, name: str) -> tuple[str, str]:
    """The ``[out, size]`` 0/1 float mask of torch's windows along ``axis`` of the map, and each window's size."""
    index = g.constant(f"{name}/axis", np.asarray(axis, np.int64))
    size = g.node("Gather", [shape, index], f"{name}/size", axis=0)
    start, end = _window_bounds(g, size, out, name)
    zero = g.constant(f"{name}/zero", np.asarray(0, np.int64))
    one = g.constant(f"{name}/one", np.asarray(1, np.int64))
    j = g.node("Unsqueeze", [g.node("Range", [zero, size, one], f"{name}/j"), zero], f"{name}/j_row")  # [1, size]
    column = g.constant(f"{name}/column", np.asarray([1], np.int64))
    inside = g.node(
        "And",
        [
            g.node("GreaterOrEqual", [j, g.node("Unsqueeze", [start, column], f"{name}/start_col")], f"{name}/ge"),
            g.node("Less", [j, g.node("Unsqueeze", [end, column], f"{name}/end_col")], f"{name}/lt"),
        ],
        f"{name}/inside",
    )
    mask = g.node("Cast", [inside], f"{name}/mask", to=1)  # FLOAT
    count = g.node("Cast", [g.node("Sub", [end, start], f"{name}/count_int")], f"{name}/count", to=1)
    return mask, count


def _adaptive_pool(g: _Graph, x: str, grid: tuple[int, int]) -> str:
    """torch's ``AdaptiveAvgPool2d(grid)`` on an NCHW map of any size: window sums by two ``MatMul``, then ``Div``."""
    shape = g.node("Shape", [x], "avgpool/shape")
    rows, row_count = _window_masks(g, shape, 2, grid[0], "avgpool/rows")  # [p, h]
    cols, col_count = _window_masks(g, shape, 3, grid[1], "avgpool/cols")  # [q, w]
    cols_t = g.node("Transpose", [cols], "avgpool/cols_t", perm=[1, 0])  # [w, q]
    summed = g.node("MatMul", [rows, g.node("MatMul", [x, cols_t], "avgpool/col_sums")], "avgpool/sums")  # [N,C,p,q]
    one = g.constant("avgpool/column", np.asarray([1], np.int64))
    counts = g.node(
        "Mul", [g.node("Unsqueeze", [row_count, one], "avgpool/row_count_col"), col_count], "avgpool/counts"
    )  # [p, q]
    return g.node("Div", [summed, counts], "avgpool")


def _fc1_kernel(kernel: np.ndarray, channels: int, grid: tuple[int, int]) -> np.ndarray:
    """fc1's ``[out, in]`` kernel for the map :func:`_flatten` flattens: torch's C·H·W columns, as they are."""
    return kernel


def _flatten(g: _Graph, x: str) -> str:
    """The NCHW map flattened in C·H·W order, torch's ``torch.flatten(x, 1)``."""
    return g.node("Flatten", [x], "flatten", axis=1)


def _classifier(g: _Graph, config: VGGConfig, state: Mapping[str, np.ndarray], x: str) -> str:
    """The adaptive pool (when the config has one), the flatten, and one ``Gemm`` per layer."""
    if config.pool_size is not None:
        x = _adaptive_pool(g, x, config.pool_size)
    x = _flatten(g, x)
    dense = [spec for spec in layer_plan(config) if spec.kind == "dense"]
    for j, spec in enumerate(dense):
        kernel = state[f"{spec.torch_name}.weight"]
        if j == 0:
            kernel = _fc1_kernel(kernel, config.out_channels, config.head_grid)
        w = g.constant(f"{spec.keras_name}/kernel", np.asarray(kernel, np.float32))
        b = g.constant(f"{spec.keras_name}/bias", np.asarray(state[f"{spec.torch_name}.bias"], np.float32))
        last = j == len(dense) - 1
        x = g.node("Gemm", [x, w, b], OUTPUT_NAME if last else spec.keras_name, transB=1)
        if not last:
            x = g.node("Relu", [x], f"{spec.keras_name}_relu")
    return x


def _graph(
    config: VGGConfig, state: Mapping[str, np.ndarray], include_top: bool, data_format: str, size: tuple[int, int]
) -> tuple[_Graph, list[int | str]]:
    """The nodes and weights of the network (output :data:`OUTPUT_NAME`); returns the graph and the input's shape."""
    g = _Graph()
    in_shape = onnx_input_shape(config, include_top=include_top, data_format=data_format, size=size)
    x = INPUT_NAME
    if data_format == "channels_last":
        x = g.node("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2])
    for layer in feature_layers(config, state):
        if layer.kind == "conv":
            x = _conv(g, x, layer)
        else:
            x = g.node("MaxPool", [x], layer.name, kernel_shape=[layer.size] * 2, strides=[layer.stride] * 2)
    if include_top:
        _classifier(g, config, state, x)
    elif data_format == "channels_last":
        g.node("Transpose", [x], OUTPUT_NAME, perm=[0, 2, 3, 1])
    else:
        g.node("Identity", [x], OUTPUT_NAME)
    return g, in_shape


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _length_field(number: int, length: int) -> bytes:
    """A protobuf length-delimited field's key and length (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(length)


#: Field numbers of the ONNX protobuf messages written by hand (onnx/onnx.proto3).
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9


def _tensor_parts(name: str, array: np.ndarray) -> tuple[bytes, memoryview]:
    """A ``TensorProto``'s bytes up to its ``raw_data`` (little-endian), and the data itself, uncopied."""
    from onnx import TensorProto, helper

    if sys.byteorder != "little":
        array = array.astype(array.dtype.newbyteorder("<"))
    t = TensorProto(name=name, dims=list(array.shape), data_type=helper.np_dtype_to_tensor_dtype(array.dtype))
    data = memoryview(np.ascontiguousarray(array)).cast("B")
    return t.SerializeToString() + _length_field(_TENSOR_RAW_DATA, len(data)), data


def _output_shape(config: VGGConfig, include_top: bool, data_format: str) -> list[int | str]:
    """The output's shape as the file declares it (a feature map's height and width follow the input's)."""
    if include_top:
        return ["batch", config.num_classes]
    if data_format == "channels_first":
        return ["batch", config.out_channels, "map_height", "map_width"]
    return ["batch", "map_height", "map_width", config.out_channels]


def _model_head(g: _Graph, in_shape: list[int | str], out_shape: list[int | str], doc: str) -> tuple[bytes, bytes]:
    """The ``ModelProto`` without its graph, and the ``GraphProto`` without its initializers, serialized."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        g.nodes,
        "vgg",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, out_shape)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="vgg-parity",
        doc_string=doc,
        ir_version=IR_VERSION,
    )
    graph_bytes = model.graph.SerializeToString()
    model.ClearField("graph")
    return model.SerializeToString(), graph_bytes


def write_onnx(
    path: str | os.PathLike[str],
    config: VGGConfig,
    state: Mapping[str, np.ndarray],
    *,
    include_top: bool,
    data_format: str,
    size: tuple[int, int],
) -> int:
    """Writes the fp32 ONNX file of ``config`` with ``state`` to ``path``.

    Args:
        path: Where to write (the caller renames it into place once checked).
        config: The network.
        state: torchvision's state dict (numpy), as a checkpoint holds it or as
            :func:`parity.convert.to_torch.torch_state_dict_from_keras` reads a converted file back.
        include_top: Whether the file returns logits (else the last feature map).
        data_format: The input's layout (and, without the top, the output's).
        size: The input's ``(height, width)`` where it is fixed (a config without the adaptive pool, with the
            top); elsewhere height and width are dynamic.

    Returns:
        The number of bytes written.

    Examples:
        >>> from parity.core.config import get_config
        >>> from parity.core.checkpoint import load_checkpoint
        >>> state, _ = load_checkpoint("vgg16.pth")  # doctest: +SKIP
        >>> write_onnx("vgg16.onnx", get_config("vgg16"), state, include_top=True,
        ...            data_format="channels_first", size=(224, 224))  # doctest: +SKIP
        553441829
    """
    g, in_shape = _graph(config, state, include_top, data_format, size)
    what = "logits" if include_top else f"the {_pools(config)[-1][0]} feature map"
    doc = f"{config.name}: {what} from {data_format} images; written by vgg-parity from torchvision's weights"
    model_head, graph_head = _model_head(g, in_shape, _output_shape(config, include_top, data_format), doc)
    tensors = [_tensor_parts(name, array) for name, array in g.constants]
    chunks = [(_length_field(_GRAPH_INITIALIZER, len(head) + len(data)) + head, data) for head, data in tensors]
    graph_length = len(graph_head) + sum(len(key) + len(data) for key, data in chunks)
    with open(path, "wb") as fh:
        fh.write(model_head)
        fh.write(_length_field(_MODEL_GRAPH, graph_length))
        fh.write(graph_head)
        for key, data in chunks:
            fh.write(key)
            fh.write(data)
        return fh.tell()


def block_model(path: str | os.PathLike[str], config: VGGConfig) -> bytes:
    """The file's own nodes and weights up to each ``block{i}_pool``, with those pools as outputs, serialized.

    What the checker runs for the per-block figures: the classifier and its weights are left out.

    Args:
        path: An ONNX file :func:`write_onnx` wrote.
        config: The network it holds.

    Returns:
        The model's bytes (for ``onnxruntime.InferenceSession``); outputs ``block1_pool`` ... in order.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(os.fspath(path))
    graph = model.graph
    pools = _pools(config)
    wanted = {name for name, _ in pools}
    end = 0
    while wanted and end < len(graph.node):
        wanted.discard(graph.node[end].output[0])
        end += 1
    del graph.node[end:]
    used = {name for node in graph.node for name in node.input}
    for i in reversed(range(len(graph.initializer))):
        if graph.initializer[i].name not in used:
            del graph.initializer[i]
    del graph.output[:]
    graph.output.extend(
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", channels, f"h{i}", f"w{i}"])
        for i, (name, channels) in enumerate(pools, start=1)
    )
    return model.SerializeToString()


def _pools(config: VGGConfig) -> list[tuple[str, int]]:
    """Each max pool's node name (``block{b}_pool``) and channels, in order."""
    pools, channels = [], config.in_channels
    for spec in layer_plan(config, include_top=False):
        if spec.kind == "conv":
            channels = spec.out_features
        elif spec.kind == "pool":
            pools.append((spec.keras_name, channels))
    return pools

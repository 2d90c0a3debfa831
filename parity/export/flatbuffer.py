"""The fp32 TFLite file, written straight from the layer plan and the converted arrays.

The same walk that builds both frameworks' models and the name map
(:func:`parity.core.config.layer_plan`) emits the file's operators, with
LiteRT's own flatbuffer schema (``ai_edge_litert.schema_py_generated``):

- each convolution is a ``CONV_2D`` (VGG's 3x3, stride 1, ``SAME``: torch's
  padding of 1; AlexNet's first, torch's ``PAD`` then ``VALID`` with stride 4)
  with its ReLU fused, its filter stored as ``[out, kh, kw, in]`` (the
  layout ``CONV_2D`` reads) and batch norm, where there is one, folded into
  filter and bias in float64 before one rounding to float32;
- each max pool a ``MAX_POOL_2D`` (torch's window and stride, ``VALID``: torch's floor);
- the adaptive average pool nothing where it is the identity (224 px), an
  ``AVERAGE_POOL_2D`` where it tiles the map evenly, and otherwise a matrix
  folded into fc1 (both are linear), so that no pool op is left;
- the classifier a ``RESHAPE`` to ``[-1, H*W*C]`` and one ``FULLY_CONNECTED``
  per layer, weights stored as ``[out, in]`` (the layout it reads, so nothing
  is transposed at run time) with the ReLUs fused.

The batch is dynamic (shape signature ``-1``; ``resize_tensor_input``, then
``allocate_tensors``, works with XNNPACK). A ``channels_first`` file starts
with one ``TRANSPOSE`` of the input to NHWC (and, without the top, ends with
one back). Each stage's pool output is named ``vgg/block{i}_pool/...`` so the
checker reads the per-block outputs of the file itself.

Nothing here imports TensorFlow or a converter: writing vgg16 takes the
arrays plus one buffer the size of the file. Quantized files still go
through TensorFlow's converter (:func:`parity.export.write.tflite_bytes`),
whose calibration and int8 kernels selection are the library's job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from parity.core.config import VGGConfig, layer_plan
from parity.core.layouts import conv_oihw_to_ohwi, dense_columns_chw_to_hwc
from parity.export.folding import FeatureLayer, feature_layers

__all__ = ["ALIGNMENT", "adaptive_pool_matrix", "write_tflite"]

#: Byte alignment of every weight buffer in the file (what TensorFlow's converter uses; SIMD loads want it).
ALIGNMENT = 16


def adaptive_pool_matrix(size: int, out: int) -> np.ndarray:
    """``torch.nn.AdaptiveAvgPool1d``'s ``(out, size)`` averaging matrix along one axis, in float64.

    Output ``i`` averages inputs ``floor(i * size / out)`` to ``ceil((i + 1) * size / out)`` (exclusive),
    torch's windows; the 2-D pool is the outer product of two of these.
    """
    m = np.zeros((out, size))
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


class _Graph:
    """The tensors, buffers and operators of one subgraph, as LiteRT's schema objects."""

    def __init__(self, batch_shape: Sequence[int]) -> None:
        from ai_edge_litert import schema_py_generated as schema

        self.s = schema
        self.tensors: list = []
        self.buffers: list = [schema.BufferT()]  # buffer 0: the empty sentinel every file has
        self.operators: list = []
        self.codes: list[int] = []
        self.weight_bytes = 0
        self.batch_shape = list(batch_shape)

    def constant(self, name: str, array: np.ndarray) -> int:
        """A read-only tensor holding ``array`` (float32 or int32)."""
        array = np.ascontiguousarray(array)
        buffer = _AlignedBuffer(self.s)
        buffer.data = array
        self.buffers.append(buffer)
        self.weight_bytes += array.nbytes + ALIGNMENT
        kind = self.s.TensorType.FLOAT32 if array.dtype == np.float32 else self.s.TensorType.INT32
        return self._tensor(name, list(array.shape), kind, len(self.buffers) - 1, None)

    def activation(self, name: str, shape: Sequence[int]) -> int:
        """A float32 tensor computed at run time; its first axis is the (dynamic) batch."""
        return self._tensor(name, [1, *shape[1:]], self.s.TensorType.FLOAT32, 0, [-1, *shape[1:]])

    def _tensor(self, name: str, shape: list[int], kind: int, buffer: int, signature: list[int] | None) -> int:
        t = self.s.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), shape, kind, buffer
        t.shapeSignature = signature
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, code: int, inputs: Sequence[int], outputs: Sequence[int], options_type: int = 0, options=None) -> None:
        """Appends an operator (``code`` a ``BuiltinOperator``)."""
        if code not in self.codes:
            self.codes.append(code)
        o = self.s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.codes.index(code), list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.operators.append(o)


class _AlignedBuffer:
    """A schema ``BufferT`` whose bytes start at an :data:`ALIGNMENT`-byte boundary and are copied once."""

    def __init__(self, schema) -> None:
        self.s = schema
        self.data: np.ndarray | None = None

    def Pack(self, builder) -> int:  # noqa: N802 (the schema's method name)
        raw = memoryview(self.data).cast("B")  # type: ignore[arg-type]
        builder.StartVector(1, len(raw), ALIGNMENT)
        builder.head -= len(raw)
        builder.Bytes[builder.head : builder.head + len(raw)] = raw
        data = builder.EndVector()
        self.s.BufferStart(builder)
        self.s.BufferAddData(builder, data)
        return self.s.BufferEnd(builder)


def _conv(g: _Graph, x: int, shape: list[int], layer: FeatureLayer) -> tuple[int, list[int]]:
    """A ``CONV_2D`` with its ReLU fused; ``kernel`` is torch's OIHW, stored as the ``[out, kh, kw, in]`` it reads.

    torch's padding is ``SAME`` where that pads alike (stride 1, odd kernel, padding ``(kernel - 1) / 2``: every
    VGG convolution); otherwise a ``PAD`` of torch's zeros before a ``VALID`` convolution.
    """
    s = g.s
    name, kernel, k, stride, pad = (
        layer.name,
        np.asarray(layer.kernel, np.float32),
        layer.size,
        layer.stride,
        layer.padding,
    )
    opts = s.Conv2DOptionsT()
    if stride == 1 and k % 2 == 1 and pad == k // 2:
        opts.padding = s.Padding.SAME
    else:
        opts.padding = s.Padding.VALID
        if pad:
            x, shape = _zero_pad(g, x, shape, f"vgg/{name}/Pad", pad)
    opts.strideH = opts.strideW = stride
    opts.dilationHFactor = opts.dilationWFactor = 1
    opts.fusedActivationFunction = s.ActivationFunctionType.RELU
    filt = g.constant(f"vgg/{name}/filter", conv_oihw_to_ohwi(kernel))
    b = g.constant(f"vgg/{name}/bias", np.asarray(layer.bias, np.float32))
    if opts.padding == s.Padding.SAME:
        out_shape = [*shape[:3], kernel.shape[0]]
    else:
        out_shape = [shape[0], (shape[1] - k) // stride + 1, (shape[2] - k) // stride + 1, kernel.shape[0]]
    y = g.activation(f"vgg/{name}/Relu", out_shape)
    g.op(s.BuiltinOperator.CONV_2D, [x, filt, b], [y], s.BuiltinOptions.Conv2DOptions, opts)
    return y, out_shape


def _zero_pad(g: _Graph, x: int, shape: list[int], name: str, pad: int) -> tuple[int, list[int]]:
    """A ``PAD`` of ``pad`` zeros on each side of an NHWC map's height and width."""
    s = g.s
    paddings = g.constant(f"{name}/paddings", np.asarray([[0, 0], [pad, pad], [pad, pad], [0, 0]], np.int32))
    out_shape = [shape[0], shape[1] + 2 * pad, shape[2] + 2 * pad, shape[3]]
    y = g.activation(name, out_shape)
    g.op(s.BuiltinOperator.PAD, [x, paddings], [y], s.BuiltinOptions.PadOptions, s.PadOptionsT())
    return y, out_shape


def _pool(
    g: _Graph, x: int, shape: list[int], name: str, code: int, window: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, list[int]]:
    s = g.s
    opts = s.Pool2DOptionsT()
    opts.padding = s.Padding.VALID
    opts.strideH, opts.strideW = stride
    opts.filterHeight, opts.filterWidth = window
    opts.fusedActivationFunction = s.ActivationFunctionType.NONE
    out_shape = [shape[0], (shape[1] - window[0]) // stride[0] + 1, (shape[2] - window[1]) // stride[1] + 1, shape[3]]
    y = g.activation(name, out_shape)
    g.op(code, [x], [y], s.BuiltinOptions.Pool2DOptions, opts)
    return y, out_shape


def _transpose(g: _Graph, x: int, shape: list[int], name: str, perm: tuple[int, ...]) -> tuple[int, list[int]]:
    out_shape = [shape[p] for p in perm]
    y = g.activation(name, out_shape)
    p = g.constant(f"{name}/perm", np.asarray(perm, np.int32))
    g.op(g.s.BuiltinOperator.TRANSPOSE, [x, p], [y], g.s.BuiltinOptions.TransposeOptions, g.s.TransposeOptionsT())
    return y, out_shape


def _fc1_for_map(config: VGGConfig, kernel: np.ndarray, shape: list[int]) -> tuple[np.ndarray, tuple[int, int] | None]:
    """fc1's ``[out, in]`` kernel for the NHWC map it reads, and the average pool's window where one is needed.

    torch's columns are in C·H·W order of the pooled map, the NHWC map
    flattens in H·W·C order: the columns are reordered once, here. Identity
    pool: nothing more. A pool that tiles the map evenly: an
    ``AVERAGE_POOL_2D`` window. Otherwise the pool's matrix is folded into
    fc1 in float64, and fc1 reads the ``h x w`` map itself.
    """
    _, h, w, c = shape
    grid = config.head_grid
    window = None
    if config.pool_size is not None and (h, w) != grid:
        if h % grid[0] == 0 and w % grid[1] == 0:
            window = (h // grid[0], w // grid[1])
        else:
            pool = np.kron(adaptive_pool_matrix(h, grid[0]), adaptive_pool_matrix(w, grid[1]))  # (p*q, h*w)
            kernel = (kernel.astype(np.float64).reshape(-1, c, grid[0] * grid[1]) @ pool).reshape(len(kernel), -1)
            grid = (h, w)
    return dense_columns_chw_to_hwc(np.asarray(kernel, np.float32), c, *grid), window


def _features(g: _Graph, config: VGGConfig, state: Mapping[str, np.ndarray], x: int, shape: list[int]):
    """Convolutions (batch norm folded in) and max pools, stage by stage; returns the last pool's tensor and shape."""
    for layer in feature_layers(config, state):
        if layer.kind == "conv":
            x, shape = _conv(g, x, shape, layer)
        else:
            window, stride = (layer.size, layer.size), (layer.stride, layer.stride)
            x, shape = _pool(g, x, shape, f"vgg/{layer.name}/MaxPool", g.s.BuiltinOperator.MAX_POOL_2D, window, stride)
    return x, shape


def _classifier(g: _Graph, config: VGGConfig, state: Mapping[str, np.ndarray], x: int, shape: list[int]) -> int:
    """The adaptive pool (folded or as ``AVERAGE_POOL_2D``), the reshape and the ``FULLY_CONNECTED`` layers."""
    s = g.s
    dense = [spec for spec in layer_plan(config) if spec.kind == "dense"]
    kernels = [state[f"{spec.torch_name}.weight"] for spec in dense]  # torch's [out, in]: what FULLY_CONNECTED reads
    kernels[0], window = _fc1_for_map(config, kernels[0], shape)
    if window is not None:
        x, shape = _pool(g, x, shape, "vgg/avgpool/AvgPool", s.BuiltinOperator.AVERAGE_POOL_2D, window, window)
    flat = int(np.prod(shape[1:]))
    y = g.activation("vgg/flatten/Reshape", [shape[0], flat])
    new_shape = g.constant("vgg/flatten/shape", np.asarray([-1, flat], np.int32))
    g.op(s.BuiltinOperator.RESHAPE, [x, new_shape], [y], s.BuiltinOptions.ReshapeOptions, s.ReshapeOptionsT())
    x = y
    for j, (spec, kernel) in enumerate(zip(dense, kernels)):
        opts = s.FullyConnectedOptionsT()
        last = j == len(dense) - 1
        opts.fusedActivationFunction = s.ActivationFunctionType.NONE if last else s.ActivationFunctionType.RELU
        weights = g.constant(f"vgg/{spec.keras_name}/weights", np.asarray(kernel, np.float32))
        bias = g.constant(f"vgg/{spec.keras_name}/bias", np.asarray(state[f"{spec.torch_name}.bias"], np.float32))
        y = g.activation(f"vgg/{spec.keras_name}/{'BiasAdd' if last else 'Relu'}", [shape[0], kernel.shape[0]])
        g.op(s.BuiltinOperator.FULLY_CONNECTED, [x, weights, bias], [y], s.BuiltinOptions.FullyConnectedOptions, opts)
        x = y
    return x


def _model_bytes(g: _Graph, x_in: int, x_out: int):
    """Packs the graph into one buffer sized up front (no regrowth copies); returns a view of the file's bytes."""
    import flatbuffers

    s = g.s
    sub = s.SubGraphT()
    sub.tensors, sub.operators, sub.inputs, sub.outputs, sub.name = g.tensors, g.operators, [x_in], [x_out], b"main"
    signature = s.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = b"serving_default", 0
    signature.inputs, signature.outputs = [s.TensorMapT()], [s.TensorMapT()]
    signature.inputs[0].name, signature.inputs[0].tensorIndex = b"images", x_in
    signature.outputs[0].name, signature.outputs[0].tensorIndex = b"output_0", x_out
    model = s.ModelT()
    model.version, model.description, model.subgraphs, model.buffers = 3, b"vgg-parity", [sub], g.buffers
    model.signatureDefs = [signature]
    model.operatorCodes = []
    for code in g.codes:
        c = s.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
        model.operatorCodes.append(c)
    builder = flatbuffers.Builder(g.weight_bytes + (1 << 20))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return memoryview(builder.Bytes)[builder.Head() :]


def write_tflite(
    path: str | os.PathLike[str],
    config: VGGConfig,
    state: Mapping[str, np.ndarray],
    *,
    include_top: bool,
    data_format: str,
    size: tuple[int, int],
) -> int:
    """Writes the fp32 TFLite file of ``config`` with ``state`` to ``path``.

    Args:
        path: Where to write (the caller renames it into place once checked).
        config: The network.
        state: torchvision's state dict (numpy), as a checkpoint holds it or as
            :func:`parity.convert.to_torch.torch_state_dict_from_keras` reads a converted file back.
        include_top: Whether the file returns logits (else the last feature map).
        data_format: The input's layout (and, without the top, the output's).
        size: The input's ``(height, width)``; the batch stays dynamic.

    Returns:
        The number of bytes written.

    Examples:
        >>> from parity.core.config import get_config
        >>> from parity.core.checkpoint import load_checkpoint
        >>> state, _ = load_checkpoint("vgg11_bn.pth")  # doctest: +SKIP
        >>> write_tflite("vgg11_bn.tflite", get_config("vgg11_bn"), state, include_top=True,
        ...              data_format="channels_last", size=(224, 224))  # doctest: +SKIP
        531468352
    """
    h, w = size
    channels_first = data_format == "channels_first"
    in_shape = [1, config.in_channels, h, w] if channels_first else [1, h, w, config.in_channels]
    g = _Graph(in_shape)
    x_in = x = g.activation("images", in_shape)
    shape = in_shape
    if channels_first:
        x, shape = _transpose(g, x, shape, "vgg/to_nhwc", (0, 2, 3, 1))
    x, shape = _features(g, config, state, x, shape)
    if include_top:
        x = _classifier(g, config, state, x, shape)
    elif channels_first:
        x, shape = _transpose(g, x, shape, "vgg/to_nchw", (0, 3, 1, 2))
    data = _model_bytes(g, x_in, x)
    with open(path, "wb") as fh:
        fh.write(data)
    return len(data)

"""Plants realistic bugs one at a time and checks that the tests catch each; runs every test module alone.

Not part of the test run (pytest collects ``test_*.py`` only). Two commands::

    uv run python -m tests.mutation run [NAME ...]     # plant each bug, run its tests, report killed/survived
    uv run python -m tests.mutation alone [FILE ...]   # each test module in its own pytest process
    uv run python -m tests.mutation list               # the bugs and the tests that must catch them

``run`` never edits the working tree: each mutant is a copy of the repository's sources (without ``.git``
and the virtual environment) with one text replacement, and its tests run in a child process whose
``PYTHONPATH`` and working folder are the copy, so the copy's packages shadow the editable install. The
tests are the default tier without full-size cases (``-m "not extended and not full"``); a mutant is
killed when they fail. Before the mutants, the same selections run unmutated and must pass. Exit status:
0 when every mutant is killed (``run``) or every module passes alone (``alone``), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The tier every mutant must be killed in: the default run without full-size cases.
MARKERS = "not extended and not full"
#: Copied into each mutant's tree: what the tests import or read.
COPIED = ("parity", "vgg_keras", "vgg_torch", "tests", "benchmarks", "docs", "pyproject.toml", "README.md")
#: Not copied from those folders.
IGNORED = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ruff_cache", "*.pyc")


@dataclass(frozen=True)
class Mutant:
    """One planted bug: text replacements in one file, and the tests that must catch it.

    Attributes:
        name: Short identifier.
        area: converter, model, training, preprocessing, safety or export.
        what: The bug, in words.
        path: The file changed, relative to the repository root.
        edits: ``(old, new)`` pairs; each ``old`` must occur exactly once.
        tests: pytest arguments (files, node ids, ``-k``) run against the mutant.
    """

    name: str
    area: str
    what: str
    path: str
    edits: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]


MUTANTS: tuple[Mutant, ...] = (
    # --- model -----------------------------------------------------------------------------------------------
    Mutant(
        "preset_activation_none",
        "model",
        "the presets' default classifier_activation is None instead of softmax",
        "vgg_keras/model.py",
        (
            (
                'classes: int = 1000,\n        classifier_activation: str | Callable[..., object] | None = "softmax",',
                "classes: int = 1000,\n        classifier_activation: str | Callable[..., object] | None = None,",
            ),
        ),
        ("tests/vgg_keras/test_keras_builder.py",),
    ),
    Mutant(
        "build_vgg_activation_none",
        "model",
        "build_vgg's default classifier_activation is None instead of softmax",
        "vgg_keras/model.py",
        (
            (
                'classifier_activation: str | Callable[..., object] | None = "softmax",\n    name: str | None = None,\n'
                "    kernel_initializer",
                "classifier_activation: str | Callable[..., object] | None = None,\n    name: str | None = None,\n"
                "    kernel_initializer",
            ),
        ),
        ("tests/vgg_keras/test_keras_builder.py",),
    ),
    Mutant(
        "maxpool_same_padding",
        "model",
        'max pooling with padding="same" (ceil instead of torch\'s floor at odd sizes)',
        "vgg_keras/model.py",
        (
            (
                "MaxPooling2D((2, 2), strides=(2, 2), data_format",
                'MaxPooling2D((2, 2), strides=(2, 2), padding="same", data_format',
            ),
        ),
        ("tests/parity/report/test_model_parity.py", "-k", "odd"),
    ),
    Mutant(
        "bn_momentum_not_inverted",
        "model",
        "Keras BatchNormalization given torch's momentum 0.1 instead of 1 - 0.1",
        "vgg_keras/model.py",
        (("momentum=1.0 - BN_MOMENTUM_TORCH", "momentum=BN_MOMENTUM_TORCH"),),
        ("tests/vgg_keras/test_keras_builder.py", "tests/vgg_keras/test_batch_norm.py"),
    ),
    Mutant(
        "hidden_dense_no_relu",
        "model",
        "fc1 and fc2 without their ReLU",
        "vgg_keras/model.py",
        (('if spec.keras_name == "predictions" else "relu"', 'if spec.keras_name == "predictions" else None'),),
        ("tests/parity/report/test_model_parity.py", "-k", "odd"),
    ),
    Mutant(
        "dropout_default_0_2",
        "model",
        "the config's dropout default is 0.2 instead of torchvision's 0.5",
        "parity/core/config.py",
        (("    dropout: float = 0.5\n", "    dropout: float = 0.2\n"),),
        ("tests/core/test_config.py", "tests/vgg_keras/test_keras_builder.py", "tests/vgg_torch/test_torch_builder.py"),
    ),
    Mutant(
        "torch_index_skips_pool",
        "model",
        "layer_plan does not count the max pool in torch's features.N numbering",
        "parity/core/config.py",
        (
            (
                'yield LayerSpec("pool", f"block{b}_pool", f"features.{index}", b)\n        index += 1\n',
                'yield LayerSpec("pool", f"block{b}_pool", f"features.{index}", b)\n',
            ),
        ),
        ("tests/core/test_config.py", "tests/vgg_torch/test_torch_builder.py"),
    ),
    Mutant(
        "nan_mask_dropped",
        "model",
        "predictions ignores the images: a NaN pixel gives finite logits in graph mode and predict",
        "vgg_keras/checks.py",
        (
            (
                "return outputs if images is None else nan_rows(images, outputs, self.min_size, self.data_format)",
                "return outputs",
            ),
        ),
        ("tests/vgg_keras/test_input_checks.py",),
    ),
    Mutant(
        "size_assertion_dropped",
        "model",
        "no run-time assertion where the traced shape leaves the size unknown",
        "vgg_keras/checks.py",
        (
            (
                "with tf.control_dependencies([tf.debugging.Assert(ok, [message, shape], summarize=4)]):",
                "with tf.control_dependencies([]):",
            ),
        ),
        ("tests/vgg_keras/test_input_checks.py",),
    ),
    Mutant(
        "xla_size_reshape_dropped",
        "model",
        "no reshape for XLA to resolve where the traced shape leaves the size unknown: XLA runs a too-small input",
        "vgg_keras/checks.py",
        (("x = tf.reshape(x, target, name=_xla_node_name(channels, min_size))", "pass"),),
        ("tests/vgg_keras/test_input_checks.py",),
    ),
    Mutant(
        "direct_call_graph_in_training_mode",
        "model",
        "the graph behind a direct call on TensorFlow runs in training mode: batch norm on the batch's statistics",
        "vgg_keras/vgg_model.py",
        (("functools.partial(super().call, training=False)", "functools.partial(super().call, training=True)"),),
        ("tests/vgg_keras/test_direct_call.py",),
    ),
    Mutant(
        "direct_call_stale_graph",
        "model",
        "a direct call on TensorFlow keeps its graph after quantize replaced the kernels",
        "vgg_keras/vgg_model.py",
        (('if graphs is None or graphs["variables"] != variables:', "if graphs is None:"),),
        ("tests/vgg_keras/test_direct_call.py",),
    ),
    Mutant(
        "jax_direct_call_training_mode",
        "model",
        "the jax.jit behind a direct call on JAX runs in training mode: batch norm on the batch's statistics",
        "vgg_keras/vgg_model.py",
        (
            (
                "self.stateless_call(trainable, non_trainable, x, training=False)",
                "self.stateless_call(trainable, non_trainable, x, training=True)",
            ),
        ),
        ("tests/vgg_keras/test_direct_call.py",),
    ),
    Mutant(
        "walk_keeps_outputs",
        "model",
        "the eager graph walk keeps every layer's output to the end of the call, as Keras' own does",
        "vgg_keras/vgg_model.py",
        (("                    tensors.pop(id(x), None)", "                    pass"),),
        ("tests/vgg_keras/test_direct_call.py",),
    ),
    Mutant(
        "empty_batch_not_padded",
        "model",
        "an empty batch reaches oneDNN's Conv2D, which returns the input's channel count",
        "vgg_keras/checks.py",
        (("    if batch is not None and batch > 0:\n        return x", "    if True:\n        return x"),),
        ("tests/vgg_keras/test_input_checks.py",),
    ),
    # --- converter -------------------------------------------------------------------------------------------
    Mutant(
        "conv_kernel_spatial_flip",
        "converter",
        "conv OIHW -> HWIO swaps kernel height and width (WHIO)",
        "parity/core/layouts.py",
        (("return np.transpose(kernel, (2, 3, 1, 0))", "return np.transpose(kernel, (3, 2, 1, 0))"),),
        ("tests/parity/convert/test_weight_arrays.py",),
    ),
    Mutant(
        "fc1_order_skipped_without_adaptive_pool",
        "converter",
        "fc1's rows not reordered C,H,W -> H,W,C for configs without an adaptive pool (CIFAR)",
        "parity/core/names.py",
        (("            if first_dense:\n", "            if first_dense and config.pool_size is not None:\n"),),
        ("tests/parity/convert/test_weight_arrays.py",),
    ),
    Mutant(
        "bn_mean_var_swapped",
        "converter",
        "batch norm running_mean and running_var swapped in the name map",
        "parity/core/names.py",
        (
            ('WeightMapping(f"{t}.running_mean", k, 2,', 'WeightMapping(f"{t}.running_var", k, 2,'),
            ('WeightMapping(f"{t}.running_var", k, 3,', 'WeightMapping(f"{t}.running_mean", k, 3,'),
        ),
        ("tests/parity/convert/test_weight_arrays.py",),
    ),
    Mutant(
        "unexpected_keys_ignored",
        "converter",
        "the converter silently ignores state-dict keys it does not map",
        "parity/core/names.py",
        (
            (
                "unexpected = [k for k in state_dict if k not in expected and k not in used]",
                "unexpected: list[str] = []",
            ),
        ),
        ("tests/parity/convert/test_weight_arrays.py",),
    ),
    Mutant(
        "keras_to_torch_dense_not_transposed",
        "converter",
        "Keras -> torch leaves the classifier's square kernels untransposed",
        "parity/core/layouts.py",
        (
            (
                '        The torch ``Linear.weight`` (a transposed view).\n    """\n    return kernel.T',
                '        The torch ``Linear.weight`` (a transposed view).\n    """\n    return kernel',
            ),
        ),
        ("tests/parity/convert/test_to_torch.py",),
    ),
    # --- training --------------------------------------------------------------------------------------------
    Mutant(
        "sgd_weight_decay_sign",
        "training",
        "TorchSGD subtracts the coupled weight decay from the gradient instead of adding it",
        "vgg_keras/optimizers.py",
        (
            (
                "gradient = fma(variable, ops.convert_to_tensor(self.torch_weight_decay, dtype=dtype), gradient)",
                "gradient = fma(variable, ops.convert_to_tensor(-self.torch_weight_decay, dtype=dtype), gradient)",
            ),
        ),
        ("tests/vgg_keras/test_optimizers.py",),
    ),
    Mutant(
        "sgd_first_buffer_dampened",
        "training",
        "TorchSGD's first momentum buffer is dampened (torch starts it as the gradient itself)",
        "vgg_keras/optimizers.py",
        (("new_buffer = ops.where(ops.equal(self.iterations, 0), gradient, running)", "new_buffer = running"),),
        ("tests/vgg_keras/test_optimizers.py",),
    ),
    Mutant(
        "steplr_off_by_one",
        "training",
        "StepLR decays one epoch early",
        "vgg_keras/optimizers.py",
        (("ops.floor_divide(epoch, self.step_size)", "ops.floor_divide(epoch + 1, self.step_size)"),),
        ("tests/vgg_keras/test_optimizers.py",),
    ),
    Mutant(
        "kaiming_fan_in",
        "training",
        "convolution kernels initialized with fan_in instead of torchvision's fan_out",
        "vgg_keras/initializers.py",
        (('scale=2.0, mode="fan_out"', 'scale=2.0, mode="fan_in"'),),
        ("tests/vgg_keras/test_initializers.py",),
    ),
    Mutant(
        "last_partial_batch_dropped",
        "training",
        "an epoch drops its last partial batch (torch's DataLoader keeps it)",
        "parity/train/loop.py",
        (("return math.ceil(n / self.batch_size)", "return n // self.batch_size"),),
        ("tests/parity/train/test_cli.py", "tests/parity/report/test_training_parity.py"),
    ),
    Mutant(
        "cifar_normalize_no_std",
        "training",
        "the CIFAR recipe's Normalize((0.5,)*3, (0.5,)*3) forgets to divide by the std",
        "parity/cifar/data.py",
        (("return (x - np.float32(0.5)) / np.float32(0.5)", "return x - np.float32(0.5)"),),
        ("tests/parity/cifar/test_data.py",),
    ),
    Mutant(
        "cifar_label_byte_kept",
        "training",
        "CIFAR-10 binary records read with the label byte as the first pixel",
        "parity/cifar/read.py",
        (
            (
                "return records[:, 1:].reshape(-1, CHANNELS, SIDE, SIDE).copy(), labels",
                "return records[:, :-1].reshape(-1, CHANNELS, SIDE, SIDE).copy(), labels",
            ),
        ),
        ("tests/parity/cifar/test_data.py",),
    ),
    # --- preprocessing ---------------------------------------------------------------------------------------
    Mutant(
        "crop_offset_floor",
        "preprocessing",
        "center-crop offset floored instead of torchvision's round-half-to-even",
        "vgg_keras/resize_crop.py",
        (("crop_top = int(round((padded_h - crop_size) / 2.0))", "crop_top = (padded_h - crop_size) // 2"),),
        ("tests/vgg_keras/test_preprocessing.py",),
    ),
    Mutant(
        "resize_without_antialias_tf",
        "preprocessing",
        "the TensorFlow path's resize is not antialiased",
        "vgg_keras/resize_crop.py",
        (('method="bilinear", antialias=True', 'method="bilinear", antialias=False'),),
        ("tests/vgg_keras/test_preprocessing.py",),
    ),
    Mutant(
        "resize_without_antialias_ops",
        "preprocessing",
        "the keras.ops path's resize (JAX and torch backends) is not antialiased",
        "vgg_keras/resize_crop.py",
        (('interpolation="bilinear", antialias=True', 'interpolation="bilinear", antialias=False'),),
        ("tests/parity/test_backends.py", "-k", "preprocessing_matches"),
    ),
    Mutant(
        "imagenet_std_typo",
        "preprocessing",
        "ImageNet std (0.229, 0.224, 0.225) typed as (0.229, 0.224, 0.224)",
        "parity/core/catalog.py",
        (
            (
                "IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)",
                "IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.224)",
            ),
        ),
        ("tests/vgg_keras/test_preprocessing.py",),
    ),
    # --- safety ----------------------------------------------------------------------------------------------
    Mutant(
        "sidecar_written_in_place",
        "safety",
        "the converted file's sidecar is written in place instead of renamed into place",
        "parity/core/weights_file.py",
        (
            (
                "        self._sidecar = write_temp(\n            sidecar_path(self.target), json.dumps(",
                "        sidecar_path(self.target).write_text(\n            json.dumps(",
            ),
            (
                '"sha256": sha}, indent=2, sort_keys=True) + "\\n"\n        )\n',
                '"sha256": sha}, indent=2, sort_keys=True) + "\\n"\n        )\n        self._sidecar = None\n',
            ),
            ("            os.replace(self._sidecar, sidecar_path(self.target))\n", ""),
        ),
        ("tests/core/test_weights_file.py",),
    ),
    Mutant(
        "checkpoint_unpickled",
        "safety",
        "torch checkpoints loaded with weights_only=False (arbitrary code runs)",
        "parity/core/checkpoint.py",
        (
            (
                'torch.load(p, map_location="cpu", weights_only=True)',
                'torch.load(p, map_location="cpu", weights_only=False)',
            ),
        ),
        ("tests/parity/test_hostile.py", "-k", "code_in_checkpoint or pickled_module"),
    ),
    Mutant(
        "missing_sidecar_accepted",
        "safety",
        "a cached converted file without its sidecar is loaded unchecked",
        "parity/core/weights_file.py",
        (("    elif required:\n", "    elif required and not path.exists():\n"),),
        ("tests/parity/test_hostile.py", "-k", "sidecar"),
    ),
    Mutant(
        "cifar_unpickler_open",
        "safety",
        "the CIFAR pickle reader admits any global",
        "parity/cifar/read.py",
        (
            (
                "        if (module, name) not in self.ALLOWED:\n            raise",
                "        if (module, name) not in self.ALLOWED:\n"
                "            return super().find_class(module, name)\n"
                "            raise",
            ),
        ),
        ("tests/parity/cifar/test_data.py",),
    ),
    # --- export ----------------------------------------------------------------------------------------------
    Mutant(
        "fp32_export_bound_x100",
        "export",
        "the fp32 export bounds loosened 100x",
        "parity/export/check.py",
        (
            (
                "    output_rtol=LOGIT_RTOL,\n    block_rtol=BLOCK_RTOL,",
                "    output_rtol=LOGIT_RTOL * 100,\n    block_rtol=BLOCK_RTOL * 100,",
            ),
        ),
        ("tests/parity/export/test_bounds.py", "tests/parity/export/test_export.py"),
    ),
    Mutant(
        "export_blocks_not_judged",
        "export",
        "an export's intermediate blocks are reported but never judged",
        "parity/export/check.py",
        (
            (
                'bound = tolerance.output_rtol if name == "output" else tolerance.block_rtol',
                'bound = tolerance.output_rtol if name == "output" else None',
            ),
        ),
        ("tests/parity/export/test_bounds.py", "tests/parity/export/test_export.py"),
    ),
    Mutant(
        "logit_rtol_loosened",
        "export",
        "the project's fp32 logit tolerance LOGIT_RTOL loosened from 1e-5 to 1e-3",
        "parity/compare.py",
        (("LOGIT_RTOL: float = 1e-5", "LOGIT_RTOL: float = 1e-3"),),
        ("tests/parity/export/test_bounds.py", "tests/parity/report/test_model_parity.py"),
    ),
    Mutant(
        "tflite_bn_epsilon",
        "export",
        "the TFLite and ONNX writers fold batch norm with Keras' default epsilon 1e-3",
        "parity/export/folding.py",
        (("scale = gamma / np.sqrt(var + BN_EPSILON)", "scale = gamma / np.sqrt(var + 1e-3)"),),
        ("tests/parity/export/test_flatbuffer.py", "tests/parity/export/test_onnx.py"),
    ),
    Mutant(
        "tflite_fc1_columns_unordered",
        "export",
        "the fp32 TFLite writer leaves fc1's columns in torch's C*H*W order",
        "parity/export/flatbuffer.py",
        (
            (
                "return dense_columns_chw_to_hwc(np.asarray(kernel, np.float32), c, *grid), window",
                "return np.asarray(kernel, np.float32), window",
            ),
        ),
        ("tests/parity/export/test_flatbuffer.py",),
    ),
    Mutant(
        "tflite_fixed_batch",
        "export",
        "the fp32 TFLite writer gives activations no dynamic batch (no shape signature)",
        "parity/export/flatbuffer.py",
        (
            (
                "return self._tensor(name, [1, *shape[1:]], self.s.TensorType.FLOAT32, 0, [-1, *shape[1:]])",
                "return self._tensor(name, [1, *shape[1:]], self.s.TensorType.FLOAT32, 0, None)",
            ),
        ),
        ("tests/parity/export/test_flatbuffer.py",),
    ),
    # --- AlexNet's geometry -------------------------------------------------------------------------------------
    Mutant(
        "torch_conv_stride_ignored",
        "model",
        "the torch builder gives every convolution stride 1 (AlexNet's first has stride 4)",
        "vgg_torch/model.py",
        (("stride=spec.stride,\n", "stride=1,\n"),),
        ("tests/vgg_torch/test_alexnet.py",),
    ),
    Mutant(
        "classifier_dropout_after_always",
        "model",
        "the plan puts AlexNet's dropout after each hidden ReLU (VGG's place), renumbering its classifier",
        "parity/core/config.py",
        (('if config.classifier_dropout == "before":', "if False:"),),
        ("tests/core/test_schema_geometry.py",),
    ),
    Mutant(
        "keras_same_padding_strided",
        "model",
        "Keras pads AlexNet's stride-4 convolution with 'same' (3 and 4 zeros, not torch's 2 and 2)",
        "vgg_keras/model.py",
        (
            (
                "if spec.stride == 1 and spec.kernel % 2 == 1 and spec.padding == spec.kernel // 2:",
                "if spec.kernel % 2 == 1:",
            ),
        ),
        ("tests/vgg_keras/test_alexnet.py", "tests/parity/report/test_alexnet_parity.py"),
    ),
    Mutant(
        "export_pool_stride_is_window",
        "export",
        "the TFLite writer strides each max pool by its window (3), not torch's stride (2)",
        "parity/export/flatbuffer.py",
        (
            (
                "window, stride = (layer.size, layer.size), (layer.stride, layer.stride)",
                "window, stride = (layer.size, layer.size), (layer.size, layer.size)",
            ),
        ),
        ("tests/parity/export/test_alexnet_export.py",),
    ),
    Mutant(
        "openvino_predict_bf16",
        "model",
        "Keras' OpenVINO backend's predict compiles in the CPU plugin's default precision (bf16 where the CPU has it)",
        "vgg_keras/openvino_precision.py",
        (("    if not isinstance(trainer.ov, _Float32OpenVINO):", "    if False:"),),
        ("tests/parity/test_backends.py::test_modes_on_other_backends[openvino]",),
    ),
    Mutant(
        "openvino_ir_fp16",
        "export",
        "the OpenVINO IR is saved with openvino.save_model's default, weights compressed to fp16",
        "parity/export/openvino_ir.py",
        (("ov.save_model(model, xml, compress_to_fp16=False)", "ov.save_model(model, xml)"),),
        ("tests/parity/export/test_openvino.py",),
    ),
    Mutant(
        "openvino_ir_checked_in_bf16",
        "export",
        "the OpenVINO IR is verified with the CPU plugin's default precision (bf16 where the CPU has it)",
        "parity/export/openvino_ir.py",
        (('PRECISION_CONFIG: dict[str, str] = {"INFERENCE_PRECISION_HINT": "f32"}', "PRECISION_CONFIG = {}"),),
        ("tests/parity/export/test_openvino.py",),
    ),
    Mutant(
        "torch_conv_unpadded",
        "model",
        "the torch backend's direct convolution drops the 'same' padding",
        "vgg_keras/torch_kernels.py",
        (('    if padding == "same":\n        pad = tuple(', '    if padding == "never":\n        pad = tuple('),),
        ("tests/parity/test_backends.py", "-k", "kernel_copies"),
    ),
    Mutant(
        "torch_kernel_hwio_memory",
        "model",
        "the torch backend's kernels left in HWIO memory (a kernel copy on every call)",
        "vgg_keras/torch_kernels.py",
        (("return value.permute(*HWIO_TO_OHWI).contiguous().permute(*OHWI_TO_HWIO)", "return value"),),
        ("tests/parity/test_backends.py", "-k", "kernel_copies"),
    ),
    Mutant(
        "precision_no_floor",
        "parity",
        "reduced-precision parity accepts a model left in fp32 (no floor)",
        "parity/precision.py",
        (("FLOOR_ULPS: float = 0.5", "FLOOR_ULPS: float = 0.0"),),
        ("tests/parity/test_precision.py",),
    ),
    Mutant(
        "precision_loose_bound",
        "parity",
        "reduced-precision bounds 8x looser (bf16 passes as fp16)",
        "parity/precision.py",
        (("LAMBDA: float = 2.0", "LAMBDA: float = 16.0"),),
        ("tests/parity/test_precision.py", "-k", "derived_bounds"),
    ),
)


def _default_sigint() -> None:
    """In the child: SIGINT as a terminal gives it, even when this script runs in the background (ignored there)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _copy_tree(dest: Path) -> None:
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=IGNORED)
        elif src.exists():
            shutil.copy2(src, dest / name)


def _apply(tree: Path, mutant: Mutant) -> None:
    """Applies a mutant's edits to the copy in ``tree``; raises if an ``old`` text is not there exactly once."""
    path = tree / mutant.path
    text = path.read_text()
    for old, new in mutant.edits:
        count = text.count(old)
        if count != 1:
            raise SystemExit(f"{mutant.name}: the text to replace occurs {count} times in {mutant.path}: {old!r}")
        text = text.replace(old, new)
    path.write_text(text)


def _pytest(tree: Path, args: Sequence[str], markers: str, timeout: float) -> tuple[int, float, str]:
    """Runs pytest on ``tree``'s tests in a child process; returns the exit status, seconds and the last lines."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", markers, *args]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            preexec_fn=_default_sigint,
        )
    except subprocess.TimeoutExpired:
        return -1, time.perf_counter() - start, "timed out"
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
    return proc.returncode, time.perf_counter() - start, tail


def _verdict(code: int) -> str:
    # pytest: 0 passed, 1 tests failed, 2 interrupted or collection error, 5 nothing collected.
    return {0: "survived", 1: "killed", 2: "killed (collection error)"}.get(code, f"error (exit {code})")


def run_mutants(names: Sequence[str], *, baseline: bool, timeout: float) -> int:
    """Plants each mutant in a fresh copy and runs its tests; prints a table; returns the exit status."""
    chosen = [m for m in MUTANTS if not names or m.name in names]
    unknown = set(names) - {m.name for m in MUTANTS}
    if unknown:
        raise SystemExit(f"Unknown mutants: {', '.join(sorted(unknown))}; see `python -m tests.mutation list`")
    with tempfile.TemporaryDirectory(prefix="vgg-mutation-") as tmp:
        clean = Path(tmp) / "clean"
        _copy_tree(clean)
        if baseline:
            for args in dict.fromkeys(m.tests for m in chosen):
                code, seconds, tail = _pytest(clean, args, MARKERS, timeout)
                print(f"baseline {' '.join(args)}: exit {code} in {seconds:.0f} s", flush=True)
                if code != 0:
                    print(tail)
                    print("The unmutated tests must pass first.", file=sys.stderr)
                    return 1
        results = []
        for m in chosen:
            tree = Path(tmp) / m.name
            _copy_tree(tree)
            _apply(tree, m)
            code, seconds, tail = _pytest(tree, m.tests, MARKERS, timeout)
            shutil.rmtree(tree)
            verdict = _verdict(code)
            results.append((m, verdict, seconds))
            print(f"{m.name:<40} {verdict:<26} {seconds:5.0f} s   {tail.splitlines()[-1] if tail else ''}", flush=True)
    killed = sum(v.startswith("killed") for _, v, _ in results)
    print(f"\n{killed}/{len(results)} killed ({MARKERS})")
    for m, verdict, _ in results:
        if not verdict.startswith("killed"):
            print(f"  {verdict}: {m.name} ({m.what})")
    return 0 if killed == len(results) else 1


def test_modules() -> list[str]:
    """Every test module, relative to the repository root."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py"))


def run_alone(files: Sequence[str], *, markers: str, timeout: float) -> int:
    """Runs each test module in its own pytest process; prints one line each; returns the exit status."""
    failed = []
    for f in files or test_modules():
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", markers, f]
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd,
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                preexec_fn=_default_sigint,
            )
            code, last = proc.returncode, (proc.stdout.strip().splitlines() or [""])[-1]
        except subprocess.TimeoutExpired:
            code, last = -1, "timed out"
        ok = code in (0, 5)  # 5: every test of the module is outside the selected tiers
        if not ok:
            failed.append(f)
        print(f"{'ok  ' if ok else 'FAIL'} {f:<60} {time.perf_counter() - start:5.0f} s  {last}", flush=True)
    total = len(files or test_modules())
    print(f"\n{total - len(failed)} of {total} modules pass alone ({markers})")
    for f in failed:
        print(f"  failed alone: {f}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``run``, ``alone`` or ``list``."""
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="plant each bug in a copy and run its tests")
    run.add_argument("names", nargs="*", help="mutants to run (default: all)")
    run.add_argument("--no-baseline", action="store_true", help="skip the unmutated runs")
    run.add_argument("--timeout", type=float, default=900, help="seconds per pytest run (default: 900)")
    alone = sub.add_parser("alone", help="run each test module in its own process")
    alone.add_argument("files", nargs="*", help="test modules (default: every tests/**/test_*.py)")
    alone.add_argument("-m", dest="markers", default="not extended", help="tier (default: 'not extended')")
    alone.add_argument("--timeout", type=float, default=1800, help="seconds per module (default: 1800)")
    sub.add_parser("list", help="print the mutants")
    args = parser.parse_args(argv)
    if args.command == "list":
        for m in MUTANTS:
            print(f"{m.name:<40} {m.area:<14} {m.path:<32} {' '.join(m.tests)}\n    {m.what}")
        return 0
    if args.command == "run":
        return run_mutants(args.names, baseline=not args.no_baseline, timeout=args.timeout)
    return run_alone(args.files, markers=args.markers, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())

"""torch, TensorFlow, onnxruntime and OpenVINO in one process: the orders that work, and the one that is refused.

Importing torchvision after TensorFlow aborts the interpreter (``LLVM ERROR:
inconsistency in registered CommandLine options``, tensorflow/tensorflow#124205),
whether onnxruntime or OpenVINO is loaded or not; onnxruntime and OpenVINO
themselves may come before, between or after the two. Each order runs in its
own child process, since a wrong one kills the interpreter rather than raising.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import run_python

#: A child that imports the runtimes in the order given, then runs a small VGG in torch, in onnxruntime (an ONNX
#: file written from the same weights) and a convolution in TensorFlow, and prints the ONNX file's difference.
CHILD = r"""
import sys
for name in sys.argv[1].split(","):
    __import__(name)
    if name == "torch":
        import torchvision
import numpy as np
import tensorflow as tf
from parity.convert.random_weights import randomized_state_dict
from parity.convert.to_keras import torch_reference
from parity.core.config import PRESETS
from parity.export.check import onnx_session
from parity.export.onnx_graph import write_onnx

config = PRESETS["vgg11_bn"].replace(stages=((4,), (8,), (8,), (8,), (8,)), hidden=(16,), num_classes=5)
state = randomized_state_dict(config, seed=0)
write_onnx(sys.argv[2], config, state, include_top=True, data_format="channels_first", size=(64, 64))
x = np.random.default_rng(0).standard_normal((2, 3, 64, 80), dtype=np.float32)
ref = torch_reference(state, config, x, True)["logits"]
got = onnx_session(sys.argv[2]).run(None, {"images": x})[0]
tf.nn.conv2d(tf.ones((1, 4, 4, 1)), tf.ones((3, 3, 1, 1)), 1, "SAME").numpy()
print("relative difference", float(np.max(np.abs(got - ref)) / np.max(np.abs(ref))))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "order",
    ["onnxruntime,torch,tensorflow", "torch,tensorflow,onnxruntime"],
    ids=["onnxruntime-first", "onnxruntime-last"],
)
def test_runtimes_work_together_with_torch_before_tensorflow(order: str, tmp_path: Path) -> None:
    done = run_python(CHILD, order, os.fspath(tmp_path / "m.onnx"), env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.split()[-1]) <= 1e-5


#: The same with OpenVINO: the IR converted from that ONNX graph, compiled by the CPU plugin (fp32), beside torch
#: and a TensorFlow convolution.
OPENVINO_CHILD = r"""
import sys
for name in sys.argv[1].split(","):
    __import__(name)
    if name == "torch":
        import torchvision
import numpy as np
import tensorflow as tf
from parity.convert.random_weights import randomized_state_dict
from parity.convert.to_keras import torch_reference
from parity.core.config import PRESETS
from parity.export.openvino_ir import compiled_model, write_openvino

config = PRESETS["vgg11_bn"].replace(stages=((4,), (8,), (8,), (8,), (8,)), hidden=(16,), num_classes=5)
state = randomized_state_dict(config, seed=0)
write_openvino(sys.argv[2], config, state, include_top=True, data_format="channels_first", size=(64, 64))
x = np.random.default_rng(0).standard_normal((2, 3, 64, 80), dtype=np.float32)
ref = torch_reference(state, config, x, True)["logits"]
got = compiled_model(sys.argv[2])(x)["output"]
tf.nn.conv2d(tf.ones((1, 4, 4, 1)), tf.ones((3, 3, 1, 1)), 1, "SAME").numpy()
print("relative difference", float(np.max(np.abs(got - ref)) / np.max(np.abs(ref))))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "order",
    ["openvino,torch,tensorflow", "torch,tensorflow,openvino"],
    ids=["openvino-first", "openvino-last"],
)
def test_openvino_works_with_torch_before_tensorflow(order: str, tmp_path: Path) -> None:
    done = run_python(OPENVINO_CHILD, order, os.fspath(tmp_path / "m.xml"), env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.split()[-1]) <= 1e-5


@pytest.mark.slow
def test_export_refuses_to_load_torchvision_after_tensorflow(tmp_path: Path) -> None:
    """A process that loaded TensorFlow first gets one line and exit 2 from the ONNX export, not an abort."""
    checkpoint = tmp_path / "m.pth"
    checkpoint.write_bytes(b"never read")
    code = (
        "import sys, tensorflow\n"
        "from parity.export import main\n"
        f"sys.exit(main(['vgg11_bn', '--checkpoint', {os.fspath(checkpoint)!r}, '--format', 'onnx', "
        f"'--output', {os.fspath(tmp_path / 'm.onnx')!r}]))\n"
    )
    done = run_python(code, env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 2, done.stderr[-3000:]
    assert "TensorFlow is already loaded" in done.stderr and "LLVM ERROR" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth"]

"""Keras' JAX and torch backends, each in its own process (a process holds one backend).

* Execution modes: on the torch backend the adaptive pool is torch's own
  kernel; on JAX it is the same averaging-matrix code as on TensorFlow, run
  under ``jax.jit`` by ``predict`` and ``fit``. A tiny batch-norm VGG runs
  against torch in both data formats at three sizes in a row (eagerly and
  through ``predict``), with ``fit``/``evaluate``, and a CIFAR-style config.
* Without TensorFlow: a child process in which ``import tensorflow`` fails
  builds, loads (``weights=PATH`` and ``weights="converted"``), runs and
  preprocesses, in both data formats, with and without the classifier.
* The parity suite per backend (full tier): all eight presets at 224x224,
  32x32 and 200x320 in both data formats, through ``python -m parity.report
  --backend``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import vgg_keras
from parity.compare import LOGIT_RTOL
from parity.convert.random_weights import randomized_state_dict
from parity.convert.weight_arrays import write_keras_weights
from parity.core.catalog import get_weights_record
from parity.core.config import PRESETS, VGGConfig
from parity.core.weights_file import sidecar_path, stage_converted_weights
from tests.conftest import CIFAR, TINY_BN, child_result, run_python, tensorflow_blocked
from vgg_keras import vgg_model

BACKENDS = ["torch", "jax", "openvino"]

_MODES_SCRIPT = """
import os, sys
import torch, torchvision  # before anything that may load TensorFlow
import keras, numpy as np
from parity.compare import build_pair, compare_outputs, keras_forward, torch_forward
from parity.core.config import VGGConfig
from parity.convert.random_weights import randomized_state_dict

assert keras.backend.backend() == os.environ["KERAS_BACKEND"], keras.backend.backend()
cfg = VGGConfig(stages=((4,), (8, 8), (8,)), hidden=(16, 16), num_classes=7, batch_norm=True, name="tiny_bn7")
cifar = VGGConfig.from_dict(__import__("json").loads(os.environ["CIFAR_CONFIG"]))
sizes = [(32, 32), (64, 48), (200, 72)]  # 4x4, 8x6 and 25x9 maps before the 7x7 pool
for data_format in ("channels_last", "channels_first"):
    keras.config.set_image_data_format(data_format)
    reference, model = build_pair(cifar, randomized_state_dict(cifar, seed=2))
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32), dtype=np.float32)
    for mode in ("eager", "predict"):
        compare_outputs(torch_forward(reference, x), keras_forward(model, x, mode=mode)).check()
    reference, model = build_pair(cfg, randomized_state_dict(cfg, seed=1))
    for size in sizes:
        x = np.random.default_rng(size[0]).standard_normal((2, 3, *size), dtype=np.float32)
        expected = torch_forward(reference, x)
        for mode in ("eager", "predict"):
            compare_outputs(expected, keras_forward(model, x, mode=mode)).check()
    if keras.backend.backend() == "openvino":
        # On every CPU, not only those where bf16 would show up in the figures above.
        shape = (1, 32, 32, 3) if data_format == "channels_last" else (1, 3, 32, 32)
        model.predict(np.zeros(shape, np.float32), verbose=0)
        precision = model.ov_compiled_model.get_property("INFERENCE_PRECISION_HINT")
        assert precision == __import__("openvino").Type.f32, precision
        continue  # inference only: Keras' OpenVINO backend has no fit
    model.compile(keras.optimizers.SGD(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for size in sizes:
        shape = (2, *size, 3) if data_format == "channels_last" else (2, 3, *size)
        x = np.random.default_rng(size[1]).standard_normal(shape, dtype=np.float32)
        y = np.array([1, 5])
        before = model.evaluate(x, y, verbose=0)
        losses = model.fit(x, y, epochs=2, batch_size=2, verbose=0).history["loss"]
        after = model.evaluate(x, y, verbose=0)
        assert np.all(np.isfinite(losses)) and after != before, (size, before, after, losses)
print("backend ok")
"""


def _needs(backend: str) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"Keras' {backend} backend needs {backend}, which is not installed here")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.slow
def test_modes_on_other_backends(backend: str) -> None:
    _needs(backend)
    env = {"KERAS_BACKEND": backend, "CIFAR_CONFIG": json.dumps(CIFAR.to_dict())}
    result = run_python(_MODES_SCRIPT, env=env)
    assert result.returncode == 0 and "backend ok" in result.stdout, result.stderr[-3000:]


# --------------------------------------------------------------------------- #
# Without TensorFlow
# --------------------------------------------------------------------------- #
_TF_FREE_SCRIPT = """
import json, os, sys
import numpy as np
import keras
import torch  # the reference; not needed by vgg_keras

import vgg_keras
from parity.compare import compare_outputs, torch_forward
from parity.core.config import PRESETS, VGGConfig
from vgg_keras.preprocessing import preprocess_images, preprocessor_for

assert keras.backend.backend() == os.environ["KERAS_BACKEND"]
spec = json.loads(os.environ["SPEC"])
state = dict(np.load(spec["state"]))
arch = spec["arch"]
config = VGGConfig.from_dict(spec["config"])
reference = __import__("vgg_torch").build_vgg(config, init_weights=False)
reference.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
x = np.random.default_rng(0).standard_normal((2, 3, *spec["size"]), dtype=np.float32)
expected = torch_forward(reference, x)
features = expected[f"block{len(config.stages)}"]
for data_format in ("channels_last", "channels_first"):
    keras.config.set_image_data_format(data_format)
    xin = x if data_format == "channels_first" else x.transpose(0, 2, 3, 1)
    for weights in spec["weights"]:
        model = vgg_keras.build_vgg(config, weights=weights, classifier_activation=None)
        for run in (lambda: model(xin), lambda: model.predict(xin, verbose=0)):
            got = keras.ops.convert_to_numpy(run())
            report = compare_outputs({"logits": expected["logits"]}, {"logits": got})
            report.check()
        base = vgg_keras.build_vgg(config, weights=weights, include_top=False, pooling="avg")
        pooled = keras.ops.convert_to_numpy(base.predict(xin, verbose=0))
        compare_outputs({"pooled": features.mean(axis=(2, 3))}, {"pooled": pooled}).check()
        print(data_format, weights, "max rel", report.max_rel)
    sides = [(300, 200), (97, 411)]
    images = [np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8) for i, (h, w) in enumerate(sides)]
    if data_format == "channels_first":
        images = [im.transpose(2, 0, 1) for im in images]
    pixels = preprocess_images(images, arch="vgg16", data_format=data_format)
    layer_pixels = keras.ops.convert_to_numpy(preprocessor_for("vgg16", data_format=data_format)(images[0]))
    assert pixels.shape[1:] == ((224, 224, 3) if data_format == "channels_last" else (3, 224, 224)), pixels.shape
    assert np.array_equal(pixels[0], layer_pixels)
    np.save(os.path.join(spec["out"], f"pixels_{data_format}.npy"), pixels)
for name in spec.get("build_all", []):
    m = getattr(vgg_keras, name)(weights=None)
    assert m.count_params() > 1e8, name
loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
assert not loaded, loaded
print("tensorflow-free ok")
"""


def _write_converted(config: VGGConfig, state: dict[str, np.ndarray], path: Path) -> Path:
    """A converted file and its sidecar, as ``python -m parity.convert`` writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with stage_converted_weights(path) as staged:
        write_keras_weights(state, config, staged.path)
        staged.commit(
            {"arch": config.name, "config": config.to_dict(), "include_top": True, "source": {"kind": "test"}}
        )
    return path


def _run_without_tensorflow(backend: str, spec: dict[str, object], tmp_path: Path, keras_home: Path) -> str:
    env, log = tensorflow_blocked(tmp_path)
    env |= {"KERAS_BACKEND": backend, "KERAS_HOME": os.fspath(keras_home), "SPEC": json.dumps(spec)}
    result = run_python(_TF_FREE_SCRIPT, env=env)
    attempts = log.read_text() if log.exists() else ""
    assert not attempts, f"something imported tensorflow on the {backend} backend:\n{attempts[-3000:]}"
    assert result.returncode == 0 and "tensorflow-free ok" in result.stdout, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.slow
def test_tiny_model_without_tensorflow(backend: str, tmp_path: Path, _isolated_keras_home: Path) -> None:
    """A file written here (TensorFlow backend) loads, runs and preprocesses where TensorFlow cannot load."""
    _needs(backend)
    state = randomized_state_dict(TINY_BN, seed=5)
    np.savez(tmp_path / "state.npz", **state)
    path = _write_converted(TINY_BN, state, tmp_path / "tiny_bn.weights.h5")
    spec = {"arch": None, "config": TINY_BN.to_dict(), "state": os.fspath(tmp_path / "state.npz"), "size": [48, 40],
            "weights": [os.fspath(path)], "out": os.fspath(tmp_path)}  # fmt: skip
    out = _run_without_tensorflow(backend, spec, tmp_path, _isolated_keras_home)
    assert out.count("max rel") == 2


@pytest.mark.full
@pytest.mark.extended
@pytest.mark.parametrize("backend", BACKENDS)
def test_presets_without_tensorflow(backend: str, tmp_path: Path, _isolated_keras_home: Path) -> None:
    """vgg11_bn from ``python -m parity.convert``, by path and as ``"converted"``; all eight presets build."""
    _needs(backend)
    arch = "vgg11_bn"
    config = PRESETS[arch]
    cached = _isolated_keras_home / "models" / get_weights_record(arch).keras_filename
    cached.parent.mkdir(parents=True)
    converted = tmp_path / f"{arch}.weights.h5"
    result = run_python(
        "",
        "-m",
        "parity.convert",
        arch,
        "--init",
        "random-all",
        "--seed",
        "3",
        "--output",
        os.fspath(converted),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The CLI keeps random weights out of the cache; put them where weights="converted" looks, as a user could.
    shutil.copy(converted, cached)
    shutil.copy(sidecar_path(converted), sidecar_path(cached))
    np.savez(tmp_path / "state.npz", **randomized_state_dict(config, seed=3))
    spec = {"arch": arch, "config": config.to_dict(), "state": os.fspath(tmp_path / "state.npz"),
            "size": [64, 96], "weights": [os.fspath(cached), "converted"], "out": os.fspath(tmp_path),
            "build_all": ["VGG11", "VGG11_BN", "VGG13", "VGG13_BN", "VGG16", "VGG16_BN", "VGG19",
                          "VGG19_BN"]}  # fmt: skip
    out = _run_without_tensorflow(backend, spec, tmp_path, _isolated_keras_home)
    assert out.count("max rel") == 4


# --------------------------------------------------------------------------- #
# Preprocessing on every backend
# --------------------------------------------------------------------------- #
_PIXELS_SCRIPT = """
import json, os
import numpy as np
import keras
from vgg_keras.preprocessing import preprocess_images

spec = json.loads(os.environ["SPEC"])
images = dict(np.load(spec["images"]))
out = {}
for key, image in images.items():
    out[key + "/uint8"] = preprocess_images(image)
    out[key + "/float32"] = preprocess_images(image.astype(np.float32))
np.savez(spec["out"], **out)
print("pixels ok", keras.backend.backend())
"""

#: Measured per backend against torchvision's tensor path, photos and synthetic
#: sizes, in [0, 1] pixel units (see docs): the torch backend resizes with
#: torch's own antialiased kernel (torchvision's), JAX with
#: ``jax.image.scale_and_translate`` (the same triangle kernel as TensorFlow's).
#: Both stay within the TensorFlow path's bounds, which are the bounds asserted.


def _pixel_errors(backend: str, tmp_path: Path) -> dict[str, tuple[float, float, float]]:
    """Runs the backend's pipeline on every test image.

    Returns:
        ``{key: (uint8 max, uint8 mismatch fraction, float max)}``.
    """
    import torch
    from torchvision.models import VGG16_Weights

    from tests.vgg_keras import test_preprocessing as tp

    images = {key: tp._image(key) for key in tp.IMAGES}
    np.savez(tmp_path / "images.npz", **images)
    spec = {"images": os.fspath(tmp_path / "images.npz"), "out": os.fspath(tmp_path / f"pixels_{backend}.npz")}
    result = run_python(_PIXELS_SCRIPT, env={"KERAS_BACKEND": backend, "SPEC": json.dumps(spec)})
    assert result.returncode == 0 and "pixels ok" in result.stdout, result.stderr[-3000:]
    got = dict(np.load(spec["out"]))
    tv = VGG16_Weights.IMAGENET1K_V1.transforms()
    errors = {}
    for key, image in images.items():
        ref = tp._pixels(tp._tv_tensor(image, tv), tv.mean, tv.std)
        ours = tp._pixels(got[key + "/uint8"], tv.mean, tv.std)
        ref_float = (
            tv(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255)
            .numpy()
            .transpose(1, 2, 0)
        )
        ours_float = got[key + "/float32"]
        float_diff = tp._max_diff(tp._pixels(ours_float, tv.mean, tv.std), tp._pixels(ref_float, tv.mean, tv.std))
        errors[key] = (tp._max_diff(ours, ref), float(np.mean(np.abs(ours - ref) > 1e-6)), float_diff)
    return errors


@pytest.mark.parametrize("backend", [*BACKENDS[:-1], pytest.param("openvino", marks=pytest.mark.extended)])
@pytest.mark.slow
def test_preprocessing_matches_torchvision_on_backend(backend: str, tmp_path: Path) -> None:
    """The same pixels as torchvision on every backend, within the bounds the TensorFlow path meets."""
    _needs(backend)
    from tests.vgg_keras import test_preprocessing as tp

    errors = _pixel_errors(backend, tmp_path)
    worst = {
        name: max(e[i] for e in errors.values()) for i, name in enumerate(["uint8_max", "uint8_mismatch", "float_max"])
    }
    print(f"{backend}: uint8 max {worst['uint8_max'] * 255:.3f} levels, mismatch {worst['uint8_mismatch']:.3%}, "
          f"float max {worst['float_max'] * 255:.4f} levels")  # fmt: skip
    assert worst["uint8_max"] <= tp.TENSOR_PATH_ATOL, errors
    assert worst["uint8_mismatch"] <= tp.TENSOR_PATH_MAX_MISMATCH_FRACTION, errors
    assert worst["float_max"] <= tp.FLOAT_PATH_ATOL, errors


# --------------------------------------------------------------------------- #
# The parity suite per backend
# --------------------------------------------------------------------------- #
@pytest.mark.full
@pytest.mark.extended
@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_suite_on_backend(backend: str, tmp_path: Path) -> None:
    """All eight presets, 224x224, 32x32 and 200x320, both data formats, through the report CLI."""
    _needs(backend)
    from parity.report import main

    argv = ["--backend", backend, "--sizes", "224", "32", "200x320", "--data-format", "channels_last", "channels_first",
            "--mode", "predict", "--batch", "1", "--out-dir", os.fspath(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((tmp_path / "parity_report.json").read_text())
    cases = data["cases"]
    assert len(cases) == len(PRESETS) * 3 * 2 and {c["backend"] for c in cases} == {backend}
    assert all(c["passed"] and c["max_rel"] <= LOGIT_RTOL for c in cases), [c for c in cases if not c["passed"]]


# --------------------------------------------------------------------------- #
# The torch backend computes in torch's layout
# --------------------------------------------------------------------------- #
_TORCH_LAYOUT_SCRIPT = """
import json, os
import torch, torchvision
import keras, numpy as np
from torch.profiler import ProfilerActivity, profile
import vgg_keras
from vgg_keras import torch_kernels
from parity.compare import build_pair, compare_outputs, keras_forward, torch_forward
from parity.convert.random_weights import randomized_state_dict
from parity.core.config import VGGConfig

config = VGGConfig.from_dict(json.loads(os.environ["CONFIG"]))
x = np.random.default_rng(0).standard_normal((2, 40, 48, 3), dtype=np.float32)

def copies(model):
    model.predict_on_batch(x)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        model.predict_on_batch(x)
    # Copies of 0-d tensors (the NaN mask's scalar) move no data; any copy of an array counts.
    return [(e.key, str(e.input_shapes)) for e in prof.key_averages(group_by_input_shape=True)
            if e.key in ("aten::copy_", "aten::clone", "aten::contiguous") and any(e.input_shapes)]

out = {}
model = vgg_keras.build_vgg(config, classifier_activation=None)
out["layers"] = [layer.name for layer in model.layers[:3]]
out["conv_format"] = model.get_layer("block1_conv1").data_format
kernel = model.get_layer("block2_conv1").kernel.value
out["kernel_shape"], out["kernel_strides"] = list(kernel.shape), list(kernel.stride())
out["copies"] = copies(model)
out["weights"] = [[w.path, list(w.shape)] for w in model.weights]
features = vgg_keras.build_vgg(config, include_top=False)
out["feature_layers"] = [layer.name for layer in features.layers[-2:]]
out["feature_shape"] = list(features(x).shape)
reference, paired = build_pair(config, randomized_state_dict(config, seed=4))
nchw = x.transpose(0, 3, 1, 2)
report = compare_outputs(torch_forward(reference, nchw), keras_forward(paired, nchw))
out["max_rel"] = report.max_rel
# The check bites: kernels left in Keras' HWIO memory are copied on every call.
torch_kernels.KernelForTorch.__call__ = lambda self, shape, dtype=None: self.initializer(shape, dtype=dtype)
out["planted_copies"] = copies(vgg_keras.build_vgg(config, classifier_activation=None))
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_torch_backend_runs_nchw_without_kernel_copies() -> None:
    """A channels_last model on torch: one permute in, NCHW convs, kernels never copied per call (torch.profiler)."""
    _needs("torch")
    out = child_result(_TORCH_LAYOUT_SCRIPT, "torch", TINY_BN)
    assert out["layers"][1:] == ["input_check", "to_channels_first"] and out["conv_format"] == "channels_first", out
    assert out["feature_layers"][-1] == "to_channels_last" and out["feature_shape"] == [2, 5, 6, 8], out
    # HWIO shape (the weight file's), O, H, W, I memory: the OIHW view is torch's channels_last weight.
    h, w, i, o = out["kernel_shape"]
    assert out["kernel_strides"] == [w * i, i, 1, h * w * i], out
    assert out["copies"] == [], out["copies"]
    assert out["planted_copies"], "the profiler check cannot see a per-call kernel copy"
    assert out["max_rel"] <= LOGIT_RTOL, out["max_rel"]
    keras_tf = vgg_keras.build_vgg(TINY_BN, classifier_activation=None)  # this process: TensorFlow
    assert out["weights"] == [[v.path, list(v.shape)] for v in keras_tf.weights]


_TORCH_COMPILE_SCRIPT = """
import json
import torch, torchvision  # before anything that may load TensorFlow
import keras, numpy as np
from parity.compare import build_pair, compare_outputs, keras_forward, torch_forward
from parity.convert.random_weights import randomized_state_dict
from parity.core.config import VGGConfig

config = VGGConfig.from_dict(json.loads(__import__("os").environ["CONFIG"]))
reference, model = build_pair(config, randomized_state_dict(config, seed=5))
x = np.random.default_rng(0).standard_normal((3, 3, 40, 40), dtype=np.float32)
eager = keras_forward(model, x)
model.compile(jit_compile=True)  # Keras' torch trainer runs its predict step through torch.compile
compiled = keras.ops.convert_to_numpy(model.predict_on_batch(x.transpose(0, 2, 3, 1)))
out = {"dynamo": hasattr(model.predict_function, "_torchdynamo_orig_callable")}
out["vs_eager"] = float(np.max(np.abs(compiled - eager["logits"])))
out["max_rel"] = compare_outputs(torch_forward(reference, x), {**eager, "logits": compiled}).max_rel
x[1, 0, 0, 0] = np.nan
out["nan_rows"] = np.isnan(keras.ops.convert_to_numpy(model.predict_on_batch(x.transpose(0, 2, 3, 1)))).all(1).tolist()
try:
    model.predict_on_batch(np.zeros((2, 7, 7, 3), np.float32))
    out["small"] = "no error"
except ValueError as e:
    out["small"] = str(e)
print("RESULT " + json.dumps(out))
"""


@pytest.mark.extended
def test_torch_compile_on_torch_backend() -> None:
    """``compile(jit_compile=True)`` on the torch backend (torch.compile): parity, NaN rows and the size check."""
    _needs("torch")
    out = child_result(_TORCH_COMPILE_SCRIPT, "torch", TINY_BN)
    assert out["dynamo"] and out["max_rel"] <= LOGIT_RTOL and out["vs_eager"] <= LOGIT_RTOL, out
    assert out["nan_rows"] == [False, True, False], out
    assert "at least 8x8 px" in out["small"] and "\n" not in out["small"], out


_JAX_OPTIONS_SCRIPT = r"""
import json, re
import jax, keras, numpy as np
from keras.src.backend.jax import trainer
import vgg_keras
from vgg_keras import vgg_model
from parity.core.config import VGGConfig

config = VGGConfig.from_dict(json.loads(__import__("os").environ["CONFIG"]))
model = vgg_keras.build_vgg(config, classifier_activation=None)
x = np.random.default_rng(0).standard_normal((2, 32, 32, 3), dtype=np.float32)
seen = []
original = vgg_model._jax_jit_options
vgg_model._jax_jit_options = lambda options: (seen.append(options), original(options))[1]
out = {"options": vgg_model.jax_cpu_compiler_options()}
model.run_eagerly = True  # op by op: the direct call is a jax.jit too
eager = np.asarray(model(x))
model.run_eagerly = False
out["vs_eager"] = float(np.max(np.abs(np.asarray(model.predict_on_batch(x)) - eager)))
out["seen"] = seen
out["restored"] = trainer.jit is jax.jit

def ynn_fusions(options):  # the options' effect on the model's own graph
    with original(options):
        step = trainer.jit(lambda tv, ntv, a: model.stateless_call(tv, ntv, a)[0])
    variables = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
    hlo = step.lower(*variables, x).compile().as_text()
    bodies = {b.split(" ", 1)[0].lstrip("%"): b for b in hlo.split("\n\n")}  # computation name -> text
    called = re.findall(r"kind=kCustom, calls=%([\w.-]+).*__ynn_fusion", hlo)
    return sum("convolution(" in bodies.get(name, "") for name in called)  # YNN fusions holding a convolution

out["ynn_default"], out["ynn_with_options"] = ynn_fusions({}), ynn_fusions(out["options"])
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.full  # vgg11_bn at 32 px: XLA's cost model leaves a tiny config's convolutions out of YNN fusions
def test_jax_predict_compiles_without_ynn_fusion() -> None:
    """On JAX's CPU the predict function keeps convolutions out of YNN fusions, for this model only; same outputs."""
    _needs("jax")
    out = child_result(_JAX_OPTIONS_SCRIPT, "jax", PRESETS["vgg11_bn"])
    assert out["options"] == vgg_model.JAX_CPU_COMPILER_OPTIONS and out["seen"] == [out["options"]], out
    assert out["restored"] and out["vs_eager"] <= LOGIT_RTOL, out
    # Bites: without the options XLA hands the convolutions to a YNN fusion.
    assert out["ynn_default"] > 0 and out["ynn_with_options"] == 0, out

"""Serialization round trips: Keras .keras files, JSON and clone_model; TorchScript, FX, torch.export, torch.compile.

A ``.keras`` file is loaded in a fresh interpreter (Keras only, no torch),
which must ``import vgg_keras`` first: that registers ``vgg_keras.layers.Conv2D``
and ``vgg_keras.checks.InputCheck`` (the first layer), as for any model with custom layers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.fx

import keras
import numpy as np
import pytest

import vgg_keras
import vgg_torch
from parity.core.config import PRESETS, VGGConfig
from tests.conftest import TINY_CONFIGS, run_python

#: The same model with the same weights on the same machine, reloaded or
#: rebuilt: the same kernels run in the same order, so outputs are bit-identical.
SAME_MODEL_ATOL = 0.0
#: A TorchScript, FX or exported graph runs the eager kernels, so the same inputs give the same outputs.
TORCH_GRAPH_ATOL = 0.0
#: torch.compile (inductor) generates its own C++ kernels and may fuse and
#: reorder float32 sums: about 1e-6 relative to the logits is the expected floor.
COMPILE_RTOL = 1e-5
#: Presets saved to .keras by default (with -m extended: all eight, and JSON and clone too).
QUICK_PRESETS = ("vgg11_bn",)

_LOAD_IN_FRESH_PROCESS = """
import json, sys
import numpy as np
import keras
paths = json.loads(sys.argv[2])
try:
    keras.saving.load_model(paths[0])
except Exception as e:  # the model's class and custom layers (VGGModel, InputCheck, ...) are unknown until
    print("without vgg_keras:", "Could not locate class 'VGGModel'" in str(e))  # vgg_keras is imported
import vgg_keras  # registers vgg_keras's layers with Keras
assert "torch" not in sys.modules
x = np.load(sys.argv[1])
outputs = {str(i): np.asarray(keras.saving.load_model(p)(x, training=False)) for i, p in enumerate(paths)}
np.savez(sys.argv[3], **outputs)
"""


def _input(channels: int = 3, size: int = 32, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, size, size, channels), dtype=np.float32)


def _max_abs(a: object, b: object) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def _keras_models(presets: tuple[str, ...] | list[str]) -> Iterator[tuple[str, keras.Model]]:
    """The tiny configs and some presets, with their classifiers, built one at a time (a preset is 0.5 GB)."""
    for name, cfg in TINY_CONFIGS.items():
        yield name, vgg_keras.build_vgg(cfg, classifier_activation=None)
    for arch in presets:
        yield arch, getattr(vgg_keras, arch.upper())(classifier_activation=None)


@pytest.mark.parametrize(
    "full", [False, pytest.param(True, marks=[pytest.mark.full, pytest.mark.extended])], ids=["quick", "all-tops"]
)
@pytest.mark.slow
def test_keras_file_loads_in_fresh_process(full: bool, tmp_path: Path) -> None:
    x = _input()
    paths, expected = [], []
    for name, model in _keras_models(list(PRESETS) if full else QUICK_PRESETS):
        path = tmp_path / f"{name}.keras"
        model.save(path)
        paths.append(str(path))
        expected.append(np.asarray(model(x, training=False)))
        del model
        keras.backend.clear_session()
    np.save(tmp_path / "x.npy", x)
    result = run_python(_LOAD_IN_FRESH_PROCESS, str(tmp_path / "x.npy"), json.dumps(paths), str(tmp_path / "out.npz"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "without vgg_keras: True" in result.stdout
    got = np.load(tmp_path / "out.npz")
    diffs = {Path(p).stem: _max_abs(got[str(i)], e) for i, (p, e) in enumerate(zip(paths, expected, strict=True))}
    assert all(d <= SAME_MODEL_ATOL for d in diffs.values()), diffs


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize(
    "full", [False, pytest.param(True, marks=[pytest.mark.full, pytest.mark.extended])], ids=["quick", "all-tops"]
)
@pytest.mark.slow
def test_keras_json_and_clone_with_copied_weights(full: bool, data_format: str) -> None:
    keras.config.set_image_data_format(data_format)
    x = _input()
    if data_format == "channels_first":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    for name, model in _keras_models(list(PRESETS) if full else ()):
        expected = np.asarray(model(x, training=False))
        from_json = keras.models.model_from_json(model.to_json())
        cloned = keras.models.clone_model(model)
        for other in (from_json, cloned):
            names = [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
            assert [layer.name for layer in other.layers if not isinstance(layer, keras.layers.InputLayer)] == names
            other.set_weights(model.get_weights())
            assert _max_abs(other(x, training=False), expected) <= SAME_MODEL_ATOL, name
        del model, from_json, cloned, other
        keras.backend.clear_session()


def _torch_models(full: bool) -> dict[str, tuple[torch.nn.Module, int]]:
    """(model, input size): the tiny configs at 32 px; with ``full``, the eight presets at 32 px.

    The quick tier's preset runs TorchScript and FX in tests/vgg_torch/test_upstream_torchvision_models.py.
    """
    torch.manual_seed(0)
    if full:
        return {arch: (getattr(vgg_torch, arch)(num_classes=10).eval(), 32) for arch in PRESETS}
    return {name: (vgg_torch.build_vgg(cfg).eval(), 32) for name, cfg in TINY_CONFIGS.items()}


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
@pytest.mark.parametrize(
    "full", [False, pytest.param(True, marks=[pytest.mark.full, pytest.mark.extended])], ids=["quick", "all"]
)
@pytest.mark.slow
def test_torch_script_fx_export(full: bool, tmp_path: Path) -> None:
    for name, (model, size) in _torch_models(full).items():
        x = torch.randn(2, model.config.in_channels, size, size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = model(x)
            scripted = torch.jit.script(model)
            scripted.save(tmp_path / "m.pt")
            outputs = {
                "script": scripted(x),
                "script-reloaded": torch.jit.load(tmp_path / "m.pt")(x),
                "fx": torch.fx.symbolic_trace(model)(x),
            }
        exported = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
        torch.export.save(exported, tmp_path / "m.pt2")
        with torch.no_grad():
            outputs["export"] = exported.module()(x)
            outputs["export-reloaded"] = torch.export.load(tmp_path / "m.pt2").module()(x)
            outputs["export-batch-3"] = exported.module()(x[:1].repeat(3, 1, 1, 1))[:1]
        diffs = {
            k: (v - (expected[:1] if k == "export-batch-3" else expected)).abs().max().item()
            for k, v in outputs.items()
        }
        assert all(d <= TORCH_GRAPH_ATOL for d in diffs.values()), (name, diffs)


@pytest.mark.full
@pytest.mark.extended
def test_torch_compile_cpu() -> None:
    torch.manual_seed(0)
    model = vgg_torch.build_vgg(TINY_CONFIGS["tiny_bn"]).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    started = time.perf_counter()
    try:
        compiled = torch.compile(model, backend="inductor")
        with torch.no_grad():
            got = compiled(x)
    except Exception as e:  # inductor needs a working C++ toolchain; report what this machine lacks
        pytest.skip(
            f"torch.compile failed on this machine after {time.perf_counter() - started:.0f} s: "
            f"{type(e).__name__}: {str(e).splitlines()[0]}"
        )
    with torch.no_grad():
        expected = model(x)
    assert (got - expected).abs().max().item() <= COMPILE_RTOL * expected.abs().max().item()
    print(f"torch.compile: {time.perf_counter() - started:.1f} s")


@pytest.mark.slow
def test_channels_adapted_model_round_trips(tmp_path: Path) -> None:
    """An n-channel Keras model keeps its channel count through .keras and JSON."""
    model = vgg_keras.VGG11(include_top=False, input_shape=(None, None, 5))
    path = tmp_path / "five.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    assert again.get_layer("block1_conv1").kernel.shape == (3, 3, 5, 64)
    x = _input(channels=5)
    assert _max_abs(again(x), model(x)) <= SAME_MODEL_ATOL
    config = VGGConfig.from_dict(PRESETS["vgg11"].to_dict()).replace(in_channels=5)
    assert vgg_torch.build_vgg(config).features[0].in_channels == 5

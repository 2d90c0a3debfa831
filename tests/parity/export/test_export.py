"""SavedModel and TFLite exports (``parity.export``) checked against torchvision.

The quick tier exports vgg11_bn's convolutional part (9.2M parameters) at
32 x 32 to every format and quantization, in this process; the classifier
(fc1 alone is 103M parameters, whatever the input size) is exported at full
size in ``tests/parity/export/test_cli.py`` (marked ``full``). Weights: every tensor
random (``--init random-all``, BN statistics included), seed 0.

Each artifact is loaded back from disk and compared, with max |diff|, with
torchvision's own ``vgg11_bn`` (not the exporter's reference) on the fixed
verification batch and on scikit-image's photos through torchvision's
preprocessing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

import keras
import numpy as np
import pytest

import parity.export.write
from parity.convert.to_keras import verification_batch
from parity.core.config import PRESETS, VGGConfig
from parity.export import ExportResult, export, main
from parity.export.check import TOLERANCES, photo_batch, run_artifact, table
from parity.export.write import build_export_model
from tests.parity.export.conftest import ARCH, SEED
from vgg_keras.checks import NON_FINITE_TO_NAN

SIZE = 32
#: tflite fp32 and float16 are in the full tier (and at full size in export/test_cli.py): each TFLite conversion
#: takes 10-40 s here.
CASES = [
    ("saved_model", "none"),
    pytest.param("tflite", "none", marks=pytest.mark.full),
    pytest.param("tflite", "float16", marks=pytest.mark.full),
    ("tflite", "dynamic-int8"),
]


@pytest.fixture(scope="session")
def torchvision_features(features_state: dict[str, np.ndarray]) -> torch.nn.Module:
    """torchvision's own vgg11_bn feature extractor (``vgg.make_layers(cfgs["A"])``) with the same weights."""
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["A"], batch_norm=True).eval()
    prefix = "features."
    features.load_state_dict({k[len(prefix) :]: torch.from_numpy(np.array(v)) for k, v in features_state.items()})
    return features


def _torchvision_blocks(features: torch.nn.Module, x: np.ndarray) -> dict[str, np.ndarray]:
    out, block = {}, 0
    with torch.no_grad():
        h = torch.from_numpy(x)
        for layer in features:
            h = layer(h)
            if isinstance(layer, torch.nn.MaxPool2d):
                block += 1
                out[f"block{block}"] = h.numpy().copy()
    return out


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _export(features_file: Path, out: Path, fmt: str, quantize: str = "none", **kwargs: object) -> ExportResult:
    return export(
        ARCH,
        weights=os.fspath(features_file),
        fmt=fmt,
        quantize=quantize,
        output=out,
        input_size=(SIZE, SIZE),
        quiet=True,
        **kwargs,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(("fmt", "quantize"), CASES)
@pytest.mark.slow
def test_export_reloads_and_matches_torchvision(
    fmt: str, quantize: str, features_file: Path, torchvision_features: torch.nn.Module, tmp_path: Path
) -> None:
    out = tmp_path / ("model.tflite" if fmt == "tflite" else "model")
    result = _export(features_file, out, fmt, quantize)
    assert result.passed and result.output == out
    assert _listing(tmp_path) == sorted([out.name, f"{out.name}.json"])  # no temporary left
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert sidecar["export"]["format"] == fmt and sidecar["export"]["quantization"] == quantize
    assert sidecar["weights"]["source"] == {"kind": "random-all", "seed": SEED}
    assert sidecar["weights"]["sha256"] == json.loads(Path(f"{features_file}.json").read_text())["sha256"]
    assert sidecar["verification"]["passed"] and sidecar["size_bytes"] > 0

    tolerance = TOLERANCES[quantize]
    for name, x in [("verification", verification_batch(PRESETS[ARCH], SIZE)), ("photos", photo_batch((SIZE, SIZE)))]:
        expected = _torchvision_blocks(torchvision_features, x)
        got = run_artifact(out, fmt, x, "channels_last")
        got.setdefault("block5", got["output"])  # TFLite: the last block is the output tensor
        rows = []
        for block, ref in expected.items():
            rel = float(np.max(np.abs(got[block] - ref)) / np.max(np.abs(ref)))
            rows.append(f"{block}: {rel:.2e}")
            bound = tolerance.output_rtol if block == "block5" else tolerance.block_rtol
            assert bound is None or rel <= bound, f"{fmt}/{quantize} on {name}: " + ", ".join(rows)
        print(f"{fmt}/{quantize} {name}: " + ", ".join(rows))


@pytest.mark.slow
def test_saved_model_serves_other_sizes_and_refuses_the_wrong_layout(
    features_file: Path, torchvision_features: torch.nn.Module, tmp_path: Path
) -> None:
    import tensorflow as tf

    out = tmp_path / "served"
    assert _export(features_file, out, "saved_model").passed
    loaded = tf.saved_model.load(os.fspath(out))
    for h, w in [(45, 97), (64, 64)]:
        x = np.random.default_rng(h).standard_normal((3, 3, h, w), dtype=np.float32)
        expected = _torchvision_blocks(torchvision_features, x)["block5"]
        got = np.asarray(loaded.serve(tf.constant(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
        assert np.max(np.abs(got - expected)) <= TOLERANCES["none"].output_rtol * np.max(np.abs(expected)), (h, w)
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
        loaded.serve(tf.constant(np.zeros((1, 3, 32, 32), np.float32)))  # NCHW into an NHWC signature


@pytest.mark.full
@pytest.mark.cpu_kernels
def test_channels_first_export_matches_torchvision(
    features_file: Path, torchvision_features: torch.nn.Module, tmp_path: Path
) -> None:
    out = tmp_path / "nchw.tflite"
    result = _export(features_file, out, "tflite", data_format="channels_first")
    assert result.passed, result.record["verification"]
    x = verification_batch(PRESETS[ARCH], SIZE)
    got = run_artifact(out, "tflite", x, "channels_first")["output"]
    expected = _torchvision_blocks(torchvision_features, x)["block5"]
    assert np.max(np.abs(got - expected)) <= TOLERANCES["none"].output_rtol * np.max(np.abs(expected))


# --------------------------------------------------------------------------- broken exports are refused
def _rewired(model: keras.Model, skip: set[str], first: keras.layers.Layer | None = None) -> keras.Model:
    """The same layers (same weights) chained again from a new input, some left out, an extra layer first.

    The NaN mask (which also reads the input) is left out; ``predictions`` then runs as a plain ``Dense``.
    """
    inputs = keras.Input(model.input.shape[1:])
    x = first(inputs) if first is not None else inputs
    for layer in model.layers[1:]:
        if layer.name not in skip | {NON_FINITE_TO_NAN}:
            x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def _transposed_input(config: VGGConfig, **kwargs: object) -> keras.Model:
    """Exported with height and width swapped at the input: a transposed signature, same shapes at 32 x 32."""
    return _rewired(build_export_model(config, **kwargs), set(), keras.layers.Permute((2, 1, 3), name="transposed"))  # type: ignore[arg-type]


def _dropped_conv(config: VGGConfig, **kwargs: object) -> keras.Model:
    """block3_conv2 (256 -> 256 channels) with its batch norm and ReLU left out: every shape still fits."""
    model = build_export_model(config, **kwargs)  # type: ignore[arg-type]
    names = [layer.name for layer in model.layers]
    i = names.index("block3_conv2")
    return _rewired(model, set(names[i : i + 3]))


@pytest.mark.parametrize(("builder", "first_block"), [(_transposed_input, "block1"), (_dropped_conv, "block3")])
@pytest.mark.parametrize("fmt", ["saved_model", pytest.param("tflite", marks=[pytest.mark.full, pytest.mark.extended])])
@pytest.mark.slow
def test_broken_export_is_refused_and_nothing_is_written(
    builder: Callable[..., keras.Model],
    first_block: str,
    fmt: str,
    features_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / ("model.tflite" if fmt == "tflite" else "model")
    result = _export(features_file, out, fmt, model_builder=builder)
    assert not result.passed and result.output is None
    assert _listing(tmp_path) == []
    figures = result.record["verification"]["figures"]  # type: ignore[index]
    for name in ("verification", "photos"):
        rows = {r["name"]: r for r in figures[name]["rows"]}
        first = next(n for n, r in rows.items() if not r["ok"])
        print(table(figures[name], f"{builder.__name__}, {fmt}, {name}"))
        assert first == first_block, table(figures[name], name)
        assert rows[first]["max_rel"] > 1e-2
    assert "Export check FAILED" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_exit_code_1_on_a_broken_export(
    features_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parity.export.write, "build_export_model", _dropped_conv)
    out = tmp_path / "model"
    code = main(
        [
            ARCH,
            "--weights",
            os.fspath(features_file),
            "--format",
            "saved_model",
            "--input-size",
            "32",
            "32",
            "--output",
            os.fspath(out),
            "--quiet",
        ]
    )
    assert code == 1 and _listing(tmp_path) == []

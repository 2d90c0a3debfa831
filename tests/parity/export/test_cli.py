"""``python -m parity.export``: hostile input refused in one line, and full-size exports judged on photos.

Refusals exit 2 with one line on stderr ending in ``Received: ...`` and leave
the output folder as it was. The full-size cases (``full``) export vgg11_bn
with its classifier at 224 x 224 in a child process each and read the figures
the exporter measured (against torchvision, on the verification batch and on
scikit-image's four photos through torchvision's preprocessing) from the sidecar.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

import parity.export.flatbuffer
import parity.export.onnx_graph
import parity.export.write
from parity.export import main
from parity.export.check import TOLERANCES, constant_transposes, float_weight_ops, table, tflite_ops
from parity.export.openvino_ir import bin_path
from tests.conftest import preset_params, run_python, tensorflow_blocked
from tests.parity.export.conftest import ARCH, SEED

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def _assert_refused(code: int, err: str, match: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert match in lines[0] and "Received: " in lines[0], lines[0]


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _args(weights: Path | str, out: Path, *extra: str, arch: str = ARCH, fmt: str = "tflite") -> list[str]:
    return [
        arch,
        "--weights",
        os.fspath(weights),
        "--format",
        fmt,
        "--input-size",
        "32",
        "32",
        "--output",
        os.fspath(out),
        "--quiet",
        *extra,
    ]


def test_missing_weights_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(capsys, *_args(tmp_path / "absent.weights.h5", tmp_path / "m.tflite"))
    _assert_refused(code, err, "No weights file")
    assert _listing(tmp_path) == []


def test_converted_weights_not_in_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(capsys, *_args("converted", tmp_path / "m.tflite"))
    _assert_refused(code, err, "python -m parity.convert vgg11_bn")
    assert _listing(tmp_path) == []


def test_wrong_arch_for_the_file(features_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    code, err = _cli(capsys, *_args(features_file, tmp_path / "m.tflite", arch="vgg13_bn"))
    _assert_refused(code, err, "holds vgg11_bn weights, not vgg13_bn")
    assert _listing(tmp_path) == []


def test_classifier_asked_of_a_features_file(
    features_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: F811
    code, err = _cli(capsys, *_args(features_file, tmp_path / "m.tflite", "--include-top"))
    _assert_refused(code, err, "convolutional weights only")
    assert _listing(tmp_path) == []


def test_not_a_converted_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "w" / "junk.weights.h5"
    bogus.parent.mkdir()
    bogus.write_bytes(b"not hdf5 at all")
    out = tmp_path / "out"
    out.mkdir()
    code, err = _cli(capsys, *_args(bogus, out / "m.tflite"))
    _assert_refused(code, err, "not a readable HDF5 weights file")
    assert _listing(out) == []


def test_weights_file_not_matching_its_sidecar(
    features_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: F811
    """One byte of a weight changed after conversion: the sidecar's sha256 no longer matches, nothing is exported."""
    copy = tmp_path / "w" / features_file.name
    copy.parent.mkdir()
    data = bytearray(features_file.read_bytes())
    data[-100] ^= 0xFF  # inside the last dataset, not the HDF5 metadata
    copy.write_bytes(bytes(data))
    Path(f"{copy}.json").write_text(Path(f"{features_file}.json").read_text())
    out = tmp_path / "out"
    out.mkdir()
    code, err = _cli(capsys, *_args(copy, out / "m.tflite"))
    _assert_refused(code, err, "does not match the sha256")
    assert _listing(out) == []


@pytest.mark.parametrize("fmt", ["tflite", "saved_model"])
def test_output_exists_needs_force(
    fmt: str, features_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: F811
    out = tmp_path / ("m.tflite" if fmt == "tflite" else "m")
    if fmt == "tflite":
        out.write_bytes(b"keep me")
    else:
        out.mkdir()
        (out / "saved_model.pb").write_bytes(b"keep me")
    code, err = _cli(capsys, *_args(features_file, out, fmt=fmt))
    _assert_refused(code, err, "Output exists: pass --force")
    assert (out if fmt == "tflite" else out / "saved_model.pb").read_bytes() == b"keep me"
    assert _listing(tmp_path) == [out.name]


def test_output_folder_not_writable(
    features_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: F811
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if IS_ROOT:  # root passes permission checks: simulate what a normal user sees
            real = os.access
            monkeypatch.setattr(
                os,
                "access",
                lambda p, m, *a, **k: (
                    False if Path(p).resolve() == locked.resolve() and m & os.W_OK else real(p, m, *a, **k)
                ),
            )
        code, err = _cli(capsys, *_args(features_file, locked / "m.tflite"))
    finally:
        locked.chmod(0o755)
    _assert_refused(code, err, "Output folder is not writable")
    assert _listing(locked) == []


def test_output_folder_missing(features_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    code, err = _cli(capsys, *_args(features_file, tmp_path / "nowhere" / "m.tflite"))
    _assert_refused(code, err, "Output folder does not exist")
    assert _listing(tmp_path) == []


@pytest.mark.parametrize(
    ("extra", "fmt", "out_name", "match"),
    [
        (["--quantize", "int8"], "saved_model", "m", "Quantization applies to --format tflite only"),
        (["--quantize", "float16"], "saved_model", "m", "Quantization applies to --format tflite only"),
        (["--quantize", "int9"], "tflite", "m.tflite", "--quantize must be one of none, float16, dynamic-int8, int8"),
        ([], "coreml", "m.mlmodel", "--format must be one of saved_model, tflite, onnx, openvino"),
        ([], "onnx", "m.tflite", "must end in .onnx"),
        (["--quantize", "dynamic-int8"], "onnx", "m.onnx", "an ONNX file keeps fp32 weights"),
        ([], "tflite", "m.bin", "must end in .tflite"),
        (["--data-format", "nchw"], "tflite", "m.tflite", "--data-format must be"),
        (["--batch-size", "4"], "saved_model", "m", "--batch-size sets the batch a TFLite, ONNX or OpenVINO file is"),
        ([], "openvino", "m.onnx", "--format openvino writes a .xml file: --output must end in .xml"),
        (["--quantize", "int8"], "openvino", "m.xml", "an OpenVINO IR keeps fp32 weights"),
        (["--calibration", "."], "tflite", "m.tflite", "--calibration applies to --quantize int8 only"),
        (["--quantize", "int8", "--input-size", "224", "256"], "tflite", "m.tflite", "needs a square input"),
    ],
)
def test_bad_options(
    extra: list[str],
    fmt: str,
    out_name: str,
    match: str,
    features_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # noqa: F811
    code, err = _cli(capsys, *_args(features_file, tmp_path / out_name, *extra, fmt=fmt))
    _assert_refused(code, err, match)
    assert _listing(tmp_path) == []


def test_input_size_too_small(features_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    args = _args(features_file, tmp_path / "m.tflite")
    args[args.index("--input-size") + 1 : args.index("--input-size") + 3] = ["16", "16"]
    code, err = _cli(capsys, *args)
    _assert_refused(code, err, "--input-size must be at least 32")
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("fmt", ["tflite", "saved_model", "onnx", "openvino"])
@pytest.mark.slow
def test_disk_full_while_writing_leaves_nothing(
    fmt: str,
    features_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    """The artifact's write fails half-way: one line, exit 2, no temporary and no output left."""

    def full_disk(path: Path) -> None:
        if fmt == "saved_model":
            Path(path).mkdir(exist_ok=True)
            path = Path(path) / "half.bin"
        Path(path).write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    if fmt == "saved_model":
        monkeypatch.setattr(parity.export.write, "write_saved_model", lambda model, path, *a: full_disk(path))
    elif fmt == "onnx":
        monkeypatch.setattr(parity.export.onnx_graph, "write_onnx", lambda path, *a, **k: full_disk(path))
    elif fmt == "openvino":  # the IR's .bin half written when the disk fills
        real = ov.save_model
        monkeypatch.setattr(ov, "save_model", lambda m, path, **k: (real(m, path, **k), full_disk(bin_path(path))))
    else:  # the fp32 TFLite file is written from the arrays, without TensorFlow's converter
        monkeypatch.setattr(parity.export.flatbuffer, "write_tflite", lambda path, *a, **k: full_disk(path))
    out = tmp_path / {"tflite": "m.tflite", "onnx": "m.onnx", "openvino": "m.xml"}.get(fmt, "m")
    code, err = _cli(capsys, *_args(features_file, out, fmt=fmt))
    _assert_refused(code, err, "No space left on device")
    assert _listing(tmp_path) == []


@pytest.mark.slow
def test_force_replaces_a_saved_model_whole(
    features_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: F811
    out = tmp_path / "m"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    code, err = _cli(capsys, *_args(features_file, out, "--force", fmt="saved_model"))
    assert code == 0, err
    assert not (out / "stale.txt").exists() and (out / "saved_model.pb").is_file()
    assert _listing(tmp_path) == ["m", "m.json"]


# --------------------------------------------------------------------------- full size, with the classifier
@pytest.fixture(scope="module")
def full_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vgg11_bn, every tensor random (seed 0), converted and verified by ``parity.convert`` in a child process."""
    path = tmp_path_factory.mktemp("full") / f"{ARCH}_random_all_seed{SEED}.weights.h5"
    done = run_python(
        "",
        "-m",
        "parity.convert",
        ARCH,
        "--init",
        "random-all",
        "--seed",
        str(SEED),
        "--output",
        os.fspath(path),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return path


@pytest.mark.full
@pytest.mark.extended
@pytest.mark.parametrize(
    ("fmt", "quantize"),
    [
        ("saved_model", "none"),
        ("tflite", "none"),
        ("tflite", "float16"),
        ("tflite", "dynamic-int8"),
        ("tflite", "int8"),
    ],
)
def test_full_size_export_meets_its_bound(fmt: str, quantize: str, full_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / ("m.tflite" if fmt == "tflite" else "m")
    done = run_python(
        "",
        "-m",
        "parity.export",
        ARCH,
        "--weights",
        os.fspath(full_weights),
        "--format",
        fmt,
        "--quantize",
        quantize,
        "--output",
        os.fspath(out),
    )
    print(done.stderr[-6000:], file=sys.stderr)
    assert done.returncode == 0, done.stderr[-4000:]
    sidecar = json.loads(Path(f"{out}.json").read_text())
    figures = sidecar["verification"]["figures"]
    sets = ["photos"] if quantize == "int8" else ["verification", "photos"]  # int8 is judged on photos only
    at_batch_1 = [f"{k} at batch 1" for k in sets] if fmt == "tflite" else []
    assert set(figures) == {*sets, *at_batch_1}
    if fmt == "tflite":
        ops = tflite_ops(out)
        assert constant_transposes(ops) == []
        assert (float_weight_ops(ops) == []) == (quantize in ("int8", "dynamic-int8"))
    tolerance = TOLERANCES[quantize]
    for name, f in figures.items():
        print(table(f, f"{fmt}/{quantize}, {name}"))
        assert f["passed"] and f["top1"] >= tolerance.min_top1 and f["top5_overlap"] >= tolerance.min_top5_overlap
        logits = next(r for r in f["rows"] if r["name"] == "output")
        assert logits["max_rel"] <= tolerance.output_rtol
    assert sidecar["weights"]["source"] == {"kind": "random-all", "seed": SEED}
    assert sidecar["weights"]["verification"]["max_rel"] <= 1e-5


@pytest.mark.parametrize(
    ("source", "match"),
    [(("--checkpoint", "x.pth"), "Pass either --weights"), ((), "Pass either --weights")],
    ids=["both", "neither"],
)
def test_weights_and_checkpoint_are_exclusive(
    source: tuple[str, ...], match: str, features_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: F811
    args = _args(features_file, tmp_path / "m.tflite")
    if not source:
        args = args[:1] + args[3:]  # drop --weights FILE
    code, err = _cli(capsys, *args, *source)
    _assert_refused(code, err, match)
    assert _listing(tmp_path) == []


def test_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [ARCH, "--checkpoint", os.fspath(tmp_path / "absent.pth"), "--format", "tflite"]
    code, err = _cli(capsys, *args, "--output", os.fspath(tmp_path / "m.tflite"), "--quiet")
    _assert_refused(code, err, "Checkpoint not found")
    assert _listing(tmp_path) == []


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vgg11_bn as a torch ``.pth``, every tensor random: the tensors ``parity.convert --init random-all`` converts."""
    import torch

    from parity.convert.random_weights import randomized_state_dict
    from parity.core.config import PRESETS

    path = tmp_path_factory.mktemp("ckpt") / f"{ARCH}_random_all_seed{SEED}.pth"
    torch.save({k: torch.from_numpy(v) for k, v in randomized_state_dict(PRESETS[ARCH], SEED).items()}, path)
    return path


def _export_checkpoint(checkpoint: Path, out: Path, env: dict[str, str] | None = None) -> dict:
    done = run_python("", "-m", "parity.export", ARCH, "--checkpoint", os.fspath(checkpoint), "--output",
                      os.fspath(out), "--format", "tflite", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(Path(f"{out}.json").read_text())


@pytest.mark.full
def test_checkpoint_to_verified_tflite_in_one_step(full_checkpoint: Path, tmp_path: Path) -> None:
    """A .pth straight to a verified fp32 TFLite file: no .weights.h5 between, TensorFlow never loaded."""
    from parity.core.checkpoint import file_sha256

    env, tensorflow_imports = tensorflow_blocked(tmp_path / "child")
    out = tmp_path / "out" / "m.tflite"
    out.parent.mkdir()
    sidecar = _export_checkpoint(full_checkpoint, out, env)
    assert not tensorflow_imports.exists(), tensorflow_imports.read_text()[-3000:]
    assert sidecar["weights"]["sha256"] == file_sha256(full_checkpoint)
    assert sidecar["weights"]["source"]["kind"] == "checkpoint"
    assert "tensorflow" not in sidecar["versions"] and "keras" not in sidecar["versions"]
    figures = sidecar["verification"]["figures"]
    assert set(figures) == {"verification", "photos", "verification at batch 1", "photos at batch 1"}
    for name, f in figures.items():
        worst = max(r["max_rel"] for r in f["rows"])
        assert f["passed"] and worst <= TOLERANCES["none"].output_rtol, table(f, name)
    assert {r["name"] for r in figures["photos"]["rows"]} == {f"block{i}" for i in range(1, 6)} | {"output"}
    ops = tflite_ops(out)
    assert constant_transposes(ops) == [] and [op.name for op in ops].count("FULLY_CONNECTED") == 3
    assert _listing(out.parent) == ["m.tflite", "m.tflite.json"]


@pytest.mark.full
@pytest.mark.extended
def test_both_routes_write_the_same_file(full_checkpoint: Path, full_weights: Path, tmp_path: Path) -> None:
    """The .pth exported directly and the same tensors converted first give byte-identical files."""
    _export_checkpoint(full_checkpoint, tmp_path / "direct.tflite")
    done = run_python("", "-m", "parity.export", ARCH, "--weights", os.fspath(full_weights), "--format", "tflite",
                      "--output", os.fspath(tmp_path / "converted.tflite"))  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "direct.tflite").read_bytes() == (tmp_path / "converted.tflite").read_bytes()


# --------------------------------------------------------------------------- ONNX
def _onnx_args(source: tuple[str, ...], out: Path, *extra: str, arch: str = ARCH) -> list[str]:
    return [arch, *source, "--format", "onnx", "--output", os.fspath(out), *extra]


def _assert_onnx_figures(sidecar: dict, sets: set[str], batch: int) -> None:
    """Every set judged at ``batch`` and at 1, blocks included at ``batch``, all within the fp32 bound."""
    figures = sidecar["verification"]["figures"]
    assert set(figures) == sets | {f"{k} at batch 1" for k in sets}
    stages = len(sidecar["config"]["stages"])
    for name, f in figures.items():
        worst = max(r["max_rel"] for r in f["rows"])
        assert f["passed"] and worst <= TOLERANCES["none"].output_rtol, table(f, name)
        if "at batch 1" not in name:
            assert {r["name"] for r in f["rows"]} == {f"block{i}" for i in range(1, stages + 1)} | {"output"}
    assert sidecar["export"]["format"] == "onnx" and sidecar["export"]["data_format"] == "channels_first"
    assert "tensorflow" not in sidecar["versions"] and "onnxruntime" in sidecar["versions"]
    assert sidecar["versions"]["onnx"] and sidecar["verification"]["passed"]


@pytest.mark.slow
def test_onnx_export_of_the_features_loads_no_tensorflow(features_file: Path, tmp_path: Path) -> None:  # noqa: F811
    """A features-only ONNX file at 32 px, judged at 32 and 65 x 129, at batch 2 and 1; TensorFlow never loaded."""
    env, tensorflow_imports = tensorflow_blocked(tmp_path / "child")
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    args = _onnx_args(("--weights", os.fspath(features_file)), out, "--input-size", "32", "32", "--batch-size", "2")
    done = run_python("", "-m", "parity.export", *args, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert not tensorflow_imports.exists(), tensorflow_imports.read_text()[-3000:]
    sidecar = json.loads(Path(f"{out}.json").read_text())
    _assert_onnx_figures(sidecar, {"verification", "photos", "verification 65x129"}, batch=2)
    assert sidecar["export"]["input_signature"] == [None, 3, None, None]
    assert _listing(out.parent) == ["m.onnx", "m.onnx.json"]


@pytest.mark.slow
def test_wrong_onnx_file_is_refused_and_not_written(
    features_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    """Batch norm folded with the wrong epsilon: the check fails at block1, exit 1, nothing left behind."""
    import parity.export.folding

    monkeypatch.setattr(parity.export.folding, "BN_EPSILON", 1e-3)
    out = tmp_path / "m.onnx"
    code = main(_onnx_args(("--weights", os.fspath(features_file)), out, "--input-size", "32", "32"))
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Export check FAILED" in err and "block1 differs" in err
    assert _listing(tmp_path) == []


def _random_checkpoint(arch: str, folder: Path) -> tuple[Path, dict]:
    import torch

    from parity.convert.random_weights import randomized_state_dict
    from parity.core.config import PRESETS

    state = randomized_state_dict(PRESETS[arch], SEED)
    path = folder / f"{arch}_random_all_seed{SEED}.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    return path, state


@pytest.mark.full
def test_onnx_with_torchs_fc1_rows_after_an_nhwc_flatten_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """vgg11_bn's map flattened in H*W*C order (as a Keras port flattens) with fc1's rows left in torch's order.

    At 32 px (fc1 is full size whatever the input): the check fails on the output with every block
    within bound, exits 1, and writes nothing.
    """
    import parity.export.onnx_graph as onnx_graph

    def nhwc_flatten(g: onnx_graph._Graph, x: str) -> str:
        return g.node("Flatten", [g.node("Transpose", [x], "to_nhwc", perm=[0, 2, 3, 1])], "flatten", axis=1)

    checkpoint, _ = _random_checkpoint(ARCH, tmp_path)
    monkeypatch.setattr(onnx_graph, "_flatten", nhwc_flatten)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    code = main(_onnx_args(("--checkpoint", os.fspath(checkpoint)), out, "--input-size", "32", "32", "--quiet"))
    err = capsys.readouterr().err
    assert code == 1, err
    assert "output differs" in err and "block5 differs" not in err
    assert _listing(out.parent) == []


@pytest.mark.full
@pytest.mark.parametrize("arch", preset_params(marks=[pytest.mark.full]))
def test_checkpoint_to_verified_onnx(arch: str, tmp_path: Path) -> None:
    """A .pth to an ONNX file judged at 224 and 257 x 321 at batch 2 and 1, then run again at 97 x 161 here.

    The export runs in a child process with TensorFlow blocked; the file is then run by onnxruntime in this
    process (torch, TensorFlow and onnxruntime together) against torch on the same tensors.
    """
    from parity.convert.to_keras import torch_reference
    from parity.core.config import PRESETS
    from parity.export.check import onnx_session

    checkpoint, state = _random_checkpoint(arch, tmp_path)
    env, tensorflow_imports = tensorflow_blocked(tmp_path / "child")
    out = tmp_path / "out" / f"{arch}.onnx"
    out.parent.mkdir()
    done = run_python("", "-m", "parity.export", *_onnx_args(("--checkpoint", os.fspath(checkpoint)), out,
                      "--batch-size", "2", arch=arch), env=env)  # fmt: skip
    print(done.stderr[-6000:], file=sys.stderr)
    assert done.returncode == 0, done.stderr[-4000:]
    assert not tensorflow_imports.exists(), tensorflow_imports.read_text()[-3000:]
    _assert_onnx_figures(json.loads(Path(f"{out}.json").read_text()), {"verification", "photos",
                         "verification 257x321"}, batch=2)  # fmt: skip
    x = np.random.default_rng(5).standard_normal((2, 3, 97, 161), dtype=np.float32)  # 3 x 5 maps
    ref = torch_reference(state, PRESETS[arch], x, True)["logits"]
    session = onnx_session(out)
    for batch in (2, 1):
        got = session.run(None, {"images": x[:batch]})[0]
        assert np.max(np.abs(got - ref[:batch])) / np.max(np.abs(ref)) <= TOLERANCES["none"].output_rtol
    assert _listing(out.parent) == [f"{arch}.onnx", f"{arch}.onnx.json"]

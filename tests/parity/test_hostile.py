"""Hostile and broken inputs: each is refused in one line, and nothing is written.

Every refusal from the converter exits with code 2 and prints one line,
``error: ... Received: ...``, on stderr; every refusal when loading converted
weights raises with a one-line message naming the file and the fix. Nothing is
left behind in the output folder: no output file, no sidecar, no temporary file.

Most cases run in this process through :func:`parity.convert.main` (safe here:
``conftest`` imported torch and torchvision before TensorFlow). Killing a
writer and racing two writers need child processes. The state dicts that only
have to fail a key or shape check hold full-size tensors expanded from a single
element, so their files stay a few kilobytes.

At about 840 lines this file is over the house limit on purpose: it is the one
catalog of every refusal the README promises, grouped by section in the
order the README lists them.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import h5py
import numpy as np
import pytest

import parity.convert
import parity.convert.to_keras
import parity.core.atomic
import parity.core.catalog
import parity.core.weights_file
import parity.interrupts
import vgg_keras
import vgg_keras.weights
from parity.convert.random_weights import randomized_state_dict
from parity.core.checkpoint import file_sha256
from parity.core.config import PRESETS, layer_plan, torch_parameter_shapes
from parity.core.errors import WeightsFileError
from parity.core.weights_file import read_record, sidecar_path
from tests.conftest import ROOT
from vgg_keras.weights import converted_weights_path

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --------------------------------------------------------------------------- helpers


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Runs the converter in this process; returns its exit code and stderr."""
    code = parity.convert.main([*args, "--quiet"])
    return code, capsys.readouterr().err


def _error_line(stderr: str) -> str:
    """The single ``error:`` line of a refusal (child processes add TensorFlow's log lines)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    line = lines[0]
    assert " Received: " in line and line.rsplit(" Received: ", 1)[1].strip(), line
    return line


def _assert_refused(code: int, stderr: str, *needles: str) -> str:
    """Exit code 2, one ``error: ... Received: ...`` line, containing every needle."""
    assert code == 2, stderr
    line = _error_line(stderr)
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def _assert_one_line(message: str, *needles: str) -> None:
    assert "\n" not in message and " Received: " in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def _listing(folder: Path) -> list[str]:
    """Every name in a folder, hidden ones included."""
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _fake_state(arch: str, num_classes: int = 1000, fill: float = 0.0) -> dict[str, torch.Tensor]:
    """A state dict with every key and shape of ``arch``, each tensor one element expanded (a tiny file)."""
    config = PRESETS[arch].replace(num_classes=num_classes)
    state = {k: torch.full((), fill).expand(*shape) for k, shape in torch_parameter_shapes(config)}
    for spec in layer_plan(config):
        if spec.kind == "bn":
            state[f"{spec.torch_name}.running_mean"] = torch.zeros(()).expand(spec.out_features)
            state[f"{spec.torch_name}.running_var"] = torch.ones(()).expand(spec.out_features)
            state[f"{spec.torch_name}.num_batches_tracked"] = torch.tensor(1)
    return state


def _save(tmp_path: Path, name: str, obj: object) -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if the converter starts loading frameworks or weights: refusals must come first."""

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the conversion started before the input was refused")

    monkeypatch.setattr(parity.convert.to_keras, "import_frameworks", started)
    monkeypatch.setattr(parity.convert.to_keras, "_random_state_dict", started)


def _deny_access(monkeypatch: pytest.MonkeyPatch, denied: Path, mode: int) -> None:
    """Makes ``os.access(denied, mode)`` fail, as it does for a non-root user without permission.

    Tests run as root here, and root passes permission checks, so the refusal is
    simulated; the real ``chmod`` is applied too, which is what a non-root run sees.
    """
    real = os.access

    def access(path: object, m: int, *args: object, **kwargs: object) -> bool:
        if Path(os.fspath(path)).resolve() == denied.resolve() and m & mode:  # type: ignore[arg-type]
            return False
        return real(path, m, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)


# --------------------------------------------------------------------------- checkpoints that run code


class _RunsShell:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _OpensFile:
    """Unpickling this creates a file through ``open(marker, "w")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (os.fspath(self.marker), "w"))


def _pickled(path: Path, obj: object) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        pytest.param(
            lambda d, m: _save(d, "evil.pth", {"features.0.weight": torch.zeros(2), "x": _RunsShell(m)}),
            "could run arbitrary code",
            id="torch.save-os.system",
        ),
        pytest.param(
            lambda d, m: _pickled(d / "evil.pt", {"features.0.weight": _OpensFile(m)}),
            "could run arbitrary code",
            id="pickle-open",
        ),
        # Named .safetensors, it is read as safetensors only, which a pickle is not.
        pytest.param(
            lambda d, m: _pickled(d / "evil.safetensors", {"x": _RunsShell(m)}),
            "Not a valid safetensors file",
            id="pickle-named-safetensors",
        ),
    ],
)
def test_code_in_checkpoint_is_refused_and_never_runs(
    tmp_path: Path, out_dir: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path, Path], Path], needle: str
) -> None:
    marker = tmp_path / "MARKER"
    checkpoint = make(tmp_path, marker)
    code, err = _cli(capsys, "vgg11", "--checkpoint", str(checkpoint), "--output", str(out_dir / "x.weights.h5"))
    line = _assert_refused(code, err, str(checkpoint))
    assert needle in line
    assert not marker.exists(), "the checkpoint's code ran"
    assert _listing(out_dir) == []


def test_pickled_module_is_refused_with_the_fix(
    tmp_path: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _save(tmp_path, "model.pth", torch.nn.Linear(2, 2))
    code, err = _cli(capsys, "vgg11", "--checkpoint", str(checkpoint), "--output", str(out_dir / "x.weights.h5"))
    _assert_refused(code, err, "torch.save(model.state_dict(), path)", "torch.nn.modules.linear.Linear")
    assert _listing(out_dir) == []


# --------------------------------------------------------------------------- files that are not checkpoints


def _small_state() -> dict[str, torch.Tensor]:
    """The first layers of vgg11, random: enough bytes to cut in half."""
    return {
        k: torch.randn(v.shape) for k, v in _fake_state("vgg11").items() if k.startswith(("features.0.", "features.3."))
    }


def _valid_pth(tmp_path: Path) -> Path:
    return _save(tmp_path, "valid.pth", _small_state())


def _valid_safetensors(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    path = tmp_path / "valid.safetensors"
    save_file(_small_state(), path)
    return path


def _first_half(src: Path, name: str) -> Path:
    data = src.read_bytes()
    dst = src.with_name(name)
    dst.write_bytes(data[: len(data) // 2])
    return dst


BROKEN_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated-pth": (lambda d: _first_half(_valid_pth(d), "half.pth"), "truncated, corrupt"),
    "truncated-safetensors": (
        lambda d: _first_half(_valid_safetensors(d), "half.safetensors"),
        "Not a valid safetensors file",
    ),
    "random-bytes": (
        lambda d: _write(d / "noise.pth", np.random.default_rng(0).bytes(4096)),
        "PyTorch checkpoint (truncated, corrupt or another format)",
    ),
    "text-file": (
        lambda d: _write(d / "notes.pth", b"these are not weights\n"),
        "PyTorch checkpoint (truncated, corrupt or another format)",
    ),
    "keras-file": (lambda d: _h5(d / "model.weights.h5"), "This is an HDF5 file"),
    "non-tensor-entry": (
        lambda d: _save(d, "mixed.pth", {"features.0.weight": torch.zeros(3), "features.0.bias": "oops"}),
        "is not a tensor",
    ),
    "no-tensors": (lambda d: _save(d, "meta.pth", {"epoch": 3, "lr": 0.1}), "holds no state dict"),
    "integer-weights": (
        lambda d: _save(d, "int8.pth", {"features.0.weight": torch.zeros(64, 3, 3, 3, dtype=torch.int8)}),
        "not floating point",
    ),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _h5(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    return path


@pytest.mark.parametrize("case", list(BROKEN_FILES))
def test_broken_checkpoint_is_refused(
    tmp_path: Path, out_dir: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    make, needle = BROKEN_FILES[case]
    checkpoint = make(tmp_path)
    code, err = _cli(capsys, "vgg11", "--checkpoint", str(checkpoint), "--output", str(out_dir / "x.weights.h5"))
    line = _assert_refused(code, err, needle, str(checkpoint))
    assert "arbitrary code" not in line
    assert _listing(out_dir) == []


BAD_PATHS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda d: d / "nope.pth", "not found"),
    "directory": (lambda d: d, "is a directory"),
    "empty": (lambda d: _write(d / "empty.pth", b""), "empty (0 bytes)"),
    "fifo": (lambda d: _fifo(d / "pipe.pth"), "not a regular file"),
}


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("case", list(BAD_PATHS))
def test_bad_checkpoint_path_is_refused_before_any_work(
    tmp_path: Path, out_dir: Path, capsys: pytest.CaptureFixture[str], no_work: None, case: str
) -> None:
    make, needle = BAD_PATHS[case]
    src = tmp_path / "src"
    src.mkdir()
    checkpoint = make(src)
    code, err = _cli(capsys, "vgg11", "--checkpoint", str(checkpoint), "--output", str(out_dir / "x.weights.h5"))
    _assert_refused(code, err, needle)
    assert _listing(out_dir) == []


def test_unreadable_checkpoint_is_refused(
    tmp_path: Path, out_dir: Path, capsys: pytest.CaptureFixture[str], no_work: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = _valid_pth(tmp_path)
    checkpoint.chmod(0)
    if IS_ROOT:
        _deny_access(monkeypatch, checkpoint, os.R_OK)
    code, err = _cli(capsys, "vgg11", "--checkpoint", str(checkpoint), "--output", str(out_dir / "x.weights.h5"))
    _assert_refused(code, err, "not readable (permission denied)")
    assert _listing(out_dir) == []


# --------------------------------------------------------------------------- weights of another network


@pytest.mark.parametrize("other", ["vgg16_bn", "vgg19"])
def test_state_dict_of_another_architecture_lists_keys(
    tmp_path: Path, out_dir: Path, capsys: pytest.CaptureFixture[str], other: str
) -> None:
    checkpoint = _save(tmp_path, f"{other}.pth", _fake_state(other))
    code, err = _cli(capsys, "vgg16", "--checkpoint", str(checkpoint), "--output", str(out_dir / "x.weights.h5"))
    line = _assert_refused(
        code, err, "missing keys: features.", f"These are {other} weights", f"python -m parity.convert {other}"
    )
    if other == "vgg16_bn":
        assert "unexpected keys: features.1.weight" in line  # the first batch norm
    else:
        assert "unexpected keys: features." in line
    assert _listing(out_dir) == []


def test_changed_conv_width_is_a_shape_mismatch(
    tmp_path: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _fake_state("vgg11")
    state["features.0.weight"] = torch.zeros(()).expand(32, 3, 3, 3)
    state["features.0.bias"] = torch.zeros(()).expand(32)
    checkpoint = _save(tmp_path, "narrow.pth", state)
    code, err = _cli(capsys, "vgg11", "--checkpoint", str(checkpoint), "--output", str(out_dir / "x.weights.h5"))
    _assert_refused(
        code,
        err,
        "shape mismatches: features.0.weight (32, 3, 3, 3) != (64, 3, 3, 3)",
        "features.0.bias (32,) != (64,)",
    )
    assert _listing(out_dir) == []


def test_features_only_state_dict_is_not_a_full_model(
    tmp_path: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = {k: v for k, v in _fake_state("vgg11").items() if k.startswith("features.")}
    checkpoint = _save(tmp_path, "features.pth", state)
    code, err = _cli(capsys, "vgg11", "--checkpoint", str(checkpoint), "--output", str(out_dir / "x.weights.h5"))
    _assert_refused(code, err, "no classifier.6.weight")
    assert _listing(out_dir) == []


def test_num_classes_disagreeing_with_checkpoint(
    tmp_path: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _save(tmp_path, "ten.pth", _fake_state("vgg11", num_classes=10))
    code, err = _cli(
        capsys,
        "vgg11",
        "--checkpoint",
        str(checkpoint),
        "--num-classes",
        "5",
        "--output",
        str(out_dir / "x.weights.h5"),
    )
    _assert_refused(
        code, err, "--num-classes 5 disagrees with the checkpoint's 10-class classifier", "Received: --num-classes 5"
    )
    assert _listing(out_dir) == []


# --------------------------------------------------------------------------- NaN and Inf


def test_nan_and_inf_are_refused_naming_the_tensors(
    tmp_path: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _fake_state("vgg11")
    bad = torch.zeros(64, 3, 3, 3)
    bad[0, 0, 0, 0] = float("nan")
    state["features.0.weight"] = bad
    state["classifier.6.bias"] = torch.full((1000,), float("inf"))
    checkpoint = _save(tmp_path, "nan.pth", state)
    code, err = _cli(capsys, "vgg11", "--checkpoint", str(checkpoint), "--output", str(out_dir / "x.weights.h5"))
    _assert_refused(code, err, "NaN or Inf", "features.0.weight (1 NaN)", "classifier.6.bias (1000 Inf)")
    assert _listing(out_dir) == []


def _features_checkpoint(path: Path, nan_in: str | None = None) -> None:
    """A vgg16 IMAGENET1K_FEATURES look-alike: random features, a NaN classifier (as torchvision's file has)."""
    config = PRESETS["vgg16"]
    state = {k: torch.from_numpy(v) for k, v in randomized_state_dict(config, seed=3, include_top=False).items()}
    if nan_in is not None:
        state[nan_in][0, 0, 0, 0] = float("nan")
    for key, shape in torch_parameter_shapes(config):
        if key.startswith("classifier."):
            state[key] = torch.full((), float("nan")).expand(*shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


@pytest.mark.slow
def test_features_weights_drop_the_nan_classifier_but_not_nan_features(capsys: pytest.CaptureFixture[str]) -> None:
    record = parity.core.catalog.WEIGHTS["vgg16"]["IMAGENET1K_FEATURES"]
    hub_file = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / record.filename
    target = converted_weights_path("vgg16", "IMAGENET1K_FEATURES")

    # NaN inside the features is refused: only the classifier is NaN by design.
    _features_checkpoint(hub_file, nan_in="features.28.weight")
    code, err = _cli(capsys, "vgg16", "--weights", "IMAGENET1K_FEATURES")
    _assert_refused(code, err, "features.28.weight (1 NaN)")
    assert _listing(target.parent) == []

    # The NaN classifier is dropped; the features convert, verify and load.
    _features_checkpoint(hub_file)
    code, err = _cli(capsys, "vgg16", "--weights", "IMAGENET1K_FEATURES")
    assert code == 0, err
    assert sorted(_listing(target.parent)) == sorted([target.name, sidecar_path(target).name])
    assert read_record(target)["include_top"] is False
    model = vgg_keras.VGG16(weights="IMAGENET1K_FEATURES", include_top=False)
    expected = torch.load(hub_file, weights_only=True)["features.0.weight"].numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[0], expected)
    with pytest.raises(ValueError, match="no usable classifier") as info:
        vgg_keras.VGG16(weights="IMAGENET1K_FEATURES", include_top=True)
    _assert_one_line(str(info.value), "include_top=False")


# --------------------------------------------------------------------------- output and report paths


def _init_args(*extra: str) -> list[str]:
    return ["vgg11", "--init", "random", "--no-verify", *extra]


def test_output_folder_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None) -> None:
    code, err = _cli(capsys, *_init_args("--output", str(tmp_path / "nowhere" / "x.weights.h5")))
    _assert_refused(code, err, "Output folder does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_output_folder_not_writable(
    out_dir: Path, capsys: pytest.CaptureFixture[str], no_work: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir.chmod(0o555)
    try:
        if IS_ROOT:
            _deny_access(monkeypatch, out_dir, os.W_OK)
        code, err = _cli(capsys, *_init_args("--output", str(out_dir / "x.weights.h5")))
    finally:
        out_dir.chmod(0o755)
    _assert_refused(code, err, "Output folder is not writable")
    assert _listing(out_dir) == []


def test_output_exists_needs_force(out_dir: Path, capsys: pytest.CaptureFixture[str], no_work: None) -> None:
    target = out_dir / "x.weights.h5"
    target.write_bytes(b"precious")
    code, err = _cli(capsys, *_init_args("--output", str(target)))
    _assert_refused(code, err, "pass --force")
    assert target.read_bytes() == b"precious"
    assert _listing(out_dir) == ["x.weights.h5"]


@pytest.mark.parametrize("name", ["x.weights.h5", "plain"])
def test_output_is_a_directory(out_dir: Path, capsys: pytest.CaptureFixture[str], no_work: None, name: str) -> None:
    folder = out_dir / name
    folder.mkdir()
    code, err = _cli(capsys, *_init_args("--output", str(folder), "--force"))
    _assert_refused(code, err, "Output is a directory")
    assert _listing(folder) == []


@pytest.mark.parametrize("name", ["x.h5", "x.keras", "x.weights.h5.bak"])
def test_output_with_wrong_suffix(out_dir: Path, capsys: pytest.CaptureFixture[str], no_work: None, name: str) -> None:
    code, err = _cli(capsys, *_init_args("--output", str(out_dir / name)))
    _assert_refused(code, err, "must end in .weights.h5")
    assert _listing(out_dir) == []


def test_random_weights_cannot_take_the_converted_cache_name(capsys: pytest.CaptureFixture[str], no_work: None) -> None:
    target = converted_weights_path("vgg11")
    target.parent.mkdir(parents=True)
    code, err = _cli(capsys, *_init_args("--output", str(target)))
    _assert_refused(code, err, "weights='converted' looks")
    assert _listing(target.parent) == []


def test_report_paths_are_checked_before_any_work(
    out_dir: Path, capsys: pytest.CaptureFixture[str], no_work: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = str(out_dir / "x.weights.h5")
    cases = {
        str(out_dir / "missing" / "r.json"): "Report folder does not exist",
        str(out_dir): "Report is a directory",
        output: "would overwrite the converted weights",
        output + ".json": "would overwrite the converted weights or their sidecar",
    }
    for report, needle in cases.items():
        code, err = _cli(capsys, *_init_args("--output", output, "--report", report))
        _assert_refused(code, err, needle)
    locked = out_dir / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if IS_ROOT:
            _deny_access(monkeypatch, locked, os.W_OK)
        code, err = _cli(capsys, *_init_args("--output", output, "--report", str(locked / "r.json")))
    finally:
        locked.chmod(0o755)
    _assert_refused(code, err, "Report folder is not writable")
    assert _listing(out_dir) == ["locked"] and _listing(locked) == []


def test_bad_numbers_are_refused(out_dir: Path, capsys: pytest.CaptureFixture[str], no_work: None) -> None:
    output = str(out_dir / "x.weights.h5")
    code, err = _cli(capsys, *_init_args("--output", output, "--num-classes", "0"))
    _assert_refused(code, err, "--num-classes must be a positive integer")
    code, err = _cli(capsys, *_init_args("--output", output, "--seed", "-1"))
    _assert_refused(code, err, "--seed must be a non-negative integer")
    assert _listing(out_dir) == []


@pytest.mark.slow
def test_failed_write_keeps_nothing(
    out_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full after the weights were written to their temporary file: no temporary file or report, old file kept."""
    target = out_dir / "x.weights.h5"
    target.write_bytes(b"previous")
    report = out_dir / "report.json"

    def disk_full(path: object) -> str:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))  # type: ignore[arg-type]

    monkeypatch.setattr(parity.core.weights_file, "file_sha256", disk_full)
    code, err = _cli(capsys, *_init_args("--output", str(target), "--report", str(report), "--force"))
    _assert_refused(code, err, "No space left on device", "nothing was kept")
    assert target.read_bytes() == b"previous"
    assert _listing(out_dir) == ["x.weights.h5"]


@pytest.mark.slow
def test_signal_swallowed_by_library_code_still_stops_the_write(
    out_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM whose exception was dropped (it landed in a weakref callback) still stops the rename."""
    real_sha256 = parity.core.weights_file.file_sha256

    def sha256_after_a_dropped_signal(path: object) -> str:
        monkeypatch.setattr(parity.interrupts, "_received_signal", int(signal.SIGTERM))
        return real_sha256(path)  # type: ignore[arg-type]

    monkeypatch.setattr(parity.core.weights_file, "file_sha256", sha256_after_a_dropped_signal)
    code, err = _cli(capsys, *_init_args("--output", str(out_dir / "x.weights.h5")))
    assert code == 128 + signal.SIGTERM
    assert _error_line(err).endswith("Received: SIGTERM")
    assert _listing(out_dir) == []


# --------------------------------------------------------------------------- converted files


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real converted vgg11 (random, 10 classes) with its sidecar, shared by the loading tests."""
    path = tmp_path_factory.mktemp("converted") / "vgg11_10.weights.h5"
    code = parity.convert.main(
        ["vgg11", "--init", "random-all", "--num-classes", "10", "--no-verify", "--quiet", "--output", str(path)]
    )
    assert code == 0
    assert sorted(_listing(path.parent)) == [path.name, sidecar_path(path).name]
    return path


def _place(src: Path, dst: Path, data: bytes | None = None) -> None:
    """Puts ``src`` (or ``data``) at ``dst`` as a new file, never writing through to ``src``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    if data is not None:
        dst.write_bytes(data)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _in_cache(converted: Path, *, sidecar: bool = True) -> Path:
    target = converted_weights_path("vgg11")
    _place(converted, target)
    if sidecar:
        _place(sidecar_path(converted), sidecar_path(target))
    return target


def _copy_prefix(src: Path, dst: Path, size: int) -> None:
    dst.unlink(missing_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(fin.read(size))


def _load_converted() -> None:
    vgg_keras.VGG11(weights="converted", include_top=False)


FIX = "python -m parity.convert vgg11 --weights IMAGENET1K_V1 --force"


@pytest.mark.slow
def test_valid_cached_file_loads(converted: Path) -> None:
    target = _in_cache(converted)
    model = vgg_keras.VGG11(weights="converted", include_top=False)
    with h5py.File(target, "r") as f:
        assert json.loads(f.attrs["vgg_parity"])["arch"] == "vgg11"
    assert model.get_layer("block1_conv1").get_weights()[0].shape == (3, 3, 3, 64)


def test_truncated_cached_file(converted: Path) -> None:
    target = _in_cache(converted)
    _copy_prefix(converted, target, converted.stat().st_size // 2)
    with pytest.raises(WeightsFileError) as info:
        _load_converted()
    _assert_one_line(str(info.value), str(target), "does not match the sha256", FIX)


def test_corrupted_byte_in_cached_file(converted: Path) -> None:
    target = _in_cache(converted)
    target.unlink()
    shutil.copyfile(converted, target)
    with open(target, "r+b") as f:
        f.seek(converted.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(WeightsFileError) as info:
        _load_converted()
    _assert_one_line(str(info.value), str(target), "does not match the sha256", FIX)


def test_missing_sidecar_in_cache(converted: Path) -> None:
    target = _in_cache(converted, sidecar=False)
    with pytest.raises(WeightsFileError) as info:
        _load_converted()
    _assert_one_line(str(info.value), str(target), f"no {sidecar_path(target).name} beside it", FIX)


@pytest.mark.parametrize("sidecar_text", ["{not json", json.dumps({"arch": "vgg11"}), json.dumps({"sha256": 42})])
def test_unreadable_sidecar(converted: Path, sidecar_text: str) -> None:
    target = _in_cache(converted)
    _place(converted, sidecar_path(target), sidecar_text.encode())
    with pytest.raises(WeightsFileError) as info:
        _load_converted()
    _assert_one_line(str(info.value), str(sidecar_path(target)), "cannot be checked", FIX)


def test_sidecar_with_another_hash(converted: Path) -> None:
    target = _in_cache(converted)
    record = json.loads(sidecar_path(converted).read_text())
    record["sha256"] = hashlib.sha256(b"something else").hexdigest()
    _place(converted, sidecar_path(target), json.dumps(record).encode())
    with pytest.raises(WeightsFileError) as info:
        _load_converted()
    _assert_one_line(str(info.value), "does not match the sha256", FIX)


def test_garbage_with_a_matching_sidecar(converted: Path) -> None:
    target = _in_cache(converted)
    garbage = np.random.default_rng(1).bytes(1 << 16)
    _place(converted, target, garbage)
    record = json.loads(sidecar_path(converted).read_text())
    record["sha256"] = hashlib.sha256(garbage).hexdigest()
    _place(converted, sidecar_path(target), json.dumps(record).encode())
    with pytest.raises(WeightsFileError) as info:
        _load_converted()
    _assert_one_line(str(info.value), str(target), "not a readable HDF5 weights file", FIX)


def test_cache_entry_that_is_a_directory(converted: Path) -> None:
    target = converted_weights_path("vgg11")
    target.mkdir(parents=True)
    with pytest.raises(WeightsFileError) as info:
        _load_converted()
    _assert_one_line(str(info.value), "not a regular file", FIX)


def test_truncated_file_by_path(converted: Path, tmp_path: Path) -> None:
    path = tmp_path / "half.weights.h5"
    _copy_prefix(converted, path, converted.stat().st_size // 2)
    with pytest.raises(WeightsFileError) as info:
        vgg_keras.VGG11(weights=str(path), classes=10)
    _assert_one_line(str(info.value), str(path), "not a readable HDF5 weights file", "--force")


def test_file_without_provenance_record(tmp_path: Path) -> None:
    path = _h5(tmp_path / "foreign.weights.h5")
    with pytest.raises(WeightsFileError) as info:
        vgg_keras.VGG11(weights=str(path))
    _assert_one_line(str(info.value), "no vgg-parity record")


def test_file_of_another_architecture(converted: Path) -> None:
    with pytest.raises(WeightsFileError) as info:
        vgg_keras.VGG13(weights=str(converted), classes=10)
    _assert_one_line(str(info.value), "holds weights for vgg11", "do not fit this model")


def test_classes_disagreeing_with_file(converted: Path) -> None:
    with pytest.raises(WeightsFileError) as info:
        vgg_keras.VGG11(weights=str(converted), classes=5)
    _assert_one_line(str(info.value), "10-class classifier: pass classes=10", "Received: classes=5")
    vgg_keras.VGG11(weights=str(converted), classes=10, include_top=False)  # the file itself is fine


# --------------------------------------------------------------------------- downloads


@pytest.fixture
def hub_dir() -> Path:
    return Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"


def test_download_with_wrong_hash_is_discarded(
    tmp_path: Path, hub_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    record = parity.core.catalog.WEIGHTS["vgg11"]["IMAGENET1K_V1"]
    served = tmp_path / "server" / record.filename
    served.parent.mkdir()
    torch.save({"features.0.weight": torch.zeros(1)}, served)
    assert not file_sha256(served).startswith(record.hash_prefix)
    monkeypatch.setitem(
        parity.core.catalog.WEIGHTS["vgg11"], "IMAGENET1K_V1", dataclasses.replace(record, url=served.as_uri())
    )
    code, err = _cli(capsys, "vgg11", "--no-verify")
    _assert_refused(
        code, err, f"does not match the sha256 prefix {record.hash_prefix}", "discarded", "invalid hash value"
    )
    assert _listing(hub_dir) == []
    assert _listing(converted_weights_path("vgg11").parent) == []


def test_no_network_says_how_to_convert_a_local_file(
    hub_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    code, err = _cli(capsys, "vgg11")
    _assert_refused(
        code,
        err,
        "Could not download https://download.pytorch.org/",
        "--checkpoint PATH",
        "Received: weights='IMAGENET1K_V1'",
    )
    assert _listing(hub_dir) == []
    assert _listing(converted_weights_path("vgg11").parent) == []


def test_corrupt_file_in_hub_cache(tmp_path: Path, hub_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = parity.core.catalog.WEIGHTS["vgg11"]["IMAGENET1K_V1"]
    hub_dir.mkdir(parents=True)
    _first_half(_valid_pth(tmp_path), "half.pth").rename(hub_dir / record.filename)
    code, err = _cli(capsys, "vgg11")
    _assert_refused(code, err, f"cached download {hub_dir / record.filename} is unusable", "delete it")
    assert _listing(converted_weights_path("vgg11").parent) == []


# --------------------------------------------------------------------------- killed and concurrent writers


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "parity.convert", *args],
        cwd=ROOT,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name]


def _kill_mid_write(proc: subprocess.Popen[str], folder: Path, sig: int, min_bytes: int = 32 << 20) -> bool:
    """Sends ``sig`` once a temporary weights file holds ``min_bytes``; False if the writer finished first."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        temps = _temps(folder)
        sizes = [p.stat().st_size for p in temps if p.exists()] if temps else []
        if sizes and max(sizes) >= min_bytes:
            proc.send_signal(sig)
            return True
        time.sleep(0.01)
    return False


def _assert_complete(path: Path) -> None:
    sidecar = json.loads(sidecar_path(path).read_text())
    assert file_sha256(path) == sidecar["sha256"]
    assert read_record(path)["source"] == sidecar["source"]


@pytest.mark.full  # converts full-size vgg11 in a child process
@pytest.mark.extended
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_writer_leaves_no_partial_file(tmp_path: Path, sig: signal.Signals) -> None:
    """A signal while the weights are being written: never a partial file under the target name.

    SIGKILL cannot be handled, so a hidden temporary file may stay behind; after
    SIGTERM the converter removes it and exits with 128 + 15.
    """
    target = tmp_path / "x.weights.h5"
    proc = _start("vgg11", "--init", "random", "--no-verify", "--quiet", "--output", str(target))
    try:
        killed = _kill_mid_write(proc, tmp_path, sig)
        code, err = proc.wait(timeout=240), proc.communicate()[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed, f"the conversion finished before its temporary file held 32 MiB, so nothing was interrupted: {err}"
    if sig == signal.SIGTERM:
        assert code == 128 + signal.SIGTERM, err
    if target.exists():  # the signal came during the renames: then the file is complete, and said to be
        _assert_complete(target)
        if sig == signal.SIGTERM:
            assert "they are complete" in _error_line(err)
        return
    assert not sidecar_path(target).exists(), _listing(tmp_path)
    if sig == signal.SIGTERM:
        line = _error_line(err)
        assert "no partial file was left" in line and line.endswith("Received: SIGTERM")
        assert _listing(tmp_path) == [], "temporary files left after SIGTERM"
    else:
        assert code == -signal.SIGKILL
        assert all(name.startswith(".x.weights.h5.") for name in _listing(tmp_path))  # at most hidden temporaries


@pytest.mark.slow
def test_signal_during_the_final_renames_keeps_the_complete_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM held back during the renames lands after them: the exit says so, and weights and report stay."""
    target, report = tmp_path / "x.weights.h5", tmp_path / "report.json"
    flush_folder = parity.core.atomic._fsync_fd

    def flush_then_signal(fd: int) -> None:  # runs inside the held-signals block, after the renames
        flush_folder(fd)
        if target.exists():
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(parity.core.atomic, "_fsync_fd", flush_then_signal)
    code, err = _cli(
        capsys, "vgg11", "--init", "random", "--no-verify", "--output", str(target), "--report", str(report)
    )
    assert code == 128 + signal.SIGTERM
    line = _error_line(err)
    assert f"just after {target} and its sidecar were renamed into place; they are complete" in line, line
    _assert_complete(target)
    assert json.loads(report.read_text())["passed"] is True
    assert _listing(tmp_path) == sorted([target.name, sidecar_path(target).name, report.name])


@pytest.mark.full  # two full-size vgg11 conversions at once
@pytest.mark.extended
def test_two_writers_at_once_leave_one_valid_file(tmp_path: Path) -> None:
    target = tmp_path / "x.weights.h5"
    procs = [
        _start(
            "vgg11",
            "--init",
            "random-all",
            "--seed",
            str(seed),
            "--no-verify",
            "--quiet",
            "--force",
            "--output",
            str(target),
        )
        for seed in (0, 1)
    ]
    try:
        results = [(p.wait(timeout=400), p.communicate()[1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for code, err in results:
        assert code == 0, err
    assert _listing(tmp_path) == [target.name, sidecar_path(target).name]  # no lock or temporary files
    _assert_complete(target)
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    vgg_keras.VGG11(weights=str(target), include_top=False)

"""The CIFAR-10 loader: both published layouts, the same arrays, and refusals of broken or hostile files."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from parity.cifar import data as cifar_data
from parity.cifar import download as cifar_download
from parity.cifar import load_cifar10
from parity.cifar import read as cifar
from parity.cifar import write as cifar_write
from parity.cifar.data import CifarData, CifarError, normalize
from parity.cifar.write import write_binary_folder, write_python_folder
from tests.conftest import run_python


def _synthetic(train: int = 10, test: int = 4, seed: int = 0) -> CifarData:
    rng = np.random.default_rng(seed)
    return CifarData(
        rng.integers(0, 256, (train, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, 10, train).astype(np.int64),
        rng.integers(0, 256, (test, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, 10, test).astype(np.int64),
        cifar_data.CLASSES,
        "synthetic",
    )


def _same(a: CifarData, b: CifarData) -> None:
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
    assert a.classes == b.classes


def test_binary_and_python_layouts_give_the_same_arrays(tmp_path: Path) -> None:
    data = _synthetic()
    write_binary_folder(tmp_path / cifar_data.BIN_DIR, data)
    write_python_folder(tmp_path / cifar_data.PY_DIR, data)
    from_bin = load_cifar10(tmp_path / cifar_data.BIN_DIR)
    from_py = load_cifar10(tmp_path / cifar_data.PY_DIR)
    _same(from_bin, data)
    _same(from_py, data)
    assert load_cifar10(tmp_path).source.endswith("(binary)")  # the parent folder: binary first
    assert from_bin.train_images.dtype == np.uint8 and from_bin.train_labels.dtype == np.int64


def test_binary_record_layout_is_label_then_chw_planes(tmp_path: Path) -> None:
    """A hand-made record: label byte, then the red, green and blue planes, row-major."""
    folder = tmp_path / cifar_data.BIN_DIR
    write_binary_folder(folder, _synthetic(train=5, test=1))
    record = np.zeros(cifar_data.RECORD_BYTES, np.uint8)
    record[0] = 7
    planes = record[1:].reshape(3, 32, 32)
    planes[0, 0, 1] = 11  # red, row 0, column 1
    planes[2, 31, 0] = 22  # blue, row 31, column 0
    (folder / "test_batch.bin").write_bytes(record.tobytes())
    data = load_cifar10(folder)
    assert data.test_labels.tolist() == [7]
    assert data.test_images[0, 0, 0, 1] == 11 and data.test_images[0, 2, 31, 0] == 22
    assert int(data.test_images.sum()) == 33


def test_python_pickles_are_written_as_the_official_ones(tmp_path: Path) -> None:
    """Protocol 2, byte strings, and exactly the three numpy globals the official batches reference."""
    folder = write_python_folder(tmp_path / cifar_data.PY_DIR, _synthetic())
    raw = (folder / "data_batch_1").read_bytes()
    ops = list(pickletools.genops(raw))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 2
    globals_ = {arg for op, arg, _ in ops if op.name == "GLOBAL"}
    assert globals_ == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    batch = cifar.RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}


def test_numpy2_pickles_load_too(tmp_path: Path) -> None:
    """A batch re-pickled by numpy 2 names ``numpy._core.multiarray``: admitted as well."""
    folder = write_python_folder(tmp_path / cifar_data.PY_DIR, _synthetic())
    data = np.arange(3072 * 2, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    raw = pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=4)
    assert b"numpy._core.multiarray" in raw or b"numpy.core.multiarray" in raw
    (folder / "test_batch").write_bytes(raw)
    assert np.array_equal(load_cifar10(folder).test_images.reshape(2, -1), data)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["data", "labels", "meta"])
def test_pickle_carrying_code_is_refused_without_running_it(tmp_path: Path, where: str) -> None:
    folder = write_python_folder(tmp_path / cifar_data.PY_DIR, _synthetic())
    marker = tmp_path / "pwned"
    payload = _Payload(marker)
    if where == "meta":
        (folder / "batches.meta").write_bytes(cifar_write.python2_pickle({b"label_names": payload}))
    else:
        batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
        batch[b"data" if where == "data" else b"labels"] = payload
        (folder / "data_batch_3").write_bytes(cifar_write.python2_pickle(batch))
    with pytest.raises(CifarError) as info:
        load_cifar10(folder)
    message = str(info.value)
    assert "\n" not in message and "refused global posix.system" in message and "Received:" in message, message
    assert not marker.exists()


def test_refusal_lists_every_other_global(tmp_path: Path) -> None:
    folder = write_python_folder(tmp_path / cifar_data.PY_DIR, _synthetic())
    # builtins.eval via the GLOBAL opcode, written by hand.
    evil = b"\x80\x02cbuiltins\neval\nq\x00X\x0c\x00\x00\x00print('hi')!q\x01\x85q\x02Rq\x03."
    (folder / "test_batch").write_bytes(evil)
    with pytest.raises(CifarError, match=r"refused global builtins\.eval"):
        load_cifar10(folder)


@pytest.mark.parametrize(
    "case",
    ["truncated_record", "empty", "label_out_of_range", "missing_batch", "meta_not_text"],
)
def test_broken_binary_files_are_refused_in_one_line(tmp_path: Path, case: str) -> None:
    folder = write_binary_folder(tmp_path / cifar_data.BIN_DIR, _synthetic())
    target = folder / "data_batch_2.bin"
    if case == "truncated_record":
        target.write_bytes(target.read_bytes()[:-100])
        expected = f"{cifar_data.RECORD_BYTES}-byte records"
    elif case == "empty":
        target.write_bytes(b"")
        expected = "Received: .* 0 bytes"
    elif case == "label_out_of_range":
        raw = bytearray(target.read_bytes())
        raw[0] = 10
        target.write_bytes(bytes(raw))
        expected = "label 10"
    elif case == "missing_batch":
        target.unlink()
        expected = "lacks data_batch_2.bin"
    else:
        (folder / "batches.meta.txt").write_bytes(b"\xff\xfe\x00garbage")
        expected = "ASCII class names"
    with pytest.raises(CifarError, match=expected) as info:
        load_cifar10(folder)
    assert "\n" not in str(info.value) and "Received:" in str(info.value)


@pytest.mark.parametrize("case", ["truncated", "wrong_width", "label_count", "not_a_dict", "object_array", "too_large"])
def test_broken_python_files_are_refused_in_one_line(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_python_folder(tmp_path / cifar_data.PY_DIR, _synthetic())
    target = folder / "data_batch_1"
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    if case == "truncated":
        target.write_bytes(target.read_bytes()[:5000])
    elif case == "wrong_width":
        target.write_bytes(cifar_write.python2_pickle({**good, b"data": np.zeros((2, 3000), np.uint8)}))
    elif case == "label_count":
        target.write_bytes(cifar_write.python2_pickle({**good, b"labels": [0]}))
    elif case == "not_a_dict":
        target.write_bytes(cifar_write.python2_pickle([1, 2, 3]))
    elif case == "object_array":
        target.write_bytes(cifar_write.python2_pickle({**good, b"data": np.array([[b"x"] * 3072] * 2, dtype=object)}))
    else:
        monkeypatch.setattr(cifar, "MAX_PICKLE_BYTES", 1000)
    with pytest.raises(CifarError) as info:
        load_cifar10(folder)
    assert "\n" not in str(info.value) and "Received:" in str(info.value), info.value


def test_cli_exit_code_2_on_a_refused_folder(tmp_path: Path) -> None:
    folder = write_binary_folder(tmp_path / cifar_data.BIN_DIR, _synthetic())
    (folder / "test_batch.bin").write_bytes(b"\x00" * 3000)
    result = run_python("", "-m", "parity.cifar", "check", str(folder))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Received:" in result.stderr
    assert run_python("", "-m", "parity.cifar", "check", str(tmp_path / "nowhere")).returncode == 2


def test_loader_imports_no_framework() -> None:
    code = (
        "import sys, parity.cifar\n"
        "loaded = [m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_normalize_equals_torchvision_transforms() -> None:
    import torch
    from torchvision import transforms

    images = _synthetic(train=3).train_images
    pipeline = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    expected = torch.stack([pipeline(np.ascontiguousarray(img.transpose(1, 2, 0))) for img in images]).numpy()
    assert np.array_equal(normalize(images), expected)


def test_digits_folder_is_real_cifar_shaped_data(tmp_path: Path) -> None:
    data = cifar_write.digits_as_cifar()
    assert data.train_images.shape == (1500, 3, 32, 32) and data.test_images.shape == (297, 3, 32, 32)
    assert set(np.unique(data.train_labels)) == set(range(10))
    assert data.train_images.max() == 255 and np.array_equal(data.train_images[:, 0], data.train_images[:, 2])
    _same(load_cifar10(write_binary_folder(tmp_path / "d", data)), data)


def _archive(tmp_path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        if symlink is not None:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return path


@pytest.mark.parametrize(
    ("members", "symlink"),
    [
        ({"cifar-10-batches-bin/../../evil": b"x"}, None),
        ({"/tmp/evil": b"x"}, None),
        ({"elsewhere/file": b"x"}, None),
        ({"cifar-10-batches-bin/ok.bin": b"x"}, "cifar-10-batches-bin/link"),
    ],
)
def test_download_refuses_unsafe_archives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, members: dict[str, bytes], symlink: str | None
) -> None:
    """The download path without network: a local archive served as the official one, with its md5 patched in."""
    import hashlib
    import urllib.request

    archive = _archive(tmp_path, members, symlink)
    monkeypatch.setitem(
        cifar_download.ARCHIVES,
        "binary",
        cifar_download.Archive(archive.as_uri(), hashlib.md5(archive.read_bytes()).hexdigest(), cifar_data.BIN_DIR),
    )
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: open(url.removeprefix("file://"), "rb"))  # noqa: SIM115
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CifarError, match="nothing was extracted") as info:
        cifar_download.download(out, "binary")
    assert "\n" not in str(info.value)
    assert list(out.iterdir()) == [] and not (tmp_path / "evil").exists()


def test_download_checks_the_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.request

    archive = _archive(tmp_path, {"cifar-10-batches-bin/batches.meta.txt": b"a\nb\n"})
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: open(archive, "rb"))  # noqa: SIM115
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CifarError, match="published md5 c32a1d4ab5d03f1284b67883e8d87530"):
        cifar_download.download(out, "binary")
    assert list(out.iterdir()) == []
    good = cifar_download.Archive(
        cifar_download.ARCHIVES["binary"].url,
        __import__("hashlib").md5(archive.read_bytes()).hexdigest(),
        cifar_data.BIN_DIR,
    )
    monkeypatch.setitem(cifar_download.ARCHIVES, "binary", good)
    assert cifar_download.download(out, "binary") == out / cifar_data.BIN_DIR
    assert (out / cifar_data.BIN_DIR / "batches.meta.txt").read_bytes() == b"a\nb\n"


def test_published_archives() -> None:
    assert cifar_download.ARCHIVES["binary"].url == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    assert cifar_download.ARCHIVES["binary"].md5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert cifar_download.ARCHIVES["python"].url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert cifar_download.ARCHIVES["python"].md5 == "c58f30108f718f92721af3b95e74349a"
    assert sys.modules["parity.cifar.download"] is cifar_download

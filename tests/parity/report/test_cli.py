"""``python -m parity.report``: table, JSON and plot."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from parity.compare import LOGIT_RTOL
from parity.report import main


@pytest.mark.full  # full-size vgg11 and vgg11_bn
def test_report_writes_table_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["vgg11", "vgg11_bn", "--sizes", "32", "40x64", "--mode", "xla", "predict", "--out-dir", str(tmp_path)])
        == 0
    )
    out = capsys.readouterr()
    assert "| tensorflow | vgg11_bn | channels_last | 40x64 | predict |" in out.out and "[8/8]" in out.err
    data = json.loads((tmp_path / "parity_report.json").read_text())
    assert data["modes"] == ["xla", "predict"]
    assert [(c["arch"], c["mode"]) for c in data["cases"][:4]] == [("vgg11", m) for m in ("xla", "predict")] * 2
    assert all(c["max_rel"] <= LOGIT_RTOL and c["top1"] == 1.0 for c in data["cases"])
    assert [b["name"] for b in data["cases"][0]["blocks"]] == [
        "block1",
        "block2",
        "block3",
        "block4",
        "block5",
        "logits",
    ]
    assert (tmp_path / "parity_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("parity_report.json", "parity_report.png"):  # as any new file, not private temporaries renamed
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


@pytest.mark.full  # full-size vgg11_bn
def test_report_precision_axis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--precision bf16`` on the photos: mixed_bfloat16 judged at the derived bounds, torch's autocast beside."""
    argv = ["vgg11_bn", "--sizes", "32", "--mode", "predict", "--precision", "fp32", "bf16", "--inputs", "photos"]
    assert main([*argv, "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| tensorflow | vgg11_bn | bf16 | channels_last | 32x32 | predict |" in out
    data = json.loads((tmp_path / "parity_report.json").read_text())
    assert data["precisions"] == ["fp32", "bf16"] and data["inputs"] == "photos"
    fp32, bf16 = data["cases"]
    for case in (fp32, bf16):  # six photos: top-1 is a share of six, and the top-2 gap says how close a flip is
        assert case["inputs"] == "photos" and round(case["top1"] * 6, 6).is_integer() and case["top2_gap"] > 0
    assert fp32["max_rel"] <= LOGIT_RTOL and fp32["precision"] == "fp32"
    assert bf16["floor"] <= bf16["max_rel"] <= bf16["rtol"] and bf16["passed"]
    assert bf16["floor"] <= bf16["torch_autocast_max_rel"] <= bf16["rtol"]


def test_report_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vgg17", "--out-dir", str(tmp_path)]) == 2
    assert "Received: vgg17" in capsys.readouterr().err
    assert main(["vgg11", "--out-dir", str(tmp_path / "missing")]) == 2
    assert main(["vgg11", "--inputs", "photos", "--sizes", "224", "40x64", "--out-dir", str(tmp_path)]) == 2
    assert "square sizes only. Received: --sizes ... 40x64" in capsys.readouterr().err
    for bad in (["--sizes", "16"], ["--mode", "jit"], ["--inputs", "cats"]):
        with pytest.raises(SystemExit) as info:
            main(["vgg11", *bad])
        assert info.value.code == 2


@pytest.mark.full  # full-size vgg11
@pytest.mark.extended
def test_report_training_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vgg11", "--sizes", "32", "--train-steps", "6", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| 6 | 0.005 |" in out and "After 6 steps" in out  # the rate drops after 3 steps
    data = json.loads((tmp_path / "training_report.json").read_text())
    assert data["steps"] == 6 and data["passed"] and len(data["torch_losses"]) == len(data["keras_losses"]) == 6
    assert (tmp_path / "training_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["vgg11", "--train-steps", "0", "--out-dir", str(tmp_path)]) == 2
    assert "Received: --train-steps 0" in capsys.readouterr().err

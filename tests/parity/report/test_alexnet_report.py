"""``python -m parity.report alexnet``: the report's table and JSON for AlexNet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parity.compare import LOGIT_RTOL
from parity.report import main


@pytest.mark.full
@pytest.mark.extended
def test_report_on_alexnet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["alexnet", "--sizes", "224", "63", "300x200", "--mode", "eager", "xla", "--out-dir", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "| tensorflow | alexnet | channels_last | 300x200 | xla |" in out.out
    data = json.loads((tmp_path / "parity_report.json").read_text())
    assert len(data["cases"]) == 6
    assert all(c["max_rel"] <= LOGIT_RTOL and c["top1"] == 1.0 for c in data["cases"])
    assert [b["name"] for b in data["cases"][0]["blocks"]] == ["block1", "block2", "block3", "logits"]


def test_sizes_below_alexnets_smallest_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alexnet", "--sizes", "224", "32", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "at least 63 px" in err and err.endswith("Received: --sizes ... 32x32")

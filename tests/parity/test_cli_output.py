"""What the ``python -m parity.*`` commands print around their work.

Every option has help text in plain words (no reStructuredText markup), and
no command prints TensorFlow's or CUDA's own log lines (CPU features, oneDNN,
``failed call to cuInit``) unless given ``--verbose``: each ``main`` sets
``TF_CPP_MIN_LOG_LEVEL=3`` before anything loads TensorFlow, unless the
environment chose a level.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

import pytest

import parity.cifar.cli
import parity.convert.cli
import parity.export.cli
import parity.report.cli
import parity.train.cli
from tests.conftest import run_python

CLIS: dict[str, ModuleType] = {
    "convert": parity.convert.cli,
    "report": parity.report.cli,
    "export": parity.export.cli,
    "train": parity.train.cli,
    "cifar": parity.cifar.cli,
}
#: reStructuredText that argparse would print as is.
RST = re.compile(r"``|:(class|func|mod|data|meth|attr):`")
#: A line of TensorFlow's, XLA's or absl's C++ logging, or cpu_feature_guard's continuation line.
FRAMEWORK_LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |[IWEF]\d{4} \d\d:|WARNING: All log messages|"
    r"To enable the following instructions)"
)


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize("name", CLIS)
def test_every_option_has_help_without_markup(name: str) -> None:
    for parser in _parsers(CLIS[name].build_parser()):
        assert not RST.search(parser.format_help()), parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{parser.prog}: {'/'.join(action.option_strings) or action.dest} has no help"


def _refused(name: str, tmp: Path) -> list[str]:
    """Arguments each command refuses (exit 2) before it loads a framework."""
    missing = tmp / "missing"
    return {
        "convert": ["vgg11", "--init", "random", "--output", str(missing / "x.weights.h5")],
        "report": ["vgg11", "--out-dir", str(missing)],
        "export": ["vgg11", "--weights", str(missing / "x.weights.h5"), "--format", "tflite", "--output", str(tmp)],
        "train": ["--data", str(missing), "--output", str(missing / "out")],
    }[name]


@pytest.mark.parametrize("name", ["convert", "report", "export", "train"])
@pytest.mark.parametrize(
    ("extra", "preset", "expected"),
    [
        pytest.param([], None, "3", id="quiet"),
        pytest.param(["--verbose"], None, None, id="verbose"),
        pytest.param([], "1", "1", id="user-level-kept"),
    ],
)
def test_tensorflow_logs_hidden_unless_verbose(
    name: str,
    extra: Sequence[str],
    preset: str | None,
    expected: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    if preset is not None:
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", preset)
    main: Callable[[Sequence[str]], int] = CLIS[name].main
    assert main([*_refused(name, tmp_path), *extra]) == 2
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == expected


def _framework_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if FRAMEWORK_LOG_LINE.match(line) or "cuInit" in line]


@pytest.mark.slow
def test_conversion_prints_only_its_own_lines(tmp_path: Path) -> None:
    out = tmp_path / "v11.weights.h5"
    args = ("-m", "parity.convert", "vgg11", "--init", "random-all", "--seed", "0", "--output", str(out))
    result = run_python("", *args, unset=("TF_CPP_MIN_LOG_LEVEL",))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "top-1 agreement 100%" in result.stderr
    assert _framework_lines(result.stderr) == []


@pytest.mark.slow
def test_report_prints_only_its_own_lines(tmp_path: Path) -> None:
    args = ("-m", "parity.report", "vgg11", "--sizes", "32", "--mode", "eager", "--out-dir", str(tmp_path))
    result = run_python("", *args, unset=("TF_CPP_MIN_LOG_LEVEL",))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| vgg11 |" in result.stdout
    assert _framework_lines(result.stderr) == []


def test_conversion_on_demand_runs_a_quiet_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorFlow sets TF_CPP_MIN_LOG_LEVEL=1 in a process that loaded it; the child must not inherit that."""
    import subprocess

    import vgg_keras.on_demand
    from parity.core.catalog import get_weights_record

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    seen: dict[str, object] = {}
    path = tmp_path / "vgg11.weights.h5"

    def fake_run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.update(kwargs, argv=argv)
        path.write_bytes(b"")
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(vgg_keras.on_demand.subprocess, "run", fake_run)
    vgg_keras.on_demand.convert_on_demand(get_weights_record("vgg11"), path)
    env = seen["env"]
    assert isinstance(env, dict) and env["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert env["KERAS_HOME"] == os.environ["KERAS_HOME"]
    assert "--verbose" not in seen["argv"]  # type: ignore[operator]

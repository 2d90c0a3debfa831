"""Converting on demand under faults: a killed conversion's temporary file, and two processes asking at once.

The child that converts is replaced by a small writer that stages its file with the converter's own staging
(:func:`parity.core.weights_file.stage_converted_weights`: the same temporary name, held the same way) and
logs each conversion it starts, so the cases take seconds; the extended tier repeats them with the real
converter at full size.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import parity.core.atomic
import vgg_keras.on_demand
from parity.core.atomic import remove_stale_temps
from parity.core.catalog import cache_dir, get_weights_record
from parity.core.weights_file import TEMP_SUFFIX, sidecar_path
from tests.conftest import ROOT, run_python

pytestmark = pytest.mark.slow

#: A stand-in for ``python -m parity.convert``: argv is the target, a log file, and seconds to wait before
#: committing. It logs one line when it starts converting, then stages a file as the converter does.
WRITER = """
import sys, time
from pathlib import Path
import h5py, numpy as np
from parity.core.weights_file import stage_converted_weights
target, log, delay = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
with open(log, "a") as f:
    f.write(f"converting {target.name}\\n")
with stage_converted_weights(target) as staged:
    with h5py.File(staged.path, "w") as f:
        f.create_dataset("weights", data=np.ones(1 << 20, np.float32))  # 4 MiB
    print("staged", flush=True)
    time.sleep(delay)
    staged.commit({"arch": "vgg11"})
"""

#: Seconds a waiting process may take beyond the writer's delay (interpreter start, Keras import) on 2 busy cores.
SLACK = 120


def _writer_command(log: Path, delay: float) -> object:
    def command(record: object, path: Path) -> list[str]:
        return [sys.executable, "-c", WRITER, os.fspath(path), os.fspath(log), str(delay)]

    return command


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(f".*{TEMP_SUFFIX}"))


def _start_writer(target: Path, log: Path, delay: float) -> subprocess.Popen[str]:
    """A writer in its own process, returned once its temporary file exists and is held."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, os.fspath(target), os.fspath(log), str(delay)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "staged"
    return child


def test_killed_conversion_leaves_nothing_after_the_next_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = get_weights_record("vgg11")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / record.keras_filename
    log = tmp_path / "conversions.log"
    killed = _start_writer(target, log, delay=600)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert len(_temps(folder)) == 1 and not target.exists()  # what a SIGKILL leaves: the reported leak

    monkeypatch.setattr(vgg_keras.on_demand, "conversion_command", _writer_command(log, delay=0))
    vgg_keras.on_demand.convert_on_demand(record, target)
    assert sorted(p.name for p in folder.iterdir()) == sorted([target.name, sidecar_path(target).name])
    assert log.read_text().count("converting") == 2


def test_a_live_writers_file_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "vgg_parity_vgg11_IMAGENET1K_V1.weights.h5"
    log = tmp_path / "conversions.log"
    stale = _start_writer(target, log, delay=600)
    stale.send_signal(signal.SIGKILL)
    stale.wait()
    [left] = _temps(tmp_path)
    live = _start_writer(target, log, delay=600)
    try:
        [held] = [p for p in _temps(tmp_path) if p != left]
        assert remove_stale_temps(target, TEMP_SUFFIX) == [left]
        assert _temps(tmp_path) == [held]
        # The check bites: taken for unheld, the live writer's file would go too.
        monkeypatch.setattr(parity.core.atomic, "is_held", lambda path: False)
        assert remove_stale_temps(target, TEMP_SUFFIX) == [held]
    finally:
        live.kill()
        live.wait()


#: A process asking for converted weights, with the converter replaced by the writer above.
#: ``vgg_keras.on_demand`` needs no Keras: the package's ``__init__`` (Keras, TensorFlow) is skipped so that the
#: children start in a second on two busy cores; the extended test runs the real thing.
ASKER = """
import sys, time, types
from pathlib import Path
package = types.ModuleType("vgg_keras")
package.__path__ = [str(Path.cwd() / "vgg_keras")]
sys.modules["vgg_keras"] = package
import vgg_keras.on_demand as on_demand
from parity.core.catalog import get_weights_record
target, log = Path(sys.argv[1]), Path(sys.argv[2])
on_demand.conversion_command = lambda record, path: [sys.executable, "-c", sys.argv[3], str(path), str(log), "5"]
on_demand.convert_on_demand(get_weights_record("vgg11"), target)
print("done", target.exists())
"""


def test_two_processes_asking_at_once_convert_once(tmp_path: Path) -> None:
    target = tmp_path / "vgg_parity_vgg11_IMAGENET1K_V1.weights.h5"
    log = tmp_path / "conversions.log"
    args = [sys.executable, "-c", ASKER, os.fspath(target), os.fspath(log), WRITER]
    started = time.monotonic()
    askers = [
        subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [a.communicate(timeout=SLACK) for a in askers]
    assert [a.returncode for a in askers] == [0, 0], outputs
    assert all(out.splitlines()[-1] == "done True" for out, _ in outputs), outputs
    assert log.read_text().count("converting") == 1  # one conversion for the two
    waited = [err for _, err in outputs if "Waiting for another process converting vgg11" in err]
    assert len(waited) == 1 and time.monotonic() - started < SLACK  # the second asked while the first converted
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, sidecar_path(target).name, log.name])


def test_without_the_claim_both_would_convert(tmp_path: Path) -> None:
    """The check bites: the same two askers, with the claim replaced by no lock, convert twice."""
    target = tmp_path / "vgg_parity_vgg11_IMAGENET1K_V1.weights.h5"
    log = tmp_path / "conversions.log"
    unclaimed = ASKER.replace(
        "import vgg_keras.on_demand as on_demand\n",
        "import contextlib, vgg_keras.on_demand as on_demand\n"
        "on_demand.claim = lambda path, on_wait=None: contextlib.nullcontext()\n",
    )
    args = [sys.executable, "-c", unclaimed, os.fspath(target), os.fspath(log), WRITER]
    askers = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for a in askers:
        a.communicate(timeout=SLACK)
    assert log.read_text().count("converting") == 2


@pytest.mark.full
@pytest.mark.extended
def test_real_conversion_killed_then_two_processes_at_once(tmp_path: Path) -> None:
    """Full size: ``weights="converted"`` for vgg11 from a cached download, killed mid-write, then asked twice."""
    import torch

    from parity.convert.random_weights import randomized_state_dict
    from parity.core.config import PRESETS
    from tests.conftest import torch_state_dict

    record = get_weights_record("vgg11")
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(torch_state_dict(randomized_state_dict(PRESETS["vgg11"], seed=12)), hub / record.filename)
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    converter = subprocess.Popen(vgg_keras.on_demand.conversion_command(record, folder / record.keras_filename))
    deadline = time.monotonic() + 300
    while not _temps(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    converter.send_signal(signal.SIGKILL)
    converter.wait()
    assert _temps(folder), "the converter was killed before it staged its file"

    code = "import vgg_keras\nvgg_keras.VGG11(weights='converted', input_shape=(32, 32, 3))\nprint('loaded')\n"
    askers = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [a.communicate(timeout=900) for a in askers]
    assert [a.returncode for a in askers] == [0, 0], [err[-2000:] for _, err in outputs]
    assert sum(err.count("Converting vgg11 IMAGENET1K_V1") for _, err in outputs) == 1
    target = folder / record.keras_filename
    assert sorted(p.name for p in folder.iterdir()) == sorted([target.name, sidecar_path(target).name])
    assert run_python(code).stdout.strip() == "loaded"


def test_missing_cache_folder_is_created_for_the_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keras_home" / "models" / "vgg_parity_vgg11_IMAGENET1K_V1.weights.h5"
    log = tmp_path / "conversions.log"
    monkeypatch.setattr(vgg_keras.on_demand, "conversion_command", _writer_command(log, delay=0))
    vgg_keras.on_demand.convert_on_demand(get_weights_record("vgg11"), target)
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([target.name, sidecar_path(target).name])

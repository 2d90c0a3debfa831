"""Converting torchvision's weights into Keras' cache on first use, in a child process.

``weights="converted"`` (or a torchvision weights name) whose file is not yet
in Keras' cache runs ``python -m parity.convert`` in a separate interpreter:
this process has TensorFlow loaded, and importing torchvision's triton after
TensorFlow crashes the interpreter. The child writes the file atomically with
its sidecar, and prints only its own lines (TensorFlow's C++ logging off);
:func:`vgg_keras.weights.load_converted_weights` then checks it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from parity.core.catalog import WeightsRecord

__all__ = ["convert_on_demand"]


def convert_on_demand(record: WeightsRecord, path: Path) -> None:
    """Runs ``python -m parity.convert`` in a child process to fill the cache.

    The child is given ``--force``: if another process converts the same
    weights at the same time, both write a complete file and the last rename
    wins, so neither fails on the other's file.

    Args:
        record: The torchvision weights to convert.
        path: Where the converted file goes (in Keras' cache).

    Raises:
        FileNotFoundError: If torch or torchvision is not installed.
        RuntimeError: If the conversion fails.
    """
    command = f"python -m parity.convert {record.arch} --weights {record.name}"
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
        raise FileNotFoundError(
            f"Converted weights for {record.arch} ({record.name}) are not in {path.parent}; converting them needs "
            f"torch and torchvision (pip install 'vgg-parity[torch]'), then run `{command}`. "
            f"Received: weights='converted'"
        )
    print(f"Converting {record.arch} {record.name} into {path} (once) ...", file=sys.stderr, flush=True)
    # A separate interpreter: torch/torchvision load there first, TensorFlow after.
    # TensorFlow, loaded here, set TF_CPP_MIN_LOG_LEVEL=1 in this process's
    # environment; the child would inherit it and print its CUDA and CPU lines.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "parity.convert",
            record.arch,
            "--weights",
            record.name,
            "--output",
            os.fspath(path),
            "--force",
        ],
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
    )
    if result.returncode != 0 or not path.exists():
        raise RuntimeError(
            f"Converting {record.arch} {record.name} failed (exit code {result.returncode}; its message is above). "
            f"Fix that, or run `{command}` yourself. Received: weights='converted'"
        )

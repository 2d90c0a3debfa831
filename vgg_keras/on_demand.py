"""Converting torchvision's weights into Keras' cache on first use, in a child process.

``weights="converted"`` (or a torchvision weights name) whose file is not yet
in Keras' cache runs ``python -m parity.convert`` in a separate interpreter:
this process has TensorFlow loaded, and importing torchvision's triton after
TensorFlow crashes the interpreter. The child writes the file atomically with
its sidecar, and prints only its own lines (TensorFlow's C++ logging off);
:func:`vgg_keras.weights.load_converted_weights` then checks it.

One process at a time converts a given file (:func:`parity.core.atomic.claim`):
a second process asking for it waits, then loads the first one's file instead
of converting again. Before converting, the temporary files that killed
conversions of the same file left in the cache (hundreds of MiB each) are
removed, those no live process holds (:func:`parity.core.atomic.remove_stale_temps`).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from parity.core.atomic import claim, remove_stale_temps
from parity.core.catalog import WeightsRecord
from parity.core.weights_file import TEMP_SUFFIX

__all__ = ["conversion_command", "convert_on_demand"]


def conversion_command(record: WeightsRecord, path: Path) -> list[str]:
    """The child process that converts ``record`` into ``path``: ``python -m parity.convert ... --force``.

    ``--force``: a conversion run by hand into the same file at the same time
    (which does not take the claim) does not make this one fail; the last
    rename wins, and both files are complete.
    """
    return [
        sys.executable,
        "-m",
        "parity.convert",
        record.arch,
        "--weights",
        record.name,
        "--output",
        os.fspath(path),
        "--force",
    ]


def convert_on_demand(record: WeightsRecord, path: Path) -> None:
    """Runs ``python -m parity.convert`` in a child process to fill the cache, once across processes.

    Under the claim on ``path``: if another process converted it meanwhile, its
    file is used; otherwise stale temporary files of ``path`` are removed and
    the child converts.

    Args:
        record: The torchvision weights to convert.
        path: Where the converted file goes (in Keras' cache).

    Raises:
        FileNotFoundError: If torch or torchvision is not installed.
        RuntimeError: If the conversion fails.

    Examples:
        >>> from parity.core.catalog import get_weights_record
        >>> from vgg_keras.on_demand import convert_on_demand
        >>> from vgg_keras.weights import converted_weights_path
        >>> convert_on_demand(get_weights_record("vgg16"), converted_weights_path("vgg16"))  # doctest: +SKIP
    """
    command = f"python -m parity.convert {record.arch} --weights {record.name}"
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
        raise FileNotFoundError(
            f"Converted weights for {record.arch} ({record.name}) are not in {path.parent}; converting them needs "
            f"torch and torchvision (pip install 'vgg-parity[torch]'), then run `{command}`. "
            f"Received: weights='converted'"
        )

    def waiting() -> None:
        print(f"Waiting for another process converting {record.arch} {record.name} ...", file=sys.stderr, flush=True)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # the claim's lock file lives there
    except OSError as e:
        raise RuntimeError(
            f"Keras' cache folder {path.parent} cannot be created ({e.strerror or type(e).__name__}): set KERAS_HOME "
            f"to a writable folder. Received: weights='converted'"
        ) from None
    with claim(path, on_wait=waiting):
        if path.exists():
            return  # converted by the process this one waited for
        removed = remove_stale_temps(path, TEMP_SUFFIX)
        if removed:
            print(f"Removed {len(removed)} temporary file(s) left by killed conversions", file=sys.stderr, flush=True)
        print(f"Converting {record.arch} {record.name} into {path} (once) ...", file=sys.stderr, flush=True)
        # A separate interpreter: torch/torchvision load there first, TensorFlow after.
        # TensorFlow, loaded here, set TF_CPP_MIN_LOG_LEVEL=1 in this process's
        # environment; the child would inherit it and print its CUDA and CPU lines.
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        result = subprocess.run(conversion_command(record, path), stdin=subprocess.DEVNULL, env=env, check=False)
    if result.returncode != 0 or not path.exists():
        raise RuntimeError(
            f"Converting {record.arch} {record.name} failed (exit code {result.returncode}; its message is above). "
            f"Fix that, or run `{command}` yourself. Received: weights='converted'"
        )

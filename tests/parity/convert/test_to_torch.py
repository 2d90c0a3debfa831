"""Keras weights back to torch: ``python -m parity.convert --to torch``."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

import numpy as np
import pytest

import parity.convert.to_torch
import parity.core.config
from parity.convert import main
from parity.convert.random_weights import randomized_state_dict
from parity.convert.to_torch import torch_state_dict_from_keras
from parity.convert.weight_arrays import write_keras_weights
from parity.core.checkpoint import load_checkpoint
from parity.core.errors import ConversionError
from parity.core.h5file import read_layer_arrays
from tests.conftest import TINY_CONFIGS


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_file_round_trip_is_bit_exact(name: str, tmp_path: Path) -> None:
    config = TINY_CONFIGS[name]
    state = randomized_state_dict(config, seed=4)
    path = tmp_path / "w.weights.h5"
    write_keras_weights(state, config, path)
    back = torch_state_dict_from_keras(read_layer_arrays(path), config, include_top=True)
    assert list(back) == list(state)  # torchvision's order, num_batches_tracked included
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            assert back[key].dtype == np.int64 and back[key].shape == ()  # Keras keeps no counter: 0
        else:
            assert back[key].dtype == np.float32 and np.array_equal(back[key], value), key


def test_foreign_layers_are_refused(tmp_path: Path) -> None:
    config = TINY_CONFIGS["tiny"]
    path = tmp_path / "w.weights.h5"
    write_keras_weights(randomized_state_dict(config), config, path)
    arrays = read_layer_arrays(path)
    with pytest.raises(ConversionError, match="layers not in the network: extra"):
        torch_state_dict_from_keras({**arrays, "extra": [np.zeros(3)]}, config, include_top=True)
    with pytest.raises(ConversionError, match="layers missing: fc1"):
        torch_state_dict_from_keras({k: v for k, v in arrays.items() if k != "fc1"}, config, include_top=True)


def test_bad_input_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"not hdf5")
    cases = [
        (
            ["vgg11", "--to", "torch", "--keras-weights", str(tmp_path / "missing.weights.h5")],
            "Received: keras_weights=",
        ),
        (
            ["vgg11", "--to", "torch", "--keras-weights", str(weights), "--output", str(tmp_path / "x.h5")],
            "must end in .pth",
        ),
        (["vgg11", "--to", "torch"], "Received: no --keras-weights"),
        (["vgg11", "--to", "torch", "--keras-weights", str(weights), "--init", "random"], "Received: --init"),
        (["vgg11", "--keras-weights", str(weights)], "Received: --to keras"),
        (
            ["vgg11", "--to", "torch", "--keras-weights", str(weights), "--output", str(tmp_path / "o.pth")],
            "as a Keras .weights.h5",
        ),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("error: ") and needle in last, last
    (tmp_path / "exists.pth").write_bytes(b"x")
    assert (
        main(["vgg11", "--to", "torch", "--keras-weights", str(weights), "--output", str(tmp_path / "exists.pth")]) == 2
    )
    assert "pass --force" in capsys.readouterr().err
    assert not (tmp_path / "o.pth").exists()


def _keras_file(tmp_path: Path, arch: str) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path / f"{arch}.weights.h5"
    assert main([arch, "--init", "random-all", "--seed", "5", "--output", str(path), "--quiet", "--no-verify"]) == 0
    return path, randomized_state_dict(parity.core.config.PRESETS[arch], 5)


@pytest.mark.full
def test_cli_round_trip_torch_keras_torch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keras_file, original = _keras_file(tmp_path, "vgg11_bn")
    capsys.readouterr()
    for suffix in (".pth", ".safetensors"):
        out = tmp_path / f"back{suffix}"
        assert main(["vgg11_bn", "--to", "torch", "--keras-weights", str(keras_file), "--output", str(out)]) == 0
        captured = capsys.readouterr()
        assert captured.out.strip() == str(out) and "top-1 agreement 100%" in captured.err
        state, _ = load_checkpoint(out)
        assert sorted(state) == sorted(original)
        assert all(np.array_equal(state[k], v) for k, v in original.items() if not k.endswith("num_batches_tracked"))
        model = torchvision.models.vgg11_bn(weights=None)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["vgg11_bn.weights.h5", "vgg11_bn.weights.h5.json", "back.pth", "back.safetensors"]
    )


@pytest.mark.full
@pytest.mark.extended
def test_cli_verification_failure_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keras_file, _ = _keras_file(tmp_path, "vgg11")
    exact = parity.convert.to_torch.torch_state_dict_from_keras

    def rows_left_in_keras_order(
        arrays: dict[str, list[np.ndarray]], config: object, include_top: bool
    ) -> dict[str, np.ndarray]:
        state = exact(arrays, config, include_top)  # type: ignore[arg-type]
        state["classifier.0.weight"] = np.ascontiguousarray(arrays["fc1"][0].T)  # a plain transpose: HWC rows
        return state

    monkeypatch.setattr(parity.convert.to_torch, "torch_state_dict_from_keras", rows_left_in_keras_order)
    out = tmp_path / "back.pth"
    assert main(["vgg11", "--to", "torch", "--keras-weights", str(keras_file), "--output", str(out), "--quiet"]) == 1
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


@pytest.mark.full
def test_cli_features_only(tmp_path: Path) -> None:
    config = parity.core.config.PRESETS["vgg11"]
    state = randomized_state_dict(config, seed=8, include_top=False)
    keras_file = tmp_path / "features.weights.h5"
    write_keras_weights(state, config, keras_file, include_top=False)
    out = tmp_path / "features.pt"
    assert main(["vgg11", "--to", "torch", "--keras-weights", str(keras_file), "--output", str(out), "--quiet"]) == 0
    back, _ = load_checkpoint(out)
    assert sorted(back) == sorted(state) and all(np.array_equal(back[k], v) for k, v in state.items())
    torchvision.models.vgg11(weights=None).features.load_state_dict(
        {k.removeprefix("features."): torch.from_numpy(v) for k, v in back.items()}, strict=True
    )

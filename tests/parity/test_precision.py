"""Mixed precision against torch's fp32 result, at bounds derived from the format (parity.precision).

Every Keras backend, in a child process each (a process holds one backend):
a tiny batch-norm VGG built under ``mixed_bfloat16`` and ``mixed_float16``
stays within its format's per-block bounds, and so does torch's own
``autocast`` at the same format (the bound is no tighter than torch itself
meets). Each check is shown to bite in the same run: the model left in fp32,
judged at the bf16 bounds, fails (under the floor), and so does each policy
judged as the other (fp16 under bf16's floor, bf16 over fp16's bounds).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from parity.compare import ParityError
from parity.core.config import PRESETS
from parity.precision import (
    FLOOR_ULPS,
    LAMBDA,
    PRECISIONS,
    compare_at_precision,
    error_bounds,
    get_precision,
    rounding_points,
)
from tests.conftest import TINY_BN, child_result

_SCRIPT = """
import json, os
import torch, torchvision  # before anything that may load TensorFlow
import keras, numpy as np
from parity.compare import build_pair, keras_forward, torch_forward
from parity.convert.random_weights import randomized_state_dict
from parity.core.config import VGGConfig
from parity.precision import PRECISIONS, compare_at_precision, error_bounds, torch_forward_autocast

config = VGGConfig.from_dict(json.loads(os.environ["CONFIG"]))
state = randomized_state_dict(config, seed=1)
x = np.random.default_rng(0).standard_normal((2, 3, 40, 48), dtype=np.float32)
models = {}
for name in ("fp32", "bf16", "fp16"):
    keras.config.set_dtype_policy(PRECISIONS[name].policy)
    try:
        reference, models[name] = build_pair(config, state)
    finally:
        keras.config.set_dtype_policy("float32")
expected = torch_forward(reference, x)
out = {}
for judged in ("bf16", "fp16"):
    precision = PRECISIONS[judged]
    bounds = error_bounds(config, precision)
    runs = {"torch autocast": torch_forward_autocast(reference, x, precision)}
    for built, model in models.items():
        for mode in ("eager", "predict"):
            runs[f"keras {built} {mode}"] = keras_forward(model, x, mode=mode)
    for run, got in runs.items():
        report = compare_at_precision(expected, got, bounds, precision)
        out[f"{run} as {judged}"] = {"passed": report.passed, "max_rel": report.max_rel,
                                     "over": report.first_over_bound, "floor": report.floor}
print("RESULT " + json.dumps(out))
"""

BACKENDS = ["tensorflow", "jax", "torch"]


def test_rounding_points_follow_the_layer_plan() -> None:
    """vgg11_bn: input cast 1, then 3 per conv and 1 per BN; the adaptive pool 1; 3 per dense layer."""
    points = rounding_points(PRESETS["vgg11_bn"])
    assert points == {"block1": 5, "block2": 9, "block3": 17, "block4": 25, "block5": 33, "logits": 43}
    bf16 = error_bounds(PRESETS["vgg11_bn"], PRECISIONS["bf16"])
    assert bf16["logits"] == LAMBDA * np.sqrt(43) * 2.0**-8
    assert (
        error_bounds(TINY_BN, PRECISIONS["fp16"])["logits"] * 8 == error_bounds(TINY_BN, PRECISIONS["bf16"])["logits"]
    )


def _outputs(logits_error: float, block_error: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A reference with max |value| 1 per output, and a candidate off by the given relative errors."""
    rng = np.random.default_rng(0)
    ref = {"block1": rng.uniform(-1, 1, (2, 4, 3, 3)), "logits": rng.uniform(-1, 1, (2, 7))}
    for v in ref.values():
        v.flat[0] = 1.0
    got = {"block1": ref["block1"] + block_error, "logits": ref["logits"] + logits_error}
    return ref, got


def test_report_passes_inside_the_band_and_fails_outside() -> None:
    """The same synthetic run passes at its format and fails over a bound or under the floor."""
    bf16 = PRECISIONS["bf16"]
    bounds = {"block1": 0.02, "logits": 0.05}
    ref, got = _outputs(0.01, 0.01)
    compare_at_precision(ref, got, bounds, bf16).check()
    with pytest.raises(ParityError, match="block1 is 0.03 .* over its derived bound 0.02"):
        compare_at_precision(*_outputs(0.01, 0.03), bounds, bf16).check()
    with pytest.raises(ParityError, match="under the floor .* did not compute in bf16"):
        compare_at_precision(*_outputs(1e-6, 1e-6), bounds, bf16).check()
    assert compare_at_precision(ref, got, bounds, bf16).floor == FLOOR_ULPS * 2.0**-8
    with pytest.raises(ValueError, match="precision=.bf8."):
        get_precision("bf8")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_precision_within_derived_bounds(backend: str) -> None:
    """Per backend: each policy passes at its own format; fp32 and the other policy fail there."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"Keras' {backend} backend needs {backend}, which is not installed here")
    out = child_result(_SCRIPT, backend, TINY_BN)
    print(json.dumps(out, indent=1))
    for judged, other in (("bf16", "fp16"), ("fp16", "bf16")):
        assert out[f"torch autocast as {judged}"]["passed"], out
        for mode in ("eager", "predict"):
            assert out[f"keras {judged} {mode} as {judged}"]["passed"], out
            # The checks bite: a model left in fp32 is under the floor, the other policy is outside the band.
            assert not out[f"keras fp32 {mode} as {judged}"]["passed"], out
            assert not out[f"keras {other} {mode} as {judged}"]["passed"], out

"""The export bounds are the documented numbers, and an export just outside them is refused.

The numbers are written here as literals, from the bounds table of docs/export.md: a test that read them
from ``parity.export.check`` would pass whatever they became.
"""

from __future__ import annotations

import numpy as np
import pytest

from parity.export.check import TOLERANCES, compare

#: docs/export.md, "Bounds": (final output, each block, top-1 agreement, top-5 overlap) per quantization.
DOCUMENTED = {
    "none": (1e-5, 1e-5, 1.0, 1.0),
    "float16": (3e-3, 3e-3, 1.0, 1.0),
    "dynamic-int8": (0.1, None, 0.5, 0.8),
}
#: Relative offsets that an fp32 export must refuse (10x its bound) and keep (a tenth of it).
FP32_REFUSED, FP32_KEPT = 1e-4, 1e-6
#: A float16 export off by this much (3x its bound) is refused.
FP16_REFUSED = 1e-2


@pytest.mark.parametrize("quantize", list(DOCUMENTED))
def test_bounds_are_the_documented_numbers(quantize: str) -> None:
    t = TOLERANCES[quantize]
    assert (t.output_rtol, t.block_rtol, t.min_top1, t.min_top5_overlap) == DOCUMENTED[quantize]


def _outputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "block1": rng.standard_normal((2, 4, 8, 8)).astype(np.float32),
        "output": rng.standard_normal((2, 10)).astype(np.float32) * 5,
    }


def _shifted(reference: dict[str, np.ndarray], name: str, relative: float) -> dict[str, np.ndarray]:
    """``reference`` with one element of ``name`` moved by ``relative`` x its max |value| (top-k unchanged)."""
    out = {k: v.copy() for k, v in reference.items()}
    ref = out[name]
    i = np.unravel_index(np.argmin(np.abs(ref)), ref.shape)  # the smallest entry: no ranking changes
    ref[i] += relative * np.max(np.abs(ref))
    return out


@pytest.mark.parametrize("name", ["output", "block1"])
def test_fp32_export_off_by_1e_4_is_refused(name: str) -> None:
    reference = _outputs()
    result = compare(reference, _shifted(reference, name, FP32_REFUSED), TOLERANCES["none"], has_logits=True)
    assert result["passed"] is False
    assert any(f.startswith(f"{name} differs by") for f in result["failures"]), result["failures"]


@pytest.mark.parametrize("name", ["output", "block1"])
def test_fp32_export_off_by_1e_6_is_kept(name: str) -> None:
    reference = _outputs()
    result = compare(reference, _shifted(reference, name, FP32_KEPT), TOLERANCES["none"], has_logits=True)
    assert result["passed"] is True, result["failures"]


def test_float16_export_off_by_1e_2_is_refused() -> None:
    reference = _outputs()
    result = compare(reference, _shifted(reference, "output", FP16_REFUSED), TOLERANCES["float16"], has_logits=True)
    assert result["passed"] is False

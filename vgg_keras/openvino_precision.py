"""fp32 ``predict`` on Keras' OpenVINO backend, on every CPU.

OpenVINO's CPU plugin infers in bfloat16 unless told otherwise on CPUs with
native bf16 (AVX-512 BF16 or AMX: Intel Sapphire Rapids and later, AMD Zen 4
and later): its ``INFERENCE_PRECISION_HINT`` defaults to ``bf16`` there. Keras'
OpenVINO backend (3.15) asks for ``f32`` when it runs a model eagerly
(``convert_to_numpy``), but ``predict`` and ``evaluate`` compile their graph with
``openvino.compile_model(model, "CPU")`` and no config, so on those CPUs they
run VGG in bfloat16: a relative logit error near 5e-3 instead of 1e-6.

:func:`float32_predict` makes that one call ask for ``f32`` too. It is applied
when ``vgg_keras`` is imported on the OpenVINO backend, and acts on every Keras
model in the process (the same precision the backend's eager path uses).
"""

from __future__ import annotations

import types

import keras

__all__ = ["PRECISION_CONFIG", "float32_predict"]

#: The compile config that keeps OpenVINO's CPU plugin in fp32.
PRECISION_CONFIG: dict[str, str] = {"INFERENCE_PRECISION_HINT": "f32"}


class _Float32OpenVINO:
    """The ``openvino`` module, whose ``compile_model`` defaults to fp32 inference."""

    def __init__(self, module: types.ModuleType) -> None:
        self._module = module

    def __getattr__(self, name: str) -> object:
        return getattr(self._module, name)

    def compile_model(
        self, model: object, device_name: str = "AUTO", config: dict[str, object] | None = None
    ) -> object:
        """``openvino.compile_model`` with :data:`PRECISION_CONFIG` under the caller's config."""
        return self._module.compile_model(model, device_name, {**PRECISION_CONFIG, **(config or {})})


def float32_predict() -> bool:
    """Makes ``predict``/``evaluate`` on Keras' OpenVINO backend compile for fp32.

    Idempotent; does nothing on other backends. Precision the caller asks for
    explicitly still wins.

    Returns:
        Whether the OpenVINO backend is active (and now compiles for fp32).

    Examples:
        >>> float32_predict() == (keras.backend.backend() == "openvino")
        True
    """
    if keras.backend.backend() != "openvino":
        return False
    from keras.src.backend.openvino import trainer

    if not isinstance(trainer.ov, _Float32OpenVINO):
        trainer.ov = _Float32OpenVINO(trainer.ov)
    return True

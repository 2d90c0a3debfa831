"""``torch.optim.SGD`` and ``torch.optim.lr_scheduler.StepLR`` as Keras 3 objects.

Keras' ``SGD`` keeps ``v = momentum * v - lr * g`` and adds ``v`` to the
weights, and its ``weight_decay`` shrinks the weights apart from the gradient
(decoupled). torch keeps a buffer of gradients, ``b = momentum * b +
(1 - dampening) * (g + weight_decay * w)``, and multiplies it by the learning
rate at step time. The two agree only at a constant learning rate without
weight decay: after a learning-rate change, Keras' ``v`` still carries the old
rate. :class:`TorchSGD` is torch's update; :class:`StepLR` is torch's
``StepLR(step_size, gamma)`` stepped once per epoch of ``steps_per_epoch``
optimizer steps.
"""

from __future__ import annotations

import keras

__all__ = ["StepLR", "TorchSGD"]


@keras.saving.register_keras_serializable(package="vgg_keras")
class TorchSGD(keras.optimizers.Optimizer):
    """``torch.optim.SGD``'s update as a Keras optimizer.

    Per variable ``w`` with gradient ``g``, at step ``t`` (0-based)::

        g = g + weight_decay * w                       # coupled, as torch
        b = g                               if t == 0  # momentum buffer
        b = momentum * b + (1 - dampening) * g  else
        g = g + momentum * b                if nesterov else b
        w = w - lr(t) * g

    (without momentum, ``w = w - lr(t) * g``). ``lr(t)`` is the float given or
    the schedule evaluated at the optimizer's iteration count, so a schedule
    acts as a torch scheduler that sets the rate before each step. Keras
    keeps a float rate in a float32 variable, as torch rounds its rate for
    float32 weights; :class:`StepLR` computes in float64. Keras' own
    decoupled ``weight_decay`` (applied by the base class before the update)
    is never used: the base class is given ``weight_decay=None``.

    Args:
        learning_rate: A float or a
            ``keras.optimizers.schedules.LearningRateSchedule`` (e.g.
            :class:`StepLR`).
        momentum: torch's ``momentum``, >= 0.
        dampening: torch's ``dampening``.
        weight_decay: torch's (coupled, L2) ``weight_decay``, >= 0.
        nesterov: torch's ``nesterov``; needs ``momentum > 0`` and ``dampening == 0``.
        exact_rounding: Round as torch's CPU kernels do (fused multiply-adds,
            emulated in float64 for float32 weights): bit-identical weights
            after any number of steps (measured over 40), at the cost of
            float64 temporaries of one variable's size (0.8 GB each for
            VGG16's fc1 kernel). ``False`` uses plain float32 operations:
            within 2e-6 relative after 40 steps.
        name: Optimizer name.
        **kwargs: Keras' other optimizer arguments (``clipnorm``, ``use_ema``, ...).

    Raises:
        ValueError: On an argument torch would reject.

    Examples:
        torch's ``SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)`` with
        ``StepLR(optimizer, step_size=30, gamma=0.1)`` stepped each epoch:

        >>> schedule = StepLR(0.01, step_size=30, gamma=0.1, steps_per_epoch=100)
        >>> optimizer = TorchSGD(schedule, momentum=0.9, weight_decay=5e-4)
        >>> float(optimizer.learning_rate)
        0.01
        >>> model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")  # doctest: +SKIP
    """

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 0.001,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        exact_rounding: bool = True,
        name: str | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(learning_rate=learning_rate, weight_decay=None, name=name, **kwargs)
        for field, value in (("momentum", momentum), ("dampening", dampening), ("weight_decay", weight_decay)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{field}` must be a non-negative float. Received: {field}={value!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "Nesterov momentum needs momentum > 0 and dampening 0, as in torch. "
                f"Received: momentum={momentum!r}, dampening={dampening!r}"
            )
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.torch_weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)
        self.exact_rounding = bool(exact_rounding)

    def build(self, variables: list[keras.Variable]) -> None:
        """Creates one momentum buffer per variable (none without momentum)."""
        if self.built:
            return
        super().build(variables)
        self.momentum_buffers = self.add_optimizer_variables(variables, "momentum_buffer") if self.momentum else []

    def update_step(self, gradient: keras.KerasTensor, variable: keras.Variable, learning_rate: object) -> None:
        """Applies torch's SGD update to one variable."""
        ops = keras.ops
        dtype = variable.dtype
        fma = self._fused_multiply_add
        # Constants straight in the variable's dtype: ops.cast of a Python float goes through float32.
        gradient = ops.cast(gradient, dtype)
        if self.torch_weight_decay:
            gradient = fma(variable, ops.convert_to_tensor(self.torch_weight_decay, dtype=dtype), gradient)
        if self.momentum:
            buffer = self.momentum_buffers[self._get_variable_index(variable)]
            momentum = ops.convert_to_tensor(self.momentum, dtype=dtype)
            running = fma(
                gradient, ops.convert_to_tensor(1.0 - self.dampening, dtype=dtype), ops.multiply(buffer, momentum)
            )
            # torch's buffer starts as the first gradient itself (no dampening).
            new_buffer = ops.where(ops.equal(self.iterations, 0), gradient, running)
            self.assign(buffer, new_buffer)
            gradient = fma(new_buffer, momentum, gradient) if self.nesterov else new_buffer
        self.assign(variable, fma(gradient, ops.negative(ops.cast(learning_rate, dtype)), variable))

    def _fused_multiply_add(self, a: object, b: object, c: object) -> object:
        """``a * b + c`` rounded as torch's CPU ``c.add(a, alpha=b)`` rounds it.

        torch computes it as one fused multiply-add (one rounding). With
        ``exact_rounding``, float32 and narrower operands are computed in
        float64, where ``a * b`` is exact, and rounded once more: the fused
        result except in double-rounding ties (about 1 in 2**29). Otherwise,
        and for float64, it is two rounded operations, a few ulps from torch's
        after many steps.
        """
        ops = keras.ops
        dtype = keras.backend.standardize_dtype(c.dtype)
        if not self.exact_rounding or dtype == "float64":
            return ops.add(ops.multiply(a, b), c)
        wide = ops.add(ops.multiply(ops.cast(a, "float64"), ops.cast(b, "float64")), ops.cast(c, "float64"))
        return ops.cast(wide, dtype)

    def get_config(self) -> dict[str, object]:
        """The constructor's arguments."""
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "dampening": self.dampening,
                "weight_decay": self.torch_weight_decay,
                "nesterov": self.nesterov,
                "exact_rounding": self.exact_rounding,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="vgg_keras")
class StepLR(keras.optimizers.schedules.LearningRateSchedule):
    """torch's ``StepLR(optimizer, step_size, gamma)``, stepped once per epoch.

    At optimizer step ``t`` (0-based) of a run with ``steps_per_epoch`` steps
    per epoch, the rate is ``initial_learning_rate * gamma ** (epoch //
    step_size)`` with ``epoch = t // steps_per_epoch``: what torch's optimizer
    uses when ``scheduler.step()`` is called after each epoch. Computed in
    float64, as torch keeps the rate as a Python float.

    Args:
        initial_learning_rate: torch's ``lr``.
        step_size: Epochs between decays.
        gamma: Factor of each decay.
        steps_per_epoch: Optimizer steps per epoch (batches per epoch).

    Raises:
        ValueError: If a count is not a positive integer or a rate is negative.
    """

    def __init__(
        self, initial_learning_rate: float, step_size: int, gamma: float = 0.1, steps_per_epoch: int = 1
    ) -> None:
        for field, value in (("step_size", step_size), ("steps_per_epoch", steps_per_epoch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{field}` must be a positive integer. Received: {field}={value!r}")
        for field, value in (("initial_learning_rate", initial_learning_rate), ("gamma", gamma)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{field}` must be a non-negative float. Received: {field}={value!r}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.step_size = step_size
        self.gamma = float(gamma)
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, step: object) -> object:
        """The rate at optimizer step ``step``, as a float64 scalar tensor."""
        ops = keras.ops
        epoch = ops.floor_divide(ops.cast(step, "int64"), self.steps_per_epoch)
        decays = ops.cast(ops.floor_divide(epoch, self.step_size), "float64")
        return ops.multiply(
            ops.convert_to_tensor(self.initial_learning_rate, "float64"),
            ops.power(ops.convert_to_tensor(self.gamma, "float64"), decays),
        )

    def get_config(self) -> dict[str, object]:
        """The constructor's arguments."""
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "step_size": self.step_size,
            "gamma": self.gamma,
            "steps_per_epoch": self.steps_per_epoch,
        }

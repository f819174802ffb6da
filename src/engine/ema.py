"""Model EMA: an exponential moving average of the network's weights and BatchNorm statistics.

After optimizer update ``t`` (1-based), every floating-point Parameter ``w`` of the network -- trainable
weights and the BatchNorm moving mean/variance alike, as timm's ``ModelEmaV3`` averages the whole state
dict -- moves its average ``a`` by

    a <- a + (1 - d_t) * (w - a)            (= d_t * a + (1 - d_t) * w)

with the decay ``d_t`` of :func:`ema_decay`. The update runs inside the compiled training step
(:class:`ModelEma` is a Cell the step calls after the optimizer), so it costs one pass over the weights
and no host synchronisation. The averages are Parameters named ``ema.<weight name>`` and the update
count ``ema_num_updates``: a checkpoint of the training step holds them, and a resumed run continues
the average exactly. :func:`src.models.ema_weights.select_weights` turns a checkpoint's averages back into
network weights.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore.ops import functional as F

from src.errors import DropCovError
from src.models.ema_weights import EMA_PREFIX

EMA_COUNT_NAME = "ema_num_updates"
_FLOAT_TYPES = (ms.float16, ms.float32, ms.float64, ms.bfloat16)

_move_average = ops.MultitypeFuncGraph("move_average")


@_move_average.register("Tensor", "Tensor", "Tensor")
def _move_one(weight_of_new, average, weight):
    """``average += weight_of_new * (weight - average)`` in the average's dtype."""
    step = F.cast(weight_of_new, F.dtype(average)) * (F.cast(weight, F.dtype(average)) - average)
    return F.assign_add(average, step)


def ema_decay(update: int, decay: float, warmup: bool = False, warmup_gamma: float = 1.0,
              warmup_power: float = 2.0 / 3.0, min_decay: float = 0.0) -> float:
    """Decay ``d_t`` of update ``t`` (1-based), timm's ``ModelEmaV3.get_decay(step=t)``.

    With ``s = t - 1``: ``d = 0`` when ``s <= 0`` (the first update copies the weights); otherwise
    ``d = decay`` without warm-up, and with warm-up

        d = clip(1 - (1 + s / warmup_gamma) ** -warmup_power, min_decay, decay)

    which rises from 0.37 at ``s = 1`` towards ``decay`` (0.999 near ``s = 31,600`` for the default power 2/3).
    """
    steps = update - 1
    if steps <= 0:
        return 0.0
    if not warmup:
        return float(decay)
    value = 1.0 - (1.0 + steps / warmup_gamma) ** -warmup_power
    return float(max(min(value, decay), min_decay))


def check_ema_settings(decay: float, warmup_gamma: float = 1.0, warmup_power: float = 2.0 / 3.0,
                       min_decay: float = 0.0) -> None:
    """Raise :class:`DropCovError` naming the config key of an impossible EMA setting."""
    if not 0.0 < decay < 1.0:
        raise DropCovError(f"model_ema_decay must lie in (0, 1), got {decay!r}")
    if not warmup_gamma > 0.0 or not warmup_power > 0.0:
        raise DropCovError(f"the EMA warm-up needs gamma > 0 and power > 0, got {warmup_gamma!r}, {warmup_power!r}")
    if not 0.0 <= min_decay <= decay:
        raise DropCovError(f"the EMA minimum decay must lie in [0, model_ema_decay], got {min_decay!r}")


def averaged_parameters(net: nn.Cell) -> list:
    """The Parameters the EMA follows: every floating-point Parameter of ``net`` (weights, BN statistics)."""
    return [param for param in net.get_parameters() if param.dtype in _FLOAT_TYPES]


class ModelEma(nn.Cell):
    """The moving averages of ``net``'s Parameters and their update (see the module doc).

    Args:
        net: the network being trained (not its loss or training wrapper); the averages start as copies
            of its current values, so build this after loading pre-trained weights.
        decay, warmup, warmup_gamma, warmup_power, min_decay: see :func:`ema_decay` (config keys
            ``model_ema_decay``, ``model_ema_warmup``).

    Calling the cell (inside a compiled step, after the optimizer) applies one update and returns True.
    """

    def __init__(self, net: nn.Cell, decay: float = 0.9998, warmup: bool = False, warmup_gamma: float = 1.0,
                 warmup_power: float = 2.0 / 3.0, min_decay: float = 0.0) -> None:
        super().__init__(auto_prefix=False)
        check_ema_settings(decay, warmup_gamma, warmup_power, min_decay)
        self.decay, self.warmup = float(decay), bool(warmup)
        self.warmup_gamma, self.warmup_power, self.min_decay = float(warmup_gamma), float(warmup_power), float(min_decay)
        self.weights = ParameterTuple(averaged_parameters(net))
        self.averages = self.weights.clone(prefix=EMA_PREFIX.rstrip("."), init="same")
        for average in self.averages:
            average.requires_grad = False
        self.num_updates = Parameter(Tensor(0, ms.int32), name=EMA_COUNT_NAME, requires_grad=False)
        self.hyper_map = ops.HyperMap()

    def current_decay(self) -> Tensor:
        """``d_t`` of the coming update as a float32 scalar tensor (graph form of :func:`ema_decay`)."""
        steps = F.cast(self.num_updates, ms.float32)  # t - 1 for the coming update t
        if self.warmup:
            value = 1.0 - ops.pow(1.0 + steps / self.warmup_gamma, -self.warmup_power)
            value = ops.clip_by_value(value, self.min_decay, self.decay)
        else:
            value = ops.fill(ms.float32, (), self.decay)
        return ops.select(steps > 0.5, value, ops.zeros_like(value))

    def construct(self) -> Tensor:
        weight_of_new = 1.0 - self.current_decay()
        moved = self.hyper_map(F.partial(_move_average, weight_of_new), self.averages, self.weights)
        return F.depend(F.assign_add(self.num_updates, Tensor(1, ms.int32)), moved)

    # ---------------------------------------------------------------------------------- host side
    def reset(self) -> None:
        """Set the averages to the network's current values and the update count to 0 (host side)."""
        for average, weight in zip(self.averages, self.weights):
            average.set_data(Tensor(weight.asnumpy().astype(ms.dtype_to_nptype(average.dtype))))
        self.num_updates.set_data(Tensor(0, ms.int32))

    def swap(self) -> None:
        """Exchange the network's values and the averages (host side; call twice to undo)."""
        for average, weight in zip(self.averages, self.weights):
            current = weight.asnumpy().copy()
            weight.set_data(Tensor(average.asnumpy().astype(current.dtype)))
            average.set_data(Tensor(current.astype(ms.dtype_to_nptype(average.dtype))))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the network holds the averages (e.g. to evaluate them); restored after."""
        self.swap()
        try:
            yield
        finally:
            self.swap()


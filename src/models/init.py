"""Weight initialisation chosen by name (the ``conv_init``, ``dense_init`` and ``eca_init`` config keys).

Two recipes are named here:

- the original MindSpore code, which ran on MindSpore 1.9 (its README): every Conv2d re-drawn
  XavierUniform(gain 1); the classifier ``fc`` TruncatedNormal(sigma 0.01), bias 0; the ECA Conv1d left at
  1.9's ``nn.Conv1d`` default ``weight_init='normal'``, i.e. Normal(sigma 0.01). These are the defaults.
- the authors' PyTorch code: every Conv2d ``kaiming_normal_(mode='fan_out', nonlinearity='relu')``
  (``HeNormal``), ``nn.Linear`` and the ECA ``nn.Conv1d`` at PyTorch's defaults (``PyTorchDefault``:
  ``kaiming_uniform_(a=sqrt(5))`` for the weight and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the bias,
  which is U(+-1/sqrt(fan_in)) for both).

What MindSpore 1.9 drew, and why the tables spell it out instead of trusting MindSpore 2.10's defaults:

- ``TruncatedNormal(sigma)``: MindSpore up to 2021 drew ``scipy.stats.truncnorm.rvs(-2, 2, loc=0,
  scale=sigma)``, i.e. cut at +-2 sigma, and MindSpore's documentation of ``TruncatedNormal(sigma=0.01)``
  from r1.6 to r2.1 says values are limited to within 2 standard deviations of the mean. MindSpore 2.10's
  ``TruncatedNormal(sigma, mean=0, a=-2, b=2)`` takes ``a, b`` as absolute bounds (its C++ sampler computes
  ``(a - mean) / sigma``), so with sigma 0.01 it cuts at +-200 sigma: untruncated. We pass the 1.9 bounds,
  ``a=-2 sigma, b=2 sigma``. Caveat: a 2022 MindSpore source (the C++ Philox sampler, ``from __future__``
  imports) already passed ``-2, 2`` as absolute bounds; we could not establish from the sources available
  whether 1.9 shipped that code or the scipy one. Its documentation says 2 sigma, and that is what we draw.
- ``nn.Conv1d``'s ``weight_init`` default was ``'normal'`` (documented for r1.7, r1.8, r1.10 and r2.0), the
  ``Normal(sigma=0.01, mean=0)`` initializer; MindSpore 2.10's default is HeUniform(sqrt(5)), U(+-0.577)
  for the (1, 1, 1, 3) ECA kernel.
- ``XavierUniform(gain)``: U(+-gain sqrt(6 / (fan_in + fan_out))), fans of ``(out, in, *kernel)`` as
  ``in * prod(kernel)`` and ``out * prod(kernel)``, the same in 1.9 and 2.10.

The tables name MindSpore initialisers (class name and arguments), so listing them imports no MindSpore.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from src.errors import DropCovError

CLASSIFIER_SIGMA = 0.01
"""sigma of the classifier's TruncatedNormal and of the ECA Conv1d's Normal in the original MindSpore code."""
TORCH_DEFAULT_SLOPE = math.sqrt(5.0)
"""PyTorch's ``kaiming_uniform_(a=sqrt(5))`` default: HeUniform with this negative slope is U(+-1/sqrt(fan_in))."""


@dataclass(frozen=True)
class InitScheme:
    """A named initialisation: the MindSpore initializer of the weight, and what the bias gets.

    ``bias`` is ``'zeros'`` or ``'uniform_fan_in'`` (U(+-1/sqrt(fan_in)) of the weight, PyTorch's default).
    """

    initializer: str
    arguments: dict[str, Any] = field(default_factory=dict)
    bias: str = "zeros"


def _truncated_normal_2sigma(sigma: float) -> InitScheme:
    """TruncatedNormal(sigma) cut at +-2 sigma, as MindSpore 1.9 drew it (2.10's bounds are absolute)."""
    return InitScheme("TruncatedNormal", {"sigma": sigma, "mean": 0.0, "a": -2.0 * sigma, "b": 2.0 * sigma})


_PYTORCH_DEFAULT = InitScheme("HeUniform", {"negative_slope": TORCH_DEFAULT_SLOPE, "mode": "fan_in",
                                            "nonlinearity": "leaky_relu"}, bias="uniform_fan_in")

CONV_INITS: dict[str, InitScheme] = {
    "XavierUniform": InitScheme("XavierUniform", {"gain": 1}),
    "HeUniform": InitScheme("HeUniform", {"mode": "fan_out", "nonlinearity": "relu"}),
    "HeNormal": InitScheme("HeNormal", {"mode": "fan_out", "nonlinearity": "relu"}),
    "TruncatedNormal": _truncated_normal_2sigma(CLASSIFIER_SIGMA),
}
DENSE_INITS: dict[str, InitScheme] = {
    "TruncatedNormal": _truncated_normal_2sigma(CLASSIFIER_SIGMA),
    "XavierUniform": InitScheme("XavierUniform", {"gain": 1}),
    "HeUniform": InitScheme("HeUniform", {}),
    "Normal": InitScheme("Normal", {"sigma": CLASSIFIER_SIGMA}),
    "PyTorchDefault": _PYTORCH_DEFAULT,
}
ECA_INITS: dict[str, InitScheme] = {
    "Normal": InitScheme("Normal", {"sigma": CLASSIFIER_SIGMA}),
    "PyTorchDefault": _PYTORCH_DEFAULT,
}
DEFAULT_CONV_INIT = "XavierUniform"
DEFAULT_DENSE_INIT = "TruncatedNormal"
DEFAULT_ECA_INIT = "Normal"


def _scheme(table: dict[str, InitScheme], name: str, key: str) -> InitScheme:
    if name not in table:
        raise DropCovError(f"unknown {key}={name!r}: choose one of {', '.join(table)}")
    return table[name]


def weight_initializer(scheme: InitScheme) -> Any:
    """The MindSpore initializer object of ``scheme``'s weight."""
    from mindspore.common import initializer

    return getattr(initializer, scheme.initializer)(**scheme.arguments)


def conv_initializer(name: str = DEFAULT_CONV_INIT) -> Any:
    """MindSpore initializer of the Conv2d weights for ``conv_init`` = ``name``."""
    return weight_initializer(_scheme(CONV_INITS, name, "conv_init"))


def dense_initializer(name: str = DEFAULT_DENSE_INIT) -> Any:
    """MindSpore initializer of the classifier weight for ``dense_init`` = ``name``."""
    return weight_initializer(_scheme(DENSE_INITS, name, "dense_init"))


def eca_initializer(name: str = DEFAULT_ECA_INIT) -> Any:
    """MindSpore initializer of the ECA Conv1d weight for ``eca_init`` = ``name``."""
    return weight_initializer(_scheme(ECA_INITS, name, "eca_init"))


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs per output of a weight ``(out, in, *kernel)`` or ``(out, in)``: ``in * prod(kernel)``."""
    return int(shape[1]) * math.prod(int(size) for size in shape[2:])


def _redraw(parameter: Any, scheme: InitScheme) -> None:
    from mindspore.common import initializer

    parameter.set_data(initializer.initializer(weight_initializer(scheme), parameter.shape, parameter.dtype))


def _redraw_bias(parameter: Any, scheme: InitScheme, weight_shape: tuple[int, ...]) -> None:
    from mindspore.common import initializer

    if scheme.bias == "uniform_fan_in":
        value: Any = initializer.Uniform(scale=1.0 / math.sqrt(fan_in(weight_shape)))
    else:
        value = "zeros"
    parameter.set_data(initializer.initializer(value, parameter.shape, parameter.dtype))


def initialize_weights(net: Any, conv_init: str = DEFAULT_CONV_INIT, dense_init: str = DEFAULT_DENSE_INIT,
                       eca_init: str = DEFAULT_ECA_INIT) -> None:
    """Re-draw Conv2d weights with ``conv_init``, Dense weights and biases with ``dense_init`` and Conv1d
    weights (the ECA layer) with ``eca_init``.

    BatchNorm keeps gamma 1, beta 0. A scheme equal to its default is left alone: the constructors already
    draw the defaults (:func:`conv_initializer`, :func:`dense_initializer`, :func:`eca_initializer`).
    """
    from mindspore import nn

    conv_scheme = _scheme(CONV_INITS, conv_init, "conv_init")
    dense_scheme = _scheme(DENSE_INITS, dense_init, "dense_init")
    eca_scheme = _scheme(ECA_INITS, eca_init, "eca_init")
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.Conv2d) and conv_init != DEFAULT_CONV_INIT:
            _redraw(cell.weight, conv_scheme)
        elif isinstance(cell, nn.Conv1d) and eca_init != DEFAULT_ECA_INIT:
            _redraw(cell.weight, eca_scheme)
        elif isinstance(cell, nn.Dense) and dense_init != DEFAULT_DENSE_INIT:
            _redraw(cell.weight, dense_scheme)
            if cell.bias is not None:
                _redraw_bias(cell.bias, dense_scheme, tuple(cell.weight.shape))

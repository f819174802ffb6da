"""Weight initialisation chosen by name (the ``conv_init`` / ``dense_init`` config keys).

The ResNets are built with the initialisation the published checkpoints were trained with
(Conv2d XavierUniform(gain 1), ``fc`` TruncatedNormal(0.01)); :func:`initialize_weights` re-draws
them with another named scheme when a config asks for one. The tables name MindSpore initialisers
(class name and arguments), so listing them imports no MindSpore.
"""
from __future__ import annotations

from typing import Any

from src.errors import DropCovError

CONV_INITS: dict[str, tuple[str, dict[str, Any]]] = {
    "XavierUniform": ("XavierUniform", {"gain": 1}),
    "HeUniform": ("HeUniform", {"mode": "fan_out", "nonlinearity": "relu"}),
    "HeNormal": ("HeNormal", {"mode": "fan_out", "nonlinearity": "relu"}),
    "TruncatedNormal": ("TruncatedNormal", {"sigma": 0.01}),
}
DENSE_INITS: dict[str, tuple[str, dict[str, Any]]] = {
    "TruncatedNormal": ("TruncatedNormal", {"sigma": 0.01}),
    "XavierUniform": ("XavierUniform", {"gain": 1}),
    "HeUniform": ("HeUniform", {}),
    "Normal": ("Normal", {"sigma": 0.01}),
}
DEFAULT_CONV_INIT = "XavierUniform"
DEFAULT_DENSE_INIT = "TruncatedNormal"


def _scheme(table: dict, name: str, key: str) -> Any:
    from mindspore.common import initializer

    if name not in table:
        raise DropCovError(f"unknown {key}={name!r}: choose one of {', '.join(table)}")
    class_name, arguments = table[name]
    return getattr(initializer, class_name)(**arguments)


def initialize_weights(net: Any, conv_init: str = DEFAULT_CONV_INIT, dense_init: str = DEFAULT_DENSE_INIT) -> None:
    """Re-draw every Conv2d weight with ``conv_init`` and every Dense weight with ``dense_init``.

    Dense biases are set to zero; BatchNorm and the ECA Conv1d keep their initialisation. Does nothing
    for the defaults, which the constructors already use.
    """
    import mindspore as ms
    from mindspore import nn
    from mindspore.common import initializer

    conv_scheme = _scheme(CONV_INITS, conv_init, "conv_init")
    dense_scheme = _scheme(DENSE_INITS, dense_init, "dense_init")
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.Conv2d) and conv_init != DEFAULT_CONV_INIT:
            weight = cell.weight
            weight.set_data(initializer.initializer(conv_scheme, weight.shape, weight.dtype))
        elif isinstance(cell, nn.Dense) and dense_init != DEFAULT_DENSE_INIT:
            cell.weight.set_data(initializer.initializer(dense_scheme, cell.weight.shape, cell.weight.dtype))
            if cell.bias is not None:
                cell.bias.set_data(initializer.initializer("zeros", cell.bias.shape, ms.float32))

"""Parameter names of the authors' PyTorch DropCov transformers, mapped onto :mod:`src.models.vit`.

The MindSpore network keeps the authors' module paths, so only three things change:

- LayerNorm / BatchNorm ``weight``, ``bias``, ``running_mean``, ``running_var`` become ``gamma``,
  ``beta``, ``moving_mean``, ``moving_variance`` (every ``norm``, ``norm1``, ``norm2`` that has
  parameters: the dense layers' ``norm1``/``norm2`` are ReLUs without any);
- ``num_batches_tracked`` is dropped;
- ``pos_embed`` (a frozen parameter in their checkpoints) is a constant here: it is checked against
  the sinusoid table and dropped.

Pure name/array bookkeeping (NumPy only); file reading and writing live in ``src.tools.convert_torch``.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from src.errors import DropCovError

from ._registry import model_specs
from .torch_mapping import _as_float32_array, rename_state_dict, strip_wrapper_prefix
from .vit import sinusoid_table


def vit_net_names() -> tuple[str, ...]:
    """The registered transformers (the converter maps the authors' checkpoints onto them)."""
    return tuple(spec.name for spec in model_specs("vit"))
POSITION_KEY = "pos_embed"
POSITION_TOLERANCE = 1e-5
_NORM = re.compile(r"^(?P<module>(?:.*\.)?norm\d?)\.(?P<field>weight|bias|running_mean|running_var)$")
_NORM_FIELDS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def vit_mindspore_name(torch_name: str) -> str | None:
    """The MindSpore name of a PyTorch key of the authors' transformers; None for keys without one.

    ``blocks.0.norm1.weight`` -> ``blocks.0.norm1.gamma``; ``...stage.1.norm.running_var`` ->
    ``...stage.1.norm.moving_variance``; ``num_batches_tracked`` and ``pos_embed`` -> None; others unchanged.
    """
    if torch_name.endswith(".num_batches_tracked") or torch_name == POSITION_KEY:
        return None
    match = _NORM.match(torch_name)
    if match:
        return f"{match['module']}.{_NORM_FIELDS[match['field']]}"
    return torch_name


def infer_vit_head(state_dict: Mapping[str, Any]) -> tuple[bool, int | None]:
    """(has the DropCov head, class count) from ``classifier.visual_fc.weight`` / ``classifier.cls_fc.weight``."""
    weights = strip_wrapper_prefix(state_dict)
    cls_fc = weights.get("classifier.cls_fc.weight")
    return "classifier.visual_fc.weight" in weights, (tuple(cls_fc.shape)[0] if cls_fc is not None else None)


def check_position_table(value: Any, source: str) -> None:
    """Raise unless a checkpoint's ``pos_embed`` ``(1, P, D)`` is the fixed sinusoid table."""
    table = _as_float32_array(value, POSITION_KEY, source)
    if table.ndim != 3 or table.shape[0] != 1:
        raise DropCovError(f"{source}: pos_embed has shape {table.shape}, expected (1, positions, embed_dim)")
    expected = sinusoid_table(table.shape[1], table.shape[2])
    error = float(np.max(np.abs(table - expected)))
    if error > POSITION_TOLERANCE:
        raise DropCovError(f"{source}: pos_embed differs from the fixed sinusoid table by up to {error:.3g}; "
                           f"this network keeps it fixed (the authors' networks never train it)")


def convert_vit_state_dict(state_dict: Mapping[str, Any], net_name: str,
                           target_shapes: Mapping[str, tuple[int, ...]],
                           source: str = "checkpoint") -> dict[str, np.ndarray]:
    """Rename a PyTorch DropCov-transformer state dict into :mod:`src.models.vit`'s parameters.

    Args:
        state_dict: PyTorch key -> tensor, with or without the ``module.`` prefix.
        net_name: one of :func:`vit_net_names` (used in messages).
        target_shapes: every parameter of the MindSpore network, name -> shape, in network order.
        source: how error messages name the input (usually its path).

    Returns:
        MindSpore name -> float32 array, in the order of ``target_shapes``.

    Raises:
        DropCovError: one line naming unknown keys, missing parameters, a shape mismatch or a
            position table that is not the sinusoid one.
    """
    weights = strip_wrapper_prefix(state_dict)
    if POSITION_KEY in weights:
        check_position_table(weights[POSITION_KEY], source)
    converted = rename_state_dict(weights, vit_mindspore_name, target_shapes, source, net_name,
                                  "check --net_name (the _dropcov or the _cls network) and that this is a checkpoint "
                                  "of the authors' transformer code")
    result: dict[str, np.ndarray] = {}
    for name, shape in target_shapes.items():
        array, shape = converted[name], tuple(shape)
        if array.shape != shape:
            hint = "set --class_num to the checkpoint's" if name.startswith("classifier.") else "check --net_name"
            raise DropCovError(f"{source}: {name} has shape {array.shape} in the checkpoint but {shape} in "
                               f"{net_name}; {hint}")
        result[name] = array
    return result

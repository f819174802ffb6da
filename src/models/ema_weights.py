"""A training checkpoint's two sets of weights: the raw ones and the model EMA's (``ema.<name>`` entries).

A run trained with ``model_ema`` checkpoints the moving averages of every network parameter under
``ema.<name>`` next to the parameters themselves (:class:`src.engine.ema.ModelEma`), and ``best.ckpt``
records in its ``best_weights`` entry which of the two scored the best top-1. :func:`select_weights` picks
the set to load (``eval_weights``). Imports no MindSpore.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

from src.errors import DropCovError

EMA_PREFIX = "ema."
"""Name prefix of the EMA's copies of the network parameters in a checkpoint."""
BEST_WEIGHTS_ENTRY = "best_weights"
"""Entry of ``best.ckpt`` naming the weights that scored its ``best_metric``: ``raw`` or ``ema``."""
WEIGHT_SOURCES = ("auto", "raw", "ema")
"""Values of ``eval_weights``: ``auto`` = what ``best.ckpt`` says scored best (else raw), ``raw``, ``ema``."""


def has_ema(param_dict: Mapping[str, Any]) -> bool:
    """Whether a checkpoint holds EMA weights."""
    return any(name.startswith(EMA_PREFIX) for name in param_dict)


def select_weights(param_dict: Mapping[str, Any], which: str = "auto",
                   source: str = "the checkpoint") -> Tuple[Dict[str, Any], str]:
    """``(entries, "raw" | "ema")``: the checkpoint's entries with the chosen network weights.

    ``raw`` returns the entries as they are; ``ema`` replaces each network parameter by its ``ema.<name>``
    copy (and drops the ``ema.*`` entries); ``auto`` follows the checkpoint's ``best_weights`` entry and
    takes the raw weights when there is none. Raises :class:`DropCovError` when the EMA weights are asked
    for and the checkpoint holds none.
    """
    if which not in WEIGHT_SOURCES:
        raise DropCovError(f"eval_weights {which!r} is not known; use one of {', '.join(WEIGHT_SOURCES)}")
    if which == "auto":
        recorded = param_dict.get(BEST_WEIGHTS_ENTRY)
        which = recorded if recorded in ("raw", "ema") else "raw"
    if which == "raw":
        return dict(param_dict), "raw"
    averages = {name[len(EMA_PREFIX):]: value for name, value in param_dict.items() if name.startswith(EMA_PREFIX)}
    if not averages:
        raise DropCovError(f"{source} holds no EMA weights (ema.* entries): it was trained without model_ema; "
                           "evaluate its raw weights (--eval_weights raw)")
    entries = {name: value for name, value in param_dict.items() if not name.startswith(EMA_PREFIX)}
    entries.update(averages)
    return entries, "ema"

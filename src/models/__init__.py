"""DropCov networks: the model registry, the networks' facts, ResNet backbones, the DropCov/GAP heads, GCP maths.

Importing the package loads no MindSpore: the registry and the facts (:mod:`src.models.specs`) are plain
Python; the network cells are imported when a network is built (or one of them is named below).
"""
from __future__ import annotations

import importlib
from typing import Any

from ._registry import (
    ModelSpec,
    create_model,
    create_model_from_config,
    list_models,
    model_options,
    model_spec,
    register_model,
)

_CELLS = {"DropCovHead": "src.models.dropcov_head", "GlobalAvgPoolHead": "src.models.dropcov_head",
          "ResNet": "src.models.resnet"}

__all__ = ["DropCovHead", "GlobalAvgPoolHead", "ModelSpec", "ResNet", "create_model", "create_model_from_config",
           "list_models", "model_options", "model_spec", "register_model"]


def __getattr__(name: str) -> Any:
    """The network cells, imported on first use (they need MindSpore)."""
    if name in _CELLS:
        return getattr(importlib.import_module(_CELLS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Which convolution kernels a run uses (config key ``conv_backend``), decided without importing MindSpore.

The decision comes before ``import mindspore`` because it also settles oneDNN's instruction set: with
every convolution on the blocked-layout kernels, nothing needs the AVX2 cap of
:func:`src.runtime.environment.configure_cpu_environment`.
"""
from __future__ import annotations

import logging
from typing import Any

from src.errors import DropCovError

from .build import build_library

logger = logging.getLogger(__name__)

CONV_BACKENDS = ("auto", "stock", "onednn")


def resolve_conv_backend(requested: str, device_target: str, amp_level: str) -> tuple[str, str]:
    """The backend to use and why: ``('onednn', library path)`` or ``('stock', reason)``.

    Raises:
        DropCovError: an unknown value, or ``onednn`` where it cannot run (the message says why).
    """
    if requested not in CONV_BACKENDS:
        raise DropCovError(f"conv_backend={requested!r} is not supported: choose one of {', '.join(CONV_BACKENDS)}")
    if requested == "stock":
        return "stock", "conv_backend: stock"
    unsupported = []
    if str(device_target).upper() != "CPU":
        unsupported.append(f"device_target={device_target} (the kernels are CPU kernels)")
    if str(amp_level) != "O0":
        unsupported.append(f"amp_level={amp_level} (the kernels are float32)")
    if unsupported:
        if requested == "onednn":
            raise DropCovError(f"conv_backend=onednn cannot run with {' and '.join(unsupported)}: "
                               "use conv_backend: auto or stock")
        return "stock", "; ".join(unsupported)
    try:
        return "onednn", str(build_library())
    except DropCovError as err:
        if requested == "onednn":
            raise
        return "stock", f"the oneDNN kernels could not be built ({err})"


def settle_conv_backend(config: Any) -> str:
    """Before ``import mindspore``: decide the convolution kernels of a run and set the process environment
    that depends on them (oneDNN's instruction-set cap, see
    :func:`src.runtime.environment.configure_cpu_environment`); returns ``'onednn'`` or ``'stock'``.

    Reads ``conv_backend``, ``device_target`` and ``amp_level``; ``auto`` may build the kernels (a few
    seconds, once per machine) and logs a warning when they cannot be built.
    """
    from src.runtime.environment import configure_cpu_environment

    backend, detail = resolve_conv_backend(config.conv_backend, config.device_target, config.amp_level)
    configure_cpu_environment(config.device_target, full_isa=backend == "onednn")
    if config.conv_backend == "auto" and backend == "stock" and "could not be built" in detail:
        logger.warning("conv_backend=auto: using MindSpore's convolutions because %s", detail)
    return backend

"""The one place that settles the device and MindSpore's execution mode for a process."""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

from src.errors import DropCovError

logger = logging.getLogger(__name__)

DEVICE_TARGETS = ("CPU", "GPU", "Ascend")
"""Devices MindSpore can run on, spelt as MindSpore spells them (config key ``device_target``)."""
EXECUTION_MODES = ("GRAPH_MODE", "PYNATIVE_MODE")
"""MindSpore's execution modes (config key ``mode_name``), in the order of their numbers."""
_MODES = {name: number for number, name in enumerate(EXECUTION_MODES)}
_TARGETS = {target.upper(): target for target in DEVICE_TARGETS}


@contextlib.contextmanager
def _quiet_mindspore_warnings() -> Iterator[None]:
    """Hold back WARNING-level log lines while probing a device: MindSpore's probe prints a few lines on
    stderr (about plugin libraries of other backends) before our own one-line error."""
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))
    try:
        yield
    finally:
        logging.disable(previous)


def unavailable_reason(device_target: str) -> str:
    """Why MindSpore cannot use ``device_target`` here ("" when it can; always "" for CPU).

    For GPU the reason is MindSpore's own: the load error it recorded for its GPU plugin, why its
    ``CUDA_HOME``/``nvcc`` rule chose no plugin (:mod:`src.runtime.gpu_plugin`), or the device query's error.
    """
    import mindspore as ms

    target = _TARGETS.get(str(device_target).upper(), device_target)
    if target == "CPU":
        return ""
    try:
        with _quiet_mindspore_warnings():
            if not ms.hal.is_available(target):
                return _plugin_reason(target)
            count = ms.hal.device_count(target)
    except (RuntimeError, ValueError, AttributeError) as err:
        return f"MindSpore's {target} query failed: {' '.join(str(err).split())}"
    if count > 0:
        return ""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"MindSpore's {target} plugin loaded but sees 0 devices" + (
        f" (CUDA_VISIBLE_DEVICES={visible!r})" if target == "GPU" and visible is not None else "")


def _plugin_reason(target: str) -> str:
    if target == "GPU":
        from src.runtime.gpu_plugin import gpu_unavailable_reason

        return gpu_unavailable_reason() or "MindSpore has no GPU plugin loaded"
    from src.runtime.gpu_plugin import mindspore_plugin_errors

    failed = [line for line in mindspore_plugin_errors() if "ascend" in line.lower()]
    return f"MindSpore could not load its {target} plugin: {failed[0]}" if failed else \
        f"MindSpore has no {target} plugin loaded"


def device_available(device_target: str) -> bool:
    """True when MindSpore's plugin for ``device_target`` (GPU or Ascend) loads and sees a device;
    always True for CPU."""
    return not unavailable_reason(device_target)


def setup_device(device_target: str, mode_name: str = "GRAPH_MODE", device_id: int | None = 0) -> None:
    """Select the device and execution mode before any network is built.

    ``device_id`` None leaves MindSpore's own choice; launched ranks pass their local rank's device
    (:func:`src.runtime.launchers.rank_device_id`). An id beyond the devices MindSpore sees is a one-line error.
    A GPU (or Ascend) request on a machine where MindSpore sees no such device is a one-line error,
    not a crash later; so is an unknown target or mode.
    """
    import mindspore as ms

    target = _TARGETS.get(str(device_target).upper())
    if target is None:
        raise DropCovError(f"device_target {device_target!r} is not supported: use CPU, GPU or Ascend")
    if mode_name not in _MODES:
        raise DropCovError(f"mode_name {mode_name!r} is not supported: use {' or '.join(_MODES)}")
    reason = unavailable_reason(target)
    if reason:
        if target == "GPU":
            raise DropCovError(f"device_target GPU: MindSpore sees no usable GPU here: {reason}; "
                               "`python scripts/check_env.py --gpu` lists what is missing, or run with "
                               "--device_target CPU")
        raise DropCovError(f"device_target {target}: MindSpore sees no usable {target} device here: {reason}; "
                           "check the CANN installation and `python scripts/check_env.py`, or run with "
                           "--device_target CPU")
    if device_id is not None and target != "CPU":
        count = ms.hal.device_count(target)
        if not 0 <= device_id < count:
            raise DropCovError(f"device_id {device_id} but MindSpore sees {count} {target}(s) here (ids 0-{count - 1})"
                               + (f", CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}"
                                  if target == "GPU" and "CUDA_VISIBLE_DEVICES" in os.environ else ""))
    if device_id is None:
        ms.set_device(target)
    else:
        ms.set_device(target, device_id)
    ms.set_context(mode=_MODES[mode_name])
    logger.debug("device %s:%s, %s", target, device_id, mode_name)

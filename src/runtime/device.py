"""The one place that settles the device and MindSpore's execution mode for a process."""
from __future__ import annotations

import logging

from src.errors import DropCovError

logger = logging.getLogger(__name__)

_MODES = {"GRAPH_MODE": 0, "PYNATIVE_MODE": 1}


def gpu_available() -> bool:
    """True when MindSpore's GPU plugin loads and sees at least one CUDA device."""
    import mindspore as ms

    try:
        return bool(ms.hal.is_available("GPU")) and ms.hal.device_count("GPU") > 0
    except (RuntimeError, ValueError, AttributeError):
        return False


def setup_device(device_target: str, mode_name: str = "GRAPH_MODE", device_id: int | None = 0) -> None:
    """Select the device and execution mode before any network is built.

    ``device_id`` None lets the distributed launcher decide (GPU ranks pick their local rank).
    A GPU request on a machine where MindSpore sees no GPU is a one-line error, not a crash later.
    """
    import mindspore as ms

    target = device_target.upper()
    if target == "GPU" and not gpu_available():
        raise DropCovError("device_target GPU: MindSpore sees no usable GPU here (check the CUDA 11.x "
                           "libraries and `python scripts/check_env.py`), or run with --device_target CPU")
    if device_id is None:
        ms.set_device(target)
    else:
        ms.set_device(target, device_id)
    ms.set_context(mode=_MODES[mode_name])
    logger.debug("device %s:%s, %s", target, device_id, mode_name)

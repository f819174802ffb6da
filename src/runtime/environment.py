"""Process environment that must be settled before MindSpore is imported.

On AVX-512 CPUs oneDNN wraps MindSpore's plain-layout 3x3 convolutions in a path that falls back to
its reference kernel (about 50x slower). Capping oneDNN at AVX2 before ``import mindspore`` avoids it;
runs whose convolutions all use the blocked-layout kernels (``conv_backend``) need no cap.
MindSpore's own log is kept to errors (``GLOG_v=3``) unless the user set ``GLOG_v``, so that our one-line
errors and log lines are not buried under framework notices (e.g. deprecations of ops we must use).
"""
from __future__ import annotations

import logging
import os
import sys

GLOG_VARIABLE = "GLOG_v"
GLOG_ERRORS_ONLY = "3"
ONEDNN_ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"
ONEDNN_ISA_FOR_CPU = "AVX2"

logger = logging.getLogger(__name__)


def configure_cpu_environment(device_target: str, full_isa: bool = False) -> str | None:
    """Set ``ONEDNN_MAX_CPU_ISA=AVX2`` for CPU runs unless the user chose a value or ``full_isa``.

    ``full_isa``: every convolution runs on the blocked-layout kernels (``conv_backend``, see
    :func:`src.kernels.backend.settle_conv_backend`), which have no slow AVX-512 path, so oneDNN
    keeps its best instruction set.

    Must run before the first ``import mindspore`` of the process; returns the value set, or None
    when nothing was changed. Also sets ``GLOG_v=3`` (MindSpore errors only) when unset, for any device. Logs a line when it sets the variable, and a warning when MindSpore
    was already imported (the setting would then have no effect).
    """
    if "mindspore" not in sys.modules:
        os.environ.setdefault(GLOG_VARIABLE, GLOG_ERRORS_ONLY)
    if str(device_target).upper() != "CPU" or ONEDNN_ISA_VARIABLE in os.environ:
        return None
    if full_isa:
        logger.info("oneDNN keeps its full instruction set: the convolutions run on the blocked-layout "
                    "kernels (conv_backend)")
        return None
    if "mindspore" in sys.modules:
        logger.warning("%s not set before MindSpore was imported: CPU convolutions may be slow; "
                       "export %s=%s before starting.", ONEDNN_ISA_VARIABLE, ONEDNN_ISA_VARIABLE,
                       ONEDNN_ISA_FOR_CPU)
        return None
    os.environ[ONEDNN_ISA_VARIABLE] = ONEDNN_ISA_FOR_CPU
    logger.info("set %s=%s for the CPU run (oneDNN's AVX-512 path uses a slow reference kernel for "
                "3x3 convolutions in MindSpore); export another value to override.",
                ONEDNN_ISA_VARIABLE, ONEDNN_ISA_FOR_CPU)
    return ONEDNN_ISA_FOR_CPU

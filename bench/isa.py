"""The kind of CPU a benchmark measures (``--isa``): the machine's own, or an AVX2-only CPU emulated on a wider one.

Many CPUs have AVX2 but no AVX-512, and the convolution kernels behave differently there (the blocked and
plain layouts trade places for some shapes). Without such a machine at hand, ``--isa AVX2`` caps the
instruction set of every library that reads a cap before its first use:

- oneDNN (MindSpore's convolutions, batch norm and pooling, and our kernels): ``ONEDNN_MAX_CPU_ISA``;
- PyTorch: the same, plus ``DNNL_MAX_CPU_ISA`` (older oneDNN name), ``ATEN_CPU_CAPABILITY`` (its own
  vectorised kernels) and ``MKL_ENABLE_INSTRUCTIONS`` (its BLAS).

It is an emulation: the cache sizes, clock and memory system stay those of the real CPU, and MindSpore's
own (nnacl) kernels, which pick AVX-512 by themselves and read no cap, keep it (they run element-wise ops
and the head's small matrix products, a few percent of a step).
"""
from __future__ import annotations

from typing import Any

ISA_SETTINGS = ("native", "AVX2")
#: Variables set for each framework's workers under ``--isa AVX2``.
AVX2_CAPS = {
    "mindspore": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "pytorch": {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def widest_isa(isa_flags: list[str]) -> str:
    """``AVX-512``, ``AVX2`` or ``SSE``: the widest vector instruction set among /proc/cpuinfo's flags."""
    return "AVX-512" if "avx512f" in isa_flags else "AVX2" if "avx2" in isa_flags else "SSE"


def cpu_kind(isa_flags: list[str], isa_setting: str) -> dict[str, Any]:
    """The CPU kind a run measures: ``{"kind", "emulated", "label"}``.

    ``kind`` is ``AVX2`` under ``--isa AVX2`` (``emulated`` when the CPU has more), else the CPU's widest
    set; ``label`` says it in words for tables and docs.
    """
    native = widest_isa(isa_flags)
    if isa_setting == "AVX2" and native == "AVX-512":
        return {"kind": "AVX2", "emulated": True,
                "label": "AVX2 (emulated on an AVX-512 CPU: oneDNN, ATen and MKL capped at AVX2)"}
    kind = "AVX2" if isa_setting == "AVX2" else native
    return {"kind": kind, "emulated": False, "label": kind}


def isa_environment(isa_setting: str, framework: str = "mindspore") -> dict[str, str]:
    """Environment variables that cap ``framework``'s workers (``mindspore`` or ``pytorch``) under ``isa_setting``."""
    if isa_setting not in ISA_SETTINGS:
        raise ValueError(f"--isa must be one of {', '.join(ISA_SETTINGS)}, not {isa_setting!r}")
    return dict(AVX2_CAPS[framework]) if isa_setting == "AVX2" else {}

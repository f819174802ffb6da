"""The machine's dense float32 limit: GFLOP/s of the best matmul and convolution kernels available.

- :func:`numpy_matmul` — NumPy's BLAS ``sgemm`` (runs in the calling process; no oneDNN involved).
- :func:`measure_mindspore_kernels` (worker, ``python -m bench.peak_flops '{...}'``) — MindSpore's CPU
  MatMul and Conv2D (1x1, and a 3x3 for reference) in GRAPH_MODE, and on CPU the same two convolutions
  on our oneDNN blocked-layout kernels (:class:`src.kernels.onednn_conv.OneDNNConv2d`, backend
  :data:`OURS`), under whatever ``ONEDNN_MAX_CPU_ISA`` the parent gave the process (unset = oneDNN's
  default, the widest ISA).
- :func:`torch_kernels` — PyTorch matmul and conv, called from :mod:`bench.pytorch_ref`'s worker.

A kernel's FLOPs are ``2 x multiply-adds``; each figure uses the median of repeated calls.
"""
from __future__ import annotations

import os
import statistics
from typing import Any

import numpy as np

from bench.common import time_for_at_least, worker_main

#: The backend name of the convolutions run on :class:`src.kernels.onednn_conv.OneDNNConv2d`.
OURS = "mindspore+onednn-blocked (ours)"
CONV_KERNELS = (("conv1x1", 1), ("conv3x3", 3))


def kernel_shapes(quick: bool) -> dict[str, dict[str, int]]:
    """Problem sizes: big enough to run near peak, small enough for a 2-core machine (smaller with quick)."""
    if quick:
        return {"matmul": {"n": 256},
                "conv1x1": {"batch": 2, "channels": 128, "size": 14},
                "conv3x3": {"batch": 1, "channels": 32, "size": 14}}
    return {"matmul": {"n": 1024},
            "conv1x1": {"batch": 8, "channels": 256, "size": 28},
            "conv3x3": {"batch": 1, "channels": 64, "size": 56}}


def _matmul_gflop(n: int) -> float:
    return 2.0 * n ** 3 / 1e9


def _conv_gflop(batch: int, channels: int, size: int, kernel: int) -> float:
    """Same-padded stride-1 convolution, ``channels -> channels``."""
    return 2.0 * batch * size * size * channels * channels * kernel * kernel / 1e9


def _entry(name: str, backend: str, isa: str, gflop: float, times: list[float], shape: dict) -> dict[str, Any]:
    median = statistics.median(times)
    return {"kernel": name, "backend": backend, "isa": isa, "shape": shape, "gflop": gflop,
            "median_s": median, "gflops": gflop / median if median > 0 else None, "calls": len(times)}


def numpy_matmul(quick: bool = False, min_seconds: float = 0.5) -> dict[str, Any]:
    """float32 ``n x n`` matmul through NumPy's BLAS."""
    shape = kernel_shapes(quick)["matmul"]
    n = shape["n"]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    times = time_for_at_least(lambda: a @ b, min_seconds)
    config = np.__config__
    blas = "BLAS"
    show = getattr(config, "CONFIG", None)
    if isinstance(show, dict):
        blas = show.get("Build Dependencies", {}).get("blas", {}).get("name", "BLAS")
    return _entry("matmul", f"numpy ({blas})", "n/a", _matmul_gflop(n), times, shape)


def measure_mindspore_kernels(quick: bool = False, min_seconds: float = 0.5,
                              device_target: str = "CPU") -> dict[str, Any]:
    """MindSpore MatMul, 1x1 and 3x3 Conv2D (forward) GFLOP/s under this process's oneDNN ISA cap.

    On CPU the two convolutions also run on our blocked-layout kernels (backend :data:`OURS`, same
    shapes, ``OneDNNConv2d`` in a GRAPH_MODE cell); if their library cannot be built, ``errors`` says why.
    Does not call :func:`src.runtime.environment.configure_cpu_environment`: the parent sets or
    removes ``ONEDNN_MAX_CPU_ISA`` on purpose to compare ISAs.
    """
    import mindspore as ms
    from mindspore import Tensor, nn, ops

    ms.set_device(device_target)
    ms.set_context(mode=ms.GRAPH_MODE)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "default") if device_target == "CPU" else device_target

    class MatMul(nn.Cell):
        def construct(self, a, b):
            return ops.matmul(a, b)

    class Conv(nn.Cell):
        def __init__(self, padding: int) -> None:
            super().__init__()
            self.padding = padding

        def construct(self, x, w):
            return ops.conv2d(x, w, pad_mode="pad", padding=self.padding)

    rng = np.random.default_rng(0)
    shapes = kernel_shapes(quick)
    results = []
    n = shapes["matmul"]["n"]
    a = Tensor(rng.standard_normal((n, n), dtype=np.float32))
    b = Tensor(rng.standard_normal((n, n), dtype=np.float32))
    matmul = MatMul()
    times = time_for_at_least(lambda: matmul(a, b).asnumpy(), min_seconds)
    results.append(_entry("matmul", "mindspore", isa, _matmul_gflop(n), times, shapes["matmul"]))
    for name, kernel in CONV_KERNELS:
        shape = shapes[name]
        channels, size = shape["channels"], shape["size"]
        x = Tensor(rng.standard_normal((shape["batch"], channels, size, size), dtype=np.float32))
        w = Tensor(rng.standard_normal((channels, channels, kernel, kernel), dtype=np.float32))
        conv = Conv(kernel // 2)
        times = time_for_at_least(lambda conv=conv, x=x, w=w: conv(x, w).asnumpy(), min_seconds)
        results.append(_entry(name, "mindspore", isa, _conv_gflop(shape["batch"], channels, size, kernel),
                              times, shape))
    errors = []
    if device_target == "CPU":
        from src.errors import DropCovError
        from src.kernels.build import build_library
        from src.kernels.onednn_conv import OneDNNConv2d

        try:
            library = str(build_library())
        except DropCovError as err:
            errors.append(f"{OURS}: {err}")
        else:
            for name, kernel in CONV_KERNELS:
                shape = shapes[name]
                channels, size = shape["channels"], shape["size"]
                x = Tensor(rng.standard_normal((shape["batch"], channels, size, size), dtype=np.float32))
                stock = nn.Conv2d(channels, channels, kernel, pad_mode="pad", padding=kernel // 2, has_bias=False)
                conv = OneDNNConv2d(stock, library)
                times = time_for_at_least(lambda conv=conv, x=x: conv(x).asnumpy(), min_seconds)
                results.append(_entry(name, OURS, isa, _conv_gflop(shape["batch"], channels, size, kernel),
                                      times, shape))
    return {"isa": isa, "kernels": results, "errors": errors}


def torch_kernels(quick: bool = False, min_seconds: float = 0.5) -> list[dict[str, Any]]:
    """PyTorch matmul, 1x1 and 3x3 conv2d forward GFLOP/s (call inside a process whose threads are set)."""
    import torch
    from torch.nn import functional

    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "default")
    generator = torch.Generator().manual_seed(0)
    shapes = kernel_shapes(quick)
    n = shapes["matmul"]["n"]
    a = torch.randn(n, n, generator=generator)
    b = torch.randn(n, n, generator=generator)
    results = []
    with torch.no_grad():
        times = time_for_at_least(lambda: a @ b, min_seconds)
        results.append(_entry("matmul", "torch", isa, _matmul_gflop(n), times, shapes["matmul"]))
        for name, kernel in (("conv1x1", 1), ("conv3x3", 3)):
            shape = shapes[name]
            channels, size = shape["channels"], shape["size"]
            x = torch.randn(shape["batch"], channels, size, size, generator=generator)
            w = torch.randn(channels, channels, kernel, kernel, generator=generator)
            times = time_for_at_least(lambda x=x, w=w, k=kernel: functional.conv2d(x, w, padding=k // 2),
                                      min_seconds)
            results.append(_entry(name, "torch", isa, _conv_gflop(shape["batch"], channels, size, kernel),
                                  times, shape))
    return results


def best_kernel(kernels: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The entry with the highest GFLOP/s (None when nothing was measured)."""
    measured = [kernel for kernel in kernels if kernel.get("gflops")]
    return max(measured, key=lambda kernel: kernel["gflops"]) if measured else None


if __name__ == "__main__":
    raise SystemExit(worker_main(measure_mindspore_kernels))

"""Worker: training steps of ours and of MindSpore's stock kernels in one process, timed in pairs.

``python -m bench.paired_steps '{"net_name": "resnet18", "head": "gap", "pairs": 16}'``

Both training steps are the one ``train.py`` runs (:func:`bench.train_step.build_bench_train_step`) on the
same network and batch, one with ``conv_backend`` stock and one with auto; they run alternately (ours, stock,
then stock, ours, ...), so that each pair sees the same moment of the machine's load. Both share the
process's oneDNN, so both run at the stock side's instruction-set cap (``ONEDNN_MAX_CPU_ISA=AVX2``).
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np

from bench.common import worker_main
from bench.train_step import ISA_VARIABLE, build_bench_train_step, prepare_cpu_environment

#: Each side's ``conv_backend``.
SIDES = {"ours": "auto", "stock": "stock"}


def measure_paired_steps(net_name: str = "resnet18", head: str = "gap", batch_size: int = 8,
                         image_size: int = 224, warmup: int = 2, pairs: int = 16, seed: int = 0) -> dict[str, Any]:
    """Time ``pairs`` training steps of each side, alternating which goes first, after ``warmup`` steps each.

    Returns each side's step seconds and median, ``stock_over_ours`` (the median over pairs of stock's time
    over ours': above 1, ours is faster), how many pairs ours won, and the backends and ISA cap used.
    """
    prepare_cpu_environment("stock", "CPU", "O0")  # the stock side's cap, shared by both
    from mindspore import Tensor

    from src.runtime.device import setup_device

    setup_device("CPU", "GRAPH_MODE")
    steps, backends = {}, {}
    for side, conv_backend in SIDES.items():
        net, steps[side], backends[side] = build_bench_train_step(net_name, head, conv_backend, seed=seed)
    if backends["ours"] != "onednn":
        raise RuntimeError(f"conv_backend auto resolved to {backends['ours']}: nothing to compare with stock")
    rng = np.random.default_rng(seed)
    images = Tensor(rng.standard_normal((batch_size, 3, image_size, image_size), dtype=np.float32))
    labels = Tensor(rng.integers(0, net.num_classes, size=(batch_size,), dtype=np.int32))

    def step_seconds(side: str) -> float:
        start = time.perf_counter()
        steps[side](images, labels).asnumpy()
        return time.perf_counter() - start

    for side in SIDES:
        for _ in range(warmup):
            step_seconds(side)
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    for pair in range(pairs):
        for side in (("ours", "stock") if pair % 2 == 0 else ("stock", "ours")):
            seconds[side].append(step_seconds(side))
    ratios = [stock / ours for stock, ours in zip(seconds["stock"], seconds["ours"])]
    return {"net_name": net_name, "head": head, "batch_size": batch_size, "image_size": image_size,
            "conv_backend": backends, "onednn_max_cpu_isa": os.environ.get(ISA_VARIABLE, ""),
            "seconds": {side: [round(value, 4) for value in values] for side, values in seconds.items()},
            "median_s": {side: statistics.median(values) for side, values in seconds.items()},
            "stock_over_ours": statistics.median(ratios), "ours_faster_pairs": sum(ratio > 1 for ratio in ratios),
            "pairs": pairs}


if __name__ == "__main__":
    raise SystemExit(worker_main(measure_paired_steps))

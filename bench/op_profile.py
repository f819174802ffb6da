"""Worker: where one training step's time goes, by operator type, from MindSpore's profiler.

``python -m bench.op_profile '{"net_name": "resnet18", "head": "dropcov", "steps": 2}'``

Builds the same step as :mod:`bench.train_step` (``build_train_step``: label-smoothed CE, Momentum with
the weight-decay groups, fixed loss scale 1024) on one fixed random batch, runs ``warmup`` untimed steps
(the first compiles), then ``steps`` steps under :class:`mindspore.profiler.Profiler` and reads the
per-operator CSV it writes on CPU (``FRAMEWORK/cpu_op_detail_info_0.csv``). Each kernel is put in one
of three phases by its scope name: ``optimizer`` (``Default/optimizer...``), ``backward``
(``Gradients/...``) or ``forward``. CPU kernels of one graph run one after another, so the per-step sum
of kernel times is (within a few ms of launch gaps) the step's wall time; ``step_wall_s`` gives the
profiled steps' own timings to compare.

The convolution rows also give GFLOP/s, taking ``2 x forward MACs x batch`` per direction
(:func:`src.models.info.describe_model`; convolutions are > 99% of a ResNet's MACs; each conv's
backward-filter does its forward's work, and so does its backward-data, except the stem's, whose input
needs no gradient).
"""
from __future__ import annotations

import csv
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import worker_main

PHASES = ("forward", "backward", "optimizer")


def op_phase(full_op_name: str) -> str:
    """``'optimizer'``, ``'backward'`` or ``'forward'`` from a kernel's scope name."""
    if full_op_name.startswith("Default/optimizer"):
        return "optimizer"
    if full_op_name.startswith("Gradients/"):
        return "backward"
    return "forward"


def summarise_op_csv(csv_path: Path, steps: int) -> list[dict[str, Any]]:
    """Rows ``{phase, op_type, kernels, ms_per_step}`` of a profiler ``cpu_op_detail_info`` CSV, largest first.

    ``kernels`` counts the distinct kernels of that type and phase in the graph (one launch each per step).
    """
    total_ms: dict[tuple[str, str], float] = defaultdict(float)
    kernels: dict[tuple[str, str], int] = defaultdict(int)
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            key = (op_phase(row["full_op_name"]), row["op_type"])
            total_ms[key] += float(row["op_total_time(ms)"]) / steps
            kernels[key] += 1
    rows = [{"phase": phase, "op_type": op_type, "kernels": kernels[(phase, op_type)], "ms_per_step": ms}
            for (phase, op_type), ms in total_ms.items()]
    return sorted(rows, key=lambda row: -row["ms_per_step"])


def profile_train_step(net_name: str = "resnet18", head: str = "dropcov", layer4_stride: int = 0,
                       batch_size: int = 8, image_size: int = 224, warmup: int = 2, steps: int = 2,
                       num_classes: int = 1000, adaptive_dropout: bool = True, loss_scale: float = 1024.0,
                       seed: int = 0, top: int = 30) -> dict[str, Any]:
    """Profile ``steps`` GRAPH_MODE training steps on CPU after ``warmup``; see the module docstring.

    Returns ``ops`` (the ``top`` largest rows of :func:`summarise_op_csv`), ``by_phase`` and
    ``by_group`` (convolutions / batch norm / pooling / ReLU / optimizer / other) in ms per step,
    ``total_ms_per_step``, ``step_wall_s`` of the profiled steps, and ``conv_gflops`` per direction.
    """
    from src.runtime.environment import configure_cpu_environment

    configure_cpu_environment("CPU")
    import mindspore as ms
    from mindspore import Tensor
    from mindspore.profiler import Profiler

    from src.engine.loss import create_loss
    from src.engine.optimizer import create_loss_scale_manager, create_optimizer
    from src.engine.trainer import build_train_step
    from src.models import create_model
    from src.models.info import describe_model
    from src.runtime.device import setup_device

    setup_device("CPU", "GRAPH_MODE")
    ms.set_seed(seed)
    options = {"num_classes": num_classes, "head": head, "layer4_stride": layer4_stride,
               "adaptive_dropout": adaptive_dropout}
    net = create_model(net_name, **options)
    optimizer = create_optimizer(net, "Momentum", 0.01, 0.9, 1e-4, loss_scale)
    train_step = build_train_step(net, create_loss(num_classes, 0.1), optimizer, "O0",
                                  create_loss_scale_manager("fixed", loss_scale, "CPU"))
    train_step.set_train(True)
    rng = np.random.default_rng(seed)
    images = Tensor(rng.standard_normal((batch_size, 3, image_size, image_size), dtype=np.float32))
    labels = Tensor(rng.integers(0, num_classes, size=(batch_size,), dtype=np.int32))
    for _ in range(warmup):
        train_step(images, labels).asnumpy()

    with tempfile.TemporaryDirectory(prefix="op_profile_") as out_dir:
        profiler = Profiler(output_path=out_dir)
        wall = []
        for _ in range(steps):
            start = time.perf_counter()
            train_step(images, labels).asnumpy()
            wall.append(time.perf_counter() - start)
        profiler.stop()
        profiler.analyse()
        found = sorted(Path(out_dir).rglob("cpu_op_detail_info_0.csv"))
        if not found:
            raise RuntimeError(f"the profiler wrote no cpu_op_detail_info_0.csv under {out_dir}")
        rows = summarise_op_csv(found[0], steps)

    by_phase = {phase: sum(r["ms_per_step"] for r in rows if r["phase"] == phase) for phase in PHASES}
    groups = {"convolution": ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"),
              "batch_norm": ("BatchNorm", "BatchNormGrad"), "relu": ("ReLU", "ReluGrad")}
    by_group: dict[str, float] = defaultdict(float)
    for row in rows:
        if row["phase"] == "optimizer":
            group = "optimizer"
        elif "Pool" in row["op_type"]:
            group = "pooling"
        else:
            group = next((name for name, types in groups.items() if row["op_type"] in types), "other")
        by_group[group] += row["ms_per_step"]
    conv_gflop = 2.0 * describe_model(net_name, image_size=image_size, **options)["macs"] * batch_size / 1e9
    conv_ms = {r["op_type"]: r["ms_per_step"] for r in rows if r["op_type"].startswith("Conv2D")}
    return {
        "net_name": net_name, "head": head, "batch_size": batch_size, "image_size": image_size,
        "steps": steps, "step_wall_s": [round(t, 4) for t in wall],
        "total_ms_per_step": sum(r["ms_per_step"] for r in rows),
        "by_phase": by_phase, "by_group": dict(by_group), "ops": rows[:top],
        "conv_gflops": {op: conv_gflop / (ms / 1e3) for op, ms in conv_ms.items() if ms > 0},
    }


def format_profile(result: dict[str, Any]) -> str:
    """A plain-text table of one :func:`profile_train_step` result."""
    total = result["total_ms_per_step"]
    lines = [f"{result['net_name']} {result['head']}, batch {result['batch_size']}, {result['image_size']}px: "
             f"{total:.0f} ms of kernels per step (profiled steps took {result['step_wall_s']} s)"]
    lines += [f"  {group:12s} {ms:8.1f} ms  {100 * ms / total:5.1f}%"
              for group, ms in sorted(result["by_group"].items(), key=lambda item: -item[1])]
    lines += [f"  {row['phase']:9s} {row['op_type']:26s} x{row['kernels']:<3d} {row['ms_per_step']:8.1f} ms"
              for row in result["ops"]]
    lines += [f"  {op}: {gflops:.0f} GFLOP/s" for op, gflops in result["conv_gflops"].items()]
    return "\n".join(lines)


def _main(**params: Any) -> dict[str, Any]:
    result = profile_train_step(**params)
    print(format_profile(result), flush=True)
    return result


if __name__ == "__main__":
    raise SystemExit(worker_main(_main))

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

With ``conv_backend: onednn`` the convolutions (and the padded max-pools) are ``ops.Custom`` kernels
(:mod:`src.kernels.onednn_conv`). The profiler names every one of them alike: op type ``Custom``, op names
``Custom-op<k>``, and scope names that do not tell the forward, backward-data and backward-filter kernels
apart (all backward ones sit under some ``.../Grad_Custom/``, not always their own layer's). The kernel
comes from its input shapes instead, which the profiler writes to ``FRAMEWORK/cpu_framework_0.txt`` in
launch order (``op_type;op_name;graph;input_1:[...];...``): each launch there is matched to its full scope
name through ``cpu_op_execute_timestamp_0.txt`` (each scope name's launch times), and
:func:`custom_kernel_function` names the kernel from its shapes, as op type ``Custom:<C++ entry point>``
(``Custom:dropcov_conv2d_forward`` / ``..._backward_data`` / ``..._backward_filter``,
``Custom:dropcov_max_pool2d_forward`` / ``..._backward``). A ``Custom`` kernel left unnamed goes to the
group ``custom (unnamed)``.
"""
from __future__ import annotations

import csv
import math
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import worker_main
from bench.train_step import backend_record, prepare_cpu_environment

PHASES = ("forward", "backward", "optimizer")
#: Our ``ops.Custom`` kernels (the C++ entry points), and the op types of the convolution kernels:
#: MindSpore's, and ours as :func:`custom_op_types` names them.
CUSTOM_CONV_FUNCTIONS = ("dropcov_conv2d_forward", "dropcov_conv2d_backward_data",
                         "dropcov_conv2d_backward_filter")
CUSTOM_POOL_FUNCTIONS = ("dropcov_max_pool2d_forward", "dropcov_max_pool2d_backward")
CONV_OP_TYPES = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter",
                 *(f"Custom:{function}" for function in CUSTOM_CONV_FUNCTIONS))
_INPUT_PATTERN = re.compile(r"input_(\d+):([^;]*)")


def op_phase(full_op_name: str) -> str:
    """``'optimizer'``, ``'backward'`` or ``'forward'`` from a kernel's scope name."""
    if full_op_name.startswith("Default/optimizer"):
        return "optimizer"
    if full_op_name.startswith("Gradients/"):
        return "backward"
    return "forward"


def _shape(text: str) -> list[int] | None:
    """``'[2, 8, 16, 16]'`` -> ``[2, 8, 16, 16]``; anything else (``NoShape``, tuples) -> None."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        return [int(value) for value in text[1:-1].split(",") if value.strip()]
    except ValueError:
        return None


def _conv_backward_fits(dy: list[int], weight: list[int], x: list[int]) -> bool:
    """Whether ``(dy, weight, x)`` can be a convolution's (N, O, Ho, Wo), (O, C, kh, kw), (N, C, H, W)."""
    return weight[0] == dy[1] and x[0] == dy[0] and weight[1] == x[1]


def custom_kernel_function(shapes: list[list[int] | None], scope: str = "") -> str | None:
    """Which of our kernels (``csrc``'s entry point) an ``ops.Custom`` launch with these input shapes ran.

    Convolutions: forward ``(x, w, cfg)``; backward-data ``(dy, w, x, cfg)``; backward-filter
    ``(dy, x, w, cfg)``. Max pooling: forward ``(x, cfg)``; backward ``(dy, workspace, x, cfg)``, the
    workspace shaped as ``dy``. Here ``x`` = (N, C, H, W), ``w`` = (O, C, kh, kw), ``dy`` = (N, O, Ho, Wo)
    and ``cfg`` the 7 int64 settings. When the shapes fit several backward kernels (only possible when the
    batch equals a channel count), the kernel whose weight is spatially smaller than its activation wins,
    and then the one the scope name (``scope``: ``...Conv...`` or ``...Pool...``) points to; else None.
    """
    if not shapes or shapes[-1] != [7] or any(shape is None or len(shape) != 4 for shape in shapes[:-1]):
        return None
    if len(shapes) == 2:
        return CUSTOM_POOL_FUNCTIONS[0]
    if len(shapes) == 3:
        return CUSTOM_CONV_FUNCTIONS[0]
    if len(shapes) != 4:
        return None
    dy, second, third = shapes[0], shapes[1], shapes[2]
    fits = {
        CUSTOM_CONV_FUNCTIONS[1]: _conv_backward_fits(dy, second, third),
        CUSTOM_CONV_FUNCTIONS[2]: _conv_backward_fits(dy, third, second),
        CUSTOM_POOL_FUNCTIONS[1]: second == dy and third[:2] == dy[:2],
    }
    candidates = [name for name, fit in fits.items() if fit]
    if len(candidates) > 1:  # a weight's spatial extent is below its activation's
        spatially_sound = {CUSTOM_CONV_FUNCTIONS[1]: math.prod(second[2:]) < math.prod(third[2:]),
                           CUSTOM_CONV_FUNCTIONS[2]: math.prod(third[2:]) < math.prod(second[2:]),
                           CUSTOM_POOL_FUNCTIONS[1]: True}
        candidates = [name for name in candidates if spatially_sound[name]]
    if len(candidates) > 1:
        kind = "pool" if "pool" in scope.lower() else "conv" if "conv" in scope.lower() else None
        candidates = [name for name in candidates if kind and kind in name]
    return candidates[0] if len(candidates) == 1 else None


def custom_op_types(framework_txt: Path, timestamps_txt: Path) -> dict[str, str]:
    """``{full_op_name: 'Custom:<kernel function>'}`` for the ``Custom`` kernels of a CPU profile.

    ``framework_txt`` (``cpu_framework_0.txt``) lists every launch in launch order with its op name and
    input shapes but not its scope; ``timestamps_txt`` (``cpu_op_execute_timestamp_0.txt``) gives each
    full scope name's launch times. Sorting the latter's launches by time lines them up with the former,
    op name by op name. A kernel whose launches disagree, or do not line up, is left out (it stays
    ``Custom``).
    """
    shapes_by_name: dict[str, list[list[list[int] | None]]] = defaultdict(list)
    for line in framework_txt.read_text().splitlines():
        fields = line.split(";")
        if len(fields) >= 3 and fields[0] == "Custom":
            inputs = sorted((int(index), _shape(text)) for index, text in _INPUT_PATTERN.findall(line))
            shapes_by_name[fields[1]].append([shape for _, shape in inputs])
    launches_by_name: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for line in timestamps_txt.read_text().splitlines():
        fields = line.split(";")
        if len(fields) < 3:
            continue
        full_name = fields[0]
        op_name = full_name.rsplit("/", 1)[-1]
        if op_name not in shapes_by_name:
            continue
        for launch in fields[2].split():
            start = launch.split(",")[0]
            if start.isdigit():
                launches_by_name[op_name].append((int(start), full_name))
    functions: dict[str, set[str | None]] = defaultdict(set)
    for op_name, shapes in shapes_by_name.items():
        launches = sorted(launches_by_name.get(op_name, []))
        if len(launches) != len(shapes):
            continue
        for (_, full_name), launch_shapes in zip(launches, shapes):
            functions[full_name].add(custom_kernel_function(launch_shapes, full_name))
    return {full_name: f"Custom:{names.pop()}" for full_name, names in functions.items()
            if len(names) == 1 and None not in names}


def summarise_op_csv(csv_path: Path, steps: int, op_types: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows ``{phase, op_type, kernels, ms_per_step}`` of a profiler ``cpu_op_detail_info`` CSV, largest first.

    ``kernels`` counts the distinct kernels of that type and phase in the graph (one launch each per step).
    ``op_types`` renames the op type of the kernels it names (full scope name -> type; see
    :func:`custom_op_types`).
    """
    op_types = op_types or {}
    total_ms: dict[tuple[str, str], float] = defaultdict(float)
    kernels: dict[tuple[str, str], int] = defaultdict(int)
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            key = (op_phase(row["full_op_name"]), op_types.get(row["full_op_name"], row["op_type"]))
            total_ms[key] += float(row["op_total_time(ms)"]) / steps
            kernels[key] += 1
    rows = [{"phase": phase, "op_type": op_type, "kernels": kernels[(phase, op_type)], "ms_per_step": ms}
            for (phase, op_type), ms in total_ms.items()]
    return sorted(rows, key=lambda row: -row["ms_per_step"])


def profile_train_step(net_name: str = "resnet18", head: str = "dropcov", layer4_stride: int = 0,
                       batch_size: int = 8, image_size: int = 224, warmup: int = 2, steps: int = 2,
                       num_classes: int = 1000, adaptive_dropout: bool = True, loss_scale: float = 1024.0,
                       seed: int = 0, top: int = 30, conv_backend: str = "stock") -> dict[str, Any]:
    """Profile ``steps`` GRAPH_MODE training steps on CPU after ``warmup``; see the module docstring.

    Returns ``ops`` (the ``top`` largest rows of :func:`summarise_op_csv`), ``by_phase`` and
    ``by_group`` (convolutions / batch norm / pooling / ReLU / optimizer / other) in ms per step,
    ``total_ms_per_step``, ``step_wall_s`` of the profiled steps, ``conv_gflops`` per convolution op type
    (one per direction), ``custom_kernels`` (how many ``Custom`` kernels were named from their shapes, and
    how many were not) and the backend fields of :func:`bench.train_step.backend_record`.
    """
    prepare_cpu_environment(conv_backend, "CPU", "O0")
    import mindspore as ms
    from mindspore import Tensor
    from mindspore.profiler import Profiler

    from src.engine.loss import create_loss
    from src.engine.optimizer import create_loss_scale_manager, create_optimizer
    from src.engine.train_step import build_train_step
    from src.kernels.swap import apply_conv_backend
    from src.models import create_model
    from src.models.info import describe_model
    from src.runtime.device import setup_device

    setup_device("CPU", "GRAPH_MODE")
    ms.set_seed(seed)
    options = {"num_classes": num_classes, "head": head, "layer4_stride": layer4_stride,
               "adaptive_dropout": adaptive_dropout}
    net = create_model(net_name, **options)
    used_backend = apply_conv_backend(net, conv_backend, "CPU", "O0")
    optimizer = create_optimizer(net, "Momentum", 0.01, 0.9, 1e-4, loss_scale)
    train_step = build_train_step(net, create_loss(num_classes, 0.1), optimizer, "O0",
                                  create_loss_scale_manager("fixed", loss_scale))
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
        framework, timestamps = (found[0].parent / "cpu_framework_0.txt",
                                 found[0].parent / "cpu_op_execute_timestamp_0.txt")
        op_types = custom_op_types(framework, timestamps) if framework.is_file() and timestamps.is_file() else {}
        rows = summarise_op_csv(found[0], steps, op_types)

    by_phase = {phase: sum(r["ms_per_step"] for r in rows if r["phase"] == phase) for phase in PHASES}
    groups = {"convolution": CONV_OP_TYPES, "custom (unnamed)": ("Custom",),
              "batch_norm": ("BatchNorm", "BatchNormGrad"), "relu": ("ReLU", "ReluGrad")}
    by_group: dict[str, float] = defaultdict(float)
    for row in rows:
        if row["phase"] == "optimizer":
            group = "optimizer"
        elif "pool" in row["op_type"].lower():
            group = "pooling"
        else:
            group = next((name for name, types in groups.items() if row["op_type"] in types), "other")
        by_group[group] += row["ms_per_step"]
    conv_gflop = 2.0 * describe_model(net_name, image_size=image_size, **options)["macs"] * batch_size / 1e9
    conv_ms: dict[str, float] = defaultdict(float)
    for row in rows:
        if row["op_type"] in CONV_OP_TYPES:
            conv_ms[row["op_type"]] += row["ms_per_step"]
    return {
        "net_name": net_name, "head": head, "batch_size": batch_size, "image_size": image_size,
        **backend_record(conv_backend, used_backend),
        "custom_kernels": {"named": sum(r["kernels"] for r in rows if r["op_type"].startswith("Custom:")),
                           "unnamed": sum(r["kernels"] for r in rows if r["op_type"] == "Custom")},
        "steps": steps, "step_wall_s": [round(t, 4) for t in wall],
        "total_ms_per_step": sum(r["ms_per_step"] for r in rows),
        "by_phase": by_phase, "by_group": dict(by_group), "ops": rows[:top],
        "conv_gflops": {op: conv_gflop / (ms / 1e3) for op, ms in conv_ms.items() if ms > 0},
    }


def format_profile(result: dict[str, Any]) -> str:
    """A plain-text table of one :func:`profile_train_step` result."""
    total = result["total_ms_per_step"]
    lines = [f"{result['net_name']} {result['head']}, {result.get('conv_backend', 'stock')} convolutions, "
             f"batch {result['batch_size']}, {result['image_size']}px: "
             f"{total:.0f} ms of kernels per step (profiled steps took {result['step_wall_s']} s)"]
    lines += [f"  {group:12s} {ms:8.1f} ms  {100 * ms / total:5.1f}%"
              for group, ms in sorted(result["by_group"].items(), key=lambda item: -item[1])]
    lines += [f"  {row['phase']:9s} {row['op_type']:38s} x{row['kernels']:<3d} {row['ms_per_step']:8.1f} ms"
              for row in result["ops"]]
    lines += [f"  {op}: {gflops:.0f} GFLOP/s" for op, gflops in result["conv_gflops"].items()]
    return "\n".join(lines)


def _main(**params: Any) -> dict[str, Any]:
    result = profile_train_step(**params)
    print(format_profile(result), flush=True)
    return result


if __name__ == "__main__":
    raise SystemExit(worker_main(_main))

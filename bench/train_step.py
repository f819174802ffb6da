"""Worker: training-step (and evaluation) throughput of one network configuration in one process.

``python -m bench.train_step '{"net_name": "resnet18", "head": "dropcov", "mode_name": "GRAPH_MODE", ...}'``

The step is the one ``train.py`` runs (:func:`src.engine.train_step.build_train_step`: label-smoothed CE,
Momentum with weight-decay groups, fixed loss scale) on one fixed random batch (the input pipeline is
measured apart, in :mod:`bench.pipeline`), so the figure is the model's own speed. Warm-up steps (the
first compiles the graph) are not timed; the median of the timed steps gives images/s. Evaluation is
the forward pass in evaluation mode.

``conv_backend`` picks the convolution kernels as ``train.py``'s config key does: ``stock`` (MindSpore's)
or ``onednn`` (:mod:`src.kernels.onednn_conv`, applied right after ``create_model``). The oneDNN
instruction-set cap is settled the way ``train.py`` settles it: ``ONEDNN_MAX_CPU_ISA=AVX2`` for stock
CPU runs, no cap when every convolution runs on the blocked kernels, a value exported by the caller kept.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from bench.common import step_statistics, time_calls, training_gflop_per_image, worker_main

ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"


def prepare_cpu_environment(conv_backend: str, device_target: str, amp_level: str) -> str:
    """Settle the process environment for ``conv_backend`` before MindSpore is imported; return the backend.

    The kernels' resolution (:func:`src.kernels.backend.resolve_conv_backend`) imports no MindSpore, so
    the ISA cap can follow it: none when the convolutions resolve to the oneDNN blocked kernels.
    """
    from src.kernels.backend import resolve_conv_backend
    from src.runtime.environment import configure_cpu_environment

    backend, _ = resolve_conv_backend(conv_backend, device_target, amp_level)
    configure_cpu_environment(device_target, full_isa=backend == "onednn")
    return backend


def backend_record(requested: str, used: str) -> dict[str, str]:
    """Result fields naming the convolution backend and the ``ONEDNN_MAX_CPU_ISA`` the process ran with."""
    return {"conv_backend": used, "conv_backend_requested": requested,
            "onednn_max_cpu_isa": os.environ.get(ISA_VARIABLE, "")}


def build_bench_train_step(net_name: str, head: str, conv_backend: str, device_target: str = "CPU",
                           amp_level: str = "O0", loss_scale: float = 1024.0, seed: int = 0,
                           **model_options: Any) -> tuple[Any, Any, str]:
    """The network (``create_model`` then ``apply_conv_backend``) and the training step ``train.py`` builds
    for it (label-smoothed CE, Momentum with weight-decay groups, fixed loss scale), in training mode; returns
    ``(net, train_step, backend used)``. MindSpore's device and mode must be set up already."""
    import mindspore as ms

    from src.engine.loss import create_loss
    from src.engine.optimizer import create_loss_scale_manager, create_optimizer, optimizer_loss_scale
    from src.engine.train_step import build_train_step
    from src.kernels.swap import apply_conv_backend
    from src.models import create_model

    ms.set_seed(seed)
    net = create_model(net_name, head=head, **model_options)
    used_backend = apply_conv_backend(net, conv_backend, device_target, amp_level)
    loss_fn = create_loss(net.num_classes, 0.1)
    optimizer = create_optimizer(net, "Momentum", 0.01, 0.9, 1e-4, optimizer_loss_scale("fixed", loss_scale))
    train_step = build_train_step(net, loss_fn, optimizer, amp_level, create_loss_scale_manager("fixed", loss_scale))
    train_step.set_train(True)
    return net, train_step, used_backend


def measure_train_step(net_name: str = "resnet18", head: str = "dropcov", layer4_stride: int = 0,
                       mode_name: str = "GRAPH_MODE", batch_size: int = 8, image_size: int = 224,
                       warmup: int = 2, steps: int = 5, device_target: str = "CPU", num_classes: int = 1000,
                       post_norm: str = "none", adaptive_dropout: bool = True, eval_steps: int = 0,
                       threads_num: int = 0, amp_level: str = "O0", loss_scale: float = 1024.0,
                       seed: int = 0, conv_backend: str = "stock") -> dict[str, Any]:
    """Time ``warmup + steps`` training steps (and ``eval_steps`` forward passes if > 0).

    Args mirror the config keys (the train step is :func:`src.engine.train_step.build_train_step` with a
    fixed loss scale, as ``train.py`` builds it); ``threads_num`` > 0 sets MindSpore's CPU kernel thread count
    (``mindspore.device_context.cpu.op_tuning.threads_num``), 0 keeps MindSpore's default.

    Returns a dict with ``train`` (see :func:`bench.common.step_statistics`, plus warm-up seconds and
    the losses seen), ``eval`` when asked, the forward multiply-adds per image, the training GFLOP
    per step, the convolution backend used (``conv_backend``; ``conv_backend_requested``) and the
    ``ONEDNN_MAX_CPU_ISA`` value the process ran with (``onednn_max_cpu_isa``, ``""`` if unset).
    """
    prepare_cpu_environment(conv_backend, device_target, amp_level)
    import mindspore as ms
    from mindspore import Tensor

    from src.models.info import describe_model
    from src.runtime.device import setup_device

    setup_device(device_target, mode_name)
    if threads_num > 0:
        ms.device_context.cpu.op_tuning.threads_num(int(threads_num))
    options = {"num_classes": num_classes, "head": head, "layer4_stride": layer4_stride,
               "post_norm": post_norm, "adaptive_dropout": adaptive_dropout}
    net, train_step, used_backend = build_bench_train_step(
        net_name, head, conv_backend, device_target, amp_level, loss_scale, seed,
        **{key: value for key, value in options.items() if key != "head"})

    rng = np.random.default_rng(seed)
    images = Tensor(rng.standard_normal((batch_size, 3, image_size, image_size), dtype=np.float32))
    labels = Tensor(rng.integers(0, num_classes, size=(batch_size,), dtype=np.int32))
    losses: list[float] = []

    def one_step() -> None:
        losses.append(float(train_step(images, labels).asnumpy()))

    warm, timed = time_calls(one_step, warmup, steps)
    info = describe_model(net_name, image_size=image_size, **options)
    result: dict[str, Any] = {
        "net_name": net_name, "head": head, "layer4_stride": layer4_stride, "feature_size": info["feature_size"],
        "mode_name": mode_name, "batch_size": batch_size, "image_size": image_size,
        "device_target": device_target, "post_norm": post_norm, "adaptive_dropout": adaptive_dropout,
        "threads_num": threads_num, "amp_level": amp_level,
        "isa": os.environ.get(ISA_VARIABLE, "default"), **backend_record(conv_backend, used_backend),
        "forward_gmacs_per_image": info["gmacs"],
        "train_gflop_per_step": training_gflop_per_image(info["macs"]) * batch_size,
        "train": {**step_statistics(timed, batch_size), "warmup_s": [round(t, 3) for t in warm],
                  "losses_finite": bool(np.all(np.isfinite(losses)))},
    }
    if eval_steps > 0:
        train_step.set_train(False)
        net.set_train(False)
        warm, timed = time_calls(lambda: net(images).asnumpy(), 1, eval_steps)
        result["eval"] = {**step_statistics(timed, batch_size), "warmup_s": [round(t, 3) for t in warm],
                          "forward_gflop_per_step": 2.0 * info["macs"] * batch_size / 1e9}
    return result


if __name__ == "__main__":
    raise SystemExit(worker_main(measure_train_step))

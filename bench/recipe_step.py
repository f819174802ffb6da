"""Worker: what model EMA and gradient accumulation add to the CPU training step.

``python -m bench.recipe_step '{"net_name": "resnet18", "batch_size": 8, "image_size": 224, "rounds": 6}'``

Builds four training steps of the same network configuration, each on its own copy of the network, as
:func:`src.engine.train_step.create_train_step` builds them (label-smoothed CE, AdamW, fixed loss scale):

- ``plain``: today's step (``build_train_step``);
- ``ema``: the recipe step with a model EMA (weights and BN statistics) updated in the graph;
- ``accumulate``: the recipe step accumulating ``accumulation_steps`` micro-batches per update;
- ``ema_accumulate_clip``: accumulation, EMA and global-norm clipping together.

After the warm-up (which compiles every graph) the variants are timed in interleaved rounds -- one update
(``accumulation_steps`` micro-batches for the accumulating ones, one batch otherwise) of each variant per
round -- so that a change of machine load hits them alike. The figure per variant is the median time per
batch; the overhead is its ratio to ``plain``'s, minus one.
"""
from __future__ import annotations

import time
from typing import Any, Dict

import numpy as np

from bench.common import step_statistics, worker_main
from bench.train_step import backend_record, prepare_cpu_environment

VARIANTS = ("plain", "ema", "accumulate", "ema_accumulate_clip")


def measure_recipe_step(net_name: str = "resnet18", head: str = "dropcov", batch_size: int = 8,
                        image_size: int = 224, accumulation_steps: int = 2, warmup: int = 2, rounds: int = 6,
                        num_classes: int = 1000, mode_name: str = "GRAPH_MODE", conv_backend: str = "stock",
                        device_target: str = "CPU", seed: int = 0) -> dict[str, Any]:
    """Median seconds per batch of each variant (see the module doc) and their overhead over ``plain``."""
    used_backend = prepare_cpu_environment(conv_backend, device_target, "O0")
    import mindspore as ms
    from mindspore import Tensor

    from src.engine.ema import ModelEma
    from src.engine.loss import create_loss
    from src.engine.optimizer import create_loss_scale_manager, create_optimizer
    from src.engine.train_step import create_train_step, optimizer_loss_scale_for
    from src.kernels.swap import apply_conv_backend
    from src.models import create_model
    from src.runtime.device import setup_device

    setup_device(device_target, mode_name)
    rng = np.random.default_rng(seed)
    images = Tensor(rng.standard_normal((batch_size, 3, image_size, image_size), dtype=np.float32))
    labels = Tensor(rng.integers(0, num_classes, size=(batch_size,), dtype=np.int32))
    settings = {"plain": {}, "ema": {"ema": True}, "accumulate": {"accumulation_steps": accumulation_steps},
                "ema_accumulate_clip": {"ema": True, "accumulation_steps": accumulation_steps, "clip_grad_norm": 1.0}}
    steps: Dict[str, Any] = {}
    for name in VARIANTS:
        ms.set_seed(seed)
        net = create_model(net_name, num_classes=num_classes, head=head)
        used_backend = apply_conv_backend(net, conv_backend, device_target, "O0")
        options = dict(settings[name])
        recipe = bool(options)
        if options.pop("ema", False):
            options["ema"] = ModelEma(net, decay=0.9998, warmup=True)
        optimizer = create_optimizer(net, "AdamW", 1e-4, weight_decay=0.05,
                                     loss_scale=optimizer_loss_scale_for("fixed", 1024.0, recipe))
        steps[name] = create_train_step(net, create_loss(num_classes, 0.1), optimizer, "O0",
                                        create_loss_scale_manager("fixed", 1024.0), **options)
        steps[name].set_train(True)
    calls = {name: accumulation_steps if "accumulate" in name else 1 for name in VARIANTS}

    def one_update(name: str) -> float:
        start = time.perf_counter()
        for _ in range(calls[name]):
            loss = steps[name](images, labels)
        loss.asnumpy()
        return (time.perf_counter() - start) / calls[name]

    warm = {name: [one_update(name) for _ in range(warmup)] for name in VARIANTS}
    timed: Dict[str, list] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name in VARIANTS:
            timed[name].append(one_update(name))
    stats = {name: {**step_statistics(timed[name], batch_size), "warmup_s": [round(t, 3) for t in warm[name]],
                    "batches_per_update": calls[name]} for name in VARIANTS}
    plain = stats["plain"]["median_s"]
    return {"net_name": net_name, "head": head, "batch_size": batch_size, "image_size": image_size,
            "accumulation_steps": accumulation_steps, "mode_name": mode_name, "rounds": rounds,
            **backend_record(conv_backend, used_backend), "variants": stats,
            "overhead": {name: stats[name]["median_s"] / plain - 1.0 for name in VARIANTS if name != "plain"}}


if __name__ == "__main__":
    raise SystemExit(worker_main(measure_recipe_step))

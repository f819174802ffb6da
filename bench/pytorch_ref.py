"""Worker: the authors' PyTorch DropCov network (torch_reference/resnet.py) trained in eager mode.

``python -m bench.pytorch_ref '{"net_names": ["resnet18"], "batch_size": 8, ...}'``

Same network and head width as ours (128-d reduction, 8256-d representation, layer4 stride 1),
SGD momentum 0.9 with weight decay 1e-4, label-smoothed cross entropy (0.1), one fixed random batch,
``torch.set_num_threads(<cores>)``. The parent runs it once with oneDNN's default ISA and once with
``ONEDNN_MAX_CPU_ISA=AVX2``; each process also measures PyTorch's matmul/conv GFLOP/s at its ISA.
"""
from __future__ import annotations

import importlib.util
import os
from types import ModuleType
from typing import Any

from bench.common import step_statistics, time_calls, worker_main
from bench.machine import usable_cores
from bench.peak_flops import torch_kernels


def torch_available() -> bool:
    """True when PyTorch is installed (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None


def load_reference() -> ModuleType:
    """The authors' PyTorch ResNets (:mod:`torch_reference.resnet`; imports PyTorch)."""
    from torch_reference import resnet

    return resnet


def torch_train_timings(model: Any, inputs: Any, labels: Any, warmup: int, steps: int) -> dict[str, Any]:
    """Seconds per eager training step of ``model`` on one fixed batch: label-smoothed (0.1) cross entropy,
    SGD momentum 0.9, weight decay 1e-4 (the authors' recipe); median statistics plus the warm-up times."""
    import torch

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), labels)
        loss.backward()
        optimizer.step()
        loss.item()

    warm, timed = time_calls(step, warmup, steps)
    return {**step_statistics(timed, len(inputs)), "warmup_s": [round(t, 3) for t in warm]}


def torch_eval_timings(model: Any, inputs: Any, warmup: int, steps: int) -> dict[str, Any]:
    """Seconds per eager evaluation forward of ``model`` (``no_grad``) on one fixed batch."""
    import torch

    model.eval()
    with torch.no_grad():
        warm, timed = time_calls(lambda: model(inputs).sum().item(), warmup, steps)
    return {**step_statistics(timed, len(inputs)), "warmup_s": [round(t, 3) for t in warm]}


def measure_pytorch(net_names: tuple[str, ...] = ("resnet18",), batch_size: int = 8, image_size: int = 224,
                    warmup: int = 2, steps: int = 5, eval_steps: int = 0, num_classes: int = 1000,
                    cov_dim: int = 128, threads: int = 0, peak: bool = True, quick: bool = False,
                    min_seconds: float = 0.5, seed: int = 0) -> dict[str, Any]:
    """Training step (and optionally eval forward) timings per network, plus PyTorch kernel GFLOP/s."""
    import torch

    threads = threads or usable_cores()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    reference = load_reference()
    result: dict[str, Any] = {"isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"), "threads": threads,
                              "torch": torch.__version__, "nets": {}}
    if peak:
        result["kernels"] = torch_kernels(quick=quick, min_seconds=min_seconds)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, num_classes, (batch_size,), generator=generator)
    for net_name in net_names:
        model = reference.build_reference(net_name, num_classes=num_classes, cov_dim=cov_dim)
        entry = {"train": torch_train_timings(model, images, labels, warmup, steps)}
        if eval_steps > 0:
            entry["eval"] = torch_eval_timings(model, images, 1, eval_steps)
        result["nets"][net_name] = entry
    return result


if __name__ == "__main__":
    raise SystemExit(worker_main(measure_pytorch))

"""DeiT-S + DropCov on this CPU: MindSpore's training step and evaluation next to the authors' PyTorch network.

    python -m bench.vit                      # batch 8, 224x224: MindSpore GRAPH_MODE and PyTorch, one run
    python -m bench.vit --quick              # depth 2, 112x112: checks the code runs (nothing published)
    python -m bench.vit --net_name t2t_vit_14_dropcov --batch_size 16

Each side runs in its own worker process (``python -m bench.vit '{"side": ...}'``, see bench/common.py),
one after the other, with the machine's share of CPU time used by other jobs read before and after.
Per side: the whole network's training step (label-smoothed CE, SGD momentum 0.9, one fixed random
batch), its evaluation forward, and the head alone as a training step on the final tokens
``(B, 197, 384)`` (forward, backward, update of the head's parameters) -- the DropCov head and the
plain class-token head, so the DropCov head's share of the step can be read. MindSpore's step is the
engine's (:func:`src.engine.train_step.build_train_step`, Momentum, fixed loss scale 1); PyTorch's network is
torch_reference/vit.py. Results go to ``bench/results/vit_<time>.json`` and a table on stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script: make `bench` and `src` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO_ROOT, run_worker, step_statistics, time_calls, worker_main  # noqa: E402
from bench.machine import cpu_busy_fraction, describe_machine, summary_line, usable_cores  # noqa: E402

HEADS = ("dropcov", "class_token")


def _options(quick: bool) -> dict[str, Any]:
    """Architecture overrides: two blocks for ``--quick``."""
    return {"depth": 2} if quick else {}


def measure_mindspore(net_name: str, batch_size: int, image_size: int, warmup: int, steps: int,
                      quick: bool = False, num_classes: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Training step, evaluation forward and heads alone of ``net_name`` in GRAPH_MODE on the CPU."""
    from bench.train_step import prepare_cpu_environment

    prepare_cpu_environment("stock", "CPU", "O0")
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn

    from src.engine.loss import create_loss
    from src.engine.optimizer import create_loss_scale_manager, create_optimizer, optimizer_loss_scale
    from src.engine.train_step import build_train_step
    from src.models import create_model
    from src.models.mgcrp_head import ClassTokenHead, MGCrPHead
    from src.runtime.device import setup_device

    setup_device("CPU", "GRAPH_MODE")
    ms.set_seed(seed)
    rng = np.random.default_rng(seed)
    images = Tensor(rng.standard_normal((batch_size, 3, image_size, image_size), dtype=np.float32))
    labels = Tensor(rng.integers(0, num_classes, size=(batch_size,), dtype=np.int32))

    def train_timings(network: nn.Cell, inputs: Tensor) -> dict[str, Any]:
        optimizer = create_optimizer(network, "Momentum", 0.01, 0.9, 1e-4, optimizer_loss_scale("fixed", 1.0))
        step = build_train_step(network, create_loss(num_classes, 0.1), optimizer, "O0",
                                create_loss_scale_manager("fixed", 1.0))
        step.set_train(True)
        warm, timed = time_calls(lambda: step(inputs, labels).asnumpy(), warmup, steps)
        return {**step_statistics(timed, batch_size), "warmup_s": [round(t, 3) for t in warm]}

    network = create_model(net_name, num_classes=num_classes, image_size=image_size, **_options(quick))
    result: dict[str, Any] = {"side": "mindspore", "mindspore": ms.__version__, "train": train_timings(network, images)}
    network.set_train(False)
    warm, timed = time_calls(lambda: network(images).asnumpy(), 1, steps)
    result["eval"] = {**step_statistics(timed, batch_size), "warmup_s": [round(t, 3) for t in warm]}
    tokens = Tensor(rng.standard_normal((batch_size, network.pos_embed.shape[1], network.num_features),
                                        dtype=np.float32))
    heads = {"dropcov": MGCrPHead(network.num_features, num_classes), "class_token":
             ClassTokenHead(network.num_features, num_classes)}
    result["heads"] = {name: train_timings(head, tokens) for name, head in heads.items()}
    return result


def measure_pytorch(net_name: str, batch_size: int, image_size: int, warmup: int, steps: int,
                    quick: bool = False, num_classes: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The same measurements on the authors' network rebuilt in PyTorch (eager, ``<cores>`` threads)."""
    import torch

    from bench.pytorch_ref import torch_eval_timings, torch_train_timings
    from torch_reference import vit as reference

    torch.set_num_threads(usable_cores())
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, num_classes, (batch_size,), generator=generator)

    def train_timings(module: torch.nn.Module, inputs: torch.Tensor) -> dict[str, Any]:
        return torch_train_timings(module, inputs, labels, warmup, steps)

    backbone = net_name.removesuffix("_dropcov")
    model = reference.build_reference(backbone, num_classes=num_classes, img_size=image_size,
                                      representation=net_name.endswith("_dropcov"), **_options(quick))
    result: dict[str, Any] = {"side": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
                              "train": train_timings(model, images)}
    result["eval"] = torch_eval_timings(model, images, 1, steps)
    tokens = torch.randn(batch_size, model.pos_embed.shape[1], model.pos_embed.shape[2], generator=generator)
    dim, wr_dim = model.pos_embed.shape[2], reference.ARCHITECTURES[backbone]["wr_dim"]
    heads = {name: reference.Classifier(num_classes, dim, 6, wr_dim, name == "dropcov") for name in HEADS}
    result["heads"] = {name: train_timings(head, tokens) for name, head in heads.items()}
    return result


def measure(side: str, **params: Any) -> dict[str, Any]:
    """Worker entry: ``side`` is ``mindspore`` or ``pytorch``."""
    return {"mindspore": measure_mindspore, "pytorch": measure_pytorch}[side](**params)


def head_share(result: dict[str, Any]) -> dict[str, float] | None:
    """Seconds of the DropCov head's training step and its share of the whole step; the same for the
    DropCov head's extra time over the class-token head."""
    if not result.get("ok"):
        return None
    step = result["train"]["median_s"]
    dropcov, plain = result["heads"]["dropcov"]["median_s"], result["heads"]["class_token"]["median_s"]
    return {"head_s": dropcov, "head_share": dropcov / step, "extra_over_class_token_s": dropcov - plain,
            "extra_share": (dropcov - plain) / step}


def format_table(record: dict[str, Any]) -> list[str]:
    """Lines of the printed summary."""
    settings = record["settings"]
    machine = record["machine"]
    lines = [f"{settings['net_name']}: batch {settings['batch_size']}, {settings['image_size']}x{settings['image_size']}"
             f"{' (quick: depth 2)' if settings['quick'] else ''}",
             f"machine: {summary_line(machine)}",
             f"other jobs' CPU share: {record['busy_before']} before, {record['busy_after']} after; "
             f"load average {machine.get('load_average')}",
             f"{'side':<10} {'train s/step':>12} {'train img/s':>11} {'eval img/s':>10} {'head s':>8} "
             f"{'head share':>10} {'vs cls head':>11}"]
    for side in ("mindspore", "pytorch"):
        result = record["results"][side]
        if not result.get("ok"):
            lines.append(f"{side:<10} failed: {result.get('error')}")
            continue
        share = head_share(result)
        lines.append(f"{side:<10} {result['train']['median_s']:>12.3f} {result['train']['images_per_s']:>11.2f} "
                     f"{result['eval']['images_per_s']:>10.2f} {share['head_s']:>8.4f} {share['head_share']:>10.1%} "
                     f"{share['extra_share']:>+11.1%}")
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net_name", default="deit_small_dropcov", choices=("deit_small_dropcov", "t2t_vit_14_dropcov"))
    parser.add_argument("--batch_size", type=int, default=None, help="images per step (8; quick: 2)")
    parser.add_argument("--image_size", type=int, default=None, help="input side (224; quick: 112)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (2; quick: 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (5; quick: 2)")
    parser.add_argument("--quick", action="store_true", help="depth 2 and small sizes: checks the code runs")
    parser.add_argument("--output_dir", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if quick else full)

    settings = {"net_name": args.net_name, "batch_size": pick(args.batch_size, 8, 2),
                "image_size": pick(args.image_size, 224, 112), "warmup": pick(args.warmup, 2, 1),
                "steps": pick(args.steps, 5, 2), "quick": quick}
    record: dict[str, Any] = {"kind": "vit", "settings": settings, "machine": describe_machine(),
                              "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    record["busy_before"] = record["machine"]["cpu_busy"]
    record["results"] = {}
    for side in ("mindspore", "pytorch"):
        print(f"[bench.vit {time.strftime('%H:%M:%S')}] {side} ...", flush=True)
        record["results"][side] = run_worker("vit", {"side": side, **settings}, timeout=args.timeout)
    record["busy_after"] = cpu_busy_fraction()
    lines = format_table(record)
    print("\n".join(lines))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / f"vit_{'quick_' if quick else ''}{time.strftime('%Y%m%d_%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")
    return 0 if all(result.get("ok") for result in record["results"].values()) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].lstrip().startswith("{"):
        raise SystemExit(worker_main(measure))
    raise SystemExit(main())

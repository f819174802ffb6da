"""Evaluation forward of a ResNet + DropCov: ours (GRAPH_MODE, ``conv_backend``) against the authors' PyTorch
network, each side in fresh processes that time only the forward, alternated over several rounds.

    python bench/eval_forward.py                       # ResNet-18 + DropCov, batch 8, 224, 3 rounds
    python bench/eval_forward.py --net_name resnet50 --isa AVX2 --rounds 5

``bench/run_all.py`` times PyTorch's evaluation in the process that has just timed its training steps;
this benchmark times nothing else in the process, and alternates the two sides (ours, PyTorch, ours, ...)
so that both see the same machine. Each process builds the network with seeded random weights, runs
``warmup`` forwards, then ``steps`` timed ones (median). Results: ``bench/results/eval_forward_<net>_<isa>.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script: make `bench` and `src` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO_ROOT, run_worker, step_statistics, time_calls, worker_main  # noqa: E402
from bench.isa import ISA_SETTINGS, cpu_kind, isa_environment  # noqa: E402
from bench.machine import cpu_busy_fraction, describe_machine, summary_line, usable_cores  # noqa: E402

SIDES = ("mindspore", "pytorch")


def measure(side: str, net_name: str = "resnet18", batch_size: int = 8, image_size: int = 224, warmup: int = 3,
            steps: int = 20, conv_backend: str = "auto", cov_dim: int = 128, threads: int = 2) -> dict[str, Any]:
    """One side's evaluation forward: seconds per batch of the timed forwards."""
    import numpy as np

    images = np.random.default_rng(0).standard_normal((batch_size, 3, image_size, image_size), dtype=np.float32)
    if side == "pytorch":
        import torch

        from bench.pytorch_ref import torch_eval_timings
        from torch_reference.resnet import build_reference

        torch.set_num_threads(threads)
        model = build_reference(net_name, cov_dim=cov_dim)
        return {"side": side, "torch": torch.__version__,
                **torch_eval_timings(model, torch.from_numpy(images), warmup, steps)}

    from bench.train_step import backend_record, prepare_cpu_environment

    backend = prepare_cpu_environment(conv_backend, "CPU", "O0")
    import mindspore as ms

    from src.models import create_model
    from src.models.cell_surgery import apply_conv_backend
    from src.runtime.device import setup_device

    setup_device("CPU", "GRAPH_MODE")
    net = create_model(net_name, num_classes=1000, head="dropcov", cov_dim=cov_dim)
    used = apply_conv_backend(net, backend, "CPU", "O0")
    net.set_train(False)
    batch = ms.Tensor(images)
    warm, timed = time_calls(lambda: net(batch).asnumpy(), warmup, steps)
    return {"side": side, "mindspore": ms.__version__, **backend_record(conv_backend, used),
            **step_statistics(timed, batch_size)}


def summarise(rounds: list[dict[str, dict]]) -> dict[str, Any]:
    """Per side: the median over rounds of each process's median seconds per batch; ours / PyTorch speed."""
    medians = {side: statistics.median(r[side]["median_s"] for r in rounds) for side in SIDES}
    return {"median_s": medians, "ours_over_pytorch": medians["pytorch"] / medians["mindspore"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net_name", default="resnet18", choices=("resnet18", "resnet34", "resnet50", "resnet101"))
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two sides")
    parser.add_argument("--steps", type=int, default=20, help="timed forwards per process")
    parser.add_argument("--conv_backend", default="auto", help="our convolutions: auto, onednn or stock")
    parser.add_argument("--isa", default="native", choices=ISA_SETTINGS, help="AVX2: cap both sides at AVX2")
    parser.add_argument("--quick", action="store_true", help="64 px, 2 steps, 1 round: checks the code runs")
    parser.add_argument("--output", type=Path, default=None,
                        help="results JSON (bench/results/eval_forward_<net>_<isa>.json)")
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = REPO_ROOT / "bench" / "results" / f"eval_forward_{args.net_name}_{args.isa}.json"
    if args.quick:
        args.image_size, args.steps, args.rounds = 64, 2, 1
    machine = describe_machine()
    settings = {"net_name": args.net_name, "batch_size": args.batch_size, "image_size": args.image_size,
                "steps": args.steps, "threads": usable_cores()}
    record: dict[str, Any] = {"kind": "eval_forward", "settings": {**vars(args), "output": str(args.output)},
                              "machine": machine, "cpu_kind": cpu_kind(machine["isa_flags"], args.isa),
                              "busy_before": cpu_busy_fraction(), "rounds": []}
    print(f"{args.net_name} + DropCov evaluation forward, batch {args.batch_size}, {args.image_size} px; "
          f"{summary_line(machine)}; CPU kind {record['cpu_kind']['label']}", flush=True)
    for number in range(1, args.rounds + 1):
        results = {}
        for side in SIDES:
            params = {"side": side, **settings, **({"conv_backend": args.conv_backend} if side == "mindspore" else {})}
            results[side] = run_worker("eval_forward", params, env=isa_environment(args.isa, side))
            if not results[side]["ok"]:
                print(f"{side} failed: {results[side]['error']}", file=sys.stderr)
                return 1
            print(f"round {number}: {side:9s} {results[side]['median_s']:.4f} s per batch", flush=True)
        record["rounds"].append(results)
    record["busy_after"] = cpu_busy_fraction()
    record["summary"] = summarise(record["rounds"])
    medians = record["summary"]["median_s"]
    print(f"median over rounds: ours {medians['mindspore']:.4f} s, PyTorch {medians['pytorch']:.4f} s per batch: "
          f"ours / PyTorch speed {record['summary']['ours_over_pytorch']:.3f}x; other jobs' CPU share "
          f"{record['busy_before']} before, {record['busy_after']} after")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.output} at {time.strftime('%Y-%m-%dT%H:%M:%S')}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        raise SystemExit(worker_main(measure))
    raise SystemExit(main())

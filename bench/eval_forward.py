"""Evaluation forward of a ResNet + DropCov: ours (GRAPH_MODE, ``conv_backend``) against the authors' PyTorch
network and, if asked, MindSpore's stock kernels, each side in fresh processes that time only the forward,
alternated over several rounds.

    python bench/eval_forward.py                       # ResNet-18 + DropCov, batch 8, 224, 3 rounds
    python bench/eval_forward.py --net_name resnet50 --isa AVX2 --rounds 5
    python bench/eval_forward.py --sides ours,stock --contention 2 --rounds 4   # under 2 busy processes

Sides: ``ours`` (``--conv_backend``, default auto), ``stock`` (MindSpore's kernels), ``pytorch``, and
``pytorch_kept_memory``: PyTorch with glibc told to keep freed memory (``MALLOC_MMAP_THRESHOLD_`` at its 32 MiB
maximum, ``MALLOC_TRIM_THRESHOLD_`` 1 GiB). A fresh PyTorch process hands each forward's large activations
back to the kernel and faults them in again on the next one; a process that has trained first (as in
``bench/run_all.py``'s PyTorch worker) has raised glibc's thresholds and does not, and evaluates ~10% faster.
MindSpore keeps its own memory pool either way. ``bench/run_all.py`` times PyTorch's evaluation in the process
that has just timed its training steps; this benchmark times nothing else in the process, and alternates the
sides (ours, PyTorch, ..., then the reverse order) so that they see the same machine. Each process builds the
network with seeded random weights, runs ``warmup`` forwards, then ``steps`` timed ones (median).
``--contention N`` runs N busy processes throughout (:mod:`bench.contention`). Results:
``bench/results/eval_forward_<net>_<isa>[_contention<N>].json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script: make `bench` and `src` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.alternation import (  # noqa: E402
    Runner,
    add_alternation_arguments,
    add_network_arguments,
    count_argument,
    default_output,
    measure_alternated,
)
from bench.common import REPO_ROOT, run_worker, step_statistics, time_calls, worker_main  # noqa: E402
from bench.isa import isa_environment  # noqa: E402
from bench.machine import usable_cores  # noqa: E402

#: What each side runs: the framework (its worker's ``framework``) and, for MindSpore, the convolution backend
#: (None: ``--conv_backend``), for PyTorch extra environment variables.
SIDES = {
    "ours": {"framework": "mindspore", "conv_backend": None},
    "stock": {"framework": "mindspore", "conv_backend": "stock"},
    "pytorch": {"framework": "pytorch", "env": {}},
    "pytorch_kept_memory": {"framework": "pytorch",
                            "env": {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}},
}
DEFAULT_SIDES = ("ours", "pytorch", "pytorch_kept_memory")


def measure(framework: str, net_name: str = "resnet18", batch_size: int = 8, image_size: int = 224, warmup: int = 3,
            steps: int = 20, conv_backend: str = "auto", cov_dim: int = 128, threads: int = 2) -> dict[str, Any]:
    """Evaluation forward on ``framework`` (``mindspore`` or ``pytorch``): seconds per batch of the timed forwards."""
    import numpy as np

    images = np.random.default_rng(0).standard_normal((batch_size, 3, image_size, image_size), dtype=np.float32)
    if framework == "pytorch":
        import torch

        from bench.pytorch_ref import torch_eval_timings
        from torch_reference.resnet import build_reference

        torch.set_num_threads(threads)
        model = build_reference(net_name, cov_dim=cov_dim)
        return {"framework": framework, "torch": torch.__version__,
                **torch_eval_timings(model, torch.from_numpy(images), warmup, steps)}

    from bench.train_step import backend_record, prepare_cpu_environment

    backend = prepare_cpu_environment(conv_backend, "CPU", "O0")
    import mindspore as ms

    from src.kernels.swap import apply_conv_backend
    from src.models import create_model
    from src.runtime.device import setup_device

    setup_device("CPU", "GRAPH_MODE")
    net = create_model(net_name, num_classes=1000, head="dropcov", cov_dim=cov_dim)
    used = apply_conv_backend(net, backend, "CPU", "O0")
    net.set_train(False)
    batch = ms.Tensor(images)
    warm, timed = time_calls(lambda: net(batch).asnumpy(), warmup, steps)
    return {"framework": framework, "mindspore": ms.__version__, **backend_record(conv_backend, used),
            **step_statistics(timed, batch_size)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_network_arguments(parser, None)
    parser.add_argument("--rounds", type=count_argument(1), default=3, help="alternations of the sides")
    parser.add_argument("--steps", type=count_argument(1), default=20, help="timed forwards per process")
    parser.add_argument("--conv_backend", default="auto", help="the ours side's convolutions: auto, onednn or stock")
    parser.add_argument("--quick", action="store_true", help="64 px, 2 steps, 1 round: checks the code runs")
    add_alternation_arguments(parser, tuple(SIDES), DEFAULT_SIDES, "eval_forward_<net>_<isa>")
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = default_output(REPO_ROOT / "bench" / "results", f"eval_forward_{args.net_name}_{args.isa}",
                                     args.contention)
    if args.quick:
        args.image_size, args.steps, args.rounds = 64, 2, 1
    settings = {"net_name": args.net_name, "batch_size": args.batch_size, "image_size": args.image_size,
                "steps": args.steps, "threads": usable_cores()}

    def runner(side: str) -> Runner:
        spec = SIDES[side]
        params = {"framework": spec["framework"], **settings}
        if spec["framework"] == "mindspore":
            params["conv_backend"] = spec["conv_backend"] or args.conv_backend
        env = {**isa_environment(args.isa, spec["framework"]), **spec.get("env", {})}
        return lambda: run_worker("eval_forward", params, env=env)

    title = f"{args.net_name} + DropCov evaluation forward, batch {args.batch_size}, {args.image_size} px"
    return measure_alternated("eval_forward", title, {side: runner(side) for side in args.sides}, args.rounds,
                              args.contention, args.isa, {**vars(args), "output": str(args.output)}, args.output,
                              "s per batch")


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        raise SystemExit(worker_main(measure))
    raise SystemExit(main())

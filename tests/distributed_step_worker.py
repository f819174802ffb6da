"""A few deterministic training steps, for the data-parallel tests (tests/test_distributed.py).

  python tests/distributed_step_worker.py OUT_DIR                 # one process, the whole batch
  msrun --worker_num=2 ... tests/distributed_step_worker.py OUT_DIR   # 2 ranks, half the batch each

Builds the network, loss, optimizer and train step exactly as train.py does
(:func:`src.engine.train_step.build_train_step`), with two changes that make one process on the concatenated
batch mathematically equal to the ranks on their halves: the DropCov head's adaptive dropout is off (no
randomness) and every BatchNorm normalises with its moving statistics (batch statistics would be computed
over 2 images per rank but over 4 in the single process; BN statistics are not synchronised across ranks).
Every process writes its trainable weights after the steps to ``OUT_DIR/weights_<rank0|rank1|single>.npz``.

``--accumulation_steps K``: the ranks train with the recipe step (:func:`src.engine.train_step.create_train_step`),
splitting their half into K micro-batches and updating once per K (gradients all-reduced once per update),
with a model EMA; the single process keeps today's step on the whole batch, so the weights must agree.

``--kill_rank R --kill_after N``: rank R kills itself with SIGKILL after N steps while the others keep
training, to show how the job ends when a rank dies.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

IMAGE_SIZE = 32
PER_RANK_BATCH = 2
RANKS = 2
NUM_CLASSES = 4


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--accumulation_steps", type=int, default=1)
    parser.add_argument("--kill_rank", type=int, default=-1)
    parser.add_argument("--kill_after", type=int, default=2)
    args = parser.parse_args()

    from src.runtime.environment import configure_cpu_environment

    configure_cpu_environment("CPU")
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn

    from src.engine.ema import ModelEma
    from src.engine.loss import create_loss
    from src.engine.optimizer import create_loss_scale_manager, create_optimizer, optimizer_loss_scale
    from src.engine.train_step import build_train_step, create_train_step
    from src.models import create_model
    from src.runtime.device import setup_device
    from src.runtime.distributed import init_data_parallel
    from src.runtime.launchers import detect_launcher

    launched = detect_launcher() is not None
    setup_device("CPU", "GRAPH_MODE", None if launched else 0)
    parallel = init_data_parallel(launched, "CPU", RANKS)
    ms.set_seed(1)
    net = create_model("resnet18", num_classes=NUM_CLASSES, head="dropcov", adaptive_dropout=False)
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            cell.use_batch_statistics = False
    schedule = np.full(args.steps + 1000, 0.05, dtype=np.float32)
    optimizer = create_optimizer(net, "Momentum", schedule, 0.9, 1e-4, optimizer_loss_scale("fixed", 1.0))
    micro_batches = args.accumulation_steps if parallel.group_size > 1 else 1
    if micro_batches > 1:
        train_step = create_train_step(net, create_loss(NUM_CLASSES, 0.1), optimizer, "O0",
                                       create_loss_scale_manager("fixed", 1.0), accumulation_steps=micro_batches,
                                       ema=ModelEma(net, decay=0.9))
    else:
        train_step = build_train_step(net, create_loss(NUM_CLASSES, 0.1), optimizer, "O0",
                                      create_loss_scale_manager("fixed", 1.0))

    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.steps, RANKS * PER_RANK_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, (args.steps, RANKS * PER_RANK_BATCH)).astype(np.int32)
    rows = (slice(parallel.rank * PER_RANK_BATCH, (parallel.rank + 1) * PER_RANK_BATCH) if parallel.group_size > 1
            else slice(None))
    for step in range(args.steps):
        for micro in range(micro_batches):
            part = slice(micro, None, micro_batches)
            loss = train_step(Tensor(images[step, rows][part]), Tensor(labels[step, rows][part]))
        print(f"rank {parallel.rank} step {step + 1} loss {float(loss.asnumpy()):.6f}", flush=True)
    tag = f"rank{parallel.rank}" if parallel.group_size > 1 else "single"
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = {param.name: param.asnumpy() for param in net.trainable_params()}
    np.savez(out / f".weights_{tag}.partial.npz", **weights)
    os.replace(out / f".weights_{tag}.partial.npz", out / f"weights_{tag}.npz")

    if args.kill_rank >= 0:
        started = time.time()
        for step in range(10_000):
            if parallel.rank == args.kill_rank and step == args.kill_after:
                print(f"rank {parallel.rank} kills itself", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            train_step(Tensor(images[0, rows]), Tensor(labels[0, rows])).asnumpy()
        print(f"rank {parallel.rank} was not stopped after {time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

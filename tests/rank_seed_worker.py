"""Each rank builds the network and train step with train.py's own ``build_training`` and takes one step on
the same images, for tests/test_distributed.py (masks differ across ranks, initial weights do not).

  msrun --worker_num=2 ... tests/rank_seed_worker.py OUT_DIR

Writes ``OUT_DIR/rank<r>.npz``: the trainable weights before the step, the eval-mode logits of the images
(no dropout: equal on equal weights) and the training loss of the step (DropCov's masks drawn inside it; the
gradients are all-reduced, but each rank's loss is its own).
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

CLASSES = 4


def main() -> int:
    out = Path(sys.argv[1])
    from src.runtime.environment import configure_cpu_environment

    configure_cpu_environment("CPU")
    import numpy as np
    from mindspore import Tensor

    import train
    from src.config import load_config
    from src.runtime.device import setup_device
    from src.runtime.distributed import init_data_parallel

    config, _ = load_config(["--config_path", str(REPO_ROOT / "config" / "digits_demo_cpu.yaml"), "--class_num",
                             str(CLASSES), "--train_image_size", "32", "--batch_size", "4"])
    setup_device("CPU", "GRAPH_MODE", None)
    parallel = init_data_parallel(True, "CPU", 2)
    net, _, _, train_step = train.build_training(config, steps_per_epoch=4, conv_backend="stock", rank=parallel.rank)
    weights = {f"weight/{p.name}": p.asnumpy() for p in net.trainable_params()}
    rng = np.random.default_rng(0)
    images = Tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    labels = Tensor(rng.integers(0, CLASSES, 4).astype(np.int32))
    net.set_train(False)
    logits = net(images).asnumpy()
    train_step.set_train(True)  # as the training loop does
    loss = train_step(images, labels).asnumpy()
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / f"rank{parallel.rank}.npz", logits=logits, loss=loss, **weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the training loop runs: its length and schedule (:class:`TrainSettings`), what an epoch and a whole
fit return, and the stream of batches that feeds it across the dataset's epochs."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator

from src.engine.resume import TrainState
from src.errors import DropCovError


@dataclass
class TrainSettings:
    """What the loop does and when: the run's length, and config keys of the same names."""

    epochs: int
    steps_per_epoch: int
    batch_size: int
    log_interval: int = 50
    save_checkpoint: bool = True
    save_checkpoint_epochs: int = 1
    run_eval: bool = False
    eval_start_epoch: int = 1
    eval_interval: int = 1
    save_best_ckpt: bool = True
    accumulation_steps: int = 1

    @classmethod
    def from_config(cls, config: Any, steps_per_epoch: int) -> TrainSettings:
        """``epochs`` from ``epoch_size``, the other fields from the config keys of the same names."""
        same_names = {item.name: getattr(config, item.name) for item in fields(cls)
                      if item.name not in ("epochs", "steps_per_epoch")}
        return cls(epochs=config.epoch_size, steps_per_epoch=steps_per_epoch, **same_names)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def saves_at(self, epoch: int) -> bool:
        """Periodic checkpoint after ``epoch`` (1-based): every ``save_checkpoint_epochs``, and the last."""
        return self.save_checkpoint and (epoch % self.save_checkpoint_epochs == 0 or epoch == self.epochs)

    def evaluates_at(self, epoch: int) -> bool:
        """Validation after ``epoch``: at ``eval_start_epoch``, every ``eval_interval`` after it, and the last."""
        if not self.run_eval or epoch < self.eval_start_epoch:
            return False
        return (epoch - self.eval_start_epoch) % self.eval_interval == 0 or epoch == self.epochs


@dataclass
class EpochResult:
    """What one epoch did: steps run, summed loss over its steps (a resumed epoch's earlier steps included),
    time, throughput, whether it stopped early."""

    steps: int
    loss_sum: float
    loss_steps: int
    seconds: float
    images_per_sec: float
    stopped: bool = False

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.loss_steps if self.loss_steps else float("nan")


@dataclass
class FitResult:
    """How :meth:`Trainer.fit` ended: the final state, the signal that stopped it (if any), the last checkpoint."""

    state: TrainState
    stopped_by: str | None = None
    last_checkpoint: Path | None = None


def batch_stream(dataset: Any, steps_needed: int, steps_per_dataset_epoch: int) -> Iterator[tuple]:
    """Yield ``steps_needed`` batches from ``dataset``, passing through as many of its epochs as needed.

    One MindSpore iterator serves the whole run, so a training epoch shorter than the dataset's
    (``train_steps_per_epoch``, or the remainder of an epoch after a mid-epoch resume) simply continues
    where the previous one stopped, and the pipeline reshuffles at each of its own epoch boundaries.
    """
    if steps_needed <= 0:
        return
    if steps_per_dataset_epoch <= 0:
        raise DropCovError("the training split yields no full batch: lower batch_size or add images")
    num_epochs = -(-steps_needed // steps_per_dataset_epoch)
    iterator = dataset.create_tuple_iterator(num_epochs=num_epochs, output_numpy=False)
    yielded = 0
    for _ in range(num_epochs):
        for batch in iterator:
            yield batch
            yielded += 1
            if yielded == steps_needed:
                return

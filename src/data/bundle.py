"""What every dataset factory returns, and the sharding arithmetic the factories share."""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

from src.errors import DropCovError

logger = logging.getLogger(__name__)

TRAIN_SPLIT = "train"
EVAL_SPLITS = ("val", "eval")


@dataclass
class DatasetBundle:
    """A batched MindSpore dataset with the counts a training or evaluation loop needs.

    Attributes:
        dataset: batched ``mindspore.dataset`` yielding ``(image float32 (B, 3, S, S), label int32 (B,))``.
        num_images: images this shard yields per epoch (training: ``ceil(total / num_shards)``,
            MindSpore pads the shards with repeats; evaluation: this rank's disjoint share).
        total_images: images in the whole split.
        class_names: class names, index = label.
        steps_per_epoch: batches per epoch on this shard (training drops the last partial batch,
            evaluation keeps it).
        split: "train" or "val".
        source: the folder (or CIFAR-10 folder) read.
        files: for image-folder evaluation, the files this shard scores, in output order; else ().
    """

    dataset: Any
    num_images: int
    total_images: int
    class_names: tuple[str, ...]
    steps_per_epoch: int
    split: str
    source: str
    files: tuple[str, ...] = field(default=(), repr=False)


def check_split(split: str) -> bool:
    """True for the training split, False for evaluation; raises for anything else."""
    if split == TRAIN_SPLIT:
        return True
    if split in EVAL_SPLITS:
        return False
    raise DropCovError(f"unknown dataset split {split!r}: use 'train' or 'val'")


def check_batch_and_shards(batch_size: int, image_size: int, num_shards: int, shard_id: int) -> None:
    """Raise :class:`DropCovError` naming the bad value when a size or the shard layout is invalid."""
    if int(batch_size) < 1:
        raise DropCovError(f"batch_size must be at least 1, got {batch_size}")
    if int(image_size) < 1:
        raise DropCovError(f"image size must be at least 1, got {image_size}")
    if int(num_shards) < 1 or not 0 <= int(shard_id) < int(num_shards):
        raise DropCovError(f"shard_id {shard_id} is outside 0..num_shards-1 for num_shards {num_shards}")


def capped_workers(requested: int) -> int:
    """``requested`` data-loading workers, capped at ``os.cpu_count()`` (logged when capped)."""
    if int(requested) < 1:
        raise DropCovError(f"num_parallel_workers must be at least 1, got {requested}")
    cores = os.cpu_count() or 1
    if requested > cores:
        logger.info("num_parallel_workers %d capped at this machine's %d CPU cores", requested, cores)
        return cores
    return int(requested)


def train_shard_size(total: int, num_shards: int) -> int:
    """Samples per training shard: ``ceil(total / num_shards)``; MindSpore repeats samples to pad shards."""
    return math.ceil(total / num_shards)


def train_steps(num_images: int, batch_size: int, source: str) -> int:
    """Full batches per epoch (the last partial batch is dropped); raises when there is none."""
    steps = num_images // batch_size
    if steps == 0:
        raise DropCovError(f"batch_size {batch_size} exceeds the {num_images} training images per shard of "
                           f"{source}: lower --batch_size or use fewer devices")
    return steps


def eval_shard_bounds(total: int, num_shards: int, shard_id: int) -> tuple[int, int]:
    """This rank's half-open range ``[start, stop)`` of the sorted evaluation images.

    Contiguous, disjoint, covering ``range(total)``; shard sizes differ by at most one and may be 0
    when ``total < num_shards``. Unlike MindSpore's ``DistributedSampler`` nothing is repeated.
    """
    return total * shard_id // num_shards, total * (shard_id + 1) // num_shards


def eval_sampler(start: int, stop: int) -> Any:
    """A sampler reading indices ``start .. stop-1`` in order (an empty one when ``stop == start``)."""
    import mindspore.dataset as ds

    if stop <= start:
        return ds.SubsetSampler([])
    return ds.SequentialSampler(start_index=start, num_samples=stop - start)

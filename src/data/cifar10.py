"""CIFAR-10 (binary version) as MindSpore pipelines, with the usual augmentation.

Training shuffles and shards with ``Cifar10Dataset(num_shards, shard_id)`` (same ``seed`` on every
rank); evaluation reads each rank's contiguous share of the test set in order, nothing dropped or
repeated.
"""
from __future__ import annotations

import logging

from src.data.bundle import (
    DatasetBundle,
    capped_workers,
    check_batch_and_shards,
    check_split,
    eval_sampler,
    eval_shard_bounds,
    train_shard_size,
    train_steps,
)
from src.data.checks import (
    CIFAR10_RECORDS_PER_FILE,
    cifar10_class_names,
    cifar10_files,
    resolve_cifar10_folder,
)
from src.data.transforms import cifar10_eval_operations, cifar10_train_operations, label_operations

logger = logging.getLogger(__name__)


def create_cifar10_dataset(data_path: str, split: str, batch_size: int, image_size: int = 32,
                           num_parallel_workers: int = 8, num_shards: int = 1, shard_id: int = 0,
                           seed: int = 1, eval_dataset_path: str = "", hflip: bool = True) -> DatasetBundle:
    """Build the train or test pipeline of binary CIFAR-10; see :func:`src.data.create_dataset`."""
    import mindspore.dataset as ds

    training = check_split(split)
    check_batch_and_shards(batch_size, image_size, num_shards, shard_id)
    split = "train" if training else "val"
    folder = resolve_cifar10_folder(data_path, split, eval_dataset_path)
    files = cifar10_files(folder, split)
    if training and len(files) < 5:
        logger.warning("%s holds %d of the 5 CIFAR-10 training files", folder, len(files))
    total = len(files) * CIFAR10_RECORDS_PER_FILE
    workers = capped_workers(num_parallel_workers)
    usage = "train" if training else "test"
    ds.config.set_seed(int(seed))
    if training:
        dataset = ds.Cifar10Dataset(folder, usage=usage, shuffle=True, num_shards=num_shards, shard_id=shard_id,
                                    num_parallel_workers=workers)
        operations = cifar10_train_operations(image_size, hflip)
        num_images = train_shard_size(total, num_shards)
        steps = train_steps(num_images, batch_size, folder)
    else:
        start, stop = eval_shard_bounds(total, num_shards, shard_id)
        dataset = ds.Cifar10Dataset(folder, usage=usage, sampler=eval_sampler(start, stop),
                                    num_parallel_workers=workers)
        operations = cifar10_eval_operations(image_size)
        num_images = stop - start
        steps = -(-num_images // batch_size)
    dataset = dataset.map(operations=operations, input_columns="image", num_parallel_workers=workers)
    dataset = dataset.map(operations=label_operations(), input_columns="label", num_parallel_workers=workers)
    dataset = dataset.batch(batch_size, drop_remainder=training, num_parallel_workers=workers)
    logger.info("CIFAR-10 %s split of %s: %d images, %d on shard %d/%d, %d batches of %d", split, folder, total,
                num_images, shard_id, num_shards, steps, batch_size)
    return DatasetBundle(dataset=dataset, num_images=num_images, total_images=total,
                         class_names=cifar10_class_names(folder), steps_per_epoch=steps, split=split,
                         source=folder)

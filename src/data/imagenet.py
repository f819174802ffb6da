"""ImageNet-style image folders (one sub-folder per class) as MindSpore pipelines.

Training shuffles and shards with ``ImageFolderDataset(num_shards, shard_id)``; every rank must use
the same ``seed`` so the shards are disjoint (MindSpore pads them to equal size with repeats).
Evaluation reads each rank's contiguous share of the sorted file list in order, keeps the last
partial batch, and so scores every image exactly once across ranks.
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
from src.data.checks import check_image_headers, resolve_split_folder, scan_image_folder
from src.data.transforms import imagenet_eval_operations, imagenet_train_operations, label_operations

logger = logging.getLogger(__name__)


def create_imagenet_dataset(data_path: str, split: str, batch_size: int, image_size: int,
                            num_parallel_workers: int = 8, num_shards: int = 1, shard_id: int = 0,
                            seed: int = 1, eval_dataset_path: str = "", safe_decode: bool = True,
                            check_headers: bool = True, crop_min_scale: float = 0.08,
                            hflip: bool = True, eval_resize_library: str = "mindspore") -> DatasetBundle:
    """Build the train or val pipeline of an image-folder dataset; see :func:`src.data.create_dataset`."""
    import mindspore.dataset as ds

    training = check_split(split)
    check_batch_and_shards(batch_size, image_size, num_shards, shard_id)
    folder = resolve_split_folder(data_path, "train" if training else "val", eval_dataset_path)
    listing = scan_image_folder(folder)
    workers = capped_workers(num_parallel_workers)
    total = len(listing)
    class_indexing = {name: index for index, name in enumerate(listing.class_names)}
    common = dict(extensions=listing.extensions, class_indexing=class_indexing, num_parallel_workers=workers)
    ds.config.set_seed(int(seed))
    if training:
        # Each rank checks a static 1/num_shards of the files; together they check all of them.
        if check_headers:
            check_image_headers(listing.files[shard_id::num_shards], workers)
        dataset = ds.ImageFolderDataset(folder, shuffle=True, num_shards=num_shards, shard_id=shard_id, **common)
        operations = imagenet_train_operations(image_size, safe_decode, crop_min_scale, hflip)
        num_images = train_shard_size(total, num_shards)
        steps = train_steps(num_images, batch_size, folder)
        files: tuple[str, ...] = ()
    else:
        start, stop = eval_shard_bounds(total, num_shards, shard_id)
        files = listing.files[start:stop]
        if check_headers:
            check_image_headers(files, workers)
        dataset = ds.ImageFolderDataset(folder, sampler=eval_sampler(start, stop), **common)
        operations = imagenet_eval_operations(image_size, safe_decode, eval_resize_library)
        num_images = stop - start
        steps = -(-num_images // batch_size)
    dataset = dataset.map(operations=operations, input_columns="image", num_parallel_workers=workers)
    dataset = dataset.map(operations=label_operations(), input_columns="label", num_parallel_workers=workers)
    dataset = dataset.batch(batch_size, drop_remainder=training, num_parallel_workers=workers)
    logger.info("%s split of %s: %d images in %d classes, %d on shard %d/%d, %d batches of %d",
                split, folder, total, len(listing.class_names), num_images, shard_id, num_shards, steps,
                batch_size)
    return DatasetBundle(dataset=dataset, num_images=num_images, total_images=total,
                         class_names=listing.class_names, steps_per_epoch=steps,
                         split="train" if training else "val", source=folder, files=files)

"""Dataset pipelines: ImageNet-style image folders and binary CIFAR-10, behind one factory.

Importing this package does no work and does not import MindSpore (the builders import it when
called), so the dataset tools stay light.
"""
from __future__ import annotations

import importlib
from typing import Any, Sequence

from src.data.bundle import DatasetBundle
from src.data.checks import resolve_split_folder
from src.data.decode import pipeline_error_to_dropcov, pipeline_errors_as_dropcov
from src.data.labels import CLASS_INDICES_FILE, read_class_indices, write_class_indices
from src.errors import DropCovError

__all__ = ["CLASS_INDICES_FILE", "DatasetBundle", "create_dataset", "list_datasets", "pipeline_error_to_dropcov",
           "pipeline_errors_as_dropcov", "read_class_indices", "resolve_split_folder", "write_class_indices"]

# dataset name -> (module, builder); imported on use so that MindSpore loads only when a pipeline is built.
_BUILDERS = {
    "imagenet": ("src.data.imagenet", "create_imagenet_dataset"),
    "cifar10": ("src.data.cifar10", "create_cifar10_dataset"),
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`create_dataset` (the ``dataset`` config key)."""
    return sorted(_BUILDERS)


def create_dataset(dataset: str, data_path: str, split: str, batch_size: int, image_size: int,
                   num_parallel_workers: int = 8, num_shards: int = 1, shard_id: int = 0, seed: int = 1,
                   eval_dataset_path: str = "", safe_decode: bool = True,
                   check_headers: bool = True, crop_min_scale: float = 0.08, hflip: bool = True,
                   eval_resize_library: str = "mindspore", class_names: Sequence[str] | None = None,
                   augment: Any = None, num_classes: int = 0, crop_pct: float = 0.875,
                   eval_interpolation: str = "bilinear") -> DatasetBundle:
    """Build a batched train or evaluation pipeline.

    Args:
        dataset: "imagenet" (a folder of class folders, ImageNet layout; also the digits demo data) or
            "cifar10" (binary CIFAR-10).
        data_path: dataset root holding ``train/`` and ``val/`` (or a folder of class folders; for
            CIFAR-10 the folder of the ``.bin`` files).
        split: "train" (shuffled, sharded, last partial batch dropped) or "val" (in order, every image
            exactly once across the ``num_shards`` ranks, last partial batch kept).
        batch_size: images per batch on this rank.
        image_size: output side length (train crop / eval centre crop; CIFAR-10 resizes when not 32).
        num_parallel_workers: data-loading threads, capped at the machine's core count.
        num_shards: number of ranks reading the dataset; shard_id: this rank (0-based).
        seed: dataset seed (shuffle and augmentation); must be the same on every rank.
        eval_dataset_path: for "val", a folder that replaces ``data_path/val``.
        safe_decode: image folders only: decode with Pillow so a damaged file stops the run with its
            name (MindSpore's decoder can crash or hang on one); False uses MindSpore's fused decode ops.
        check_headers: image folders only: read the first bytes of this rank's files before starting,
            so a non-image file fails at once.
        crop_min_scale: image folders only: smallest random-crop area fraction of the train transform (0.08).
        hflip: random horizontal flip in the train transform.
        eval_resize_library: image folders, "val" only: "mindspore" (MindSpore's Resize) or "pillow"
            (torchvision's resize and crop on PIL images), see :data:`src.data.transforms.EVAL_RESIZE_LIBRARIES`.
        class_names: image folders: the training classes (index = label), e.g. the training bundle's
            ``class_names`` or the run's ``class_indices.json``; a class folder not among them is an error,
            a class without a folder is said once. None labels by the folder's own sorted class folders
            (for "val" with a warning: that assumes it holds every training class, in order).
        augment: image folders only: the modern recipe's train augmentation
            (:class:`src.data.recipe.AugmentSettings`); None = today's. With Mixup/CutMix on, the train
            labels are soft targets (B, num_classes) float32.
        num_classes: the targets' width with Mixup/CutMix (``class_num``; 0 = the number of class folders).
        crop_pct, eval_interpolation: image folders only: the evaluation resize (shorter side to
            ``image_size / crop_pct``, bilinear or Pillow-bicubic) before the centre crop.

    Returns:
        DatasetBundle with ``.dataset`` (yielding float32 (B, 3, S, S) images and int32 labels),
        ``.num_images`` (this shard), ``.total_images``, ``.class_names`` (the classes the labels index:
        the training classes for "val" when given), ``.steps_per_epoch``.

    Raises:
        DropCovError: missing folders, empty classes, unfollowable links, non-image content, a validation
            class that training does not know, bad sizes or shard layout.

    Example:
        >>> bundle = create_dataset("imagenet", "/data/imagenet", "val", batch_size=64, image_size=224,
        ...                         num_shards=4, shard_id=rank)
        >>> for images, labels in bundle.dataset.create_tuple_iterator(num_epochs=1):
        ...     ...
    """
    if dataset not in _BUILDERS:
        raise DropCovError(f"unknown dataset {dataset!r}: use one of {', '.join(list_datasets())}")
    module_name, builder_name = _BUILDERS[dataset]
    builder = getattr(importlib.import_module(module_name), builder_name)
    options = dict(num_parallel_workers=num_parallel_workers, num_shards=num_shards, shard_id=shard_id,
                   seed=seed, eval_dataset_path=eval_dataset_path, hflip=hflip)
    if dataset == "imagenet":
        options.update(safe_decode=safe_decode, check_headers=check_headers, crop_min_scale=crop_min_scale,
                       eval_resize_library=eval_resize_library, class_names=class_names,
                       augment=augment, num_classes=num_classes, crop_pct=crop_pct,
                       eval_interpolation=eval_interpolation)
    elif augment is not None and augment.changes_pipeline:
        raise DropCovError(f"dataset {dataset}: train_interpolation, color_jitter, auto_augment, random erasing and "
                           "Mixup/CutMix are implemented for image folders (dataset imagenet) only")
    return builder(data_path, split, batch_size, image_size, **options)

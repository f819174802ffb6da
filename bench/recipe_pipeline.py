"""Worker: input-pipeline throughput of the full DeiT train recipe, per worker process and per CPU-second.

``python -m bench.recipe_pipeline '{"images": 96, "batch_size": 64, "image_size": 224, "workers": [1, 2]}'``

Reads the ImageNet-like 500x375 JPEGs of :func:`bench.pipeline.generate_imagenet_like` through
:func:`src.data.create_dataset` with :data:`src.data.recipe.DEIT_AUGMENT` (bicubic random resized crop,
flip, RandAugment ``rand-m9-mstd0.5-inc1``, random erasing 0.25 ``pixel``, Mixup 0.8 / CutMix 1.0 with
switch 0.5 and smoothing 0.1) and, for reference, with today's transform. For each worker count it reports
images/s of a full pass and the images per CPU-second of the whole process (every pipeline thread
counted: the figure a core of a training node delivers). A per-stage split of one worker's time
(decode + crop, RandAugment, normalise, erasing, Mixup) is measured in-process on the same files.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.common import worker_main
from bench.pipeline import JPEG_SIZE, generate_imagenet_like


def _timed_pass(dataset) -> dict[str, Any]:
    """One pass: wall seconds, process CPU seconds (all threads), images, and both rates."""
    iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    wall, cpu = time.perf_counter(), time.process_time()
    images = sum(int(batch[0].shape[0]) for batch in iterator)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"images": images, "wall_s": wall, "cpu_s": cpu, "images_per_s": images / wall,
            "images_per_cpu_s": images / cpu if cpu > 0 else None}


def _stage_split(root: Path, image_size: int, samples: int, seed: int = 0) -> dict[str, float]:
    """Milliseconds per image of each stage of the recipe, measured one stage at a time on ``samples`` files."""
    import mindspore.dataset.vision as vision

    from src.data.decode import decode_image
    from src.data.recipe import DEIT_AUGMENT
    from src.data.transforms import interpolation_mode

    files = sorted((root / "train").rglob("*.JPEG"))[:samples]
    encoded = [np.fromfile(path, dtype=np.uint8) for path in files]
    crop = vision.RandomResizedCrop(image_size, scale=(0.08, 1.0), interpolation=interpolation_mode("bicubic"))
    operation = DEIT_AUGMENT.batch_operation(1000, seed)
    rng = np.random.default_rng(seed)

    def per_image(function, inputs):
        start = time.perf_counter()
        outputs = [function(item) for item in inputs]
        return outputs, 1e3 * (time.perf_counter() - start) / len(inputs)

    decoded, decode_ms = per_image(decode_image, encoded)
    crops, crop_ms = per_image(crop, decoded)
    augmented, rand_augment_ms = per_image(lambda image: operation.rand_augment(image, rng), crops)
    height, width = augmented[0].shape[:2]
    normalised, normalise_ms = per_image(
        lambda image: operation.normalise(image, np.empty((3, height, width), np.float32)), augmented)
    _, erase_ms = per_image(lambda image: operation.erasing(image, rng), normalised)
    batch = np.stack(normalised[: 2 * (len(normalised) // 2)])
    start = time.perf_counter()
    operation.mixup(batch, np.zeros(len(batch), np.int32), rng)
    mixup_ms = 1e3 * (time.perf_counter() - start) / len(batch)
    stages = {"decode": decode_ms, "random_resized_crop": crop_ms, "rand_augment": rand_augment_ms,
              "normalise": normalise_ms, "random_erasing": erase_ms, "mixup_cutmix": mixup_ms}
    stages["total"] = sum(stages.values())
    return {name: round(value, 4) for name, value in stages.items()}


def measure_recipe_pipeline(images: int = 96, batch_size: int = 64, image_size: int = 224,
                            workers: Sequence[int] = (1, 2), min_images: int = 768, data_root: str = "",
                            safe_decode: bool = True) -> dict[str, Any]:
    """Images/s and images per CPU-second of the DeiT recipe and of today's transform, per worker count."""
    from src.runtime.environment import configure_cpu_environment

    configure_cpu_environment("CPU")
    import mindspore as ms

    from src.data import create_dataset
    from src.data.recipe import DEIT_AUGMENT

    ms.set_device("CPU")
    repeats = max(1, -(-min_images // images))
    with tempfile.TemporaryDirectory(prefix="bench_recipe_jpegs_") as temporary:
        root = Path(data_root) if data_root else Path(temporary)
        generated = generate_imagenet_like(root, images)
        batch_size = min(batch_size, images)
        result: dict[str, Any] = {"images": images, "repeats": repeats, "jpeg_size": f"{JPEG_SIZE[0]}x{JPEG_SIZE[1]}",
                                  "batch_size": batch_size, "image_size": image_size, "safe_decode": safe_decode,
                                  "generated": generated, "runs": []}
        for recipe, augment in (("deit", DEIT_AUGMENT), ("today", None)):
            for count in workers:
                bundle = create_dataset("imagenet", str(root), "train", batch_size, image_size,
                                        num_parallel_workers=count, safe_decode=safe_decode, augment=augment,
                                        num_classes=1000)
                _timed_pass(bundle.dataset)  # warm the page cache and the pipeline's libraries
                timing = _timed_pass(bundle.dataset.repeat(repeats) if repeats > 1 else bundle.dataset)
                result["runs"].append({"recipe": recipe, "workers": count, **timing})
        result["stages_ms_per_image"] = _stage_split(root, image_size, min(images, 64))
    return result


if __name__ == "__main__":
    raise SystemExit(worker_main(measure_recipe_pipeline))

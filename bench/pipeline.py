"""Worker: input-pipeline throughput of the ImageNet train and eval transforms at 1, 2, ... workers.

``python -m bench.pipeline '{"images": 96, "batch_size": 8, "image_size": 224, "max_workers": 2}'``

Generates an ImageNet-like folder (``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG``) of about
500x375 JPEGs (smooth colour fields plus noise, quality 90: about 100 KB, close to ImageNet's ~110 KB) in
a temporary directory, then reads it through :func:`src.data.create_dataset` with the project's
train transform (decode, random resized crop, flip, normalise, HWC->CHW) and eval transform (decode,
resize, centre crop, normalise), with each decode path, and times full passes. Images/s counts the images after the first
batch, over the time after it arrived (start-up is reported apart).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import worker_main
from bench.machine import usable_cores

JPEG_SIZE = (500, 375)  # width, height of ImageNet's most common landscape shape
NOISE_SIGMA = 22.0  # pixel noise on the smooth colour field: ~100 KB per JPEG at quality 90, like ImageNet


def generate_imagenet_like(root: Path, images: int, classes: int = 4, seed: int = 0,
                           size: tuple[int, int] = JPEG_SIZE) -> dict[str, Any]:
    """Write ``images`` JPEGs into ``root/train/<class>/`` and as many into ``root/val/<class>/``.

    One image in four is portrait (``size`` transposed), as in ImageNet. Returns the count and mean
    file size in KB.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    total_bytes = 0
    for split in ("train", "val"):
        for index in range(images):
            width, height = size if index % 4 else size[::-1]
            coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
            field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
            pixels = np.clip(field + rng.normal(0.0, NOISE_SIGMA, size=field.shape), 0, 255).astype(np.uint8)
            folder = root / split / f"n{index % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{split}_{index:06d}.JPEG"
            Image.fromarray(pixels).save(path, quality=90)
            total_bytes += path.stat().st_size
    return {"images_per_split": images, "classes": classes, "mean_kb": total_bytes / (2 * images) / 1024}


def _time_pass(dataset) -> dict[str, Any]:
    """One full pass over ``dataset``: images, start-up seconds (to the first batch), ``images_per_s``
    over the whole pass (start-up included: the conservative figure), ``images_per_s_after_first``
    (images after the first batch over the time after it; flattered by the batches prefetched meanwhile)
    and ``cpu_ms_per_image``: this process's CPU time (all its threads) per image, the cost of the
    pipeline that other jobs on a shared machine barely change, unlike the wall-clock rates."""
    iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    cpu_start = time.process_time()
    start = time.perf_counter()
    first = None
    images = 0
    for batch in iterator:
        count = int(batch[0].shape[0])
        if first is None:
            first = time.perf_counter()
            first_count = count
        images += count
    end = time.perf_counter()
    cpu_seconds = time.process_time() - cpu_start
    if first is None:
        raise RuntimeError("the dataset produced no batch")
    timed_images = images - first_count
    return {"images": images, "startup_s": first - start, "total_s": end - start,
            "images_per_s": images / (end - start), "cpu_ms_per_image": 1000.0 * cpu_seconds / images,
            "images_per_s_after_first": timed_images / (end - first) if timed_images and end > first else None}


def measure_pipeline(images: int = 96, batch_size: int = 8, image_size: int = 224, max_workers: int = 0,
                     min_images: int = 384, data_root: str = "") -> dict[str, Any]:
    """Images/s of the train and eval pipelines for 1..max_workers workers (0 = all cores).

    Both decode paths of :func:`src.data.create_dataset` are measured: ``safe_decode=True`` (the
    default: Pillow decode, then MindSpore's crop/resize) and ``safe_decode=False`` (MindSpore's fused
    decode operations). A timed pass repeats the folder until it holds at least ``min_images`` images,
    so start-up and prefetching weigh little. ``data_root`` keeps the generated JPEGs there instead of a temporary folder.
    """
    from src.runtime.environment import configure_cpu_environment

    configure_cpu_environment("CPU")
    import mindspore as ms

    from src.data import create_dataset

    ms.set_device("CPU")
    max_workers = max_workers or usable_cores()
    repeats = max(1, -(-min_images // images))
    with tempfile.TemporaryDirectory(prefix="bench_jpegs_") as temporary:
        root = Path(data_root) if data_root else Path(temporary)
        start = time.perf_counter()
        generated = generate_imagenet_like(root, images)
        generated["generate_s"] = time.perf_counter() - start
        result: dict[str, Any] = {"images": images, "repeats": repeats, "jpeg_size": f"{JPEG_SIZE[0]}x{JPEG_SIZE[1]}",
                                  "batch_size": batch_size, "image_size": image_size, "generated": generated,
                                  "train": [], "eval": []}
        for kind, split in (("train", "train"), ("eval", "val")):
            for safe_decode in (True, False):
                for workers in range(1, max_workers + 1):
                    bundle = create_dataset("imagenet", str(root), split, batch_size, image_size,
                                            num_parallel_workers=workers, safe_decode=safe_decode)
                    _time_pass(bundle.dataset)  # warm the page cache and the pipeline's libraries
                    timing = _time_pass(bundle.dataset.repeat(repeats) if repeats > 1 else bundle.dataset)
                    result[kind].append({"workers": workers, "safe_decode": safe_decode, **timing})
    return result

if __name__ == "__main__":
    raise SystemExit(worker_main(measure_pipeline))

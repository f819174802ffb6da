"""A small real ImageFolder for CPU demos: scikit-learn's handwritten digits (1,797 images, 10 classes).

Each 8x8 image (grey levels 0..16) is scaled to 0..255, upscaled bicubically to ``size`` x ``size``
and saved as an RGB PNG under ``OUT/{train,val}/<digit>/<index>.png`` (index = position in
``load_digits``); the train/val split is stratified by digit with a fixed seed.
"""
from __future__ import annotations

import logging
import os
import shutil

import numpy as np
from PIL import Image

from src.errors import DropCovError

logger = logging.getLogger(__name__)

DIGITS_IMAGES = 1797
DIGITS_MAX_LEVEL = 16


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise DropCovError("scikit-learn is needed for the digits data: pip install scikit-learn") from err
    digits = load_digits()
    return digits.images, digits.target


def digit_image(levels: np.ndarray, size: int) -> Image.Image:
    """One 8x8 digit (0..16) as an RGB ``size`` x ``size`` image: levels * 255/16, bicubic upscaling."""
    grey = np.rint(np.asarray(levels, dtype=np.float64) * (255.0 / DIGITS_MAX_LEVEL)).astype(np.uint8)
    return Image.fromarray(grey, mode="L").resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


def build_digits_imagefolder(out: str, size: int = 64, val_fraction: float = 0.2, seed: int = 0,
                             force: bool = False) -> dict:
    """Write the digits as ``out/train`` and ``out/val`` image folders; returns the counts.

    Refuses a non-empty ``out`` unless ``force`` (which replaces only ``out/train`` and ``out/val``).
    Returns ``{"train": n, "val": m, "per_class": {"0": {"train": a, "val": b}, ...}}``.
    """
    if size < 8:
        raise DropCovError(f"--size must be at least 8 (the digits are 8x8), got {size}")
    if not 0.0 < val_fraction < 1.0:
        raise DropCovError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if os.path.isdir(out) and os.listdir(out):
        if not force:
            raise DropCovError(f"{out} is not empty: choose another folder or pass --force to replace its "
                               "train/ and val/")
        for split in ("train", "val"):
            shutil.rmtree(os.path.join(out, split), ignore_errors=True)
    images, targets = _load_digits()
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(targets))
    train_idx, val_idx = train_test_split(indices, test_size=val_fraction, stratify=targets, random_state=seed)
    counts: dict = {"train": len(train_idx), "val": len(val_idx), "per_class": {}}
    for split, split_indices in (("train", train_idx), ("val", val_idx)):
        for index in sorted(split_indices):
            folder = os.path.join(out, split, str(targets[index]))
            os.makedirs(folder, exist_ok=True)
            digit_image(images[index], size).save(os.path.join(folder, f"{index:04d}.png"))
            per_class = counts["per_class"].setdefault(str(targets[index]), {"train": 0, "val": 0})
            per_class[split] += 1
    counts["per_class"] = dict(sorted(counts["per_class"].items()))
    logger.info("wrote %d train and %d val digit images to %s", counts["train"], counts["val"], out)
    return counts

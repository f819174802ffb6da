"""Random erasing (Zhong et al. 2017) as timm applies it, on normalised (C, H, W) float32 images.

Why not ``mindspore.dataset.vision.RandomErasing``: it draws the box's aspect ratio uniformly on
[0.3, 3.3] (so about three boxes in four are wider than tall) where timm and torchvision draw its
logarithm uniformly (as many tall boxes as wide ones), its largest area is 0.33 instead of 1/3, and it
draws from Python's global ``random`` (not reproducible across the pipeline's threads). This follows
timm's ``RandomErasing``: with probability ``probability`` an image gets ``count`` boxes (1 by default;
up to ``max_count`` drawn uniformly), each of area ``U(min_area, max_area) * H * W / count`` and aspect
ratio ``h / w = exp(U(log(min_aspect), log(1 / min_aspect)))``, placed uniformly where it fits (up to 10
tries per box), and filled by ``mode``:

- ``pixel``: per-pixel standard normal values (DeiT's ``--remode pixel``: noise in normalised units);
- ``rand``: one standard normal value per channel;
- ``const``: zeros (the mean colour after normalisation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict

import numpy as np

from src.errors import DropCovError

ATTEMPTS = 10

_FILLS: Dict[str, Callable[[np.random.Generator, tuple], np.ndarray]] = {
    "pixel": lambda rng, shape: rng.standard_normal(shape, dtype=np.float32),
    "rand": lambda rng, shape: rng.standard_normal((shape[0], 1, 1), dtype=np.float32),
    "const": lambda rng, shape: np.zeros((shape[0], 1, 1), np.float32),
}
ERASE_MODES = tuple(_FILLS)


@dataclass(frozen=True)
class RandomErasing:
    """Erase boxes of an image in place (see the module doc); config keys ``random_erase_prob``,
    ``random_erase_mode``, ``random_erase_count``."""

    probability: float = 0.25
    mode: str = "pixel"
    max_count: int = 1
    min_area: float = 0.02
    max_area: float = 1.0 / 3.0
    min_aspect: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise DropCovError(f"random_erase_prob must lie in [0, 1], got {self.probability!r}")
        if self.mode not in _FILLS:
            raise DropCovError(f"random_erase_mode {self.mode!r} is not known; use one of {', '.join(ERASE_MODES)}")
        if int(self.max_count) != self.max_count or self.max_count < 1:
            raise DropCovError(f"random_erase_count must be an integer >= 1, got {self.max_count!r}")
        if not 0.0 < self.min_area <= self.max_area <= 1.0 or not 0.0 < self.min_aspect <= 1.0:
            raise DropCovError("random erasing needs 0 < min_area <= max_area <= 1 and 0 < min_aspect <= 1")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Erase ``image`` (C, H, W), float32, in place with probability ``probability``; returns it."""
        if rng.random() >= self.probability:
            return image
        channels, height, width = image.shape
        count = 1 if self.max_count == 1 else int(rng.integers(1, self.max_count + 1))
        log_aspect = (math.log(self.min_aspect), -math.log(self.min_aspect))
        for _ in range(count):
            for _ in range(ATTEMPTS):
                area = rng.uniform(self.min_area, self.max_area) * height * width / count
                aspect = math.exp(rng.uniform(*log_aspect))
                box_h, box_w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
                if box_h < height and box_w < width:
                    top = int(rng.integers(0, height - box_h + 1))
                    left = int(rng.integers(0, width - box_w + 1))
                    image[:, top:top + box_h, left:left + box_w] = _FILLS[self.mode](rng, (channels, box_h, box_w))
                    break
        return image

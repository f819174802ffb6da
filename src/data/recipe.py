"""The modern recipe's train augmentation (timm / DeiT): its settings and the batch-level operation.

With any batch-level option on (``auto_augment``, ``random_erase_prob``, Mixup/CutMix), an image-folder
train pipeline runs

- per image, MindSpore operations seeded by the dataset seed: decode, ``RandomResizedCrop`` (bilinear or
  Pillow-bicubic), flip, ``RandomColorAdjust`` if ``color_jitter`` -> uint8 (H, W, 3);
- per batch, :class:`TrainBatchAugment` (``batch(per_batch_map=...)``): RandAugment
  (:mod:`src.data.augment`), normalisation to float32 (3, H, W), random erasing
  (:mod:`src.data.erasing`), Mixup/CutMix (:mod:`src.data.mixup`) -> images (B, 3, H, W) float32 and
  labels (B,) int32, or soft targets (B, K) float32 when mixing.

The batch operation draws every random number from ``numpy.random.default_rng((seed, shard_id, epoch,
batch))`` (epoch and batch number from MindSpore's ``BatchInfo``), so it is reproducible under the seed
whatever the threads' timing, and differs between ranks. As in timm, colour jitter is left out when
RandAugment is on (the policy does colour changes itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from src.data.augment import RandAugment, parse_rand_augment
from src.data.erasing import RandomErasing
from src.data.mixup import MixupCutmix
from src.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TRAIN_INTERPOLATIONS
from src.errors import DropCovError


@dataclass(frozen=True)
class AugmentSettings:
    """Train augmentation options; the defaults are today's pipeline (config keys of the same names)."""

    interpolation: str = "bilinear"
    auto_augment: str = ""
    color_jitter: float = 0.0
    random_erase_prob: float = 0.0
    random_erase_mode: str = "pixel"
    random_erase_count: int = 1
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    cutmix_minmax: Tuple[float, ...] = ()
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.interpolation not in TRAIN_INTERPOLATIONS:
            raise DropCovError(f"train_interpolation {self.interpolation!r} is not known; use one of "
                               f"{', '.join(TRAIN_INTERPOLATIONS)}")
        if self.color_jitter < 0:
            raise DropCovError(f"color_jitter must be >= 0, got {self.color_jitter!r}")
        if self.auto_augment:
            parse_rand_augment(self.auto_augment)
        if self.random_erase_prob > 0:
            self.erasing()
        if self.mixing:
            self.mixer(2)

    @classmethod
    def from_config(cls, config: Any) -> AugmentSettings:
        """The settings of a config: its keys of the same names, ``train_interpolation``, and the label
        smoothing (``label_smooth_factor`` when ``use_label_smooth``) that Mixup/CutMix fold into the targets."""
        same_names = {name: getattr(config, name) for name in cls.__dataclass_fields__
                      if name not in ("interpolation", "label_smoothing")}
        same_names["cutmix_minmax"] = tuple(same_names["cutmix_minmax"])
        return cls(interpolation=config.train_interpolation,
                   label_smoothing=config.label_smooth_factor if config.use_label_smooth else 0.0, **same_names)

    @property
    def mixing(self) -> bool:
        """Mixup or CutMix is on: the labels become soft targets (use the soft-target loss)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0 or bool(self.cutmix_minmax)

    @property
    def changes_pipeline(self) -> bool:
        """Some option is on: the train pipeline differs from today's."""
        return self.batch_level or self.interpolation != "bilinear" or self.color_jitter > 0

    @property
    def batch_level(self) -> bool:
        """Some option needs the batch-level operation (else the pipeline is today's)."""
        return bool(self.auto_augment) or self.random_erase_prob > 0 or self.mixing

    def per_image_options(self) -> Dict[str, Any]:
        """Keyword options of :func:`src.data.transforms.imagenet_train_operations`."""
        return {"interpolation": self.interpolation, "normalize": not self.batch_level,
                "color_jitter": 0.0 if self.auto_augment else self.color_jitter}

    def erasing(self) -> RandomErasing:
        return RandomErasing(self.random_erase_prob, self.random_erase_mode, self.random_erase_count)

    def mixer(self, num_classes: int) -> MixupCutmix:
        return MixupCutmix(num_classes, self.mixup_alpha, self.cutmix_alpha, tuple(self.cutmix_minmax),
                           self.mixup_prob, self.mixup_switch_prob, self.mixup_mode, self.label_smoothing)

    def batch_operation(self, num_classes: int, seed: int, shard_id: int = 0,
                        batch_size: int = 2) -> TrainBatchAugment | None:
        """The ``per_batch_map`` of the train pipeline, or None when no batch-level option is on.

        Raises :class:`DropCovError` for an odd ``batch_size`` with Mixup/CutMix (image ``i`` is mixed with
        image ``B-1-i``)."""
        if not self.batch_level:
            return None
        if self.mixing and batch_size % 2:
            raise DropCovError(f"Mixup/CutMix mix image i with image B-1-i of a batch: batch_size must be even, "
                               f"got {batch_size}")
        fill = tuple(min(255, round(value)) for value in IMAGENET_MEAN)  # timm: the mean pixel
        rand_augment = RandAugment(parse_rand_augment(self.auto_augment), fill, self.interpolation) \
            if self.auto_augment else None
        return TrainBatchAugment(seed, shard_id, rand_augment, self.erasing() if self.random_erase_prob > 0 else None,
                                 self.mixer(num_classes) if self.mixing else None)


#: DeiT's training recipe (its ``main.py`` defaults; colour jitter 0.3 is set but unused with RandAugment).
DEIT_AUGMENT = AugmentSettings(interpolation="bicubic", auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.3,
                               random_erase_prob=0.25, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)


class TrainBatchAugment:
    """``per_batch_map`` of the train pipeline: uint8 (H, W, 3) crops -> augmented float32 (B, 3, H, W).

    Args:
        seed, shard_id: with the epoch and batch number, seed each batch's random numbers.
        rand_augment, erasing, mixup: the operations to run (None = off), in that order.
        mean, std: normalisation per RGB channel, in pixel units.
    """

    def __init__(self, seed: int, shard_id: int, rand_augment: RandAugment | None = None,
                 erasing: RandomErasing | None = None, mixup: MixupCutmix | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.seed, self.shard_id = int(seed), int(shard_id)
        self.rand_augment, self.erasing, self.mixup = rand_augment, erasing, mixup
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)

    def generator(self, epoch: int, batch: int) -> np.random.Generator:
        """The random numbers of batch ``batch`` of epoch ``epoch`` on this shard."""
        return np.random.default_rng([self.seed, self.shard_id, int(epoch), int(batch)])

    def normalise(self, image: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``(image - mean) / std`` of a uint8 (H, W, 3) image into float32 ``out`` (3, H, W).

        The uint8 image is transposed first (a quarter of the bytes of a float32 transpose): 5x faster."""
        np.subtract(np.ascontiguousarray(image.transpose(2, 0, 1)), self.mean, out=out, dtype=np.float32)
        return np.divide(out, self.std, out=out)

    def apply(self, images: List[np.ndarray], labels: Sequence[Any],
              rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """Augment one batch with the random numbers of ``rng``: ``(images, labels or soft targets)``."""
        height, width = images[0].shape[:2]
        out = np.empty((len(images), 3, height, width), np.float32)
        for index, image in enumerate(images):
            if self.rand_augment is not None:
                image = self.rand_augment(image, rng)
            self.normalise(image, out[index])
            if self.erasing is not None:
                self.erasing(out[index], rng)
        labels = np.asarray(labels, np.int32).reshape(len(images))
        if self.mixup is not None:
            return self.mixup(out, labels, rng)
        return out, labels

    def __call__(self, images: List[np.ndarray], labels: List[np.ndarray], batch_info: Any) -> Tuple[np.ndarray, np.ndarray]:
        return self.apply(images, labels, self.generator(batch_info.get_epoch_num(), batch_info.get_batch_num()))


def batch_with_augment(dataset: Any, batch_size: int, operation: TrainBatchAugment, workers: int) -> Any:
    """``dataset.batch`` of the train split with ``operation`` as its ``per_batch_map`` (last batch dropped)."""
    return dataset.batch(batch_size, drop_remainder=True, per_batch_map=operation,
                         input_columns=["image", "label"], num_parallel_workers=workers)

"""Mixup and CutMix on a batch, with soft targets that fold label smoothing in (timm's ``Mixup``).

Image ``i`` of a batch of ``B`` is mixed with image ``B - 1 - i`` (the batch flipped) with weight ``lam``:

- Mixup: ``x_i <- lam * x_i + (1 - lam) * x_{B-1-i}``, ``lam ~ Beta(mixup_alpha, mixup_alpha)``;
- CutMix: a box of ``x_i`` is replaced by the same box of ``x_{B-1-i}``; ``lam ~ Beta(cutmix_alpha,
  cutmix_alpha)`` sets the box side to ``sqrt(1 - lam)`` of the image's, centred at a uniform point and
  clipped at the borders, and ``lam`` is then corrected to ``1 - box area / image area``
  (``correct_lam``); with ``cutmix_minmax = (a, b)`` the box sides are uniform fractions in [a, b) instead.

The targets are ``lam * y(label_i) + (1 - lam) * y(label_{B-1-i})`` with the smoothed one-hot rows
``y(c) = off + (1 - smoothing) * onehot(c)``, ``off = smoothing / K`` (:func:`mixup_target`). When both
alphas are set, CutMix is chosen with probability ``switch_prob`` and Mixup otherwise; any mixing at all
happens with probability ``prob``. ``mode`` says what shares one draw: ``batch`` (the whole batch, DeiT's
default), ``pair`` (images ``i`` and ``B-1-i``) or ``elem`` (each image).

Why not ``mindspore.dataset.vision.MixUpBatch`` / ``CutMixBatch``: they pair each image with a random
other one, draw no switch between the two, smooth no labels and do not correct ``lam`` to the clipped
box, so the recipe's targets cannot be built from them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Tuple, Union

import numpy as np

from src.errors import DropCovError

Box = Tuple[int, int, int, int]  # top, bottom, left, right (exclusive ends)


def mixup_target(labels: np.ndarray, num_classes: int, lam: Union[float, np.ndarray] = 1.0,
                 smoothing: float = 0.0) -> np.ndarray:
    """Soft targets ``(B, K)`` float32: ``lam * y(labels) + (1 - lam) * y(labels[::-1])`` with label smoothing.

    ``lam`` is a number or a ``(B,)`` array (one weight per image); ``y(c)`` puts ``1 - smoothing + smoothing / K``
    on class ``c`` and ``smoothing / K`` on every other class (timm's ``mixup_target``).
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    off = smoothing / num_classes
    rows = np.arange(labels.size)
    own = np.full((labels.size, num_classes), off, np.float64)
    own[rows, labels] = 1.0 - smoothing + off
    other = own[::-1]
    lam = np.asarray(lam, np.float64).reshape(-1, 1) if np.ndim(lam) else float(lam)
    return (own * lam + other * (1.0 - lam)).astype(np.float32)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator,
               minmax: Sequence[float] | None = None) -> Box:
    """A CutMix box of an ``height x width`` image (see the module doc for the two ways to size it)."""
    if minmax:
        cut_h = int(rng.integers(int(height * minmax[0]), int(height * minmax[1])))
        cut_w = int(rng.integers(int(width * minmax[0]), int(width * minmax[1])))
        top, left = int(rng.integers(0, height - cut_h)), int(rng.integers(0, width - cut_w))
        return top, top + cut_h, left, left + cut_w
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    centre_y, centre_x = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = np.clip([centre_y - cut_h // 2, centre_y + cut_h // 2], 0, height)
    left, right = np.clip([centre_x - cut_w // 2, centre_x + cut_w // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


def box_lam(box: Box, height: int, width: int) -> float:
    """``1 - box area / image area``: the share of the image a CutMix box leaves."""
    top, bottom, left, right = box
    return 1.0 - (bottom - top) * (right - left) / float(height * width)


@dataclass(frozen=True)
class MixupCutmix:
    """The batch operation (see the module doc); config keys ``mixup_alpha``, ``cutmix_alpha``,
    ``cutmix_minmax``, ``mixup_prob``, ``mixup_switch_prob``, ``mixup_mode`` and ``label_smoothing``."""

    num_classes: int
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    cutmix_minmax: Tuple[float, ...] = ()
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"
    label_smoothing: float = 0.1
    correct_lam: bool = True

    def __post_init__(self) -> None:
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise DropCovError("mixup_alpha and cutmix_alpha must be >= 0")
        if not (self.mixup_alpha > 0 or self.cutmix_alpha > 0 or self.cutmix_minmax):
            raise DropCovError("Mixup/CutMix needs mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax")
        if self.cutmix_minmax and not (len(self.cutmix_minmax) == 2 and 0 < self.cutmix_minmax[0] < self.cutmix_minmax[1] <= 1):
            raise DropCovError(f"cutmix_minmax must be [min, max] with 0 < min < max <= 1, got {list(self.cutmix_minmax)}")
        for key, value in (("mixup_prob", self.prob), ("mixup_switch_prob", self.switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise DropCovError(f"{key} must lie in [0, 1], got {value!r}")
        if self.mode not in _MODES:
            raise DropCovError(f"mixup_mode {self.mode!r} is not known; use one of {', '.join(_MODES)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise DropCovError(f"label smoothing must lie in [0, 1), got {self.label_smoothing!r}")

    @property
    def _cutmix_alpha(self) -> float:
        return 1.0 if self.cutmix_minmax else self.cutmix_alpha  # timm: minmax forces alpha 1

    def draw(self, rng: np.random.Generator) -> Tuple[float, bool]:
        """``(lam, use_cutmix)`` of one draw; ``lam == 1`` means no mixing."""
        if rng.random() >= self.prob:
            return 1.0, False
        both = self.mixup_alpha > 0 and self._cutmix_alpha > 0
        use_cutmix = bool(rng.random() < self.switch_prob) if both else self.mixup_alpha <= 0
        alpha = self._cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    def __call__(self, images: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """Mix ``images`` (B, C, H, W) float32 in place; returns them and the ``(B, K)`` soft targets."""
        if len(images) % 2:
            raise DropCovError(f"Mixup/CutMix needs an even batch size, got {len(images)}")
        lam = _MODES[self.mode](self, images, rng)
        return images, mixup_target(labels, self.num_classes, lam, self.label_smoothing)

    def _box(self, height: int, width: int, lam: float, rng: np.random.Generator) -> Tuple[Box, float]:
        """A CutMix box and the lam it leaves (corrected to the clipped box unless ``correct_lam`` is off)."""
        box = cutmix_box(height, width, lam, rng, self.cutmix_minmax)
        return box, box_lam(box, height, width) if self.correct_lam or self.cutmix_minmax else lam


def _mix_symmetric(first: np.ndarray, second: np.ndarray, lam: float, box: Box | None, scratch: np.ndarray) -> None:
    """Mix two images (or two stacks) with each other in place, the same way: CutMix swaps ``box``, Mixup
    makes ``lam * own + (1 - lam) * other`` (as ``other + lam * (own - other)``, one scratch buffer)."""
    if box is not None:
        top, bottom, left, right = box
        patch = first[..., top:bottom, left:right].copy()
        first[..., top:bottom, left:right] = second[..., top:bottom, left:right]
        second[..., top:bottom, left:right] = patch
        return
    np.subtract(first, second, out=scratch)
    np.multiply(scratch, lam, out=first)
    first += second
    scratch *= 1.0 - lam
    second += scratch


def _mix_batch(mixer: MixupCutmix, images: np.ndarray, rng) -> float:
    """One draw for the batch: image ``i`` and image ``B-1-i`` mixed with each other, pair by pair."""
    lam, use_cutmix = mixer.draw(rng)
    if lam == 1.0:
        return lam
    box = None
    if use_cutmix:
        box, lam = mixer._box(*images.shape[-2:], lam, rng)
    scratch = np.empty_like(images[0])
    size = len(images)
    for i in range(size // 2):
        _mix_symmetric(images[i], images[size - 1 - i], lam, box, scratch)
    return lam


def _mix_pairs(mixer: MixupCutmix, images: np.ndarray, rng) -> np.ndarray:
    """One draw per pair ``(i, B-1-i)``."""
    size = len(images)
    lams = np.ones(size)
    scratch = np.empty_like(images[0])
    for i in range(size // 2):
        lam, use_cutmix = mixer.draw(rng)
        if lam == 1.0:
            continue
        box = None
        if use_cutmix:
            box, lam = mixer._box(*images.shape[-2:], lam, rng)
        _mix_symmetric(images[i], images[size - 1 - i], lam, box, scratch)
        lams[i] = lams[size - 1 - i] = lam
    return lams


def _mix_elements(mixer: MixupCutmix, images: np.ndarray, rng) -> np.ndarray:
    """One draw per image; image ``i`` takes from the original image ``B-1-i``."""
    original = images.copy()
    size = len(images)
    lams = np.ones(size)
    for i in range(size):
        lam, use_cutmix = mixer.draw(rng)
        if lam == 1.0:
            continue
        source = original[size - 1 - i]
        if use_cutmix:
            (top, bottom, left, right), lam = mixer._box(*images.shape[-2:], lam, rng)
            images[i, :, top:bottom, left:right] = source[:, top:bottom, left:right]
        else:
            images[i] = lam * images[i] + (1.0 - lam) * source
        lams[i] = lam
    return lams


_MODES: Dict[str, Callable] = {"batch": _mix_batch, "pair": _mix_pairs, "elem": _mix_elements}
MIXUP_MODES = tuple(_MODES)

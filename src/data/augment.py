"""RandAugment as timm defines it (``rand-m9-mstd0.5-inc1``, the DeiT recipe), over Pillow.

Why not ``mindspore.dataset.vision.RandAugment``: it is torchvision's variant -- every chosen operation is
applied (timm applies each with probability 0.5), the magnitude is fixed (timm draws it per operation
from ``N(m, mstd)``), its operation set and magnitude scale differ (no ``Invert``/``SolarizeAdd``, no
"increasing" variants, bins of 31), and the fill is black (timm fills with the mean pixel). None of that
can be set, so the policy is written here, over the same Pillow operations timm uses, so that an image
and a plan give the pixels timm's ``AugmentOp`` gives.

The policy string (timm's ``rand_augment_transform``): ``rand`` then dash-separated options

- ``m<int>``: magnitude M in [0, 10] (default 10); ``n<int>``: operations per image (2);
- ``mstd<float>``: std of the per-operation magnitude noise (0; > 100 means uniform in [0, M]);
- ``mmax<int>``: upper clip of the noisy magnitude (10); ``p<float>``: probability of each operation (0.5);
- ``inc<0|1>``: the "increasing" operation set, whose strength grows with the magnitude.

Per image: ``n`` operations drawn uniformly with replacement; each, with probability ``p``, is applied at
magnitude ``clip(N(M, mstd), 0, mmax)`` with its sign (rotation direction, shear, shift, enhancement
direction) drawn at random. Randomness comes from the ``numpy.random.Generator`` passed in, so a batch
seeded from (seed, rank, epoch, batch) is augmented the same way every time (see :mod:`src.data.recipe`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from src.errors import DropCovError

LEVEL_DENOMINATOR = 10.0  # magnitude M maps to the fraction M / 10 of each operation's range
TRANSLATE_FRACTION = 0.45  # TranslateXRel/YRel: up to 45% of the side
INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
RANDOM_INTERPOLATION = "random"  # each operation bilinear or bicubic with equal probability (timm's default)

Fill = Tuple[int, int, int]


class Step(NamedTuple):
    """One planned operation: its name, magnitude after noise and clipping, whether it is negated, and the
    resampling of a geometric operation."""

    name: str
    magnitude: float
    negate: bool
    interpolation: str = "bicubic"


@dataclass(frozen=True)
class RandAugmentSpec:
    """The parsed policy string (see the module doc)."""

    magnitude: float = 10.0
    num_layers: int = 2
    magnitude_std: float = 0.0
    magnitude_max: float = LEVEL_DENOMINATOR
    prob: float = 0.5
    increasing: bool = False

    @property
    def operations(self) -> Tuple[str, ...]:
        return RAND_INCREASING_OPERATIONS if self.increasing else RAND_OPERATIONS


# ------------------------------------------------------------------------------ magnitude -> argument
def _signed(value: float, negate: bool) -> float:
    return -value if negate else value


def _rotate_degrees(magnitude: float, negate: bool) -> float:
    return _signed(magnitude / LEVEL_DENOMINATOR * 30.0, negate)


def _shear_factor(magnitude: float, negate: bool) -> float:
    return _signed(magnitude / LEVEL_DENOMINATOR * 0.3, negate)


def _translate_fraction(magnitude: float, negate: bool) -> float:
    return _signed(magnitude / LEVEL_DENOMINATOR * TRANSLATE_FRACTION, negate)


def _enhance_factor(magnitude: float, negate: bool) -> float:
    return magnitude / LEVEL_DENOMINATOR * 1.8 + 0.1  # [0.1, 1.9], 1.0 at M = 5


def _enhance_increasing_factor(magnitude: float, negate: bool) -> float:
    return max(0.1, 1.0 + _signed(magnitude / LEVEL_DENOMINATOR * 0.9, negate))  # away from 1.0 as M grows


def _posterize_bits(magnitude: float, negate: bool) -> int:
    return int(magnitude / LEVEL_DENOMINATOR * 4)  # bits kept, 0..4


def _posterize_increasing_bits(magnitude: float, negate: bool) -> int:
    return 4 - _posterize_bits(magnitude, negate)


def _solarize_threshold(magnitude: float, negate: bool) -> int:
    return min(256, int(magnitude / LEVEL_DENOMINATOR * 256))


def _solarize_increasing_threshold(magnitude: float, negate: bool) -> int:
    return 256 - _solarize_threshold(magnitude, negate)


def _solarize_add_amount(magnitude: float, negate: bool) -> int:
    return min(128, int(magnitude / LEVEL_DENOMINATOR * 110))


# ------------------------------------------------------------------------------------- the operations
def _affine(image: Image.Image, matrix: Sequence[float], fill: Fill, resample: int) -> Image.Image:
    return image.transform(image.size, Image.AFFINE, tuple(matrix), resample=resample, fillcolor=fill)


def _posterize(image: Image.Image, bits: int, fill: Fill, resample: int) -> Image.Image:
    return image if bits >= 8 else ImageOps.posterize(image, bits)


def _solarize_add(image: Image.Image, amount: int, fill: Fill, resample: int) -> Image.Image:
    lut = [min(255, value + amount) if value < 128 else value for value in range(256)]
    return image.point(lut * len(image.getbands()))


def _enhance(kind) -> Callable:
    return lambda image, factor, fill, resample: kind(image).enhance(factor)


class _Operation(NamedTuple):
    apply: Callable[[Image.Image, float, Fill, int], Image.Image]
    argument: Callable[[float, bool], float] | None


_OPERATIONS: Dict[str, _Operation] = {
    "AutoContrast": _Operation(lambda image, _, fill, resample: ImageOps.autocontrast(image), None),
    "Equalize": _Operation(lambda image, _, fill, resample: ImageOps.equalize(image), None),
    "Invert": _Operation(lambda image, _, fill, resample: ImageOps.invert(image), None),
    "Rotate": _Operation(lambda image, degrees, fill, resample: image.rotate(degrees, resample=resample,
                                                                            fillcolor=fill), _rotate_degrees),
    "Posterize": _Operation(_posterize, _posterize_bits),
    "PosterizeIncreasing": _Operation(_posterize, _posterize_increasing_bits),
    "Solarize": _Operation(lambda image, threshold, fill, resample: ImageOps.solarize(image, threshold),
                           _solarize_threshold),
    "SolarizeIncreasing": _Operation(lambda image, threshold, fill, resample: ImageOps.solarize(image, threshold),
                                     _solarize_increasing_threshold),
    "SolarizeAdd": _Operation(_solarize_add, _solarize_add_amount),
    "Color": _Operation(_enhance(ImageEnhance.Color), _enhance_factor),
    "ColorIncreasing": _Operation(_enhance(ImageEnhance.Color), _enhance_increasing_factor),
    "Contrast": _Operation(_enhance(ImageEnhance.Contrast), _enhance_factor),
    "ContrastIncreasing": _Operation(_enhance(ImageEnhance.Contrast), _enhance_increasing_factor),
    "Brightness": _Operation(_enhance(ImageEnhance.Brightness), _enhance_factor),
    "BrightnessIncreasing": _Operation(_enhance(ImageEnhance.Brightness), _enhance_increasing_factor),
    "Sharpness": _Operation(_enhance(ImageEnhance.Sharpness), _enhance_factor),
    "SharpnessIncreasing": _Operation(_enhance(ImageEnhance.Sharpness), _enhance_increasing_factor),
    "ShearX": _Operation(lambda image, factor, fill, resample: _affine(image, (1, factor, 0, 0, 1, 0), fill,
                                                                       resample), _shear_factor),
    "ShearY": _Operation(lambda image, factor, fill, resample: _affine(image, (1, 0, 0, factor, 1, 0), fill,
                                                                       resample), _shear_factor),
    "TranslateXRel": _Operation(lambda image, fraction, fill, resample: _affine(
        image, (1, 0, fraction * image.size[0], 0, 1, 0), fill, resample), _translate_fraction),
    "TranslateYRel": _Operation(lambda image, fraction, fill, resample: _affine(
        image, (1, 0, 0, 0, 1, fraction * image.size[1]), fill, resample), _translate_fraction),
}

#: timm's ``_RAND_TRANSFORMS`` and ``_RAND_INCREASING_TRANSFORMS``, in timm's order.
RAND_OPERATIONS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
                   "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
RAND_INCREASING_OPERATIONS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                              "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                              "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
                              "TranslateYRel")


def operation_argument(name: str, magnitude: float, negate: bool = False) -> float | None:
    """The argument operation ``name`` gets at ``magnitude`` (degrees, factor, bits, threshold, ...)."""
    argument = _OPERATIONS[name].argument
    return None if argument is None else argument(magnitude, negate)


def apply_operation(image: Image.Image, name: str, magnitude: float, negate: bool = False,
                    fill: Fill = (128, 128, 128), interpolation: str = "bicubic") -> Image.Image:
    """Operation ``name`` of the policy on an RGB Pillow image, as timm's ``AugmentOp`` applies it."""
    operation = _OPERATIONS[name]
    return operation.apply(image, operation_argument(name, magnitude, negate), fill, INTERPOLATIONS[interpolation])


# ------------------------------------------------------------------------------------ parsing, policy
_OPTION = re.compile(r"^([a-z]+)(\d.*)$")


def parse_rand_augment(text: str) -> RandAugmentSpec:
    """Parse a timm RandAugment string such as ``rand-m9-mstd0.5-inc1`` (config key ``auto_augment``)."""
    parts = text.strip().split("-")
    if parts[0] != "rand":
        raise DropCovError(f"auto_augment {text!r} is not a RandAugment policy: it must start with 'rand' "
                           "(e.g. rand-m9-mstd0.5-inc1)")
    values = {}
    for part in parts[1:]:
        match = _OPTION.match(part)
        try:
            key, value = match.group(1), match.group(2)
            values[key] = {"m": float, "n": int, "mstd": float, "mmax": float, "p": float, "inc": int}[key](value)
        except (AttributeError, KeyError, ValueError):
            raise DropCovError(f"auto_augment {text!r}: cannot read {part!r}; options are m<magnitude>, n<ops>, "
                               "mstd<std>, mmax<max>, p<prob>, inc<0|1> (e.g. rand-m9-mstd0.5-inc1)") from None
    std = values.get("mstd", 0.0)
    spec = RandAugmentSpec(magnitude=values.get("m", LEVEL_DENOMINATOR), num_layers=values.get("n", 2),
                           magnitude_std=math.inf if std > 100 else std,
                           magnitude_max=values.get("mmax", LEVEL_DENOMINATOR), prob=values.get("p", 0.5),
                           increasing=bool(values.get("inc", 0)))
    if spec.num_layers < 1 or not 0.0 <= spec.prob <= 1.0 or spec.magnitude < 0 or spec.magnitude_std < 0:
        raise DropCovError(f"auto_augment {text!r}: needs n >= 1, 0 <= p <= 1, m >= 0 and mstd >= 0")
    return spec


class RandAugment:
    """timm's RandAugment on uint8 (H, W, 3) images, randomness from a numpy Generator.

    Args:
        spec: the policy (:func:`parse_rand_augment`).
        fill: RGB value of the pixels that geometric operations bring in (timm: the mean pixel).
        interpolation: ``bilinear`` or ``bicubic`` resampling of the geometric operations, or ``random``
            (one of the two per operation, as timm without a set interpolation).
    """

    def __init__(self, spec: RandAugmentSpec, fill: Fill = (128, 128, 128), interpolation: str = "bicubic") -> None:
        if interpolation not in (*INTERPOLATIONS, RANDOM_INTERPOLATION):
            raise DropCovError(f"interpolation {interpolation!r} is not known; use one of "
                               f"{', '.join((*INTERPOLATIONS, RANDOM_INTERPOLATION))}")
        self.spec, self.fill, self.interpolation = spec, tuple(int(v) for v in fill), interpolation

    def plan(self, rng: np.random.Generator) -> List[Step]:
        """The operations one image gets: ``num_layers`` draws, each kept with probability ``prob``."""
        spec, names = self.spec, self.spec.operations
        steps = []
        for index in rng.integers(len(names), size=spec.num_layers):
            applied, negate = rng.random() < spec.prob, rng.random() < 0.5
            interpolation = self.interpolation
            if interpolation == RANDOM_INTERPOLATION:
                interpolation = "bilinear" if rng.random() < 0.5 else "bicubic"
            if math.isinf(spec.magnitude_std):
                magnitude = rng.uniform(0.0, spec.magnitude)
            elif spec.magnitude_std > 0:
                magnitude = rng.normal(spec.magnitude, spec.magnitude_std)
            else:
                magnitude = spec.magnitude
            if applied:
                steps.append(Step(names[index], float(min(max(magnitude, 0.0), spec.magnitude_max)), bool(negate),
                                  interpolation))
        return steps

    def apply(self, image: np.ndarray, steps: Sequence[Step]) -> np.ndarray:
        """``image`` (uint8 HWC RGB) after the planned operations (the input itself when there are none)."""
        if not steps:
            return image
        picture = Image.fromarray(image)
        for step in steps:
            picture = apply_operation(picture, step.name, step.magnitude, step.negate, self.fill, step.interpolation)
        return np.asarray(picture)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(image, self.plan(rng))

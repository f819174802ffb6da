"""Per-image transforms of the pipelines (MindSpore ``dataset.vision`` operations).

ImageNet, as the original MindSpore code transforms it, on uint8 HWC RGB images::

    train: RandomCropDecodeResize(size, scale=(0.08, 1), ratio=(3/4, 4/3)), RandomHorizontalFlip
    eval:  Decode, Resize(int(size / 0.875)) on the shorter side (256 for 224), CenterCrop(size)
           (eval_resize_library 'pillow': torchvision's Resize + CenterCrop on a PIL image instead, see
           PillowResizeCenterCrop)
    both:  Normalize(mean=[0.485, 0.456, 0.406]*255, std=[0.229, 0.224, 0.225]*255), HWC2CHW
           -> float32 (3, size, size); labels int32

``RandomCropDecodeResize`` is MindSpore's fused form of ``Decode`` + ``RandomResizedCrop`` (same
crop sampling, bilinear). With ``safe_decode=True`` (the default) the decode step is
:func:`src.data.decode.decode_image` (Pillow, same pixels as ``Decode``) followed by
``RandomResizedCrop`` / ``Resize``: a damaged file then stops the run with its name instead of
crashing or hanging MindSpore's decoder (see :mod:`src.data.decode`). The image-folder pipelines run that
decode in their source (``decoded=True`` leaves it out here). ``safe_decode=False`` uses the fused
MindSpore operations exactly; use it only on data checked with ``src.tools.verify_dataset``.

CIFAR-10 (the usual recipe): RandomCrop(32, padding 4), RandomHorizontalFlip for training; optional
Resize to ``image_size``; Normalize with the CIFAR-10 mean/std (x255), HWC2CHW.

Options of the modern recipe (all off by default): ``interpolation="bicubic"`` resizes with
``Inter.PILCUBIC`` (MindSpore's copy of Pillow's bicubic: the same pixels as timm's / DeiT's
``InterpolationMode.BICUBIC``; MindSpore's ``Inter.BICUBIC`` is OpenCV's and differs by up to ~50 levels on
a downscale), or Pillow's own bicubic with ``resize_library="pillow"``; ``"random"`` picks bilinear or
bicubic per training crop (``RandomChoice``, timm's ``random``); ``color_jitter`` adds
``RandomColorAdjust(b, c, s)`` after the flip; ``crop_pct`` sets the evaluation crop fraction (timm's
``crop_pct``, 0.875 here); ``normalize=False`` ends the train transform at the uint8 (H, W, 3) crop, for the
batch-level operations of :mod:`src.data.recipe` (RandAugment, random erasing, Mixup/CutMix) to take over.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from src.data.decode import decode_image

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CIFAR10_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR10_STD = (0.2023 * 255, 0.1994 * 255, 0.2010 * 255)
TRAIN_CROP_SCALE = (0.08, 1.0)
TRAIN_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
EVAL_CROP_FRACTION = 0.875
CIFAR10_IMAGE_SIZE = 32
EVAL_RESIZE_LIBRARIES = ("mindspore", "pillow")
"""Who resizes evaluation images (config key ``eval_resize_library``): MindSpore's bilinear ``Resize``, as the
original MindSpore code scored, or Pillow's antialiased bilinear resize with torchvision's sizes and crop, as
the authors' PyTorch code scored (``transforms.Resize(256)``, ``CenterCrop(224)`` on PIL images)."""
CIFAR10_PADDING = 4
INTERPOLATION_NAMES = ("bilinear", "bicubic")
TRAIN_INTERPOLATIONS = INTERPOLATION_NAMES + ("random",)
"""``random``: each training crop bilinear or bicubic with equal probability (timm's ``random``)."""


def eval_resize_size(image_size: int, crop_pct: float = EVAL_CROP_FRACTION) -> int:
    """Shorter-side length before the evaluation centre crop: ``int(image_size / crop_pct)`` (224 -> 256)."""
    return int(image_size / crop_pct)


def interpolation_mode(name: str) -> Any:
    """MindSpore's interpolation for ``bilinear`` / ``bicubic`` (Pillow's bicubic, as timm resizes)."""
    from mindspore.dataset.vision import Inter

    modes = {"bilinear": Inter.BILINEAR, "bicubic": Inter.PILCUBIC}
    if name not in modes:
        from src.errors import DropCovError

        raise DropCovError(f"interpolation {name!r} is not known; use one of {', '.join(INTERPOLATION_NAMES)}")
    return modes[name]


def _normalize_to_chw(mean: tuple[float, ...], std: tuple[float, ...]) -> list[Any]:
    import mindspore.dataset.vision as vision

    return [vision.Normalize(mean=list(mean), std=list(std)), vision.HWC2CHW()]


def imagenet_train_operations(image_size: int, safe_decode: bool = True,
                              crop_min_scale: float = TRAIN_CROP_SCALE[0], hflip: bool = True,
                              decoded: bool = False, interpolation: str = "bilinear", color_jitter: float = 0.0,
                              normalize: bool = True) -> list[Any]:
    """Encoded image bytes -> float32 (3, image_size, image_size): random resized crop, flip, normalise.

    ``crop_min_scale`` is the smallest crop area as a fraction of the image (0.08 in the ImageNet recipe);
    ``hflip`` False leaves out the random horizontal flip (e.g. for digits, whose mirror images differ);
    ``decoded`` True takes RGB uint8 (H, W, 3) images instead of bytes (no decode step).
    ``interpolation``, ``color_jitter`` and ``normalize`` are the modern recipe's options (module doc).
    """
    import mindspore.dataset.vision as vision

    scale = (crop_min_scale, TRAIN_CROP_SCALE[1])
    kind = vision.RandomResizedCrop if safe_decode or decoded else vision.RandomCropDecodeResize
    crops = [kind(image_size, scale=scale, ratio=TRAIN_CROP_RATIO,
                  **({} if name == "bilinear" else {"interpolation": interpolation_mode(name)}))
             for name in (INTERPOLATION_NAMES if interpolation == "random" else (interpolation,))]
    if len(crops) > 1:
        import mindspore.dataset.transforms as transforms

        crops = [transforms.RandomChoice(crops)]
    crop = ([decode_image] if safe_decode and not decoded else []) + crops
    flip = [vision.RandomHorizontalFlip()] if hflip else []
    jitter = [vision.RandomColorAdjust(color_jitter, color_jitter, color_jitter)] if color_jitter > 0 else []
    return crop + flip + jitter + (_normalize_to_chw(IMAGENET_MEAN, IMAGENET_STD) if normalize else [])


class PillowResizeCenterCrop:
    """An image -> uint8 (size, size, 3), as torchvision's ``Resize(resize)`` + ``CenterCrop(size)`` transform a
    PIL image.

    Takes RGB uint8 (H, W, 3) or encoded bytes (decoded to RGB with Pillow, :func:`src.data.decode.decode_image`);
    the shorter side becomes ``resize`` and the longer ``int(resize * long / short)`` (torchvision's rounding
    down), resampled with Pillow's bilinear filter, which antialiases when shrinking (MindSpore's ``Resize``
    samples 2x2 neighbours only); the crop starts at ``int(round((side - size) / 2))`` (Python's round half to
    even, as torchvision). ``interpolation`` ``bicubic`` resamples with Pillow's bicubic filter (timm, DeiT).
    """

    def __init__(self, resize: int, size: int, interpolation: str = "bilinear") -> None:
        from PIL import Image

        self.resize = int(resize)
        self.size = int(size)
        self.resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]

    def __call__(self, image_or_bytes: np.ndarray) -> np.ndarray:
        from PIL import Image

        pixels = image_or_bytes if image_or_bytes.ndim == 3 else decode_image(image_or_bytes)
        image = Image.fromarray(pixels)
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize, int(self.resize * long / short)
        new_size = (new_short, new_long) if width <= height else (new_long, new_short)
        pixels = np.asarray(image.resize(new_size, self.resample))
        top = int(round((pixels.shape[0] - self.size) / 2.0))
        left = int(round((pixels.shape[1] - self.size) / 2.0))
        return np.ascontiguousarray(pixels[top:top + self.size, left:left + self.size])


def imagenet_eval_operations(image_size: int, safe_decode: bool = True, resize_library: str = "mindspore",
                             decoded: bool = False, crop_pct: float = EVAL_CROP_FRACTION,
                             interpolation: str = "bilinear") -> list[Any]:
    """Encoded image bytes -> float32 (3, image_size, image_size): shorter side to size/crop_pct, centre crop.

    ``resize_library`` 'pillow' resizes and crops as torchvision does (:class:`PillowResizeCenterCrop`);
    ``decoded`` True takes RGB uint8 (H, W, 3) images instead of bytes (no decode step); ``crop_pct`` and
    ``interpolation`` are the modern recipe's options (module doc).
    """
    import mindspore.dataset.vision as vision

    if resize_library not in EVAL_RESIZE_LIBRARIES:
        raise ValueError(f"resize_library {resize_library!r}: use one of {', '.join(EVAL_RESIZE_LIBRARIES)}")
    if resize_library == "pillow":
        return [PillowResizeCenterCrop(eval_resize_size(image_size, crop_pct), image_size, interpolation)] + \
            _normalize_to_chw(IMAGENET_MEAN, IMAGENET_STD)
    decode = [] if decoded else [decode_image] if safe_decode else [vision.Decode()]
    resize = {} if interpolation == "bilinear" else {"interpolation": interpolation_mode(interpolation)}
    return decode + [vision.Resize(eval_resize_size(image_size, crop_pct), **resize), vision.CenterCrop(image_size)] \
        + _normalize_to_chw(IMAGENET_MEAN, IMAGENET_STD)


def cifar10_train_operations(image_size: int = CIFAR10_IMAGE_SIZE, hflip: bool = True) -> list[Any]:
    """uint8 (32, 32, 3) -> float32 (3, image_size, image_size): padded random crop, flip, normalise."""
    import mindspore.dataset.vision as vision

    operations = [vision.RandomCrop(CIFAR10_IMAGE_SIZE, padding=CIFAR10_PADDING)]
    operations += [vision.RandomHorizontalFlip()] if hflip else []
    return operations + _cifar10_resize(image_size) + _normalize_to_chw(CIFAR10_MEAN, CIFAR10_STD)


def cifar10_eval_operations(image_size: int = CIFAR10_IMAGE_SIZE) -> list[Any]:
    """uint8 (32, 32, 3) -> float32 (3, image_size, image_size): resize if needed, normalise."""
    return _cifar10_resize(image_size) + _normalize_to_chw(CIFAR10_MEAN, CIFAR10_STD)


def _cifar10_resize(image_size: int) -> list[Any]:
    import mindspore.dataset.vision as vision

    return [] if image_size == CIFAR10_IMAGE_SIZE else [vision.Resize((image_size, image_size))]


def label_operations() -> list[Any]:
    """Labels -> int32 (the loss and the metrics expect int32)."""
    import mindspore
    import mindspore.dataset.transforms as transforms

    return [transforms.TypeCast(mindspore.int32)]

"""Transforms against independent Pillow + numpy computations (the recipe of the original MindSpore code)."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from src.data import create_dataset
from src.data.decode import decode_image
from src.data.transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    cifar10_eval_operations,
    cifar10_train_operations,
    eval_resize_size,
    imagenet_train_operations,
)


def compose(operations):
    """Apply deterministic ``operations`` eagerly to one image."""
    import mindspore.dataset.transforms as transforms

    return transforms.Compose(operations)


def through_pipeline(operations, images: np.ndarray) -> np.ndarray:
    """Run ``operations`` over ``images`` (N, H, W, 3) in a pipeline (random ones draw afresh per image)."""
    import mindspore.dataset as ds

    dataset = ds.NumpySlicesDataset({"image": images}, shuffle=False).map(operations, input_columns="image")
    return np.stack([row["image"] for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1)])


def natural_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour ramps plus noise: uint8 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.stack([128 + 100 * np.sin(x / 5), 128 + 90 * np.cos(y / 4), 4 * (x + y)], axis=-1)
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str, **options) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def bilinear_resize(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with pixel-centre alignment and edge clamping (OpenCV INTER_LINEAR), float64."""

    def axis_weights(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
        low = np.floor(source).astype(int)
        frac = source - low
        frac[low < 0] = 0.0
        low[low < 0] = 0
        top = low >= size_in - 1
        frac[top] = 0.0
        low[top] = size_in - 1
        return low, np.minimum(low + 1, size_in - 1), frac

    image = image.astype(np.float64)
    r0, r1, fy = axis_weights(image.shape[0], out_h)
    rows = image[r0] * (1 - fy)[:, None, None] + image[r1] * fy[:, None, None]
    c0, c1, fx = axis_weights(image.shape[1], out_w)
    return rows[:, c0] * (1 - fx)[None, :, None] + rows[:, c1] * fx[None, :, None]


def expected_eval(image: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to int(size/0.875) (long side truncated), centre crop (offset floored), normalise, CHW."""
    height, width = image.shape[:2]
    short = eval_resize_size(size)
    if height <= width:
        out_h, out_w = short, int(short * width / height)
    else:
        out_h, out_w = int(short * height / width), short
    resized = np.rint(bilinear_resize(image, out_h, out_w))
    top, left = (out_h - size) // 2, (out_w - size) // 2
    crop = resized[top:top + size, left:left + size]
    return ((crop - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1)


def test_eval_resize_size_matches_the_recipe():
    assert eval_resize_size(224) == 256
    assert eval_resize_size(32) == 36


def test_decode_image_matches_mindspore_decode():
    import mindspore.dataset.vision as vision

    colour = natural_image(37, 45)
    samples = [encode(colour, "JPEG", quality=90), encode(colour, "JPEG", quality=75, subsampling=0),
               encode(colour, "PNG"), encode(colour[:, :, 0], "JPEG"),
               encode(np.dstack([colour, np.full(colour.shape[:2], 7, np.uint8)]), "PNG")]
    for encoded in samples:
        ours = decode_image(encoded)
        assert ours.dtype == np.uint8 and ours.shape == (37, 45, 3)
        np.testing.assert_array_equal(ours, vision.Decode()(encoded))
    np.testing.assert_array_equal(decode_image(samples[2]), colour)
    with pytest.raises(ValueError, match="cannot decode image"):
        decode_image(samples[0][: len(samples[0]) // 2])


@pytest.mark.parametrize("height,width,size", [(37, 45, 24), (50, 29, 16), (30, 30, 24)])
def test_eval_pipeline_matches_numpy(tmp_path, height, width, size):
    image = natural_image(height, width, seed=height)
    os.makedirs(tmp_path / "val" / "a")
    Image.fromarray(image).save(tmp_path / "val" / "a" / "x.png")
    bundle = create_dataset("imagenet", str(tmp_path), "val", batch_size=1, image_size=size, num_parallel_workers=1)
    (output, label), = bundle.dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
    assert output.shape == (1, 3, size, size) and output.dtype == np.float32 and label.tolist() == [0]
    expected = expected_eval(image, size)
    # one grey level of rounding in the fixed-point bilinear filter
    np.testing.assert_allclose(output[0], expected, atol=1.0 / min(IMAGENET_STD) + 1e-5)
    assert np.mean(np.abs(output[0] - expected)) < 0.2 / min(IMAGENET_STD)


def test_eval_pipeline_same_with_mindspore_decode(tmp_path):
    os.makedirs(tmp_path / "a")
    for k in range(3):
        with open(tmp_path / "a" / f"{k}.jpg", "wb") as handle:
            handle.write(encode(natural_image(40 + k, 33, seed=k), "JPEG", quality=85).tobytes())
    outputs = []
    for safe in (True, False):
        bundle = create_dataset("imagenet", str(tmp_path), "val", batch_size=3, image_size=24, safe_decode=safe)
        (images, _), = bundle.dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
        outputs.append(images)
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_train_pipeline_crops_flips_and_normalises(tmp_path):
    """A left-to-right ramp stays monotonic under any crop: increasing unflipped, decreasing flipped.

    (Eager random operations repeat one draw once a dataset seed is set, so this runs the pipeline.)
    """
    crop = [op for op in imagenet_train_operations(16) if type(op).__name__ == "RandomResizedCrop"][0]
    assert tuple(crop.scale) == (0.08, 1.0) and np.allclose(crop.ratio, (3 / 4, 4 / 3))
    ramp = np.repeat(np.repeat(np.linspace(0, 255, 64).astype(np.uint8)[None, :, None], 48, 0), 3, 2)
    os.makedirs(tmp_path / "train" / "a")
    for k in range(30):
        Image.fromarray(ramp).save(tmp_path / "train" / "a" / f"{k:02d}.png")
    bundle = create_dataset("imagenet", str(tmp_path), "train", batch_size=5, image_size=16, num_parallel_workers=2)
    increasing = decreasing = 0
    widths = set()
    for images, _ in bundle.dataset.create_tuple_iterator(output_numpy=True, num_epochs=1):
        assert images.shape == (5, 3, 16, 16) and images.dtype == np.float32
        pixels = images * np.array(IMAGENET_STD)[:, None, None] + np.array(IMAGENET_MEAN)[:, None, None]
        assert pixels.min() > -0.5 and pixels.max() < 255.5
        for profile in pixels[:, 0].mean(axis=1):
            steps = np.diff(profile)
            increasing += bool(np.all(steps >= -1e-3))
            decreasing += bool(np.all(steps <= 1e-3))
            widths.add(round(float(abs(profile[-1] - profile[0])), 1))
    assert increasing >= 5 and decreasing >= 5 and increasing + decreasing == 30
    assert len(widths) > 10  # crops of many sizes


def test_cifar10_eval_normalises_exactly():
    image = natural_image(32, 32)
    output = compose(cifar10_eval_operations(32))(image)
    expected = ((image - np.array(CIFAR10_MEAN)) / np.array(CIFAR10_STD)).transpose(2, 0, 1)
    assert output.shape == (3, 32, 32) and output.dtype == np.float32
    np.testing.assert_allclose(output, expected, rtol=1e-6, atol=1e-5)
    assert compose(cifar10_eval_operations(40))(image).shape == (3, 40, 40)


def test_cifar10_train_is_a_padded_crop_maybe_flipped():
    image = natural_image(32, 32, seed=5)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0))).astype(np.float64)
    windows = [padded[top:top + 32, left:left + 32] for top in range(9) for left in range(9)]
    candidates = np.stack(windows + [window[:, ::-1] for window in windows])
    outputs = through_pipeline(cifar10_train_operations(32), np.stack([image] * 20))
    assert outputs.shape == (20, 3, 32, 32) and outputs.dtype == np.float32
    flipped = 0
    matches = set()
    for output in outputs.astype(np.float64):
        pixels = output.transpose(1, 2, 0) * np.array(CIFAR10_STD) + np.array(CIFAR10_MEAN)
        errors = np.abs(candidates - pixels).reshape(len(candidates), -1).max(axis=1)
        match = int(np.argmin(errors))
        assert errors[match] < 1e-3
        flipped += match >= len(windows)
        matches.add(match % len(windows))
    assert 0 < flipped < 20 and len(matches) > 3


def test_train_augmentation_options_shape_the_operations():
    import mindspore.dataset.vision as vision

    from src.data.transforms import cifar10_train_operations, imagenet_train_operations

    default = imagenet_train_operations(32)
    assert any(isinstance(op, vision.RandomHorizontalFlip) for op in default)
    no_flip = imagenet_train_operations(32, crop_min_scale=0.5, hflip=False)
    assert not any(isinstance(op, vision.RandomHorizontalFlip) for op in no_flip)
    assert len(no_flip) == len(default) - 1
    assert not any(isinstance(op, vision.RandomHorizontalFlip) for op in cifar10_train_operations(32, hflip=False))


def test_min_crop_scale_reaches_the_crop_operation():
    import mindspore.dataset.vision as vision

    from src.data.transforms import imagenet_train_operations

    for safe_decode, kind in ((True, vision.RandomResizedCrop), (False, vision.RandomCropDecodeResize)):
        crop = next(op for op in imagenet_train_operations(32, safe_decode, crop_min_scale=0.3) if isinstance(op, kind))
        assert tuple(crop.scale) == (0.3, 1.0) and tuple(crop.ratio) == pytest.approx((3 / 4, 4 / 3))


# ---------------------------------------------------------------- eval_resize_library pillow (torchvision)

def triangle_resample_axis(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """Resample one axis with a triangle (bilinear) filter stretched by the shrink factor, as Pillow does:
    output pixel i is centred at (i + 0.5) * in/out and averages inputs within max(in/out, 1) of it."""
    in_size = image.shape[axis]
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        centre = (i + 0.5) * scale
        first = max(int(centre - stretch + 0.5), 0)
        last = min(int(centre + stretch + 0.5), in_size)
        taps = np.arange(first, last)
        w = np.clip(1.0 - np.abs((taps - centre + 0.5) / stretch), 0.0, None)
        weights[i, first:last] = w / w.sum()
    return np.moveaxis(np.tensordot(weights, np.moveaxis(image.astype(np.float64), axis, 0), axes=1), 0, axis)


def expected_torchvision_eval(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision Resize(int(size/0.875)) + CenterCrop(size) + ToTensor + Normalize on a PIL image:
    shorter side to 256, longer side int(256 * long / short); antialiased bilinear, horizontal pass first,
    rounded to 8 bits in between; crop offset int(round((side - size) / 2)) (round half to even)."""
    height, width = image.shape[:2]
    short = eval_resize_size(size)
    if width <= height:
        out_w, out_h = short, int(short * height / width)
    else:
        out_w, out_h = int(short * width / height), short
    rows = np.clip(np.rint(triangle_resample_axis(image, out_w, axis=1)), 0, 255)
    resized = np.clip(np.rint(triangle_resample_axis(rows, out_h, axis=0)), 0, 255)
    top, left = int(round((out_h - size) / 2.0)), int(round((out_w - size) / 2.0))
    crop = resized[top:top + size, left:left + size] / 255.0
    mean, std = np.array(IMAGENET_MEAN) / 255, np.array(IMAGENET_STD) / 255
    return ((crop - mean) / std).transpose(2, 0, 1)


@pytest.mark.parametrize("height,width", [(300, 419), (419, 301)])
def test_pillow_eval_resize_is_torchvisions(tmp_path, height, width):
    """eval_resize_library pillow: torchvision's resize + crop (within one grey level of Pillow's fixed point);
    MindSpore's Resize, which does not antialias, differs on the same stripes by far more."""
    y, x = np.mgrid[0:height, 0:width]
    stripes = np.stack([127 + 127 * np.sin(x * 2.1), 127 + 127 * np.cos(y * 1.7), (x * 7 + y * 3) % 256], -1)
    image = np.clip(stripes, 0, 255).astype(np.uint8)
    os.makedirs(tmp_path / "val" / "a")
    Image.fromarray(image).save(tmp_path / "val" / "a" / "x.png")
    outputs = {}
    for library in ("pillow", "mindspore"):
        bundle = create_dataset("imagenet", str(tmp_path), "val", batch_size=1, image_size=224,
                                num_parallel_workers=1, eval_resize_library=library)
        (output, _), = bundle.dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
        outputs[library] = output[0]
    expected = expected_torchvision_eval(image, 224)
    grey_level = 1.0 / min(IMAGENET_STD)
    assert outputs["pillow"].shape == expected.shape == (3, 224, 224)
    np.testing.assert_allclose(outputs["pillow"], expected, atol=grey_level + 1e-5)
    assert np.mean(np.abs(outputs["pillow"] - expected)) < 0.05 * grey_level
    assert np.mean(np.abs(outputs["mindspore"] - expected)) > 3 * grey_level


def test_unknown_eval_resize_library_is_refused():
    from src.data.transforms import imagenet_eval_operations

    with pytest.raises(ValueError, match="resize_library 'opencv'"):
        imagenet_eval_operations(224, resize_library="opencv")


@pytest.mark.parametrize("crop_pct, size", [(0.875, 24), (0.9, 20), (1.0, 16)])
def test_bicubic_eval_with_crop_pct_is_pillows_resize_and_centre_crop(tmp_path, crop_pct, size):
    """timm / DeiT evaluation: shorter side to floor(size / crop_pct) with Pillow's bicubic, centre crop."""
    image = natural_image(45, 37, seed=size)
    os.makedirs(tmp_path / "val" / "a")
    Image.fromarray(image).save(tmp_path / "val" / "a" / "x.png")
    bundle = create_dataset("imagenet", str(tmp_path), "val", batch_size=1, image_size=size, num_parallel_workers=1,
                            crop_pct=crop_pct, eval_interpolation="bicubic")
    (output, _), = bundle.dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
    short = int(size / crop_pct)
    assert eval_resize_size(size, crop_pct) == short
    out_w, out_h = short, int(short * 45 / 37)  # width is the shorter side
    resized = np.asarray(Image.fromarray(image).resize((out_w, out_h), Image.BICUBIC), np.float64)
    top, left = (out_h - size) // 2, (out_w - size) // 2
    crop = resized[top:top + size, left:left + size]
    expected = ((crop - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1)
    np.testing.assert_allclose(output[0], expected, atol=1e-4)


def test_recipe_train_options_shape_the_operations():
    import mindspore.dataset.vision as vision

    operations = imagenet_train_operations(32, interpolation="bicubic", color_jitter=0.4, normalize=False)
    crop = next(op for op in operations if isinstance(op, vision.RandomResizedCrop))
    assert crop.interpolation == vision.Inter.PILCUBIC
    jitter = next(op for op in operations if isinstance(op, vision.RandomColorAdjust))
    assert tuple(jitter.brightness) == pytest.approx((0.6, 1.4)) and tuple(jitter.saturation) == pytest.approx((0.6, 1.4))
    assert not any(isinstance(op, (vision.Normalize, vision.HWC2CHW)) for op in operations)
    default = imagenet_train_operations(32)
    assert next(op for op in default if isinstance(op, vision.RandomResizedCrop)).interpolation == vision.Inter.BILINEAR
    assert not any(isinstance(op, vision.RandomColorAdjust) for op in default)


@pytest.mark.parametrize("safe_decode", [True, False])
def test_random_train_interpolation_chooses_between_two_crops(safe_decode):
    import mindspore.dataset.transforms as transforms
    import mindspore.dataset.vision as vision

    operations = imagenet_train_operations(32, safe_decode, interpolation="random")
    choice = next(op for op in operations if isinstance(op, transforms.RandomChoice))
    kind = vision.RandomResizedCrop if safe_decode else vision.RandomCropDecodeResize
    assert [type(op) for op in choice.transforms] == [kind, kind]
    assert [op.interpolation for op in choice.transforms] == [vision.Inter.BILINEAR, vision.Inter.PILCUBIC]

"""The digits ImageFolder builder (scikit-learn's 1,797 real handwritten digits)."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from PIL import Image

from src.data.checks import scan_image_folder
from src.data.digits import build_digits_imagefolder
from src.errors import DropCovError

load_digits = pytest.importorskip("sklearn.datasets").load_digits


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    counts = build_digits_imagefolder(str(out), size=16, val_fraction=0.2, seed=0)
    return out, counts


def test_counts_are_complete_and_stratified(digits_folder):
    out, counts = digits_folder
    targets = load_digits().target
    assert counts["train"] + counts["val"] == 1797 and counts["val"] == 360
    per_class_total = np.bincount(targets, minlength=10)
    for digit in range(10):
        split = counts["per_class"][str(digit)]
        assert split["train"] + split["val"] == per_class_total[digit]
        assert abs(split["val"] - 0.2 * per_class_total[digit]) <= 1
    for name in ("train", "val"):
        listing = scan_image_folder(str(out / name))
        assert listing.class_names == tuple(str(d) for d in range(10))
        assert len(listing) == counts[name]


def test_files_hold_the_right_digit_upscaled(digits_folder):
    out, _ = digits_folder
    digits = load_digits()
    train = set(os.listdir(out / "train" / "3"))
    val = set(os.listdir(out / "val" / "3"))
    assert not train & val
    for name in sorted(train)[:5]:
        index = int(name.split(".")[0])
        assert digits.target[index] == 3
        with Image.open(out / "train" / "3" / name) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (16, 16)
            pixels = np.asarray(image).astype(np.float64)
        assert np.array_equal(pixels[..., 0], pixels[..., 2])
        # averaging 2x2 blocks back to 8x8 gives the original levels (0..16 scaled to 0..255)
        blocks = pixels[..., 0].reshape(8, 2, 8, 2).mean(axis=(1, 3))
        assert np.corrcoef(blocks.ravel(), digits.images[index].ravel())[0, 1] > 0.95


def test_refuses_a_non_empty_folder_unless_forced(tmp_path):
    (tmp_path / "keep.txt").write_text("user file")
    with pytest.raises(DropCovError, match="is not empty"):
        build_digits_imagefolder(str(tmp_path), size=8, val_fraction=0.5, seed=1)
    counts = build_digits_imagefolder(str(tmp_path), size=8, val_fraction=0.5, seed=1, force=True)
    assert counts["train"] + counts["val"] == 1797
    assert (tmp_path / "keep.txt").exists()
    with pytest.raises(DropCovError, match="--val-fraction must be between 0 and 1"):
        build_digits_imagefolder(str(tmp_path / "new"), size=8, val_fraction=1.5, seed=1)


def test_script_prints_counts(tmp_path, repo_root, capsys):
    spec = importlib.util.spec_from_file_location("make_digits_dataset",
                                                  repo_root / "scripts" / "make_digits_dataset.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(tmp_path / "out"), "--size", "8", "--val-fraction", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "1347 train + 450 val images" in out and "class 9:" in out
    assert script.main([str(tmp_path / "out")]) == 1
    assert "is not empty" in capsys.readouterr().err

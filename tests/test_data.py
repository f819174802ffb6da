"""Image-folder pipelines: split resolution, labels, sharding, evaluation coverage, bad data."""
from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.data import (
    create_dataset,
    pipeline_error_to_dropcov,
    pipeline_errors_as_dropcov,
    read_class_indices,
    resolve_split_folder,
    write_class_indices,
)
from src.data.bundle import capped_workers, eval_shard_bounds
from src.data.checks import scan_image_folder
from src.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from src.errors import DropCovError

MEAN = np.array(IMAGENET_MEAN, dtype=np.float64).reshape(1, 3, 1, 1)
STD = np.array(IMAGENET_STD, dtype=np.float64).reshape(1, 3, 1, 1)


def solid_png(path: str, identity: int, size: tuple[int, int] = (18, 22)) -> None:
    """A one-colour PNG whose red level (10 + identity) survives crops, resizes, flips and normalisation."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (size[1], size[0]), (10 + identity, 100, 200)).save(path)


def make_image_folder(root: str, images_per_class: dict[str, int]) -> list[str]:
    """Class folders of solid PNGs; returns the files in sorted (class, name) order, identity = position."""
    files = [os.path.join(root, name, f"{k:03d}.png") for name in sorted(images_per_class)
             for k in range(images_per_class[name])]
    for identity, path in enumerate(files):
        solid_png(path, identity)
    return files


def identities(dataset) -> tuple[list[int], list[int]]:
    """Image identities (recovered red level - 10) and labels, in the order the pipeline yields them."""
    ids, labels = [], []
    for images, batch_labels in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1):
        assert images.dtype == np.float32 and batch_labels.dtype == np.int32
        pixels = images.astype(np.float64) * STD + MEAN
        red = np.rint(pixels[:, 0].reshape(len(images), -1))
        assert np.all(red == red[:, :1]), "solid images must stay solid"
        ids.extend(int(value) - 10 for value in red[:, 0])
        labels.extend(int(label) for label in batch_labels)
    return ids, labels


# ---------------------------------------------------------------------------------------- layout, labels


def test_resolve_split_folder_root_direct_and_override(tmp_path):
    root = tmp_path / "data"
    make_image_folder(str(root / "train"), {"a": 1})
    make_image_folder(str(root / "val"), {"a": 1})
    assert resolve_split_folder(str(root), "train") == str(root / "train")
    assert resolve_split_folder(str(root), "val") == str(root / "val")
    direct = tmp_path / "classes"
    make_image_folder(str(direct), {"a": 1, "b": 1})
    assert resolve_split_folder(str(direct), "train") == str(direct)
    assert resolve_split_folder(str(direct), "val") == str(direct)
    assert resolve_split_folder(str(root), "val", eval_dataset_path=str(direct)) == str(direct)


def test_labels_are_sorted_folder_indices(tmp_path):
    counts = {"b": 2, "a": 1, "C": 2, "10": 1, "2": 1}
    files = make_image_folder(str(tmp_path / "val"), counts)
    listing = scan_image_folder(str(tmp_path / "val"))
    assert listing.class_names == ("10", "2", "C", "a", "b")  # plain string order
    bundle = create_dataset("imagenet", str(tmp_path), "val", batch_size=3, image_size=8, num_parallel_workers=2)
    assert bundle.class_names == listing.class_names
    ids, labels = identities(bundle.dataset)
    expected = [listing.class_names.index(os.path.basename(os.path.dirname(files[i]))) for i in ids]
    assert labels == expected
    assert list(bundle.files) == files


def test_class_indices_round_trip(tmp_path):
    names = ["n01440764", "n01443537", "zebra"]
    written = write_class_indices(str(tmp_path), names)
    assert os.path.basename(written) == "class_indices.json"
    with open(written, encoding="utf-8") as handle:
        assert json.load(handle) == {"0": "n01440764", "1": "n01443537", "2": "zebra"}
    assert read_class_indices(written) == names
    (tmp_path / "bad.json").write_text('{"0": "a", "2": "b"}')
    with pytest.raises(DropCovError, match="bad.json must map every index"):
        read_class_indices(str(tmp_path / "bad.json"))
    (tmp_path / "broken.json").write_text('{"0": ')
    with pytest.raises(DropCovError, match=r"broken.json is not valid JSON \(line 1"):
        read_class_indices(str(tmp_path / "broken.json"))


# ---------------------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("total,num_shards", [(10, 3), (9, 3), (7, 2)])
def test_training_shards_cover_everything_with_only_the_padding_repeated(tmp_path, total, num_shards):
    make_image_folder(str(tmp_path / "train"), {"a": total // 2, "b": total - total // 2})
    shards = []
    for shard_id in range(num_shards):
        bundle = create_dataset("imagenet", str(tmp_path), "train", batch_size=1, image_size=8,
                                num_parallel_workers=2, num_shards=num_shards, shard_id=shard_id, seed=3)
        ids, _ = identities(bundle.dataset)
        assert len(ids) == bundle.num_images == math.ceil(total / num_shards) == bundle.steps_per_epoch
        assert bundle.total_images == total
        shards.append(ids)
    everything = [i for ids in shards for i in ids]
    assert set(everything) == set(range(total))
    # MindSpore's DistributedSampler pads the shards to equal size by repeating samples: exactly the excess.
    assert len(everything) - total == math.ceil(total / num_shards) * num_shards - total
    assert all(len(set(ids)) == len(ids) for ids in shards)


def test_training_is_shuffled_and_drops_the_last_partial_batch(tmp_path):
    make_image_folder(str(tmp_path / "train"), {"a": 6, "b": 5})
    bundle = create_dataset("imagenet", str(tmp_path), "train", batch_size=4, image_size=8, num_parallel_workers=2)
    ids, _ = identities(bundle.dataset)
    assert bundle.steps_per_epoch == 2 and len(ids) == 8
    assert ids != sorted(ids)
    with pytest.raises(DropCovError, match="batch_size 12 exceeds the 11 training images"):
        create_dataset("imagenet", str(tmp_path), "train", batch_size=12, image_size=8)


@pytest.mark.parametrize("num_shards", [1, 2, 3])
def test_evaluation_scores_every_image_once_in_order(tmp_path, num_shards):
    total = 11
    files = make_image_folder(str(tmp_path / "val"), {"x": 4, "y": 7})
    for batch_size in (1, 3, 7, total + 5):
        seen, seen_files = [], []
        for shard_id in range(num_shards):
            bundle = create_dataset("imagenet", str(tmp_path), "val", batch_size=batch_size, image_size=8,
                                    num_parallel_workers=2, num_shards=num_shards, shard_id=shard_id)
            ids, labels = identities(bundle.dataset)
            assert len(ids) == bundle.num_images
            assert bundle.steps_per_epoch == math.ceil(bundle.num_images / batch_size)
            assert labels == [0 if i < 4 else 1 for i in ids]
            seen.extend(ids)
            seen_files.extend(bundle.files)
        assert seen == list(range(total)), (batch_size, num_shards)
        assert seen_files == files


def test_eval_shard_bounds_partition_any_count():
    for total in (0, 1, 5, 50000):
        for num_shards in (1, 2, 3, 7, 8):
            bounds = [eval_shard_bounds(total, num_shards, rank) for rank in range(num_shards)]
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_more_ranks_than_images_gives_empty_shards(tmp_path):
    make_image_folder(str(tmp_path / "val"), {"a": 2})
    bundles = [create_dataset("imagenet", str(tmp_path), "val", 4, 8, num_shards=3, shard_id=r) for r in range(3)]
    assert [bundle.num_images for bundle in bundles] == [0, 1, 1]
    assert [identities(bundle.dataset)[0] for bundle in bundles] == [[], [0], [1]]  # the empty one iterates


def test_workers_capped_at_core_count(caplog):
    cores = os.cpu_count() or 1
    assert capped_workers(1) == 1
    with caplog.at_level("INFO", logger="src.data.bundle"):
        assert capped_workers(cores + 5) == cores
    assert "capped" in caplog.text
    with pytest.raises(DropCovError, match="num_parallel_workers must be at least 1"):
        capped_workers(0)


# ---------------------------------------------------------------------------------------- bad data


def bad_layout(tmp_path, case: str) -> tuple[str, str]:
    """Build one broken dataset; returns (data_path, the path the message must name)."""
    root = tmp_path / "data"
    if case == "missing root":
        return str(root), str(root)
    make_image_folder(str(root / "train"), {"a": 2, "b": 2})
    if case == "missing val":
        return str(root), str(root)
    make_image_folder(str(root / "val"), {"a": 1})
    if case == "no class folders":
        for path in (root / "val" / "a").iterdir():
            path.unlink()
        (root / "val" / "a").rmdir()
        return str(root), str(root / "val")
    if case == "empty class folder":
        (root / "val" / "b").mkdir()
        return str(root), str(root / "val" / "b")
    if case == "only non-image files":
        (root / "val" / "b").mkdir()
        (root / "val" / "b" / "notes.txt").write_text("not an image")
        (root / "val" / "b" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        return str(root), str(root / "val" / "b")
    if case == "link loop class":
        os.symlink("loop", root / "val" / "loop")
        return str(root), str(root / "val" / "loop")
    if case == "class links back to split":
        os.symlink(".", root / "val" / "loop")
        return str(root), str(root / "val" / "loop")
    if case == "only a sub-folder":
        solid_png(str(root / "val" / "b" / "deeper" / "x.png"), 0)
        return str(root), str(root / "val" / "b")
    if case == "link loop image":
        os.symlink("x.jpg", root / "val" / "a" / "x.jpg")
        return str(root), str(root / "val" / "a" / "x.jpg")
    if case == "link loop split":
        shutil.rmtree(root / "val")
        os.symlink("val", root / "val")
        return str(root), str(root / "val")
    if case == "broken link":
        os.symlink(str(tmp_path / "gone.jpg"), root / "val" / "a" / "gone.jpg")
        return str(root), str(root / "val" / "a" / "gone.jpg")
    if case == "non-image content":
        (root / "val" / "a" / "fake.jpg").write_text("<html>not an image</html>")
        return str(root), str(root / "val" / "a" / "fake.jpg")
    if case == "empty file":
        (root / "val" / "a" / "zero.png").write_bytes(b"")
        return str(root), str(root / "val" / "a" / "zero.png")
    raise AssertionError(case)


@pytest.mark.parametrize("case,message", [
    ("missing root", "does not exist"),
    ("missing val", "missing val/ in"),
    ("no class folders", "no class folders in"),
    ("empty class folder", "is empty"),
    ("only non-image files", "holds no image, only 1 other file(s)"),
    ("link loop class", "is a symbolic link loop"),
    ("class links back to split", "(a loop): remove the link"),
    ("only a sub-folder", "holds no image, only 1 sub-folder(s) (not searched)"),
    ("link loop image", "is a symbolic link loop"),
    ("link loop split", "is a symbolic link loop"),
    ("broken link", "is a broken symbolic link"),
    ("non-image content", "is not a JPEG, PNG or BMP image"),
    ("empty file", "is an empty file"),
])
def test_bad_data_is_caught_before_the_pipeline_runs(tmp_path, case, message):
    data_path, named = bad_layout(tmp_path, case)
    with pytest.raises(DropCovError) as caught:
        create_dataset("imagenet", data_path, "val", batch_size=2, image_size=8)
    text = str(caught.value)
    assert message in text and named in text and "\n" not in text


def test_bad_arguments_name_the_value(tmp_path):
    make_image_folder(str(tmp_path / "val"), {"a": 2})
    with pytest.raises(DropCovError, match="unknown dataset 'mnist'"):
        create_dataset("mnist", str(tmp_path), "val", 2, 8)
    with pytest.raises(DropCovError, match="unknown dataset split 'test'"):
        create_dataset("imagenet", str(tmp_path), "test", 2, 8)
    with pytest.raises(DropCovError, match="shard_id 2 is outside"):
        create_dataset("imagenet", str(tmp_path), "val", 2, 8, num_shards=2, shard_id=2)
    with pytest.raises(DropCovError, match="batch_size must be at least 1"):
        create_dataset("imagenet", str(tmp_path), "val", 0, 8)


def jpeg_bytes(seed: int, size: int = 40) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("cut", ["inside the image data", "inside the headers"])
def test_corrupt_jpeg_stops_the_run_naming_the_file_and_leaves_no_files(tmp_path, monkeypatch, cut):
    monkeypatch.chdir(tmp_path)
    for k in range(4):
        os.makedirs(f"data/val/c{k % 2}", exist_ok=True)
        with open(f"data/val/c{k % 2}/{k}.jpg", "wb") as handle:
            handle.write(jpeg_bytes(k))
    good = jpeg_bytes(9)
    # Cut inside the headers is the file that kills MindSpore's own decoder with SIGFPE.
    broken = good[: int(len(good) * 0.7)] if cut == "inside the image data" else good[:300]
    bad_path = os.path.join("data", "val", "c1", "broken.jpg")
    with open(bad_path, "wb") as handle:
        handle.write(broken)
    before = sorted(os.listdir(tmp_path))
    bundle = create_dataset("imagenet", "data", "val", batch_size=2, image_size=16, num_parallel_workers=2)
    with pytest.raises(DropCovError) as caught, pipeline_errors_as_dropcov():
        for _ in bundle.dataset.create_tuple_iterator(num_epochs=1):
            pass
    text = str(caught.value)
    assert bad_path in text and "cannot decode" not in text and "\n" not in text
    assert "truncated" in text or "broken" in text or "Error" in text
    assert sorted(os.listdir(tmp_path)) == before


def test_mindspore_decode_dump_is_removed(tmp_path, monkeypatch):
    """With MindSpore's own Decode (safe_decode=False) a bad JPEG makes it write ./abnormal_image.jpg.

    MindSpore's decode operations do not know the file they were given: the one line gives their reason
    and points at verify_dataset (safe_decode=True names the file, see the test above)."""
    monkeypatch.chdir(tmp_path)
    os.makedirs("data/val/a")
    with open("data/val/a/good.jpg", "wb") as handle:
        handle.write(jpeg_bytes(1))
    with open("data/val/a/zeros.jpg", "wb") as handle:
        handle.write(b"\xff\xd8\xff\xe0" + bytes(500))  # JPEG magic, then nothing decodable
    bundle = create_dataset("imagenet", "data", "val", batch_size=1, image_size=16, safe_decode=False)
    with pytest.raises(DropCovError) as caught, pipeline_errors_as_dropcov():
        for _ in bundle.dataset.create_tuple_iterator(num_epochs=1):
            pass
    text = str(caught.value)
    assert text.startswith("data pipeline failed: map operation: [Decode] failed.") and "\n" not in text
    assert "abnormal" not in text and "verify_dataset" in text
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_pipeline_error_helper_parses_mindspore_messages(tmp_path, monkeypatch):
    """The path of image_file_error survives MindSpore's report whatever its characters."""
    from src.data.decode import image_file_error

    monkeypatch.chdir(tmp_path)
    bad = tmp_path / 'my dir. v2 "quoted": x' / "img.1.jpg"
    (tmp_path / "abnormal_image.jpg").write_bytes(b"x")
    raised = image_file_error(str(bad), ValueError("cannot decode image: UnidentifiedImageError: cannot identify"))
    message = ("Exception thrown from user defined Python function in dataset. \n\nTraceback (most recent call "
               f"last):\n  File \"x.py\", line 5, in __getitem__\nValueError: {raised}\n\n- Dataset Pipeline Error "
               "Message: \n[ERROR] Execute user Python code failed. Dump the abnormal image to "
               "[./abnormal_image.jpg].\n")
    converted = pipeline_error_to_dropcov(RuntimeError(message))
    assert str(converted).startswith(f"bad image {bad}: UnidentifiedImageError: cannot identify; remove or")
    assert not (tmp_path / "abnormal_image.jpg").exists()
    unreadable = image_file_error("/data/a.jpg", PermissionError(13, "Permission denied"))
    converted = pipeline_error_to_dropcov(RuntimeError(f"Exception thrown from dataset pipeline\n{unreadable}"))
    assert str(converted).startswith("bad image /data/a.jpg: Permission denied;")
    assert pipeline_error_to_dropcov(RuntimeError("For 'MatMul', shapes do not match")) is None
    with pytest.raises(RuntimeError, match="MatMul"), pipeline_errors_as_dropcov():
        raise RuntimeError("For 'MatMul', shapes do not match")


# ---------------------------------------------------------------------------------------- real-world folders


def test_hidden_and_os_files_are_skipped_and_other_files_said_once(tmp_path, caplog):
    """Hidden names and OS leftovers are neither images nor classes; other non-images: one warning line."""
    files = make_image_folder(str(tmp_path / "train"), {"a": 2, "b": 2})
    a = tmp_path / "train" / "a"
    (a / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (a / "._000.png").write_bytes(b"\0\5\26\7" + bytes(60))  # a resource fork with an image extension
    (a / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (a / "desktop.ini").write_text("[.ShellClassInfo]")
    (a / "notes.txt").write_text("by hand")
    (a / "labels.csv").write_text("x,y")
    for hidden in (".ipynb_checkpoints", "__MACOSX"):
        solid_png(str(tmp_path / "train" / hidden / "copy.png"), 0)
    with caplog.at_level(logging.INFO):
        bundle = create_dataset("imagenet", str(tmp_path), "train", batch_size=1, image_size=8,
                                num_parallel_workers=2)
    assert bundle.class_names == ("a", "b") and bundle.total_images == 4
    ids, labels = identities(bundle.dataset)
    assert sorted(ids) == [0, 1, 2, 3] and sorted(zip(ids, labels)) == [(0, 0), (1, 0), (2, 1), (3, 1)]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"skipped 2 file(s) of {tmp_path / 'train'} without an image extension")
    assert str(a / "labels.csv") in warnings[0] and str(a / "notes.txt") in warnings[0]
    assert "DS_Store" not in warnings[0] and "verify_dataset" in warnings[0]
    assert scan_image_folder(str(tmp_path / "train")).files == tuple(files)


def test_images_in_sub_folders_of_class_folders_are_named_in_one_warning(tmp_path, caplog):
    """ImageNet's class folders hold images only; a nested folder is not searched, and the user is told."""
    files = make_image_folder(str(tmp_path / "train"), {"a": 2, "b": 1})
    solid_png(str(tmp_path / "train" / "a" / "more" / "deep.png"), 9)
    with caplog.at_level(logging.INFO):
        bundle = create_dataset("imagenet", str(tmp_path), "train", batch_size=1, image_size=8)
    assert bundle.total_images == 3 and scan_image_folder(str(tmp_path / "train")).files == tuple(files)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"skipped 1 sub-folder(s) of the class folders of {tmp_path / 'train'} "
                                  "(not searched")
    assert str(tmp_path / "train" / "a" / "more") + os.sep in warnings[0]


def test_real_world_image_files_go_through_the_pipelines(tmp_path):
    """CMYK and greyscale JPEGs, a PNG named .JPEG, upper-case extensions, palette and RGBA PNGs."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    folder = tmp_path / "train" / "mixed"
    folder.mkdir(parents=True)
    rgb.convert("CMYK").save(folder / "cmyk.jpg", "JPEG")
    rgb.convert("L").save(folder / "grey.JPG", "JPEG")
    rgb.save(folder / "png_named.JPEG", "PNG")
    rgb.convert("P").save(folder / "palette.PNG")
    rgb.convert("RGBA").save(folder / "alpha.png")
    rgb.save(folder / "plain.Bmp")
    shutil.copytree(tmp_path / "train", tmp_path / "val")
    for split in ("train", "val"):
        bundle = create_dataset("imagenet", str(tmp_path), split, batch_size=2, image_size=16, num_parallel_workers=2)
        images = np.concatenate([batch[0] for batch in bundle.dataset.create_tuple_iterator(output_numpy=True)])
        assert images.shape == (6, 3, 16, 16) and np.isfinite(images).all()
    assert [os.path.basename(path) for path in bundle.files] == sorted(os.listdir(folder))
    grey = images[[os.path.basename(path) for path in bundle.files].index("grey.JPG")] * STD[0] + MEAN[0]
    assert np.allclose(grey[0], grey[1], atol=1e-3) and np.allclose(grey[0], grey[2], atol=1e-3)


def test_training_order_is_image_folder_datasets(tmp_path):
    """Under one seed, the shuffle and shards are those of MindSpore's ImageFolderDataset on a clean folder."""
    import mindspore.dataset as ds

    files = make_image_folder(str(tmp_path / "train"), {"a": 4, "b": 3, "c": 3})
    identity = {Path(path).read_bytes(): position for position, path in enumerate(files)}
    class_indexing = {"a": 0, "b": 1, "c": 2}
    for num_shards in (1, 3):
        for shard_id in range(num_shards):
            bundle = create_dataset("imagenet", str(tmp_path), "train", batch_size=1, image_size=8, seed=5,
                                    num_parallel_workers=2, num_shards=num_shards, shard_id=shard_id)
            ds.config.set_seed(5)
            ours, _ = identities(bundle.dataset.repeat(2))
            ds.config.set_seed(5)
            folder = ds.ImageFolderDataset(str(tmp_path / "train"), shuffle=True, num_shards=num_shards,
                                           shard_id=shard_id, class_indexing=class_indexing).repeat(2)
            theirs = [identity[image.tobytes()] for image, _ in folder.create_tuple_iterator(output_numpy=True)]
            assert ours == theirs, (num_shards, shard_id)


# ---------------------------------------------------------------------------------------- training classes


def test_validation_labels_are_the_training_classes(tmp_path, caplog):
    """A val/ lacking a class keeps the training labels; a class training does not know is an error."""
    make_image_folder(str(tmp_path / "val"), {"b": 2, "c": 1})
    with caplog.at_level(logging.INFO):
        bundle = create_dataset("imagenet", str(tmp_path), "val", 2, 8, class_names=["a", "b", "c"])
    ids, labels = identities(bundle.dataset)
    assert ids == [0, 1, 2] and labels == [1, 1, 2]
    assert bundle.class_names == ("a", "b", "c")
    said = [record.getMessage() for record in caplog.records if "training classes" in record.getMessage()]
    assert said == [f"{tmp_path / 'val'} has no images of 1 of the 3 training classes (a): they are not scored"]
    with pytest.raises(DropCovError) as caught:
        create_dataset("imagenet", str(tmp_path), "val", 2, 8, class_names=["b", "x"])
    assert str(caught.value).startswith(f"class folder {tmp_path / 'val' / 'c'} is not a training class; the "
                                        "network knows 2 classes (b, x)")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _, labels = identities(create_dataset("imagenet", str(tmp_path), "val", 2, 8).dataset)
    assert labels == [0, 0, 1]
    assert [record.getMessage() for record in caplog.records] == [
        f"labels of {tmp_path / 'val'} are its own sorted class folders: this assumes it holds every training "
        "class, in order (no class_indices.json of the checkpoint's run, no train/ folder to read the training "
        "classes from)"]


def test_training_classes_come_from_the_run_then_the_train_folder(tmp_path):
    from src.data.labels import TrainingClasses, find_run_class_indices, find_training_classes

    data = tmp_path / "data"
    make_image_folder(str(data / "train"), {"cat": 1, "dog": 1})
    (data / "train" / ".ipynb_checkpoints").mkdir()
    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "net-1_1.ckpt"
    checkpoint.parent.mkdir(parents=True)
    assert find_training_classes(checkpoint, str(data)).names == ("cat", "dog")
    assert find_training_classes(checkpoint, str(data)).source == str(data / "train")
    assert find_training_classes(checkpoint, str(tmp_path / "nothing")) is None
    assert find_training_classes("", "") is None
    write_class_indices(str(run), ["n0", "n1", "n2"])
    assert find_run_class_indices(checkpoint) == str(run / "class_indices.json")
    assert find_training_classes(checkpoint, str(data)).names == ("n0", "n1", "n2")
    write_class_indices(str(checkpoint.parent), ["beside"])
    beside = str(checkpoint.parent / "class_indices.json")
    assert find_training_classes(checkpoint, str(data)) == TrainingClasses(("beside",), beside)
    os.symlink("loop", data / "train" / "loop")
    with pytest.raises(DropCovError, match="loop is a symbolic link loop"):
        find_training_classes(tmp_path / "elsewhere.ckpt", str(data))


def test_training_split_can_be_labelled_by_a_runs_classes(tmp_path, caplog):
    """Resuming a run: train/ is labelled by the run's classes, a class it lost is said, a new one is an error."""
    make_image_folder(str(tmp_path / "train"), {"a": 1, "c": 2})
    with caplog.at_level(logging.INFO):
        bundle = create_dataset("imagenet", str(tmp_path), "train", 1, 8, class_names=["a", "b", "c"])
    ids, labels = identities(bundle.dataset)
    assert sorted(zip(ids, labels)) == [(0, 0), (1, 2), (2, 2)]
    assert "has no images of 1 of the 3 training classes (b): they are not trained" in caplog.text
    with pytest.raises(DropCovError, match="class folder .*train/c is not a training class"):
        create_dataset("imagenet", str(tmp_path), "train", 1, 8, class_names=["a", "b"])

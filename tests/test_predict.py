"""predict: image loading with the eval transform, top-k, class names, CSV/JSON output, predict.py end to end."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from src.data import write_class_indices
from src.engine.predict import (
    CSV_COLUMNS,
    Prediction,
    check_class_names,
    collect_images,
    eval_image_transform,
    find_class_names,
    format_table,
    load_image,
    read_class_names,
    softmax,
    top_k,
    write_predictions,
)
from src.errors import DropCovError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "config" / "resnet18_imagenet2012_config.yaml"
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def test_softmax_and_top_k_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7))
    probabilities = softmax(logits)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-12)
    indices, values = top_k(probabilities, 4)
    for row in range(3):
        np.testing.assert_array_equal(indices[row], np.argsort(-expected[row])[:4])
        np.testing.assert_allclose(values[row], np.sort(expected[row])[::-1][:4])
    assert top_k(probabilities, 100)[0].shape == (3, 7)  # k is capped at the class count
    ties, _ = top_k(np.array([[0.25, 0.5, 0.25, 0.0]]), 3)
    assert ties.tolist() == [[1, 0, 2]]  # equal values: lower index first


def test_softmax_is_stable_for_large_logits():
    probabilities = softmax(np.array([[1000.0, 999.0, -1000.0]]))
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities[0, :2], [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))])


PREDICTIONS = [Prediction("a/cat.png", (3, 0, 2), (0.6, 0.25, 0.1)),
               Prediction("b/dog.jpg", (1, 3, 0), (0.9, 0.05, 0.03))]
NAMES = {0: "zero", 1: "one", 2: "two", 3: "three"}


def test_csv_output_columns_and_order(tmp_path):
    path = write_predictions(PREDICTIONS, tmp_path / "out" / "p.csv", NAMES)
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == CSV_COLUMNS == ("image", "rank", "class_index", "class_name", "probability")
    assert [(r["image"], int(r["rank"]), int(r["class_index"]), r["class_name"]) for r in rows[:3]] == [
        ("a/cat.png", 1, 3, "three"), ("a/cat.png", 2, 0, "zero"), ("a/cat.png", 3, 2, "two")]
    for image in ("a/cat.png", "b/dog.jpg"):
        values = [float(r["probability"]) for r in rows if r["image"] == image]
        assert values == sorted(values, reverse=True) and sum(values) <= 1.0


def test_json_output_structure(tmp_path):
    path = write_predictions(PREDICTIONS, tmp_path / "p.json")
    records = json.loads(path.read_text())
    assert [r["image"] for r in records] == ["a/cat.png", "b/dog.jpg"]
    first = records[1]["top_k"]
    assert [entry["rank"] for entry in first] == [1, 2, 3]
    assert [entry["class_index"] for entry in first] == [1, 3, 0]
    assert all(entry["class_name"] == "" for entry in first)  # no names: indices only
    assert first[0]["probability"] == pytest.approx(0.9)


def test_output_needs_csv_or_json_extension(tmp_path):
    with pytest.raises(DropCovError, match=r"\.csv or \.json"):
        write_predictions(PREDICTIONS, tmp_path / "p.txt")


def test_table_lists_every_rank_with_names():
    table = format_table(PREDICTIONS, NAMES)
    lines = table.splitlines()
    assert len(lines) == 2 + 6
    assert "a/cat.png" in lines[2] and "three" in lines[2] and "60.00%" in lines[2]
    assert "one" in lines[5] and "90.00%" in lines[5]


def test_class_name_files(tmp_path):
    written = write_class_indices(str(tmp_path / "class_indices.json"), ["cat", "dog"])
    assert read_class_names(written) == {0: "cat", 1: "dog"}
    (tmp_path / "by_name.json").write_text(json.dumps({"dog": 1, "cat": 0}))
    assert read_class_names(tmp_path / "by_name.json") == {0: "cat", 1: "dog"}
    (tmp_path / "list.json").write_text(json.dumps(["cat", "dog"]))
    assert read_class_names(tmp_path / "list.json") == {0: "cat", 1: "dog"}
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    assert read_class_names(tmp_path / "names.txt") == {0: "cat", 1: "dog"}
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DropCovError, match="broken.json: invalid JSON at line 1"):
        read_class_names(tmp_path / "broken.json")
    with pytest.raises(DropCovError, match="missing.txt does not exist"):
        read_class_names(tmp_path / "missing.txt")


def test_class_names_search_order(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = run / "checkpoints" / "best.ckpt"
    data = tmp_path / "data"
    val = data / "val"
    for name in ("b_class", "a_class", ".ipynb_checkpoints"):
        (val / name).mkdir(parents=True)
    found = find_class_names(checkpoint, "", str(data), val)
    assert found.names == {0: "a_class", 1: "b_class"} and found.source == str(val)
    assert found.warning.startswith(f"labels of {val} are its own sorted class folders: this assumes")
    for name in ("t1", "t0"):
        (data / "train" / name).mkdir(parents=True)
    assert find_class_names(checkpoint, "", str(data), val) == ({0: "t0", 1: "t1"}, str(data / "train"), None)
    write_class_indices(str(run / "class_indices.json"), ["run0", "run1"])
    assert find_class_names(checkpoint, "", str(data), val).names == {0: "run0", 1: "run1"}
    write_class_indices(str(run / "checkpoints" / "class_indices.json"), ["beside0"])
    assert find_class_names(checkpoint, "", str(data), val).names == {0: "beside0"}
    (tmp_path / "mine.txt").write_text("x\ny\n")
    mine = find_class_names(checkpoint, str(tmp_path / "mine.txt"), str(data), val)
    assert mine == ({0: "x", 1: "y"}, f"--class_names_file {tmp_path / 'mine.txt'}", None)
    assert find_class_names(tmp_path / "other" / "c.ckpt", "", "", tmp_path / "nothing") == (None, "", None)


@pytest.mark.parametrize("count, outputs, explicit, fragment", [
    (1000, 1001, True, None),  # the published ImageNet layout: the last output is never a target
    (1001, 1001, True, None),
    (3, 10, False, None),  # a run's own classes: train.py allows more outputs than classes
    (3, 10, True, "has 3 names but the network has 10 outputs (class_num 10)"),
    (998, 1000, True, "has 998 names but the network has 1000 outputs (class_num 1000)"),
    (12, 10, False, "has 12 names (up to index 11) but the network has 10 outputs (class_num 10)"),
])
def test_class_names_must_fit_the_outputs(count, outputs, explicit, fragment):
    names = {index: f"c{index}" for index in range(count)}
    if fragment is None:
        check_class_names(names, "SOURCE", outputs, explicit)
    else:
        with pytest.raises(DropCovError) as caught:
            check_class_names(names, "SOURCE", outputs, explicit)
        assert str(caught.value).startswith(f"SOURCE {fragment}")
    gappy = {0: "a", 2: "c"}
    with pytest.raises(DropCovError, match="has 2 names \\(none for index 1\\) but the network has 3 outputs"):
        check_class_names(gappy, "SOURCE", 3, explicit=True)


def test_explicit_names_must_name_every_class_of_the_run(tmp_path):
    """The all-but-the-last allowance is for the published 1001-output layout: when the checkpoint's run
    says it trained 3 classes, a names file with 2 leaves a real class unnamed and is refused."""
    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    write_class_indices(str(run / "class_indices.json"), ["a", "b", "c"])
    two, three = tmp_path / "two.txt", tmp_path / "three.txt"
    two.write_text("x\ny\n")
    three.write_text("x\ny\nz\n")
    with pytest.raises(DropCovError) as caught:
        find_class_names(checkpoint, str(two), "", "", num_outputs=3)
    assert str(caught.value) == (f"--class_names_file {two} has 2 names but the checkpoint was trained on 3 "
                                 f"classes ({run / 'class_indices.json'}): give a name for each of them")
    assert find_class_names(checkpoint, str(three), "", "", num_outputs=3).names == {0: "x", 1: "y", 2: "z"}
    unknown_run = tmp_path / "published.ckpt"  # no class_indices.json: the K-1 allowance applies
    assert find_class_names(unknown_run, str(two), "", "", num_outputs=3).names == {0: "x", 1: "y"}


def test_collect_images(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    (tmp_path / "imgs" / ".ipynb_checkpoints").mkdir()
    for name in ("b.png", "a.JPG", "sub/c.jpeg", "notes.txt", "._b.png", ".ipynb_checkpoints/b.png"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    found = collect_images([tmp_path / "imgs"])
    assert [p.relative_to(tmp_path / "imgs").as_posix() for p in found] == ["a.JPG", "b.png", "sub/c.jpeg"]
    assert collect_images([tmp_path / "imgs" / "notes.txt"]) == [tmp_path / "imgs" / "notes.txt"]
    with pytest.raises(DropCovError, match="nope.jpg does not exist"):
        collect_images([tmp_path / "nope.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DropCovError, match="holds no image files"):
        collect_images([tmp_path / "empty"])


def test_image_gets_the_eval_transform(tmp_path):
    colour = (200, 30, 90)
    Image.new("RGB", (50, 41), colour).save(tmp_path / "flat.png")
    image = load_image(tmp_path / "flat.png", eval_image_transform(32))
    assert image.shape == (3, 32, 32) and image.dtype == np.float32
    expected = (np.asarray(colour, np.float32) - MEAN) / STD
    np.testing.assert_allclose(image, np.broadcast_to(expected[:, None, None], image.shape), rtol=1e-6)


@pytest.mark.parametrize("content, reason", [
    (b"", "is empty (0 bytes)"),
    (b"this is text, not an image", "cannot be decoded as an image (unrecognised image format)"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "cannot be decoded as an image (Truncated File Read)"),
])
def test_bad_image_is_one_line_naming_the_file(tmp_path, content, reason):
    """The reason is read out of the decoder's message: if an upgrade of Pillow or MindSpore rewords it,
    this fails (rather than the user seeing a traceback's last line)."""
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(DropCovError) as caught:
        load_image(path, eval_image_transform(32))
    message = str(caught.value)
    assert message == f"image {path} {reason}; remove it or pass another file"


@pytest.mark.slow
def test_predict_script_end_to_end(tmp_path):
    """fc weight 0 and a crafted bias: every image's probabilities are softmax(bias), whatever the image;
    names come from the class_indices.json in the checkpoint's run folder."""
    from src.models import create_model

    bias = np.array([0.0, 5.0, 0.5, 4.0, 0.0, 3.0, 2.0, 1.0, 0.0, 0.2], np.float32)
    ms.set_seed(2)
    net = create_model("resnet18", num_classes=10)
    net.head.fc.weight.set_data(ms.Tensor(np.zeros(net.head.fc.weight.shape, np.float32)))
    net.head.fc.bias.set_data(ms.Tensor(bias))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    checkpoint = tmp_path / "run" / "checkpoints" / "r18-1_1.ckpt"
    ms.save_checkpoint(net, str(checkpoint))
    names = [f"class_{i}" for i in range(10)]
    write_class_indices(str(tmp_path / "run" / "class_indices.json"), names)
    images = tmp_path / "photos"
    images.mkdir()
    for index in range(3):
        Image.new("RGB", (40 + index, 36), (index * 70, 20, 200)).save(images / f"p{index}.png")

    output = tmp_path / "predictions.json"
    env = dict(os.environ, GLOG_v="3", PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, str(REPO_ROOT / "predict.py"), str(images), f"--config_path={CONFIG}",
               f"--checkpoint_file_path={checkpoint}", "--device_target=CPU", "--eval_image_size=32",
               "--class_num=10", "--batch_size=2", "--top_k=4", f"--output_file={output}"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    expected = np.exp(bias.astype(np.float64)) / np.exp(bias.astype(np.float64)).sum()
    records = json.loads(output.read_text())
    assert [Path(r["image"]).name for r in records] == ["p0.png", "p1.png", "p2.png"]
    for record in records:
        assert [e["class_index"] for e in record["top_k"]] == [1, 3, 5, 6]
        assert [e["class_name"] for e in record["top_k"]] == ["class_1", "class_3", "class_5", "class_6"]
        np.testing.assert_allclose([e["probability"] for e in record["top_k"]], expected[[1, 3, 5, 6]],
                                   rtol=1e-5)
        assert sum(e["probability"] for e in record["top_k"]) <= 1.0
    assert "class_1" in result.stdout and "p2.png" in result.stdout

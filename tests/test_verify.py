"""The dataset verify command: decodes every image and lists all bad files."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from src.data.verify import image_decode_problem, verify_dataset
from src.tools.verify_dataset import main


def jpeg_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def make_dataset(root) -> dict[str, str]:
    """train/ and val/ with one bad item of each kind; returns {path: expected reason fragment}."""
    for split, name in (("train", "a"), ("train", "b"), ("val", "a")):
        os.makedirs(root / split / name, exist_ok=True)
        (root / split / name / "good.jpg").write_bytes(jpeg_bytes(len(name)))
    good = jpeg_bytes(7)
    bad = {
        root / "train" / "b" / "cut.jpg": "truncated",
        root / "train" / "b" / "header.jpg": "",
        root / "val" / "a" / "text.png": "cannot identify image",
        root / "val" / "a" / "notes.txt": "not an image",
        root / "val" / "empty": "empty class folder",
    }
    (root / "train" / "b" / "cut.jpg").write_bytes(good[: len(good) * 2 // 3])
    (root / "train" / "b" / "header.jpg").write_bytes(good[:200])
    (root / "val" / "a" / "text.png").write_text("hello")
    (root / "val" / "a" / "notes.txt").write_text("hello")
    (root / "val" / "empty").mkdir()
    return {str(path): reason for path, reason in bad.items()}


def test_verify_lists_every_bad_file(tmp_path, capsys):
    expected = make_dataset(tmp_path)
    assert main([str(tmp_path), "--workers", "1"]) == 1
    out, err = capsys.readouterr()
    listed = {line[4:].split(": ", 1)[0]: line for line in out.splitlines() if line.startswith("BAD ")}
    assert set(listed) == set(expected)
    for path, reason in expected.items():
        assert reason in listed[path]
    assert "6 images checked, 5 bad" in out
    assert "verify: 6/6 images decoded, 3 bad" in err


def test_verify_single_folder_and_good_data(tmp_path, capsys):
    os.makedirs(tmp_path / "x")
    (tmp_path / "x" / "1.jpg").write_bytes(jpeg_bytes(1))
    report = verify_dataset(str(tmp_path))
    assert report.ok and report.images_checked == 1
    assert main([str(tmp_path)]) == 0
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert image_decode_problem(str(tmp_path / "x" / "1.jpg")) is None


def test_verify_command_in_parallel(tmp_path, repo_root):
    expected = make_dataset(tmp_path)
    result = subprocess.run([sys.executable, "-m", "src.tools.verify_dataset", str(tmp_path), "--workers", "2"],
                            cwd=repo_root, capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stderr
    assert sum(line.startswith("BAD ") for line in result.stdout.splitlines()) == len(expected)
    assert "images decoded" in result.stderr


def test_verify_skips_what_training_skips_and_lists_links_it_cannot_follow(tmp_path, capsys):
    """Hidden and OS files are not problems; a link loop, a broken link and every non-image file are,
    and the rest of the dataset is still decoded."""
    for name in ("a", "b"):
        os.makedirs(tmp_path / "train" / name)
        (tmp_path / "train" / name / "good.jpg").write_bytes(jpeg_bytes(len(name)))
    a = tmp_path / "train" / "a"
    (a / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (a / "._good.jpg").write_bytes(b"\0\5\26\7" + bytes(60))
    (a / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    for k in range(5):
        (a / f"notes{k}.txt").write_text("x")
    os.symlink("loop", tmp_path / "train" / "loop")
    os.symlink("self.jpg", a / "self.jpg")
    os.symlink(str(tmp_path / "gone.jpg"), tmp_path / "train" / "b" / "gone.jpg")
    assert main([str(tmp_path), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    listed = dict(line[4:].split(": ", 1) for line in out.splitlines() if line.startswith("BAD "))
    expected = {str(a / f"notes{k}.txt"): "not an image (extension)" for k in range(5)}
    expected[str(tmp_path / "train" / "loop")] = "symbolic link loop"
    expected[str(a / "self.jpg")] = "symbolic link loop"
    expected[str(tmp_path / "train" / "b" / "gone.jpg")] = f"broken symbolic link (to {tmp_path / 'gone.jpg'})"
    assert listed == expected
    assert "2 images checked, 8 bad" in out

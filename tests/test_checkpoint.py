"""Checkpoint files: atomic writes, keep-max/best, latest, load errors."""
import os

import mindspore as ms
import numpy as np
import pytest
from checkpoint_helpers import (
    CONFIG_TEXT,
    TinyNet,
    assert_one_line,
    batch,
    make_training,
)

from src.engine.resume import read_resume_state
from src.errors import DropCovError
from src.runtime import checkpoint as ckpt


# ------------------------------------------------------------------------------------------------ writing
def test_extra_entries_round_trip(tmp_path):
    net, optimizer, train_step = make_training()
    train_step(*batch(0))
    path = ckpt.save_checkpoint_atomic(train_step, tmp_path / "run.ckpt",
                                       {"epoch_num": 1, "global_step": 5, "config": CONFIG_TEXT})
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]
    saved = ckpt.load_checkpoint_file(path)
    assert read_resume_state(saved) == (1, 5)  # extra's global_step replaces the optimizer's (1)
    assert ckpt.read_extra(saved, "config") == CONFIG_TEXT
    assert {"moments.conv1.weight", "moments.fc.bias", "learning_rate", "momentum"} <= set(saved)
    np.testing.assert_array_equal(saved["moments.fc.weight"].asnumpy(), optimizer.moments[3].asnumpy())


def test_failed_write_leaves_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    net = TinyNet()
    final = ckpt.save_checkpoint_atomic(net, tmp_path / "model.ckpt", {"epoch_num": 1})
    before = final.read_bytes()

    from mindspore.train import serialization

    real_writer = serialization._write_parameter_bytes_data
    calls = []

    def write_then_fail(*args, **kwargs):  # the disk fills up after the first record
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_writer(*args, **kwargs)

    monkeypatch.setattr(serialization, "_write_parameter_bytes_data", write_then_fail)
    net.fc.weight.set_data(ms.Tensor(np.ones((3, 4), np.float32)))
    with pytest.raises(DropCovError) as error:
        ckpt.save_checkpoint_atomic(net, final, {"epoch_num": 2})
    assert_one_line(error, str(final), "No space left")
    assert len(calls) > 1
    assert final.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]

    with pytest.raises(DropCovError):
        ckpt.save_checkpoint_atomic(net, tmp_path / "fresh.ckpt", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_rejects_a_name_without_ckpt_suffix(tmp_path):
    with pytest.raises(DropCovError, match=r"must end in \.ckpt"):
        ckpt.save_checkpoint_atomic(TinyNet(), tmp_path / "model.bin")


def test_manager_keeps_the_newest_and_the_best(tmp_path):
    net = TinyNet()
    manager = ckpt.CheckpointManager(tmp_path, "resnet18", keep_max=2)
    for epoch in range(1, 5):
        manager.save(net, epoch, epoch * 10, {"config": CONFIG_TEXT})
    assert [p.name for p in manager.periodic_checkpoints()] == ["resnet18-3_30.ckpt", "resnet18-4_40.ckpt"]

    assert manager.save_best(net, 0.30, 4, 40)
    assert not manager.save_best(net, 0.20, 5, 50)
    assert manager.save_best(net, 0.50, 6, 60)
    best = ckpt.load_checkpoint_file(tmp_path / "best.ckpt")
    assert ckpt.read_extra(best, "best_metric") == pytest.approx(0.5)
    assert read_resume_state(best) == (6, 60)

    manager.save(net, 7, 70)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "resnet18-4_40.ckpt", "resnet18-7_70.ckpt"]
    assert ckpt.read_extra(ckpt.load_checkpoint_file(tmp_path / "resnet18-7_70.ckpt"), "best_metric") == 0.5

    resumed = ckpt.CheckpointManager(tmp_path, "resnet18", keep_max=2, best_metric=0.5)
    resumed.save(net, 8, 80)  # earlier files count towards keep_max
    assert [p.name for p in resumed.periodic_checkpoints()] == ["resnet18-7_70.ckpt", "resnet18-8_80.ckpt"]
    assert not resumed.save_best(net, 0.4, 8, 80)


def test_manager_removes_partials_of_dead_writers_only(tmp_path):
    dead = tmp_path / f".resnet18-1_10.{2 ** 22 + 7}.partial.ckpt"  # above Linux's largest pid
    alive = tmp_path / f".resnet18-1_10.{os.getpid()}.partial.ckpt"
    dead.write_bytes(b"\n\x05partial")
    alive.write_bytes(b"\n\x05partial")
    ckpt.CheckpointManager(tmp_path, "resnet18", keep_max=1)
    assert not dead.exists() and alive.exists()


def test_invalid_keep_max(tmp_path):
    with pytest.raises(DropCovError, match="keep_checkpoint_max"):
        ckpt.CheckpointManager(tmp_path, "resnet18", keep_max=0)


def test_latest_skips_partial_tmp_and_broken_files(tmp_path):
    assert ckpt.latest(tmp_path) is None
    assert ckpt.latest(tmp_path / "absent") is None
    net = TinyNet()
    older = ckpt.save_checkpoint_atomic(net, tmp_path / "resnet18-1_10.ckpt")
    newer = ckpt.save_checkpoint_atomic(net, tmp_path / "resnet18-2_20.ckpt")
    os.utime(older, ns=(1_000_000_000, 1_000_000_000))
    os.utime(newer, ns=(2_000_000_000, 2_000_000_000))
    data = newer.read_bytes()
    (tmp_path / "resnet18-3_30.ckpt").write_bytes(data[: len(data) // 2])  # truncated, newest
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    (tmp_path / f".resnet18-4_40.{os.getpid()}.partial.ckpt").write_bytes(data)
    (tmp_path / "resnet18-5_50.tmp").write_bytes(data)
    assert ckpt.latest(tmp_path) == newer


# ------------------------------------------------------------------------------------------------ reading
@pytest.fixture
def saved_checkpoint(tmp_path):
    return ckpt.save_checkpoint_atomic(TinyNet(), tmp_path / "good.ckpt", {"epoch_num": 1})


def test_load_error_missing_file(tmp_path):
    path = tmp_path / "absent.ckpt"
    with pytest.raises(DropCovError) as error:
        ckpt.load_checkpoint_file(path, option="checkpoint_file_path")
    assert_one_line(error, str(path), "does not exist", "--checkpoint_file_path")


def test_load_error_directory(tmp_path):
    with pytest.raises(DropCovError) as error:
        ckpt.load_checkpoint_file(tmp_path)
    assert_one_line(error, str(tmp_path), "is a directory")


def test_load_error_text_file(tmp_path):
    path = tmp_path / "readme.ckpt"
    path.write_text("net_name: resnet50\n")
    with pytest.raises(DropCovError) as error:
        ckpt.load_checkpoint_file(path)
    assert_one_line(error, str(path), "not a MindSpore checkpoint", "text file")


def test_load_error_jpeg(tmp_path):
    from PIL import Image

    path = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    with pytest.raises(DropCovError) as error:
        ckpt.load_checkpoint_file(path)
    assert_one_line(error, str(path), "not a MindSpore checkpoint", "JPEG")


def test_load_error_empty_file(tmp_path):
    path = tmp_path / "empty.ckpt"
    path.write_bytes(b"")
    with pytest.raises(DropCovError) as error:
        ckpt.load_checkpoint_file(path)
    assert_one_line(error, str(path), "empty")


def test_load_error_truncated(saved_checkpoint, tmp_path):
    data = saved_checkpoint.read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError):  # what mindspore itself says: a generic parse failure
        ms.load_checkpoint(str(path))
    with pytest.raises(DropCovError) as error:
        ckpt.load_checkpoint_file(path)
    assert_one_line(error, str(path), "truncated", f"ends at byte {len(data) // 2}")


def test_load_error_checkpoint_without_ckpt_suffix(saved_checkpoint, tmp_path):
    path = tmp_path / "good.ckpt.bak"
    path.write_bytes(saved_checkpoint.read_bytes())
    with pytest.raises(DropCovError) as error:
        ckpt.load_checkpoint_file(path)
    assert_one_line(error, str(path), "rename")

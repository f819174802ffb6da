"""The run folder's lock, its refusal to mix runs, and what a run that never started leaves behind."""
from __future__ import annotations

import pytest

from src.errors import DropCovError
from src.runtime.run_folder import LOCK_FILE, RunFolder


def _opened(output, checkpoints, resume=False, overwrite=False) -> RunFolder:
    """Open a run folder as train.py does: one that fails to open is closed at once."""
    folder = RunFolder(output, checkpoints, is_main=True)
    try:
        folder.open(resume=resume, overwrite=overwrite, checkpoint_prefix="dropcov")
    except DropCovError:
        folder.close()
        raise
    return folder


def test_a_separate_checkpoint_path_is_locked_too(tmp_path):
    """Two runs with different output folders but one --checkpoint_path would interleave checkpoints."""
    shared = tmp_path / "shared_checkpoints"
    first = _opened(tmp_path / "a", shared)
    try:
        assert (shared / LOCK_FILE).is_file() and (tmp_path / "a" / LOCK_FILE).is_file()
        with pytest.raises(DropCovError, match=rf"checkpoint_path {shared} is in use by another training run "
                                               r"\(pid \d+ on .*\); wait for it to end or choose another "
                                               r"--checkpoint_path"):
            _opened(tmp_path / "b", shared)
    finally:
        first.close()
    assert not (shared / LOCK_FILE).exists()
    assert not shared.exists() and not (tmp_path / "a").exists()  # never committed: created folders go
    assert not (tmp_path / "b").exists()


def test_the_default_checkpoint_folder_is_locked_for_a_run_that_names_it(tmp_path):
    """The first run writes OUT/checkpoints; a second run with another output folder but
    --checkpoint_path OUT/checkpoints would rotate the first run's checkpoints away."""
    first = _opened(tmp_path / "out", tmp_path / "out" / "checkpoints")
    try:
        with pytest.raises(DropCovError, match=r"checkpoint_path .*/out/checkpoints is in use by another training run"):
            _opened(tmp_path / "other", tmp_path / "out" / "checkpoints")
    finally:
        first.close()
    assert not (tmp_path / "other").exists()


def test_an_earlier_run_in_a_separate_checkpoint_path_names_that_option(tmp_path):
    shared = tmp_path / "ckpt"
    shared.mkdir()
    (shared / "dropcov-1_10.ckpt").write_bytes(b"earlier")
    with pytest.raises(DropCovError, match=rf"checkpoint_path {shared} holds the checkpoints of an earlier run "
                                           r"\(dropcov-1_10.ckpt, ...\).*choose a new --checkpoint_path"):
        _opened(tmp_path / "out", shared)
    assert (shared / "dropcov-1_10.ckpt").read_bytes() == b"earlier"
    _opened(tmp_path / "out2", shared, resume=True).close()


def test_a_folder_that_cannot_be_created_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DropCovError, match=r"checkpoint_path") as caught:
        _opened(tmp_path / "out", blocker / "ckpt")
    assert "\n" not in str(caught.value)

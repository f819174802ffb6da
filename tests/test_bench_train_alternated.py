"""bench/train_alternated.py: the sides it accepts, and a tiny alternated run of ours and stock."""
import json
import subprocess
import sys

import pytest

from bench.train_alternated import _train_seconds, main


def test_the_training_steps_median_becomes_the_sides_figure_and_a_failure_passes_through():
    assert _train_seconds({"ok": True, "train": {"median_s": 0.8}})["median_s"] == 0.8
    failed = {"ok": False, "error": "timed out after 900 s"}
    assert _train_seconds(failed) == failed


def test_unknown_side_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--sides", "ours,pytorch"])
    assert stop.value.code == 2
    assert "--sides takes two or more distinct of ours, stock, ours_own_pool; got 'ours,pytorch'" in (
        capsys.readouterr().err)


@pytest.mark.slow
def test_quick_run_alternates_ours_and_stock_and_writes_its_record(repo_root, tmp_path):
    output = tmp_path / "train.json"
    result = subprocess.run([sys.executable, "bench/train_alternated.py", "--quick", "--output", str(output)],
                            cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(output.read_text())
    (round_,) = record["rounds"]
    assert round_["ours"]["conv_backend"] == "onednn" and round_["stock"]["conv_backend"] == "stock"
    assert round_["ours"]["median_s"] == round_["ours"]["train"]["median_s"] > 0
    assert record["summary"]["ours_over_stock"] == pytest.approx(
        round_["stock"]["median_s"] / round_["ours"]["median_s"])


@pytest.mark.parametrize("option,value,message", [("--rounds", "0", "expected 1 or more, not 0"),
                                                  ("--steps", "x", "expected a whole number, not 'x'"),
                                                  ("--warmup", "-1", "expected 0 or more, not -1")])
def test_counts_below_their_least_are_a_one_line_usage_error(option, value, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main([option, value])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"argument {option}: {message}")

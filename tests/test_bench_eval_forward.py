"""bench/eval_forward.py and bench/alternation.py: the alternation and summary, the sides, a tiny run of three."""
import json
import subprocess
import sys

import pytest

from bench.alternation import measure_alternated, summarise
from bench.eval_forward import DEFAULT_SIDES, SIDES, main


def test_summary_is_the_median_of_the_rounds_per_side_and_ours_speed_over_each_other():
    rounds = [{"ours": {"median_s": ours}, "pytorch": {"median_s": torch}, "stock": {"median_s": stock}}
              for ours, torch, stock in [(0.30, 0.29, 0.5), (0.28, 0.31, 0.4), (0.29, 0.30, 0.45)]]
    summary = summarise(rounds)
    assert summary["median_s"] == {"ours": 0.29, "pytorch": 0.30, "stock": 0.45}
    assert summary["ours_over_pytorch"] == pytest.approx(0.30 / 0.29)
    assert summary["ours_over_stock"] == pytest.approx(0.45 / 0.29)
    assert "ours_over_ours" not in summary


def test_sides_alternate_their_order_every_round_and_the_record_is_written(tmp_path, capsys):
    calls = []

    def runner(name, seconds):
        def run():
            calls.append(name)
            return {"ok": True, "median_s": seconds}
        return run

    output = tmp_path / "record.json"
    status = measure_alternated("test", "a title", {"ours": runner("ours", 0.2), "stock": runner("stock", 0.3),
                                                    "pytorch": runner("pytorch", 0.25)},
                                rounds=3, contention=0, isa="native", settings={"k": 1}, output=output,
                                unit="s per batch")
    assert status == 0
    assert calls == ["ours", "stock", "pytorch", "pytorch", "stock", "ours", "ours", "stock", "pytorch"]
    record = json.loads(output.read_text())
    assert record["kind"] == "test" and record["settings"] == {"k": 1} and len(record["rounds"]) == 3
    assert record["summary"]["ours_over_stock"] == pytest.approx(1.5)
    assert "ours' speed over stock 1.500x, pytorch 1.250x" in capsys.readouterr().out


def test_a_failed_side_stops_the_run_with_its_error(tmp_path, capsys):
    status = measure_alternated("test", "t", {"ours": lambda: {"ok": True, "median_s": 0.1},
                                              "stock": lambda: {"ok": False, "error": "exit code 1: boom"}},
                                rounds=2, contention=0, isa="native", settings={}, output=tmp_path / "r.json",
                                unit="s")
    assert status == 1 and not (tmp_path / "r.json").exists()
    assert "stock failed: exit code 1: boom" in capsys.readouterr().err


def test_pytorch_kept_memory_keeps_freed_memory_within_glibcs_limits():
    """glibc ignores an mmap threshold above 32 MiB (HEAP_MAX_SIZE / 2 on 64-bit): the value is that maximum."""
    env = SIDES["pytorch_kept_memory"]["env"]
    assert int(env["MALLOC_MMAP_THRESHOLD_"]) == 32 * 1024 * 1024
    assert int(env["MALLOC_TRIM_THRESHOLD_"]) >= 2 * int(env["MALLOC_MMAP_THRESHOLD_"])
    assert set(DEFAULT_SIDES) <= set(SIDES)


@pytest.mark.parametrize("value,message", [("ours", "two or more"), ("ours,tensorflow", "tensorflow"),
                                           ("ours,ours", "distinct")])
def test_bad_sides_are_a_one_line_usage_error(value, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--sides", value])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--sides" in error and repr(value) in error and message in error


def test_negative_contention_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--contention", "-1"])
    assert stop.value.code == 2
    assert "--contention takes a number of busy processes" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_times_three_sides_under_contention_and_writes_its_record(repo_root, tmp_path):
    output = tmp_path / "eval.json"
    result = subprocess.run([sys.executable, "bench/eval_forward.py", "--quick", "--sides", "ours,stock,pytorch",
                             "--contention", "1", "--output", str(output)],
                            cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(output.read_text())
    assert record["settings"]["contention"] == 1
    assert [sorted(r) for r in record["rounds"]] == [["ours", "pytorch", "stock"]]
    ours, stock = record["rounds"][0]["ours"], record["rounds"][0]["stock"]
    assert ours["ok"] and ours["conv_backend"] == "onednn" and len(ours["step_s"]) == 2
    assert stock["conv_backend"] == "stock"
    assert record["summary"]["ours_over_pytorch"] == pytest.approx(
        record["rounds"][0]["pytorch"]["median_s"] / ours["median_s"])
    assert record["summary"]["ours_over_stock"] == pytest.approx(stock["median_s"] / ours["median_s"])

"""bench/eval_forward.py: the summary over rounds, and both sides at a tiny size."""
import json
import subprocess
import sys

import pytest

from bench.eval_forward import summarise


def test_summary_is_the_median_of_the_rounds_per_side():
    rounds = [{"mindspore": {"median_s": ms}, "pytorch": {"median_s": pt}}
              for ms, pt in [(0.30, 0.29), (0.28, 0.31), (0.29, 0.30)]]
    summary = summarise(rounds)
    assert summary["median_s"] == {"mindspore": 0.29, "pytorch": 0.30}
    assert summary["ours_over_pytorch"] == pytest.approx(0.30 / 0.29)


@pytest.mark.slow
def test_quick_run_times_both_sides_and_writes_its_record(repo_root, tmp_path):
    output = tmp_path / "eval.json"
    result = subprocess.run([sys.executable, "bench/eval_forward.py", "--quick", "--output", str(output)],
                            cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(output.read_text())
    assert [sorted(r) for r in record["rounds"]] == [["mindspore", "pytorch"]]
    ours = record["rounds"][0]["mindspore"]
    assert ours["ok"] and ours["conv_backend"] == "onednn" and len(ours["step_s"]) == 2
    assert record["summary"]["ours_over_pytorch"] == pytest.approx(
        record["rounds"][0]["pytorch"]["median_s"] / ours["median_s"])

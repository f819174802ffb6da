"""bench/train_paired.py and its worker bench/paired_steps.py: ours and stock training steps paired in one process."""
import json
import statistics
import subprocess
import sys

import pytest

from bench.train_paired import main


@pytest.mark.slow
def test_quick_run_pairs_ours_and_stock_at_avx2_and_writes_its_record(repo_root, tmp_path):
    output = tmp_path / "paired.json"
    result = subprocess.run([sys.executable, "bench/train_paired.py", "--quick", "--output", str(output)],
                            cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(output.read_text())
    paired = record["result"]
    assert paired["conv_backend"] == {"ours": "onednn", "stock": "stock"}
    assert paired["onednn_max_cpu_isa"] == "AVX2" and "AVX2" in record["cpu_kind"]["label"]
    ours, stock = paired["seconds"]["ours"], paired["seconds"]["stock"]
    assert len(ours) == len(stock) == paired["pairs"] == 2 and min(ours + stock) > 0
    ratios = [s / o for s, o in zip(stock, ours)]
    assert paired["stock_over_ours"] == pytest.approx(statistics.median(ratios), rel=1e-3)
    assert paired["ours_faster_pairs"] == sum(ratio > 1 for ratio in ratios)
    assert "ours' speed over stock (median over pairs)" in result.stdout
    assert result.stdout.count("pair ") >= 2


@pytest.mark.parametrize("option,value,message", [("--pairs", "0", "expected 1 or more, not 0"),
                                                  ("--warmup", "0", "expected 1 or more, not 0"),
                                                  ("--contention", "-1", "-1")])
def test_bad_counts_are_a_one_line_usage_error(option, value, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main([option, value])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {option}:" in last and message in last

"""bench.op_profile: the profiler CSV is summarised per phase and operator type (tiny run, no timing asserted)."""
from __future__ import annotations

import pytest

from bench import report
from bench.common import run_worker
from bench.op_profile import format_profile, op_phase, summarise_op_csv

CSV_HEADER = ("op_side,op_type,op_name,full_op_name,op_occurrences,op_total_time(ms),op_avg_time(ms),"
              "total_proportion,subgraph,pid\n")


def test_op_phase_from_scope_names():
    assert op_phase("Default/optimizer-Momentum/ApplyMomentum-op1") == "optimizer"
    assert op_phase("Gradients/Default/network-WithLossCell/_backbone-ResNet/x/Conv2DBackpropInput-op0") == "backward"
    assert op_phase("Default/network-WithLossCell/_backbone-ResNet/backbone-ResNetBackbone/conv1-Conv2d/Conv2D-op0") \
        == "forward"


def test_summarise_op_csv_sums_per_step(tmp_path):
    path = tmp_path / "cpu_op_detail_info_0.csv"
    path.write_text(CSV_HEADER
                    + "Host,Conv2D,Conv2D-op0,Default/net/conv1/Conv2D-op0,2,40.0,20.0,0.4,Default,1\n"
                    + "Host,Conv2D,Conv2D-op1,Default/net/conv2/Conv2D-op1,2,20.0,10.0,0.2,Default,1\n"
                    + "Host,Conv2DBackpropInput,B-op0,Gradients/Default/net/conv2/B-op0,2,30.0,15.0,0.3,Default,1\n"
                    + "Host,Mul,Mul-op1,Default/optimizer-Momentum/Mul-op1,2,10.0,5.0,0.1,Default,1\n")
    rows = summarise_op_csv(path, steps=2)
    assert [(r["phase"], r["op_type"], r["kernels"]) for r in rows] == [
        ("forward", "Conv2D", 2), ("backward", "Conv2DBackpropInput", 1), ("optimizer", "Mul", 1)]
    assert [r["ms_per_step"] for r in rows] == pytest.approx([30.0, 15.0, 5.0])


def test_worker_profiles_a_tiny_step():
    result = run_worker("op_profile", {"batch_size": 2, "image_size": 32, "num_classes": 10, "warmup": 1,
                                       "steps": 1, "top": 5}, timeout=600)
    assert result["ok"], result
    assert len(result["ops"]) == 5
    assert result["by_group"]["convolution"] > 0
    assert sum(result["by_phase"].values()) == pytest.approx(result["total_ms_per_step"])
    assert set(result["conv_gflops"]) == {"Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"}
    assert "ms of kernels per step" in format_profile(result)
    table = "\n".join(report.profile_lines(result))  # what run_all's "profile" section prints
    assert "| convolution" in table and "| backward-filter" in table

"""bench.op_profile: the profiler CSV is summarised per phase and operator type (tiny run, no timing asserted)."""
from __future__ import annotations

import pytest

from bench import report_text
from bench.common import run_worker
from bench.op_profile import (
    CUSTOM_CONV_FUNCTIONS,
    CUSTOM_POOL_FUNCTIONS,
    custom_kernel_function,
    custom_op_types,
    format_profile,
    op_phase,
    summarise_op_csv,
)

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


def test_custom_kernels_named_from_their_input_shapes():
    forward, backward_data, backward_filter = CUSTOM_CONV_FUNCTIONS
    pool_forward, pool_backward = CUSTOM_POOL_FUNCTIONS
    x, w, dy, cfg = [8, 64, 56, 56], [128, 64, 3, 3], [8, 128, 28, 28], [7]
    assert custom_kernel_function([x, w, cfg]) == forward
    assert custom_kernel_function([dy, w, x, cfg]) == backward_data
    assert custom_kernel_function([dy, x, w, cfg]) == backward_filter
    assert custom_kernel_function([x, cfg]) == pool_forward
    pooled = [8, 64, 28, 28]
    assert custom_kernel_function([pooled, pooled, x, cfg]) == pool_backward
    # stride-1 3x3 with as many channels in as out: x is shaped like dy, and the pool backward does not fit
    same = [2, 64, 14, 14]
    assert custom_kernel_function([same, same, [64, 64, 3, 3], cfg]) == backward_filter
    assert custom_kernel_function([same, [64, 64, 3, 3], same, cfg]) == backward_data
    # batch == output channels: the weight is the spatially smaller one
    assert custom_kernel_function([[4, 4, 9, 9], [4, 3, 3, 3], [4, 3, 9, 9], cfg]) == backward_data
    assert custom_kernel_function([[4, 4, 9, 9], [4, 3, 9, 9], [4, 3, 3, 3], cfg]) == backward_filter
    assert custom_kernel_function([x, w, [3]]) is None and custom_kernel_function([x, None, cfg]) is None
    assert custom_kernel_function([[2, 3], [2, 3], cfg]) is None


def test_custom_op_types_line_up_launches_with_scope_names(tmp_path):
    """Two steps of a forward conv and the two backward kernels, all called Custom-op0/1 (as MindSpore does)."""
    framework = tmp_path / "cpu_framework_0.txt"
    step = ("Custom;Custom-op0;1;input_1:[2, 3, 8, 8];input_2:[4, 3, 3, 3];input_3:[7];\n"
            "ReLU;ReLU-op0;1;input_1:[2, 4, 8, 8];\n"
            "Custom;Custom-op0;1;input_1:[2, 4, 8, 8];input_2:[4, 3, 3, 3];input_3:[2, 3, 8, 8];input_4:[7];\n"
            "Custom;Custom-op1;1;input_1:[2, 4, 8, 8];input_2:[2, 3, 8, 8];input_3:[4, 3, 3, 3];input_4:[7];\n")
    framework.write_text(step * 2)
    forward, data, filter_ = ("Default/net/c1-OneDNNConv2d/Custom-op0",
                              "Gradients/Default/net/c1-OneDNNConv2d/Grad_Custom/Custom-op0",
                              "Gradients/Default/net/c1-OneDNNConv2d/Grad_Custom/Custom-op1")
    timestamps = tmp_path / "cpu_op_execute_timestamp_0.txt"
    timestamps.write_text(f"{filter_};HostCpuOps;400,0.1,0 1400,0.1,0 \n"
                          f"{data};HostCpuOps;300,0.1,0 1300,0.1,0 \n"
                          "Default/net/ReLU-op0;HostCpuOps;200,0.1,0 1200,0.1,0 \n"
                          f"{forward};HostCpuOps;100,0.2,0 1100,0.2,0 \n")
    assert custom_op_types(framework, timestamps) == {
        forward: "Custom:dropcov_conv2d_forward", data: "Custom:dropcov_conv2d_backward_data",
        filter_: "Custom:dropcov_conv2d_backward_filter"}
    # Launches that do not line up (a step missing from one file) leave the kernels unnamed.
    framework.write_text(step)
    assert custom_op_types(framework, timestamps) == {}


def test_worker_profiles_a_tiny_step():
    result = run_worker("op_profile", {"batch_size": 2, "image_size": 32, "num_classes": 10, "warmup": 1,
                                       "steps": 1, "top": 5}, timeout=600)
    assert result["ok"], result
    assert len(result["ops"]) == 5
    assert result["by_group"]["convolution"] > 0
    assert sum(result["by_phase"].values()) == pytest.approx(result["total_ms_per_step"])
    assert set(result["conv_gflops"]) == {"Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"}
    assert "ms of kernels per step" in format_profile(result)
    assert (result["conv_backend"], result["custom_kernels"]) == ("stock", {"named": 0, "unnamed": 0})
    table = "\n".join(report_text.profile_lines(result))  # what run_all's "profile" section prints
    assert "| convolution" in table and "| backward-filter" in table


def test_worker_profiles_our_kernels_by_direction():
    result = run_worker("op_profile", {"batch_size": 2, "image_size": 32, "num_classes": 10, "warmup": 1,
                                       "steps": 1, "top": 100, "conv_backend": "onednn"}, timeout=600)
    assert result["ok"], result
    assert result["conv_backend"] == "onednn" and result["custom_kernels"]["unnamed"] == 0
    kernels = {(row["phase"], row["op_type"]): row["kernels"] for row in result["ops"]}
    # ResNet-18 (layer4 stride 1) + DropCov: 20 backbone convolutions and the head's 1x1 reduction (and the
    # head's ECA convolution when it runs on our kernels too); the stem's input needs no backward-data.
    convolutions = kernels[("forward", "Custom:dropcov_conv2d_forward")]
    assert convolutions in (21, 22)
    assert kernels[("backward", "Custom:dropcov_conv2d_backward_filter")] == convolutions
    assert kernels[("backward", "Custom:dropcov_conv2d_backward_data")] == convolutions - 1
    assert not [op_type for _, op_type in kernels if op_type.startswith("Conv2D")]
    assert set(result["conv_gflops"]) == {f"Custom:{name}" for name in CUSTOM_CONV_FUNCTIONS}
    assert result["by_group"]["convolution"] > 0 and "custom (unnamed)" not in result["by_group"]
    table = "\n".join(report_text.profile_lines(result))
    assert "onednn convolutions" in table and "| backward-data   | Custom:dropcov_conv2d_backward_data" in table

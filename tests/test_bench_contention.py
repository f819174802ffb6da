"""The benchmark's competing load (--contention), CPU-share accounting and CPU kinds (--isa)."""
from __future__ import annotations

import os
import time

import pytest

from bench import run_all, sections
from bench.contention import BusyProcesses, parse_contention
from bench.cpu_share import CpuSample, cpu_sample, cpu_shares, process_ticks
from bench.isa import AVX2_CAPS, cpu_kind, isa_environment, widest_isa


@pytest.mark.parametrize("text, count", [("0", 0), ("3", 3), (" 2 ", 2)])
def test_contention_takes_a_whole_number(text, count):
    assert parse_contention(text) == count
    assert run_all.settle(run_all.parse_args(["--contention", text]))["contention"] == count


@pytest.mark.parametrize("text", ["-1", "two", "1.5", ""])
def test_contention_rejects_anything_else_in_one_line(text, capsys):
    with pytest.raises(ValueError, match=r"--contention takes a number of busy processes \(0, 1, 2, \.\.\.\)"):
        parse_contention(text)
    with pytest.raises(SystemExit) as stop:
        run_all.parse_args(["--contention", text])
    assert stop.value.code == 2
    assert "argument --contention: --contention takes a number of busy processes" in capsys.readouterr().err


def test_contention_defaults_to_none():
    settings = run_all.settle(run_all.parse_args([]))
    assert settings["contention"] == 0 and settings["isa"] == "native"


def test_busy_processes_run_inside_the_block_and_are_gone_after():
    with BusyProcesses(2) as busy:
        pids = busy.pids
        assert len(pids) == 2
        start = sum(process_ticks(pid) for pid in pids)
        time.sleep(0.5)
        assert sum(process_ticks(pid) for pid in pids) > start  # they burn CPU
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with BusyProcesses(0) as idle:
        assert idle.pids == []


def test_busy_processes_are_stopped_when_the_block_fails():
    with pytest.raises(RuntimeError), BusyProcesses(1) as busy:
        pids = busy.pids
        raise RuntimeError("a worker failed")
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)


def test_cpu_shares_split_busy_time_between_own_contention_and_other_jobs():
    start = CpuSample(total=1000, idle=400, own=100.0, contention=50.0)
    end = CpuSample(total=2000, idle=600, own=400.0, contention=350.0)
    # 1000 ticks passed, 800 busy: 300 ours, 300 the busy processes', so 200 other jobs'
    assert cpu_shares(start, end) == {"other": 0.2, "contention": 0.3}
    assert cpu_shares(start, start) is None and cpu_shares(None, end) is None
    clamped = cpu_shares(start, CpuSample(total=2000, idle=1400, own=900.0, contention=50.0))
    assert clamped == {"other": 0.0, "contention": 0.0}


def test_cpu_sample_counts_running_busy_processes_as_contention():
    with BusyProcesses(1) as busy:
        start = cpu_sample(busy.pids)
        time.sleep(0.6)
        end = cpu_sample(busy.pids)
    assert start is not None and end is not None  # Linux: /proc/stat exists
    assert end.contention > start.contention
    shares = cpu_shares(start, end)
    assert 0.0 < shares["contention"] <= 1.0 and 0.0 <= shares["other"] <= 1.0


def test_cpu_kinds_and_their_caps():
    wide = ["avx2", "avx512f", "fma"]
    assert widest_isa(wide) == "AVX-512" and widest_isa(["avx2"]) == "AVX2" and widest_isa([]) == "SSE"
    assert cpu_kind(wide, "native") == {"kind": "AVX-512", "emulated": False, "label": "AVX-512"}
    emulated = cpu_kind(wide, "AVX2")
    assert emulated["kind"] == "AVX2" and emulated["emulated"] and "emulated on an AVX-512 CPU" in emulated["label"]
    assert cpu_kind(["avx2"], "AVX2") == {"kind": "AVX2", "emulated": False, "label": "AVX2"}
    assert isa_environment("native", "pytorch") == {}
    assert isa_environment("AVX2") == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert isa_environment("AVX2", "pytorch") == AVX2_CAPS["pytorch"]
    assert {"ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"} <= set(AVX2_CAPS["pytorch"])
    with pytest.raises(ValueError, match="--isa must be one of native, AVX2"):
        isa_environment("AVX512")


def test_avx2_runs_cap_every_worker_and_time_pytorch_once(monkeypatch):
    """--isa AVX2: MindSpore workers get ONEDNN_MAX_CPU_ISA=AVX2, PyTorch all its caps, and PyTorch runs only
    capped (with evaluation); natively PyTorch runs uncapped (with evaluation) and capped."""
    calls = []
    monkeypatch.setattr(sections, "run_worker", lambda module, params, env=None, **kw: calls.append(
        (module, params, env)) or {"ok": True})
    monkeypatch.setattr(sections, "torch_available", lambda: True)
    avx2 = run_all.settle(run_all.parse_args(["--quick", "--isa", "AVX2", "--conv_backends", "onednn"]))
    sections.run_head(avx2)
    assert calls[-1][2]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert list(sections.run_pytorch(avx2)) == ["AVX2"]
    module, params, env = calls[-1]
    assert module == "pytorch_ref" and params["eval_steps"] > 0 and env == AVX2_CAPS["pytorch"]
    native = run_all.settle(run_all.parse_args(["--quick"]))
    assert list(sections.run_pytorch(native)) == ["default", "AVX2"]
    (_, default_params, default_env), (_, capped_params, capped_env) = calls[-2:]
    assert default_params["eval_steps"] > 0 and capped_params["eval_steps"] == 0
    assert all(value is None for value in default_env.values())  # an exported cap does not leak in
    assert capped_env == AVX2_CAPS["pytorch"]

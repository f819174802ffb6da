"""Shared plumbing of the benchmarks: worker subprocesses, step timing, statistics, FLOP counting.

Every measurement that imports MindSpore or PyTorch runs in its own Python process
(``python -m bench.<module> '<json arguments>'``): MindSpore's execution mode cannot be switched
safely after a graph was compiled, and ``ONEDNN_MAX_CPU_ISA`` only counts before oneDNN's first use.
A worker prints one line ``BENCH_RESULT {json}`` on stdout; :func:`run_worker` returns that dict.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT_MARKER = "BENCH_RESULT "
ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"
UNSET = None  # value in an ``env`` mapping that removes the variable from the worker's environment


def training_gflop_per_image(forward_macs: float) -> float:
    """Training FLOPs of one image in GFLOP: ``3 x forward multiply-adds x 2`` (forward, 2 backward)."""
    return 3.0 * forward_macs * 2.0 / 1e9


def step_statistics(step_seconds: list[float], images_per_step: int) -> dict[str, Any]:
    """Median/mean/min/max seconds of the timed steps and images/s from the median."""
    if not step_seconds:
        raise ValueError("no timed steps")
    median = statistics.median(step_seconds)
    return {
        "median_s": median, "mean_s": statistics.fmean(step_seconds), "min_s": min(step_seconds),
        "max_s": max(step_seconds), "images_per_s": images_per_step / median if median > 0 else None,
        "step_s": [round(t, 6) for t in step_seconds],
    }


def time_calls(call: Callable[[], Any], warmup: int, repeats: int) -> tuple[list[float], list[float]]:
    """Run ``call`` ``warmup`` then ``repeats`` times; returns (warm-up seconds, timed seconds).

    ``call`` must block until its work is done (e.g. end with ``.asnumpy()`` on MindSpore).
    """
    warm, timed = [], []
    for index in range(warmup + repeats):
        start = time.perf_counter()
        call()
        (warm if index < warmup else timed).append(time.perf_counter() - start)
    return warm, timed


def time_for_at_least(call: Callable[[], Any], min_seconds: float, min_repeats: int = 3,
                      max_repeats: int = 1000) -> list[float]:
    """Time ``call`` repeatedly (after one untimed warm-up) until ``min_seconds`` have passed."""
    call()
    times: list[float] = []
    begin = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - begin < min_seconds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def worker_environment(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a worker: ours, the repo root on PYTHONPATH, MindSpore logging errors-only,
    then ``env`` applied (a value of None removes the variable)."""
    result = dict(os.environ)
    path = result.get("PYTHONPATH", "")
    result["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    result.setdefault("GLOG_v", "3")
    for key, value in (env or {}).items():
        if value is UNSET:
            result.pop(key, None)
        else:
            result[key] = str(value)
    return result


def run_worker(module: str, params: Mapping[str, Any], env: Mapping[str, str | None] | None = None,
               timeout: float = 900.0) -> dict[str, Any]:
    """Run ``python -m bench.<module> '<params as json>'`` and return its result dict.

    Never raises for a failed worker: the dict then has ``ok: False`` and ``error`` (last lines of
    its stderr, or the timeout), so one broken configuration does not stop the whole benchmark.
    ``wall_s`` (process wall time, start-up included) is added either way.
    """
    command = [sys.executable, "-m", f"bench.{module}", json.dumps(dict(params))]
    start = time.perf_counter()
    try:
        completed = subprocess.run(command, cwd=REPO_ROOT, env=worker_environment(env), capture_output=True,
                                   text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s", "wall_s": time.perf_counter() - start}
    wall = time.perf_counter() - start
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER):])
            result.setdefault("ok", True)
            result["wall_s"] = wall
            return result
    tail = " | ".join(line for line in completed.stderr.strip().splitlines()[-6:])
    return {"ok": False, "error": f"exit code {completed.returncode}: {tail or 'no output'}", "wall_s": wall}


def worker_main(measure: Callable[..., dict[str, Any]], argv: list[str] | None = None) -> int:
    """Entry point of a worker module: ``measure(**json.loads(argv[0]))`` printed as one result line.

    An exception becomes ``{"ok": false, "error": ...}`` on the result line (and the traceback on
    stderr), so the parent records it and carries on.
    """
    argv = sys.argv[1:] if argv is None else argv
    params = json.loads(argv[0]) if argv else {}
    try:
        result = measure(**params)
        result.setdefault("ok", True)
    except Exception as err:  # noqa: BLE001 -- reported to the parent, which records it
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(err).__name__}: {err}".splitlines()[0][:500]}
    sys.stdout.flush()
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0

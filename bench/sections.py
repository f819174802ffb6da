"""The sections of a benchmark run (``--sections``): each runs its workers and returns their results.

Each measurement runs in a worker process (:func:`bench.common.run_worker`) through :func:`measure`, which
applies the run's ``--isa`` caps and records the CPU shares of other jobs and of the ``--contention``
processes while the worker ran.
"""
from __future__ import annotations

import time
from typing import Any

from bench import report
from bench.common import ISA_VARIABLE, UNSET, run_worker
from bench.cpu_share import cpu_sample, cpu_shares
from bench.isa import isa_environment
from bench.peak_flops import best_kernel, numpy_matmul
from bench.pytorch_ref import torch_available

SECTIONS = ("peak", "train", "head", "profile", "pytorch", "pipeline", "tuning")
HEAD_CONFIGS = {"dropcov": ("dropcov", 0), "gap": ("gap", 0), "gap_s1": ("gap", 1)}
MODES = ("GRAPH_MODE", "PYNATIVE_MODE")
CONV_BACKENDS = ("stock", "onednn")  # the values of the config key conv_backend that name one backend


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


#: pids of the running --contention processes (their CPU time is neither the worker's nor other jobs').
contention_pids: list[int] = []


def measure(settings: dict, module: str, params: dict[str, Any], env: dict[str, str | None] | None = None,
            framework: str = "mindspore") -> dict[str, Any]:
    """:func:`bench.common.run_worker` under the run's ``--isa`` caps for ``framework`` (``env`` applied after
    them), with the CPU shares of other jobs and of the ``--contention`` processes while it ran (``cpu_share``)."""
    start = cpu_sample(contention_pids)
    result = run_worker(module, params, env={**isa_environment(settings["isa"], framework), **(env or {})},
                        timeout=settings["timeout"])
    result["cpu_share"] = cpu_shares(start, cpu_sample(contention_pids))
    return result


# ------------------------------------------------------------------------------------------ sections
def _cpu_isas(settings: dict) -> tuple[str | None, ...]:
    """ONEDNN_MAX_CPU_ISA values of the per-ISA experiments: unset (default) and AVX2 on CPU, AVX2 alone
    under ``--isa AVX2``, unset on GPU."""
    if settings["device_target"] != "CPU":
        return (UNSET,)
    return ("AVX2",) if settings["isa"] == "AVX2" else (UNSET, "AVX2")


def run_peak(settings: dict) -> dict[str, Any]:
    """NumPy BLAS here; MindSpore kernels at oneDNN's default ISA and at AVX2, each in its own process."""
    quick, min_seconds = settings["quick"], 0.1 if settings["quick"] else 0.5
    kernels = [numpy_matmul(quick=quick, min_seconds=min_seconds)]
    errors = []
    device = settings["device_target"]
    for isa in _cpu_isas(settings):
        result = measure(settings, "peak_flops", {"quick": quick, "min_seconds": min_seconds, "device_target": device},
                         env={ISA_VARIABLE: isa})
        if result.get("ok"):
            kernels += result["kernels"]
            errors += [f"MindSpore ISA {isa or 'default'}: {error}" for error in result.get("errors", [])]
        else:
            errors.append(f"MindSpore ISA {isa or 'default'}: {result.get('error')}")
    return {"ok": True, "kernels": kernels, "errors": errors, "best": best_kernel(kernels)}


def preferred_backend(settings: dict) -> str:
    """The backend of single-backend experiments (tuning): onednn when measured (what ``conv_backend: auto``
    picks on CPU), else the first of ``conv_backends``."""
    backends = settings["conv_backends"]
    return "onednn" if "onednn" in backends else backends[0]


def train_configurations(settings: dict) -> list[dict[str, Any]]:
    """One worker call per (net, head, mode, backend); evaluation rides along the GRAPH_MODE DropCov/GAP ones.

    The backends of one (net, head, mode) run one after the other, and the heads of one (net, mode) in a
    row, so that the figures each target line compares see the same machine load.
    """
    configs = []
    for net in settings["nets"]:
        for mode in settings["modes"]:
            for label in settings["heads"]:
                head, stride = HEAD_CONFIGS[label]
                for backend in settings["conv_backends"]:
                    configs.append({
                        "head_label": label,
                        "params": {"net_name": net, "head": head, "layer4_stride": stride, "mode_name": mode,
                                   "batch_size": settings["batch_size"], "image_size": settings["image_size"],
                                   "warmup": settings["warmup"], "steps": settings["steps"],
                                   "device_target": settings["device_target"], "amp_level": settings["amp_level"],
                                   "conv_backend": backend,
                                   "eval_steps": (settings["steps"] if mode == "GRAPH_MODE" and label != "gap_s1"
                                                  else 0)},
                    })
    return configs


def run_train(settings: dict) -> list[dict[str, Any]]:
    entries = []
    for config in train_configurations(settings):
        params = config["params"]
        log(f"train {params['net_name']} {config['head_label']} {params['mode_name']} "
             f"{params['conv_backend']} convolutions")
        result = measure(settings, "train_step", params)
        result.update({"head_label": config["head_label"], "net_name": params["net_name"],
                       "mode_name": params["mode_name"], "conv_backend_requested": params["conv_backend"]})
        result.setdefault("conv_backend", params["conv_backend"])  # a failed worker: the backend it was asked for
        if result.get("ok"):
            log(f"  {result['train']['median_s']:.3f} s/step, {result['train']['images_per_s']:.2f} images/s")
        else:
            log(f"  failed: {result.get('error')}")
        entries.append(result)
    return entries


def run_head(settings: dict) -> dict[str, dict[str, Any]]:
    """The head alone, once per convolution backend: ``{backend: worker result}``."""
    runs = {}
    for backend in settings["conv_backends"]:
        log(f"head alone, {backend} convolutions")
        runs[backend] = measure(settings, "head", {
            "net_names": settings["nets"], "batch_size": settings["batch_size"],
            "feature_size": max(settings["image_size"] // 16, 1), "warmup": settings["warmup"],
            "steps": max(settings["steps"], 5), "device_target": settings["device_target"],
            "amp_level": settings["amp_level"], "conv_backend": backend})
    return runs


def run_profile(settings: dict) -> dict[str, dict[str, Any]]:
    """Where the first net's DropCov training step goes, by operator type and group (MindSpore profiler, CPU),
    once per convolution backend: ``{backend: worker result}``."""
    if settings["device_target"] != "CPU":
        return {backend: {"ok": False, "error": "the operator profile reads the CPU profiler's CSV; CPU only"}
                for backend in settings["conv_backends"]}
    net = settings["nets"][0]
    runs = {}
    for backend in settings["conv_backends"]:
        log(f"operator profile ({net} DropCov GRAPH, {backend} convolutions)")
        runs[backend] = measure(settings, "op_profile", {
            "net_name": net, "head": "dropcov", "batch_size": settings["batch_size"],
            "image_size": settings["image_size"], "warmup": settings["warmup"], "steps": min(settings["steps"], 2),
            "conv_backend": backend})
    return runs


def run_pytorch(settings: dict) -> dict[str, Any]:
    """The authors' network in PyTorch at its default ISA and capped at AVX2 (:data:`bench.isa.AVX2_CAPS`);
    under ``--isa AVX2`` capped only. The run of the measured CPU kind also times evaluation."""
    if not torch_available():
        return {"skipped": {"ok": False, "error": "PyTorch is not installed"}}
    if settings["device_target"] != "CPU":
        return {"skipped": {"ok": False, "error": "the PyTorch comparison runs on CPU only"}}
    runs = {}
    for isa in _cpu_isas(settings):
        name = isa or "default"
        log(f"PyTorch, ISA {name}")
        caps = isa_environment("AVX2", "pytorch")
        runs[name] = measure(settings, "pytorch_ref", {
            "net_names": settings["nets"], "batch_size": settings["batch_size"],
            "image_size": settings["image_size"], "warmup": settings["warmup"], "steps": settings["steps"],
            "eval_steps": settings["steps"] if isa == _cpu_isas(settings)[0] else 0, "threads": settings["cores"],
            "quick": settings["quick"], "min_seconds": 0.1 if settings["quick"] else 0.5,
        }, env=caps if isa else dict.fromkeys(caps, UNSET), framework="pytorch")
    return runs


def run_pipeline(settings: dict) -> dict[str, Any]:
    log("input pipeline")
    return measure(settings, "pipeline", {"images": settings["pipeline_images"], "batch_size": settings["batch_size"],
                                          "image_size": settings["image_size"], "max_workers": settings["cores"],
                                          "min_images": 32 if settings["quick"] else 384})


def run_tuning(settings: dict, train: list[dict[str, Any]], heads: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Cheap speed-ups in code this benchmark does not own: measured here, not applied.

    The step experiments use :func:`preferred_backend`'s convolutions; ``heads`` is :func:`run_head`'s result.
    """
    entries = []
    net = settings["nets"][0]
    backend = preferred_backend(settings)
    base_params = {"net_name": net, "head": "dropcov", "mode_name": "GRAPH_MODE",
                   "batch_size": settings["batch_size"], "image_size": settings["image_size"],
                   "warmup": settings["warmup"], "steps": settings["steps"],
                   "device_target": settings["device_target"], "amp_level": settings["amp_level"],
                   "conv_backend": backend}

    def step_entry(name: str, result: dict[str, Any], detail: str) -> dict[str, Any]:
        if not result.get("ok"):
            return {"name": name, "value": None, "baseline": None, "detail": result.get("error")}
        value = result["train"]["median_s"]
        base = baseline["train"]["median_s"] if baseline else None
        gain = f"; step time {100 * (value / base - 1):+.1f}% vs the baseline" if base else ""
        return {"name": name, "value": value, "baseline": base, "detail": detail + gain}

    # A fresh baseline right before the variant, so that both see the same machine load.
    log(f"tuning: baseline ({net} DropCov GRAPH, {backend} convolutions)")
    baseline = measure(settings, "train_step", base_params)
    baseline = (baseline if baseline.get("ok")
                else report.find_train({"train": train}, net, "dropcov", backend=backend))

    log(f"tuning: MindSpore CPU kernel threads = {settings['cores']} ({net} DropCov GRAPH, {backend} convolutions)")
    result = measure(settings, "train_step", {**base_params, "threads_num": settings["cores"]})
    entries.append(step_entry(f"{net} DropCov GRAPH step ({backend} convolutions), "
                              f"op_tuning.threads_num({settings['cores']}) [s/step]",
                              result, "MindSpore's documented default is 25 CPU kernel threads"))
    head = report.by_backend(heads).get(backend) or {}
    for net_name, data in ((head.get("nets") or {}).items() if head.get("ok") else []):
        speedups = data["speedups"]
        entries.append({
            "name": f"{net_name} head: row sums of Cov(X') for the drop rate as (1/N) Xc (Xc^T 1) [ms]",
            "value": 1e3 * speedups["rowsum_cov_fast"]["median_s"],
            "baseline": 1e3 * speedups["rowsum_cov_full"]["median_s"],
            "detail": f"forward only (no gradient flows there); max |diff| {speedups['rowsum_max_abs_diff']:.2g}",
        })
    return entries


def run_sections(settings: dict, results: dict[str, Any]) -> None:
    """Run the sections of ``settings`` in order, adding each one's result to ``results``."""
    if "peak" in settings["sections"]:
        log("dense kernels")
        results["peak"] = run_peak(settings)
    if "train" in settings["sections"]:
        results["train"] = run_train(settings)
    if "head" in settings["sections"]:
        results["head"] = run_head(settings)
    if "profile" in settings["sections"]:
        results["profile"] = run_profile(settings)
    if "pytorch" in settings["sections"]:
        results["pytorch"] = run_pytorch(settings)
        if "peak" in results:  # PyTorch's kernels count towards the machine's limit too
            for run in results["pytorch"].values():
                results["peak"]["kernels"] += run.get("kernels", []) if run.get("ok") else []
            results["peak"]["best"] = best_kernel(results["peak"]["kernels"])
    if "pipeline" in settings["sections"]:
        results["pipeline"] = run_pipeline(settings)
    if "tuning" in settings["sections"]:
        results["tuning"] = run_tuning(settings, results.get("train", []), results.get("head") or {})

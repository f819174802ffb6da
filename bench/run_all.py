"""Run every benchmark, print a table, write bench/results/*.json and update docs/BENCHMARKS.md.

    python bench/run_all.py                                   # batch 8, 224x224, CPU: the full run
    python bench/run_all.py --quick                           # tiny sizes, a smoke run (nothing published)
    python bench/run_all.py --batch_size 64 --device_target GPU --amp_level O2
    python bench/run_all.py --conv_backends onednn --sections train   # one convolution backend only
    python bench/run_all.py --report bench/results/latest.json  # re-print / re-publish a saved run

Each training configuration, the head, the operator profile, the kernels, the PyTorch network and the
input pipeline run in their own worker process (see bench/common.py), so GRAPH_MODE and PYNATIVE_MODE
and the oneDNN ISA caps never share a process. A failed worker is recorded in the JSON and the run
goes on. The operator profile (section "profile", a few minutes at full size) is left out of --quick
unless --sections names it.

Every MindSpore measurement (training step, head, operator profile) is made once per convolution
backend of --conv_backends (config key ``conv_backend``: ``stock`` = MindSpore's kernels, ``onednn`` = our
blocked-layout kernels; default both on CPU, stock on GPU); the kernel table has MindSpore's stock
convolutions, ours and PyTorch's side by side.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

if __package__ in (None, ""):  # run as a script: make `bench` and `src` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report  # noqa: E402
from bench.common import ISA_VARIABLE, REPO_ROOT, UNSET, run_worker  # noqa: E402
from bench.machine import cpu_busy_fraction, describe_machine, load_average, summary_line, usable_cores  # noqa: E402
from bench.peak_flops import best_kernel, numpy_matmul  # noqa: E402
from bench.pytorch_ref import torch_available  # noqa: E402

SECTIONS = ("peak", "train", "head", "profile", "pytorch", "pipeline", "tuning")
QUICK_SKIPS = ("profile",)  # left out of --quick unless named in --sections
HEAD_CONFIGS = {"dropcov": ("dropcov", 0), "gap": ("gap", 0), "gap_s1": ("gap", 1)}
MODES = ("GRAPH_MODE", "PYNATIVE_MODE")
CONV_BACKENDS = ("stock", "onednn")  # the values of the config key conv_backend that name one backend
DEFAULT_DOCS = REPO_ROOT / "docs" / "BENCHMARKS.md"
DEFAULT_RESULTS = REPO_ROOT / "bench" / "results"


def _csv(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [value.strip() for value in text.split(",") if value.strip()]
        unknown = [value for value in values if value not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose from {', '.join(choices)}")
        return values
    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=None, help="images per step (8; quick: 2)")
    parser.add_argument("--image_size", type=int, default=None, help="square input side (224; quick: 64)")
    parser.add_argument("--device_target", default="CPU", choices=("CPU", "GPU"))
    parser.add_argument("--amp_level", default="O0", choices=("O0", "O2", "O3"), help="training precision")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per configuration (3; quick: 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration (8; quick: 2)")
    parser.add_argument("--nets", type=_csv(("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")),
                        default=None, help="comma-separated networks (resnet18,resnet50; quick: resnet18)")
    parser.add_argument("--heads", type=_csv(tuple(HEAD_CONFIGS)), default=list(HEAD_CONFIGS),
                        help="training heads: dropcov (layer4 stride 1), gap (stride 2), gap_s1 (stride 1)")
    parser.add_argument("--modes", type=_csv(MODES), default=list(MODES))
    parser.add_argument("--conv_backends", type=_csv(CONV_BACKENDS), default=None,
                        help="convolution kernels to measure MindSpore with, comma-separated: stock (MindSpore's), "
                             "onednn (ours, blocked layouts; CPU only) (default: stock,onednn on CPU, stock on GPU)")
    parser.add_argument("--sections", type=_csv(SECTIONS), default=None,
                        help=f"what to run, comma-separated from {', '.join(SECTIONS)} (default all; quick: all "
                             f"but {', '.join(QUICK_SKIPS)})")
    parser.add_argument("--pipeline_images", type=int, default=None, help="generated JPEGs (96; quick: 16)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: checks the code runs")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per worker (900; quick: 300)")
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_RESULTS, help="where the JSON goes")
    parser.add_argument("--docs", default=None,
                        help="markdown file to update ('none' to skip); default docs/BENCHMARKS.md for full "
                             "runs, nothing for --quick")
    parser.add_argument("--report", type=Path, default=None, help="print (and publish) a saved results JSON")
    return parser.parse_args(argv)


def settle(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings: command-line values, else the full-run or quick defaults."""
    quick = args.quick

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if quick else full)

    return {
        "quick": quick, "device_target": args.device_target, "amp_level": args.amp_level,
        "batch_size": pick(args.batch_size, 8, 2), "image_size": pick(args.image_size, 224, 64),
        "warmup": pick(args.warmup, 3, 1), "steps": pick(args.steps, 8, 2),
        "nets": pick(args.nets, ["resnet18", "resnet50"], ["resnet18"]), "heads": args.heads,
        "modes": args.modes,
        "conv_backends": args.conv_backends or (list(CONV_BACKENDS) if args.device_target == "CPU" else ["stock"]),
        "sections": pick(args.sections, list(SECTIONS), [name for name in SECTIONS if name not in QUICK_SKIPS]), "timeout": pick(args.timeout, 900.0, 300.0),
        "pipeline_images": pick(args.pipeline_images, 96, 16), "cores": usable_cores(),
    }


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------ sections
def run_peak(settings: dict) -> dict[str, Any]:
    """NumPy BLAS here; MindSpore kernels at oneDNN's default ISA and at AVX2, each in its own process."""
    quick, min_seconds = settings["quick"], 0.1 if settings["quick"] else 0.5
    kernels = [numpy_matmul(quick=quick, min_seconds=min_seconds)]
    errors = []
    device = settings["device_target"]
    for isa in (UNSET, "AVX2") if device == "CPU" else (UNSET,):
        result = run_worker("peak_flops", {"quick": quick, "min_seconds": min_seconds, "device_target": device},
                            env={ISA_VARIABLE: isa}, timeout=settings["timeout"])
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
        _log(f"train {params['net_name']} {config['head_label']} {params['mode_name']} "
             f"{params['conv_backend']} convolutions")
        result = run_worker("train_step", params, timeout=settings["timeout"])
        result.update({"head_label": config["head_label"], "net_name": params["net_name"],
                       "mode_name": params["mode_name"], "conv_backend_requested": params["conv_backend"]})
        result.setdefault("conv_backend", params["conv_backend"])  # a failed worker: the backend it was asked for
        if result.get("ok"):
            _log(f"  {result['train']['median_s']:.3f} s/step, {result['train']['images_per_s']:.2f} images/s")
        else:
            _log(f"  failed: {result.get('error')}")
        entries.append(result)
    return entries


def run_head(settings: dict) -> dict[str, dict[str, Any]]:
    """The head alone, once per convolution backend: ``{backend: worker result}``."""
    runs = {}
    for backend in settings["conv_backends"]:
        _log(f"head alone, {backend} convolutions")
        runs[backend] = run_worker("head", {
            "net_names": settings["nets"], "batch_size": settings["batch_size"],
            "feature_size": max(settings["image_size"] // 16, 1), "warmup": settings["warmup"],
            "steps": max(settings["steps"], 5), "device_target": settings["device_target"],
            "amp_level": settings["amp_level"], "conv_backend": backend}, timeout=settings["timeout"])
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
        _log(f"operator profile ({net} DropCov GRAPH, {backend} convolutions)")
        runs[backend] = run_worker("op_profile", {
            "net_name": net, "head": "dropcov", "batch_size": settings["batch_size"],
            "image_size": settings["image_size"], "warmup": settings["warmup"], "steps": min(settings["steps"], 2),
            "conv_backend": backend}, timeout=settings["timeout"])
    return runs


def run_pytorch(settings: dict) -> dict[str, Any]:
    """The authors' network in PyTorch at oneDNN's default ISA and capped at AVX2."""
    if not torch_available():
        return {"skipped": {"ok": False, "error": "PyTorch is not installed"}}
    if settings["device_target"] != "CPU":
        return {"skipped": {"ok": False, "error": "the PyTorch comparison runs on CPU only"}}
    runs = {}
    for isa in ("default", "AVX2"):
        _log(f"PyTorch, ISA {isa}")
        runs[isa] = run_worker("pytorch_ref", {
            "net_names": settings["nets"], "batch_size": settings["batch_size"],
            "image_size": settings["image_size"], "warmup": settings["warmup"], "steps": settings["steps"],
            "eval_steps": settings["steps"] if isa == "default" else 0, "threads": settings["cores"],
            "quick": settings["quick"], "min_seconds": 0.1 if settings["quick"] else 0.5,
        }, env={ISA_VARIABLE: UNSET if isa == "default" else isa}, timeout=settings["timeout"])
    return runs


def run_pipeline(settings: dict) -> dict[str, Any]:
    _log("input pipeline")
    return run_worker("pipeline", {"images": settings["pipeline_images"], "batch_size": settings["batch_size"],
                                   "image_size": settings["image_size"], "max_workers": settings["cores"],
                                   "min_images": 32 if settings["quick"] else 384}, timeout=settings["timeout"])


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
    _log(f"tuning: baseline ({net} DropCov GRAPH, {backend} convolutions)")
    baseline = run_worker("train_step", base_params, timeout=settings["timeout"])
    baseline = (baseline if baseline.get("ok")
                else report.find_train({"train": train}, net, "dropcov", backend=backend))

    _log(f"tuning: MindSpore CPU kernel threads = {settings['cores']} ({net} DropCov GRAPH, {backend} convolutions)")
    result = run_worker("train_step", {**base_params, "threads_num": settings["cores"]}, timeout=settings["timeout"])
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


# ------------------------------------------------------------------------------------------- output
def write_results(results: dict, output_dir: Path, quick: bool) -> list[Path]:
    """Full runs: ``<UTC timestamp>.json`` and ``latest.json``; quick runs: ``quick.json`` only."""
    output_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1, sort_keys=False) + "\n"
    names = ["quick.json"] if quick else [f"{results['created'].replace(':', '').replace('-', '')}.json",
                                          "latest.json"]
    paths = []
    for name in names:
        path = output_dir / name
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
        paths.append(path)
    return paths


def publish(results: dict, docs: str | None, quick: bool) -> None:
    lines = report.report_lines(results)
    print("\n".join(lines), flush=True)
    docs_path = None if docs == "none" else Path(docs) if docs else (None if quick else DEFAULT_DOCS)
    if docs_path is not None:
        report.update_docs(docs_path, lines, results.get("command", ""))
        _log(f"updated {docs_path}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        results = json.loads(args.report.read_text(encoding="utf-8"))
        report.derive(results)
        publish(results, args.docs or "none", True)
        return 0
    settings = settle(args)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    machine = describe_machine()
    machine["summary"] = summary_line(machine)
    results: dict[str, Any] = {
        "schema": 2, "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["python bench/run_all.py", *map(shlex.quote, argv_list)]),
        "settings": settings, "machine": machine,
    }
    start = time.perf_counter()
    _log(f"{machine['summary']}; load average {machine['load_average']}")
    if "peak" in settings["sections"]:
        _log("dense kernels")
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
    results["load_average_end"] = load_average()
    results["cpu_busy_end"] = cpu_busy_fraction()
    results["wall_s"] = time.perf_counter() - start
    report.derive(results)
    paths = write_results(results, args.output_dir, settings["quick"])
    publish(results, args.docs, settings["quick"])
    _log(f"wrote {', '.join(str(path) for path in paths)} in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The modern training recipe's costs: input pipeline per core, and EMA / accumulation on the training step.

    python bench/recipe.py                 # DeiT pipeline at 1 and 2 workers; ResNet-18+DropCov step, batch 8
    python bench/recipe.py --quick         # tiny sizes: checks that the code runs
    python bench/recipe.py --net_name resnet50 --sections step

Targets: the full DeiT train pipeline (decode, bicubic random resized crop, flip, RandAugment
rand-m9-mstd0.5-inc1, random erasing, Mixup/CutMix) delivers >= 250 images/s per core (images per
CPU-second of the process, every pipeline thread counted), so a 16-core node feeds 4,000 images/s; model
EMA and gradient accumulation add <= 3% to the CPU training step. Each part runs in its own worker
process (bench/recipe_pipeline.py, bench/recipe_step.py); the results go to bench/results/recipe.json
(quick: recipe_quick.json) with the machine, its load average and the share of the CPUs other jobs used
before and after the run (timing on a busy machine is noise).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script: make `bench` and `src` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO_ROOT, run_worker  # noqa: E402
from bench.machine import cpu_busy_fraction, describe_machine, load_average, summary_line  # noqa: E402

PIPELINE_TARGET = 250.0  # images per CPU-second
STEP_OVERHEAD_TARGET = 0.03
SECTIONS = ("pipeline", "step")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code runs")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="pipeline,step")
    parser.add_argument("--net_name", default="resnet18", help="network of the step measurement")
    parser.add_argument("--batch_size", type=int, default=None, help="step batch (8; quick: 2)")
    parser.add_argument("--image_size", type=int, default=None, help="step input side (224; quick: 64)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timed rounds (8; quick: 2)")
    parser.add_argument("--accumulation_steps", type=int, default=2)
    parser.add_argument("--conv_backend", default="stock", help="convolutions of the step (stock, onednn, auto)")
    parser.add_argument("--pipeline_images", type=int, default=None, help="generated JPEGs (128; quick: 16)")
    parser.add_argument("--pipeline_batch", type=int, default=64, help="pipeline batch size")
    parser.add_argument("--output", type=Path, default=None, help="results JSON (default bench/results/recipe*.json)")
    return parser.parse_args(argv)


def report_lines(results: dict[str, Any]) -> list[str]:
    """The figures against their targets, one line each."""
    lines = [f"Machine: {results['machine']['summary']}; load average {results['load_average_start']} -> "
             f"{results['load_average_end']}; other jobs' CPU share before/after {results['cpu_busy_start']} / "
             f"{results['cpu_busy_end']}"]
    pipeline = results.get("pipeline")
    if pipeline and pipeline.get("ok"):
        lines.append(f"Input pipeline ({pipeline['images']} JPEGs {pipeline['jpeg_size']} read {pipeline['repeats']}x, "
                     f"batch {pipeline['batch_size']}, {pipeline['image_size']}px):")
        for run in pipeline["runs"]:
            per_cpu = run["images_per_cpu_s"]
            verdict = "" if run["recipe"] != "deit" else \
                (" PASS" if per_cpu and per_cpu >= PIPELINE_TARGET else " FAIL") + f" (target >= {PIPELINE_TARGET:.0f})"
            lines.append(f"  {run['recipe']:5s} {run['workers']} worker(s): {run['images_per_s']:7.1f} images/s, "
                         f"{per_cpu:7.1f} images per CPU-second{verdict}")
        stages = pipeline["stages_ms_per_image"]
        lines.append("  one worker's ms per image: " + ", ".join(f"{name} {value:.2f}" for name, value in stages.items()))
    elif pipeline:
        lines.append(f"Input pipeline: failed ({pipeline.get('error')})")
    step = results.get("step")
    if step and step.get("ok"):
        lines.append(f"Training step ({step['net_name']}+{step['head']}, batch {step['batch_size']}, "
                     f"{step['image_size']}px, {step['conv_backend']} convolutions, AdamW, accumulation "
                     f"{step['accumulation_steps']}, {step['rounds']} interleaved rounds): median s per batch")
        for name, figures in step["variants"].items():
            overhead = step["overhead"].get(name)
            verdict = "" if overhead is None else \
                f" ({100 * overhead:+.1f}%{' PASS' if overhead <= STEP_OVERHEAD_TARGET else ' FAIL'}, target <= +3%)"
            lines.append(f"  {name:20s} {figures['median_s']:.4f} s (min {figures['min_s']:.4f}){verdict}")
    elif step:
        lines.append(f"Training step: failed ({step.get('error')})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        print(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    machine = describe_machine()
    machine["summary"] = summary_line(machine)
    results: dict[str, Any] = {"created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                               "command": " ".join(["python bench/recipe.py", *(argv or sys.argv[1:])]),
                               "machine": machine, "load_average_start": load_average(),
                               "cpu_busy_start": cpu_busy_fraction()}
    start = time.perf_counter()
    if "pipeline" in sections:
        images = args.pipeline_images or (16 if quick else 128)
        results["pipeline"] = run_worker("recipe_pipeline", {
            "images": images, "batch_size": min(args.pipeline_batch, images), "image_size": 224,
            "workers": [1] if quick else [1, 2], "min_images": 32 if quick else 768}, timeout=1800)
    if "step" in sections:
        results["step"] = run_worker("recipe_step", {
            "net_name": args.net_name, "batch_size": args.batch_size or (2 if quick else 8),
            "image_size": args.image_size or (64 if quick else 224), "rounds": args.rounds or (2 if quick else 8),
            "warmup": 1 if quick else 2, "accumulation_steps": args.accumulation_steps,
            "conv_backend": args.conv_backend}, timeout=3600)
    results["load_average_end"] = load_average()
    results["cpu_busy_end"] = cpu_busy_fraction()
    results["wall_s"] = time.perf_counter() - start
    output = args.output or REPO_ROOT / "bench" / "results" / ("recipe_quick.json" if quick else "recipe.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print("\n".join(report_lines(results)))
    print(f"wrote {output} in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

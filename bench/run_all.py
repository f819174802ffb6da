"""Run every benchmark, print a table, write bench/results/*.json and update docs/BENCHMARKS.md.

    python bench/run_all.py                                   # batch 8, 224x224, CPU: the full run
    python bench/run_all.py --quick                           # tiny sizes, a smoke run (nothing published)
    python bench/run_all.py --batch_size 64 --device_target GPU --amp_level O2
    python bench/run_all.py --conv_backends onednn --sections train   # one convolution backend only
    python bench/run_all.py --report bench/results/latest.json  # re-print / re-publish a saved run
    python bench/run_all.py --isa AVX2                        # an AVX2-only CPU, emulated (see bench/isa.py)
    python bench/run_all.py --contention 2 --sections train   # with 2 competing busy processes

Each training configuration, the head, the operator profile, the kernels, the PyTorch network and the
input pipeline run in their own worker process (see bench/common.py), so GRAPH_MODE and PYNATIVE_MODE
and the oneDNN ISA caps never share a process. A failed worker is recorded in the JSON and the run
goes on. The operator profile (section "profile", a few minutes at full size) is left out of --quick
unless --sections names it.

Every MindSpore measurement (training step, head, operator profile) is made once per convolution
backend of --conv_backends (config key ``conv_backend``: ``stock`` = MindSpore's kernels, ``onednn`` = our
kernels, what ``auto`` picks on CPU; default both on CPU, stock on GPU); the kernel table has MindSpore's
stock convolutions, ours and PyTorch's side by side.

``--isa AVX2`` measures an AVX2-only CPU, emulated on a wider one by capping oneDNN, ATen and MKL
(:mod:`bench.isa`); ``--contention N`` runs N busy processes for the whole run (:mod:`bench.contention`).
Each worker's result records the share of the CPUs other jobs took while it ran (:mod:`bench.cpu_share`).
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

from bench import report, sections  # noqa: E402
from bench.common import REPO_ROOT  # noqa: E402
from bench.contention import BusyProcesses, contention_argument  # noqa: E402
from bench.docs_block import section_text, update_docs  # noqa: E402
from bench.isa import ISA_SETTINGS, cpu_kind  # noqa: E402
from bench.machine import cpu_busy_fraction, describe_machine, load_average, summary_line, usable_cores  # noqa: E402
from bench.report_text import cpu_kind_label, report_lines  # noqa: E402
from bench.sections import CONV_BACKENDS, HEAD_CONFIGS, MODES, SECTIONS  # noqa: E402

QUICK_SKIPS = ("profile",)  # left out of --quick unless named in --sections
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
    parser.add_argument("--isa", choices=ISA_SETTINGS, default="native",
                        help="native: the CPU as it is; AVX2: an AVX2-only CPU, emulated by capping oneDNN "
                             "(MindSpore, our kernels, PyTorch), ATen and MKL at AVX2 (default native)")
    parser.add_argument("--contention", type=contention_argument, default=0,
                        help="competing busy processes (one core each) started before the first worker and "
                             "stopped after the last (default 0)")
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
        "isa": args.isa, "contention": args.contention,
    }


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
    """Print the report; update the docs' section of the run's CPU kind (default docs for full runs only)."""
    lines = report_lines(results)
    print("\n".join(lines), flush=True)
    docs_path = None if docs == "none" else Path(docs) if docs else (None if quick else DEFAULT_DOCS)
    if docs_path is not None:
        kind = (results.get("machine", {}).get("cpu_kind") or {}).get("kind") or cpu_kind_label(results)
        update_docs(docs_path, kind, section_text(cpu_kind_label(results), results.get("created", "?"),
                                                  results.get("command", ""), lines))
        sections.log(f"updated {docs_path} ({kind} section)")


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
    machine["cpu_kind"] = cpu_kind(machine["isa_flags"], settings["isa"])
    results: dict[str, Any] = {
        "schema": 2, "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["python bench/run_all.py", *map(shlex.quote, argv_list)]),
        "settings": settings, "machine": machine,
    }
    start = time.perf_counter()
    contention = f"; {settings['contention']} competing busy processes" if settings["contention"] else ""
    sections.log(f"{machine['summary']}; CPU kind {machine['cpu_kind']['label']}; load average "
         f"{machine['load_average']}{contention}")
    with BusyProcesses(settings["contention"]) as busy:
        sections.contention_pids[:] = busy.pids
        try:
            sections.run_sections(settings, results)
        finally:
            sections.contention_pids.clear()
    results["load_average_end"] = load_average()
    results["cpu_busy_end"] = cpu_busy_fraction()
    results["wall_s"] = time.perf_counter() - start
    report.derive(results)
    paths = write_results(results, args.output_dir, settings["quick"])
    publish(results, args.docs, settings["quick"])
    sections.log(f"wrote {', '.join(str(path) for path in paths)} in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

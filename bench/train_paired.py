"""Training steps of ours against MindSpore's stock kernels in one process, paired step by step (AVX2).

    python bench/train_paired.py --net_name resnet18 --head gap --contention 2
    python bench/train_paired.py --net_name resnet50 --head dropcov --pairs 24

Fresh processes of the same code differ by several % on a quiet machine, and under busy processes one
process's step swings by up to 2x within minutes, so whole processes alternated over rounds
(``bench/train_alternated.py``) cannot resolve 10% there. Here one worker (:mod:`bench.paired_steps`)
holds both training steps and times them in pairs, the order alternating; the figure is the median over
pairs of stock's step time over ours' (above 1: ours is faster), with how many pairs ours won.

Both sides run at the stock side's oneDNN cap, AVX2 (on an AVX-512 CPU: the emulation of :mod:`bench.isa`),
so this compares the two on AVX2 CPUs. Results: ``bench/results/train_paired_<net>_<head>[_contention<N>].json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make `bench` and `src` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.alternation import add_network_arguments, count_argument, default_output  # noqa: E402
from bench.common import REPO_ROOT, run_worker  # noqa: E402
from bench.contention import BusyProcesses, contention_argument  # noqa: E402
from bench.isa import cpu_kind, isa_environment  # noqa: E402
from bench.machine import cpu_busy_fraction, describe_machine, summary_line  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_network_arguments(parser, "gap")
    parser.add_argument("--warmup", type=count_argument(1), default=2, help="untimed steps of each side")
    parser.add_argument("--pairs", type=count_argument(1), default=16, help="timed steps of each side")
    parser.add_argument("--contention", type=contention_argument, default=0,
                        help="busy processes competing for the CPUs throughout (default 0)")
    parser.add_argument("--quick", action="store_true", help="64 px, 1 + 2 steps: checks the code runs")
    parser.add_argument("--output", type=Path, default=None,
                        help="results JSON (bench/results/train_paired_<net>_<head>[_contention<N>].json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.warmup, args.pairs = 64, 1, 2
    if args.output is None:
        args.output = default_output(REPO_ROOT / "bench" / "results", f"train_paired_{args.net_name}_{args.head}",
                                     args.contention)
    machine = describe_machine()
    record = {"kind": "train_paired", "settings": {**vars(args), "output": str(args.output)}, "machine": machine,
              "cpu_kind": cpu_kind(machine["isa_flags"], "AVX2"), "busy_before": cpu_busy_fraction()}
    load = f"; {args.contention} competing busy processes" if args.contention else ""
    print(f"{args.net_name} + {args.head} training step, batch {args.batch_size}, {args.image_size} px, ours and "
          f"stock paired in one process; {summary_line(machine)}; CPU kind {record['cpu_kind']['label']}{load}",
          flush=True)
    params = {"net_name": args.net_name, "head": args.head, "batch_size": args.batch_size,
              "image_size": args.image_size, "warmup": args.warmup, "pairs": args.pairs}
    with BusyProcesses(args.contention):
        result = run_worker("paired_steps", params, env=isa_environment("AVX2", "mindspore"), timeout=3600.0)
    if not result["ok"]:
        print(f"the paired steps failed: {result['error']}", file=sys.stderr)
        return 1
    record.update(result=result, busy_after=cpu_busy_fraction())
    for pair, (ours, stock) in enumerate(zip(result["seconds"]["ours"], result["seconds"]["stock"]), 1):
        print(f"pair {pair:2d}: ours {ours:.3f} s, stock {stock:.3f} s, stock/ours {stock / ours:.3f}")
    print(f"median s per step: ours {result['median_s']['ours']:.4f}, stock {result['median_s']['stock']:.4f}; "
          f"ours' speed over stock (median over pairs) {result['stock_over_ours']:.3f}x, ours faster in "
          f"{result['ours_faster_pairs']} of {result['pairs']} pairs; other jobs' CPU share "
          f"{record['busy_before']} before, {record['busy_after']} after")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.output} at {time.strftime('%Y-%m-%dT%H:%M:%S')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

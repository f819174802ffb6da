"""Training steps of ours against MindSpore's stock kernels, in fresh processes alternated over rounds.

    python bench/train_alternated.py --net_name resnet18 --head gap --contention 2 --rounds 4
    python bench/train_alternated.py --isa AVX2 --sides ours,stock,ours_own_pool --contention 2

Each side is ``train.py``'s step timed by ``bench/run_all.py``'s ``train_step`` worker (fixed batch,
``warmup`` untimed then ``steps`` timed steps, median); the sides run in alternating order over ``rounds``
(:mod:`bench.alternation`), so that drifting load, which ``--contention N`` busy processes make large, hits
them alike. Sides: ``ours`` (``conv_backend`` auto), ``stock`` (MindSpore's kernels) and ``ours_own_pool``
(ours with ``DROPCOV_ONEDNN_THREADPOOL=own``: every call on our thread pool). Results:
``bench/results/train_alternated_<net>_<head>_<isa>[_contention<N>].json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script: make `bench` and `src` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.alternation import (  # noqa: E402
    Runner,
    add_alternation_arguments,
    add_network_arguments,
    count_argument,
    default_output,
    measure_alternated,
)
from bench.common import REPO_ROOT, run_worker  # noqa: E402
from bench.isa import isa_environment  # noqa: E402

#: Each side's convolution backend and extra environment.
SIDES = {
    "ours": {"conv_backend": "auto", "env": {}},
    "stock": {"conv_backend": "stock", "env": {}},
    "ours_own_pool": {"conv_backend": "auto", "env": {"DROPCOV_ONEDNN_THREADPOOL": "own"}},
}
DEFAULT_SIDES = ("ours", "stock")


def _train_seconds(result: dict[str, Any]) -> dict[str, Any]:
    """The worker's result with its training step's median seconds at the top level (``median_s``)."""
    return {**result, "median_s": result["train"]["median_s"]} if result.get("ok") else result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_network_arguments(parser, "dropcov")
    parser.add_argument("--rounds", type=count_argument(1), default=4, help="alternations of the sides")
    parser.add_argument("--warmup", type=count_argument(0), default=2, help="untimed steps per process")
    parser.add_argument("--steps", type=count_argument(1), default=8, help="timed steps per process")
    parser.add_argument("--quick", action="store_true", help="64 px, 1 + 2 steps, 1 round: checks the code runs")
    add_alternation_arguments(parser, tuple(SIDES), DEFAULT_SIDES, "train_alternated_<net>_<head>_<isa>")
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = default_output(REPO_ROOT / "bench" / "results",
                                     f"train_alternated_{args.net_name}_{args.head}_{args.isa}", args.contention)
    if args.quick:
        args.image_size, args.warmup, args.steps, args.rounds = 64, 1, 2, 1
    settings = {"net_name": args.net_name, "head": args.head, "batch_size": args.batch_size,
                "image_size": args.image_size, "warmup": args.warmup, "steps": args.steps}

    def runner(side: str) -> Runner:
        params = {**settings, "conv_backend": SIDES[side]["conv_backend"]}
        env = {**isa_environment(args.isa, "mindspore"), **SIDES[side]["env"]}
        return lambda: _train_seconds(run_worker("train_step", params, env=env))

    title = f"{args.net_name} + {args.head} training step, batch {args.batch_size}, {args.image_size} px"
    return measure_alternated("train_alternated", title, {side: runner(side) for side in args.sides},
                              args.rounds, args.contention, args.isa, {**vars(args), "output": str(args.output)},
                              args.output, "s per step")


if __name__ == "__main__":
    raise SystemExit(main())

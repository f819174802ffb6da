"""Sides measured in fresh processes, alternated over rounds (ABC, CBA, ABC, ...), optionally under busy processes.

Machine load drifts over minutes (under competing processes one process's speed swings by up to 2x), so
two figures taken one after the other compare the moments as much as the code. Alternating the sides over
rounds and taking each side's median over rounds lets both see the same drift. Used by
``bench/eval_forward.py`` (evaluation against PyTorch and stock) and ``bench/train_alternated.py``
(training step against stock).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bench.contention import BusyProcesses, contention_argument
from bench.isa import ISA_SETTINGS, cpu_kind
from bench.machine import cpu_busy_fraction, describe_machine, summary_line

#: A side: runs one fresh worker process and returns its result, with ``ok`` and ``median_s``.
Runner = Callable[[], dict[str, Any]]


def count_argument(least: int) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number of at least ``least`` (rounds, steps, sizes)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected {least} or more, not {value}")
        return value
    return parse


#: The networks the comparison benchmarks build.
NET_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101")


def add_network_arguments(parser: argparse.ArgumentParser, default_head: str | None) -> None:
    """``--net_name``, ``--batch_size``, ``--image_size`` and, unless ``default_head`` is None, ``--head``."""
    parser.add_argument("--net_name", default="resnet18", choices=NET_NAMES)
    if default_head is not None:
        parser.add_argument("--head", default=default_head, choices=("dropcov", "gap"))
    parser.add_argument("--batch_size", type=count_argument(1), default=8)
    parser.add_argument("--image_size", type=count_argument(1), default=224)


def sides_argument(known: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse ``type`` for ``--sides``: two or more distinct names among ``known``, comma-separated."""
    def parse(text: str) -> list[str]:
        sides = [side.strip() for side in text.split(",") if side.strip()]
        if any(side not in known for side in sides) or len(set(sides)) != len(sides) or len(sides) < 2:
            raise argparse.ArgumentTypeError(f"--sides takes two or more distinct of {', '.join(known)}; "
                                             f"got {text!r}")
        return sides
    return parse


def add_alternation_arguments(parser: argparse.ArgumentParser, sides: Sequence[str],
                              default_sides: Sequence[str], output_pattern: str) -> None:
    """The options every alternated benchmark takes: ``--sides``, ``--isa``, ``--contention`` and ``--output``
    (default: ``bench/results/<output_pattern>[_contention<N>].json``, filled in by :func:`default_output`)."""
    parser.add_argument("--sides", type=sides_argument(tuple(sides)), default=list(default_sides),
                        help=f"comma-separated, of {', '.join(sides)} (default {','.join(default_sides)})")
    parser.add_argument("--isa", default="native", choices=ISA_SETTINGS, help="AVX2: cap every side at AVX2")
    parser.add_argument("--contention", type=contention_argument, default=0,
                        help="busy processes competing for the CPUs throughout (default 0)")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"results JSON (bench/results/{output_pattern}[_contention<N>].json)")


def default_output(results_dir: Path, stem: str, contention: int) -> Path:
    """``<results_dir>/<stem>[_contention<N>].json``."""
    return results_dir / f"{stem}{f'_contention{contention}' if contention else ''}.json"


def summarise(rounds: list[dict[str, dict]]) -> dict[str, Any]:
    """Per side, the median over rounds of each process's median seconds; ours' speed over each other side's
    (``ours_over_<side>``, when a side is called ``ours``)."""
    medians = {side: statistics.median(r[side]["median_s"] for r in rounds) for side in rounds[0]}
    summary: dict[str, Any] = {"median_s": medians}
    if "ours" in medians:
        summary.update({f"ours_over_{side}": medians[side] / medians["ours"] for side in medians if side != "ours"})
    return summary


def measure_alternated(kind: str, title: str, runners: Mapping[str, Runner], rounds: int, contention: int,
                       isa: str, settings: Mapping[str, Any], output: Path, unit: str) -> int:
    """Run every side once per round, in alternating order, under ``contention`` busy processes; print each
    figure and the summary, write the record to ``output``. Returns the exit status (1: a side failed)."""
    machine = describe_machine()
    record: dict[str, Any] = {"kind": kind, "settings": dict(settings), "machine": machine,
                              "cpu_kind": cpu_kind(machine["isa_flags"], isa), "busy_before": cpu_busy_fraction(),
                              "rounds": []}
    load = f"; {contention} competing busy processes" if contention else ""
    print(f"{title}; {summary_line(machine)}; CPU kind {record['cpu_kind']['label']}{load}", flush=True)
    names = list(runners)
    with BusyProcesses(contention):
        for number in range(1, rounds + 1):
            results = {}
            for side in names if number % 2 else reversed(names):
                results[side] = runners[side]()
                if not results[side]["ok"]:
                    print(f"{side} failed: {results[side]['error']}", file=sys.stderr)
                    return 1
                print(f"round {number}: {side:19s} {results[side]['median_s']:.4f} {unit}", flush=True)
            record["rounds"].append({side: results[side] for side in names})
    record["busy_after"] = cpu_busy_fraction()
    record["summary"] = summarise(record["rounds"])
    medians = ", ".join(f"{side} {value:.4f}" for side, value in record["summary"]["median_s"].items())
    speeds = ", ".join(f"{key[len('ours_over_'):]} {value:.3f}x" for key, value in record["summary"].items()
                       if key.startswith("ours_over_"))
    print(f"median over rounds, {unit}: {medians}" + (f"; ours' speed over {speeds}" if speeds else "") +
          f"; other jobs' CPU share {record['busy_before']} before, {record['busy_after']} after")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {output} at {time.strftime('%Y-%m-%dT%H:%M:%S')}")
    return 0

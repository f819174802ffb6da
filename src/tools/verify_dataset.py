"""Decode every image of a dataset in parallel and list all bad files.

Usage::

    python -m src.tools.verify_dataset PATH [--workers N]

PATH is a dataset root holding ``train/`` and ``val/``, a single folder of class folders, or a
CIFAR-10 binary folder (file sizes are checked). Prints one ``BAD path: reason`` line per problem and
a summary; exits 1 when anything is bad, 2 (with one ``verify_dataset: error:`` line) when PATH cannot be
read or the command line is wrong, 0 otherwise.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from src.cli import run_entry_point
from src.errors import CommandLineParser


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(prog="python -m src.tools.verify_dataset",
                                     description="Decode every image of a dataset and list the bad files.")
    parser.add_argument("path", help="dataset root (train/ and val/), a folder of class folders, or CIFAR-10 bins")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="decoding processes (default: all cores)")
    return parser


def _main(argv: Sequence[str]) -> int:
    from src.data.verify import progress_printer, verify_dataset

    args = build_parser().parse_args(argv)
    report = verify_dataset(args.path, max(1, args.workers), progress_printer(sys.stderr))
    for path, reason in report.problems:
        print(f"BAD {path}: {reason}")
    verdict = "all good" if report.ok else f"{len(report.problems)} bad"
    print(f"{args.path}: {report.images_checked} images checked, {verdict}")
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (see the module docstring)."""
    return run_entry_point(_main, argv, program="verify_dataset")


if __name__ == "__main__":
    sys.exit(main())

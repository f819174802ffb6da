"""Decode every image of a dataset in parallel and list all the bad files (``src.tools.verify_dataset``).

Unlike :mod:`src.data.checks`, which stops at the first structural problem, this walks the whole
dataset leniently and reports every problem: missing or empty class folders, files without an image
extension (training skips them), links that cannot be followed, files Pillow cannot fully decode, and
CIFAR-10 ``.bin`` files of the wrong size. Hidden and operating-system files are skipped, as training
skips them.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence, TextIO

from PIL import Image

from src.data.checks import (
    CIFAR10_FILE_BYTES,
    CIFAR10_FILE_PATTERNS,
    CIFAR10_RECORDS_PER_FILE,
    CIFAR10_SUBFOLDER,
    survey_image_folder,
)
from src.errors import DropCovError

ProgressCallback = Callable[[int, int, int], None]


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_dataset`: images decoded and every problem as (path, reason)."""

    images_checked: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def image_decode_problem(path: str) -> str | None:
    """Why Pillow cannot fully decode ``path``, or None when it decodes.

    Any exception of the decoder counts as a bad file: the reason names its type and message.
    """
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # a broken file can make a decoder raise anything: report it
        return f"{type(err).__name__}: {err}"
    return None


def _split_roots(path: str) -> list[str]:
    roots = [os.path.join(path, name) for name in ("train", "val") if os.path.isdir(os.path.join(path, name))]
    return roots or [path]


def collect_images(path: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Image files under ``path`` (train/ and val/, or one folder of class folders) and structural problems."""
    if not os.path.isdir(path):
        raise DropCovError(f"dataset folder {path} does not exist")
    images: list[str] = []
    problems: list[tuple[str, str]] = []
    for root in _split_roots(path):
        listing, found = survey_image_folder(root)
        images.extend(listing.files)
        problems.extend((problem.path, problem.reason) for problem in found)
        problems.extend((skipped, "sub-folder of a class folder (not searched)" if skipped.endswith(os.sep)
                         else "not an image (extension)") for skipped in listing.skipped)
    return images, problems


def _cifar10_problems(path: str) -> tuple[int, list[tuple[str, str]]] | None:
    """Size problems of CIFAR-10 ``.bin`` files in ``path``, or None when it holds none."""
    names = sorted(name for name in os.listdir(path) if any(p.match(name) for p in CIFAR10_FILE_PATTERNS.values()))
    if not names:
        return None
    problems = [(os.path.join(path, name), f"{os.path.getsize(os.path.join(path, name))} bytes, expected "
                 f"{CIFAR10_FILE_BYTES}") for name in names
                if os.path.getsize(os.path.join(path, name)) != CIFAR10_FILE_BYTES]
    return len(names), problems


def decode_problems(files: Sequence[str], num_workers: int = 1,
                    progress: ProgressCallback | None = None) -> list[tuple[str, str]]:
    """Decode ``files`` in ``num_workers`` processes; returns (path, reason) for each that fails.

    ``progress(done, total, bad)`` is called as results arrive.
    """
    results: Iterable[str | None]
    pool = ProcessPoolExecutor(max_workers=num_workers) if num_workers > 1 and len(files) > 1 else None
    try:
        if pool is None:
            results = map(image_decode_problem, files)
        else:
            chunk = max(1, min(256, len(files) // (num_workers * 8)))
            results = pool.map(image_decode_problem, files, chunksize=chunk)
        problems = []
        for done, (path, problem) in enumerate(zip(files, results), start=1):
            if problem:
                problems.append((path, problem))
            if progress:
                progress(done, len(files), len(problems))
        return problems
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def progress_printer(stream: TextIO = sys.stderr, interval_s: float | None = None) -> ProgressCallback:
    """A progress callback writing ``verify: done/total images decoded, bad bad`` to ``stream``.

    On a terminal the line is rewritten in place (every 0.2 s); elsewhere a new line every 5 s.
    """
    terminal = stream.isatty()
    interval = interval_s if interval_s is not None else (0.2 if terminal else 5.0)
    last = [0.0]

    def report(done: int, total: int, bad: int) -> None:
        now = time.monotonic()
        if done != total and now - last[0] < interval:
            return
        last[0] = now
        line = f"verify: {done}/{total} images decoded, {bad} bad"
        if terminal:
            stream.write("\r" + line + ("\n" if done == total else ""))
        else:
            stream.write(line + "\n")
        stream.flush()

    return report


def verify_dataset(path: str, num_workers: int = 1, progress: ProgressCallback | None = None) -> VerifyReport:
    """Check every file of the dataset at ``path`` (image folders or CIFAR-10 ``.bin`` files)."""
    if not os.path.isdir(path):
        raise DropCovError(f"dataset folder {path} does not exist")
    nested = os.path.join(path, CIFAR10_SUBFOLDER)
    cifar = _cifar10_problems(nested if os.path.isdir(nested) else path)
    if cifar is not None:
        count, problems = cifar
        return VerifyReport(images_checked=count * CIFAR10_RECORDS_PER_FILE, problems=problems)
    images, problems = collect_images(path)
    problems += decode_problems(images, num_workers, progress)
    return VerifyReport(images_checked=len(images), problems=sorted(problems))

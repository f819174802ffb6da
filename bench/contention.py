"""Competing load for ``--contention N``: N busy processes that run while the benchmark measures.

A training job rarely has the CPU to itself: a GPU node's data-loading workers, or other jobs on a
shared machine, keep some cores busy. Each competing process spins in a pure-Python loop at 100% of one
core (no memory traffic, no threads of its own), so N of them take a fixed, repeatable share of the
scheduler from the benchmark. They are started before the first worker and stopped when the run ends.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from types import TracebackType

#: What each competing process runs: a busy loop that never touches memory beyond its own frame, and
#: ends within ~20 ms once its parent is gone (a benchmark killed outright leaves no busy process behind).
BUSY_LOOP = (
    "import os\n"
    "parent = os.getppid()\n"
    "while os.getppid() == parent:\n"
    "    for _ in range(1000000):\n"
    "        pass\n"
)


def parse_contention(text: str) -> int:
    """``--contention`` value: a whole number of competing processes, 0 or more.

    Raises:
        ValueError: not an integer, or negative (argparse turns it into a one-line usage error).
    """
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"--contention takes a number of busy processes (0, 1, 2, ...), not {text!r}") from None
    if count < 0:
        raise ValueError(f"--contention takes a number of busy processes (0, 1, 2, ...), not {count}")
    return count


def contention_argument(text: str) -> int:
    """:func:`parse_contention` as an argparse ``type``: a bad value is a one-line usage error with its reason."""
    try:
        return parse_contention(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class BusyProcesses:
    """``count`` busy processes for the life of a ``with`` block (none for 0).

    ``pids`` lists the running processes; leaving the block terminates them and waits for each.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._processes: list[subprocess.Popen] = []

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes if process.poll() is None]

    def __enter__(self) -> BusyProcesses:
        try:
            for _ in range(self.count):
                self._processes.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP],
                                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                        stderr=subprocess.DEVNULL))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Terminate every process (kill one that does not end within 5 s) and wait for it."""
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes = []

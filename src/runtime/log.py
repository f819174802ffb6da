"""Process logging for the entry points: who prints what, and where the run's log file goes.

Rank 0 logs INFO to the console and to ``<output_dir>/<log_name>``; other ranks of a data-parallel job
log only warnings and errors to the console (their INFO lines would repeat rank 0's), unless
``all_ranks`` asks for everything, in which case each rank also writes ``<stem>_rank<r>.log``.
The project's modules log through ``logging.getLogger(__name__)`` and never configure handlers.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import Union

from .files import ensure_writable_directory

_HANDLER_MARK = "_dropcov_handler"
CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def stderr_line(text: str) -> None:
    """Write ``text`` and its newline to stderr in one write: a launcher that merges a rank's stdout and stderr
    (mpirun's --merge-stderr-to-stdout) could put another line between the two writes of ``print``, and the
    launch scripts read these lines back."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _mark(handler: logging.Handler) -> logging.Handler:
    setattr(handler, _HANDLER_MARK, True)
    return handler


def log_file_name(log_name: str, rank: int, all_ranks: bool) -> str:
    """``train.log`` for rank 0; ``train_rank<r>.log`` for another rank when every rank writes a file."""
    if rank == 0 or not all_ranks:
        return log_name
    stem, dot, suffix = log_name.rpartition(".")
    return f"{stem}_rank{rank}.{suffix}" if dot else f"{log_name}_rank{rank}"


def setup_logging(output_dir: Union[str, os.PathLike] | None, rank: int = 0, all_ranks: bool = False,
                  log_name: str = "train.log", level: int = logging.INFO) -> Path | None:
    """Configure the root logger for this process; returns the log file written, or None.

    Args:
        output_dir: run folder for the log file (created if missing); None logs to the console only.
        rank: this process's rank; rank 0 gets ``level`` on the console and in the file.
        all_ranks: give every rank ``level`` and its own file (``<stem>_rank<r>.log``); otherwise
            ranks other than 0 show WARNING and above on the console only.
        log_name: file name inside ``output_dir`` (``train.log``; ``eval.log`` for evaluation).
        level: the level of the ranks that log fully.

    Calling it again replaces the handlers it added before (tests, or a second run in one process).
    In a multi-rank job the console lines carry ``[rank r]`` so merged launcher output stays readable.
    """
    # a log file that cannot grow (a full disk) must not print a traceback per record; the write that matters
    # (a checkpoint) fails with its own one-line error
    logging.raiseExceptions = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()
    verbose = rank == 0 or all_ranks
    console_level = level if verbose else logging.WARNING
    prefix = f"[rank {rank}] " if rank or all_ranks else ""
    console = _mark(logging.StreamHandler(sys.stdout))
    console.setLevel(console_level)
    console.setFormatter(logging.Formatter(CONSOLE_FORMAT.replace("%(message)s", prefix + "%(message)s"),
                                           DATE_FORMAT))
    root.addHandler(console)
    root.setLevel(min(console_level, level))

    log_path = None
    if output_dir is not None and verbose:
        directory = ensure_writable_directory(output_dir)
        log_path = directory / log_file_name(log_name, rank, all_ranks)
        file_handler = _mark(logging.FileHandler(log_path, encoding="utf-8"))
        file_handler.setLevel(level)
        file_handler.setFormatter(logging.Formatter(CONSOLE_FORMAT, DATE_FORMAT))
        root.addHandler(file_handler)
    # MindSpore's Python logger has its own handler; keep it from repeating through ours.
    logging.getLogger("mindspore").propagate = False
    return log_path


class DeferredLogFile:
    """Holds the log records of a run until its folder is written (:meth:`attach`), so that a run refused
    during its checks leaves no ``train.log`` behind and an existing run's log is not appended to."""

    def __init__(self, level: int = logging.INFO) -> None:
        self._buffer = _mark(logging.handlers.MemoryHandler(capacity=1 << 30, flushLevel=logging.CRITICAL + 1))
        self._buffer.setLevel(level)
        self._buffer.setFormatter(logging.Formatter(CONSOLE_FORMAT, DATE_FORMAT))
        logging.getLogger().addHandler(self._buffer)
        self.path: Path | None = None

    def attach(self, output_dir: Union[str, os.PathLike], log_name: str = "train.log") -> Path:
        """Create ``output_dir/log_name`` (appending to an existing one), write the held records, keep logging there."""
        directory = ensure_writable_directory(output_dir)
        self.path = directory / log_name
        file_handler = _mark(logging.FileHandler(self.path, encoding="utf-8"))
        file_handler.setLevel(self._buffer.level)
        file_handler.setFormatter(logging.Formatter(CONSOLE_FORMAT, DATE_FORMAT))
        self._buffer.setTarget(file_handler)
        self._buffer.flush()
        root = logging.getLogger()
        root.removeHandler(self._buffer)
        root.addHandler(file_handler)
        self._buffer.close()
        return self.path

    def discard(self) -> None:
        """Drop the held records (the run did not start)."""
        logging.getLogger().removeHandler(self._buffer)
        self._buffer.buffer.clear()
        self._buffer.close()

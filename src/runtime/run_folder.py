"""The output folder of a training run: one run at a time, nothing written until the run starts.

Rank 0 of a run (:class:`RunFolder`)

- checks the folder can be written without creating anything, and holds an exclusive lock on
  ``OUTPUT/.lock`` (``flock``: released on exit, also after a crash; the file names the holder's pid and is
  removed on a normal exit) so a second run into the same folder stops with one line instead of
  interleaving logs and checkpoints;
- refuses a fresh run (no ``--resume``) into a folder that holds another run's checkpoints, unless
  ``overwrite`` deletes them;
- writes nothing else until :meth:`commit` (after every check of the run passed): then the log file
  receives the records held so far; a run that stops before leaves no folder it created behind.
"""
from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Iterable

from src.errors import DropCovError

from .files import check_writable_directory, missing_folders
from .log import DeferredLogFile

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
RUN_FILES = ("config.yaml", "class_indices.json", "train.log", "metrics.jsonl", "metrics.png")
"""What a training run writes into its folder besides the checkpoints."""


class RunFolder:
    """Rank 0's hold on a run's output folder (see the module docstring); other ranks only read."""

    def __init__(self, output: Path, checkpoint_dir: Path, is_main: bool) -> None:
        self.output, self.checkpoint_dir, self.is_main = output, checkpoint_dir, is_main
        self.log = DeferredLogFile() if is_main else None
        self.committed = False
        self._created: list[Path] = []
        self._locks: list = []
        # the checkpoint folder is locked too: a second run may name it as its --checkpoint_path
        self._checkpoints_locked = checkpoint_dir.resolve() != output.resolve()
        self._separate_checkpoints = output.resolve() not in checkpoint_dir.resolve().parents

    def open(self, resume: bool, overwrite: bool, checkpoint_prefix: str) -> None:
        """Check, lock and (for ``overwrite``) clear the folder; refuse to mix two runs in it."""
        if not self.is_main:
            return
        check_writable_directory(self.output, "output_path")
        check_writable_directory(self.checkpoint_dir, "checkpoint_path")
        self._lock(self.output, "output_path")
        if self._checkpoints_locked:
            self._lock(self.checkpoint_dir, "checkpoint_path")
        earlier = self._earlier_run(checkpoint_prefix)
        if earlier and not resume:
            if not overwrite:
                where, option = ((f"checkpoint_path {self.checkpoint_dir}", "--checkpoint_path")
                                 if self._separate_checkpoints else (f"output_path {self.output}", "--output_path"))
                raise DropCovError(f"{where} holds the checkpoints of an earlier run ({earlier[-1].name}, ...): continue "
                                   f"it with --resume auto, choose a new {option}, or start over with --overwrite "
                                   "(deletes them)")
            self._delete(earlier + [self.output / name for name in RUN_FILES])
            logger.warning("--overwrite: deleted the earlier run's %d checkpoint(s) and files in %s", len(earlier),
                           self.output)

    def _lock(self, folder: Path, option: str) -> None:
        """Create ``folder`` if needed (remembering what was created) and hold ``folder/.lock``."""
        self._created += missing_folders(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle = open(folder / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held until close()
        except OSError as error:
            raise DropCovError(f"{option} {str(folder)!r} cannot be written ({error.strerror or error}); choose a "
                               f"writable folder with --{option}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DropCovError(f"{option} {folder} is in use by another training run ({holder}); wait for it to "
                               f"end or choose another --{option}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self._locks.append(handle)

    def _earlier_run(self, checkpoint_prefix: str) -> list[Path]:
        if not self.checkpoint_dir.is_dir():
            return []
        return sorted(path for path in self.checkpoint_dir.glob("*.ckpt")
                      if path.name.startswith(f"{checkpoint_prefix}-") or path.name == "best.ckpt")

    @staticmethod
    def _delete(paths: Iterable[Path]) -> None:
        for path in paths:
            if path.is_file():
                path.unlink()

    def commit(self, log_name: str = "train.log") -> None:
        """The run starts: write the held log records to the log file (rank 0)."""
        if self.log is not None:
            self.log.attach(self.output, log_name)
        self.committed = True

    def close(self) -> None:
        """Release the lock; for a run that did not start, drop its held log and the folders it created."""
        if self.log is not None and not self.committed:
            self.log.discard()
        for handle in self._locks:
            Path(handle.name).unlink(missing_ok=True)  # while still held: no other run can have it
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._locks.clear()
        if not self.committed:
            for folder in reversed(self._created):
                try:
                    folder.rmdir()  # only if empty
                except OSError:
                    continue

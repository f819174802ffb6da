"""Training bookkeeping: the ``metrics.jsonl`` writer, a throughput/ETA meter and the log-line text.

``metrics.jsonl`` holds one JSON object per line, each with a ``"kind"``:

- ``"step"``: ``epoch`` (1-based), ``step`` (1-based within the epoch), ``global_step`` (optimizer steps
  done), ``loss`` (mean over the steps since the previous record), ``lr`` (of the last step),
  ``images_per_sec`` (all ranks), ``time`` (seconds since the run started).
- ``"epoch"``: ``epoch``, ``global_step``, ``loss`` (epoch mean), ``lr`` (last step), ``epoch_time``,
  ``images_per_sec``.
- ``"eval"``: ``epoch``, ``global_step``, ``top1``, ``top5``, ``loss``, ``count``.
- ``"start"`` (``epoch``/``global_step`` already done: non-zero after a resume, ``epochs``,
  ``steps_per_epoch``, ``images_per_step``), ``"stop"`` (a signal's graceful stop, with ``reason``),
  ``"resume"`` (``global_step`` continued from, ``checkpoint``, ``dropped``: records of the steps after it,
  which the resumed run does again, removed from the file) and ``"end"`` (``best_top1``): run events.

A resumed run appends to the same file after :meth:`MetricsWriter.resume_at` removed what it will redo,
so every step, epoch and evaluation appears once.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Union


class MetricsWriter:
    """Append-only ``metrics.jsonl`` writer; a no-op when ``enabled`` is False (ranks other than 0)."""

    def __init__(self, path: Union[str, os.PathLike], enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def resume_at(self, global_step: int, checkpoint: str) -> int:
        """A run continues from ``global_step``: drop the records of later steps (the interrupted run's, done
        again now), append a ``resume`` record; returns how many were dropped. The file is replaced atomically."""
        if not self.enabled:
            return 0
        records = read_metrics(self.path)
        kept = [record for record in records if int(record.get("global_step", 0)) <= global_step]
        dropped = len(records) - len(kept)
        from src.runtime.files import atomic_write_text

        atomic_write_text(self.path, "".join(json.dumps(record, allow_nan=False) + "\n" for record in kept))
        self.write("resume", global_step=global_step, checkpoint=checkpoint, dropped=dropped)
        return dropped

    def write(self, kind: str, **fields: Any) -> None:
        """Append ``{"kind": kind, **fields}`` as one line, flushed (floats rounded, NaN as null)."""
        if not self.enabled:
            return
        record = {"kind": kind, **{key: _plain(value) for key, value in fields.items()}}
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record, allow_nan=False) + "\n")


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        value = value.item()
    if isinstance(value, float):
        return round(value, 8) if math.isfinite(value) else None
    return value


def read_metrics(path: Union[str, os.PathLike]) -> List[Dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (an unreadable trailing line from a killed run is skipped)."""
    records = []
    path = Path(path)
    if not path.is_file():
        return records
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def latest_per_epoch(records: List[Dict[str, Any]], kind: str) -> List[Dict[str, Any]]:
    """The last record of ``kind`` for each epoch, sorted by epoch (a resumed run re-does epochs)."""
    by_epoch: Dict[int, Dict[str, Any]] = {}
    for record in records:
        if record.get("kind") == kind and "epoch" in record:
            by_epoch[int(record["epoch"])] = record
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def format_duration(seconds: float) -> str:
    """``1:02:03`` for 3723 s; ``0:00:05`` for 5 s; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ThroughputMeter:
    """Images per second and time left, measured between host synchronisations.

    ``images_per_step`` counts every rank (per-device batch x ranks). The first window of a run
    contains graph compilation, so the ETA uses the step time of later windows once there is one.
    """

    def __init__(self, images_per_step: int, clock=time.perf_counter) -> None:
        self.images_per_step = int(images_per_step)
        self._clock = clock
        self._window_start = clock()
        self._window_steps = 0
        self._steady_time = 0.0
        self._steady_steps = 0
        self._first_time = 0.0
        self._first_steps = 0

    def restart_window(self) -> None:
        """Start a new window now (after an evaluation or a checkpoint, which are not training time)."""
        self._window_start = self._clock()
        self._window_steps = 0

    def step(self, count: int = 1) -> None:
        """Record ``count`` training steps launched in the current window."""
        self._window_steps += count

    def close_window(self) -> float:
        """End the window (call right after a host sync); returns its images per second."""
        elapsed = max(self._clock() - self._window_start, 1e-9)
        steps = self._window_steps
        if self._first_steps == 0 and self._steady_steps == 0:
            self._first_time, self._first_steps = elapsed, steps
        else:
            self._steady_time += elapsed
            self._steady_steps += steps
        self.restart_window()
        return steps * self.images_per_step / elapsed

    def seconds_per_step(self) -> float:
        """Mean step time of the steady windows (the first window if there is no other yet)."""
        if self._steady_steps:
            return self._steady_time / self._steady_steps
        if self._first_steps:
            return self._first_time / self._first_steps
        return float("nan")

    def eta(self, steps_left: int) -> float:
        """Seconds for ``steps_left`` more steps at the measured pace."""
        return steps_left * self.seconds_per_step()


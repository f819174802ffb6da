"""Checkpoint files: write atomically, rotate, find the latest, load with one clear error.

Writing: :func:`save_checkpoint_atomic` (temporary file in the same folder, then ``os.replace``: a
``.ckpt`` under its final name is always complete) and :class:`CheckpointManager` (periodic checkpoints,
at most ``keep_max`` kept, plus ``best.ckpt``). A training checkpoint holds the network parameters, the
optimizer state (``moments.<param>``, ``global_step``, ``momentum``, ``learning_rate``) and the entries
``epoch_num`` (completed epochs), ``global_step`` (completed optimizer steps) and ``config`` (YAML text).

Reading: :func:`check_checkpoint_file` (cheap checks before any long work), :func:`load_checkpoint_file`
(one-line :class:`DropCovError` for a missing, non-checkpoint or truncated file), :func:`read_extra`.
What the parameters mean for a network (fit, fine-tuning) is :mod:`src.models.weights`; resuming a run
is :mod:`src.engine.resume`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Union

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn

from src.errors import DropCovError

from .file_kind import checkpoint_problem
from .signals import removed_if_forced_out

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".ckpt"
BEST_CHECKPOINT_NAME = "best.ckpt"
_PARTIAL_RE = re.compile(r"^\..+\.(\d+)\.partial\.(ckpt|tmp)$")

ParamDict = Dict[str, Any]
SaveObject = Union[nn.Cell, Sequence[Parameter], Sequence[dict], Mapping[str, Any]]


# --------------------------------------------------------------------------------------------- writing
def save_checkpoint_atomic(save_obj: SaveObject, path: Union[str, os.PathLike],
                           extra: Mapping[str, Union[int, float, bool, str]] | None = None) -> Path:
    """Write a checkpoint so that ``path`` is either the old file or the complete new one, never partial.

    Args:
        save_obj: what :func:`mindspore.save_checkpoint` accepts -- a Cell (a ``TrainOneStepCell`` saves the
            network *and* its optimizer: ``moments.<name>``, ``global_step``, ``momentum``,
            ``learning_rate``), a list of Parameters, a list of ``{"name", "data"}`` dicts, or a
            name -> Parameter dict.
        path: final file name; must end in ``.ckpt``. Its folder is created if missing.
        extra: run state saved beside the parameters: int/float/bool (stored as 0-d tensors) or str
            (e.g. ``config`` as YAML text). A key that is also a parameter name (``global_step`` of the
            optimizer) is written once, with the value from ``extra``.

    The data goes to a hidden ``.<name>.<pid>.partial.ckpt`` in the same folder (same file system), is
    fsync'ed, then renamed over ``path`` with ``os.replace``. On failure the partial file is removed, the
    previous ``path`` is untouched, and an ``OSError`` becomes a one-line :class:`DropCovError`.
    """
    path = Path(path).expanduser()
    if path.suffix != CHECKPOINT_SUFFIX:
        raise DropCovError(f"checkpoint file name {str(path)!r} must end in {CHECKPOINT_SUFFIX}")
    if isinstance(save_obj, Mapping):  # a loaded dict: keep its text entries (e.g. ``config``)
        extra = {**{name: value for name, value in save_obj.items() if isinstance(value, str)}, **(extra or {})}
    append = _check_extra(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".{path.stem}.{os.getpid()}.partial{CHECKPOINT_SUFFIX}"
    partial_of_mindspore = partial.with_suffix(".tmp")  # mindspore writes <name>.tmp, then renames
    try:
        with removed_if_forced_out(partial), removed_if_forced_out(partial_of_mindspore):
            with _mindspore_logs_held_back():  # a failed write is our one line, not MindSpore's CRITICAL first
                ms.save_checkpoint(_as_saveable(save_obj), str(partial), append_dict=dict(append) or None,
                                   choice_func=(lambda name: name not in append) if append else None)
            os.chmod(partial, 0o644)  # mindspore leaves it read-only
            with open(partial, "rb") as written:
                os.fsync(written.fileno())
            os.replace(partial, path)
    except OSError as error:
        raise DropCovError(f"could not write checkpoint {path}: {error}; the previous file (if any) is "
                           "unchanged") from error
    finally:
        for leftover in (partial, partial_of_mindspore):
            if leftover.exists():
                leftover.unlink()
    return path


@contextlib.contextmanager
def _mindspore_logs_held_back() -> Iterator[None]:
    """Silence MindSpore's Python logger (``ME.mindspore.log.<pid>`` in 2.10) for the duration of the block."""
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.startswith(("mindspore", "ME.mindspore"))]
    previous = [each.disabled for each in loggers]
    for each in loggers:
        each.disabled = True
    try:
        yield
    finally:
        for each, disabled in zip(loggers, previous):
            each.disabled = disabled


def _check_extra(extra: Mapping[str, Any]) -> Dict[str, Union[int, float, bool, str]]:
    checked: Dict[str, Union[int, float, bool, str]] = {}
    for key, value in extra.items():
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(key, str) or not isinstance(value, (bool, int, float, str)):
            raise TypeError(f"checkpoint extra entry {key!r}: expected a str key and an int, float, bool or "
                            f"str value, got {type(value).__name__}")
        checked[key] = value
    return checked


def _as_saveable(save_obj: SaveObject) -> Union[nn.Cell, list]:
    if isinstance(save_obj, nn.Cell):
        return save_obj
    if isinstance(save_obj, Mapping):
        return [{"name": name, "data": Tensor(value) if isinstance(value, np.ndarray) else value}
                for name, value in save_obj.items() if not isinstance(value, str)]
    return list(save_obj)


class CheckpointManager:
    """Periodic checkpoints ``<prefix>-<epoch>_<global_step>.ckpt`` (newest ``keep_max`` kept) and a
    ``best.ckpt`` rewritten whenever the validation metric improves, all in ``directory``.

    Periodic checkpoints already in the folder (a resumed run) count towards ``keep_max``. Partial files
    left by a killed writer (``.<name>.<pid>.partial.*`` whose process is gone) are removed on creation.
    ``best_metric`` is the value to beat (restore it on resume from the checkpoint's ``best_metric``).
    Only one process (rank 0) should own a manager for a folder.
    """

    def __init__(self, directory: Union[str, os.PathLike], prefix: str, keep_max: int = 5,
                 best_name: str = BEST_CHECKPOINT_NAME, best_metric: float | None = None) -> None:
        if int(keep_max) != keep_max or keep_max < 1:
            raise DropCovError(f"keep_checkpoint_max must be an integer >= 1, got {keep_max!r}")
        if not prefix or "/" in prefix or os.sep in prefix:
            raise DropCovError(f"checkpoint prefix must be a plain file-name part, got {prefix!r}")
        self.directory = Path(directory).expanduser()
        self.prefix = prefix
        self.keep_max = int(keep_max)
        self.best_path = self.directory / best_name
        self.best_metric = best_metric
        self._periodic_re = re.compile(rf"^{re.escape(prefix)}-(\d+)_(\d+){re.escape(CHECKPOINT_SUFFIX)}$")
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.directory)

    def periodic_checkpoints(self) -> List[Path]:
        """This prefix's periodic checkpoints in the folder, oldest (lowest global step) first."""
        found = []
        for entry in self.directory.iterdir():
            match = self._periodic_re.match(entry.name)
            if match and entry.is_file():
                found.append(((int(match.group(2)), int(match.group(1))), entry))
        return [entry for _, entry in sorted(found)]

    def save(self, save_obj: SaveObject, epoch_num: int, global_step: int,
             extra: Mapping[str, Any] | None = None) -> Path:
        """Write ``<prefix>-<epoch_num>_<global_step>.ckpt`` with ``epoch_num``/``global_step`` in it, then
        delete the oldest periodic checkpoints beyond ``keep_max``. Returns the path written."""
        entries = {**(extra or {}), "epoch_num": int(epoch_num), "global_step": int(global_step)}
        if self.best_metric is not None:
            entries.setdefault("best_metric", float(self.best_metric))
        path = save_checkpoint_atomic(save_obj, self.directory / f"{self.prefix}-{epoch_num}_{global_step}"
                                      f"{CHECKPOINT_SUFFIX}", entries)
        for old in self.periodic_checkpoints()[:-self.keep_max]:
            if old != path:
                old.unlink()
                logger.info("removed old checkpoint %s (keep_checkpoint_max=%d)", old, self.keep_max)
        return path

    def save_best(self, save_obj: SaveObject, metric: float, epoch_num: int, global_step: int,
                  extra: Mapping[str, Any] | None = None) -> bool:
        """Rewrite ``best.ckpt`` if ``metric`` (higher is better, e.g. top-1) beats the best so far;
        returns whether it did. The checkpoint records ``best_metric``."""
        if self.best_metric is not None and not metric > self.best_metric:
            return False
        entries = {**(extra or {}), "epoch_num": int(epoch_num), "global_step": int(global_step),
                   "best_metric": float(metric)}
        save_checkpoint_atomic(save_obj, self.best_path, entries)
        self.best_metric = float(metric)
        return True


def remove_stale_partials(directory: Union[str, os.PathLike]) -> List[Path]:
    """Delete ``.<name>.<pid>.partial.ckpt|tmp`` files whose writing process no longer exists."""
    removed = []
    for entry in Path(directory).iterdir():
        match = _PARTIAL_RE.match(entry.name)
        if match and entry.is_file() and not _process_alive(int(match.group(1))):
            entry.unlink()
            removed.append(entry)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def latest(directory: Union[str, os.PathLike]) -> Path | None:
    """The most recently written readable checkpoint in ``directory`` (``--resume auto``), or None.

    Considers ``*.ckpt`` files (periodic and ``best.ckpt``), newest modification time first (then the
    higher global step in a periodic name); skips hidden partial files, ``*.tmp`` and files whose record
    structure is broken (truncated or not a checkpoint), logging a warning for each skipped one.
    Files under a final ``.ckpt`` name are complete when this project wrote them (atomic rename), so a
    broken one was damaged afterwards; resuming from the newest intact one loses only the work after it.
    Raises :class:`DropCovError` when the folder holds ``.ckpt`` files and none is readable: starting
    from scratch over them would silently throw the run away.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        return None
    candidates = [entry for entry in directory.iterdir()
                  if entry.suffix == CHECKPOINT_SUFFIX and not entry.name.startswith(".") and entry.is_file()]
    candidates.sort(key=lambda entry: (entry.stat().st_mtime_ns, _step_in_name(entry.name), entry.name),
                    reverse=True)
    problems = []
    for candidate in candidates:
        problem = checkpoint_problem(candidate)
        if problem is None:
            return candidate
        logger.warning("--resume auto skips %s: %s", candidate, problem)
        problems.append((candidate, problem))
    if problems:
        newest, problem = problems[0]
        raise DropCovError(f"--resume auto: none of the {len(problems)} checkpoint file(s) in {directory} can be "
                           f"read (the newest, {newest.name}, {problem}); pass --resume PATH of an intact "
                           "checkpoint, or move the broken files away to start from scratch")
    return None


def _step_in_name(name: str) -> int:
    """Global step of a periodic ``<prefix>-<epoch>_<step>.ckpt`` name (-1 for others): breaks mtime ties."""
    match = re.search(r"-\d+_(\d+)\.ckpt$", name)
    return int(match.group(1)) if match else -1


# --------------------------------------------------------------------------------------------- reading
def check_checkpoint_file(path: Union[str, os.PathLike], option: str | None = None) -> Path:
    """The cheap checks of :func:`load_checkpoint_file` without reading the values: the file exists, is
    not a folder, its record structure is intact (not truncated, not another kind of file) and it is named
    ``*.ckpt``. Entry points call it right after parsing, so a bad path fails before any long work.
    Returns the expanded path; raises a one-line :class:`DropCovError` naming the file and ``--option``.
    """
    path = Path(path).expanduser()
    where = f" (--{option})" if option else ""
    if not path.exists():
        raise DropCovError(f"checkpoint file {path}{where} does not exist; check the path")
    if path.is_dir():
        raise DropCovError(f"checkpoint file {path}{where} is a directory; give the .ckpt file inside it")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise DropCovError(f"{path}{where} {problem}")
    if path.suffix != CHECKPOINT_SUFFIX:
        raise DropCovError(f"{path}{where} looks like a MindSpore checkpoint but MindSpore only reads files "
                           f"named *{CHECKPOINT_SUFFIX}; rename or link it to a name ending in {CHECKPOINT_SUFFIX}")
    return path


def load_checkpoint_file(path: Union[str, os.PathLike], option: str | None = None) -> ParamDict:
    """Read a MindSpore ``.ckpt`` into a name -> Parameter (or str) dict.

    Raises a one-line :class:`DropCovError` naming the file (and ``--option`` when given) if it does not
    exist, is a directory, is empty, is not a checkpoint (text, image, PyTorch file, ...), is truncated or
    otherwise cannot be parsed (:func:`check_checkpoint_file` does the checks that need no parsing).
    """
    path = check_checkpoint_file(path, option)
    where = f" (--{option})" if option else ""
    try:
        param_dict = ms.load_checkpoint(str(path))
    except (ValueError, RuntimeError, TypeError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DropCovError(f"checkpoint {path}{where} cannot be read: {first_line}") from error
    if not param_dict:
        raise DropCovError(f"checkpoint {path}{where} holds no parameters")
    return param_dict


def read_extra(param_dict: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """An entry written through ``extra`` (``config`` text, ``best_metric``, ...) as a Python value."""
    if key not in param_dict:
        return default
    value = param_dict[key]
    if isinstance(value, str):
        return value
    array = value.asnumpy() if isinstance(value, Tensor) else np.asarray(value)
    return array.reshape(-1)[0].item()

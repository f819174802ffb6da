"""Checkpoint reading and writing for train, eval, predict and the converters.

Writing: :func:`save_checkpoint_atomic` (temporary file in the same folder, then ``os.replace``: a
``.ckpt`` under its final name is always complete) and :class:`CheckpointManager` (periodic checkpoints,
at most ``keep_max`` kept, plus ``best.ckpt``). A training checkpoint holds the network parameters, the
optimizer state (``moments.<param>``, ``global_step``, ``momentum``, ``learning_rate``) and the entries
``epoch_num`` (completed epochs), ``global_step`` (completed optimizer steps) and ``config`` (YAML text).

Reading: :func:`check_checkpoint_file` (cheap checks before any long work), :func:`load_checkpoint_file`
(one-line :class:`DropCovError` for a missing, non-checkpoint or truncated file),
:func:`load_network_weights` (checks every network name and shape itself before loading, ignores
bookkeeping entries, and says which config fits a checkpoint that does not fit),
:func:`adapt_for_finetune` (drops a classifier of another class count), :func:`read_resume_state` and
:func:`restore_optimizer_state` (exact resume).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn

from src.errors import DropCovError

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".ckpt"
BEST_CHECKPOINT_NAME = "best.ckpt"
#: Entries of a training checkpoint that are not network parameters (optimizer state, run state).
BOOKKEEPING_NAMES = frozenset({
    "global_step", "momentum", "learning_rate", "epoch_num", "step_num", "config", "best_metric",
    "scale_sense", "loss_scale", "current_iterator_step", "last_overflow_iterator_step",
})
#: Name prefixes of optimizer state (MindSpore optimizers clone the parameters under these prefixes).
BOOKKEEPING_PREFIXES = ("moments.", "optimizer.", "learning_rate_group_", "accum.", "moment1.", "moment2.",
                        "beta1_power", "beta2_power")
#: Known backbones by (block type, blocks per layer) -- the model registry's names.
BACKBONES = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}
#: The repository's config folder, searched for a config that fits a mismatched checkpoint.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
_PARTIAL_RE = re.compile(r"^\..+\.(\d+)\.partial\.(ckpt|tmp)$")
_LIST_LIMIT = 5
_PROTO_VALUE_TAG = 0x0A  # field 1 (repeated `value`), wire type 2: every checkpoint record starts with it
_CRC_TRAILER = b"crc_num"

ParamDict = Dict[str, Any]
SaveObject = Union[nn.Cell, Sequence[Parameter], Sequence[dict], Mapping[str, Any]]


# --------------------------------------------------------------------------------------------- writing
def save_checkpoint_atomic(save_obj: SaveObject, path: Union[str, os.PathLike],
                           extra: Mapping[str, Union[int, float, bool, str]] | None = None) -> Path:
    """Write a checkpoint so that ``path`` is either the old file or the complete new one, never partial.

    Args:
        save_obj: what :func:`mindspore.save_checkpoint` accepts -- a Cell (a ``TrainOneStepCell`` saves the
            network *and* its optimizer: ``moments.<name>``, ``global_step``, ``momentum``,
            ``learning_rate``), a list of Parameters (see :func:`training_parameters`), a list of
            ``{"name", "data"}`` dicts, or a name -> Parameter dict.
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


def training_parameters(network: nn.Cell, optimizer: nn.Optimizer | None = None) -> List[Parameter]:
    """All Parameters a training checkpoint holds: the network's (trainable and BN statistics) followed by
    the optimizer's own (``moments.*``, ``global_step``, ``momentum``, ``learning_rate``), each once."""
    seen, params = set(), []
    cells = [network] + ([optimizer] if optimizer is not None else [])
    for cell in cells:
        for param in cell.get_parameters():
            if param.name not in seen:
                seen.add(param.name)
                params.append(param)
    return params


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
        problem = _structure_problem(candidate)
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
    problem = _structure_problem(path)
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


def _structure_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable checkpoint (a phrase completing "<path> ..."), or None if its
    records are intact. Walks the protobuf records (tag 0x0A, varint length, payload) without reading
    the payloads, so it is cheap even for large files."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            head = stream.read(512)
            if size == 0:
                return "is empty (0 bytes): not a checkpoint; re-download or re-copy it"
            if head[0] != _PROTO_VALUE_TAG:
                return f"is not a MindSpore checkpoint ({_guess_file_kind(path, head)})"
            position = 0
            while position < size:
                stream.seek(position)
                header = stream.read(11)
                if header[0] != _PROTO_VALUE_TAG:
                    if header.startswith(_CRC_TRAILER) and size - position == len(_CRC_TRAILER) + 10:
                        return None
                    return (f"is corrupted or not a checkpoint: unexpected byte 0x{header[0]:02x} at offset "
                            f"{position} of {size}; re-download or re-copy it")
                length, length_bytes = _read_varint(header[1:])
                if length is None:
                    return _truncated(size, position)
                end = position + 1 + length_bytes + length
                if end > size:
                    return _truncated(size, end)
                position = end
    except OSError as error:
        return f"cannot be read: {error}"
    return None


def _truncated(size: int, needed: int) -> str:
    return (f"is a truncated checkpoint: the file ends at byte {size} inside a record that needs at least "
            f"{needed} bytes (an interrupted download or copy); re-download or re-copy it")


def _read_varint(data: bytes) -> Tuple[int | None, int]:
    value = 0
    for index, byte in enumerate(data[:10]):
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, index + 1
    return None, 0


def _guess_file_kind(path: Path, head: bytes) -> str:
    suffix = path.suffix.lower()
    if head.startswith(b"\xff\xd8\xff"):
        return "it is a JPEG image"
    if head.startswith(b"\x89PNG"):
        return "it is a PNG image"
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip archive, e.g. a PyTorch .pth; convert PyTorch weights with the converter tool"
    if head.startswith(b"\x80"):
        return "it looks like a Python pickle, e.g. an old PyTorch .pth; convert it with the converter tool"
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed; unpack it first"
    if suffix in (".mindir", ".onnx", ".safetensors"):
        return f"a {suffix[1:]} file is not a .ckpt checkpoint"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(char.isprintable() or char in "\r\n\t" for char in text):
        return f"it is a text file starting {text[:40]!r}"
    return f"unknown content starting {head[:8].hex(' ')}"


def is_bookkeeping(name: str, value: Any = None) -> bool:
    """Whether a checkpoint entry is run/optimizer state rather than a network parameter: the names in
    :data:`BOOKKEEPING_NAMES`, the prefixes in :data:`BOOKKEEPING_PREFIXES`, and any str or 0-d value
    (the entries ``save_checkpoint_atomic`` appends)."""
    if name in BOOKKEEPING_NAMES or name.startswith(BOOKKEEPING_PREFIXES) or isinstance(value, str):
        return True
    return value is not None and _shape(value) == ()


def _shape(value: Any) -> Tuple[int, ...] | None:
    if isinstance(value, str):
        return None
    if isinstance(value, (tuple, list)):
        return tuple(int(dim) for dim in value)
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(int(dim) for dim in shape)


def _network_entries(param_dict: Mapping[str, Any]) -> Dict[str, Any]:
    return {name: value for name, value in param_dict.items() if not is_bookkeeping(name, value)}


def describe_checkpoint(param_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """What network a parameter dict (a checkpoint, or ``{p.name: p}`` of a network) was built as.

    Values may be Parameters, Tensors, arrays or shape tuples. Returns a dict with
    ``backbone`` (``resnet18`` ... ``resnet152`` or None), ``block`` (``basic`` when ``layerN.i.bn1d`` /
    no ``conv3``, ``bottleneck`` when ``layerN.i.conv3`` exists), ``blocks_per_layer`` (4 ints),
    ``head`` (``dropcov`` if ``layer_reduce.weight`` exists, else ``gap``), ``cov_dim``
    (``layer_reduce.weight.shape[0]``), ``class_num`` (``fc.weight.shape[0]``), ``feature_dim``
    (``fc.weight.shape[1]``) and ``training_state`` (optimizer moments present). Unknown fields are None.
    """
    shapes = {name: _shape(value) for name, value in _network_entries(param_dict).items()}
    blocks: Dict[int, int] = {}
    has_conv3 = False
    for name in shapes:
        match = re.match(r"^layer([1-4])\.(\d+)\.(\w+)", name)
        if not match:
            continue
        layer, index, part = int(match.group(1)), int(match.group(2)), match.group(3)
        blocks[layer] = max(blocks.get(layer, 0), index + 1)
        has_conv3 |= part == "conv3"
    block = ("bottleneck" if has_conv3 else "basic") if blocks else None
    blocks_per_layer = [blocks.get(layer, 0) for layer in (1, 2, 3, 4)] if blocks else None
    backbone = BACKBONES.get((block, tuple(blocks_per_layer))) if blocks_per_layer else None
    reduce_shape = shapes.get("layer_reduce.weight")
    fc_shape = shapes.get("fc.weight")
    return {
        "backbone": backbone,
        "block": block,
        "blocks_per_layer": blocks_per_layer,
        "head": ("dropcov" if reduce_shape else "gap") if (blocks or fc_shape) else None,
        "cov_dim": reduce_shape[0] if reduce_shape else None,
        "class_num": fc_shape[0] if fc_shape and len(fc_shape) == 2 else None,
        "feature_dim": fc_shape[1] if fc_shape and len(fc_shape) == 2 else None,
        "training_state": any(name.startswith("moments.") for name in param_dict),
    }


def describe_network(net: nn.Cell) -> Dict[str, Any]:
    """:func:`describe_checkpoint` of a network's own parameters (what its config built)."""
    return describe_checkpoint({param.name: param for param in net.get_parameters()})


def format_description(description: Mapping[str, Any]) -> str:
    """``resnet50 / head dropcov / cov_dim 128 / class_num 1001`` for a :func:`describe_checkpoint` dict."""
    backbone = description.get("backbone")
    if backbone is None and description.get("blocks_per_layer"):
        backbone = f"{description.get('block') or 'unknown'} blocks {description['blocks_per_layer']}"
    parts = [backbone or "unknown backbone", f"head {description.get('head') or 'unknown'}"]
    if description.get("head") == "dropcov":
        parts.append(f"cov_dim {description.get('cov_dim')}")
    parts.append(f"class_num {description.get('class_num') if description.get('class_num') else 'unknown'}")
    return " / ".join(parts)


@dataclass
class LoadReport:
    """What :func:`load_network_weights` found and did (names are network parameter names)."""

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)


def load_network_weights(net: nn.Cell, param_dict: Mapping[str, Any], strict: bool = True,
                         allow_missing: Iterable[str] = (), source: str = "the checkpoint") -> LoadReport:
    """Load the network parameters of ``param_dict`` into ``net`` after checking names and shapes.

    Bookkeeping entries (:func:`is_bookkeeping`: optimizer moments, ``global_step``, ``epoch_num``,
    ``config``, ...) are ignored. With ``strict`` any missing (except ``allow_missing``, e.g. the
    classifier dropped by :func:`adapt_for_finetune`), unexpected or shape-mismatched network parameter
    raises one :class:`DropCovError` that lists them and says which config fits the checkpoint; nothing
    is loaded then. Without ``strict`` the matching parameters are loaded and the rest reported.
    Values of another float dtype are cast to the network's dtype. ``source`` names the file in messages.
    """
    net_params = {param.name: param for param in net.get_parameters()}
    entries = _network_entries(param_dict)
    allowed = set(allow_missing)
    report = LoadReport(ignored=sorted(set(param_dict) - set(entries)))
    report.missing = [name for name in net_params if name not in entries and name not in allowed]
    report.unexpected = [name for name in entries if name not in net_params]
    for name, param in net_params.items():
        if name in entries:
            saved = _shape(entries[name])
            if saved != tuple(param.shape):
                report.mismatched.append((name, saved, tuple(param.shape)))
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise DropCovError(_mismatch_message(net, param_dict, report, source))

    mismatched = {name for name, _, _ in report.mismatched}
    to_load = {}
    for name, param in net_params.items():
        if name in entries and name not in mismatched:
            to_load[name] = _with_dtype(name, entries[name], param.dtype)
    not_loaded, _ = ms.load_param_into_net(net, to_load, strict_load=True)
    not_loaded = set(not_loaded)
    report.loaded = [name for name in to_load if name not in not_loaded]
    if report.missing or report.unexpected or report.mismatched:
        logger.warning("loaded %d of %d network parameters from %s; %s", len(report.loaded), len(net_params),
                       source, _problem_lists(report))
    return report


def _with_dtype(name: str, value: Any, dtype: Any) -> Parameter:
    if isinstance(value, Parameter) and value.dtype == dtype:
        return value
    return Parameter(_as_tensor(value, dtype), name=name)


def _as_tensor(value: Any, dtype: Any) -> Tensor:
    array = value.asnumpy() if isinstance(value, Tensor) else np.asarray(value)
    return Tensor(array).astype(dtype)


def _abbreviate(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f", ... (+{len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else "")


def _format_shape(shape: Tuple[int, ...] | None) -> str:
    return "x".join(str(dim) for dim in shape) if shape else "scalar"


def _problem_lists(report: LoadReport) -> str:
    parts = []
    if report.missing:
        parts.append(f"{len(report.missing)} missing ({_abbreviate(report.missing)})")
    if report.unexpected:
        parts.append(f"{len(report.unexpected)} unexpected ({_abbreviate(report.unexpected)})")
    if report.mismatched:
        shapes = [f"{name}: checkpoint {_format_shape(saved)} vs network {_format_shape(wanted)}"
                  for name, saved, wanted in report.mismatched]
        parts.append(f"{len(report.mismatched)} of another shape ({_abbreviate(shapes)})")
    return "; ".join(parts)


def _mismatch_message(net: nn.Cell, param_dict: Mapping[str, Any], report: LoadReport, source: str) -> str:
    saved, built = describe_checkpoint(param_dict), describe_network(net)
    fix = _config_fix(saved, built)
    if fix:
        return (f"{source} does not fit the network: it is {format_description(saved)} but the config builds "
                f"{format_description(built)}: {fix}. Differences: {_problem_lists(report)}.")
    message = f"{source} does not fit the network: {_problem_lists(report)}."
    prefix_hint = _prefix_hint(report)
    return f"{message} {prefix_hint}" if prefix_hint else message


def _config_fix(saved: Mapping[str, Any], built: Mapping[str, Any]) -> str:
    options = []
    if saved["backbone"] and saved["backbone"] != built["backbone"]:
        options.append(f"--net_name {saved['backbone']}")
    if saved["head"] and built["head"] and saved["head"] != built["head"]:
        options.append(f"--head {saved['head']}")
    if saved["cov_dim"] and saved["cov_dim"] != built["cov_dim"] and saved["head"] == "dropcov":
        options.append(f"--cov_dim {saved['cov_dim']}")
    if saved["class_num"] and built["class_num"] and saved["class_num"] != built["class_num"]:
        options.append(f"--class_num {saved['class_num']}")
    if not options:
        return ""
    fix = "use " + " ".join(options)
    model_changes = [option for option in options if not option.startswith("--class_num")]
    config_file = _matching_config_file(saved) if model_changes else None
    if config_file:
        fix += f" ({config_file})"
    if not model_changes:
        fix += ", or fine-tune it to your class count with --pre_trained (the classifier is re-initialised)"
    return fix


def _matching_config_file(saved: Mapping[str, Any]) -> str | None:
    """The ``config/*.yaml`` of this repository whose model keys fit a described checkpoint, if any.

    A file fits when its ``net_name`` and ``head`` (and ``cov_dim`` for DropCov) equal the checkpoint's;
    one that also has its ``class_num`` is preferred, then ImageNet configs, then the name.
    """
    if not saved["backbone"]:
        return None
    if not CONFIG_DIR.is_dir():
        return None
    import yaml  # only needed for this hint

    ranked = []
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        try:
            keys = next(iter(yaml.safe_load_all(path.read_text(encoding="utf-8"))), None)  # 1st: values
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if not isinstance(keys, dict) or keys.get("net_name") != saved["backbone"]:
            continue
        if keys.get("head") != saved["head"]:
            continue
        if saved["head"] == "dropcov" and keys.get("cov_dim") != saved["cov_dim"]:
            continue
        ranked.append((keys.get("class_num") != saved["class_num"], "imagenet" not in path.name, path.name))
    return f"config/{min(ranked)[2]}" if ranked else None


def _prefix_hint(report: LoadReport) -> str:
    """Detect checkpoint names that carry an extra leading scope (e.g. ``network.``) and say so."""
    missing = set(report.missing)
    for prefix in sorted({name.split(".", 1)[0] + "." for name in report.unexpected if "." in name}):
        stripped = {name[len(prefix):] for name in report.unexpected if name.startswith(prefix)}
        if missing and len(stripped & missing) >= len(missing) / 2:
            return (f"The checkpoint's names carry the extra prefix {prefix!r} (saved from a wrapper cell); "
                    "strip it with the checkpoint converter.")
    return ""


def adapt_for_finetune(param_dict: Mapping[str, Any], net: nn.Cell,
                       classifier_prefix: str = "fc.") -> Tuple[ParamDict, List[str]]:
    """Drop classifier entries whose output dimension differs from ``net``'s (another ``class_num``).

    Returns a new dict without them (the network's classifier keeps its fresh initialisation) and the
    dropped keys, to log and to pass as ``allow_missing`` to :func:`load_network_weights`. Optimizer
    moments of the classifier are bookkeeping and ignored by loading anyway. Nothing is dropped when the
    classifier's input width differs too (another ``cov_dim``, head or backbone): that is not a class
    count change, and :func:`load_network_weights` then names the config that fits.
    """
    net_shapes = {param.name: tuple(param.shape) for param in net.get_parameters()}
    differing = {name: _shape(value) for name, value in param_dict.items()
                 if name.startswith(classifier_prefix) and name in net_shapes and _shape(value) != net_shapes[name]}
    # Only the output dimension may differ: another input width (cov_dim, head, backbone) is not a class
    # count change, and strict loading must report it with the config that fits.
    if any(shape is None or len(shape) != len(net_shapes[name]) or shape[1:] != net_shapes[name][1:]
           for name, shape in differing.items()):
        return dict(param_dict), []
    dropped = list(differing)
    adapted = {name: value for name, value in param_dict.items() if name not in set(dropped)}
    return adapted, dropped


# ------------------------------------------------------------------------------------------- resume state
def _scalar(value: Any) -> Union[int, float, bool]:
    array = value.asnumpy() if isinstance(value, Tensor) else np.asarray(value)
    return array.reshape(-1)[0].item()


def read_resume_state(param_dict: Mapping[str, Any], source: str = "the checkpoint") -> Tuple[int, int]:
    """``(epoch_num, global_step)`` of a training checkpoint: completed epochs and optimizer steps.

    A resumed run starts at epoch index ``epoch_num`` with the optimizer at ``global_step``. Raises
    :class:`DropCovError` for a checkpoint without them (e.g. a published or converted one).
    """
    absent = [key for key in ("epoch_num", "global_step") if key not in param_dict]
    if absent:
        raise DropCovError(f"{source} holds no {' / '.join(absent)}: it is not a training checkpoint that can "
                           "be resumed; start a new run from its weights with --pre_trained instead")
    return int(_scalar(param_dict["epoch_num"])), int(_scalar(param_dict["global_step"]))


def read_extra(param_dict: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """An entry written through ``extra`` (``config`` text, ``best_metric``, ...) as a Python value."""
    if key not in param_dict:
        return default
    value = param_dict[key]
    return value if isinstance(value, str) else _scalar(value)


def _optimizer_state(optimizer: nn.Optimizer) -> Dict[str, Parameter]:
    """The optimizer's own state Parameters (moments etc.), without its network weights, global step,
    and the values the config decides (``learning_rate``, ``momentum``)."""
    weights = {id(param) for param in optimizer.parameters}
    state = {}
    for param in optimizer.get_parameters():
        name = param.name
        if id(param) in weights or name in ("global_step", "momentum") or name.startswith("learning_rate"):
            continue
        state[name] = param
    return state


def restore_optimizer_state(optimizer: nn.Optimizer, param_dict: Mapping[str, Any],
                            global_step: int | None = None, source: str = "the checkpoint") -> int:
    """Copy the optimizer state (``moments.<name>`` ...) and the global step from a checkpoint.

    ``global_step`` defaults to the checkpoint's; the optimizer then reads its learning rate at that step
    of the schedule it was built with. Raises :class:`DropCovError` listing state entries that are
    missing or of another shape (a checkpoint of another network or optimizer). Returns the step set.
    """
    state = _optimizer_state(optimizer)
    missing = [name for name in state if name not in param_dict]
    mismatched = [f"{name}: checkpoint {_format_shape(_shape(param_dict[name]))} vs optimizer "
                  f"{_format_shape(tuple(param.shape))}" for name, param in state.items()
                  if name in param_dict and _shape(param_dict[name]) != tuple(param.shape)]
    if missing or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing ({_abbreviate(missing)})")
        if mismatched:
            problems.append(f"{len(mismatched)} of another shape ({_abbreviate(mismatched)})")
        raise DropCovError(f"{source} cannot resume this optimizer: its state entries are {'; '.join(problems)}; "
                           "resume with the config it was trained with, or start a new run with --pre_trained")
    for name, param in state.items():
        param.set_data(_as_tensor(param_dict[name], param.dtype))
    if global_step is None:
        if "global_step" not in param_dict:
            raise DropCovError(f"{source} holds no global_step; it cannot be resumed (use --pre_trained)")
        global_step = int(_scalar(param_dict["global_step"]))
    step = optimizer.global_step
    step.set_data(Tensor(np.full(step.shape, global_step, dtype=np.int32)))
    return global_step

"""Export the evaluation network to a deployable file: MINDIR (always), ONNX or AIR (where MindSpore can).

The network is exported with ``set_train(False)``: the DropCov head's adaptive channel dropout is off and
BatchNorm uses its moving statistics, so the file computes exactly the logits ``eval.py`` scores.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Union

import numpy as np

from src.errors import DropCovError
from src.runtime.files import missing_folders
from src.runtime.signals import removed_if_forced_out

if TYPE_CHECKING:
    from mindspore import Tensor, nn

logger = logging.getLogger(__name__)

EXPORT_SUFFIXES = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
"""File suffix MindSpore appends for each export format."""
EXPORT_FORMATS = tuple(EXPORT_SUFFIXES)
"""Formats ``ms.export`` writes (config key ``file_format``)."""


def export_input(batch_size: int, image_size: int) -> Tensor:
    """The example input that fixes the exported graph's shape: zeros ``(batch_size, 3, size, size)`` float32."""
    from mindspore import Tensor

    if int(batch_size) != batch_size or batch_size < 1:
        raise DropCovError(f"export batch size must be an integer >= 1, got {batch_size!r} (--batch_size)")
    if int(image_size) != image_size or image_size < 8:
        raise DropCovError(f"export image size must be an integer >= 8, got {image_size!r} (--eval_image_size)")
    return Tensor(np.zeros((int(batch_size), 3, int(image_size), int(image_size)), np.float32))


def export_path(file_name: Union[str, os.PathLike], file_format: str) -> Path:
    """Where :func:`export_network` writes: ``file_name`` plus the format's suffix (unless already there)."""
    file_format = file_format.upper()
    if file_format not in EXPORT_SUFFIXES:
        raise DropCovError(f"file_format={file_format!r} is not supported: choose one of "
                           f"{', '.join(EXPORT_SUFFIXES)}")
    path = Path(file_name).expanduser()
    suffix = EXPORT_SUFFIXES[file_format]
    return path if path.suffix.lower() == suffix else path.with_name(path.name + suffix)


def export_network(net: nn.Cell, file_name: Union[str, os.PathLike], file_format: str = "MINDIR",
                   image_size: int = 224, batch_size: int = 1,
                   before_commit: Callable[[], None] | None = None) -> Path:
    """Write ``net`` in evaluation mode for inputs ``(batch_size, 3, image_size, image_size)``.

    Args:
        net: the classification network with its weights loaded; it is switched to ``set_train(False)``.
        file_name: output path without (or with) the suffix; its folder is created if missing.
        file_format: ``MINDIR``, ``ONNX`` or ``AIR`` (AIR needs an Ascend build of MindSpore).
        image_size: height and width of the input (the config's ``eval_image_size``).
        batch_size: batch dimension of the input; the exported graph has a fixed shape.
        before_commit: called after the file is written and before it replaces ``file_name`` (e.g. a stop
            check: whatever it raises leaves no file behind).

    The file is written under a hidden temporary name in the same folder and renamed into place, so an
    earlier export is replaced whole or not at all; a folder this call created is removed again on failure.

    Returns:
        The path written (``<file_name>.mindir`` / ``.onnx`` / ``.air``), readable by everyone.

    Raises:
        DropCovError: an operator MindSpore cannot export in that format (the message names the
            MindSpore version and the operator), an invalid size, or an output path that cannot be written.
    """
    import mindspore as ms

    from src.models.cell_surgery import exportable_max_pools

    path = export_path(file_name, file_format)
    file_format = file_format.upper()
    suffix = EXPORT_SUFFIXES[file_format]
    example = export_input(batch_size, image_size)
    created = missing_folders(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DropCovError(f"cannot create the export folder {path.parent}: {error.strerror}; "
                           "choose another --file_name") from error
    net.set_train(False)
    partial = path.with_name(f".{path.name[: -len(suffix)]}.{os.getpid()}.partial{suffix}")
    try:
        with removed_if_forced_out(partial):
            try:
                with exportable_max_pools(net):
                    ms.export(net, example, file_name=str(partial)[: -len(suffix)], file_format=file_format)
            except (RuntimeError, TypeError, ValueError) as error:
                raise DropCovError(_export_failure(file_format, error)) from error
            except OSError as error:
                raise DropCovError(f"cannot write {path}: {error}; choose another --file_name") from error
            if not partial.is_file():
                raise DropCovError(f"MindSpore {ms.__version__} reported no error but wrote no {path}; "
                                   f"{file_format} export may need another device target")
            os.chmod(partial, 0o644)  # MindSpore writes its files read-only
            if before_commit is not None:
                before_commit()
            os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        for folder in reversed(created):  # deepest first; only folders this call made, and only if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return path


_UNSUPPORTED_OPERATOR = re.compile(r"Exporting (\w+) operator is not yet supported|"
                                   r"Can not find key (\w+) in convert map")


def _export_failure(file_format: str, error: Exception) -> str:
    """One line for a failed export: the format, MindSpore's version and the reason it gave."""
    import mindspore as ms

    text = str(error)
    match = _UNSUPPORTED_OPERATOR.search(text)
    if match:
        operator = match.group(1) or match.group(2)
        reason = f"MindSpore has no {file_format} converter for the {operator} operator this network uses"
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("-")]
        reason = (lines[0] if lines else type(error).__name__).rstrip(".")
        if "Ascend" in reason:
            return (f"{file_format} export needs MindSpore's Ascend backend (MindSpore {ms.__version__}: "
                    f"{reason}); run on Ascend with --device_target Ascend, or export MINDIR (--file_format MINDIR)")
    return (f"{file_format} export of this network is not supported by MindSpore {ms.__version__}: {reason}; "
            "export MINDIR instead (--file_format MINDIR)")


def load_exported(path: Union[str, os.PathLike]) -> nn.GraphCell:
    """Load a MINDIR written by :func:`export_network` as a callable ``nn.GraphCell``."""
    import mindspore as ms
    from mindspore import nn

    path = Path(path)
    if not path.is_file():
        raise DropCovError(f"exported model {path} does not exist")
    try:
        graph = ms.load(str(path))
    except (RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DropCovError(f"{path} is not a loadable MINDIR file: {first}") from error
    return nn.GraphCell(graph)

"""The training classes: what every split's labels mean, and the ``class_indices.json`` that records them.

A label is an index into the training classes: the sorted class folders of ``train/``, saved by train.py
as ``class_indices.json`` in the run folder (a JSON object from label index, as a string, to class name,
``{"0": "n01440764", ...}``). A validation folder is labelled by those classes, never by its own folder
list: a ``val/`` lacking a class would otherwise shift every later label.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

from src.data.checks import ImageFolderListing, class_folder_names, resolve_split_folder
from src.errors import DropCovError
from src.runtime.files import atomic_write_text

CLASS_INDICES_FILE = "class_indices.json"


@dataclasses.dataclass(frozen=True)
class TrainingClasses:
    """The class names a network was trained on (index = label) and the file or folder they were read from."""

    names: tuple[str, ...]
    source: str


def write_class_indices(path: str, class_names: Sequence[str]) -> str:
    """Write ``{index: name}`` to ``path`` (a file, or a folder to hold ``class_indices.json``); returns the file.

    The write is atomic (temporary file, then rename), so a crash never leaves half a file.
    """
    if os.path.isdir(path):
        path = os.path.join(path, CLASS_INDICES_FILE)
    mapping = {str(index): str(name) for index, name in enumerate(class_names)}
    atomic_write_text(path, json.dumps(mapping, indent=1, ensure_ascii=False) + "\n")
    return path


def read_class_indices(path: str) -> list[str]:
    """Class names by label index from a file written by :func:`write_class_indices`."""
    if os.path.isdir(path):
        path = os.path.join(path, CLASS_INDICES_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            mapping = json.load(handle)
    except FileNotFoundError as err:
        raise DropCovError(f"class index file {path} does not exist: it is written to the run's output "
                           "folder by train.py") from err
    except json.JSONDecodeError as err:
        raise DropCovError(f"class index file {path} is not valid JSON (line {err.lineno}, column "
                           f"{err.colno}): {err.msg}") from err
    expected = [str(index) for index in range(len(mapping))] if isinstance(mapping, dict) else None
    if expected is None or sorted(mapping, key=lambda key: (len(key), key)) != expected:
        raise DropCovError(f"class index file {path} must map every index 0..K-1 (as strings) to a class name")
    return [str(mapping[key]) for key in expected]


def find_run_class_indices(checkpoint_path: str | os.PathLike) -> str | None:
    """The ``class_indices.json`` of a checkpoint's training run: beside the checkpoint, else in its parent
    folder (the run folder of ``<output_path>/checkpoints/x.ckpt``); None when there is neither."""
    if not checkpoint_path:
        return None
    folder = Path(checkpoint_path).expanduser().resolve().parent
    for candidate in (folder / CLASS_INDICES_FILE, folder.parent / CLASS_INDICES_FILE):
        if candidate.is_file():
            return str(candidate)
    return None


def find_training_classes(checkpoint_path: str | os.PathLike = "", data_path: str = "") -> TrainingClasses | None:
    """The classes a checkpoint was trained on: its run's ``class_indices.json``, else the class folders of
    ``data_path``'s training split; None when neither exists (only a validation folder to go by)."""
    indices = find_run_class_indices(checkpoint_path)
    if indices is not None:
        return TrainingClasses(tuple(read_class_indices(indices)), indices)
    try:
        train_folder = resolve_split_folder(data_path, "train")
    except DropCovError:
        return None
    names = class_folder_names(train_folder)
    return TrainingClasses(tuple(names), train_folder) if names else None


def eval_folder_labels_note(folder: str) -> str:
    """The warning for labels taken from an evaluation folder's own class folders (no training classes known)."""
    return (f"labels of {folder} are its own sorted class folders: this assumes it holds every training class, "
            "in order (no class_indices.json of the checkpoint's run, no train/ folder to read the training "
            "classes from)")


def label_with_training_classes(listing: ImageFolderListing,
                                training_classes: Sequence[str]) -> tuple[ImageFolderListing, list[str]]:
    """Relabel an evaluation listing with the training classes; returns it and the training classes it lacks.

    ``labels[i]`` becomes the index of ``files[i]``'s class folder in ``training_classes``. Raises
    :class:`DropCovError` naming a class folder that is not a training class (its images have no right answer).
    """
    index = {name: position for position, name in enumerate(training_classes)}
    unknown = [name for name in listing.class_names if name not in index]
    if unknown:
        shown = ", ".join(list(training_classes)[:5]) + (", ..." if len(training_classes) > 5 else "")
        more = f" (and {len(unknown) - 1} more: {', '.join(unknown[1:4])}{', ...' if len(unknown) > 4 else ''})" \
            if len(unknown) > 1 else ""
        raise DropCovError(f"class folder {os.path.join(listing.folder, unknown[0])} is not a training class"
                           f"{more}; the network knows {len(training_classes)} classes ({shown}): remove it, or "
                           "evaluate a checkpoint trained on it")
    present = set(listing.class_names)
    missing = [name for name in training_classes if name not in present]
    labels = tuple(index[listing.class_names[label]] for label in listing.labels)
    return dataclasses.replace(listing, class_names=tuple(training_classes), labels=labels), missing

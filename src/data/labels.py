"""The class-index mapping saved with a run (``class_indices.json``) so predictions can be named.

Format: a JSON object from label index (as a string) to class name, ``{"0": "n01440764", ...}``.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

from src.errors import DropCovError
from src.runtime.files import atomic_write_text

CLASS_INDICES_FILE = "class_indices.json"


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

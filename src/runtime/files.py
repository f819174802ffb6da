"""Small file helpers shared by the entry points: atomic text writes."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then ``os.replace``.

    Readers see the old file or the complete new one, never half a file; the temporary file is
    removed if the write fails. Raises ``OSError`` (callers turn it into a one-line error).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path

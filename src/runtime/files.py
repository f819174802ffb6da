"""File helpers shared by the entry points: atomic text writes, writable folders."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from src.errors import DropCovError
from src.runtime.signals import removed_if_forced_out


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then ``os.replace``.

    Readers see the old file or the complete new one, never half a file; the temporary file is
    removed if the write fails. The folder is created if missing. Raises ``OSError`` (callers turn it into a
    one-line error).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with removed_if_forced_out(temporary), open(temporary, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def ensure_writable_directory(path: Union[str, os.PathLike], option: str = "output_path") -> Path:
    """Create ``path`` if needed and prove it writable (a probe file); a one-line error naming it if not.

    Called before any work, so a run does not train for hours and then fail to save.
    """
    directory = Path(path).expanduser()
    probe = directory / f".write_test.{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(probe, "w", encoding="utf-8") as stream:
            stream.write("ok")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        blocking_file = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
        if blocking_file is not None:
            reason = f"{str(blocking_file)!r} is a file, not a folder"
        raise DropCovError(f"{option} {str(directory)!r} cannot be written ({reason}); choose a writable "
                           f"folder with --{option}") from error
    return directory


def check_writable_directory(path: Path, option: str) -> None:
    """Raise one line naming ``--option`` unless ``path`` is, or can be created as, a writable folder.

    Creates nothing: the deepest existing ancestor must be a folder this process may write into."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    reason = ""
    if not existing.is_dir():
        reason = f"{str(existing)!r} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = "Permission denied"
    if reason:
        raise DropCovError(f"{option} {str(path)!r} cannot be written ({reason}); choose a writable folder with "
                           f"--{option}")


def missing_folders(path: Path) -> list[Path]:
    """The folders ``path.mkdir(parents=True)`` would create, outermost first (so a failed step can remove
    exactly those, in reverse)."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return list(reversed(missing))

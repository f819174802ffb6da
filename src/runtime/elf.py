"""What a shared library asks of the dynamic loader (DT_NEEDED, DT_RPATH, DT_RUNPATH), and where the
loader would find each name.

Read straight from the ELF file (64-bit little-endian, as MindSpore's x86_64 and aarch64 wheels are), so a
check can name every library a MindSpore plugin needs without ``readelf`` and without loading the plugin
(``dlopen`` stops at the first missing library).
"""
from __future__ import annotations

import os
import struct
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

_SHT_DYNAMIC = 6
_DT_NULL, _DT_NEEDED, _DT_RPATH, _DT_RUNPATH = 0, 1, 15, 29
#: Searched after LD_LIBRARY_PATH, DT_RUNPATH and the ld.so cache (glibc's trusted directories).
DEFAULT_LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
                        "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib")


@dataclass
class DynamicSection:
    """The loader-facing part of a shared library: needed names in file order and its search paths."""

    path: Path
    needed: list[str] = field(default_factory=list)
    rpath: list[str] = field(default_factory=list)
    runpath: list[str] = field(default_factory=list)


def read_dynamic_section(path: str | os.PathLike) -> DynamicSection:
    """DT_NEEDED / DT_RPATH / DT_RUNPATH of an ELF64 little-endian shared object (``$ORIGIN`` expanded).

    Raises ValueError for a file that is not such an object.
    """
    path = Path(path)
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            raise ValueError(f"{path} is not a 64-bit little-endian ELF file")
        shoff, = struct.unpack_from("<Q", header, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", header, 0x3A)
        f.seek(shoff)
        table = f.read(shentsize * shnum)
        sections = [struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize) for i in range(shnum)]
        dynamic = next((s for s in sections if s[1] == _SHT_DYNAMIC), None)
        result = DynamicSection(path)
        if dynamic is None:
            return result
        strtab = sections[dynamic[6]]
        f.seek(strtab[4])
        strings = f.read(strtab[5])
        f.seek(dynamic[4])
        entries = f.read(dynamic[5])
    origin = str(path.resolve().parent)

    def text(offset: int) -> str:
        return strings[offset:strings.index(b"\0", offset)].decode()

    for tag, value in struct.iter_unpack("<qQ", entries):
        if tag == _DT_NULL:
            break
        if tag == _DT_NEEDED:
            result.needed.append(text(value))
        elif tag in (_DT_RPATH, _DT_RUNPATH):
            dirs = [d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for d in text(value).split(":") if d]
            (result.rpath if tag == _DT_RPATH else result.runpath).extend(dirs)
    return result


@lru_cache(maxsize=1)
def _ld_cache() -> dict[str, str]:
    """``ldconfig -p``: library name -> path of this machine's architecture (first entry wins)."""
    for ldconfig in ("ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        try:
            out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=20).stdout
            break
        except (OSError, subprocess.TimeoutExpired):
            continue
    else:
        return {}
    arch = "x86-64" if os.uname().machine == "x86_64" else "AArch64"
    cache: dict[str, str] = {}
    for line in out.splitlines()[1:]:
        name, _, rest = line.strip().partition(" (")
        flags, _, target = rest.partition(") => ")
        if target and (arch in flags or "64" not in flags):
            cache.setdefault(name, target)
    return cache


def find_library(name: str, dynamic: DynamicSection | None = None) -> Path | None:
    """Where the dynamic loader would find ``name`` for the object ``dynamic`` describes, or None.

    Order of ld.so: the object's DT_RPATH (only without DT_RUNPATH), LD_LIBRARY_PATH, its DT_RUNPATH, the
    ld.so cache, the default directories.
    """
    dirs: list[str] = []
    if dynamic is not None and not dynamic.runpath:
        dirs += dynamic.rpath
    dirs += [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    if dynamic is not None:
        dirs += dynamic.runpath
    for directory in dirs:
        candidate = Path(directory) / name
        if candidate.is_file():
            return candidate
    cached = _ld_cache().get(name)
    if cached and Path(cached).is_file():
        return Path(cached)
    for directory in DEFAULT_LIBRARY_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file():
            return candidate
    return None

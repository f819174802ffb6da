"""What a file is, read from its first bytes and its record framing: a checkpoint, or what else.

A MindSpore ``.ckpt`` is a sequence of protobuf records (tag ``0x0A``, a varint length, the payload)
optionally followed by a CRC trailer. :func:`checkpoint_problem` walks that framing without reading the
payloads, so a truncated download or a file of another kind (an image, a PyTorch ``.pth``, text) is
named in one line before any long work, cheaply even for large files. MindSpore's own reader says only
that parsing failed.
"""
from __future__ import annotations

import os
from pathlib import Path

_PROTO_VALUE_TAG = 0x0A  # field 1 (repeated `value`), wire type 2: every checkpoint record starts with it
_CRC_TRAILER = b"crc_num"


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a readable checkpoint (a phrase completing "<path> ..."), or None if its
    records are intact."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            head = stream.read(512)
            if size == 0:
                return "is empty (0 bytes): not a checkpoint; re-download or re-copy it"
            if head[0] != _PROTO_VALUE_TAG:
                return f"is not a MindSpore checkpoint ({file_kind(path, head)})"
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


def _read_varint(data: bytes) -> tuple[int | None, int]:
    value = 0
    for index, byte in enumerate(data[:10]):
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, index + 1
    return None, 0


def file_kind(path: str | os.PathLike, head: bytes | None = None) -> str:
    """A phrase saying what a file that is not a MindSpore checkpoint looks like (from its first bytes)."""
    path = Path(path)
    if head is None:
        with open(path, "rb") as stream:
            head = stream.read(512)
    suffix = path.suffix.lower()
    if not head:
        return "it is empty (0 bytes)"
    if head[0] == _PROTO_VALUE_TAG and checkpoint_problem(path) is None:
        return "it is a MindSpore checkpoint (.ckpt)"
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

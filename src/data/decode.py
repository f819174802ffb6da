"""Image decoding under our control, and turning a pipeline's decode failure into a one-line error.

Why not MindSpore's own ``Decode`` / ``RandomCropDecodeResize``: measured with MindSpore 2.10 on CPU,
its JPEG decoder, given a damaged file,

* kills the process with SIGFPE when the file is cut inside its headers (nothing can catch it);
* loops forever on some cut progressive JPEGs;
* with ``Decode``, writes a copy of the bad file to ``./abnormal_image.<ext>`` in the working folder.

Pillow's decoder (libjpeg-turbo with the same settings: its pixels equal MindSpore ``Decode``'s on the
JPEGs we compared) raises a Python exception instead, and is about as fast (500x375 JPEG, one core:
Pillow decode + ``RandomResizedCrop`` 1.36 ms, ``RandomCropDecodeResize`` 1.24 ms). It runs in the
map's worker threads; about 0.1 ms of each image holds the GIL, so one process tops out near 7,000
images/s. MindSpore adds
"The corresponding data file is: PATH" to a failed map operation of an ``ImageFolderDataset``, so
:func:`pipeline_error_to_dropcov` can name the file.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from typing import Iterator

import numpy as np
from PIL import Image

from src.errors import DropCovError

logger = logging.getLogger(__name__)

DECODE_FAILED = "cannot decode image"

_DATA_FILE = re.compile(r"The corresponding data file is: (.+?)\.(?:\s|$)")
_DUMP_FILE = re.compile(r"Dump the abnormal image to \[([^\]]+)\]")
_OWN_REASON = re.compile(re.escape(DECODE_FAILED) + r": (.*)")
_PIPELINE_MARKERS = ("Exception thrown from dataset pipeline", "Exception thrown from user defined Python function",
                     "map operation: [")


def decode_image(encoded: np.ndarray) -> np.ndarray:
    """Decode one encoded image (1-D uint8 bytes) to RGB, uint8 (H, W, 3).

    Grey, palette, CMYK and alpha images are converted to RGB (alpha dropped; MindSpore's ``Decode``
    also returns 3 channels). A broken file raises ``ValueError("cannot decode image: ...")``; inside a
    pipeline MindSpore adds the file's path to the error.
    """
    try:
        with Image.open(io.BytesIO(encoded.tobytes())) as image:
            if image.mode != "RGB":
                image = image.convert("RGB")
            return np.asarray(image)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise ValueError(f"{DECODE_FAILED}: {type(err).__name__}: {err}") from err


def _data_file(message: str) -> str | None:
    """The file MindSpore names in ``message``: the shortest candidate that exists, else the first."""
    match = _DATA_FILE.search(message)
    if not match:
        return None
    start = match.start(1)
    for end in re.finditer(r"\.(?=\s|$)", message[start:]):
        candidate = message[start:start + end.start()]
        if "\n" in candidate:
            break
        if os.path.isfile(candidate):
            return candidate
    return match.group(1)


def _reason(message: str, path: str | None) -> str:
    """The decoder's own words: our ``cannot decode image: ...`` text, else MindSpore's after the path."""
    own = _OWN_REASON.search(message)
    if own:
        return own.group(1).strip()
    if path:
        line = next((line for line in message.splitlines() if path in line), "")
        tail = line.split(path, 1)[1].lstrip(". ").split("Dump the abnormal image", 1)[0].strip().rstrip(".")
        if tail and not tail.startswith(("Error description", "Traceback")):
            return tail
    for line in message.splitlines():
        if line.startswith("[ERROR]"):
            return line[len("[ERROR]"):].strip()
    return "the data pipeline failed"


def remove_dumped_images(message: str) -> list[str]:
    """Delete the ``abnormal_image.*`` copies that MindSpore's ``Decode`` says it wrote; returns them."""
    removed = []
    for dumped in _DUMP_FILE.findall(message):
        if os.path.basename(dumped).startswith("abnormal_image") and os.path.isfile(dumped):
            os.remove(dumped)
            removed.append(dumped)
            logger.info("removed %s (MindSpore's copy of the bad image)", dumped)
    return removed


def pipeline_error_to_dropcov(error: BaseException) -> DropCovError | None:
    """A one-line :class:`DropCovError` for a MindSpore data-pipeline failure, or None for other errors.

    The message names the file when MindSpore reports it ("The corresponding data file is: ...")
    and gives the decoder's reason; any ``abnormal_image.*`` dump MindSpore wrote is deleted.
    """
    message = str(error)
    if not any(marker in message for marker in _PIPELINE_MARKERS):
        return None
    remove_dumped_images(message)
    path = _data_file(message)
    reason = _reason(message, path)
    if path:
        return DropCovError(f"bad image {path}: {reason}; remove or replace it "
                            "(python -m src.tools.verify_dataset DATA_PATH lists every bad file)")
    return DropCovError(f"data pipeline failed: {reason} (python -m src.tools.verify_dataset DATA_PATH "
                        "lists every bad image)")


@contextlib.contextmanager
def pipeline_errors_as_dropcov() -> Iterator[None]:
    """Re-raise a data-pipeline ``RuntimeError`` met inside the block as a one-line :class:`DropCovError`."""
    try:
        yield
    except RuntimeError as err:
        converted = pipeline_error_to_dropcov(err)
        if converted is None:
            raise
        raise converted from err

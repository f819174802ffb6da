"""Image decoding under our control, and turning a pipeline's decode failure into a one-line error.

Why not MindSpore's own ``Decode`` / ``RandomCropDecodeResize``: measured with MindSpore 2.10 on CPU,
its JPEG decoder, given a damaged file,

* kills the process with SIGFPE when the file is cut inside its headers (nothing can catch it);
* loops forever on some cut progressive JPEGs;
* with ``Decode``, writes a copy of the bad file to ``./abnormal_image.<ext>`` in the working folder.

Pillow's decoder (libjpeg-turbo with the same settings: its pixels equal MindSpore ``Decode``'s on the
JPEGs we compared) raises a Python exception instead, and is about as fast (500x375 JPEG, one core:
Pillow decode + ``RandomResizedCrop`` 1.36 ms, ``RandomCropDecodeResize`` 1.24 ms). The image-folder
pipelines read and decode in the map's worker threads (``src.data.imagenet.ImageFileReader``); about
0.1 ms of each image holds the GIL, so one process tops out near 7,000 images/s. A file that cannot be
read or decoded raises :func:`image_file_error`, whose message carries the path through MindSpore's
error report, so :func:`pipeline_error_to_dropcov` can name the file.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
from typing import Iterator

import numpy as np
from PIL import Image

from src.errors import DropCovError

logger = logging.getLogger(__name__)

DECODE_FAILED = "cannot decode image"
IMAGE_FILE_FAILED = "cannot read image file"

_IMAGE_FILE = re.compile(re.escape(IMAGE_FILE_FAILED) + r' ("(?:[^"\\]|\\.)*"): (.*)')
_DUMP_FILE = re.compile(r"Dump the abnormal image to \[([^\]]+)\]")
_OWN_REASON = re.compile(re.escape(DECODE_FAILED) + r": (.*)")
_PIPELINE_MARKERS = ("Exception thrown from dataset pipeline", "Exception thrown from user defined Python function",
                     "map operation: [")


def decode_image(encoded: np.ndarray) -> np.ndarray:
    """Decode one encoded image (1-D uint8 bytes) to RGB, uint8 (H, W, 3).

    Grey, palette, CMYK and alpha images are converted to RGB (alpha dropped; MindSpore's ``Decode``
    also returns 3 channels). A broken file raises ``ValueError("cannot decode image: ...")``.
    """
    try:
        with Image.open(io.BytesIO(encoded.tobytes())) as image:
            if image.mode != "RGB":
                image = image.convert("RGB")
            return np.asarray(image)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise ValueError(f"{DECODE_FAILED}: {type(err).__name__}: {err}") from err


def image_file_error(path: str, error: BaseException) -> ValueError:
    """The error of a file that cannot be read or decoded: ``cannot read image file "PATH": reason``.

    The path is written as a JSON string, so any file name survives MindSpore's error report intact.
    """
    if isinstance(error, OSError) and error.strerror:
        reason = error.strerror
    else:
        reason = str(error).removeprefix(f"{DECODE_FAILED}: ")
    return ValueError(f"{IMAGE_FILE_FAILED} {json.dumps(str(path), ensure_ascii=False)}: {reason}")


def _reason(message: str) -> str:
    """The decoder's own words: our ``cannot decode image: ...`` text, else MindSpore's ``[ERROR]`` line."""
    own = _OWN_REASON.search(message)
    if own:
        return own.group(1).strip()
    for line in message.splitlines():
        if line.startswith("[ERROR]"):
            return line[len("[ERROR]"):].split("Dump the abnormal image", 1)[0].strip()
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

    The message names the file when the failure came from :func:`image_file_error` (the image-folder
    sources raise it) and gives the decoder's reason; a failure inside MindSpore's own decode operations
    (``safe_decode=False``) names no file. Any ``abnormal_image.*`` dump MindSpore wrote is deleted.
    """
    message = str(error)
    if not any(marker in message for marker in _PIPELINE_MARKERS):
        return None
    remove_dumped_images(message)
    own = _IMAGE_FILE.search(message)
    if own:
        path, reason = json.loads(own.group(1)), own.group(2).strip()
        return DropCovError(f"bad image {path}: {reason}; remove or replace it "
                            "(python -m src.tools.verify_dataset DATA_PATH lists every bad file)")
    return DropCovError(f"data pipeline failed: {_reason(message)} (python -m src.tools.verify_dataset DATA_PATH "
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

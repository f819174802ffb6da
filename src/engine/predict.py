"""Classify image files with a trained network: top-k classes with probabilities, as CSV, JSON and a table.

Images go through the evaluation transform of the data pipeline (decode, resize the shorter side,
centre crop, normalise, HWC -> CHW), one file at a time, so a bad file is reported by name. Class names
come from, in order: an explicit file (``--class_names_file``), the training classes (the
``class_indices.json`` saved with training next to the checkpoint or in its run folder, else the class
folders of the training split), the class folders of the validation split (with a warning); otherwise
only indices are reported.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Sequence, Tuple, Union

import numpy as np

from src.data.checks import IMAGE_EXTENSIONS, class_folder_names, is_hidden_or_os_name
from src.data.labels import eval_folder_labels_note, find_training_classes
from src.errors import DropCovError
from src.runtime.files import atomic_write_text

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = (".csv", ".json")

ImageTransform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Prediction:
    """Top-k result for one image: class indices by decreasing probability and their probabilities."""

    image: str
    indices: Tuple[int, ...]
    probabilities: Tuple[float, ...]


# ------------------------------------------------------------------------------------------------ inputs
def collect_images(inputs: Sequence[Union[str, os.PathLike]]) -> List[Path]:
    """Image files named on the command line: files as given, folders searched recursively for
    :data:`IMAGE_EXTENSIONS` (sorted; hidden and OS files and folders skipped, as in the datasets:
    ``._x.jpg`` resource forks, ``.ipynb_checkpoints``). Raises :class:`DropCovError` for a missing path
    or no images."""
    if not inputs:
        raise DropCovError("no images given: pass image files or folders, e.g. `predict.py photo.jpg ...`")
    files: List[Path] = []
    for entry in inputs:
        path = Path(entry).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(is_hidden_or_os_name(part) for part in p.relative_to(path).parts))
            if not found:
                raise DropCovError(f"folder {path} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DropCovError(f"image {path} does not exist; check the path")
    return files


def eval_image_transform(image_size: int, resize_library: str = "mindspore", crop_pct: float = 0.875,
                         interpolation: str = "bilinear") -> ImageTransform:
    """The evaluation transform as a function ``encoded file bytes (uint8, 1-D) -> (3, S, S) float32``.

    Decode (RGB, Pillow), resize the shorter side to ``int(S / crop_pct)``, centre crop ``S x S``, normalise
    with the ImageNet mean/std scaled to [0, 255], HWC -> CHW: the operations of the ImageNet eval
    pipeline (:func:`src.data.transforms.imagenet_eval_operations`, with ``resize_library``), applied
    eagerly to one image.
    """
    from src.data.transforms import imagenet_eval_operations

    operations = imagenet_eval_operations(image_size, resize_library=resize_library, crop_pct=crop_pct,
                                          interpolation=interpolation)

    def transform(encoded: np.ndarray) -> np.ndarray:
        image = encoded
        for operation in operations:
            image = operation(image)
        return np.asarray(image, dtype=np.float32)

    return transform


def load_image(path: Union[str, os.PathLike], transform: ImageTransform) -> np.ndarray:
    """Read and transform one image file; a file that cannot be read or decoded is one line naming it."""
    path = Path(path)
    try:
        encoded = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise DropCovError(f"image {path} cannot be read: {error.strerror or error}") from error
    if encoded.size == 0:
        raise DropCovError(f"image {path} is empty (0 bytes); remove it or pass another file")
    try:
        return transform(encoded)
    except (RuntimeError, ValueError, TypeError) as error:
        raise DropCovError(f"image {path} cannot be decoded as an image ({_first_reason(error)}); "
                           "remove it or pass another file") from error


_DECODE_PREFIX = re.compile(r"^cannot decode image: (\w+Error: )?")
_BYTES_REPR = re.compile(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def _first_reason(error: Exception) -> str:
    text = _BYTES_REPR.sub("", str(error).strip())
    if _DECODE_PREFIX.match(text):
        reason = _DECODE_PREFIX.sub("", text).splitlines()[0].strip()
        return "unrecognised image format" if reason == "cannot identify image file" else reason
    for line in str(error).splitlines():
        line = line.strip()
        if line.startswith("[ERROR]"):
            return line[len("[ERROR]"):].strip()
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and not line.strip().startswith("-")]
    return lines[0] if lines else type(error).__name__


# ------------------------------------------------------------------------------------------------ scoring
def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax ``p_bk = exp(z_bk - max_k z_b) / sum_k exp(z_bk - max_k z_b)`` in float64, ``(B, K)``."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest entries of each row, largest first (ties: lower index first).

    Args:
        probabilities: ``(B, K)``.
        k: capped at ``K``.

    Returns:
        indices ``(B, k)`` int64 and their values ``(B, k)``.
    """
    k = max(1, min(int(k), probabilities.shape[-1]))
    order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return order, np.take_along_axis(probabilities, order, axis=-1)


def predict_files(net, files: Sequence[Union[str, os.PathLike]], image_size: int, batch_size: int = 16,
                  k: int = 5, transform: ImageTransform | None = None,
                  progress: Callable[[int, int], None] | None = None) -> List[Prediction]:
    """Top-``k`` softmax probabilities of ``net`` for each file (in evaluation mode).

    Batches have a fixed size (the last is padded with zeros and the padding dropped), so graph mode
    compiles the network once. ``progress(done, total)`` is called after each batch.
    """
    import mindspore as ms

    if int(batch_size) != batch_size or batch_size < 1:
        raise DropCovError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    transform = transform or eval_image_transform(image_size)
    files = [Path(f) for f in files]
    batch_size = min(int(batch_size), max(1, len(files)))
    net.set_train(False)
    results: List[Prediction] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        images = np.stack([load_image(path, transform) for path in chunk])
        if len(chunk) < batch_size:
            padding = np.zeros((batch_size - len(chunk),) + images.shape[1:], dtype=images.dtype)
            images = np.concatenate([images, padding])
        logits = net(ms.Tensor(images)).asnumpy()[: len(chunk)]
        indices, values = top_k(softmax(logits), k)
        for path, row_indices, row_values in zip(chunk, indices, values):
            results.append(Prediction(str(path), tuple(int(i) for i in row_indices),
                                      tuple(float(v) for v in row_values)))
        if progress is not None:
            progress(len(results), len(files))
    return results


# ------------------------------------------------------------------------------------------------ names
def read_class_names(path: Union[str, os.PathLike]) -> Dict[int, str]:
    """Class names of a mapping file, as ``{index: name}``.

    Accepted formats: JSON ``{"name": index, ...}`` (the ``class_indices.json`` of a training run, MindSpore's
    ``class_indexing``), JSON ``{"index": "name", ...}``, a JSON list of names (position = index), or a
    text file with one name per line (line number = index, from 0).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DropCovError(f"class names file {path} does not exist (--class_names_file)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DropCovError(f"class names file {path} cannot be read as text: {error}") from error
    if path.suffix.lower() != ".json":
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
        return {index: name for index, name in enumerate(names)}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DropCovError(f"class names file {path}: invalid JSON at line {error.lineno}: {error.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("class_indices"), dict):
        data = data["class_indices"]
    if isinstance(data, list) and all(isinstance(name, str) for name in data):
        return dict(enumerate(data))
    if isinstance(data, dict) and data:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
            return {int(index): str(name) for name, index in data.items()}
        if all(isinstance(v, str) and str(k).lstrip("-").isdigit() for k, v in data.items()):
            return {int(index): name for index, name in data.items()}
    raise DropCovError(f"class names file {path}: expected {{\"name\": index}}, {{\"index\": \"name\"}} or a list "
                       "of names")


class FoundClassNames(NamedTuple):
    """Class names to print (``{index: name}``, or None for indices only), where they came from, and a
    warning to log when they are a guess."""

    names: Dict[int, str] | None
    source: str
    warning: str | None = None


def find_class_names(checkpoint_path: Union[str, os.PathLike] = "", class_names_file: str = "",
                     data_path: str = "", val_folder: Union[str, os.PathLike] = "",
                     num_outputs: int | None = None) -> FoundClassNames:
    """The class names to print and where they came from.

    Order: ``class_names_file``; the training classes (:func:`src.data.labels.find_training_classes`: the
    ``class_indices.json`` beside the checkpoint or in its run folder, else ``data_path``'s train/ class
    folders); the class folders of ``val_folder``, with a warning that they assume it holds every training
    class; else ``(None, "")``. With ``num_outputs`` (the network's classes) the names are checked against
    it: see :func:`check_class_names`.
    """
    found = FoundClassNames(None, "")
    training = find_training_classes(checkpoint_path, data_path)
    if class_names_file:
        found = FoundClassNames(read_class_names(class_names_file), f"--class_names_file {class_names_file}")
    elif training is not None:
        found = FoundClassNames(dict(enumerate(training.names)), training.source)
    elif val_folder and os.path.isdir(val_folder) and (names := class_folder_names(str(val_folder))):
        found = FoundClassNames(dict(enumerate(names)), str(val_folder), eval_folder_labels_note(str(val_folder)))
    if num_outputs is not None and found.names is not None:
        check_class_names(found.names, found.source, num_outputs, explicit=bool(class_names_file),
                          training=training)
    return found


def check_class_names(names: Dict[int, str], source: str, num_outputs: int, explicit: bool,
                      training: Any = None) -> None:
    """Raise :class:`DropCovError` naming both counts when ``names`` cannot name the network's outputs.

    An index outside ``0..num_outputs-1`` is always an error (names of another dataset). Names given
    explicitly must also cover every training class when those are known (``training``, a
    :class:`src.data.labels.TrainingClasses`), else every output or all but the last: the published
    ImageNet checkpoints have 1001 outputs for 1000 classes, the last never a target. Names of the
    training classes found on their own may cover fewer outputs (train.py allows more outputs than
    classes; the extra ones are never targets).
    """
    outside = sorted(index for index in names if not 0 <= index < num_outputs)
    covered = next((index for index in range(num_outputs) if index not in names), num_outputs)
    if outside:
        raise DropCovError(f"{source} has {len(names)} names (up to index {outside[-1]}) but the network has "
                           f"{num_outputs} outputs (class_num {num_outputs}): use the names of the classes this "
                           "checkpoint was trained on")
    if explicit and training is not None and covered < len(training.names):
        gap = f" (none for index {covered})" if covered < len(names) else ""
        raise DropCovError(f"{source} has {len(names)} names{gap} but the checkpoint was trained on "
                           f"{len(training.names)} classes ({training.source}): give a name for each of them")
    if explicit and training is None and covered < num_outputs - 1:
        gap = f" (none for index {covered})" if covered < len(names) else ""
        raise DropCovError(f"{source} has {len(names)} names{gap} but the network has {num_outputs} outputs "
                           f"(class_num {num_outputs}): give a name for each output, or "
                           "for all but the last when it is never a target (1000 names for the 1001-output "
                           "ImageNet checkpoints)")


# ------------------------------------------------------------------------------------------------ output
def prediction_rows(predictions: Sequence[Prediction],
                    class_names: Dict[int, str] | None = None) -> List[Dict[str, object]]:
    """One flat row per (image, rank): ``image, rank, class_index, class_name, probability`` (rank from 1)."""
    rows = []
    for prediction in predictions:
        for rank, (index, probability) in enumerate(zip(prediction.indices, prediction.probabilities), 1):
            rows.append({"image": prediction.image, "rank": rank, "class_index": index,
                         "class_name": (class_names or {}).get(index, ""), "probability": probability})
    return rows


CSV_COLUMNS = ("image", "rank", "class_index", "class_name", "probability")


def write_predictions(predictions: Sequence[Prediction], path: Union[str, os.PathLike],
                      class_names: Dict[int, str] | None = None) -> Path:
    """Write predictions as CSV (:data:`CSV_COLUMNS`, one row per image and rank) or JSON
    (``[{"image", "top_k": [{"rank", "class_index", "class_name", "probability"}, ...]}, ...]``),
    chosen by the file's extension; written atomically."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise DropCovError(f"--output_file {path}: unknown format {suffix or '(no extension)'!r}; "
                           "use a name ending in .csv or .json")
    if suffix == ".csv":
        stream = io.StringIO()
        writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in prediction_rows(predictions, class_names):
            writer.writerow({**row, "probability": f"{row['probability']:.6g}"})
        text = stream.getvalue()
    else:
        records = []
        for prediction in predictions:
            top = [{key: row[key] for key in CSV_COLUMNS[1:]} for row in prediction_rows([prediction], class_names)]
            records.append({"image": prediction.image, "top_k": top})
        text = json.dumps(records, indent=1) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as error:
        raise DropCovError(f"cannot write predictions to {path}: {error.strerror or error}; "
                           "choose another --output_file") from error
    return path


def format_table(predictions: Sequence[Prediction], class_names: Dict[int, str] | None = None,
                 max_images: int = 20, name_width: int = 24) -> str:
    """A short text table: per image its top classes as ``index name probability%`` (first ``max_images``)."""
    lines = []
    shown_names = _short_names([p.image for p in predictions[:max_images]])
    image_width = min(40, max((len(name) for name in shown_names), default=5))
    header = f"{'image':<{image_width}}  rank  {'class':>5}  {'name':<{name_width}}  prob"
    lines.append(header)
    lines.append("-" * len(header))
    for prediction, shown in zip(predictions[:max_images], shown_names):
        if len(shown) > image_width:
            shown = "..." + shown[-(image_width - 3):]
        for rank, (index, probability) in enumerate(zip(prediction.indices, prediction.probabilities), 1):
            name = (class_names or {}).get(index, "")
            if len(name) > name_width:
                name = name[: name_width - 3] + "..."
            image_cell = shown if rank == 1 else ""
            lines.append(f"{image_cell:<{image_width}}  {rank:>4}  {index:>5}  {name:<{name_width}}  "
                         f"{_percent(probability)}")
    if len(predictions) > max_images:
        lines.append(f"... {len(predictions) - max_images} more images in the output file")
    return "\n".join(lines)


def _short_names(paths: Sequence[str]) -> List[str]:
    """Paths relative to their common folder (just the file names when all share one folder)."""
    if not paths:
        return []
    parents = [os.path.dirname(os.path.abspath(path)) for path in paths]
    try:
        common = os.path.commonpath(parents)
    except ValueError:
        return list(paths)
    return [os.path.relpath(os.path.abspath(path), common) for path in paths]


def _percent(probability: float) -> str:
    if not math.isfinite(probability):
        return "nan"
    return f"{100.0 * probability:6.2f}%"

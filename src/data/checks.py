"""Cheap checks on a dataset folder, run before training so bad data fails early with one line.

Layout (ImageNet style)::

    DATA_PATH/train/<class>/<image>      DATA_PATH/val/<class>/<image>

or a folder that itself holds the class folders. Labels are the indices of the sorted class-folder
names. Hidden names (starting with ".": ``.DS_Store``, ``._x.jpg`` resource forks,
``.ipynb_checkpoints``) and the files operating systems leave behind (``Thumbs.db``, ``desktop.ini``,
``__MACOSX``) are skipped silently: never images, never classes. Other files without an image
extension are skipped with one warning. Everything here works from directory listings and the first
bytes of each file: it never decodes an image (``src.data.verify`` does that) and never imports MindSpore.
"""
from __future__ import annotations

import errno
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

from src.errors import DropCovError

logger = logging.getLogger(__name__)

#: File extensions taken as images (compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
#: Names that operating systems and archivers leave in folders (compared case-insensitively). With every
#: hidden name they are skipped without a word: they are neither images nor classes.
OS_NAMES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r", "__macosx"})
#: Folder name of each split under ``data_path``.
SPLIT_FOLDERS = {"train": "train", "val": "val", "eval": "val"}
#: Skipped non-image files named in the warning of a scan (``verify_dataset`` lists them all).
SKIPPED_NAMED = 3

_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"))


@dataclass(frozen=True)
class ImageFolderListing:
    """The images of one split folder, in the order the pipelines read them.

    ``files`` are sorted by class (sorted folder names) then by file name; ``labels[i]`` is the class
    index of ``files[i]`` in ``class_names``. ``skipped`` holds the files of the class folders that have
    no image extension and, ending in ``os.sep``, their sub-folders, which are not searched (hidden and
    operating-system entries are not counted).
    """

    folder: str
    class_names: tuple[str, ...]
    files: tuple[str, ...]
    labels: tuple[int, ...]
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.files)


@dataclass(frozen=True)
class FolderProblem:
    """A structural problem of a dataset folder: ``reason`` for a list of problems, ``message`` for an error."""

    path: str
    reason: str
    message: str


def is_image_name(name: str) -> bool:
    """True when ``name`` has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_hidden_or_os_name(name: str) -> bool:
    """True for hidden names (leading ".") and :data:`OS_NAMES`: skipped, never images or classes."""
    return name.startswith(".") or name.lower() in OS_NAMES


def _unreadable(path: str, error: OSError) -> FolderProblem:
    """The problem of an entry that cannot be listed or followed (a symbolic link loop, no permission)."""
    if error.errno == errno.ELOOP:
        return FolderProblem(path, "symbolic link loop", f"{path} is a symbolic link loop (it leads back to "
                             "itself): remove the link or point it at a real file or folder")
    reason = f"cannot be read ({error.strerror or error})"
    return FolderProblem(path, reason, f"{path} {reason}: fix its permissions or move it out of the dataset")


def _broken_link(path: str) -> FolderProblem:
    target = os.readlink(path)
    return FolderProblem(path, f"broken symbolic link (to {target})",
                         f"{path} is a broken symbolic link (to {target}): restore its target or remove it")


def _link_problem(path: str) -> FolderProblem | None:
    """The problem of ``path`` when it is a symbolic link that cannot be followed, else None."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except FileNotFoundError:
        return _broken_link(path)
    except OSError as error:
        return _unreadable(path, error)
    return None


def _visible_entries(folder: str, problems: list[FolderProblem]) -> list[tuple[str, bool]]:
    """``(name, is_folder)`` of the entries of ``folder`` that are neither hidden nor OS names, by name.

    Folders and regular files (symbolic links followed) are kept; an entry that cannot be followed (a link
    loop, a broken link) or a folder that cannot be listed is added to ``problems``; other kinds (sockets,
    pipes) are ignored.
    """
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as error:
        problems.append(_unreadable(folder, error))
        return []
    visible = []
    for entry in entries:
        if is_hidden_or_os_name(entry.name):
            continue
        try:
            is_folder = entry.is_dir()
            if is_folder or entry.is_file():
                visible.append((entry.name, is_folder))
            elif entry.is_symlink():
                problems.append(_broken_link(entry.path))
        except OSError as error:
            problems.append(_unreadable(entry.path, error))
    return visible


def class_folder_names(folder: str) -> list[str]:
    """The class folders of a split folder, sorted (hidden and OS folders are not classes).

    Raises :class:`DropCovError` for an entry that cannot be followed: skipping it would shift the labels.
    """
    problems: list[FolderProblem] = []
    names = [name for name, is_folder in _visible_entries(folder, problems) if is_folder]
    if problems:
        raise DropCovError(problems[0].message)
    return names


def _holds_class_folders(folder: str) -> bool:
    """True when some sub-folder of ``folder`` directly holds an image file."""
    ignored: list[FolderProblem] = []
    for name, is_folder in _visible_entries(folder, ignored):
        if is_folder and any(not sub_folder and is_image_name(item)
                             for item, sub_folder in _visible_entries(os.path.join(folder, name), ignored)):
            return True
    return False


def resolve_split_folder(data_path: str, split: str, eval_dataset_path: str = "") -> str:
    """The folder holding the class folders of ``split`` ("train" or "val").

    ``data_path/train`` or ``data_path/val`` when present; ``data_path`` itself when it directly holds
    class folders (and has neither ``train/`` nor ``val/``). For "val", a non-empty
    ``eval_dataset_path`` overrides the folder. Raises :class:`DropCovError` naming the path otherwise.
    """
    if split not in SPLIT_FOLDERS:
        raise DropCovError(f"unknown dataset split {split!r}: use one of {sorted(SPLIT_FOLDERS)}")
    subfolder = SPLIT_FOLDERS[split]
    overridden = subfolder == "val" and bool(eval_dataset_path)
    for path in [eval_dataset_path] if overridden else [data_path, os.path.join(data_path, subfolder)]:
        link_problem = _link_problem(path) if path else None
        if link_problem is not None:
            raise DropCovError(link_problem.message)
    if overridden:
        if not os.path.isdir(eval_dataset_path):
            raise DropCovError(f"eval_dataset_path {eval_dataset_path} is not a folder: point --eval_dataset_path "
                               "at a folder of class folders (or leave it empty to use DATA_PATH/val)")
        return eval_dataset_path
    if not data_path:
        raise DropCovError("data_path is empty: set --data_path to the dataset folder (holding train/ and val/)")
    if not os.path.isdir(data_path):
        what = "is not a folder" if os.path.exists(data_path) else "does not exist"
        raise DropCovError(f"dataset folder {data_path} {what}: set --data_path to the folder holding train/ and val/")
    candidate = os.path.join(data_path, subfolder)
    if os.path.isdir(candidate):
        return candidate
    has_split_folders = any(os.path.isdir(os.path.join(data_path, name)) for name in ("train", "val"))
    if not has_split_folders and _holds_class_folders(data_path):
        logger.info("%s has no %s/ folder but holds class folders: using it as the %s split",
                    data_path, subfolder, split)
        return data_path
    raise DropCovError(f"missing {subfolder}/ in {data_path}: expected {candidate} with one folder per class "
                       "(or point --data_path at a folder of class folders)")


def survey_image_folder(folder: str) -> tuple[ImageFolderListing, list[FolderProblem]]:
    """List the images of a split folder and every structural problem found on the way (no file is opened).

    Problems: the folder has no class folders; a class folder holds no image; an entry cannot be followed
    (symbolic link loop, broken link) or listed. Sub-folders inside class folders are not searched; they
    are named in ``skipped``.
    """
    if not os.path.isdir(folder):
        raise DropCovError(f"dataset folder {folder} does not exist")
    problems: list[FolderProblem] = []
    class_names = [name for name, is_folder in _visible_entries(folder, problems) if is_folder]
    if not class_names and not problems:
        problems.append(FolderProblem(folder, "no class folders", f"no class folders in {folder}: expected one "
                                      "sub-folder per class holding its images"))
    files: list[str] = []
    labels: list[int] = []
    skipped: list[str] = []
    nested: list[str] = []  # sub-folders of class folders: not searched (ImageNet has none), but named
    real_folder = os.path.realpath(folder)
    for label, name in enumerate(class_names):
        class_folder = os.path.join(folder, name)
        target = os.path.realpath(class_folder)
        if real_folder == target or real_folder.startswith(target + os.sep):
            problems.append(FolderProblem(class_folder, "symbolic link loop", f"class folder {class_folder} is a "
                                          f"symbolic link back to {target} (a loop): remove the link"))
            continue
        entries = _visible_entries(class_folder, problems)
        names = [item for item, is_folder in entries if not is_folder]
        images = [os.path.join(class_folder, item) for item in names if is_image_name(item)]
        others = [os.path.join(class_folder, item) for item in names if not is_image_name(item)]
        nested.extend(os.path.join(class_folder, item) + os.sep for item, is_folder in entries if is_folder)
        if not images:
            sub_folders = len(entries) - len(names)
            contents = [f"{len(others)} other file(s)"] * bool(others) + \
                [f"{sub_folders} sub-folder(s) (not searched)"] * bool(sub_folders)
            reason, state = ("no images in class folder", f"holds no image, only {' and '.join(contents)}") \
                if contents else ("empty class folder", "is empty")
            problems.append(FolderProblem(class_folder, reason, f"class folder {class_folder} {state}: add its "
                                          "images or remove the folder"))
        files.extend(images)
        labels.extend([label] * len(images))
        skipped.extend(others)
    listing = ImageFolderListing(folder, tuple(class_names), tuple(files), tuple(labels), tuple(skipped + nested))
    return listing, problems


def scan_image_folder(folder: str) -> ImageFolderListing:
    """List the images of a split folder and check its structure (no file is opened).

    Raises :class:`DropCovError` with the first problem of :func:`survey_image_folder`. Files without an
    image extension are left out of the listing and kept in ``skipped`` (see :func:`skipped_files_note`).
    """
    listing, problems = survey_image_folder(folder)
    if problems:
        more = f" ({len(problems) - 1} more problems: python -m src.tools.verify_dataset lists them all)" \
            if len(problems) > 1 else ""
        raise DropCovError(problems[0].message + more)
    return listing


def skipped_files_note(listing: ImageFolderListing) -> str | None:
    """One line on the non-image files a listing skipped (count and the first few), or None when none."""
    if not listing.skipped:
        return None
    folders = sum(1 for path in listing.skipped if path.endswith(os.sep))
    files = len(listing.skipped) - folders
    what = f"{files} file(s) of {listing.folder} without an image extension ({', '.join(IMAGE_EXTENSIONS)})" \
        if files else ""
    if folders:
        what += (" and " if files else "") + f"{folders} sub-folder(s) of the class folders of {listing.folder} " \
            "(not searched: images sit directly in their class folder)"
    named = ", ".join(listing.skipped[:SKIPPED_NAMED]) + (", ..." if len(listing.skipped) > SKIPPED_NAMED else "")
    return f"skipped {what}: {named}; python -m src.tools.verify_dataset lists them all"


def image_header_problem(path: str) -> str | None:
    """Why ``path`` is not a JPEG/PNG/BMP file judging by its first bytes, or None when it looks fine."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if not head:
        return "is an empty file"
    if any(head.startswith(magic) for magic, _ in _MAGIC):
        return None
    return f"is not a JPEG, PNG or BMP image (starts with bytes {head[:8].hex()})"


def check_image_headers(files: Sequence[str], num_workers: int = 8) -> None:
    """Read the first bytes of every file (in threads) and raise for the first that is not an image.

    Cost: one open and a 16-byte read per file. The message names the bad file and how many others failed.
    """
    if not files:
        return
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        problems = [(path, problem) for path, problem in zip(files, pool.map(image_header_problem, files,
                                                                             chunksize=256)) if problem]
    if problems:
        path, problem = problems[0]
        more = f" ({len(problems) - 1} more bad files; list them with python -m src.tools.verify_dataset)" \
            if len(problems) > 1 else ""
        raise DropCovError(f"{path} {problem}: remove or replace it{more}")


# CIFAR-10, binary version (cifar-10-batches-bin): files of 10,000 records of 1 label byte + 3,072 pixel bytes.
CIFAR10_RECORD_BYTES = 1 + 3 * 32 * 32
CIFAR10_RECORDS_PER_FILE = 10000
CIFAR10_FILE_BYTES = CIFAR10_RECORD_BYTES * CIFAR10_RECORDS_PER_FILE
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_SUBFOLDER = "cifar-10-batches-bin"
CIFAR10_FILE_PATTERNS = {"train": re.compile(r"^data_batch_\d+\.bin$"), "val": re.compile(r"^test_batch\.bin$")}


def resolve_cifar10_folder(data_path: str, split: str, eval_dataset_path: str = "") -> str:
    """The folder holding the CIFAR-10 ``.bin`` files: ``data_path`` (or ``eval_dataset_path`` for "val"),
    or its ``cifar-10-batches-bin`` sub-folder."""
    folder = eval_dataset_path if SPLIT_FOLDERS.get(split) == "val" and eval_dataset_path else data_path
    if not folder or not os.path.isdir(folder):
        raise DropCovError(f"CIFAR-10 folder {folder or '(empty data_path)'} does not exist: set --data_path to "
                           f"the {CIFAR10_SUBFOLDER} folder of the binary CIFAR-10 download")
    nested = os.path.join(folder, CIFAR10_SUBFOLDER)
    return nested if os.path.isdir(nested) else folder


def cifar10_files(folder: str, split: str) -> list[str]:
    """The ``.bin`` files of ``split`` in ``folder`` (``data_batch_*.bin`` / ``test_batch.bin``), size-checked."""
    pattern = CIFAR10_FILE_PATTERNS[SPLIT_FOLDERS[split]]
    files = sorted(os.path.join(folder, name) for name in os.listdir(folder) if pattern.match(name))
    if not files:
        wanted = "data_batch_1.bin .. data_batch_5.bin" if split == "train" else "test_batch.bin"
        raise DropCovError(f"missing CIFAR-10 {split} files in {folder}: expected {wanted} (binary version)")
    for path in files:
        size = os.path.getsize(path)
        if size != CIFAR10_FILE_BYTES:
            raise DropCovError(f"{path} has {size} bytes, not {CIFAR10_FILE_BYTES} (10,000 records of "
                               f"{CIFAR10_RECORD_BYTES} bytes): re-download the binary CIFAR-10")
    return files


def cifar10_class_names(folder: str) -> tuple[str, ...]:
    """Class names from ``batches.meta.txt`` when it lists 10, else the standard CIFAR-10 names."""
    meta = os.path.join(folder, "batches.meta.txt")
    if os.path.isfile(meta):
        with open(meta, encoding="utf-8") as handle:
            names = tuple(line.strip() for line in handle if line.strip())
        if len(names) == len(CIFAR10_CLASSES):
            return names
    return CIFAR10_CLASSES

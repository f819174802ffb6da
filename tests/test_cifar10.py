"""Binary CIFAR-10 pipeline on generated files in the real format (10,000 records of 1 + 3,072 bytes)."""
from __future__ import annotations

import numpy as np
import pytest

from src.data import create_dataset
from src.data.checks import CIFAR10_CLASSES, CIFAR10_FILE_BYTES
from src.data.transforms import CIFAR10_MEAN, CIFAR10_STD
from src.errors import DropCovError

RECORDS = 10000


def write_batch_file(path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 .bin file: per record a label byte then the 32x32 R, G and B planes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, RECORDS).astype(np.uint8)
    planes = rng.integers(0, 256, (RECORDS, 3, 32, 32)).astype(np.uint8)
    np.concatenate([labels[:, None], planes.reshape(RECORDS, -1)], axis=1).tofile(path)
    return labels, planes.transpose(0, 2, 3, 1)  # images HWC


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-bin"
    folder.mkdir()
    write_batch_file(folder / "data_batch_1.bin", 1)
    test_labels, test_images = write_batch_file(folder / "test_batch.bin", 2)
    return folder, test_labels, test_images


def test_train_pipeline_shapes_and_counts(cifar_folder):
    folder, _, _ = cifar_folder
    bundle = create_dataset("cifar10", str(folder.parent), "train", batch_size=50, image_size=32,
                            num_parallel_workers=2, num_shards=3, shard_id=1)
    assert bundle.total_images == RECORDS and bundle.num_images == 3334 and bundle.steps_per_epoch == 66
    assert bundle.class_names == CIFAR10_CLASSES
    images, labels = next(bundle.dataset.create_tuple_iterator(output_numpy=True, num_epochs=1))
    assert images.shape == (50, 3, 32, 32) and images.dtype == np.float32
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() <= 9
    resized = create_dataset("cifar10", str(folder), "train", batch_size=4, image_size=40)
    images, _ = next(resized.dataset.create_tuple_iterator(output_numpy=True, num_epochs=1))
    assert images.shape == (4, 3, 40, 40)


def test_eval_covers_the_test_set_once_in_order(cifar_folder):
    folder, test_labels, test_images = cifar_folder
    (folder / "batches.meta.txt").write_text("\n".join(f"class{k}" for k in range(10)) + "\n\n")
    position = 0
    for shard_id in range(3):
        bundle = create_dataset("cifar10", str(folder), "val", batch_size=999, image_size=32, num_shards=3,
                                shard_id=shard_id)
        assert bundle.class_names == tuple(f"class{k}" for k in range(10))
        for images, labels in bundle.dataset.create_tuple_iterator(output_numpy=True, num_epochs=1):
            stop = position + len(labels)
            np.testing.assert_array_equal(labels, test_labels[position:stop])
            expected = (test_images[position:stop] - np.array(CIFAR10_MEAN)) / np.array(CIFAR10_STD)
            np.testing.assert_allclose(images, expected.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-4)
            position = stop
    assert position == RECORDS
    (folder / "batches.meta.txt").unlink()


def test_bad_cifar_folders_are_named(tmp_path):
    with pytest.raises(DropCovError, match="CIFAR-10 folder .*nowhere does not exist"):
        create_dataset("cifar10", str(tmp_path / "nowhere"), "train", 8, 32)
    with pytest.raises(DropCovError, match="missing CIFAR-10 val files in .*expected test_batch.bin"):
        create_dataset("cifar10", str(tmp_path), "val", 8, 32)
    (tmp_path / "data_batch_1.bin").write_bytes(bytes(3073 * 7))
    with pytest.raises(DropCovError) as caught:
        create_dataset("cifar10", str(tmp_path), "train", 8, 32)
    assert str(caught.value).startswith(f"{tmp_path / 'data_batch_1.bin'} has 21511 bytes, not {CIFAR10_FILE_BYTES}")

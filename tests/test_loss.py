"""Label-smoothed and soft-target cross entropy against numpy."""
import mindspore as ms
import numpy as np
import pytest
from scipy.special import log_softmax

from src.engine.loss import create_loss
from src.errors import DropCovError


def numpy_loss(logits, labels, num_classes, eps):
    target = np.full((len(labels), num_classes), eps / (num_classes - 1))
    target[np.arange(len(labels)), labels] = 1.0 - eps
    return float(np.mean(-np.sum(target * log_softmax(logits.astype(np.float64), axis=1), axis=1)))


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_matches_numpy(eps):
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(4, 7)).astype(np.float32)
    labels = np.array([0, 6, 3, 3], dtype=np.int32)
    loss = create_loss(7, eps)(ms.Tensor(logits), ms.Tensor(labels))
    assert loss.shape == () and loss.dtype == ms.float32
    assert float(loss.asnumpy()) == pytest.approx(numpy_loss(logits, labels, 7, eps), rel=1e-5)


def test_fp16_logits_give_a_float32_loss():
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(3, 5)) * 20).astype(np.float16)  # large enough to overflow an fp16 exp
    labels = np.array([4, 0, 2], dtype=np.int32)
    loss = create_loss(5, 0.1)(ms.Tensor(logits), ms.Tensor(labels))
    assert loss.dtype == ms.float32
    assert np.isfinite(float(loss.asnumpy()))
    assert float(loss.asnumpy()) == pytest.approx(numpy_loss(logits.astype(np.float32), labels, 5, 0.1), rel=1e-5)


def test_plain_cross_entropy_without_smoothing_matches_mindspore():
    rng = np.random.default_rng(2)
    logits = ms.Tensor(rng.normal(size=(4, 3)).astype(np.float32))
    labels = ms.Tensor(np.array([2, 1, 0, 1], dtype=np.int32))
    ours = create_loss(3, 0.0)(logits, labels)
    theirs = ms.nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")(logits, labels)
    assert float(ours.asnumpy()) == pytest.approx(float(theirs.asnumpy()), rel=1e-5)


@pytest.mark.parametrize("num_classes, eps, key", [(1, 0.1, "class_num"), (10, 1.0, "label_smooth_factor"),
                                                   (10, -0.1, "label_smooth_factor")])
def test_invalid_arguments(num_classes, eps, key):
    with pytest.raises(DropCovError, match=key):
        create_loss(num_classes, eps)


def test_soft_target_loss_matches_numpy_and_equals_smoothing_for_one_hot_targets():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3.0, size=(5, 6)).astype(np.float32)
    targets = rng.dirichlet(np.ones(6), size=5).astype(np.float32)
    loss = create_loss(6, 0.1, soft_targets=True)(ms.Tensor(logits), ms.Tensor(targets))
    expected = np.mean(-np.sum(targets * log_softmax(logits.astype(np.float64), axis=1), axis=1))
    assert loss.dtype == ms.float32 and float(loss.asnumpy()) == pytest.approx(expected, rel=1e-5)

    labels = np.array([0, 5, 2, 2, 1], dtype=np.int32)
    smoothed = np.full((5, 6), 0.1 / 5, np.float32)
    smoothed[np.arange(5), labels] = 0.9
    soft = create_loss(6, soft_targets=True)(ms.Tensor(logits), ms.Tensor(smoothed))
    hard = create_loss(6, 0.1)(ms.Tensor(logits), ms.Tensor(labels))
    assert float(soft.asnumpy()) == pytest.approx(float(hard.asnumpy()), rel=1e-6)


def test_soft_target_loss_of_fp16_logits_is_float32():
    logits = (np.random.default_rng(3).normal(size=(2, 4)) * 20).astype(np.float16)
    targets = np.array([[0.7, 0.3, 0, 0], [0, 0, 0.5, 0.5]], np.float32)
    loss = create_loss(4, soft_targets=True)(ms.Tensor(logits), ms.Tensor(targets))
    expected = np.mean(-np.sum(targets * log_softmax(logits.astype(np.float64), axis=1), axis=1))
    assert loss.dtype == ms.float32 and float(loss.asnumpy()) == pytest.approx(expected, rel=1e-4)

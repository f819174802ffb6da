"""Top-1 / top-5 accuracy and cross-entropy of a network on a dataset, summed over data-parallel ranks."""
from __future__ import annotations

import logging
import time
import weakref
from typing import Any, Callable, Dict

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from src.runtime.distributed import sum_over_ranks

logger = logging.getLogger(__name__)

TOP_K = 5


class _BatchScores(nn.Cell):
    """One batch -> per-sample (top-1 hit, top-k hit, cross-entropy), all float32 of shape ``(B,)``.

    With logits ``z`` (B, K) and labels ``y`` (B,): ``top1_b = [argmax z_b = y_b]``,
    ``topk_b = [y_b among the k largest z_b]`` (k = min(5, K)), ``ce_b = -log_softmax(z_b)[y_b]``
    (plain cross entropy, no label smoothing). Runs in float32 whatever the network's AMP level.
    """

    def __init__(self, net: nn.Cell, top_k: int) -> None:
        super().__init__(auto_prefix=False)
        self.net = net
        self.top_k = top_k

    def construct(self, images: Tensor, labels: Tensor):
        logits = ops.cast(self.net(images), ms.float32)
        labels = ops.cast(labels, ms.int32)
        _, top_indices = ops.topk(logits, self.top_k)
        hits = ops.cast(ops.equal(top_indices, labels.expand_dims(1)), ms.float32)
        top1 = hits[:, 0]
        topk = hits.max(axis=1)
        log_probs = ops.log_softmax(logits, -1)
        one_hot = ops.one_hot(labels, logits.shape[1], Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))
        cross_entropy = -(log_probs * one_hot).sum(axis=1)
        return top1, topk, cross_entropy


# One scoring cell per (network, k): a new cell would be compiled again at every evaluation.
_SCORERS: weakref.WeakKeyDictionary[nn.Cell, Dict[int, _BatchScores]] = weakref.WeakKeyDictionary()


def _scorer(net: nn.Cell, top_k: int) -> _BatchScores:
    per_net = _SCORERS.setdefault(net, {})
    if top_k not in per_net:
        per_net[top_k] = _BatchScores(net, top_k)
    return per_net[top_k]


def _num_classes(net: nn.Cell) -> int | None:
    """The network's number of classes (``num_classes``, which the registry's networks record)."""
    count = getattr(net, "num_classes", None)
    if count is None:  # a plain classifier with an ``fc`` layer
        weight = getattr(getattr(net, "fc", None), "weight", None)
        count = weight.shape[0] if weight is not None else None
    return int(count) if count is not None else None


def evaluate(net: nn.Cell, dataset_bundle: Any, parallel_info: Any = None, top_k: int = TOP_K,
             progress: Callable[[int], None] | None = None) -> Dict[str, float]:
    """Score ``net`` on every image of ``dataset_bundle``; counts are summed over data-parallel ranks.

    Args:
        net: the classifier (logits ``(B, K)``); switched to evaluation mode for the pass (BatchNorm moving
            statistics, no DropCov channel dropout) and put back in the mode it was in.
        dataset_bundle: a :class:`src.data.DatasetBundle` of the evaluation split (``.dataset`` yields
            ``(images, labels)`` batches, not shuffled, last partial batch kept; ``.num_images`` is this
            rank's share). When a sharded sampler pads a rank's share with repeated images to equal
            length, only the first ``num_images`` samples of that rank are counted.
        parallel_info: :class:`src.runtime.distributed.ParallelInfo`; with ``group_size > 1`` the four
            sums are all-reduced, so every rank returns the totals over the whole split.
        top_k: the k of "top-5" (capped at the number of classes).
        progress: called with the number of batches scored after each batch (e.g. to log a progress line).

    Returns:
        ``{"top1": hits/count, "top5": top-k hits/count, "loss": mean cross entropy (no label
        smoothing), "count": images scored (all ranks), "seconds": wall time}``; accuracies are
        fractions in [0, 1].

    Example:
        >>> bundle = create_dataset("imagenet", "/data/imagenet", "val", 64, 224)
        >>> evaluate(net, bundle)
        {'top1': 0.7702, 'top5': 0.9351, 'loss': 0.93, 'count': 50000, 'seconds': 91.2}
    """
    started = time.perf_counter()
    num_classes = _num_classes(net)
    k = min(top_k, num_classes) if num_classes else top_k
    scorer = _scorer(net, k)
    was_training = bool(net.training)
    net.set_train(False)
    scorer.set_train(False)
    limit = getattr(dataset_bundle, "num_images", None)
    sums = np.zeros(5, dtype=np.float64)  # top1 hits, top-k hits, cross-entropy sum, count, non-finite
    seen = 0
    iterator = dataset_bundle.dataset.create_tuple_iterator(num_epochs=1, output_numpy=False)
    try:
        for done, batch in enumerate(iterator, 1):
            images, labels = batch[0], batch[1]
            top1, topk, cross_entropy = (t.asnumpy().astype(np.float64) for t in scorer(images, labels))
            keep = len(top1) if limit is None else max(0, min(len(top1), int(limit) - seen))
            seen += len(top1)
            sums += (top1[:keep].sum(), topk[:keep].sum(), cross_entropy[:keep].sum(), keep,
                     np.count_nonzero(~np.isfinite(cross_entropy[:keep])))
            if progress is not None:
                progress(done)
    finally:
        net.set_train(was_training)
    group_size = getattr(parallel_info, "group_size", 1) if parallel_info is not None else 1
    if group_size > 1:
        sums = sum_over_ranks(sums)
    count = int(round(sums[3]))
    if count == 0:
        logger.warning("evaluation scored no images (empty dataset)")
    if sums[4] > 0:
        logger.warning("%d of %d images gave non-finite logits (float16 overflow under AMP, or diverged "
                       "weights): their predictions count as wrong", int(sums[4]), count)
    denominator = max(count, 1)
    return {"top1": float(sums[0] / denominator), "top5": float(sums[1] / denominator),
            "loss": float(sums[2] / denominator), "count": count,
            "seconds": float(time.perf_counter() - started)}

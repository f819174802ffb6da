"""The kernels' one door: swap a built network's cells for the twins that run on our CPU kernels.

Applied after the network is built (by whoever assembles a run: ``train.py``, checkpoint loading, the benchmarks);
the networks themselves know nothing of the kernels. ``conv_backend`` is resolved here once
(:func:`src.kernels.backend.resolve_conv_backend`); with ``onednn`` the convolutions, padded max-pools and batch
norms (evaluation) run on our kernels, and in evaluation each batch norm (and ReLU) a network lists in its
``conv_batch_norm_chains()`` folds into the convolution before it and each residual addition runs with its ReLU
in one pass. No parameter name or shape changes.
"""
from __future__ import annotations

import logging

from mindspore import nn

from src.models.cell_surgery import child_cell, replace_cells
from src.models.layers import ResidualReLU

from .add_relu import InferenceAddReLU
from .backend import resolve_conv_backend
from .batch_norm import InferenceBatchNorm2d, can_replace_batch_norm
from .conv_batch_norm import EvaluationIdentity, OneDNNConvBatchNorm
from .onednn_conv import OneDNNConv2d, can_replace
from .onednn_pool import OneDNNMaxPool2d, can_replace_pool

logger = logging.getLogger(__name__)


def use_onednn_convolutions(net: nn.Cell, library: str) -> int:
    """Replace every ``nn.Conv2d``/``nn.Conv1d`` of ``net`` that the oneDNN kernels compute by a
    :class:`src.kernels.onednn_conv.OneDNNConv2d`; returns how many."""
    return len(replace_cells(net, lambda cell: OneDNNConv2d(cell, library) if can_replace(cell) else None))


def use_onednn_max_pools(net: nn.Cell, library: str) -> int:
    """Replace every padded ``nn.MaxPool2d`` of ``net`` that oneDNN's pooling computes by a
    :class:`src.kernels.onednn_pool.OneDNNMaxPool2d`; returns how many."""
    return len(replace_cells(net, lambda cell: OneDNNMaxPool2d(cell, library) if can_replace_pool(cell) else None))


def use_inference_batch_norms(net: nn.Cell, library: str) -> int:
    """Replace every ``nn.BatchNorm2d`` of ``net`` whose evaluation forward our kernel computes in one pass by a
    :class:`src.kernels.batch_norm.InferenceBatchNorm2d` (training keeps MindSpore's); returns how many."""
    return len(replace_cells(net, lambda cell: InferenceBatchNorm2d(cell, library)
                             if can_replace_batch_norm(cell) else None))


def use_inference_add_relus(net: nn.Cell, library: str) -> int:
    """Replace every :class:`src.models.layers.ResidualReLU` of ``net`` by a
    :class:`src.kernels.add_relu.InferenceAddReLU` (one pass in evaluation); returns how many."""
    return len(replace_cells(net, lambda cell: InferenceAddReLU(cell, library)
                             if isinstance(cell, ResidualReLU) else None))


def fuse_conv_batch_norms(net: nn.Cell, library: str) -> int:
    """Fold, for evaluation, each batch norm (and ReLU) into the oneDNN convolution before it, in every chain a
    cell of ``net`` lists in ``conv_batch_norm_chains()``; returns how many chains.

    Runs after :func:`use_onednn_convolutions` and :func:`use_inference_batch_norms`: a chain folds when its
    convolution is a :class:`~src.kernels.onednn_conv.OneDNNConv2d` and its batch norm an
    :class:`~src.kernels.batch_norm.InferenceBatchNorm2d` (moving statistics in evaluation). The batch norm
    and ReLU cells of a folded chain become the identity in evaluation: a chain must name cells whose
    output ``construct`` reads nowhere else (which ``tests/test_onednn_conv_batch_norm.py`` checks for the
    networks' own declarations only as far as no ReLU is named twice).
    """

    twins: dict[int, nn.Cell] = {}
    for _, cell in net.cells_and_names():
        for conv_name, bn_name, relu_name in getattr(cell, "conv_batch_norm_chains", tuple)():
            conv, bn = child_cell(cell, conv_name), child_cell(cell, bn_name)
            if not (isinstance(conv, OneDNNConv2d) and not conv.one_dimensional
                    and isinstance(bn, InferenceBatchNorm2d)):
                continue
            twins[id(conv)] = OneDNNConvBatchNorm(conv, bn.batch_norm, relu_name is not None, library)
            twins[id(bn)] = EvaluationIdentity(bn)
            if relu_name is not None:
                relu = child_cell(cell, relu_name)
                if not isinstance(relu, nn.ReLU):
                    raise TypeError(f"{type(cell).__name__}.conv_batch_norm_chains(): {relu_name} is not a ReLU")
                twins[id(relu)] = EvaluationIdentity(relu)
    replace_cells(net, lambda cell: twins.get(id(cell)))
    return sum(isinstance(twin, OneDNNConvBatchNorm) for twin in twins.values())


def apply_conv_backend(net: nn.Cell, requested: str, device_target: str, amp_level: str) -> str:
    """Resolve ``conv_backend``; for ``onednn`` swap ``net``'s convolutions, padded max-pools and batch norms
    (evaluation mode) to our kernels, and in evaluation fold batch norms and ReLUs into the convolutions
    before them and run residual additions with their ReLU in one pass; return the backend."""

    backend, detail = resolve_conv_backend(requested, device_target, amp_level)
    if backend == "onednn":
        convolutions = use_onednn_convolutions(net, detail)
        pools = use_onednn_max_pools(net, detail)
        batch_norms = use_inference_batch_norms(net, detail)
        fused = fuse_conv_batch_norms(net, detail)
        add_relus = use_inference_add_relus(net, detail)
        logger.info("conv_backend=%s: %d convolutions, %d max-pools and %d batch norms (evaluation) run on our "
                    "kernels; in evaluation %d batch norms folded into their convolutions and %d residual "
                    "additions + ReLU in one pass (%s)", requested, convolutions, pools, batch_norms, fused,
                    add_relus, detail)
    else:
        logger.info("conv_backend=%s: MindSpore's convolutions (%s)", requested, detail)
    return backend

"""Replace sub-cells of a built network in place with twins: exportable max-pools, faster kernels.

A twin computes the same function as the cell it replaces and takes over its Parameters under their
names, so checkpoints and optimizers see no difference.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator, List, Tuple, Union

from mindspore import Tensor, nn, ops

logger = logging.getLogger(__name__)

#: What :func:`replace_cells` did, for :func:`restore_cells`: (parent, child key, original cell).
Replacements = List[Tuple[nn.Cell, str, nn.Cell]]


def set_child(parent: nn.Cell, key: str, cell: nn.Cell) -> None:
    """Replace the child ``key`` of ``parent`` (an index for containers, whose cell lists need updating)."""
    if key.isdigit() and isinstance(parent, (nn.SequentialCell, nn.CellList)):
        parent[int(key)] = cell
    else:
        setattr(parent, key, cell)


def child_cell(parent: nn.Cell, name: str) -> nn.Cell:
    """The sub-cell of ``parent`` at the dotted ``name`` (``'layer1.0.conv1'``, ``'down_sample_layer.0'``)."""
    cell = parent
    for part in name.split("."):
        cell = cell[int(part)] if part.isdigit() else getattr(cell, part)
    return cell


def replace_cells(net: nn.Cell, twin_of: Callable[[nn.Cell], nn.Cell | None]) -> Replacements:
    """Put ``twin_of(cell)`` in place of every sub-cell of ``net`` for which it is not None.

    Parameters of ``net`` that a twin holds keep their names (and so their checkpoint keys).
    """
    names = {id(param): param.name for param in net.get_parameters()}
    replaced: Replacements = []
    for name, cell in list(net.cells_and_names()):
        if not name:
            continue
        twin = twin_of(cell)
        if twin is None:
            continue
        parent_name, _, key = name.rpartition(".")
        parent = child_cell(net, parent_name) if parent_name else net
        twin.set_train(cell.training)  # a new cell starts in evaluation mode; the twin takes the cell's
        set_child(parent, key, twin)
        for param in twin.get_parameters():  # setattr re-prefixes them with the child key only
            if id(param) in names:
                param.name = names[id(param)]
        replaced.append((parent, key, cell))
    return replaced


def restore_cells(replaced: Replacements) -> None:
    """Undo :func:`replace_cells`."""
    for parent, key, cell in reversed(replaced):
        original_names = {id(param): param.name for param in cell.get_parameters()}
        set_child(parent, key, cell)
        for param in cell.get_parameters():
            param.name = original_names[id(param)]


class EdgePaddedMaxPool2d(nn.Cell):
    """``nn.MaxPool2d(pad_mode='pad')`` built from operators every exporter converts: edge pad, then 'valid' pool.

    ``(B, C, H, W)`` -> ``(B, C, (H + 2 ph - kh) // sh + 1, (W + 2 pw - kw) // sw + 1)``. Repeating the border
    row/column ``p`` times is exact for a max-pool whenever ``p <= k // 2`` (MindSpore's own limit): every window
    that covers a padded cell also covers the border cell it copies, so the maximum is that of the real cells,
    as with the pool's implicit -inf padding. Needed because MindSpore lowers a padded ``nn.MaxPool2d`` to
    ``MaxPool3DWithArgmax``, which its ONNX exporter cannot convert; training keeps that op, which is several
    times faster on CPU than a separate pad plus 'valid' pool in forward + backward.
    """

    def __init__(self, kernel_size: Tuple[int, int], stride: Tuple[int, int], padding: Tuple[int, int]) -> None:
        super().__init__()
        self.pad_h, self.pad_w = padding
        self.pool = nn.MaxPool2d(kernel_size=kernel_size, stride=stride, pad_mode="valid")

    def construct(self, x: Tensor) -> Tensor:
        if self.pad_w > 0:
            x = ops.concat([x[:, :, :, :1]] * self.pad_w + [x] + [x[:, :, :, -1:]] * self.pad_w, 3)
        if self.pad_h > 0:
            x = ops.concat([x[:, :, :1]] * self.pad_h + [x] + [x[:, :, -1:]] * self.pad_h, 2)
        return self.pool(x)


def _edge_padded_equivalent(pool: nn.MaxPool2d) -> Union[EdgePaddedMaxPool2d, None]:
    """The exportable twin of a padded ``nn.MaxPool2d``; None when it has none (dilation, ceil_mode, indices)."""
    attrs = pool.max_pool.attrs
    if pool.return_indices or attrs["ceil_mode"] or tuple(attrs["dilation"]) != (1, 1, 1):
        return None
    return EdgePaddedMaxPool2d(tuple(attrs["ksize"][1:]), tuple(attrs["strides"][1:]), tuple(attrs["pads"][1:]))


@contextmanager
def exportable_max_pools(net: nn.Cell) -> Iterator[nn.Cell]:
    """Within the block, every padded ``nn.MaxPool2d`` in ``net`` is an :class:`EdgePaddedMaxPool2d` (same output).

    The ResNet-18/34 stem pool (3x3/2, padding 1) is one: MindSpore 2.10 cannot export it to ONNX as is.
    The original cells are put back on leaving the block, so training keeps the fast op.
    """
    def twin_of(cell: nn.Cell) -> Union[EdgePaddedMaxPool2d, None]:
        return _edge_padded_equivalent(cell) if isinstance(cell, nn.MaxPool2d) and cell.use_pad else None

    replaced = replace_cells(net, twin_of)
    try:
        yield net
    finally:
        restore_cells(replaced)


def use_onednn_convolutions(net: nn.Cell, library: str) -> int:
    """Replace every ``nn.Conv2d``/``nn.Conv1d`` of ``net`` that the oneDNN kernels compute by a
    :class:`src.kernels.onednn_conv.OneDNNConv2d`; returns how many."""
    from src.kernels.onednn_conv import OneDNNConv2d, can_replace

    return len(replace_cells(net, lambda cell: OneDNNConv2d(cell, library) if can_replace(cell) else None))


def use_onednn_max_pools(net: nn.Cell, library: str) -> int:
    """Replace every padded ``nn.MaxPool2d`` of ``net`` that oneDNN's pooling computes by a
    :class:`src.kernels.onednn_pool.OneDNNMaxPool2d`; returns how many."""
    from src.kernels.onednn_pool import OneDNNMaxPool2d, can_replace_pool

    return len(replace_cells(net, lambda cell: OneDNNMaxPool2d(cell, library) if can_replace_pool(cell) else None))


def use_inference_batch_norms(net: nn.Cell, library: str) -> int:
    """Replace every ``nn.BatchNorm2d`` of ``net`` whose evaluation forward our kernel computes in one pass by a
    :class:`src.kernels.batch_norm.InferenceBatchNorm2d` (training keeps MindSpore's); returns how many."""
    from src.kernels.batch_norm import InferenceBatchNorm2d, can_replace_batch_norm

    return len(replace_cells(net, lambda cell: InferenceBatchNorm2d(cell, library)
                             if can_replace_batch_norm(cell) else None))


def use_inference_add_relus(net: nn.Cell, library: str) -> int:
    """Replace every :class:`src.models.layers.ResidualReLU` of ``net`` by a
    :class:`src.kernels.add_relu.InferenceAddReLU` (one pass in evaluation); returns how many."""
    from src.kernels.add_relu import InferenceAddReLU

    from .layers import ResidualReLU

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
    from src.kernels.batch_norm import InferenceBatchNorm2d
    from src.kernels.conv_batch_norm import EvaluationIdentity, OneDNNConvBatchNorm
    from src.kernels.onednn_conv import OneDNNConv2d

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
    from src.kernels.backend import resolve_conv_backend

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

"""Replace sub-cells of a built network in place with twins: the mechanism (:func:`replace_cells`) and the
exportable max-pools. The CPU kernels' twins are swapped in by :mod:`src.kernels.swap`, after the network is built.

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

"""Replace sub-cells of a built network in place (faster or exportable twins of some layers)."""
from __future__ import annotations

from typing import Callable, List, Tuple

from mindspore import nn

#: What :func:`replace_cells` did, for :func:`restore_cells`: (parent, child key, original cell).
Replacements = List[Tuple[nn.Cell, str, nn.Cell]]


def set_child(parent: nn.Cell, key: str, cell: nn.Cell) -> None:
    """Replace the child ``key`` of ``parent`` (an index for containers, whose cell lists need updating)."""
    if key.isdigit() and isinstance(parent, (nn.SequentialCell, nn.CellList)):
        parent[int(key)] = cell
    else:
        setattr(parent, key, cell)


def replace_cells(net: nn.Cell, twin_of: Callable[[nn.Cell], nn.Cell | None]) -> Replacements:
    """Put ``twin_of(cell)`` in place of every sub-cell of ``net`` for which it is not None.

    Parameters the twin takes over from the original keep their names (and so their checkpoint keys).
    """
    replaced: Replacements = []
    for name, cell in list(net.cells_and_names()):
        if not name:
            continue
        twin = twin_of(cell)
        if twin is None:
            continue
        *parents, key = name.split(".")
        parent = net
        for part in parents:
            parent = parent[int(part)] if part.isdigit() else getattr(parent, part)
        original_names = {id(param): param.name for param in cell.get_parameters()}
        set_child(parent, key, twin)
        for param in twin.get_parameters():  # setattr re-prefixes them with the child key only
            if id(param) in original_names:
                param.name = original_names[id(param)]
        replaced.append((parent, key, cell))
    return replaced


def restore_cells(replaced: Replacements) -> None:
    """Undo :func:`replace_cells`."""
    for parent, key, cell in reversed(replaced):
        original_names = {id(param): param.name for param in cell.get_parameters()}
        set_child(parent, key, cell)
        for param in cell.get_parameters():
            param.name = original_names[id(param)]

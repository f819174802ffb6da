"""What a checkpoint's parameters mean for a network: which fit, what network they describe, loading them.

A checkpoint holds network parameters and bookkeeping (optimizer moments, run state, text entries).
:func:`load_network_weights` checks every network name and shape before loading anything and, for a
checkpoint of another network, says which one it is (:func:`describe_checkpoint`, read from parameter
names with the registry's ResNet facts) and the config keys that build it. :func:`adapt_for_finetune`
drops a classifier of another class count (the classifier is the model's own fact,
``ModelSpec.classifier``).
"""
from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn

from src.errors import DropCovError

from .ema_weights import EMA_PREFIX
from .specs import resnet_name

logger = logging.getLogger(__name__)

#: Entries of a training checkpoint that are not network parameters (optimizer state, run state).
BOOKKEEPING_NAMES = frozenset({
    "global_step", "momentum", "learning_rate", "epoch_num", "step_num", "config", "best_metric",
    "scale_sense", "loss_scale", "current_iterator_step", "last_overflow_iterator_step",
})
#: Name prefixes of optimizer state (MindSpore optimizers clone the parameters under these prefixes) and of
#: the training step's own state (gradient accumulators, the model EMA's averages).
BOOKKEEPING_PREFIXES = ("moments.", "optimizer.", "learning_rate_group_", "accum.", "moment1.", "moment2.",
                        "beta1_power", "beta2_power", EMA_PREFIX)
_LIST_LIMIT = 5


class CheckpointMismatch(DropCovError):
    """A checkpoint of another network than the config builds; ``fits`` holds the config keys that build it
    (``{"net_name": ..., "head": ..., "cov_dim": ..., "class_num": ...}``, empty when unknown)."""

    def __init__(self, message: str, fits: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.fits = dict(fits or {})


def is_bookkeeping(name: str, value: Any = None) -> bool:
    """Whether a checkpoint entry is run/optimizer state rather than a network parameter: the names in
    :data:`BOOKKEEPING_NAMES`, the prefixes in :data:`BOOKKEEPING_PREFIXES`, and any str or 0-d value
    (the entries ``save_checkpoint_atomic`` appends)."""
    if name in BOOKKEEPING_NAMES or name.startswith(BOOKKEEPING_PREFIXES) or isinstance(value, str):
        return True
    return value is not None and _shape(value) == ()


def _shape(value: Any) -> Tuple[int, ...] | None:
    if isinstance(value, str):
        return None
    if isinstance(value, (tuple, list)):
        return tuple(int(dim) for dim in value)
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(int(dim) for dim in shape)


def _network_entries(param_dict: Mapping[str, Any]) -> Dict[str, Any]:
    return {name: value for name, value in param_dict.items() if not is_bookkeeping(name, value)}


def describe_checkpoint(param_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """What network a parameter dict (a checkpoint, or ``{p.name: p}`` of a network) was built as.

    Values may be Parameters, Tensors, arrays or shape tuples. Returns a dict with
    ``backbone`` (``resnet18`` ... ``resnet152`` or None), ``block`` (``basic`` when ``layerN.i.bn1d`` /
    no ``conv3``, ``bottleneck`` when ``layerN.i.conv3`` exists), ``blocks_per_layer`` (4 ints),
    ``head`` (``dropcov`` if ``layer_reduce.weight`` exists, else ``gap``), ``cov_dim``
    (``layer_reduce.weight.shape[0]``), ``class_num`` (``fc.weight.shape[0]``), ``feature_dim``
    (``fc.weight.shape[1]``) and ``training_state`` (optimizer moments present). Unknown fields are None.
    """
    shapes = {name: _shape(value) for name, value in _network_entries(param_dict).items()}
    blocks: Dict[int, int] = {}
    has_conv3 = False
    for name in shapes:
        match = re.match(r"^layer([1-4])\.(\d+)\.(\w+)", name)
        if not match:
            continue
        layer, index, part = int(match.group(1)), int(match.group(2)), match.group(3)
        blocks[layer] = max(blocks.get(layer, 0), index + 1)
        has_conv3 |= part == "conv3"
    block = ("bottleneck" if has_conv3 else "basic") if blocks else None
    blocks_per_layer = [blocks.get(layer, 0) for layer in (1, 2, 3, 4)] if blocks else None
    backbone = resnet_name(block, blocks_per_layer) if blocks_per_layer else None
    reduce_shape = shapes.get("layer_reduce.weight")
    fc_shape = shapes.get("fc.weight")
    return {
        "backbone": backbone,
        "block": block,
        "blocks_per_layer": blocks_per_layer,
        "head": ("dropcov" if reduce_shape else "gap") if (blocks or fc_shape) else None,
        "cov_dim": reduce_shape[0] if reduce_shape else None,
        "class_num": fc_shape[0] if fc_shape and len(fc_shape) == 2 else None,
        "feature_dim": fc_shape[1] if fc_shape and len(fc_shape) == 2 else None,
        "training_state": any(name.startswith("moments.") for name in param_dict),
    }


def adopt_checkpoint_widths(config: Any, param_dict: Mapping[str, Any], source: str = "the checkpoint") -> Any:
    """``config`` with ``cov_dim`` and ``class_num`` set to the checkpoint's when ``config.widths_from_checkpoint``.

    For checkpoints whose head width is not certain (the authors' PyTorch checkpoints: their code builds a
    256-d head, their published parameter counts fit a 128-d one): the network built is then the
    checkpoint's, and the change is logged. ``config`` is a frozen dataclass (:class:`src.config.Config`);
    returned unchanged without the key, or for a checkpoint without a DropCov head's width (the backbone
    and head still have to match, and :func:`load_network_weights` says so if they do not).
    """
    if not getattr(config, "widths_from_checkpoint", False):
        return config
    found = describe_checkpoint(param_dict)
    widths = {"cov_dim": found["cov_dim"], "class_num": found["class_num"]}
    widths = {key: value for key, value in widths.items() if value}
    changed = {key: value for key, value in widths.items() if getattr(config, key) != value}
    if widths:
        said = ", ".join(f"{key} {getattr(config, key)}" for key in changed)
        logger.info("widths_from_checkpoint: %s from %s%s", ", ".join(f"{key} {value}" for key, value in widths.items()),
                    source, f" (the config said {said})" if changed else "")
    return dataclasses.replace(config, **changed) if changed else config


def describe_network(net: nn.Cell) -> Dict[str, Any]:
    """:func:`describe_checkpoint` of a network's own parameters (what its config built)."""
    return describe_checkpoint({param.name: param for param in net.get_parameters()})


def format_description(description: Mapping[str, Any]) -> str:
    """``resnet50 / head dropcov / cov_dim 128 / class_num 1001`` for a :func:`describe_checkpoint` dict."""
    backbone = description.get("backbone")
    if backbone is None and description.get("blocks_per_layer"):
        backbone = f"{description.get('block') or 'unknown'} blocks {description['blocks_per_layer']}"
    parts = [backbone or "unknown backbone", f"head {description.get('head') or 'unknown'}"]
    if description.get("head") == "dropcov":
        parts.append(f"cov_dim {description.get('cov_dim')}")
    parts.append(f"class_num {description.get('class_num') if description.get('class_num') else 'unknown'}")
    return " / ".join(parts)


@dataclass
class LoadReport:
    """What :func:`load_network_weights` found and did (names are network parameter names)."""

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)


def load_network_weights(net: nn.Cell, param_dict: Mapping[str, Any], strict: bool = True,
                         allow_missing: Iterable[str] = (), source: str = "the checkpoint") -> LoadReport:
    """Load the network parameters of ``param_dict`` into ``net`` after checking names and shapes.

    Bookkeeping entries (:func:`is_bookkeeping`: optimizer moments, ``global_step``, ``epoch_num``,
    ``config``, ...) are ignored. With ``strict`` any missing (except ``allow_missing``, e.g. the
    classifier dropped by :func:`adapt_for_finetune`), unexpected or shape-mismatched network parameter
    raises one :class:`DropCovError` that lists them and says which config fits the checkpoint; nothing
    is loaded then. Without ``strict`` the matching parameters are loaded and the rest reported.
    Values of another float dtype are cast to the network's dtype. ``source`` names the file in messages.
    """
    net_params = {param.name: param for param in net.get_parameters()}
    entries = _network_entries(param_dict)
    allowed = set(allow_missing)
    report = LoadReport(ignored=sorted(set(param_dict) - set(entries)))
    report.missing = [name for name in net_params if name not in entries and name not in allowed]
    report.unexpected = [name for name in entries if name not in net_params]
    for name, param in net_params.items():
        if name in entries:
            saved = _shape(entries[name])
            if saved != tuple(param.shape):
                report.mismatched.append((name, saved, tuple(param.shape)))
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise _mismatch_error(net, param_dict, report, source)

    mismatched = {name for name, _, _ in report.mismatched}
    to_load = {}
    for name, param in net_params.items():
        if name in entries and name not in mismatched:
            to_load[name] = _with_dtype(name, entries[name], param.dtype)
    not_loaded, _ = ms.load_param_into_net(net, to_load, strict_load=True)
    not_loaded = set(not_loaded)
    report.loaded = [name for name in to_load if name not in not_loaded]
    if report.missing or report.unexpected or report.mismatched:
        logger.warning("loaded %d of %d network parameters from %s; %s", len(report.loaded), len(net_params),
                       source, _problem_lists(report))
    return report


def _with_dtype(name: str, value: Any, dtype: Any) -> Parameter:
    if isinstance(value, Parameter) and value.dtype == dtype:
        return value
    return Parameter(_as_tensor(value, dtype), name=name)


def _as_tensor(value: Any, dtype: Any) -> Tensor:
    array = value.asnumpy() if isinstance(value, Tensor) else np.asarray(value)
    return Tensor(array).astype(dtype)


def short_list(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f", ... (+{len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else "")


def format_shape(shape: Tuple[int, ...] | None) -> str:
    return "x".join(str(dim) for dim in shape) if shape else "scalar"


def _problem_lists(report: LoadReport) -> str:
    parts = []
    if report.missing:
        parts.append(f"{len(report.missing)} missing ({short_list(report.missing)})")
    if report.unexpected:
        parts.append(f"{len(report.unexpected)} unexpected ({short_list(report.unexpected)})")
    if report.mismatched:
        shapes = [f"{name}: checkpoint {format_shape(saved)} vs network {format_shape(wanted)}"
                  for name, saved, wanted in report.mismatched]
        parts.append(f"{len(report.mismatched)} of another shape ({short_list(shapes)})")
    return "; ".join(parts)


def _mismatch_error(net: nn.Cell, param_dict: Mapping[str, Any], report: LoadReport, source: str) -> DropCovError:
    saved, built = describe_checkpoint(param_dict), describe_network(net)
    fits = _fitting_keys(saved, built)
    if fits:
        options = " ".join(f"--{key} {value}" for key, value in fits.items())
        fix = f"use {options}"
        if set(fits) == {"class_num"}:
            fix += ", or fine-tune it to your class count with --pre_trained (the classifier is re-initialised)"
        return CheckpointMismatch(
            f"{source} does not fit the network: it is {format_description(saved)} but the config builds "
            f"{format_description(built)}: {fix}. Differences: {_problem_lists(report)}.",
            {"net_name": saved["backbone"], "head": saved["head"], "cov_dim": saved["cov_dim"],
             "class_num": saved["class_num"]} if set(fits) != {"class_num"} else None)
    message = f"{source} does not fit the network: {_problem_lists(report)}."
    prefix_hint = _prefix_hint(report)
    return DropCovError(f"{message} {prefix_hint}" if prefix_hint else message)


def _fitting_keys(saved: Mapping[str, Any], built: Mapping[str, Any]) -> Dict[str, Any]:
    """The config keys (and values) in which the checkpoint's network differs from the built one."""
    fits = {}
    if saved["backbone"] and saved["backbone"] != built["backbone"]:
        fits["net_name"] = saved["backbone"]
    if saved["head"] and built["head"] and saved["head"] != built["head"]:
        fits["head"] = saved["head"]
    if saved["cov_dim"] and saved["cov_dim"] != built["cov_dim"] and saved["head"] == "dropcov":
        fits["cov_dim"] = saved["cov_dim"]
    if saved["class_num"] and built["class_num"] and saved["class_num"] != built["class_num"]:
        fits["class_num"] = saved["class_num"]
    return fits


def _prefix_hint(report: LoadReport) -> str:
    """Detect checkpoint names that carry an extra leading scope (e.g. ``network.``) and say so."""
    missing = set(report.missing)
    for prefix in sorted({name.split(".", 1)[0] + "." for name in report.unexpected if "." in name}):
        stripped = {name[len(prefix):] for name in report.unexpected if name.startswith(prefix)}
        if missing and len(stripped & missing) >= len(missing) / 2:
            return (f"The checkpoint's names carry the extra prefix {prefix!r} (saved from a wrapper cell); "
                    "strip it with the checkpoint converter.")
    return ""


def adapt_for_finetune(param_dict: Mapping[str, Any], net: nn.Cell,
                       classifier: Sequence[str] = ("fc",)) -> Tuple[Dict[str, Any], List[str]]:
    """Drop classifier entries whose output dimension differs from ``net``'s (another ``class_num``).

    ``classifier`` names the classifier cells (``ModelSpec.classifier``). Returns a new dict without them (the network's classifier keeps its fresh initialisation) and the
    dropped keys, to log and to pass as ``allow_missing`` to :func:`load_network_weights`. Optimizer
    moments of the classifier are bookkeeping and ignored by loading anyway. Nothing is dropped when the
    classifier's input width differs too (another ``cov_dim``, head or backbone): that is not a class
    count change, and :func:`load_network_weights` then names the config that fits.
    """
    net_shapes = {param.name: tuple(param.shape) for param in net.get_parameters()}
    prefixes = tuple(f"{cell}." for cell in classifier)
    differing = {name: _shape(value) for name, value in param_dict.items()
                 if name.startswith(prefixes) and name in net_shapes and _shape(value) != net_shapes[name]}
    # Only the output dimension may differ: another input width (cov_dim, head, backbone) is not a class
    # count change, and strict loading must report it with the config that fits.
    if any(shape is None or len(shape) != len(net_shapes[name]) or shape[1:] != net_shapes[name][1:]
           for name, shape in differing.items()):
        return dict(param_dict), []
    dropped = list(differing)
    adapted = {name: value for name, value in param_dict.items() if name not in set(dropped)}
    return adapted, dropped

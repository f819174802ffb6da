"""Parameter names and shapes of the authors' PyTorch DropCov ResNets, mapped onto this project's network.

The PyTorch checkpoints use torchvision names (``bn1.weight``, ``layer1.0.downsample.0.weight`` ...);
the MindSpore network (``arch_style='torch'``) keeps the names of the published MindSpore checkpoints
(``bn1.gamma``, ``layer1.0.down_sample_layer.0.weight``, basic-block ``bn1d``/``bn2d`` ...). This module
is pure name/array bookkeeping (NumPy only): reading ``.pth`` files and writing ``.ckpt`` files live in
``src.tools.convert_torch``.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import numpy as np

from src.errors import DropCovError

BASIC_BLOCK_NETS = ("resnet18", "resnet34")
BOTTLENECK_NETS = ("resnet50", "resnet101", "resnet152")

WRAPPER_PREFIXES = ("module.",)
DROPPED_SUFFIXES = (".num_batches_tracked",)
BATCHNORM_SUFFIXES = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
# PyTorch Conv1d (out, in, k) weight -> MindSpore's Conv2d-based Conv1d (out, in, 1, k).
RESHAPED_PARAMETERS = ("eca_layer.conv.weight",)

_BLOCK_BN = re.compile(r"^(layer\d+\.\d+\.)bn([12])\.(weight|bias|running_mean|running_var)$")
_DOWNSAMPLE = re.compile(r"^(layer\d+\.\d+\.)downsample\.([01])\.")
_ANY_BN = re.compile(
    r"^(?P<module>bn1|layer_reduce_bn|layer\d+\.\d+\.(?:bn[123]|bn[12]d|down_sample_layer\.1))"
    r"\.(?P<field>weight|bias|running_mean|running_var)$")
_LIST_LIMIT = 8


def _short_list(names: list[str]) -> str:
    """'a, b, c' with at most _LIST_LIMIT names and a count of the rest."""
    shown = ", ".join(names[:_LIST_LIMIT])
    return shown if len(names) <= _LIST_LIMIT else f"{shown} ... ({len(names) - _LIST_LIMIT} more)"


def block_kind(net_name: str) -> str:
    """'basic' for resnet18/34, 'bottleneck' for resnet50/101/152; DropCovError otherwise."""
    if net_name in BASIC_BLOCK_NETS:
        return "basic"
    if net_name in BOTTLENECK_NETS:
        return "bottleneck"
    raise DropCovError(f"net_name {net_name!r} has no PyTorch name mapping; "
                       f"use one of {', '.join(BASIC_BLOCK_NETS + BOTTLENECK_NETS)}")


def strip_wrapper_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the ``module.`` prefix that (Distributed)DataParallel adds to every key."""
    stripped = {}
    for name, value in state_dict.items():
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        stripped[name] = value
    return stripped


def mindspore_name(torch_name: str, net_name: str) -> str | None:
    """The MindSpore parameter name for a PyTorch state-dict key, or None for keys with no counterpart.

    ``downsample.N`` -> ``down_sample_layer.N``; basic-block ``bn1``/``bn2`` -> ``bn1d``/``bn2d``;
    BatchNorm ``weight/bias/running_mean/running_var`` -> ``gamma/beta/moving_mean/moving_variance``;
    ``num_batches_tracked`` -> None. Other names (convs, ``fc``, ``eca_layer.conv``) are unchanged.
    """
    if torch_name.endswith(DROPPED_SUFFIXES):
        return None
    name = _DOWNSAMPLE.sub(r"\1down_sample_layer.\2.", torch_name)
    if block_kind(net_name) == "basic":
        name = _BLOCK_BN.sub(r"\1bn\2d.\3", name)
    match = _ANY_BN.match(name)
    if match:
        name = f"{match['module']}.{BATCHNORM_SUFFIXES[match['field']]}"
    return name


def _as_float32_array(value: Any, torch_name: str, source: str) -> np.ndarray:
    """A tensor (torch, numpy, MindSpore) as a float32 NumPy array, without importing torch."""
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu()
        if hasattr(value, "float"):
            value = value.float()
        value = value.numpy()
    elif hasattr(value, "asnumpy"):  # mindspore.Tensor
        value = value.asnumpy()
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.number):
        raise DropCovError(f"{source}: entry {torch_name!r} is a {type(value).__name__}, not a tensor; "
                           f"pass a state dict of tensors (or one under 'state_dict'/'model')")
    return array.astype(np.float32, copy=False)


def infer_head_sizes(state_dict: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(cov_dim, class_num) read from ``layer_reduce.weight`` (d, C, 1, 1) and ``fc.weight`` (K, d(d+1)/2).

    Either is None when its key is absent (a non-DropCov checkpoint).
    """
    weights = strip_wrapper_prefix(state_dict)
    cov_dim = tuple(weights["layer_reduce.weight"].shape)[0] if "layer_reduce.weight" in weights else None
    class_num = tuple(weights["fc.weight"].shape)[0] if "fc.weight" in weights else None
    return cov_dim, class_num


def rename_state_dict(state_dict: Mapping[str, Any], rename: Callable[[str], str | None],
                      target_shapes: Mapping[str, tuple[int, ...]], source: str, network: str,
                      hint: str, network_short: str = "") -> dict[str, np.ndarray]:
    """MindSpore name -> float32 array for every PyTorch key that ``rename`` maps (None: a key with no
    counterpart, e.g. ``num_batches_tracked``); the ``module.`` prefix is stripped first.

    Raises one :class:`DropCovError` naming the keys ``network`` has no parameter for and the parameters (of
    ``network_short``, default ``network``) the checkpoint lacks, followed by ``hint``. Shapes are not
    checked here.
    """
    converted: dict[str, np.ndarray] = {}
    unknown: list[str] = []
    for torch_name, value in strip_wrapper_prefix(state_dict).items():
        name = rename(torch_name)
        if name is None:
            continue
        if name not in target_shapes:
            unknown.append(torch_name)
            continue
        converted[name] = _as_float32_array(value, torch_name, source)
    missing = [name for name in target_shapes if name not in converted]
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"{len(unknown)} key(s) have no parameter in {network}: {_short_list(unknown)}")
        if missing:
            problems.append(f"{len(missing)} parameter(s) of {network_short or network} missing from the checkpoint: "
                            f"{_short_list(missing)}")
        raise DropCovError(f"{source}: {'; '.join(problems)}; {hint}")
    return converted


def convert_torch_state_dict(state_dict: Mapping[str, Any], net_name: str,
                             target_shapes: Mapping[str, tuple[int, ...]],
                             source: str = "checkpoint") -> dict[str, np.ndarray]:
    """Rename and reshape a PyTorch DropCov state dict into this project's parameters.

    Args:
        state_dict: PyTorch key -> tensor (torch or NumPy), with or without the ``module.`` prefix.
        net_name: resnet18/34/50/101/152 (decides the basic-block BN names).
        target_shapes: every parameter of the MindSpore network, name -> shape, in network order
            (``src.tools.convert_torch.target_parameter_shapes`` builds it from the network).
        source: how error messages name the input (usually its path).

    Returns:
        MindSpore name -> float32 array, in the order of ``target_shapes``.

    Raises:
        DropCovError: one line naming the unknown keys, the missing parameters or a shape mismatch.
    """
    block_kind(net_name)
    converted = rename_state_dict(state_dict, lambda key: mindspore_name(key, net_name), target_shapes, source,
                                  f"{net_name} + DropCov (arch_style torch)",
                                  "check --net_name and that this is a DropCov checkpoint of the authors' PyTorch code",
                                  network_short=f"{net_name} + DropCov")
    result: dict[str, np.ndarray] = {}
    for name, shape in target_shapes.items():
        array = converted[name]
        shape = tuple(shape)
        if name in RESHAPED_PARAMETERS and array.size == int(np.prod(shape)):
            array = array.reshape(shape)
        if array.shape != shape:
            hint = ("set cov_dim/class_num to the checkpoint's (layer_reduce.weight rows / fc.weight rows)"
                    if name.startswith(("layer_reduce.", "layer_reduce_bn.", "fc.")) else "check --net_name")
            raise DropCovError(f"{source}: {name} has shape {array.shape} in the checkpoint but {shape} in "
                               f"{net_name} + DropCov; {hint}")
        result[name] = array
    return result

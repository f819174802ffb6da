"""Convert the authors' PyTorch DropCov checkpoints (``.pth`` / ``.pth.tar``) to MindSpore ``.ckpt`` files.

Usage::

    python -m src.tools.convert_torch --net_name resnet50 resnet50_dropcov.pth.tar resnet50_dropcov_torch.ckpt
    python -m src.tools.convert_torch --config_path config/resnet50_dropcov_torch_config.yaml IN.pth OUT.ckpt
    python -m src.tools.convert_torch --net_name deit_small_dropcov deit_s_dropcov.pth.tar deit_s_dropcov.ckpt

The transformers (``deit_small_dropcov``, ``t2t_vit_14_dropcov`` and their class-token baselines) load
into ``create_model(net_name, num_classes=...)``; their names are mapped by :mod:`src.models.vit_mapping`.
A training checkpoint of the authors' transformer code (timm's ``CheckpointSaver``: ``state_dict``,
``state_dict_ema``, ``optimizer``, ``args``, ...) gives its EMA weights unless ``--no_ema``: their
evaluation loads those when present, and their best accuracy is the EMA model's.

The result loads into ``create_model(net_name, arch_style='torch', cov_dim=..., num_classes=...)``
(the ``*_dropcov_torch_config.yaml`` configs) and reproduces the PyTorch evaluation logits.
``cov_dim`` and ``class_num`` default to the checkpoint's own (``layer_reduce.weight`` and
``fc.weight`` rows). PyTorch is needed only here (``requirements-dev.txt``) and is imported lazily.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from src.errors import DropCovError
from src.models.torch_mapping import (
    BASIC_BLOCK_NETS,
    BOTTLENECK_NETS,
    block_kind,
    convert_torch_state_dict,
    infer_head_sizes,
)
from src.models.vit_mapping import vit_net_names

logger = logging.getLogger(__name__)

STATE_DICT_CONTAINERS = ("state_dict", "model")
EMA_CONTAINERS = ("state_dict_ema", "model_ema")  # timm's CheckpointSaver / DeiT's main.py
RESNET_NAMES = BASIC_BLOCK_NETS + BOTTLENECK_NETS


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as error:
        raise DropCovError("converting a PyTorch checkpoint needs PyTorch: pip install -r requirements-dev.txt "
                           "(CPU build: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
                           ) from error
    return torch


def _allow_argparse_namespace(torch: Any) -> contextlib.AbstractContextManager:
    """Let ``weights_only`` loading rebuild ``argparse.Namespace`` (the ``args`` of timm's training checkpoints)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    return safe_globals([argparse.Namespace]) if safe_globals else contextlib.nullcontext()


def load_torch_state_dict(path: str | os.PathLike, trust_pickle: bool = False, use_ema: bool = True) -> dict[str, Any]:
    """The tensors of a ``.pth``/``.pth.tar`` file: a plain state dict, or one under a container key.

    Container keys: ``state_dict_ema`` / ``model_ema`` (EMA weights, taken first when ``use_ema``),
    then ``state_dict`` / ``model``. Reads with ``torch.load(map_location='cpu', weights_only=True)``,
    which unpickles only tensors, plain containers and ``argparse.Namespace``; ``trust_pickle=True``
    allows arbitrary pickled objects (only for files you trust). The ``module.`` prefix of
    (Distributed)DataParallel is kept here and removed by the name mapping.
    """
    torch = _import_torch()
    path = Path(path)
    if not path.is_file():
        raise DropCovError(f"PyTorch checkpoint {str(path)!r} does not exist; pass the .pth/.pth.tar file")
    try:
        with _allow_argparse_namespace(torch):
            loaded = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DropCovError(f"{path}: torch.load(weights_only=True) refused it ({reason}); if you trust the "
                           f"file, rerun with --trust_pickle") from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise DropCovError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: "
                           f"{str(error).strip().splitlines()[0] if str(error).strip() else ''})") from error
    if isinstance(loaded, Mapping):
        for container in (EMA_CONTAINERS if use_ema else ()) + STATE_DICT_CONTAINERS:
            if container in loaded and isinstance(loaded[container], Mapping):
                logger.info("%s: reading the weights under %r", path, container)
                loaded = loaded[container]
                break
    if hasattr(loaded, "state_dict") and callable(loaded.state_dict):  # a pickled nn.Module (--trust_pickle)
        loaded = loaded.state_dict()
    if not isinstance(loaded, Mapping):
        raise DropCovError(f"{path}: holds a {type(loaded).__name__}, not a state dict")
    tensors = {name: value for name, value in loaded.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise DropCovError(f"{path}: no tensors found (top-level keys: {', '.join(map(str, loaded))}); "
                           f"expected a state dict, or one under {' / '.join(STATE_DICT_CONTAINERS)}")
    others = sorted(str(name) for name in loaded if name not in tensors)
    if others:
        raise DropCovError(f"{path}: entries that are not tensors: {', '.join(others[:8])}; expected a "
                           f"state dict, or one under {' / '.join(STATE_DICT_CONTAINERS)}")
    return dict(tensors)


def target_parameter_shapes(net_name: str, cov_dim: int, class_num: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter of the torch-style MindSpore network, in network order."""
    from src.models import create_model

    network = create_model(net_name, num_classes=class_num, head="dropcov", cov_dim=cov_dim,
                           post_norm="none", adaptive_dropout=True, arch_style="torch")
    return {param.name: tuple(param.shape) for param in network.get_parameters()}


def save_mindspore_checkpoint(parameters: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write name -> array as a MindSpore checkpoint, atomically (via :mod:`src.runtime.checkpoint`)."""
    import mindspore as ms

    from src.runtime.checkpoint import save_checkpoint_atomic

    path = Path(path)
    if not path.parent.is_dir():
        raise DropCovError(f"output folder {str(path.parent)!r} does not exist; create it first")
    entries = [{"name": name, "data": ms.Tensor(np.ascontiguousarray(array))}
               for name, array in parameters.items()]
    save_checkpoint_atomic(entries, path)


def convert_vit_checkpoint(state_dict: Mapping[str, Any], output_path: str | os.PathLike, net_name: str,
                           class_num: int | None, source: str) -> dict[str, np.ndarray]:
    """Map an authors' transformer state dict onto ``create_model(net_name, num_classes=...)``, write ``.ckpt``."""
    from src.models import create_model
    from src.models.vit_mapping import convert_vit_state_dict, infer_vit_head

    has_dropcov_head, found_class_num = infer_vit_head(state_dict)
    class_num = class_num if class_num is not None else found_class_num
    if class_num is None:
        raise DropCovError(f"{source}: no classifier.cls_fc.weight, so not a checkpoint of the authors' "
                           f"transformer code")
    if has_dropcov_head != net_name.endswith("_dropcov"):
        other = net_name.replace("_dropcov", "_cls") if net_name.endswith("_dropcov") else \
            net_name.replace("_cls", "_dropcov")
        kind = "has the" if has_dropcov_head else "has no"
        raise DropCovError(f"{source}: the checkpoint {kind} DropCov head (classifier.visual_fc); "
                           f"use --net_name {other}")
    network = create_model(net_name, num_classes=class_num)
    shapes = {param.name: tuple(param.shape) for param in network.get_parameters()}
    parameters = convert_vit_state_dict(state_dict, net_name, shapes, source=source)
    save_mindspore_checkpoint(parameters, output_path)
    logger.info("wrote %s: %d parameters of %s (%d classes)", output_path, len(parameters), net_name, class_num)
    return parameters


def convert_checkpoint(input_path: str | os.PathLike, output_path: str | os.PathLike, net_name: str,
                       cov_dim: int | None = None, class_num: int | None = None,
                       trust_pickle: bool = False, use_ema: bool = True) -> dict[str, np.ndarray]:
    """Read a PyTorch DropCov checkpoint, map it onto ``net_name``, write ``.ckpt``.

    ResNets map onto the arch_style torch network; ``cov_dim``/``class_num`` default to the
    checkpoint's and given values must match it. Transformers (:func:`src.models.vit_mapping.vit_net_names`) take
    ``class_num`` only. ``use_ema`` takes the EMA weights of a training checkpoint that has them.
    Returns the converted parameters (MindSpore name -> float32 array).
    """
    if net_name in vit_net_names():
        if cov_dim is not None:
            raise DropCovError(f"cov_dim does not apply to {net_name}")
        state_dict = load_torch_state_dict(input_path, trust_pickle=trust_pickle, use_ema=use_ema)
        return convert_vit_checkpoint(state_dict, output_path, net_name, class_num, str(input_path))
    block_kind(net_name)  # unknown net_name -> DropCovError before the (slow) load
    state_dict = load_torch_state_dict(input_path, trust_pickle=trust_pickle, use_ema=use_ema)
    found_cov_dim, found_class_num = infer_head_sizes(state_dict)
    cov_dim = cov_dim if cov_dim is not None else found_cov_dim
    class_num = class_num if class_num is not None else found_class_num
    if cov_dim is None or class_num is None:
        raise DropCovError(f"{input_path}: no layer_reduce.weight / fc.weight, so not a DropCov checkpoint "
                           f"of the authors' PyTorch code")
    shapes = target_parameter_shapes(net_name, cov_dim, class_num)
    parameters = convert_torch_state_dict(state_dict, net_name, shapes, source=str(input_path))
    save_mindspore_checkpoint(parameters, output_path)
    logger.info("wrote %s: %d parameters of %s + DropCov (cov_dim %d, %d classes, arch_style torch)",
                output_path, len(parameters), net_name, cov_dim, class_num)
    return parameters


def _config_values(config_path: str) -> dict[str, Any]:
    """net_name / cov_dim / class_num of a config for the authors' PyTorch network (``arch_style: torch``).

    A transformer config gives net_name and class_num only (arch_style, head and cov_dim shape the ResNets)."""
    from src.config import load_config

    config, _ = load_config(["--config_path", config_path])
    if config.net_name in vit_net_names():
        return {"net_name": config.net_name, "class_num": config.class_num}
    if config.arch_style != "torch":
        raise DropCovError(f"{config_path}: arch_style is {config.arch_style!r}; converted PyTorch checkpoints need "
                           f"arch_style torch (use a *_dropcov_torch_config.yaml)")
    if config.head != "dropcov":
        raise DropCovError(f"{config_path}: head is {config.head!r}; PyTorch DropCov checkpoints need head dropcov")
    return {"net_name": config.net_name, "cov_dim": config.cov_dim, "class_num": config.class_num}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m src.tools.convert_torch",
        description="Convert an authors' PyTorch DropCov checkpoint (.pth/.pth.tar) to a MindSpore .ckpt "
                    "for the arch_style torch network.")
    parser.add_argument("input", help="PyTorch checkpoint: a state dict, or one under 'state_dict'/'model'")
    parser.add_argument("output", help="MindSpore checkpoint to write (.ckpt)")
    parser.add_argument("--config_path", default=None,
                        help="YAML config to take net_name/cov_dim/class_num from (options below override it)")
    parser.add_argument("--net_name", choices=RESNET_NAMES + vit_net_names(), default=None,
                        help="network of the checkpoint")
    parser.add_argument("--cov_dim", type=int, default=None,
                        help="covariance width (default: the checkpoint's, 256 for the authors' models)")
    parser.add_argument("--class_num", type=int, default=None,
                        help="classes (default: the checkpoint's, 1000 for the authors' models)")
    parser.add_argument("--no_ema", action="store_true",
                        help="take 'state_dict' of a training checkpoint even when it has EMA weights "
                             "('state_dict_ema' / 'model_ema', taken by default)")
    parser.add_argument("--trust_pickle", action="store_true",
                        help="let torch.load unpickle arbitrary objects (only for files you trust)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 on success, 1 on a DropCovError)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        options = _config_values(args.config_path) if args.config_path else {}
        for key in ("net_name", "cov_dim", "class_num"):
            if getattr(args, key) is not None:
                options[key] = getattr(args, key)
        if "net_name" not in options:
            raise DropCovError("no net_name: pass --net_name (resnet18/34/50/101/152, deit_small_dropcov, ...) "
                               "or --config_path")
        convert_checkpoint(args.input, args.output, options["net_name"], cov_dim=options.get("cov_dim"),
                           class_num=options.get("class_num"), trust_pickle=args.trust_pickle,
                           use_ema=not args.no_ema)
    except DropCovError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Convert the authors' PyTorch DropCov checkpoints (``.pth`` / ``.pth.tar``) to MindSpore ``.ckpt`` files.

Usage::

    python -m src.tools.convert_torch --config_path config/resnet50_dropcov_torch_config.yaml IN.pth.tar OUT.ckpt
    python -m src.tools.convert_torch IN.pth OUT.ckpt

Everything the network needs is read from the file. ResNets: the backbone from its layer names (blocks
per stage, bottleneck or basic blocks), ``cov_dim`` from ``layer_reduce.weight`` and ``class_num`` from
``fc.weight``. Transformers (``deit_small_dropcov``, ``t2t_vit_14_dropcov`` and their ``_cls`` baselines,
names mapped by :mod:`src.models.vit_mapping`): the registered network of the file's depth, MLP width and
head, ``class_num`` from ``classifier.cls_fc.weight``; a training checkpoint of their code (timm's
``CheckpointSaver``: ``state_dict``, ``state_dict_ema``, ``args``, ...) gives its EMA weights unless
``--no_ema``, because their evaluation loads those and their best accuracy is the EMA model's.
The authors' code builds a 256-d head, but the parameter counts published with their checkpoints fit a
128-d one; either converts. ``--net_name``/``--cov_dim``/``--class_num`` or a config only check the file:
a difference is an error, never a silently different network (a config with ``widths_from_checkpoint``
checks the backbone only, and evaluates whatever head width the file has). The result loads into
``create_model(net_name, arch_style='torch', cov_dim=..., num_classes=...)`` and reproduces the PyTorch
evaluation logits. PyTorch is needed only here (``requirements-dev.txt``) and is imported lazily.
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

from src.cli import run_entry_point
from src.errors import CommandLineParser, DropCovError
from src.models._registry import model_specs
from src.models.torch_mapping import convert_torch_state_dict, strip_wrapper_prefix
from src.runtime.file_kind import checkpoint_problem, file_kind

logger = logging.getLogger(__name__)

STATE_DICT_CONTAINERS = ("state_dict", "model")
EMA_CONTAINERS = ("state_dict_ema", "model_ema")  # timm's CheckpointSaver / DeiT's main.py
ZIP_MAGIC = b"PK\x03\x04"
"""``torch.save`` writes a zip archive since PyTorch 1.6."""
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
"""Older ``torch.save`` files start with its magic number pickled with protocol 2."""


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as error:
        raise DropCovError("converting a PyTorch checkpoint needs PyTorch: pip install -r requirements-dev.txt "
                           "(CPU build: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
                           ) from error
    return torch


def pytorch_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a file ``torch.load`` reads (a phrase completing "<path> ..."), or None when it is
    one by its first bytes: a zip archive or the legacy format's magic number."""
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            head = stream.read(512)
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    if not head:
        return "is empty (0 bytes): not a PyTorch checkpoint; re-download or re-copy it"
    if head.startswith((ZIP_MAGIC, LEGACY_TORCH_MAGIC)):
        return None
    if checkpoint_problem(path) is None:
        return ("is a MindSpore checkpoint (.ckpt), not a PyTorch one: there is nothing to convert; evaluate or "
                "fine-tune it directly (eval.py --checkpoint_file_path, train.py --pre_trained)")
    return f"is not a PyTorch checkpoint ({file_kind(path, head)})"


def net_names(family: str) -> tuple[str, ...]:
    """The registered networks of a family (``resnet``, ``vit``) the converter maps checkpoints onto."""
    return tuple(spec.name for spec in model_specs(family))


def _allow_argparse_namespace(torch: Any) -> contextlib.AbstractContextManager:
    """Let ``weights_only`` loading rebuild ``argparse.Namespace`` (the ``args`` of timm's training checkpoints)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    return safe_globals([argparse.Namespace]) if safe_globals else contextlib.nullcontext()


def load_torch_state_dict(path: str | os.PathLike, trust_pickle: bool = False, use_ema: bool = True) -> dict[str, Any]:
    """The tensors of a ``.pth``/``.pth.tar`` file: a plain state dict, or one under a container key.

    Container keys: ``state_dict_ema`` / ``model_ema`` (EMA weights, taken first when ``use_ema``), then
    ``state_dict`` / ``model``. Reads with ``torch.load(map_location='cpu', weights_only=True)``, which
    unpickles only tensors, plain containers and ``argparse.Namespace``; ``trust_pickle=True`` allows
    arbitrary pickled objects (only for files you trust).
    A file that is not a PyTorch checkpoint (a MindSpore ``.ckpt``, an image, random bytes) is named as what
    it is, before PyTorch reads it. The ``module.`` prefix of (Distributed)DataParallel is kept here and
    removed by the name mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise DropCovError(f"PyTorch checkpoint {str(path)!r} does not exist; pass the .pth/.pth.tar file")
    problem = pytorch_file_problem(path)
    if problem is not None:
        raise DropCovError(f"{path} {problem}")
    torch = _import_torch()
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


def is_transformer(state_dict: Mapping[str, Any]) -> bool:
    """Whether a state dict is one of the authors' transformers (its token stem's names) rather than a ResNet."""
    return any(name.startswith("visual_tokens.") for name in strip_wrapper_prefix(state_dict))


def transformer_of(state_dict: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``{"net_name", "class_num"}`` of one of the authors' transformers: the registered network with the
    file's depth (``blocks.N``), MLP width (``blocks.0.mlp.fc1.weight``) and head (``classifier.visual_fc``)."""
    from src.models.vit_mapping import infer_vit_head

    weights = strip_wrapper_prefix(state_dict)
    has_dropcov_head, class_num = infer_vit_head(weights)
    depth = 1 + max((int(name.split(".")[1]) for name in weights if name.startswith("blocks.")), default=-1)
    hidden, embed = (tuple(weights["blocks.0.mlp.fc1.weight"].shape) if "blocks.0.mlp.fc1.weight" in weights
                     else (None, None))
    for spec in model_specs("vit"):
        arch = spec.arch
        if (arch.depth, arch.embed_dim, int(arch.embed_dim * arch.mlp_ratio), arch.head == "dropcov") == \
                (depth, embed, hidden, has_dropcov_head):
            if class_num is None:
                break
            return {"net_name": spec.name, "class_num": class_num}
    raise DropCovError(f"{source}: a transformer of depth {depth}, width {embed}, MLP {hidden}, "
                       f"{'with' if has_dropcov_head else 'without'} the DropCov head is none of "
                       f"{', '.join(net_names('vit'))}; pass --net_name if it is one")


def network_of(state_dict: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``{"net_name", "cov_dim", "class_num"}`` of a PyTorch DropCov state dict, read from its names and shapes.

    ResNets: the backbone comes from the layer names (blocks per stage; ``conv3`` means bottleneck blocks),
    the widths from ``layer_reduce.weight`` (d, C, 1, 1) and ``fc.weight`` (K, d(d+1)/2). Transformers:
    :func:`transformer_of` (no ``cov_dim``).
    """
    from src.models.weights import describe_checkpoint

    if is_transformer(state_dict):
        return {**transformer_of(state_dict, source), "cov_dim": None}
    found = describe_checkpoint(strip_wrapper_prefix(state_dict))
    if found["head"] != "dropcov" or not found["class_num"]:
        raise DropCovError(f"{source}: no layer_reduce.weight / fc.weight, so not a DropCov checkpoint of the "
                           f"authors' PyTorch code")
    if found["backbone"] is None:
        raise DropCovError(f"{source}: its layer names describe no registered ResNet ({found['block']} blocks "
                           f"{found['blocks_per_layer']} per stage); pass --net_name if it is one")
    return {"net_name": found["backbone"], "cov_dim": found["cov_dim"], "class_num": found["class_num"]}


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
                           class_num: int, source: str) -> dict[str, np.ndarray]:
    """Map an authors' transformer state dict onto ``create_model(net_name, num_classes=...)``, write ``.ckpt``."""
    from src.models import create_model
    from src.models.vit_mapping import convert_vit_state_dict

    network = create_model(net_name, num_classes=class_num)
    shapes = {param.name: tuple(param.shape) for param in network.get_parameters()}
    parameters = convert_vit_state_dict(state_dict, net_name, shapes, source=source)
    save_mindspore_checkpoint(parameters, output_path)
    logger.info("wrote %s: %d parameters of %s (%d classes)", output_path, len(parameters), net_name, class_num)
    return parameters


def convert_checkpoint(input_path: str | os.PathLike, output_path: str | os.PathLike, net_name: str | None = None,
                       cov_dim: int | None = None, class_num: int | None = None,
                       trust_pickle: bool = False, use_ema: bool = True) -> dict[str, np.ndarray]:
    """Read a PyTorch DropCov checkpoint, map it onto its network (ResNets: arch_style torch), write ``.ckpt``.

    The network (backbone, ``cov_dim``, ``class_num``) is the file's; ``net_name``/``cov_dim``/``class_num``,
    when given, must match it. ``use_ema`` takes the EMA weights of a training checkpoint that has them.
    Returns the converted parameters (MindSpore name -> float32 array).
    """
    known = net_names("resnet") + net_names("vit")
    if net_name is not None and net_name not in known:
        raise DropCovError(f"net_name {net_name!r} has no PyTorch name mapping; use one of {', '.join(known)}")
    if net_name in net_names("vit") and cov_dim is not None:
        raise DropCovError(f"cov_dim does not apply to {net_name} (a transformer)")
    state_dict = load_torch_state_dict(input_path, trust_pickle=trust_pickle, use_ema=use_ema)
    if net_name in net_names("vit") and is_transformer(state_dict):  # a depth-reduced network may be any
        from src.models.vit_mapping import infer_vit_head

        has_dropcov_head, found_classes = infer_vit_head(state_dict)
        if has_dropcov_head != net_name.endswith("_dropcov"):
            other = net_name.replace("_dropcov", "_cls") if net_name.endswith("_dropcov") else \
                net_name.replace("_cls", "_dropcov")
            raise DropCovError(f"{input_path}: the checkpoint {'has the' if has_dropcov_head else 'has no'} DropCov "
                               f"head (classifier.visual_fc); use --net_name {other}")
        found = {"net_name": net_name, "class_num": found_classes, "cov_dim": None}
    else:
        found = network_of(state_dict, str(input_path))
    if found["cov_dim"] is None:  # a transformer
        if cov_dim is not None:
            raise DropCovError(f"cov_dim does not apply to {found['net_name']} (a transformer)")
        if net_name is not None and net_name != found["net_name"]:
            raise DropCovError(f"{input_path} holds {found['net_name']}, not {net_name}: use --net_name "
                               f"{found['net_name']}")
        if class_num is not None and class_num != found["class_num"]:
            raise DropCovError(f"{input_path} holds {found['class_num']} classes, not {class_num}")
        return convert_vit_checkpoint(state_dict, output_path, found["net_name"], found["class_num"], str(input_path))
    mismatches = [f"{key} {found[key]} (not {value})" for key, value in
                  (("net_name", net_name), ("cov_dim", cov_dim), ("class_num", class_num))
                  if value is not None and found[key] != value]
    if mismatches:
        raise DropCovError(f"{input_path} holds {found['net_name']} + DropCov with {', '.join(mismatches)}: drop "
                           f"the option that differs, or use the config of this network")
    shapes = target_parameter_shapes(found["net_name"], found["cov_dim"], found["class_num"])
    parameters = convert_torch_state_dict(state_dict, found["net_name"], shapes, source=str(input_path))
    save_mindspore_checkpoint(parameters, output_path)
    dim = found["cov_dim"]
    logger.info("wrote %s: %d parameters of %s + DropCov (arch_style torch), read from %s: cov_dim %d "
                "(%d-d representation), %d classes", output_path, len(parameters), found["net_name"], input_path,
                dim, dim * (dim + 1) // 2, found["class_num"])
    return parameters


def expected_by_config(config_path: str) -> dict[str, Any]:
    """What a config for the authors' PyTorch network (``arch_style: torch``) says the file must hold:
    ``net_name``, and ``cov_dim``/``class_num`` unless it takes them from the checkpoint (a transformer
    config: ``net_name`` and ``class_num``)."""
    from src.config import load_config

    config, _ = load_config(["--config_path", config_path])
    if config.net_name in net_names("vit"):
        return {"net_name": config.net_name, "class_num": config.class_num}
    if config.arch_style != "torch":
        raise DropCovError(f"{config_path}: arch_style is {config.arch_style!r}; converted PyTorch checkpoints need "
                           f"arch_style torch (use a *_dropcov_torch_config.yaml)")
    if config.head != "dropcov":
        raise DropCovError(f"{config_path}: head is {config.head!r}; PyTorch DropCov checkpoints need head dropcov")
    if config.widths_from_checkpoint:
        return {"net_name": config.net_name}
    return {"net_name": config.net_name, "cov_dim": config.cov_dim, "class_num": config.class_num}


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(
        prog="python -m src.tools.convert_torch",
        description="Convert an authors' PyTorch DropCov checkpoint (.pth/.pth.tar) to a MindSpore .ckpt "
                    "for the arch_style torch network. The backbone and head widths are read from the file.")
    parser.add_argument("input", help="PyTorch checkpoint: a state dict, or one under 'state_dict'/'model'")
    parser.add_argument("output", help="MindSpore checkpoint to write (.ckpt)")
    parser.add_argument("--config_path", default=None,
                        help="a *_dropcov_torch_config.yaml: the file must hold its network (options below override)")
    parser.add_argument("--net_name", choices=net_names("resnet") + net_names("vit"), default=None,
                        help="check that the file holds this network (default: read from its layer names)")
    parser.add_argument("--cov_dim", type=int, default=None,
                        help="check the covariance width (default: the file's layer_reduce.weight rows)")
    parser.add_argument("--class_num", type=int, default=None,
                        help="check the class count (default: the file's fc.weight rows)")
    parser.add_argument("--no_ema", action="store_true",
                        help="take 'state_dict' of a training checkpoint even when it has EMA weights "
                             "('state_dict_ema' / 'model_ema', taken by default)")
    parser.add_argument("--trust_pickle", action="store_true",
                        help="let torch.load unpickle arbitrary objects (only for files you trust)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors")
    return parser


def _main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    expected = expected_by_config(args.config_path) if args.config_path else {}
    for key in ("net_name", "cov_dim", "class_num"):
        if getattr(args, key) is not None:
            expected[key] = getattr(args, key)
    convert_checkpoint(args.input, args.output, expected.get("net_name"), cov_dim=expected.get("cov_dim"),
                       class_num=expected.get("class_num"), trust_pickle=args.trust_pickle,
                       use_ema=not args.no_ema)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0, or 2 with one line on stderr for a user error)."""
    return run_entry_point(_main, argv, program="convert_torch")


if __name__ == "__main__":
    sys.exit(main())

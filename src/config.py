"""Model-zoo style configuration: a YAML file of defaults, every key also a ``--key value`` option.

A YAML config may hold up to three documents: values, help strings, allowed choices. Every key
must be one of :data:`SCHEMA` (the project's known keys, their types, defaults, help and choices);
an unknown key in the YAML or on the command line is an error that suggests the closest known key.
Nothing here imports MindSpore, so the device environment can be settled after parsing and before
MindSpore is loaded.
"""
from __future__ import annotations

import argparse
import difflib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import yaml

from src.errors import DropCovError


@dataclass(frozen=True)
class KeySpec:
    """Type, default, help text, allowed values and lower bound of one config key."""

    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    item_type: type | None = None  # element type of list-valued keys

    @property
    def type(self) -> type:
        return type(self.default)


def _spec(default: Any, help: str, choices: Iterable | None = None, minimum: float | None = None,
          item_type: type | None = None) -> KeySpec:
    return KeySpec(default, help, tuple(choices) if choices is not None else None, minimum, item_type)


SCHEMA: dict[str, KeySpec] = {
    # model
    "net_name": _spec("resnet50", "backbone (a name of the model registry, src.models.list_models())",
                      ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                       "deit_small_dropcov", "t2t_vit_14_dropcov", "deit_small", "t2t_vit_14"]),
    "head": _spec("dropcov", "classification head: DropCov covariance head or global average pooling",
                  ["dropcov", "gap"]),
    "cov_dim": _spec(128, "channels of the 1x1 reduction before covariance pooling", minimum=2),
    "post_norm": _spec("none", "covariance post-normalisation: none, or iSQRT matrix square root",
                       ["none", "isqrt"]),
    "isqrt_iters": _spec(5, "Newton-Schulz iterations of iSQRT", minimum=1),
    "layer4_stride": _spec(0, "stride of layer4: 0 = auto (1 for dropcov, 2 for gap), 1 or 2", [0, 1, 2]),
    "adaptive_dropout": _spec(True, "adaptive channel dropout in the DropCov head while training"),
    "arch_style": _spec("mindspore", "network variant: the published MindSpore one, or the authors' "
                        "PyTorch one (symmetric padding, BN eps 1e-5)", ["mindspore", "torch"]),
    "class_num": _spec(1001, "number of classifier outputs", minimum=1),
    "conv_init": _spec("XavierUniform", "initialiser of convolution weights",
                       ["XavierUniform", "HeUniform", "HeNormal", "TruncatedNormal"]),
    "dense_init": _spec("TruncatedNormal", "initialiser of the classifier weight",
                        ["TruncatedNormal", "XavierUniform", "HeUniform", "Normal"]),
    # data
    "dataset": _spec("imagenet", "dataset format: ImageNet-style class folders, or CIFAR-10 binary",
                     ["imagenet", "cifar10"]),
    "data_path": _spec("", "dataset root holding train/ and val/ (or a folder of class folders)"),
    "eval_dataset_path": _spec("", "validation folder; empty = DATA_PATH/val"),
    "train_image_size": _spec(224, "training crop size", minimum=8),
    "eval_image_size": _spec(224, "evaluation centre-crop size (resize to size/0.875 first)", minimum=8),
    "train_crop_min_scale": _spec(0.08, "smallest random-crop area (fraction of the image) when training",
                                  minimum=0.01),
    "train_hflip": _spec(True, "random horizontal flip when training"),
    "safe_decode": _spec(True, "decode images with Pillow so a corrupt file stops the run with its name "
                         "(False: MindSpore's fused decode ops, which can crash on some corrupt JPEGs)"),
    "batch_size": _spec(64, "images per device per step", minimum=1),
    "num_parallel_workers": _spec(8, "data-loading workers per device (capped at the CPU count)", minimum=1),
    # run
    "device_target": _spec("GPU", "device to run on", ["CPU", "GPU", "Ascend"]),
    "device_id": _spec(0, "device index for single-device runs", minimum=0),
    "conv_backend": _spec("auto", "CPU convolution kernels: oneDNN blocked-layout kernels built from csrc/ "
                          "(onednn), MindSpore's own (stock), or onednn where it can run (auto: CPU, amp O0)",
                          ["auto", "stock", "onednn"]),
    "mode_name": _spec("GRAPH_MODE", "MindSpore execution mode", ["GRAPH_MODE", "PYNATIVE_MODE"]),
    "run_distribute": _spec(False, "data parallel across the processes started by mpirun or msrun"),
    "device_num": _spec(1, "expected number of devices (the communicator's count wins)", minimum=1),
    "all_reduce_fusion_config": _spec([85, 160], "parameter indices where gradient all-reduce is split",
                                      item_type=int),
    "seed": _spec(1, "random seed (MindSpore, NumPy, dataset shuffling)", minimum=0),
    "output_path": _spec("./output", "run folder: checkpoints, logs, metrics, plots, config"),
    # optimisation
    "epoch_size": _spec(100, "training epochs", minimum=1),
    "train_steps_per_epoch": _spec(0, "limit steps per epoch (0 = the whole training split)", minimum=0),
    "optimizer": _spec("Momentum", "optimizer", ["Momentum"]),
    "momentum": _spec(0.9, "SGD momentum", minimum=0.0),
    "weight_decay": _spec(1e-4, "weight decay on all weights except BN gamma/beta and biases", minimum=0.0),
    "loss_scale": _spec(1024.0, "loss scale (fixed value, or initial value of the dynamic scale)",
                        minimum=1.0),
    "loss_scale_type": _spec("fixed", "loss scaling", ["fixed", "dynamic"]),
    "amp_level": _spec("O0", "automatic mixed precision level (the DropCov pooling stays float32)",
                       ["O0", "O2", "O3"]),
    "lr_decay_mode": _spec("multistep", "learning-rate schedule",
                           ["multistep", "linear", "cosine", "poly", "constant"]),
    "lr_init": _spec(0.0, "learning rate at the start of warmup", minimum=0.0),
    "lr_max": _spec(0.12, "peak learning rate (after warmup)", minimum=0.0),
    "lr_end": _spec(0.0, "final learning rate (linear, cosine, poly)", minimum=0.0),
    "lr_milestones": _spec([30, 60, 90], "epochs where multistep multiplies the rate by lr_gamma",
                           item_type=int),
    "lr_gamma": _spec(0.1, "multistep decay factor", minimum=0.0),
    "lr_power": _spec(2.0, "exponent of the poly schedule", minimum=0.0),
    "warmup_epochs": _spec(0.0, "epochs of linear warmup from lr_init to lr_max", minimum=0.0),
    "use_label_smooth": _spec(True, "label-smoothed cross entropy"),
    "label_smooth_factor": _spec(0.1, "label smoothing epsilon", minimum=0.0),
    # checkpoints, evaluation, logging
    "save_checkpoint": _spec(True, "write checkpoints (rank 0 only)"),
    "save_checkpoint_epochs": _spec(1, "checkpoint every N epochs", minimum=1),
    "keep_checkpoint_max": _spec(10, "periodic checkpoints kept", minimum=1),
    "checkpoint_path": _spec("", "folder for checkpoints; empty = OUTPUT_PATH/checkpoints"),
    "checkpoint_file_path": _spec("", "checkpoint to evaluate, predict with or export"),
    "pre_trained": _spec("", "checkpoint to fine-tune from (the classifier is re-initialised if "
                         "class_num differs)"),
    "resume": _spec("", "resume training: auto (latest in the output folder) or a checkpoint path"),
    "run_eval": _spec(False, "score the val split during training"),
    "eval_start_epoch": _spec(1, "first epoch scored when run_eval is on", minimum=1),
    "eval_interval": _spec(1, "score every N epochs", minimum=1),
    "save_best_ckpt": _spec(True, "keep best.ckpt by validation top-1"),
    "log_interval": _spec(50, "steps between log lines", minimum=1),
    # export
    "file_name": _spec("dropcov", "exported model file name (without extension)"),
    "file_format": _spec("MINDIR", "export format", ["MINDIR", "ONNX", "AIR"]),
}

# Options every entry point has besides the config keys.
RESERVED_OPTIONS = ("config_path", "debug", "help")


class Config:
    """Resolved configuration: attribute access to every key, plus where it came from."""

    def __init__(self, values: dict[str, Any], config_path: str = "", help_texts: dict | None = None):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "config_path", config_path)
        object.__setattr__(self, "help_texts", help_texts or {})

    def __getattr__(self, key: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if key in values:
            return values[key]
        raise AttributeError(f"config has no key {key!r}{_suggestion(key, values)}")

    def __setattr__(self, key: str, value: Any) -> None:
        if key not in self._values:
            raise AttributeError(f"config has no key {key!r}{_suggestion(key, self._values)}")
        self._values[key] = value

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self._values, sort_keys=False, default_flow_style=None)

    def save(self, path: str) -> None:
        """Write the resolved values as YAML (atomically), so a run records exactly what it used."""
        from src.runtime.files import atomic_write_text

        atomic_write_text(path, self.to_yaml())

    def __repr__(self) -> str:
        return "\n".join(f"{k}: {v!r}" for k, v in self._values.items())


def _suggestion(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _type_name(spec: KeySpec) -> str:
    if spec.type is list:
        return f"list of {spec.item_type.__name__}" if spec.item_type else "list"
    return {bool: "bool", int: "int", float: "float", str: "str"}[spec.type]


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def coerce_value(key: str, value: Any, spec: KeySpec, source: str) -> Any:
    """Convert ``value`` (from YAML or a command-line string) to the key's type, or raise."""

    def fail(extra: str = "") -> DropCovError:
        return DropCovError(f"{source}: {key} must be {_type_name(spec)}, got {value!r}{extra}")

    kind = spec.type
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, str)) and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise fail(" (use True/False, true/false, 1/0)")
    if kind is int:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise fail() from None
        raise fail()
    if kind is float:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise fail() from None
        raise fail()
    if kind is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise fail()
    if kind is list:
        items = value
        if isinstance(value, str):
            text = value.strip()
            parsed = yaml.safe_load(text) if text.startswith("[") else [t for t in text.split(",") if t.strip()]
            items = parsed if parsed is not None else []
        if isinstance(items, (int, float)) and not isinstance(items, bool):
            items = [items]
        if not isinstance(items, (list, tuple)):
            raise fail()
        item_spec = KeySpec(spec.item_type() if spec.item_type else "", spec.help)
        return [coerce_value(f"{key}[{i}]", v, item_spec, source) for i, v in enumerate(items)]
    raise fail()


def check_value(key: str, value: Any, spec: KeySpec, choices: Sequence | None, source: str) -> None:
    """Raise if ``value`` is outside the allowed choices or below the key's minimum."""
    if choices is not None and value not in choices:
        allowed = ", ".join(str(c) for c in choices)
        hint = _suggestion(value, [str(c) for c in choices]) if isinstance(value, str) else ""
        raise DropCovError(f"{source}: {key}={value!r} is not allowed; choose one of: {allowed}{hint}")
    if spec.minimum is not None and spec.type in (int, float) and value < spec.minimum:
        raise DropCovError(f"{source}: {key}={value!r} is too small; it must be >= {spec.minimum:g}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader for which a key given twice in one mapping is an error, not a silent override."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first.line + 1}); keep one of them",
                    key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def read_yaml_config(path: str) -> tuple[dict, dict, dict]:
    """Read a config file: (values, help texts, choices). Errors name the file, line and column."""
    if not path:
        return {}, {}, {}
    if not os.path.isfile(path):
        raise DropCovError(f"config file not found: {path} (pass --config_path pointing to a YAML file "
                           f"such as config/resnet50_imagenet2012_config.yaml)")
    try:
        with open(path, encoding="utf-8") as f:
            documents = list(yaml.load_all(f, Loader=_UniqueKeyLoader))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        reason = (err.problem or err.context or "invalid YAML").strip()
        raise DropCovError(f"{where}: YAML syntax error: {reason}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DropCovError(f"{path}: not a readable YAML file: {str(err).splitlines()[0]}") from None
    documents = [doc if doc is not None else {} for doc in documents]
    if len(documents) > 3:
        raise DropCovError(f"{path}: expected at most 3 YAML documents (values, help, choices), "
                           f"found {len(documents)}")
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict):
            what = ("values", "help texts", "choices")[index]
            raise DropCovError(f"{path}: document {index + 1} ({what}) must be a mapping of key: value")
    documents += [{}] * (3 - len(documents))
    values, helps, choices = documents
    for doc in (values, helps, choices):
        for key in doc:
            if key not in SCHEMA:
                raise DropCovError(f"{path}: unknown key {key!r}{_suggestion(str(key), SCHEMA)}")
    for key, allowed in choices.items():
        if not isinstance(allowed, list):
            raise DropCovError(f"{path}: choices for {key} must be a list, got {allowed!r}")
    return values, helps, choices


class _ErrorRaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # noqa: D102 - argparse hook
        raise DropCovError(f"command line: {message}")


def _build_parser(description: str, helps: dict, choices: dict, values: dict,
                  extra_arguments: Callable[[argparse.ArgumentParser], None] | None
                  ) -> argparse.ArgumentParser:
    parser = _ErrorRaisingParser(description=description, allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_path", default="", help="YAML config file (its keys are the options below)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    if extra_arguments is not None:
        extra_arguments(parser)
    group = parser.add_argument_group("config keys (YAML value, overridable here)")
    for key, spec in SCHEMA.items():
        allowed = choices.get(key, spec.choices)
        text = helps.get(key, spec.help)
        default = values.get(key, spec.default)
        suffix = f" [{_type_name(spec)}; default {default!r}"
        suffix += f"; choices: {', '.join(map(str, allowed))}]" if allowed else "]"
        nargs = "+" if spec.type is list else None
        group.add_argument(f"--{key}", dest=key, default=None, nargs=nargs, metavar=key.upper(),
                           help=(text + suffix).replace("%", "%%"))
    return parser


def load_config(argv: Sequence[str] | None = None, description: str = "",
                default_config_path: str = "",
                extra_arguments: Callable[[argparse.ArgumentParser], None] | None = None
                ) -> tuple[Config, argparse.Namespace]:
    """Parse ``argv`` into a validated :class:`Config` and the namespace of non-config options.

    Order of precedence: command line > YAML file (``--config_path``) > :data:`SCHEMA` defaults.
    ``extra_arguments`` adds entry-point options that are not config keys (e.g. predict's images).

    Raises:
        DropCovError: unknown key, wrong type, value outside its choices or range, unreadable YAML.
    """
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config_path", default=default_config_path)
    known, _ = pre.parse_known_args(argv)
    config_path = known.config_path
    values, helps, choices = read_yaml_config(config_path)

    parser = _build_parser(description, helps, choices, values, extra_arguments)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        option = next((u for u in unknown if u.startswith("-")), unknown[0])
        name = option.lstrip("-").split("=")[0]
        known_names = list(SCHEMA) + list(RESERVED_OPTIONS) + [
            a.dest for a in parser._actions if a.dest not in SCHEMA]
        raise DropCovError(f"command line: unknown option {option!r}{_suggestion(name, known_names)}")

    source_yaml = config_path or "defaults"
    resolved: dict[str, Any] = {}
    for key, spec in SCHEMA.items():
        allowed = choices.get(key, spec.choices)
        cli_value = getattr(args, key)
        if cli_value is not None:
            raw = cli_value[0] if spec.type is list and len(cli_value) == 1 else cli_value
            value, source = coerce_value(key, raw, spec, "command line --" + key), "command line --" + key
        elif key in values:
            value, source = coerce_value(key, values[key], spec, source_yaml), source_yaml
        else:
            value, source = spec.default, "defaults"
        check_value(key, value, spec, allowed, source)
        resolved[key] = value
        delattr(args, key)
    merged_help = {k: helps.get(k, s.help) for k, s in SCHEMA.items()}
    return Config(resolved, config_path=config_path, help_texts=merged_help), args

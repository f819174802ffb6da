"""Read a config: YAML file, then ``--key value`` options, over the defaults of :class:`src.config.Config`.

A YAML config may hold up to three documents: values, help strings, allowed choices (the layout of the
original MindSpore code's configs). Every key must be a field of :class:`Config`; an unknown key in the
YAML or on the command line is an error that suggests the closest known key. Values are checked against
the key's type, allowed values and lower bound, and every error is one line naming the source (file or
option), the key and the value. Nothing here imports MindSpore, so the device environment can be settled
after parsing and before MindSpore is loaded.
"""
from __future__ import annotations

import argparse
import math
import os
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from src.errors import CommandLineParser, DropCovError

from .keys import KEYS, MODEL, Config, allowed_values, default_of, keys_in, suggestion

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
"""The repository's config folder (searched for a config that builds a given network)."""
RESERVED_OPTIONS = ("config_path", "debug", "help")
"""Options of every entry point besides the config keys."""

_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
_HINTS = typing.get_type_hints(Config)


def key_type(name: str) -> tuple[type, type | None]:
    """``(type, item type)`` of a key: ``(int, None)``, ``(list, int)``, ..."""
    hint = _HINTS[name]
    origin = typing.get_origin(hint)
    return (list, typing.get_args(hint)[0]) if origin is list else (hint, None)


def _type_name(kind: type, item: type | None) -> str:
    return f"list of {item.__name__}" if kind is list else kind.__name__


def convert(name: str, value: Any, source: str) -> Any:
    """``value`` (typed by YAML, or a command-line string) as the key's type; one-line error if it is not."""
    kind, item = key_type(name)
    if kind is list:
        items = value
        if isinstance(value, str):
            text = value.strip()
            items = yaml.safe_load(text) if text.startswith("[") else [t for t in text.split(",") if t.strip()]
            items = [] if items is None else items
        if isinstance(items, (int, float)) and not isinstance(items, bool):
            items = [items]
        if not isinstance(items, (list, tuple)):
            raise DropCovError(f"{source}: {name} must be {_type_name(kind, item)}, got {value!r}")
        return [_scalar(f"{name}[{index}]", element, item, source) for index, element in enumerate(items)]
    return _scalar(name, value, kind, source)


def _scalar(name: str, value: Any, kind: type, source: str) -> Any:
    text = value.strip() if isinstance(value, str) else None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, (int, str)) and str(value).strip().lower() in _TRUE | _FALSE:
                return str(value).strip().lower() in _TRUE
        elif kind is str:
            if value is None:
                return ""
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                return str(value)
        elif not isinstance(value, bool):
            if kind is int and (isinstance(value, int) or text is not None):
                return int(text) if text is not None else value
            if kind is float and (isinstance(value, (int, float)) or text is not None):
                return float(text) if text is not None else float(value)
    except ValueError:
        pass
    hint = " (use True/False, true/false, 1/0)" if kind is bool else ""
    raise DropCovError(f"{source}: {name} must be {kind.__name__}, got {value!r}{hint}")


def check(name: str, value: Any, choices: Sequence | None, source: str) -> None:
    """Raise if ``value`` is outside the allowed ``choices``, not finite, or outside the key's [minimum, maximum]."""
    if choices is not None and value not in choices:
        allowed = ", ".join(str(c) for c in choices)
        hint = suggestion(value, [str(c) for c in choices]) if isinstance(value, str) else ""
        raise DropCovError(f"{source}: {name}={value!r} is not allowed; choose one of: {allowed}{hint}")
    if isinstance(value, float) and not math.isfinite(value):
        raise DropCovError(f"{source}: {name}={value!r} is not a finite number")
    minimum, maximum = KEYS[name].metadata["minimum"], KEYS[name].metadata["maximum"]
    if minimum is not None and value < minimum:
        raise DropCovError(f"{source}: {name}={value!r} is too small; it must be >= {minimum:g}")
    if maximum is not None and value > maximum:
        raise DropCovError(f"{source}: {name}={value!r} is too large; it must be <= {maximum:g}")


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
    if os.path.isdir(path):
        raise DropCovError(f"config_path {path} is a folder: pass a YAML file such as "
                           "config/resnet50_imagenet2012_config.yaml")
    if not os.path.isfile(path):
        raise DropCovError(f"config file not found: {path} (pass --config_path pointing to a YAML file "
                           f"such as config/resnet50_imagenet2012_config.yaml)")
    try:
        with open(path, encoding="utf-8") as stream:
            documents = list(yaml.load_all(stream, Loader=_UniqueKeyLoader))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise DropCovError(f"{where}: YAML syntax error: {(err.problem or err.context or 'invalid YAML').strip()}") \
            from None
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
    values, helps, choices = documents + [{}] * (3 - len(documents))
    for doc in (values, helps, choices):
        for name in doc:
            if name not in KEYS:
                raise DropCovError(f"{path}: unknown key {name!r}{suggestion(str(name), KEYS)}")
    for name, allowed in choices.items():
        if not isinstance(allowed, list):
            raise DropCovError(f"{path}: choices for {name} must be a list, got {allowed!r}")
    return values, helps, choices


def _build_parser(description: str, helps: dict, choices: dict, values: dict,
                  extra_arguments: Callable[[argparse.ArgumentParser], None] | None) -> argparse.ArgumentParser:
    parser = CommandLineParser(description=description, allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_path", default="", help="YAML config file (its keys are the options below)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    if extra_arguments is not None:
        extra_arguments(parser)
    group = parser.add_argument_group("config keys (YAML value, overridable here)")
    for name, item in KEYS.items():
        kind, element = key_type(name)
        allowed = choices.get(name, allowed_values(item))
        suffix = f" [{_type_name(kind, element)}; default {values.get(name, default_of(item))!r}"
        suffix += f"; choices: {', '.join(map(str, allowed))}]" if allowed else "]"
        group.add_argument(f"--{name}", dest=name, default=None, nargs="+" if kind is list else None,
                           metavar=name.upper(), help=(helps.get(name, item.metadata["help"]) + suffix).replace("%", "%%"))
    return parser


def load_config(argv: Sequence[str] | None = None, description: str = "",
                extra_arguments: Callable[[argparse.ArgumentParser], None] | None = None
                ) -> tuple[Config, argparse.Namespace]:
    """Parse ``argv`` into a checked :class:`Config` and the namespace of the other options.

    Order of precedence: command line > YAML file (``--config_path``) > the defaults of :class:`Config`.
    ``extra_arguments`` adds entry-point options that are not config keys (e.g. predict's images).

    Raises:
        DropCovError: unknown key, wrong type, value outside its choices or range, unreadable YAML.
    """
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config_path", default="")
    config_path = pre.parse_known_args(argv)[0].config_path
    values, helps, choices = read_yaml_config(config_path)

    parser = _build_parser(description, helps, choices, values, extra_arguments)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        option = next((u for u in unknown if u.startswith("-")), unknown[0])
        name = option.lstrip("-").split("=")[0]
        known_names = list(KEYS) + list(RESERVED_OPTIONS) + [a.dest for a in parser._actions if a.dest not in KEYS]
        raise DropCovError(f"command line: unknown option {option!r}{suggestion(name, known_names)}")

    resolved: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, item in KEYS.items():
        given = getattr(args, name)
        delattr(args, name)
        if given is not None:
            source = f"command line --{name}"
            value = convert(name, given[0] if isinstance(given, list) and len(given) == 1 else given, source)
        elif name in values:
            source = config_path
            value = convert(name, values[name], source)
        else:
            source, value = "defaults", default_of(item)
        check(name, value, choices.get(name, allowed_values(item)), source)
        resolved[name] = value
        sources[name] = source
    check_model_keys(resolved, sources)
    return Config(**resolved, config_path=config_path), args


def check_model_keys(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """Raise when a key that shapes networks is set away from its default for a network that does not take it
    (``cov_dim`` for a transformer, ``token_drop`` for a ResNet): it would be silently ignored."""
    from src.models._registry import config_key, model_spec

    spec = model_spec(values["net_name"])
    used = {config_key(option) for option in spec.options} | {"net_name"}
    for name in keys_in(MODEL):
        if name not in used and values[name] != default_of(KEYS[name]):
            raise DropCovError(f"{sources[name]}: {name}={values[name]!r} does not apply to net_name {spec.name} "
                               f"(a {spec.family} network); remove it")


def find_config_file(network: Mapping[str, Any], directory: Path | None = None) -> str | None:
    """The shipped ``config/*.yaml`` whose model keys build ``network`` (``net_name``, ``head``, ``cov_dim``,
    ``class_num``), or None.

    A file fits when its ``net_name`` and ``head`` (and ``cov_dim`` for DropCov) equal the network's; one
    that also has its ``class_num`` is preferred, then ImageNet configs, then the name.
    """
    directory = CONFIG_DIR if directory is None else directory
    if not network.get("net_name") or not directory.is_dir():
        return None
    ranked = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            keys = next(iter(yaml.safe_load_all(path.read_text(encoding="utf-8"))), None)  # 1st: values
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if not isinstance(keys, dict) or keys.get("net_name") != network["net_name"]:
            continue
        if keys.get("head") != network.get("head"):
            continue
        if network.get("head") == "dropcov" and keys.get("cov_dim") != network.get("cov_dim"):
            continue
        ranked.append((keys.get("class_num") != network.get("class_num"), "imagenet" not in path.name, path.name))
    return f"config/{min(ranked)[2]}" if ranked else None

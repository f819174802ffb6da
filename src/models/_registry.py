"""Model registry: :class:`ModelSpec` per network name, ``create_model(name, ...)``, ``list_models()``.

A spec names the function that builds its network (imported only when a network is built), so listing
and checking model names imports no MindSpore. The repository's networks are declared in
:mod:`src.models.specs`.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import DropCovError

CONFIG_KEY_OF_OPTION = {"num_classes": "class_num", "image_size": "train_image_size"}
"""Config key of each ``create_model`` keyword argument whose name differs (the others are the same)."""


@dataclass(frozen=True)
class ModelSpec:
    """What one registered network is.

    Attributes:
        name: the registry name (config key ``net_name``).
        family: ``'resnet'``, ...: networks of one family share a builder and options.
        builder: ``'module:function'``; called as ``function(spec, **options)``.
        arch: the family's architecture facts (e.g. :class:`src.models.specs.ResNetArch`).
        options: ``create_model`` keyword arguments the builder takes (config keys, see
            :data:`CONFIG_KEY_OF_OPTION`).
        classifier: names of the cells whose parameters form the classifier (``fc`` ->
            ``fc.weight``, ``fc.bias``): re-initialised when fine-tuning to another class count.
    """

    name: str
    family: str
    builder: str
    arch: Any
    options: tuple[str, ...]
    classifier: tuple[str, ...] = ("fc",)


_SPECS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry under ``spec.name``; returns it."""
    if spec.name in _SPECS:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _SPECS[spec.name] = spec
    return spec


def _load_builtin_models() -> None:
    from . import specs  # noqa: F401  (registers the repository's networks)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    _load_builtin_models()
    return sorted(_SPECS)


def model_specs(family: str | None = None) -> list[ModelSpec]:
    """The registered specs (of one ``family`` when given), in registration order."""
    _load_builtin_models()
    return [spec for spec in _SPECS.values() if family is None or spec.family == family]


def model_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``; :class:`DropCovError` naming the valid ones if unknown."""
    _load_builtin_models()
    if name not in _SPECS:
        names = sorted(_SPECS)
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DropCovError(f"unknown model net_name={name!r}{hint}: choose one of {', '.join(names)}")
    return _SPECS[name]


def _builder(spec: ModelSpec) -> Callable[..., Any]:
    module, function = spec.builder.split(":")
    return getattr(importlib.import_module(module), function)


def create_model(name: str, **options: Any) -> Any:
    """Build a registered network by name.

    Args:
        name: a name of :func:`list_models` (``resnet18`` ... ``resnet152``).
        **options: the keyword arguments of the network's family (``spec.options``). For the
            ResNets (:func:`src.models.resnet.build_resnet`): ``num_classes`` (the published ImageNet
            checkpoints use 1001), ``head`` (``'dropcov'`` or ``'gap'``), ``cov_dim`` (channels ``d``
            after the DropCov head's 1x1 reduction: 128 in the published checkpoints), ``post_norm``
            (``'none'`` or ``'isqrt'``), ``isqrt_iters``, ``layer4_stride`` (0 = auto), ``adaptive_dropout``,
            ``arch_style`` (``'mindspore'`` or ``'torch'``), ``conv_init``, ``dense_init``, ``eca_init``.

    Returns:
        The network cell, in evaluation mode until ``set_train()``.

    Raises:
        DropCovError: unknown ``name``, an option the family does not take, or a value out of range.

    Example:
        >>> from src.models import create_model
        >>> net = create_model("resnet50", num_classes=1001)           # the published layout
        >>> gap = create_model("resnet18", head="gap")
        >>> torch_style = create_model("resnet50", cov_dim=256, arch_style="torch")
    """
    spec = model_spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise DropCovError(f"{name} takes no option {', '.join(unknown)}: its options are {', '.join(spec.options)}")
    return _builder(spec)(spec, **options)


def config_key(option: str) -> str:
    """The config key that gives a :func:`create_model` keyword argument (``num_classes`` -> ``class_num``)."""
    return CONFIG_KEY_OF_OPTION.get(option, option)


def model_options(config: Any) -> dict[str, Any]:
    """:func:`create_model` keyword arguments (all but the name) read from a config object: the network's
    options that are config keys. An architecture override left at 0 (``depth: 0``) is not passed: the
    network keeps its own value."""
    from .specs import VIT_ARCH_FIELDS

    spec = model_spec(config.net_name)
    options = {option: getattr(config, config_key(option)) for option in spec.options
               if hasattr(config, config_key(option))}
    return {option: value for option, value in options.items() if not (option in VIT_ARCH_FIELDS and value == 0)}


def create_model_from_config(config: Any) -> Any:
    """``create_model(config.net_name, **model_options(config))``: the network a config describes, on MindSpore's
    own cells (the CPU kernels are swapped in afterwards by :func:`src.kernels.swap.apply_conv_backend`)."""
    from .info import check_network_fits

    options = model_options(config)
    check_network_fits(config.net_name, options, (config.train_image_size, config.eval_image_size),
                       config.batch_size)
    return create_model(config.net_name, **options)

"""Model registry: ``@register_model`` factories, ``create_model(name, ...)``, ``list_models()``."""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

from mindspore import nn

from ..errors import DropCovError
from .init import initialize_weights

_MODEL_ENTRYPOINTS: dict[str, Callable[..., nn.Cell]] = {}


def register_model(factory: Callable[..., nn.Cell]) -> Callable[..., nn.Cell]:
    """Register ``factory`` under its function name (e.g. ``resnet50``); returns it unchanged."""
    name = factory.__name__
    if name in _MODEL_ENTRYPOINTS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODEL_ENTRYPOINTS[name] = factory
    return factory


def _load_builtin_models() -> None:
    from . import resnet, vit  # noqa: F401  (register resnet18 ... resnet152, deit_small[_dropcov], t2t_vit_14[_dropcov])


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    _load_builtin_models()
    return sorted(_MODEL_ENTRYPOINTS)


def model_entrypoint(name: str) -> Callable[..., nn.Cell]:
    """The factory registered as ``name``; :class:`DropCovError` naming the valid ones if unknown."""
    _load_builtin_models()
    if name not in _MODEL_ENTRYPOINTS:
        names = sorted(_MODEL_ENTRYPOINTS)
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DropCovError(f"unknown model net_name={name!r}{hint}: choose one of {', '.join(names)}")
    return _MODEL_ENTRYPOINTS[name]


def factory_options(name: str, options: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments the factory ``name`` receives from ``create_model(name, **options, **extra)``.

    ``options`` are :func:`create_model`'s named options. A factory declaring only ``**kwargs`` (the
    ResNets) gets all of them and no ``extra``. A factory with named parameters (the transformers) gets
    those it declares, plus ``extra`` through its own ``**kwargs``; every named option it does not
    declare must keep :func:`create_model`'s default. Raises :class:`DropCovError` naming the option.
    """
    factory = model_entrypoint(name)
    parameters = inspect.signature(factory).parameters
    declared = {key for key, p in parameters.items() if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD}
    extra = dict(extra or {})
    if not declared:
        if extra:
            raise DropCovError(f"{name} takes no option {', '.join(sorted(extra))}")
        return dict(options)
    defaults = inspect.signature(create_model).parameters
    for key, value in options.items():
        if key not in declared and value != defaults[key].default:
            raise DropCovError(f"{key}={value!r} does not apply to {name} (leave it at {defaults[key].default!r})")
    takes_more = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(key for key in extra if key not in declared and not takes_more)
    if unknown:
        raise DropCovError(f"{name} takes no option {', '.join(unknown)}")
    return {**{key: value for key, value in options.items() if key in declared}, **extra}


def create_model(name: str, num_classes: int = 1000, head: str = "dropcov", cov_dim: int = 128,
                 post_norm: str = "none", isqrt_iters: int = 5, layer4_stride: int = 0,
                 adaptive_dropout: bool = True, arch_style: str = "mindspore",
                 conv_init: str = "XavierUniform", dense_init: str = "TruncatedNormal", **model_kwargs: Any) -> nn.Cell:
    """Build a registered network by name.

    Args:
        name: ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ``resnet152``, or a vision
            transformer: ``deit_small_dropcov``, ``t2t_vit_14_dropcov``, ``deit_small``, ``t2t_vit_14``
            (see :func:`list_models`). The transformers take only ``num_classes`` of the ResNet options
            below (the others must keep their defaults) and their own through ``model_kwargs``.
        num_classes: classifier outputs (the published ImageNet checkpoints use 1001).
        head: ``'dropcov'`` (covariance pooling with adaptive channel dropout) or ``'gap'``
            (global average pooling, the standard ResNet).
        cov_dim: channels ``d`` after the DropCov head's 1x1 reduction; the representation has
            ``d(d+1)/2`` values (128 -> 8256 in the published checkpoints, 256 in the PyTorch ones).
        post_norm: ``'none'`` (published checkpoints) or ``'isqrt'`` (iSQRT-COV matrix square root).
        isqrt_iters: Newton–Schulz iterations for ``post_norm='isqrt'``.
        layer4_stride: stride of the last stage; 0 = auto (1 for ``dropcov``, 2 for ``gap``).
        adaptive_dropout: False turns off the DropCov head's ECA re-weighting and channel dropout
            in training too (evaluation never uses them).
        arch_style: ``'mindspore'`` (layout, padding and BatchNorm of the published MindSpore
            checkpoints) or ``'torch'`` (the authors' PyTorch network; same parameter names).
        conv_init: initialiser of every Conv2d weight (``XavierUniform`` as published, ``HeUniform``,
            ``HeNormal``, ``TruncatedNormal``); see :mod:`src.models.init`.
        dense_init: initialiser of the classifier weight (``TruncatedNormal`` as published, ...).
        model_kwargs: options of a transformer factory (``image_size``, ``drop_path_rate``,
            ``drop_rate``, ``token_drop``, ``cov_drop``, architecture overrides such as ``depth``; see
            :mod:`src.models.vit`).

    Returns:
        A :class:`src.models.resnet.ResNet` or :class:`src.models.vit.VisionTransformer` cell, in
        evaluation mode until ``set_train()``.

    Raises:
        DropCovError: unknown ``name`` or an option out of range (the message names it).

    Example:
        >>> from src.models import create_model
        >>> net = create_model("resnet50", num_classes=1001)           # the published layout
        >>> gap = create_model("resnet18", head="gap")
        >>> torch_style = create_model("resnet50", cov_dim=256, arch_style="torch")
        >>> vit = create_model("deit_small_dropcov", drop_path_rate=0.1)
    """
    options = {"num_classes": num_classes, "head": head, "cov_dim": cov_dim, "post_norm": post_norm,
               "isqrt_iters": isqrt_iters, "layer4_stride": layer4_stride, "adaptive_dropout": adaptive_dropout,
               "arch_style": arch_style}
    net = model_entrypoint(name)(**factory_options(name, options, model_kwargs))
    initialize_weights(net, conv_init, dense_init)
    return net


#: Config keys (src/config.py) that are keyword arguments of :func:`create_model`, by argument name.
MODEL_CONFIG_KEYS = {"num_classes": "class_num", "head": "head", "cov_dim": "cov_dim", "post_norm": "post_norm",
                     "isqrt_iters": "isqrt_iters", "layer4_stride": "layer4_stride",
                     "adaptive_dropout": "adaptive_dropout", "arch_style": "arch_style",
                     "conv_init": "conv_init", "dense_init": "dense_init"}


def model_options(config: Any) -> dict[str, Any]:
    """:func:`create_model` keyword arguments (all but the name) read from a config object."""
    return {argument: getattr(config, key) for argument, key in MODEL_CONFIG_KEYS.items()}


def create_model_from_config(config: Any, conv_backend: str | None = None) -> nn.Cell:
    """``create_model(config.net_name, **model_options(config))``: the network a config describes.

    Its convolutions run on ``conv_backend`` (default ``config.conv_backend``; see
    :func:`src.kernels.onednn_conv.apply_conv_backend`), which changes no parameter name or shape.
    """
    from src.kernels.onednn_conv import apply_conv_backend

    net = create_model(config.net_name, **model_options(config))
    apply_conv_backend(net, conv_backend or config.conv_backend, config.device_target, config.amp_level)
    return net

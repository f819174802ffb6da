"""The network of a checkpoint, ready to score: what eval.py, predict.py and export.py load.

One sequence for the three: read the file, pick the raw or EMA weights (``eval_weights``), take the
head's widths from the checkpoint when ``widths_from_checkpoint`` says so, warn where the config's
structure keys (``arch_style``, ``post_norm``, ...) differ from the checkpoint's saved config, build the
network and load every parameter strictly.
"""
from __future__ import annotations

import logging
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)


class CheckpointNetwork(NamedTuple):
    """What :func:`load_checkpoint_network` returns."""

    config: Any  # the config the network was built from (widths possibly taken from the checkpoint)
    net: Any  # the network with the checkpoint's weights, in training mode as built
    weights: str  # "raw" or "ema": the set loaded


def load_checkpoint_network(config: Any, conv_backend: str | None = None) -> CheckpointNetwork:
    """Build ``config``'s network and load ``config.checkpoint_file_path`` into it (every parameter must fit).

    ``config`` is a :class:`src.config.Config`; the network runs on ``conv_backend`` (default
    ``config.conv_backend``, see :func:`src.kernels.swap.apply_conv_backend`). Raises :class:`src.errors.DropCovError` with one line for
    a missing or foreign file and for weights that do not fit the network.
    """
    from src.kernels.swap import apply_conv_backend
    from src.models import create_model_from_config
    from src.models.ema_weights import select_weights
    from src.models.weights import (
        adopt_checkpoint_widths,
        describe_checkpoint,
        format_description,
        load_network_weights,
    )
    from src.runtime.checkpoint import load_checkpoint_file, read_extra

    checkpoint = config.checkpoint_file_path
    params = load_checkpoint_file(checkpoint, option="checkpoint_file_path")
    params, weights = select_weights(params, config.eval_weights, checkpoint)
    config = adopt_checkpoint_widths(config, params, checkpoint)
    for difference in config.structure_differences_from(read_extra(params, "config")):
        logger.warning("%s: this config builds another network than the checkpoint's saved config (%s, saved "
                       "-> now); the weights load, but they are not scored in the network that was trained: "
                       "set the key as the saved config has it", checkpoint, difference)
    net = create_model_from_config(config)
    apply_conv_backend(net, conv_backend or config.conv_backend, config.device_target, config.amp_level)
    load_network_weights(net, params, strict=True, source=checkpoint)
    logger.info("loaded the %s weights of %s (%s)", "EMA" if weights == "ema" else "raw", checkpoint,
                format_description(describe_checkpoint(params)))
    return CheckpointNetwork(config, net, weights)

"""Worker: the DropCov head alone, forward + backward, whole and piece by piece.

``python -m bench.head '{"net_names": ["resnet18"], "batch_size": 8, "feature_size": 14, ...}'``

Input is a random post-ReLU feature map ``(B, C5, h, w)`` as the backbone would give it (C5 = 512 for
ResNet-18/34, 2048 for ResNet-50+; h = w = 14 at 224x224 with layer4 stride 1). Measured in GRAPH_MODE:

- whole heads as a training step (loss, gradients, Momentum update of the head's parameters):
  DropCov with adaptive dropout, without it, with iSQRT, and the GAP head on the same map;
- each piece forward + backward (gradient of the sum of its output w.r.t. input and parameters):
  reduction (conv1x1, BN, ReLU), channel weights (ECA), adaptive dropout (ECA, re-weighting, drop
  rate, channel dropout), covariance, iSQRT, upper triangle, classifier (fc + loss);
- candidate speed-ups of the head's maths, forward only: the row sums of ``Cov(X')`` that feed the
  drop rate, computed from the full covariance (as the head does) and as ``(1/N) Xc (Xc^T 1)``.

``conv_backend`` (``stock`` or ``onednn``) puts the head's convolutions (the 1x1 reduction, and whatever
else ``apply_conv_backend`` replaces) on the chosen kernels, as ``train.py`` would (see :mod:`bench.train_step` for the ISA cap that goes with it).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from bench.common import step_statistics, time_calls, worker_main
from bench.train_step import backend_record, prepare_cpu_environment

BACKBONE_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet152": 2048}


def _cells(cov_dim: int, num_classes: int):
    """Cell classes built after MindSpore is imported (the worker sets the ISA first)."""
    import mindspore as ms
    from mindspore import nn, ops

    from src.models.gcp import covariance_pool, isqrt, upper_triangle

    class HeadWithLoss(nn.Cell):
        def __init__(self, head: nn.Cell, loss_fn: nn.Cell) -> None:
            super().__init__()
            self.head, self.loss_fn = head, loss_fn

        def construct(self, features, labels):
            return self.loss_fn(self.head(features), labels)

    class SumOf(nn.Cell):
        """Scalar ``sum(piece(x))`` so a gradient can flow back through the piece."""

        def __init__(self, piece) -> None:
            super().__init__()
            self.piece = piece

        def construct(self, x):
            return ops.cast(self.piece(x), ms.float32).sum()

    class Function(nn.Cell):
        def __init__(self, function, *args) -> None:
            super().__init__()
            self.function, self.args = function, args

        def construct(self, x):
            return self.function(x, *self.args)

    class Reduction(nn.Cell):
        def __init__(self, head) -> None:
            super().__init__()
            self.head = head

        def construct(self, x):
            return self.head.reduce(x)

    class AdaptiveDropout(nn.Cell):
        def __init__(self, head) -> None:
            super().__init__()
            self.head = head

        def construct(self, x):
            return self.head.adaptive_channel_dropout(x)

    class RowSumsFull(nn.Cell):
        def construct(self, x):
            return covariance_pool(x).sum(axis=2)

    class RowSumsFast(nn.Cell):
        """``rowsum(Cov) = (1/N) Xc (Xc^T 1_d)``: O(N d) instead of O(N d^2)."""

        def construct(self, x):
            batch, channels, height, width = x.shape
            positions = height * width
            features = ops.cast(x, ms.float32).reshape(batch, channels, positions)
            centred = features - features.mean(axis=2, keep_dims=True)
            column_sums = centred.sum(axis=1, keepdims=True)  # (B, 1, N)
            return (centred * column_sums).sum(axis=2) / positions

    return {"HeadWithLoss": HeadWithLoss, "SumOf": SumOf, "Function": Function, "Reduction": Reduction,
            "AdaptiveDropout": AdaptiveDropout, "RowSumsFull": RowSumsFull,
            "RowSumsFast": RowSumsFast, "covariance_pool": covariance_pool, "isqrt": isqrt,
            "upper_triangle": upper_triangle}


def measure_head(net_names: tuple[str, ...] = ("resnet18",), batch_size: int = 8, feature_size: int = 14,
                 cov_dim: int = 128, num_classes: int = 1000, isqrt_iters: int = 5, warmup: int = 2,
                 steps: int = 10, device_target: str = "CPU", seed: int = 0,
                 conv_backend: str = "stock", amp_level: str = "O0") -> dict[str, Any]:
    """Median seconds per call of each head variant and piece, for each backbone width in ``net_names``.

    Every head and piece is built with its convolutions on ``conv_backend``'s kernels.
    """
    prepare_cpu_environment(conv_backend, device_target, amp_level)
    import mindspore as ms
    from mindspore import Tensor, nn

    from src.engine.loss import create_loss
    from src.engine.optimizer import create_optimizer
    from src.kernels.swap import apply_conv_backend
    from src.models.dropcov_head import ChannelWeights, DropCovHead, GlobalAvgPoolHead, classifier
    from src.runtime.device import setup_device

    setup_device(device_target, "GRAPH_MODE")
    ms.set_seed(seed)
    cells = _cells(cov_dim, num_classes)
    used_backends = set()

    def on_backend(cell: nn.Cell) -> nn.Cell:
        """``cell`` with its convolutions on ``conv_backend``'s kernels."""
        used_backends.add(apply_conv_backend(cell, conv_backend, device_target, amp_level))
        return cell

    rng = np.random.default_rng(seed)
    labels = Tensor(rng.integers(0, num_classes, size=(batch_size,), dtype=np.int32))
    reduced = Tensor(np.abs(rng.standard_normal((batch_size, cov_dim, feature_size, feature_size),
                                                dtype=np.float32)))
    gram = rng.standard_normal((batch_size, cov_dim, 2 * cov_dim), dtype=np.float32)
    sigma = Tensor(gram @ gram.transpose(0, 2, 1) / (2 * cov_dim))

    def timing(call) -> dict[str, Any]:
        warm, timed = time_calls(call, warmup, steps)
        return {**step_statistics(timed, batch_size), "warmup_s": [round(t, 3) for t in warm]}

    def train_step_timing(head: nn.Cell, features: Tensor) -> dict[str, Any]:
        step = nn.TrainOneStepCell(cells["HeadWithLoss"](head, create_loss(num_classes, 0.1)),
                                   create_optimizer(head, "Momentum", 0.01, 0.9, 1e-4))
        step.set_train(True)
        return timing(lambda: step(features, labels).asnumpy())

    def grad_timing(piece: nn.Cell, x: Tensor) -> dict[str, Any]:
        summed = cells["SumOf"](piece)
        summed.set_train(True)
        weights = summed.trainable_params()
        value_and_grad = nn.ForwardValueAndGrad(summed, weights=weights or None, get_all=True,
                                                get_by_list=bool(weights))
        value_and_grad.set_train(True)

        def call() -> None:
            value, grads = value_and_grad(x)
            value.asnumpy()
            if weights:
                grads[1][0].asnumpy()
            else:
                grads[0].asnumpy()

        return timing(call)

    def forward_timing(piece: nn.Cell, x: Tensor) -> dict[str, Any]:
        piece.set_train(True)
        return timing(lambda: piece(x).asnumpy())

    results: dict[str, Any] = {}
    for net_name in net_names:
        channels = BACKBONE_CHANNELS[net_name]
        features = Tensor(np.abs(rng.standard_normal((batch_size, channels, feature_size, feature_size),
                                                     dtype=np.float32)))

        def dropcov(post_norm: str = "none", adaptive_dropout: bool = True, channels: int = channels):
            return on_backend(DropCovHead(channels, num_classes, cov_dim=cov_dim, post_norm=post_norm,
                                          isqrt_iters=isqrt_iters, adaptive_dropout=adaptive_dropout))

        whole = {
            "dropcov": train_step_timing(dropcov(), features),
            "dropcov_no_dropout": train_step_timing(dropcov(adaptive_dropout=False), features),
            "dropcov_isqrt": train_step_timing(dropcov(post_norm="isqrt"), features),
            "gap": train_step_timing(on_backend(GlobalAvgPoolHead(channels, num_classes)), features),
        }
        head = dropcov()
        head.set_train(True)
        # The triangle's constant index lives in the head when the model builds it once (newer gcp API).
        triangle_args = tuple(arg for arg in (getattr(head.representation, "triangle_index", None),)
                              if arg is not None)
        triangle = cells["Function"](cells["upper_triangle"], *triangle_args)(cells["covariance_pool"](reduced))
        pieces = {
            "reduction": grad_timing(cells["Reduction"](head), features),
            "channel_weights": grad_timing(on_backend(ChannelWeights()), reduced),
            "adaptive_dropout": grad_timing(cells["AdaptiveDropout"](head), reduced),
            "covariance": grad_timing(cells["Function"](cells["covariance_pool"]), reduced),
            "isqrt": grad_timing(cells["Function"](cells["isqrt"], isqrt_iters), sigma),
            "triangle": grad_timing(cells["Function"](cells["upper_triangle"], *triangle_args), sigma),
            "classifier": train_step_timing(classifier(triangle.shape[1], num_classes), triangle),
        }
        speedups = {
            "rowsum_cov_full": forward_timing(cells["RowSumsFull"](), reduced),
            "rowsum_cov_fast": forward_timing(cells["RowSumsFast"](), reduced),
        }
        full = cells["RowSumsFull"]()(reduced).asnumpy()
        fast = cells["RowSumsFast"]()(reduced).asnumpy()
        speedups["rowsum_max_abs_diff"] = float(np.max(np.abs(full - fast)))
        results[net_name] = {"in_channels": channels, "whole": whole, "pieces": pieces, "speedups": speedups}
    return {"batch_size": batch_size, "feature_size": feature_size, "cov_dim": cov_dim,
            "num_classes": num_classes, "isqrt_iters": isqrt_iters,
            "isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
            **backend_record(conv_backend, "onednn" if "onednn" in used_backends else "stock"), "nets": results}


if __name__ == "__main__":
    raise SystemExit(worker_main(measure_head))

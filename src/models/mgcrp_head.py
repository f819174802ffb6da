"""Classification heads of the vision transformers: DropCov's MGCrP head and the class-token head.

Both take the final LayerNorm's output ``(B, 1 + N, D)``: row 0 is the class token, rows 1.. the word
tokens. Parameter names are the authors' (``classifier.representation.wr``, ``classifier.visual_fc``,
``classifier.cls_fc``). Linear weights are drawn TruncatedNormal(0.02) with zero bias, as the
authors' ``_init_weights`` does.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, nn
from mindspore.common.initializer import TruncatedNormal

from .cross_covariance import cross_covariance, split_query_key, token_keep_mask


def linear(in_features: int, out_features: int, has_bias: bool = True) -> nn.Dense:
    """``nn.Dense`` with weight TruncatedNormal(0.02) and bias 0 (timm's ``trunc_normal_(std=.02)``)."""
    return nn.Dense(in_features, out_features, weight_init=TruncatedNormal(0.02), bias_init="zeros",
                    has_bias=has_bias)


class CrossCovariancePooling(nn.Cell):
    """Word tokens ``(B, N, D)`` -> ``(B, h w^2)`` cross-covariance representation (float32).

    ``q, k = split_query_key(wr(x))``; in training both are multiplied by one
    :func:`token_keep_mask` (rate ``token_drop``, 0.2 for the authors' networks); then
    :func:`cross_covariance` per head, Dropout(``cov_drop``, 0.5) in training, flattened head-major
    (``h`` outer, then rows, then columns). ``wr`` is Linear(D, 3 h w) without bias: the third chunk
    is part of the checkpoints but unused, so only the first ``2 h w`` rows are multiplied.
    """

    def __init__(self, embed_dim: int, num_heads: int = 6, head_dim: int = 24, token_drop: float = 0.2,
                 cov_drop: float = 0.5) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.token_drop = float(token_drop)
        self.wr = linear(embed_dim, 3 * num_heads * head_dim, has_bias=False)
        self.cov_drop = float(cov_drop)
        self.output_dim = num_heads * head_dim * head_dim

    def project(self, x: Tensor) -> Tensor:
        """``x @ wr[:2 h w]^T``: the q and k chunks of the projection, ``(B, N, 2 h w)``."""
        used = self.wr.weight[:2 * self.num_heads * self.head_dim]
        return ms.ops.matmul(x, ms.ops.cast(used, x.dtype).T)

    def construct(self, x: Tensor) -> Tensor:
        batch, tokens = x.shape[0], x.shape[1]
        q, k = split_query_key(self.project(x), self.num_heads, self.head_dim)
        if self.training and self.token_drop > 0.0:
            mask = token_keep_mask(batch * self.num_heads, tokens, self.token_drop)
            q = ms.ops.cast(q, ms.float32) * mask
            k = ms.ops.cast(k, ms.float32) * mask
        covariance = cross_covariance(q, k)
        if self.training and self.cov_drop > 0.0:
            # functional dropout, not an nn.Dropout cell: AMP would re-flag a cell float16 and cast here
            covariance = ms.ops.dropout(covariance, p=self.cov_drop, training=True)
        return covariance.reshape(batch, self.output_dim)


class MGCrPHead(nn.Cell):
    """DropCov's transformer head (``fusion_type='sum_fc'``): ``cls_fc(x_cls) + visual_fc(MGCrP(x_words))``.

    ``(B, 1 + N, D)`` -> ``(B, num_classes)``. The representation cell is marked float32, so under
    AMP the cross-covariance and ``visual_fc`` input stay float32.
    """

    def __init__(self, embed_dim: int, num_classes: int, num_heads: int = 6, head_dim: int = 24,
                 token_drop: float = 0.2, cov_drop: float = 0.5) -> None:
        super().__init__()
        self.representation = CrossCovariancePooling(embed_dim, num_heads, head_dim, token_drop,
                                                     cov_drop).to_float(ms.float32)
        self.visual_fc = linear(self.representation.output_dim, num_classes)
        self.cls_fc = linear(embed_dim, num_classes)
        self.set_train(False)

    def construct(self, x: Tensor) -> Tensor:
        return self.cls_fc(x[:, 0]) + self.visual_fc(self.representation(x[:, 1:]))


class ClassTokenHead(nn.Cell):
    """The plain ViT head: ``cls_fc`` on the class token, ``(B, 1 + N, D)`` -> ``(B, num_classes)``."""

    def __init__(self, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.cls_fc = linear(embed_dim, num_classes)
        self.set_train(False)

    def construct(self, x: Tensor) -> Tensor:
        return self.cls_fc(x[:, 0])

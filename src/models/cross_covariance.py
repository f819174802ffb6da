"""Maths of the transformers' DropCov head (multi-head cross-covariance pooling, MGCrP) as pure functions.

Shapes: ``B`` batch, ``N`` word tokens, ``h`` heads, ``w`` per-head width (``wr_dim``). The
covariances are computed in float32 whatever the input dtype (AMP O2/O3 elsewhere), like the CNN
head's (:mod:`src.models.gcp`).
"""
from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, ops


def split_query_key(projected: Tensor, num_heads: int, head_dim: int) -> tuple[Tensor, Tensor]:
    """Per-head queries and keys of the ``wr`` projection.

    ``projected`` is read as ``(B, N, 3, h, w)`` (the authors' layout): chunk 0 is q, chunk 1 is k and
    chunk 2 is unused (their projection is three chunks wide; only two are ever read).

    Args:
        projected: ``(B, N, 3 h w)``.
        num_heads, head_dim: ``h`` and ``w``.

    Returns:
        ``(q, k)``, each ``(B h, N, w)`` (sample-major, then head), dtype of ``projected``.
    """
    batch, tokens = projected.shape[0], projected.shape[1]
    width = num_heads * head_dim

    def heads(chunk: Tensor) -> Tensor:
        return chunk.reshape(batch, tokens, num_heads, head_dim).transpose(0, 2, 1, 3).reshape(
            batch * num_heads, tokens, head_dim)

    return heads(projected[:, :, :width]), heads(projected[:, :, width:2 * width])


def token_keep_mask(batch_heads: int, tokens: int, rate: float) -> Tensor:
    """DropCov's token mask: ``m[i, n] = [u_{i,n} >= rate] / (1 - rate)``, one ``u ~ U[0, 1)`` per row.

    This is what the authors' ``Dropout2d(rate)`` does to a ``(B h, N, w)`` tensor of ones on PyTorch
    1.8 (3-D input read as ``(batch, channel, length)``): whole tokens of a head are dropped, and the
    same mask multiplies q and k. ``ops.rand`` makes it reproducible under ``mindspore.set_seed``.

    Args:
        batch_heads: ``B h``; tokens: ``N``; rate: drop probability in ``[0, 1)`` (a Python float).

    Returns:
        ``(B h, N, 1)`` float32 of zeros and ``1 / (1 - rate)``.
    """
    uniform = ops.rand((batch_heads, tokens, 1), dtype=ms.float32)
    return ops.cast(uniform >= rate, ms.float32) / (1.0 - rate)


def cross_covariance(q: Tensor, k: Tensor) -> Tensor:
    """Per-head cross-covariance ``C = (1/N) (q - mean(q))^T (k - mean(k))``.

    ``mean`` is the mean of *all* ``N w`` entries of one head's matrix (a scalar per sample and
    head), not a per-column mean: the authors' code removes it with ``adaptive_avg_pool2d`` of a 3-D
    tensor, which pools both trailing axes. Computed in float32.

    Args:
        q, k: ``(B h, N, w)``, any float dtype.

    Returns:
        ``(B h, w, w)`` float32; ``C[i, a, b] = (1/N) sum_n qc[i, n, a] kc[i, n, b]``.
    """
    q = ops.cast(q, ms.float32)
    k = ops.cast(k, ms.float32)
    tokens = q.shape[1]
    q = q - q.mean(axis=(1, 2), keep_dims=True)
    k = k - k.mean(axis=(1, 2), keep_dims=True)
    return ops.bmm(q.transpose(0, 2, 1), k) / tokens

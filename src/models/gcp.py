"""Global covariance pooling (GCP) maths of the DropCov head, as pure tensor functions.

Every function works in MindSpore GRAPH_MODE and PyNative alike: no host round-trip (no ``.item()``
or ``.asnumpy()``), no Python state written during ``construct``, gradients from MindSpore's own
autodiff. The covariance, its square root and the drop rate are computed in float32 whatever the
input dtype, so that AMP levels O2/O3 (float16 elsewhere) cannot overflow the second-order
statistics.

Shapes: ``B`` batch, ``d`` channels, ``H x W`` spatial map, ``N = H*W`` positions.
"""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

COSINE_EPS = 1e-8
"""Lower bound on each norm in the cosine of :func:`adaptive_drop_rate` (as ``torch.cosine_similarity``)."""

TRACE_EPS = 1e-12
"""Lower bound on ``tr(Sigma)`` in :func:`isqrt`, so an all-zero covariance maps to zero, not NaN."""


def covariance_pool(x: Tensor) -> Tensor:
    """Channel covariance of a feature map: ``Sigma = (1/N) Xc Xc^T``.

    ``X`` is ``x`` reshaped to ``(B, d, N)``; ``Xc = X - mean_N(X)`` removes each channel's spatial
    mean (the same as ``X I_hat X^T`` with ``I_hat = (1/N)(I - (1/N) 1 1^T)`` of iSQRT-COV).

    Args:
        x: features ``(B, d, H, W)``, any float dtype.

    Returns:
        ``(B, d, d)`` float32, symmetric positive semi-definite.
    """
    batch, channels, height, width = x.shape
    positions = height * width
    features = ops.cast(x, ms.float32).reshape(batch, channels, positions)
    centred = features - features.mean(axis=2, keep_dims=True)
    return ops.bmm(centred, centred.transpose(0, 2, 1)) / positions


def isqrt(sigma: Tensor, iters: int = 5) -> Tensor:
    """Matrix square root by the coupled Newton–Schulz iteration of iSQRT-COV (Li et al., CVPR 2018).

    Pre-normalise ``A = Sigma / tr(Sigma)``; with ``Y0 = A``, ``Z0 = I`` iterate, for k = 1..n,
    ``T = (3I - Z_{k-1} Y_{k-1}) / 2``, ``Y_k = Y_{k-1} T``, ``Z_k = T Z_{k-1}``;
    post-compensate ``Y_n * sqrt(tr(Sigma))``. ``Y_n -> A^{1/2}`` when ``||I - A|| < 1``, which the
    trace normalisation guarantees for a PSD ``Sigma``. ``tr(Sigma)`` is floored at ``TRACE_EPS``.

    Args:
        sigma: ``(B, d, d)`` symmetric PSD matrices (any float dtype; computed in float32).
        iters: number of Newton–Schulz iterations ``n >= 1`` (5 in iSQRT-COV's ResNets); a Python int,
            checked by the caller (graph mode unrolls the loop).

    Returns:
        ``(B, d, d)`` float32, approximately ``Sigma^{1/2}``. Costs ``3n - 3`` batched matmuls (n >= 2).
    """
    sigma = ops.cast(sigma, ms.float32)
    dim = sigma.shape[-1]
    identity = ops.eye(dim, dim, ms.float32)
    three_identity = identity * 3.0
    trace = ops.maximum((sigma * identity).sum(axis=(1, 2)), TRACE_EPS).reshape(-1, 1, 1)
    normalised = sigma / trace
    # k = 1 with Z0 = I: T = (3I - A) / 2, Y1 = A T, Z1 = T.
    step = (three_identity - normalised) * 0.5
    y = ops.bmm(normalised, step)
    z = step
    for k in range(2, iters + 1):
        step = (three_identity - ops.bmm(z, y)) * 0.5
        if k < iters:
            y, z = ops.bmm(y, step), ops.bmm(step, z)
        else:
            y = ops.bmm(y, step)
    return y * ops.sqrt(trace)


def upper_triangle_index(dim: int) -> Tensor:
    """Flat indices ``i * d + j`` of the pairs ``i <= j`` of a ``d x d`` matrix, row-major (int32, constant).

    Built once with NumPy when the network is constructed, so the graph holds a constant instead of a
    ``TriuIndices`` operator (which MindSpore cannot export to ONNX).
    """
    rows, cols = np.triu_indices(dim)
    return Tensor((rows * dim + cols).astype(np.int32))


def upper_triangle(m: Tensor, flat_index: Tensor) -> Tensor:
    """Vectorise the upper triangle (diagonal included) of square matrices, row-major.

    Output element ``t`` is ``m[:, i, j]`` for the t-th pair ``(i, j)`` with ``i <= j``, ``i`` outer:
    ``(0,0), (0,1), ..., (0,d-1), (1,1), ..., (d-1,d-1)``. Implemented as a gather with the constant
    index of :func:`upper_triangle_index`, so its gradient scatters back to the same entries (zero
    below the diagonal).

    Args:
        m: ``(B, d, d)``.
        flat_index: ``upper_triangle_index(d)``.

    Returns:
        ``(B, d(d+1)/2)``, same dtype as ``m``.
    """
    batch, dim = m.shape[0], m.shape[-1]
    return ops.gather(m.reshape(batch, dim * dim), flat_index, 1)


def adaptive_drop_rate(y: Tensor, cor: Tensor) -> Tensor:
    """DropCov's adaptive channel-drop probability (no gradient).

    ``p = clip(1 - (10 / log2 d) * mean_b cos(y_b, cor_b), 0, 1)`` with
    ``cos(u, v) = u.v / (max(|u|, eps) max(|v|, eps))``, ``eps = COSINE_EPS`` (so zero vectors give 0,
    not NaN). ``y`` are the channel weights of the ECA branch and ``cor`` the row sums of
    ``Cov(X')``; both are cut from the gradient.

    Args:
        y: ``(B, d)`` channel weights.
        cor: ``(B, d)`` row sums of the covariance of the re-weighted features.

    Returns:
        scalar float32 tensor in ``[0, 1]``.
    """
    dim = y.shape[-1]
    y = ops.stop_gradient(ops.cast(y, ms.float32))
    cor = ops.stop_gradient(ops.cast(cor, ms.float32))
    y_norm = ops.maximum(ops.sqrt((y * y).sum(axis=1)), COSINE_EPS)
    cor_norm = ops.maximum(ops.sqrt((cor * cor).sum(axis=1)), COSINE_EPS)
    cosine = (y * cor).sum(axis=1) / (y_norm * cor_norm)
    rate = 1.0 - (10.0 / math.log2(dim)) * cosine.mean()
    return ops.stop_gradient(ops.clamp(rate, 0.0, 1.0))


def channel_dropout(x: Tensor, p: Tensor) -> Tensor:
    """Zero whole channel planes with probability ``p``; scale survivors by ``1 / (1 - p)``.

    The keep mask is ``u >= p`` with ``u ~ U[0, 1)`` drawn per (sample, channel) by ``ops.rand``,
    which ``mindspore.set_seed`` makes reproducible in graph mode. At ``p = 1`` every plane is
    dropped and the output is exactly zero (the scale is then 0, never ``inf``). ``p`` gets no
    gradient; the survivors' gradient is the scale.

    The output is float32 whatever ``x``'s dtype, like the covariance pooling it feeds: in float16 the
    scale ``1 / (1 - p)`` exceeds 65504 (float16's largest finite value) for ``p > 1 - 1/65504``, so a
    float16 product would be ``inf`` for every surviving plane under AMP O2/O3.

    Args:
        x: ``(B, d, H, W)``, any float dtype.
        p: scalar tensor in ``[0, 1]``.

    Returns:
        ``(B, d, H, W)`` float32.
    """
    p = ops.stop_gradient(ops.cast(p, ms.float32))
    # ops.rand (UniformReal) logs a deprecation notice in MindSpore 2.10, but its suggested replacement
    # mint.rand has no CPU kernel there (RandExt), and ops.bernoulli ignores mindspore.set_seed.
    uniform = ops.rand((x.shape[0], x.shape[1], 1, 1), dtype=ms.float32)
    keep = ops.cast(uniform >= p, ms.float32)
    keep_prob = 1.0 - p
    scale = ops.select(keep_prob > 0.0, 1.0 / ops.maximum(keep_prob, COSINE_EPS), ops.zeros_like(keep_prob))
    return ops.cast(x, ms.float32) * (keep * scale)

"""The DropCov head's maths (src/models/gcp.py) against independent numpy/scipy computations."""
import math

import mindspore as ms
import numpy as np
import pytest
import scipy.linalg
from mindspore import Tensor, nn, ops

from src.models.gcp import (
    adaptive_drop_rate,
    channel_dropout,
    covariance_pool,
    isqrt,
    upper_triangle,
    upper_triangle_index,
)


class _Fn(nn.Cell):
    """Run a pure function inside a graph-mode cell."""

    def __init__(self, fn, **kwargs):
        super().__init__()
        self.fn = fn
        self.kwargs = kwargs

    def construct(self, *args):
        return self.fn(*args, **self.kwargs)


def _covariance_np(x: np.ndarray) -> np.ndarray:
    b, d, h, w = x.shape
    flat = x.reshape(b, d, h * w).astype(np.float64)
    centred = flat - flat.mean(axis=2, keepdims=True)
    return centred @ centred.transpose(0, 2, 1) / (h * w)


def _newton_schulz_np(sigma: np.ndarray, iters: int) -> np.ndarray:
    """iSQRT-COV written from the formula, float64."""
    out = []
    for s in sigma.astype(np.float64):
        dim = s.shape[0]
        trace = np.trace(s)
        y, z = s / trace, np.eye(dim)
        for _ in range(iters):
            t = 0.5 * (3 * np.eye(dim) - z @ y)
            y, z = y @ t, t @ z
        out.append(y * np.sqrt(trace))
    return np.stack(out)


def _spd(batch: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((batch, dim, 3 * dim))
    return (a @ a.transpose(0, 2, 1) / (3 * dim)).astype(np.float32)


def test_covariance_matches_numpy_float64():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3, 4)).astype(np.float32) * 3 + 1
    got = _Fn(covariance_pool)(Tensor(x)).asnumpy()
    assert got.dtype == np.float32 and got.shape == (2, 5, 5)
    np.testing.assert_allclose(got, _covariance_np(x), rtol=1e-5, atol=1e-5)


def test_covariance_of_float16_input_is_float32_without_overflow():
    rng = np.random.default_rng(1)
    x = (rng.random((2, 4, 5, 5)) * 2000).astype(np.float16)  # products ~1e6 overflow float16
    got = _Fn(covariance_pool)(Tensor(x)).asnumpy()
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_allclose(got, _covariance_np(x.astype(np.float64)), rtol=1e-4)


def test_upper_triangle_order_is_row_major_with_diagonal():
    dim = 4
    m = np.arange(2 * dim * dim, dtype=np.float32).reshape(2, dim, dim)
    got = _Fn(upper_triangle)(Tensor(m), upper_triangle_index(dim)).asnumpy()
    rows, cols = np.triu_indices(dim)
    assert got.shape == (2, dim * (dim + 1) // 2)
    np.testing.assert_array_equal(got, m[:, rows, cols])
    np.testing.assert_array_equal(got[0, :5], [0, 1, 2, 3, 5])  # (0,0) (0,1) (0,2) (0,3) (1,1)


def test_upper_triangle_gradient_scatters_back_to_the_triangle():
    dim = 5
    rng = np.random.default_rng(2)
    m = rng.standard_normal((3, dim, dim)).astype(np.float32)
    weights = rng.standard_normal((3, dim * (dim + 1) // 2)).astype(np.float32)

    class Loss(nn.Cell):
        def construct(self, m, w):
            return (upper_triangle(m, upper_triangle_index(dim)) * w).sum()

    grad = ms.grad(Loss(), grad_position=0)(Tensor(m), Tensor(weights)).asnumpy()
    expected = np.zeros_like(m)
    rows, cols = np.triu_indices(dim)
    expected[:, rows, cols] = weights
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


@pytest.mark.parametrize("iters", [1, 2, 3, 5])
def test_isqrt_matches_numpy_newton_schulz(iters):
    sigma = _spd(2, 6, np.random.default_rng(3))
    got = _Fn(isqrt, iters=iters)(Tensor(sigma)).asnumpy()
    np.testing.assert_allclose(got, _newton_schulz_np(sigma, iters), rtol=1e-5, atol=1e-5)


def test_isqrt_converges_to_the_matrix_square_root():
    sigma = _spd(2, 6, np.random.default_rng(4))
    got = _Fn(isqrt, iters=40)(Tensor(sigma)).asnumpy()
    for g, s in zip(got, sigma.astype(np.float64)):
        root = np.real(scipy.linalg.sqrtm(s))
        np.testing.assert_allclose(g, root, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(g @ g, s, rtol=1e-3, atol=1e-4)


def test_isqrt_of_zero_matrix_is_zero_not_nan():
    got = _Fn(isqrt, iters=5)(Tensor(np.zeros((1, 4, 4), np.float32))).asnumpy()
    np.testing.assert_array_equal(got, np.zeros((1, 4, 4)))


def _rate_np(y: np.ndarray, cor: np.ndarray) -> float:
    y, cor = y.astype(np.float64), cor.astype(np.float64)
    norms = np.maximum(np.linalg.norm(y, axis=1), 1e-8) * np.maximum(np.linalg.norm(cor, axis=1), 1e-8)
    cosine = (y * cor).sum(axis=1) / norms
    return float(np.clip(1 - 10 / math.log2(y.shape[1]) * cosine.mean(), 0, 1))


@pytest.mark.parametrize("case", ["mixed", "aligned", "opposed", "zero"])
def test_adaptive_drop_rate_matches_numpy(case):
    rng = np.random.default_rng(5)
    dim = 128
    y = rng.random((4, dim)).astype(np.float32)
    cor = {"mixed": rng.standard_normal((4, dim)) + 0.03,  # rate strictly inside (0, 1)
           "aligned": y * 2.0,  # cosine 1 -> clipped to 0
           "opposed": -y,  # cosine -1 -> clipped to 1
           "zero": np.zeros((4, dim))}[case].astype(np.float32)
    got = _Fn(adaptive_drop_rate)(Tensor(y), Tensor(cor)).asnumpy()
    assert got.shape == () and np.isfinite(got)
    expected = _rate_np(y, cor)
    if case == "mixed":
        assert 0 < expected < 1
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_adaptive_drop_rate_has_no_gradient():
    rng = np.random.default_rng(6)
    y, cor = (Tensor(rng.standard_normal((3, 16)).astype(np.float32)) for _ in range(2))
    grads = ms.grad(_Fn(adaptive_drop_rate), grad_position=(0, 1))(y, cor)
    for grad in grads:
        np.testing.assert_array_equal(grad.asnumpy(), 0)


def _dropout_planes(x: np.ndarray, p: float, seed: int) -> np.ndarray:
    ms.set_seed(seed)
    return _Fn(channel_dropout)(Tensor(x), Tensor(p, ms.float32)).asnumpy()


def test_channel_dropout_drops_planes_with_probability_p_and_rescales():
    p = 0.3
    x = np.ones((64, 128, 2, 2), np.float32)
    out = _dropout_planes(x, p, seed=11)
    planes = out.reshape(64, 128, 4)
    dropped = np.all(planes == 0, axis=2)
    kept = ~dropped
    # whole planes only: each plane is all zero or all 1/(1-p)
    np.testing.assert_allclose(planes[kept], 1 / (1 - p), rtol=1e-6)
    n = dropped.size
    assert abs(dropped.mean() - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_channel_dropout_same_seed_same_mask():
    x = np.random.default_rng(7).random((4, 32, 3, 3)).astype(np.float32)
    first = _dropout_planes(x, 0.5, seed=123)
    second = _dropout_planes(x, 0.5, seed=123)
    other = _dropout_planes(x, 0.5, seed=124)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_channel_dropout_at_p_one_gives_zeros_and_at_p_zero_identity():
    x = np.random.default_rng(8).random((2, 8, 3, 3)).astype(np.float32)
    zeros = _dropout_planes(x, 1.0, seed=1)
    assert np.isfinite(zeros).all()
    np.testing.assert_array_equal(zeros, 0)
    np.testing.assert_array_equal(_dropout_planes(x, 0.0, seed=1), x)


def test_channel_dropout_gradient_is_mask_times_scale_and_none_for_p():
    p = 0.4
    x = np.random.default_rng(9).random((2, 16, 2, 2)).astype(np.float32)
    ms.set_seed(5)
    net = _Fn(channel_dropout)
    grads = ms.grad(net, grad_position=(0, 1))(Tensor(x), Tensor(p, ms.float32))
    ms.set_seed(5)
    out = _Fn(channel_dropout)(Tensor(x), Tensor(p, ms.float32)).asnumpy()
    np.testing.assert_allclose(grads[0].asnumpy(), out / x, rtol=1e-5)  # mask / (1 - p)
    assert float(grads[1].asnumpy()) == 0


def test_functions_also_run_in_pynative_mode():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        x = np.random.default_rng(10).random((2, 4, 3, 3)).astype(np.float32)
        sigma = covariance_pool(Tensor(x))
        vector = upper_triangle(isqrt(sigma, 3), upper_triangle_index(4)).asnumpy()
        rows, cols = np.triu_indices(4)
        np.testing.assert_allclose(vector, _newton_schulz_np(_covariance_np(x), 3)[:, rows, cols],
                                   rtol=1e-4, atol=1e-5)
        dropped = channel_dropout(Tensor(x), ops.ones((), ms.float32)).asnumpy()
        np.testing.assert_array_equal(dropped, 0)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def test_channel_dropout_p_near_one_stays_finite_in_float16():
    # 1/(1-p) = 2**17 > 65504, float16's largest value: the survivors' scale must not pass through float16
    p = 1.0 - 2.0 ** -17
    x = np.ones((1000, 1000, 1, 1), np.float16)
    out = _dropout_planes(x, p, seed=3)
    assert np.isfinite(out).all()
    kept = out != 0
    assert 0 < kept.sum() < 40  # about 1e6 * 2**-17 = 7.6 planes survive
    np.testing.assert_array_equal(out[kept], 2.0 ** 17)
    assert out.dtype == np.float32

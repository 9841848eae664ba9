"""The float32 iterative solver's pieces: clustering, preconditioners, refinement."""

import numpy as np
import pytest

from ntkdemo.iterative import (
    block_nystrom_preconditioner,
    cluster_order,
    conjugate_gradients,
    nystrom_preconditioner,
    solve_refined,
    times_in_float64,
)
from ntkdemo.kernels import ntk, ntk_times
from ntkdemo.regression import one_hot, solve


@pytest.fixture
def near_duplicates():
    """Image-like rows, each present four times with small noise (like tiled data)."""
    rng = np.random.default_rng(0)
    base = rng.random((150, 40)) ** 3
    rows = np.tile(base, (4, 1)) + rng.uniform(0, 0.01, size=(600, 40))
    labels = np.tile(rng.integers(0, 5, 150), 4)
    return rows, labels, len(base)


@pytest.mark.parametrize("shape", [(7, 5000), (9, 1100), (6, 3), (1, 1)])
def test_times_in_float64_sums_float32_entries_in_float64(shape):
    """Row counts around multiples of four, rows longer than one 512-entry stretch: the float32
    entries, summed in float64, agree with float64 BLAS to rounding, and beat the
    float32 BLAS product (which sums in float32) by orders of magnitude."""
    rng = np.random.default_rng(3)
    K32 = rng.random(shape).astype(np.float32)
    V = rng.normal(size=(shape[1], 3))
    exact = K32.astype(np.float64) @ V
    scale = np.abs(K32).astype(np.float64) @ np.abs(V)
    np.testing.assert_allclose(times_in_float64(K32, V), exact, rtol=0, atol=1e-14 * scale.max())
    if shape[1] > 1000:
        float32_sums = (K32 @ V.astype(np.float32)).astype(np.float64)
        assert np.abs(float32_sums - exact).max() > 1e-8 * scale.max()


def test_cluster_order_keeps_near_duplicates_together(near_duplicates):
    X, _, n_base = near_duplicates
    order, blocks = cluster_order(X, block_size=100)
    np.testing.assert_array_equal(np.sort(order), np.arange(len(X)))
    assert blocks[0].start == 0 and blocks[-1].stop == len(X)
    assert all(a.stop == b.start for a, b in zip(blocks[:-1], blocks[1:]))
    block_of = np.empty(len(X), dtype=int)
    for number, block in enumerate(blocks):
        block_of[order[block]] = number
    copies = block_of.reshape(4, n_base)  # row i + k * n_base is a copy of row i
    together = np.mean((copies == copies[0]).all(axis=0))
    assert together >= 0.95


def test_cluster_order_single_block_when_small():
    X = np.random.default_rng(1).random((50, 5))
    order, blocks = cluster_order(X, block_size=100)
    np.testing.assert_array_equal(order, np.arange(50))
    assert blocks == [slice(0, 50)]


def test_block_preconditioner_with_one_block_inverts_the_matrix(near_duplicates):
    """One block makes D = K - F F^T exactly, so P = K (plus a 1e-7 relative shift)."""
    X, _, _ = near_duplicates
    K = ntk(X[:200])
    R = np.random.default_rng(2).normal(size=(200, 3))
    apply = block_nystrom_preconditioner(K, [slice(0, 200)], 20, np.random.default_rng(0))
    np.testing.assert_allclose(apply(K @ R), R, rtol=0, atol=1e-3 * np.abs(R).max())
    ridged = block_nystrom_preconditioner(
        K, [slice(0, 200)], 20, np.random.default_rng(0), ridge=0.5
    )
    np.testing.assert_allclose(ridged(K @ R + 0.5 * R), R, rtol=0, atol=1e-5)


def test_blocks_of_near_duplicates_cut_the_iterations(near_duplicates):
    X, labels, _ = near_duplicates
    order, blocks = cluster_order(X, block_size=100)
    K = ntk(X[order], dtype=np.float32)
    Y = one_hot(labels[order], 5)
    rng = np.random.default_rng(0)
    low_rank = nystrom_preconditioner(K, 50, rng)
    blocked = block_nystrom_preconditioner(K, blocks, 50, np.random.default_rng(0))
    _, plain_iterations, _ = conjugate_gradients(K, Y, low_rank, tol=1e-5, max_iter=2000)
    _, block_iterations, relative = conjugate_gradients(K, Y, blocked, tol=1e-5, max_iter=2000)
    assert relative < 1e-5
    assert 2 * block_iterations <= plain_iterations


def test_refined_solve_with_blocks_matches_cholesky(near_duplicates):
    X, labels, _ = near_duplicates
    order, blocks = cluster_order(X, block_size=100)
    X_ordered = X[order]
    Y = one_hot(labels[order], 5)
    K = ntk(X_ordered)
    exact = solve(K, Y)
    refined, fitted = solve_refined(
        ntk(X_ordered, dtype=np.float32),
        Y,
        lambda V: ntk_times(X_ordered, None, V),
        rank=50,
        blocks=blocks,
    )
    assert np.linalg.norm(Y - K @ refined.coef) <= 1e-6 * np.linalg.norm(Y)
    np.testing.assert_allclose(fitted, K @ refined.coef, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(
        (ntk(X[:40], X_ordered) @ refined.coef).argmax(axis=1),
        (ntk(X[:40], X_ordered) @ exact.coef).argmax(axis=1),
    )

"""Cholesky kernel regression against a dense solve, and its fallback."""

import numpy as np
import pytest

from ntkdemo.errors import InvalidParameterError
from ntkdemo.kernels import ntk
from ntkdemo.solvers import one_hot, predict, solve


@pytest.fixture
def problem():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 9))
    return ntk(X), one_hot(rng.integers(0, 3, 40), 3)


def test_matches_dense_solve_and_interpolates(problem):
    K, Y = problem
    solution = solve(K, Y)
    np.testing.assert_allclose(solution.coef, np.linalg.solve(K, Y), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(predict(K, solution), Y, atol=1e-10)
    assert solution.jitter == 0 and solution.message == ""


def test_ridge(problem):
    K, Y = problem
    solution = solve(K, Y, ridge=0.5)
    np.testing.assert_allclose(solution.coef, np.linalg.solve(K + 0.5 * np.eye(40), Y), atol=1e-12)


def test_condition_estimate_close_to_exact(problem):
    K, Y = problem
    exact = np.linalg.cond(K, 1)
    assert exact / 3 <= solve(K, Y).condition_number <= exact * 3


def test_duplicates_fall_back_to_jitter_with_message(problem):
    K, Y = problem
    X = np.random.default_rng(3).normal(size=(40, 9))
    doubled = ntk(np.vstack([X, X]))
    solution = solve(doubled, np.vstack([Y, Y]))
    assert solution.jitter > 0
    assert "added jitter" in solution.message
    assert solution.condition_number <= 1e12
    assert np.isfinite(solution.coef).all()
    np.testing.assert_allclose(predict(doubled, solution), np.vstack([Y, Y]), atol=1e-3)


def test_negative_ridge_rejected(problem):
    K, Y = problem
    with pytest.raises(InvalidParameterError, match="ridge must be a finite number >= 0, got -1"):
        solve(K, Y, ridge=-1)


def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])


def test_in_place_factorisation_matches_and_survives_a_failed_attempt(problem):
    K, Y = problem
    X = np.random.default_rng(3).normal(size=(40, 9))
    for matrix, targets in ((K, Y), (ntk(np.vstack([X, X])), np.vstack([Y, Y]))):
        original = matrix.copy()
        copied = solve(matrix, targets, ridge=0.0)
        np.testing.assert_array_equal(matrix, original)  # default: K untouched
        in_place = solve(matrix, targets, overwrite_k=True)
        assert in_place.jitter == copied.jitter  # the failed try was undone
        np.testing.assert_allclose(in_place.coef, copied.coef, rtol=0, atol=1e-12)
        assert in_place.condition_number == pytest.approx(copied.condition_number)


def test_ntk_times_streams_the_product():
    from ntkdemo.kernels import ntk_times

    rng = np.random.default_rng(5)
    X, Z, V = rng.normal(size=(37, 6)), rng.normal(size=(23, 6)), rng.normal(size=(23, 3))
    np.testing.assert_allclose(ntk_times(X, Z, V, block_rows=8), ntk(X, Z) @ V, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ntk_times(Z, Z, V), ntk(Z) @ V, rtol=0, atol=1e-12)
    for block_rows in (1, 7, 1024):  # the symmetric half, strips of every width
        np.testing.assert_allclose(
            ntk_times(Z, None, V, block_rows=block_rows), ntk(Z) @ V, rtol=0, atol=1e-12
        )


@pytest.mark.parametrize("labels", [[0, -1], [0, 2], [0.5, 1]])
def test_one_hot_refuses_labels_outside_the_classes(labels):
    from ntkdemo.errors import InvalidInputError
    from ntkdemo.solvers import one_hot

    with pytest.raises(InvalidInputError, match="labels must be whole numbers in 0..1"):
        one_hot(np.array(labels), 2)

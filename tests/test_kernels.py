"""The mission NTK against independent references and its exact edge values."""

import math

import numpy as np
import pytest

from ntkdemo.errors import InvalidInputError
from ntkdemo.kernels import ntk, ntk_of_cosine


def arcsin_form(k: float) -> float:
    """The mission formula exactly as written, in scalar math."""
    return (
        k
        + math.sqrt(1 - k * k) / math.pi
        + 2 * k / math.pi * (math.asin(math.sqrt((1 + k) / 2)) - math.asin(math.sqrt((1 - k) / 2)))
    )


def naive_ntk(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Deliberately slow oracle: a double loop over pairs, cosines by math.fsum."""
    out = np.empty((len(X), len(Y)))
    for i, x in enumerate(X):
        for j, y in enumerate(Y):
            k = math.fsum(x * y) / math.sqrt(math.fsum(x * x) * math.fsum(y * y))
            out[i, j] = arcsin_form(min(1.0, max(-1.0, k)))
    return out


@pytest.fixture
def points():
    rng = np.random.default_rng(0)
    return rng.normal(size=(30, 12)), rng.normal(size=(17, 12))


def test_matches_naive_double_loop(points):
    X, Y = points
    np.testing.assert_allclose(ntk(X, Y), naive_ntk(X, Y), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ntk(X), naive_ntk(X, X), rtol=0, atol=1e-12)


def test_map_matches_arcsin_form_on_a_grid():
    k = np.linspace(-1, 1, 2001)
    expected = np.array([arcsin_form(v) for v in k])
    np.testing.assert_allclose(ntk_of_cosine(k), expected, rtol=0, atol=1e-12)


def test_map_within_rounding_of_mpmath():
    """The polynomial arcsin of the compiled map is exact to rounding: at most about one
    unit in the last place of 1 (2.2e-16) from a 50-digit reference, over a grid, random
    points, both sides of its branch point k = 1/2 and the last digits before +-1."""
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(1)
    k = np.concatenate(
        [
            np.linspace(-1, 1, 2001),
            rng.uniform(-1, 1, 2000),
            0.5 + np.arange(-20, 20) * 1e-16,
            -0.5 + np.arange(-20, 20) * 1e-16,
            1 - np.logspace(-15, -1, 50),
            -1 + np.logspace(-15, -1, 50),
        ]
    )
    with mpmath.workdps(50):
        expected = np.array(
            [
                float((2 * x * (mpmath.pi - mpmath.acos(x)) + mpmath.sqrt(1 - x * x)) / mpmath.pi)
                for x in map(mpmath.mpf, k.tolist())
            ]
        )
    np.testing.assert_allclose(ntk_of_cosine(k), expected, rtol=0, atol=4e-16)


def test_range_minimum():
    """NTK(k) dips below 0 for negative k: min -0.1367898 at k = -0.7941 (not [0, 2])."""
    k = np.linspace(-1, 1, 200001)
    values = ntk_of_cosine(k)
    assert values.min() == pytest.approx(-0.13678979673805547, abs=1e-10)
    assert k[values.argmin()] == pytest.approx(-0.7941, abs=1e-4)
    assert values.max() == 2.0


def test_small_blocks_mapped_on_one_thread_alike():
    """Blocks under THREADED_MAP_ENTRIES are mapped on the calling thread, larger ones on
    every core: the same arithmetic per row, so the same bits."""
    from ntkdemo.kernels.ntk import THREADED_MAP_ENTRIES

    k = np.random.default_rng(2).uniform(-1, 1, (4, THREADED_MAP_ENTRIES // 4))
    whole = ntk_of_cosine(k)
    rows = np.vstack([ntk_of_cosine(k[i : i + 1, :100]) for i in range(4)])
    np.testing.assert_array_equal(rows, whole[:, :100])


def test_known_values():
    np.testing.assert_array_equal(ntk_of_cosine(np.array([1.0, -1.0])), [2.0, 0.0])
    assert ntk_of_cosine(np.array([0.0]))[0] == pytest.approx(1 / math.pi, abs=1e-16)


def test_diagonal_exactly_two_and_antipodes_zero(points):
    X, _ = points
    both = np.vstack([X, -X, 3.7 * X])
    K = ntk(both)
    n = len(X)
    np.testing.assert_array_equal(np.diagonal(K), 2.0)
    np.testing.assert_array_equal(np.diagonal(K[:n, n : 2 * n]), 0.0)  # x vs -x
    np.testing.assert_array_equal(np.diagonal(K[:n, 2 * n :]), 2.0)  # x vs 3.7 x
    assert np.isfinite(K).all()


def test_rounding_past_one_gives_no_nan():
    k = np.array([1 + 1e-15, -1 - 1e-15, 1 - 1e-17])
    values = ntk_of_cosine(k)
    np.testing.assert_array_equal(values, [2.0, 0.0, 2.0])


def test_symmetric_and_positive_definite(points):
    X, _ = points
    K = ntk(X)
    np.testing.assert_array_equal(K, K.T)
    assert np.linalg.eigvalsh(K)[0] > 1e-3


def test_listing_bug_would_be_caught(points):
    """A listing that drops the arcsin term at k = +-1 puts 1 on the diagonal: indefinite."""
    X, _ = points
    K = ntk(np.vstack([X, X[:1] * 1.0001]))
    buggy = K.copy()
    np.fill_diagonal(buggy, 1.0)
    assert np.linalg.eigvalsh(buggy)[0] < 0  # the bug makes K indefinite
    assert np.linalg.eigvalsh(K)[0] > -1e-12  # ours stays PSD


def test_blocks_and_cross_agree_with_auto(points):
    X, Y = points
    whole = ntk(X, Y)
    np.testing.assert_allclose(ntk(X, Y, block_rows=7), whole, rtol=0, atol=1e-15)
    np.testing.assert_allclose(ntk(X, block_rows=4), ntk(X, X), rtol=0, atol=1e-15)


def test_scale_free(points):
    X, Y = points
    np.testing.assert_allclose(ntk(1e-6 * X, 1e6 * Y), ntk(X, Y), rtol=0, atol=1e-13)


def test_float32_close_to_float64(points):
    X, Y = points
    K32 = ntk(X, Y, dtype=np.float32)
    assert K32.dtype == np.float32
    np.testing.assert_allclose(K32, ntk(X, Y), rtol=0, atol=2e-3)


def test_zero_row_is_named():
    X = np.ones((4, 3))
    X[2] = 0
    with pytest.raises(InvalidInputError, match=r"zero-norm row\(s\) 2"):
        ntk(X)


def test_nan_and_width_mismatch_rejected(points):
    X, Y = points
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match=r"NaN or inf in row\(s\) 3"):
        ntk(bad)
    with pytest.raises(InvalidInputError, match="has 5 features but 12"):
        ntk(X, Y[:, :5])

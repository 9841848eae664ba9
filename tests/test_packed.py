"""The upper-triangle float64 storage of symmetric kernels and its products."""

import numpy as np
import pytest

from ntkdemo.kernels import ntk
from ntkdemo.solvers import SymmetricStrips, ntk_strips

# The strips and ``ntk`` call BLAS with differently shaped products (one strip against
# the rows below it; square diagonal blocks plus rectangles). Some BLAS kernels (OpenBLAS'
# SkylakeX) round such products differently in the last bit, and the map passes that on
# amplified by at most |NTK'(k)| (below 3 for these random inputs, whose cosines stay
# away from +-1). So the two paths agree within a few ulps of 2, not bit for bit; what
# one path computes twice or mirrors (symmetry, the diagonal 2.0) is exact.
ACROSS_PATHS = 8 * np.finfo(np.float64).eps


@pytest.mark.parametrize("n, strip_rows", [(1, 4), (5, 4), (8, 4), (37, 8), (300, 64), (1029, 256)])
def test_strips_hold_exactly_the_dense_kernel(n, strip_rows):
    """Strip sizes around multiples of the strip height (and of the four rows the product
    takes at a time): the stored matrix equals ``ntk`` within a few ulps, and is exactly
    symmetric with the exact diagonal."""
    X = np.random.default_rng(n).random((n, 12))
    K = ntk_strips(X, strip_rows=strip_rows)
    dense = K.to_dense()
    np.testing.assert_allclose(dense, ntk(X), rtol=0, atol=ACROSS_PATHS)
    np.testing.assert_array_equal(dense, dense.T)
    np.testing.assert_array_equal(K.diagonal(), np.full(n, 2.0))
    assert K.data.size == SymmetricStrips.stored_entries(n, strip_rows)


@pytest.mark.parametrize("n, strip_rows", [(5, 4), (37, 8), (1029, 256), (4500, 256)])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_product_matches_the_dense_product(n, strip_rows, k):
    """Rows longer than one 2,048-column stretch, strips whose last quad is partial, odd
    and even numbers of columns (the product takes them two at a time)."""
    rng = np.random.default_rng(k)
    X = rng.random((n, 9))
    K = ntk_strips(X, strip_rows=strip_rows)
    V = rng.normal(size=(n, k))
    exact = ntk(X) @ V
    scale = np.abs(ntk(X)) @ np.abs(V)
    np.testing.assert_allclose(K @ V, exact, rtol=0, atol=1e-14 * scale.max())
    np.testing.assert_allclose(K @ V[:, 0], exact[:, 0], rtol=0, atol=1e-14 * scale.max())


def test_take_reads_any_submatrix():
    X = np.random.default_rng(2).random((70, 5))
    K = ntk_strips(X, strip_rows=16)
    rows, cols = np.array([69, 0, 17, 17, 33]), np.array([3, 68, 16, 15])
    taken = K.take(rows, cols)
    np.testing.assert_array_equal(taken, K.to_dense()[np.ix_(rows, cols)])  # same storage
    np.testing.assert_allclose(taken, ntk(X)[np.ix_(rows, cols)], rtol=0, atol=ACROSS_PATHS)
    assert K.take(rows, np.array([], dtype=int)).shape == (5, 0)
    into = np.empty((5, 4))
    assert K.take(rows, cols, out=into) is into
    np.testing.assert_array_equal(into, taken)


@pytest.mark.parametrize(("n", "strip_rows"), [(70, 16), (103, 5)])
def test_whole_rows_read_along_the_stored_rows_match_any_order(n, strip_rows):
    """Whole rows in ascending order (repeats, the first and the last row included) take
    the path that walks stored rows; the same entries read column by column in reverse
    order take the general one."""
    K = ntk_strips(np.random.default_rng(n).random((n, 6)), strip_rows=strip_rows)
    reverse = np.arange(n)[::-1].copy()
    picks = np.sort(np.random.default_rng(1).choice(n, 20, replace=False))
    for rows in (np.array([0, 3, 3, strip_rows, n - 1]), picks, np.array([n - 1])):
        np.testing.assert_array_equal(K.take(rows, np.arange(n)), K.take(rows, reverse)[:, ::-1])


def test_bad_indices_and_shapes_are_refused():
    K = ntk_strips(np.random.default_rng(3).random((10, 4)))
    with pytest.raises(IndexError, match="0..9"):
        K.take(np.array([10]), np.array([0]))
    with pytest.raises(IndexError, match="0..9"):
        K.take(np.array([0]), np.array([-1]))
    with pytest.raises(ValueError, match="10x10"):
        K @ np.ones((9, 2))
    with pytest.raises(ValueError, match=r"shape \(1, 2\)"):
        K.take(np.array([0]), np.array([0, 1]), out=np.empty((2, 1)))


def test_half_the_float64_bytes():
    """At 60,000 rows the triangle (plus half of each diagonal tile) takes what the whole
    matrix takes in float32, within half a percent."""
    entries = SymmetricStrips.stored_entries(60_000, 256)
    assert entries == 60_000 * 60_001 // 2 + sum(
        (h * (h - 1)) // 2 for h in [256] * 234 + [60_000 - 234 * 256]
    )
    assert 8 * entries == pytest.approx(4 * 60_000**2, rel=5e-3)


def test_parts_add_up_to_the_whole_product():
    """Strips split into parts (as cluster workers hold them): the parts' products sum to the
    whole product, and a part refuses reads that need strips it does not hold."""
    from ntkdemo.kernels import unit_rows
    from ntkdemo.solvers.strips import ntk_strips_of_unit_rows

    X = unit_rows(np.random.default_rng(5).random((300, 7)))
    V = np.random.default_rng(6).normal(size=(300, 3))
    whole = ntk_strips_of_unit_rows(X, strip_rows=32)
    parts = [
        ntk_strips_of_unit_rows(X, strip_rows=32, strips=r) for r in (range(0, 3), range(3, 10))
    ]
    np.testing.assert_allclose(sum(part @ V for part in parts), whole @ V, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(parts[1].strip(5), whole.strip(5))  # the same arithmetic
    with pytest.raises(ValueError, match="all held"):
        parts[0].take(np.array([0]), np.array([0]))

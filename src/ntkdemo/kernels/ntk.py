r"""The one-hidden-layer ReLU NTK in closed form, a function of the cosine of two inputs.

With :math:`k = \langle x', y' \rangle` the cosine of the L2-normalised inputs,

.. math::

    \mathrm{NTK}(k) = \frac{2k(\pi - \arccos k) + \sqrt{1 - k^2}}{\pi}
    = k + \frac{\sqrt{1-k^2}}{\pi} + \frac{2k}{\pi}\Big(\arcsin\sqrt{\tfrac{1+k}{2}}
      - \arcsin\sqrt{\tfrac{1-k}{2}}\Big),

computed as one matrix product and one compiled, multi-threaded elementwise map
(:func:`ntkdemo.compiled.jit`). :func:`ntk` validates and normalises its inputs; the
functions named ``*_of_unit_rows`` trust rows already normalised by :func:`unit_rows`
(the solvers normalise once per run).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numba
import numpy as np

from ..compiled import balanced_order, jit
from ..errors import InvalidInputError
from ..validation import check_matrix, check_positive_int, list_rows
from .blocks import assemble, mirror_upper, products

# A computed cosine within this many units in the last place of +-1 is taken as +-1.
SNAP_ULPS = 4


def ntk(
    X: np.ndarray,
    Y: np.ndarray | None = None,
    *,
    dtype: type = np.float64,
    block_rows: int = 1024,
    out: np.ndarray | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> np.ndarray:
    r"""One-hidden-layer ReLU NTK, on L2-normalised rows.

    .. math:: K_{ij} = \mathrm{NTK}(\langle x_i/\|x_i\|, y_j/\|y_j\| \rangle),
              \quad \mathrm{NTK}(k) = \frac{2k(\pi - \arccos k) + \sqrt{(1-k)(1+k)}}{\pi}

    Values lie in [-0.136790, 2] (the minimum is at k = -0.794; the kernel is PSD, not
    positive): ``NTK(1) = 2`` (every diagonal entry of ``ntk(X)`` is exactly
    2.0), ``NTK(-1) = 0`` (x against -x), ``NTK(0) = 1/pi``. A computed cosine within
    four units in the last place of +-1 (``4 * finfo(dtype).eps``) cannot be told from
    +-1 after the rounding of a dot product and is set to +-1, so parallel and
    antipodal pairs are exact and rounding past +-1 never gives NaN; this moves no
    value by more than ``sqrt(8 eps) / pi`` (1.3e-8 in float64).

    It equals ``2 * d * fc_kernels(Xn, Yn, depth=1)[1]`` for the unit rows ``Xn``,
    ``Yn`` of ``d`` features (see :func:`fc_kernels`).

    Parameters
    ----------
    X : array-like of shape (n_samples_X, n_features)
    Y : array-like of shape (n_samples_Y, n_features), optional
        Default: ``X`` (then only half the blocks are computed).
    dtype : {numpy.float64, numpy.float32}, default=numpy.float64
        Storage and matrix-product precision; the map is evaluated in float64.
    block_rows : int, default=1024
        Rows per block; the workspace beyond the output is one block of cosines.
    out : ndarray of shape (n_samples_X, n_samples_Y), optional
        Preallocated C-contiguous output of ``dtype``.
    progress : callable, optional
        Wraps the block iterator (e.g. a ``tqdm`` factory).

    Returns
    -------
    ndarray of shape (n_samples_X, n_samples_Y)

    Raises
    ------
    InvalidInputError
        If a row has zero norm (it has no direction), or holds NaN/inf.
    """
    X_unit = unit_rows(X, "X", dtype=dtype)
    Y_unit = None if Y is None else unit_rows(Y, "Y", dtype=dtype, n_features=X_unit.shape[1])
    return ntk_of_unit_rows(
        X_unit, Y_unit, dtype=dtype, block_rows=block_rows, out=out, progress=progress
    )


def ntk_of_unit_rows(
    X_unit: np.ndarray,
    Y_unit: np.ndarray | None = None,
    *,
    dtype: type = np.float64,
    block_rows: int = 1024,
    out: np.ndarray | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> np.ndarray:
    """:func:`ntk` of rows already normalised by :func:`unit_rows` (not checked again)."""
    symmetric = Y_unit is None

    def fill(block_out: np.ndarray, rows: slice, cols: slice, diagonal: bool) -> None:
        products(X_unit, X_unit if symmetric else Y_unit, rows, cols, diagonal, block_out)

    # All products first, then one map over the whole output: BLAS and numba threads
    # then take turns once instead of once per block (their idle spinning collides).
    cosines = assemble(
        fill, X_unit.shape[0], Y_unit, out, dtype, block_rows, progress, mirror=False
    )
    if symmetric:
        np.fill_diagonal(cosines, 1.0)
    _ntk_of_cosine_inplace(cosines, snap_tolerance(dtype), symmetric)
    if symmetric:
        mirror_upper(cosines)
    return cosines


def ntk_times(
    X: np.ndarray,
    Y: np.ndarray | None,
    V: np.ndarray,
    *,
    block_rows: int = 1024,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> np.ndarray:
    r"""``ntk(X, Y) @ V`` in float64, without ever holding ``ntk(X, Y)``.

    Row blocks of ``block_rows`` are computed (one product, one map), multiplied by
    ``V`` and dropped: memory is one block of ``block_rows * len(Y)`` entries. This
    streams test predictions and the training outputs ``K A``. With ``Y=None``
    (``ntk(X) @ V``) only the upper block triangle is computed: a strip
    :math:`S = K_{r, r_0:}` of rows :math:`r` from the diagonal on serves twice,
    :math:`(KV)_r \mathrel{+}= S V_{r_0:}` and
    :math:`(KV)_{r_1:} \mathrel{+}= S_{:, r_1:}^\top V_r`, at half the cost.

    Parameters
    ----------
    X : array-like of shape (n_samples_X, n_features)
    Y : array-like of shape (n_samples_Y, n_features) or None
        ``None`` for ``X`` itself (symmetric, half the work).
    V : ndarray of shape (n_samples_Y, n_columns)
    block_rows : int, default=1024
    progress : callable, optional
        Wraps the block iterator.

    Returns
    -------
    ndarray of shape (n_samples_X, n_columns)
    """
    X_unit = unit_rows(X, "X")
    Y_unit = None if Y is None else unit_rows(Y, "Y", n_features=X_unit.shape[1])
    V = np.asarray(V, dtype=np.float64)
    return ntk_times_of_unit_rows(X_unit, Y_unit, V, block_rows=block_rows, progress=progress)


def ntk_times_of_unit_rows(
    X_unit: np.ndarray,
    Y_unit: np.ndarray | None,
    V: np.ndarray,
    *,
    block_rows: int = 1024,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> np.ndarray:
    """:func:`ntk_times` of rows already normalised by :func:`unit_rows`."""
    symmetric = Y_unit is None
    Y_unit = X_unit if Y_unit is None else Y_unit
    block_rows = check_positive_int("block_rows", block_rows)
    result = np.zeros((X_unit.shape[0], V.shape[1]))
    workspace = np.empty((min(block_rows, X_unit.shape[0]), Y_unit.shape[0]))
    starts = range(0, X_unit.shape[0], block_rows)
    for start in progress(starts) if progress else starts:
        rows = slice(start, min(start + block_rows, X_unit.shape[0]))
        first = start if symmetric else 0
        strip = workspace[: rows.stop - rows.start, : Y_unit.shape[0] - first]
        np.matmul(X_unit[rows], Y_unit[first:].T, out=strip)
        if symmetric:
            np.fill_diagonal(strip, 1.0)
        _ntk_of_cosine_inplace(strip, snap_tolerance(np.float64), False)
        result[rows] += strip @ V[first:]
        if symmetric:
            width = rows.stop - rows.start
            result[rows.stop :] += strip[:, width:].T @ V[rows]
    return result


def ntk_of_cosine(k: np.ndarray) -> np.ndarray:
    """The NTK as an elementwise function of cosines (a copy; see :func:`ntk`)."""
    values = np.array(k, dtype=np.float64, ndmin=2, copy=True)
    _ntk_of_cosine_inplace(values, snap_tolerance(np.float64), False)
    return values.reshape(np.shape(k))


def unit_rows(
    X: np.ndarray, name: str = "X", *, dtype: type = np.float64, n_features: int | None = None
) -> np.ndarray:
    """Rows of ``X`` divided by their Euclidean norms (computed in float64).

    One compiled, multi-threaded pass (sum of squares, then scaling) per row.

    Raises
    ------
    InvalidInputError
        If a row has zero norm: such an input has no direction, so its NTK with
        anything is undefined. Remove the row (a blank image) or add a bias pixel.
    """
    matrix = check_matrix(name, X, n_features=n_features).astype(np.float64, copy=False)
    unit: np.ndarray = np.empty(matrix.shape, dtype=dtype)
    norms = _normalise_rows(matrix, unit)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise InvalidInputError(
            f"{name} has zero-norm row(s) {list_rows(zero)}: a blank image has no direction, "
            "so the normalised NTK is undefined; drop those rows"
        )
    return unit


def scaled_unit_rows(
    X: np.ndarray, name: str = "X", *, n_features: int | None = None
) -> np.ndarray:
    """Rows rescaled to norm ``sqrt(n_features)``, so ``x.x / d = 1``: the input scale of
    :func:`fc_kernels` at which its depth-1 NTK is the one-layer formula over ``2d``.

    Raises
    ------
    InvalidInputError
        As :func:`unit_rows`.
    """
    return fold_inputs(unit_rows(X, name, n_features=n_features))


def fold_inputs(X_unit: np.ndarray) -> np.ndarray:
    """Rows of :func:`unit_rows` rescaled to norm ``sqrt(n_features)`` (``x.x/d = 1``):
    the input scale of the layer folds (``fc_kernels``, ``conv_kernels`` and the GPU's
    ``conv_arrays``), wherever they run."""
    return X_unit * np.sqrt(X_unit.shape[1])


def snap_tolerance(dtype: type) -> float:
    """Cosines within this of +-1 are taken as +-1: :data:`SNAP_ULPS` units in the last
    place (shared with the CUDA map of :mod:`ntkdemo.solvers.cuda`)."""
    return SNAP_ULPS * float(np.finfo(dtype).eps)


@jit(parallel=True)
def _normalise_rows(matrix, out):  # pragma: no cover - compiled
    """Write ``matrix[i] / ||matrix[i]||`` into ``out[i]`` and return the norms.

    Each row is first divided by its largest magnitude ``m`` (as LAPACK's ``dnrm2``
    scales), so rows of norm 1e200 do not overflow and rows of norm 1e-170 do not
    underflow: ``||x|| = m ||x/m||``. A zero row is left unwritten (its norm, 0, tells
    the caller); a norm beyond the float64 range is returned as inf, which is harmless.
    """
    norms = np.empty(matrix.shape[0])
    for i in numba.prange(matrix.shape[0]):
        row = matrix[i]
        largest = 0.0
        for j in range(row.shape[0]):
            largest = max(largest, abs(row[j]))
        norms[i] = 0.0
        if largest > 0.0:
            squares = 0.0
            for j in range(row.shape[0]):
                scaled = row[j] / largest
                squares += scaled * scaled
            root = np.sqrt(squares)
            norms[i] = largest * root
            for j in range(row.shape[0]):
                out[i, j] = (row[j] / largest) / root
    return norms


def _arcsin_series_coefficients(degree: int = 12, terms: int = 60) -> tuple[float, ...]:
    r"""Polynomial coefficients (highest first) of :math:`g(z) \approx
    (\arcsin\sqrt z - \sqrt z) / z^{3/2}` on :math:`0 \le z \le 1/4`.

    :math:`g(z) = \sum_{n \ge 1} a_n z^{n-1}` with the Taylor coefficients of arcsin,
    :math:`a_n = \binom{2n}{n} / (4^n (2n+1))`, :math:`a_{n+1}/a_n = (2n+1)^2/((2n+2)(2n+3))`;
    ``terms`` of them (truncation error :math:`< 4^{-terms}`) are economised into the
    degree-``degree`` Chebyshev interpolant on [0, 1/4], within 4e-16 of :math:`g`
    (tested against mpmath), so that :math:`\arcsin a = a + a^3 g(a^2)` for
    :math:`a \le 1/2` is exact to rounding.
    """
    n = np.arange(1, terms)
    ratios = (2 * n - 1) ** 2 / ((2 * n) * (2 * n + 1))  # a_n / a_{n-1}, with a_0 = 1
    taylor = np.cumprod(ratios)
    interpolant = np.polynomial.Chebyshev.interpolate(
        lambda z: np.polynomial.polynomial.polyval(z, taylor), degree, domain=[0.0, 0.25]
    )
    monomial = interpolant.convert(kind=np.polynomial.Polynomial).coef
    return tuple(float(c) for c in monomial[::-1])


_ARCSIN_SERIES = _arcsin_series_coefficients()


@numba.njit(inline="always")
def _ntk_of_cosine_row(row, snap):  # pragma: no cover - compiled
    r"""Map a contiguous row of cosines to NTK values in place, branch-free (SIMD).

    With :math:`a = |k|`, :math:`k \arcsin k = a \arcsin a` and
    :math:`\pi - \arccos k = \pi/2 + \arcsin k`, so

    .. math:: \mathrm{NTK}(k) = k + \frac{2 a \arcsin a + \sqrt{(1-a)(1+a)}}{\pi},

    with :math:`\arcsin a = a + a^3 g(a^2)` for :math:`a \le 1/2` and
    :math:`\pi/2 - 2(s + s^3 g(s^2))`, :math:`s^2 = (1-a)/2`, above (``g`` from
    ``_arcsin_series_coefficients``). No libm call, so the loop vectorises.
    """
    half_pi = np.pi / 2
    inv_pi = 1.0 / np.pi  # np.pi * inv_pi == 1.0 exactly, so NTK(+-1) is exactly 2 and 0
    for j in range(row.shape[0]):
        k = min(max(row[j], -1.0), 1.0)
        a = abs(k)
        a = 1.0 if a >= 1.0 - snap else a
        k = math.copysign(a, k)
        small = a <= 0.5
        z = a * a if small else 0.5 * (1.0 - a)
        s = a if small else np.sqrt(z)
        g = 0.0
        for coefficient in _ARCSIN_SERIES:
            g = g * z + coefficient
        t = s + s * z * g
        arcsin_a = t if small else half_pi - 2.0 * t
        row[j] = k + (2.0 * a * arcsin_a + np.sqrt((1.0 - a) * (1.0 + a))) * inv_pi


@jit(parallel=True)
def _ntk_of_cosine_threads(block, snap, upper_only):  # pragma: no cover - compiled
    """Map cosines to NTK values in place on every core; with ``upper_only`` skip
    columns j < i.

    Row slices start at index 0 so the compiler can prove indices non-negative and
    vectorise the row loop.
    """
    n_rows = block.shape[0]
    for position in numba.prange(n_rows):
        i = balanced_order(position, n_rows)
        _ntk_of_cosine_row(block[i, i if upper_only else 0 :], snap)


@jit()
def _ntk_of_cosine_one_thread(block, snap, upper_only):  # pragma: no cover - compiled
    """:func:`_ntk_of_cosine_threads` on the calling thread."""
    for i in range(block.shape[0]):
        _ntk_of_cosine_row(block[i, i if upper_only else 0 :], snap)


THREADED_MAP_ENTRIES = 2**14
"""Blocks of fewer cosines are mapped on the calling thread: waking numba's threads
costs about 0.15 ms, more than mapping 16,384 cosines on one (a row of a strip's
diagonal square, :func:`~ntkdemo.kernels.averaged.input_averaged`)."""


def _ntk_of_cosine_inplace(block: np.ndarray, snap: float, upper_only: bool) -> None:
    """Map a C-contiguous block of cosines to NTK values in place (``upper_only``: the
    columns j >= i of each row i alone), on every core unless it is small."""
    if block.size >= THREADED_MAP_ENTRIES:
        _ntk_of_cosine_threads(block, snap, upper_only)
    else:
        _ntk_of_cosine_one_thread(block, snap, upper_only)


def cosines_to_ntk(block: np.ndarray, *, upper_only: bool = False) -> np.ndarray:
    """Map a C-contiguous float64 block of cosines to NTK values in place (and return it).

    With ``upper_only`` columns left of the diagonal (j < i) are skipped.
    """
    _ntk_of_cosine_inplace(block, snap_tolerance(np.float64), upper_only)
    return block

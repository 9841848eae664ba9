r"""Closed-form kernels of infinitely wide fully-connected ReLU networks.

Two entry points:

* :func:`ntk` -- the one-hidden-layer NTK of the mission, a function of the cosine
  :math:`k = \langle x', y' \rangle` of the L2-normalised inputs,

  .. math::

      \mathrm{NTK}(k) = \frac{2k(\pi - \arccos k) + \sqrt{1 - k^2}}{\pi}
      = k + \frac{\sqrt{1-k^2}}{\pi} + \frac{2k}{\pi}\Big(\arcsin\sqrt{\tfrac{1+k}{2}}
        - \arcsin\sqrt{\tfrac{1-k}{2}}\Big),

  computed as one matrix product and one compiled, multi-threaded elementwise map.
* :func:`fc_kernels` -- NNGP and NTK of ``depth`` hidden ReLU layers with weight and
  bias scales, as a fold of dense and ReLU steps (Jacot et al. 2018, "Neural Tangent
  Kernel"; Arora et al. 2019, "On Exact Computation with an Infinitely Wide Neural
  Net"), in the conventions of neural-tangents' ``stax`` ('ntk' parameterisation).

Both build the matrix in row blocks into one preallocated output; for ``Y=None`` only
the upper block triangle is computed and mirrored, so ``K`` is exactly symmetric.

The compiled loops are built by :func:`ntkdemo.compiled.jit` (threading layer, cache).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numba
import numpy as np

from .compiled import jit
from .errors import InvalidInputError, InvalidParameterError
from .packed import SymmetricStrips
from .validation import check_matrix, check_nonnegative_float, check_positive_int, list_rows


def ntk(
    X: np.ndarray,
    Y: np.ndarray | None = None,
    *,
    dtype: type = np.float64,
    block_rows: int = 1024,
    out: np.ndarray | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> np.ndarray:
    r"""One-hidden-layer ReLU NTK of the mission, on L2-normalised rows.

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
    symmetric = Y_unit is None

    def fill(block_out: np.ndarray, rows: slice, cols: slice, diagonal: bool) -> None:
        _products(X_unit, X_unit if symmetric else Y_unit, rows, cols, diagonal, block_out)

    # All products first, then one map over the whole output: BLAS and numba threads
    # then take turns once instead of once per block (their idle spinning collides).
    cosines = _assemble(
        fill, X_unit.shape[0], Y_unit, out, dtype, block_rows, progress, mirror=False
    )
    if symmetric:
        np.fill_diagonal(cosines, 1.0)
    _ntk_of_cosine_inplace(cosines, _snap_tolerance(dtype), symmetric)
    if symmetric:
        mirror_upper(cosines)
    return cosines


def ntk_strips(
    X: np.ndarray,
    *,
    strip_rows: int = 256,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> SymmetricStrips:
    r"""``ntk(X)`` in float64, stored as its upper triangle (half the memory).

    Each row strip of :class:`~ntkdemo.packed.SymmetricStrips` is one matrix product
    of unit rows and one map, written in place; the diagonal tile's lower half is
    mirrored from its upper half, so the stored matrix is exactly symmetric. Equal to
    ``ntk(X)`` entry for entry up to the rounding of the products.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    strip_rows : int, default=256
        Rows per strip.
    progress : callable, optional
        Wraps the strip iterator.

    Returns
    -------
    SymmetricStrips
    """
    X_unit = unit_rows(X, "X")
    K = SymmetricStrips(len(X_unit), strip_rows)
    strips = range(K.n_strips)
    for number in progress(strips) if progress else strips:
        rows = K.rows_of(number)
        strip = K.strip(number)
        np.matmul(X_unit[rows], X_unit[rows.start :].T, out=strip)
        np.fill_diagonal(strip, 1.0)
        _ntk_of_cosine_inplace(strip, _snap_tolerance(np.float64), True)
        mirror_upper(strip[:, : rows.stop - rows.start])
    return K


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
    streams test predictions. With ``Y=None`` (``ntk(X) @ V``) only the upper block
    triangle is computed: a strip :math:`S = K_{r, r_0:}` of rows :math:`r` from the
    diagonal on serves twice, :math:`(KV)_r \mathrel{+}= S V_{r_0:}` and
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
    symmetric = Y is None
    Y_unit = X_unit if Y is None else unit_rows(Y, "Y", n_features=X_unit.shape[1])
    block_rows = check_positive_int("block_rows", block_rows)
    V = np.asarray(V, dtype=np.float64)
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
        _ntk_of_cosine_inplace(strip, _snap_tolerance(np.float64), False)
        result[rows] += strip @ V[first:]
        if symmetric:
            width = rows.stop - rows.start
            result[rows.stop :] += strip[:, width:].T @ V[rows]
    return result


def ntk_of_cosine(k: np.ndarray) -> np.ndarray:
    """The mission's NTK as an elementwise function of cosines (a copy; see :func:`ntk`)."""
    values = np.array(k, dtype=np.float64, ndmin=2, copy=True)
    _ntk_of_cosine_inplace(values, _snap_tolerance(np.float64), False)
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
    :func:`fc_kernels` at which its depth-1 NTK is the mission formula over ``2d``.

    Raises
    ------
    InvalidInputError
        As :func:`unit_rows`.
    """
    unit = unit_rows(X, name, n_features=n_features)
    return unit * np.sqrt(unit.shape[1])


def _snap_tolerance(dtype: type) -> float:
    """Cosines within this of +-1 are taken as +-1: four units in the last place."""
    return 4 * float(np.finfo(dtype).eps)


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


@numba.njit(inline="always")
def _balanced_order(position, count):  # pragma: no cover - compiled
    """0, n-1, 1, n-2, ...: long and short triangular rows alternate across threads."""
    half = position // 2
    return half if position % 2 == 0 else count - 1 - half


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
def _ntk_of_cosine_inplace(block, snap, upper_only):  # pragma: no cover - compiled
    """Map cosines to NTK values in place; with ``upper_only`` skip columns j < i.

    Row slices start at index 0 so the compiler can prove indices non-negative and
    vectorise the row loop.
    """
    n_rows = block.shape[0]
    for position in numba.prange(n_rows):
        i = _balanced_order(position, n_rows)
        _ntk_of_cosine_row(block[i, i if upper_only else 0 :], snap)


@jit(parallel=True)
def mirror_upper(matrix, tile=64):  # pragma: no cover - compiled
    """Copy the strict upper triangle of a square matrix onto the lower one, in tiles.

    Two threads, no temporary: used to finish symmetric kernels and to undo a failed
    in-place Cholesky (:func:`ntkdemo.regression.solve`).
    """
    n = matrix.shape[0]
    n_tiles = (n + tile - 1) // tile
    for position in numba.prange(n_tiles):
        start = _balanced_order(position, n_tiles) * tile
        stop = min(start + tile, n)
        for col_start in range(0, stop, tile):
            for i in range(start, stop):
                for j in range(col_start, min(col_start + tile, i)):
                    matrix[i, j] = matrix[j, i]


# --------------------------------------------------------------------------- deep kernels


@dataclass(frozen=True)
class _PairState:
    """Second moments of a layer's pre-activations for a block of pairs.

    ``q11`` (rows,) and ``q22`` (cols,) are the variances of each input, ``q12``
    (rows, cols) the covariances (the NNGP), ``ntk`` (rows, cols) the tangent kernel.
    ``diagonal`` marks a block whose row i and column i are the same input.
    """

    q11: np.ndarray
    q22: np.ndarray
    q12: np.ndarray
    ntk: np.ndarray
    diagonal: bool


def _dense(state: _PairState, w_std: float, b_std: float) -> _PairState:
    r"""Dense layer on the pair and both diagonals.

    :math:`K' = \sigma_w^2 K + \sigma_b^2` and :math:`\Theta' = K' + \sigma_w^2\Theta`.
    """
    w2, b2 = np.float64(w_std) ** 2, np.float64(b_std) ** 2  # inf, not OverflowError
    q12 = w2 * state.q12 + b2
    return replace(
        state, q11=w2 * state.q11 + b2, q22=w2 * state.q22 + b2, q12=q12, ntk=q12 + w2 * state.ntk
    )


def _relu(state: _PairState) -> _PairState:
    r"""ReLU layer (arc-cosine kernels of degree 1 and 0, Cho & Saul 2009).

    With :math:`\theta = \operatorname{arctan2}(\sqrt{\max(q_{11}q_{22} - q_{12}^2, 0)}, q_{12})`,

    .. math::

        K' = \frac{\sqrt{q_{11}q_{22} - q_{12}^2} + (\pi - \theta) q_{12}}{2\pi},\qquad
        \dot K = \frac{\pi - \theta}{2\pi},\qquad \Theta' = \Theta \dot K,

    and on the diagonal :math:`q' = q/2` exactly; :math:`K' \ge 0` is enforced.
    """
    product = state.q11[:, None] * state.q22[None, :]
    sine_term = np.sqrt(np.maximum(product - state.q12**2, 0.0))
    theta = np.arctan2(sine_term, state.q12)
    # >= 0 in exact arithmetic; rounding at antipodes could leave -1e-32
    q12 = np.maximum((sine_term + (np.pi - theta) * state.q12) / (2 * np.pi), 0.0)
    ntk_values = state.ntk * ((np.pi - theta) / (2 * np.pi))
    q11, q22 = state.q11 / 2, state.q22 / 2
    if state.diagonal:  # the same input on both sides: theta = 0 and q' = q / 2 exactly
        np.fill_diagonal(q12, q11)
        np.fill_diagonal(ntk_values, np.diagonal(state.ntk) / 2)
    return replace(state, q11=q11, q22=q22, q12=q12, ntk=ntk_values)


def fc_kernels(
    X: np.ndarray,
    Y: np.ndarray | None = None,
    *,
    depth: int = 1,
    w_std: float = 1.0,
    b_std: float = 0.0,
    block_rows: int = 1024,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""NNGP and NTK of an infinitely wide fully-connected ReLU network.

    The network is neural-tangents' ``stax.serial(Dense(N, w_std, b_std), Relu(), ...,
    Dense(1, w_std, b_std))`` with ``depth`` hidden ``Dense``/``Relu`` pairs, in the
    'ntk' parameterisation. The kernels are a fold over the state
    :math:`(q_{11}, q_{22}, q_{12}, \Theta)` starting from :math:`q = x \cdot x'/d`,
    :math:`\Theta = 0`:

    * Dense: :math:`K' = \sigma_w^2 K + \sigma_b^2`, :math:`\Theta' = K' + \sigma_w^2 \Theta`;
    * ReLU: see ``_relu`` (arc-cosine formulas, angle from ``arctan2``).

    **Relation to the mission formula.** For ``depth=1, w_std=1, b_std=0`` and unit rows
    with ``d`` features, ``k = x.y`` and :math:`\theta = \arccos k`:
    ``nngp = (sqrt(1-k^2) + (pi - theta) k) / (2 pi d)`` and
    ``ntk = (2k (pi - theta) + sqrt(1-k^2)) / (2 pi d) = NTK(k) / (2d)``, that is
    ``ntk(X, Y) == 2 * d * fc_kernels(Xn, Yn)[1]``.

    Parameters
    ----------
    X : array-like of shape (n_samples_X, n_features)
        Inputs (not normalised; zero rows are allowed).
    Y : array-like of shape (n_samples_Y, n_features), optional
        Default ``X``; then the diagonal is exact to rounding (``theta = 0`` there).
    depth : int, default=1
        Number of hidden ReLU layers (>= 1).
    w_std, b_std : float, default=1.0 and 0.0
        Weight and bias standard deviations of every Dense layer.
    block_rows : int, default=1024
        Rows per block.
    progress : callable, optional
        Wraps the block iterator.

    Returns
    -------
    nngp, ntk : ndarray of shape (n_samples_X, n_samples_Y)
        float64.
    """
    depth = check_positive_int("depth", depth)
    w_std = check_nonnegative_float("w_std", w_std)
    b_std = check_nonnegative_float("b_std", b_std)
    if w_std == 0:
        raise InvalidParameterError(
            "w_std must be > 0: with zero weights the network ignores its input and its "
            "kernel is constant (no image can be told from another); try w_std=1 or sqrt(2)"
        )
    X_checked = check_matrix("X", X).astype(np.float64, copy=False)
    Y_checked = (
        None
        if Y is None
        else check_matrix("Y", Y, n_features=X_checked.shape[1]).astype(np.float64, copy=False)
    )
    other = X_checked if Y_checked is None else Y_checked
    n_features = X_checked.shape[1]
    sq_x = np.einsum("ij,ij->i", X_checked, X_checked) / n_features
    sq_y = sq_x if Y_checked is None else np.einsum("ij,ij->i", other, other) / n_features
    nngp = np.empty((X_checked.shape[0], other.shape[0]))

    def fill(block_out: np.ndarray, rows: slice, cols: slice, diagonal: bool) -> None:
        q12 = _products(X_checked, other, rows, cols, diagonal, np.empty(block_out.shape))
        q12 /= n_features
        if diagonal:
            np.fill_diagonal(q12, sq_x[rows])
        state = _PairState(sq_x[rows], sq_y[cols], q12, np.zeros_like(q12), diagonal)
        for _ in range(depth):
            state = _relu(_dense(state, w_std, b_std))
        state = _dense(state, w_std, b_std)
        block_out[...] = state.ntk
        nngp[rows, cols] = state.q12

    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        ntk_matrix = _assemble(
            fill, X_checked.shape[0], Y_checked, None, np.float64, block_rows, progress
        )
    if Y_checked is None:
        mirror_upper(nngp)
    _check_in_range(nngp, ntk_matrix, depth, w_std, b_std)
    return nngp, ntk_matrix


def _check_in_range(nngp: np.ndarray, ntk_matrix: np.ndarray, depth, w_std, b_std) -> None:
    r"""Refuse kernels that overflowed or underflowed in the fold.

    Without bias each hidden layer multiplies the variance by :math:`\sigma_w^2/2`, so
    ``depth`` layers scale it by :math:`(\sigma_w^2/2)^{depth}`: beyond the float64 range
    the kernel is inf/NaN, below it zero or subnormal (no digits left). Either way its
    predictions would be noise, so this raises, naming what to change.

    Raises
    ------
    InvalidParameterError
    """
    per_layer = w_std**2 / 2 if w_std < 1e150 else math.inf
    settings = (
        f"depth={depth}, w_std={w_std:g}, b_std={b_std:g} (each layer scales the variance "
        f"by w_std**2/2 = {per_layer:.3g}"
    )
    if not (np.isfinite(ntk_matrix).all() and np.isfinite(nngp).all()):
        raise InvalidParameterError(
            f"the deep kernel overflowed to inf/NaN at {settings}); lower w_std "
            "(sqrt(2) keeps the variance constant), depth, or the scale of the inputs"
        )
    smallest_normal = float(np.finfo(np.float64).tiny)
    if not np.abs(ntk_matrix).max() > 1e16 * smallest_normal:
        raise InvalidParameterError(
            f"the deep kernel underflowed to zero at {settings}); use w_std=sqrt(2) (the "
            "critical value), a bias b_std > 0, or a smaller depth"
        )


# --------------------------------------------------------------------------- blocks


def _assemble(fill, n_rows, Y, out, dtype, block_rows, progress, *, mirror=True):
    """Fill an (n_rows, n_cols) matrix block row by block row.

    ``fill(block, rows, cols, diagonal)`` writes the kernel of ``rows`` against
    ``cols`` into ``block``. With ``Y is None`` the matrix is symmetric: block row
    ``rows`` covers columns ``rows.start:`` only, with the diagonal in its first
    square; ``fill`` need not write below the diagonal, which is mirrored afterwards
    (unless ``mirror=False``, when the caller finishes the upper triangle and mirrors).
    """
    block_rows = check_positive_int("block_rows", block_rows)
    symmetric = Y is None
    n_cols = n_rows if symmetric else Y.shape[0]
    if out is None:
        out = np.empty((n_rows, n_cols), dtype=dtype)
    elif out.shape != (n_rows, n_cols) or out.dtype != np.dtype(dtype):
        raise InvalidParameterError(
            f"out must have shape {(n_rows, n_cols)} and dtype {np.dtype(dtype)}, "
            f"got {out.shape} {out.dtype}"
        )
    starts = range(0, n_rows, block_rows)
    for start in progress(starts) if progress else starts:
        rows = slice(start, min(start + block_rows, n_rows))
        cols = slice(start, n_cols) if symmetric else slice(0, n_cols)
        fill(out[rows, cols], rows, cols, symmetric)
    if symmetric and mirror:
        mirror_upper(out)
    return out


def _products(X, other, rows, cols, diagonal, out):
    """``out = X[rows] @ other[cols].T``.

    In a diagonal block (``other is X`` and ``cols`` starts at ``rows.start``) the
    leading square is ``A @ A.T``, which BLAS computes as a symmetric rank-k update
    at half the cost.
    """
    if diagonal:
        width = rows.stop - rows.start
        np.matmul(X[rows], X[rows].T, out=out[:, :width])
        np.matmul(X[rows], other[rows.stop : cols.stop].T, out=out[:, width:])
    else:
        np.matmul(X[rows], other[cols].T, out=out)
    return out


def is_default_kernel(kernel: str, depth: int, w_std: float, b_std: float) -> bool:
    """Whether these settings name the one-layer formula of :func:`ntk` (the fast paths'
    kernel: strips, CG and the GPU serve it alone)."""
    return kernel == "ntk" and (depth, w_std, b_std) == (1, 1.0, 0.0)


def kernel_matrix(
    X: np.ndarray,
    Y: np.ndarray | None = None,
    *,
    kernel: str = "ntk",
    depth: int = 1,
    w_std: float = 1.0,
    b_std: float = 0.0,
    dtype: type = np.float64,
    reference_scale: bool = False,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> np.ndarray:
    """The kernel a run uses, chosen by name.

    With the defaults (``kernel="ntk", depth=1, w_std=1, b_std=0``) this is the mission
    formula :func:`ntk`. Otherwise it is the ``kernel`` output of :func:`fc_kernels`
    on the rows rescaled to norm ``sqrt(n_features)`` (so ``x.x/d = 1``), in float64.
    Kernel regression without ridge does not depend on a constant factor of the kernel,
    so the two agree in their predictions wherever they coincide up to that factor.

    Parameters
    ----------
    X, Y : array-like of shape (n, n_features)
    kernel : {"ntk", "nngp"}
    depth, w_std, b_std
        See :func:`fc_kernels`.
    dtype, progress
        See :func:`ntk` (mission formula only).
    reference_scale : bool, default=False
        Always use :func:`fc_kernels` (neural-tangents' scale, ``1/(2d)`` of the
        mission formula at depth 1), as training-time dynamics require.

    Returns
    -------
    ndarray of shape (len(X), len(Y))
    """
    if kernel not in ("ntk", "nngp"):
        raise InvalidParameterError(f"kernel must be 'ntk' or 'nngp', got {kernel!r}")
    if is_default_kernel(kernel, depth, w_std, b_std) and not reference_scale:
        return ntk(X, Y, dtype=dtype, progress=progress)
    X_scaled = scaled_unit_rows(X, "X")
    nngp, ntk_matrix = fc_kernels(
        X_scaled,
        None if Y is None else scaled_unit_rows(Y, "Y", n_features=X_scaled.shape[1]),
        depth=depth,
        w_std=w_std,
        b_std=b_std,
        progress=progress,
    )
    return ntk_matrix if kernel == "ntk" else nngp

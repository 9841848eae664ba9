r"""A symmetric matrix stored as its upper triangle, in float64, by row strips.

Half of a float64 matrix takes the bytes of the whole matrix in float32
(:math:`8 \cdot n(n+1)/2` against :math:`4 n^2`), yet every product with it is exact to
float64 rounding; this is how the 60,000-image kernel fits in 18 GB without giving up
float64 (the ``cg`` strategy of :mod:`ntkdemo.solvers.cg` solves with it).

Strip :math:`s` holds rows :math:`r = [s h, s h + h)` from the diagonal on: the block
:math:`S_s = K_{r,\, s h:}` of shape :math:`h \times (n - s h)`, contiguous. Its leading
:math:`h \times h` square (the diagonal tile) is stored whole, which costs
:math:`n h / 2` extra entries. A product :math:`K V` reads every stored entry once and
uses it twice:

.. math::

    (K V)_r \mathrel{+}= S_s V_{s h:}, \qquad
    (K V)_{s h + h:} \mathrel{+}= (S_s)_{:,\, h:}^\top V_r .
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numba
import numpy as np

from ..compiled import jit
from ..kernels import mirror_upper, unit_rows
from ..kernels.ntk import cosines_to_ntk, ntk_times_of_unit_rows
from ..validation import check_positive_int
from ..work import WeightedItems, upper_row_blocks

if TYPE_CHECKING:
    from ..spec import KernelSpec


class SymmetricStrips:
    """Upper-triangle row strips of a symmetric ``n x n`` float64 matrix (module docstring).

    Parameters
    ----------
    n : int
        Order of the matrix.
    strip_rows : int, default=256
        Rows per strip (the last strip may be shorter).
    strips : range, optional
        Hold only these strips (a part of the matrix, as one worker of a cluster holds,
        :mod:`.dask_cg`); its product is then the part's contribution to ``K @ V``.
        Default: all of them.
    dtype : {numpy.float64, numpy.float32}, default=numpy.float64
        Storage. Products are summed in float64 either way; float32 halves the memory
        and rounds each entry to 6e-8 relative (the ``cg32`` strategy refines against
        the float64 kernel).

    Attributes
    ----------
    data : ndarray
        The strips held, one after the other; uninitialised until filled through
        :meth:`strip`.
    offsets : ndarray of int64
        Where each strip held starts in ``data`` (and, last, the end).
    first : int
        Number of the first strip held.
    """

    def __init__(
        self,
        n: int,
        strip_rows: int = 256,
        strips: range | None = None,
        dtype: type = np.float64,
    ) -> None:
        self.n = check_positive_int("n", n)
        self.strip_rows = check_positive_int("strip_rows", strip_rows)
        sizes = strip_sizes(n, self.strip_rows)
        held = strips if strips is not None else range(len(sizes))
        self.first = held.start
        self.complete = len(held) == len(sizes)
        self.offsets = np.concatenate([[0], np.cumsum(sizes[held.start : held.stop])]).astype(
            np.int64
        )
        self.data: np.ndarray = np.empty(int(self.offsets[-1]), dtype=dtype)

    @staticmethod
    def stored_entries(n: int, strip_rows: int = 256) -> int:
        """Entries held for order ``n``: :math:`n(n+1)/2` plus half of each diagonal tile."""
        return int(strip_sizes(n, strip_rows).sum())

    @staticmethod
    def partial_outputs() -> int:
        """How many ``n x k`` partial sums a product holds at once (two per thread)."""
        return 2 * numba.get_num_threads()

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.n

    @property
    def n_strips(self) -> int:
        """Strips held."""
        return len(self.offsets) - 1

    @property
    def strip_numbers(self) -> WeightedItems[int]:
        """The numbers of the strips held, weighted by their entries (for progress)."""
        return WeightedItems(range(self.first, self.first + self.n_strips), np.diff(self.offsets))

    def rows_of(self, strip: int) -> slice:
        """The rows that strip number ``strip`` covers."""
        start = strip * self.strip_rows
        return slice(start, min(start + self.strip_rows, self.n))

    def strip(self, strip: int) -> np.ndarray:
        """Writable view of strip number ``strip`` (one held): rows :meth:`rows_of`,
        columns from its first row on."""
        rows = self.rows_of(strip)
        local = strip - self.first
        span = self.data[self.offsets[local] : self.offsets[local + 1]]
        return span.reshape(rows.stop - rows.start, self.n - rows.start)

    def __matmul__(self, V: np.ndarray) -> np.ndarray:
        """``K @ V`` for ``V`` of shape (n,) or (n, k), summed in float64 on all cores."""
        V = np.asarray(V, dtype=np.float64)
        if V.shape[0] != self.n:
            raise ValueError(f"cannot multiply a {self.n}x{self.n} matrix by {V.shape}")
        k = V.reshape(self.n, -1).shape[1]
        columns = np.zeros((k + k % 2, self.n))  # the product takes columns in pairs
        columns[:k] = V.reshape(self.n, -1).T
        partial = np.empty((self.partial_outputs(), *columns.shape))
        _strips_times(self.data, self.offsets, self.first, self.strip_rows, columns, partial)
        return partial.sum(axis=0)[:k].T.reshape(V.shape)

    def take(self, rows: np.ndarray, cols: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The dense submatrix ``K[rows][:, cols]`` (any indices, in any order; all strips
        held), written into ``out`` (float64, C-contiguous) where given.

        Whole rows in ascending order (Nystrom landmarks against every column) are read
        along the stored rows: an entry left of the diagonal, :math:`K_{lb} = K_{bl}`,
        lies in stored row ``b``, which holds those of every later row, so each stored
        row is walked once in order rather than each entry fetched on its own.
        """
        if not self.complete:
            raise ValueError("take reads a matrix whose strips are all held here")
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        for name, index in (("rows", rows), ("cols", cols)):
            if index.size and (index.min() < 0 or index.max() >= self.n):
                raise IndexError(f"{name} must lie in 0..{self.n - 1}")
        shape = (len(rows), len(cols))
        if out is None:
            out = np.empty(shape)
        elif out.shape != shape or out.dtype != np.float64 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float64 array of shape {shape}")
        whole_rows = len(cols) == self.n and np.array_equal(cols, np.arange(self.n))
        if whole_rows and np.all(np.diff(rows) >= 0):
            _gather_rows(self.data, self.offsets, self.strip_rows, self.n, rows, out)
        else:
            _gather(self.data, self.offsets, self.strip_rows, self.n, rows, cols, out)
        return out

    def diagonal(self) -> np.ndarray:
        """The diagonal, as a new array (all strips held)."""
        if not self.complete:
            raise ValueError("diagonal reads a matrix whose strips are all held here")
        everything = np.arange(self.n)
        out = np.empty(self.n)
        _gather_diagonal(self.data, self.offsets, self.strip_rows, self.n, everything, out)
        return out

    def to_dense(self) -> np.ndarray:
        """The whole ``n x n`` matrix (for small ``n``: tests and checks)."""
        return self.take(np.arange(self.n), np.arange(self.n))


def ntk_strips(
    X: np.ndarray,
    *,
    strip_rows: int = 256,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> SymmetricStrips:
    r"""``ntk(X)`` in float64, stored as its upper triangle (half the memory).

    Each row strip of :class:`SymmetricStrips` is one matrix product
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
    return ntk_strips_of_unit_rows(unit_rows(X, "X"), strip_rows=strip_rows, progress=progress)


def ntk_strips_of_unit_rows(
    X_unit: np.ndarray,
    *,
    strip_rows: int = 256,
    strips: range | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    dtype: type = np.float64,
) -> SymmetricStrips:
    """:func:`ntk_strips` of rows already normalised by :func:`~ntkdemo.kernels.unit_rows`;
    with ``strips``, only those (a part, see :class:`SymmetricStrips`); with ``dtype``
    float32 each strip is computed in float64 and then rounded into storage."""
    K = SymmetricStrips(len(X_unit), strip_rows, strips, dtype=dtype)
    workspace = None if dtype == np.float64 else np.empty(K.strip_rows * K.n)
    numbers = K.strip_numbers
    for number in progress(numbers) if progress else numbers:
        rows = K.rows_of(number)
        stored = K.strip(number)
        strip = stored if workspace is None else workspace[: stored.size].reshape(stored.shape)
        np.matmul(X_unit[rows], X_unit[rows.start :].T, out=strip)
        np.fill_diagonal(strip, 1.0)
        cosines_to_ntk(strip, upper_only=True)
        mirror_upper(strip[:, : rows.stop - rows.start])
        if workspace is not None:
            stored[...] = strip
    return K


def kernel_strips_of_unit_rows(
    X_unit: np.ndarray,
    spec: KernelSpec,
    *,
    strip_rows: int = 256,
    strips: range | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    dtype: type = np.float64,
) -> SymmetricStrips:
    """The upper triangle of ``spec``'s kernel (or the ``strips`` of it, a part).

    The one-layer formula by :func:`ntk_strips_of_unit_rows` (its compiled map); any
    other kernel strip by strip (:func:`_kernel_strip`), in float64, rounded into float32
    storage where asked.
    """
    if spec.is_one_layer_formula:
        spec.count_pairs(len(X_unit), None)
        return ntk_strips_of_unit_rows(
            X_unit, strip_rows=strip_rows, strips=strips, progress=progress, dtype=dtype
        )
    K = SymmetricStrips(len(X_unit), strip_rows, strips, dtype=dtype)
    numbers = K.strip_numbers
    for number in progress(numbers) if progress else numbers:
        rows = K.rows_of(number)
        _kernel_strip(spec, X_unit, rows, out=K.strip(number))
    return K


def _kernel_strip(
    spec: KernelSpec, X_unit: np.ndarray, rows: slice, out: np.ndarray | None = None
) -> np.ndarray:
    """Strip ``[a:b]`` of the upper triangle of ``spec``'s kernel: rows ``a .. b - 1``
    against the rows from ``a`` on, with no pair computed twice: its diagonal tile is the
    Gram matrix of ``X[a:b]`` (its triangle, mirrored, so the stored matrix is exactly
    symmetric), the rest ``spec.matrix(X[a:b], X[b:])``. Written into ``out`` if given
    (float32 storage rounds there)."""
    width = rows.stop - rows.start
    strip = np.empty((width, len(X_unit) - rows.start)) if out is None else out
    strip[:, :width] = spec.matrix(X_unit[rows])
    if rows.stop < len(X_unit):
        strip[:, width:] = spec.matrix(X_unit[rows], X_unit[rows.stop :])
    return strip


def kernel_times_of_unit_rows(
    X_unit: np.ndarray,
    spec: KernelSpec,
    V: np.ndarray,
    *,
    block_rows: int = 1024,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> np.ndarray:
    """``K V`` with ``spec``'s float64 kernel of ``X_unit`` recomputed block by block, never
    held whole: the one-layer formula by :func:`ntk_times_of_unit_rows`; any other kernel
    from its upper triangle's strips ``spec.matrix(X[a:b], X[a:])`` (diagonal tiles
    mirrored as in :func:`kernel_strips_of_unit_rows`), each used for its rows and, by
    symmetry, its columns."""
    if spec.is_one_layer_formula:
        spec.count_pairs(len(X_unit), None)
        return ntk_times_of_unit_rows(X_unit, None, V, block_rows=block_rows, progress=progress)
    n = len(X_unit)
    result = np.zeros((n, V.shape[1]))
    starts = upper_row_blocks(n, block_rows)
    for start in progress(starts) if progress else starts:
        rows = slice(start, min(start + block_rows, n))
        width = rows.stop - rows.start
        strip = _kernel_strip(spec, X_unit, rows)
        result[rows] += strip @ V[start:]
        result[rows.stop :] += strip[:, width:].T @ V[rows]
    return result


def strip_sizes(n: int, strip_rows: int) -> np.ndarray:
    """Entries of each strip: its rows times its columns (from its first row on)."""
    return upper_row_blocks(n, strip_rows).weights


@numba.njit(inline="always")
def _position(offsets, strip_rows, n, i, j):  # pragma: no cover - compiled
    """Index in the strips' data of entry (i, j), read from the upper triangle."""
    low, high = (i, j) if i <= j else (j, i)
    strip = low // strip_rows
    start = strip * strip_rows
    return offsets[strip] + (low - start) * (n - start) + (high - start)


@jit(parallel=True)
def _gather(data, offsets, strip_rows, n, rows, cols, out):  # pragma: no cover - compiled
    for a in numba.prange(len(rows)):
        for b in range(len(cols)):
            out[a, b] = data[_position(offsets, strip_rows, n, rows[a], cols[b])]


@jit(parallel=True)
def _gather_rows(data, offsets, strip_rows, n, rows, out):  # pragma: no cover - compiled
    """``out[a] = K[rows[a]]`` for ascending ``rows``: from the diagonal on, a copy of
    the stored row; left of it, column ``b`` of every row after ``b`` from stored row
    ``b``, one strip of columns per task (the lines of ``out`` it writes stay in cache
    from one column to the next)."""
    for a in numba.prange(len(rows)):
        row = rows[a]
        start = _position(offsets, strip_rows, n, row, row)
        out[a, row:] = data[start : start + n - row]
    for strip in numba.prange((n + strip_rows - 1) // strip_rows):
        first = np.searchsorted(rows, strip * strip_rows, side="right")
        for b in range(strip * strip_rows, min(strip * strip_rows + strip_rows, n)):
            while first < len(rows) and rows[first] <= b:
                first += 1
            stored = _position(offsets, strip_rows, n, b, b) - b  # K[b, l] = data[stored + l]
            for a in range(first, len(rows)):
                out[a, b] = data[stored + rows[a]]


@jit()
def _gather_diagonal(data, offsets, strip_rows, n, index, out):  # pragma: no cover - compiled
    for a in range(len(index)):
        out[a] = data[_position(offsets, strip_rows, n, index[a], index[a])]


@numba.njit(inline="always")
def four_dots_twice(r0, r1, r2, r3, v, u):  # pragma: no cover - compiled
    """Dot products of four rows with two columns, ``(r0 . v, ..., r3 . v, r0 . u, ...,
    r3 . u)``, from the same loads: each row entry is read once for both columns (loops
    from 0, so they vectorise). :func:`_four_dots_and_update_twice` repeats this loop
    with the updates inside it: the strip product needs one pass for both."""
    s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = 0.0
    for j in range(len(v)):
        x = v[j]
        y = u[j]
        e0, e1, e2, e3 = r0[j], r1[j], r2[j], r3[j]
        s0 += e0 * x
        s1 += e1 * x
        s2 += e2 * x
        s3 += e3 * x
        t0 += e0 * y
        t1 += e1 * y
        t2 += e2 * y
        t3 += e3 * y
    return s0, s1, s2, s3, t0, t1, t2, t3


@numba.njit(inline="always")
def _four_dots_and_update_twice(
    r0, r1, r2, r3, v, u, out_v, out_u, w, z
):  # pragma: no cover - compiled
    """Dot products of four rows with two columns ``v`` and ``u``, and ``out_v += w0 r0 +
    ... + w3 r3``, ``out_u += z0 r0 + ... + z3 r3``, all from the same loads: each row
    entry is read once for its four uses."""
    s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = 0.0
    w0, w1, w2, w3 = w
    z0, z1, z2, z3 = z
    for j in range(len(v)):
        x = v[j]
        y = u[j]
        e0, e1, e2, e3 = r0[j], r1[j], r2[j], r3[j]
        s0 += e0 * x
        s1 += e1 * x
        s2 += e2 * x
        s3 += e3 * x
        t0 += e0 * y
        t1 += e1 * y
        t2 += e2 * y
        t3 += e3 * y
        out_v[j] += e0 * w0 + e1 * w1 + e2 * w2 + e3 * w3
        out_u[j] += e0 * z0 + e1 * z1 + e2 * z2 + e3 * z3
    return s0, s1, s2, s3, t0, t1, t2, t3


@jit(parallel=True, fastmath=True)
def _strips_times(data, offsets, first, strip_rows, columns, partial):  # pragma: no cover
    """``partial.sum(0) = (K @ columns.T).T`` from the strips (an even number of columns).

    Strips are dealt round-robin to ``len(partial)`` groups, each with its own output
    (no two threads write the same memory), and each strip is one
    :func:`strip_times`. ``first`` is the number of the first strip in ``data`` (0
    unless a part).
    """
    n = columns.shape[1]
    n_groups = partial.shape[0]
    for group in numba.prange(n_groups):
        out = partial[group]
        out[:] = 0.0
        sums = np.empty((strip_rows + 3, columns.shape[0]))
        for local in range(group, len(offsets) - 1, n_groups):
            start = (first + local) * strip_rows
            height = min(strip_rows, n - start)
            strip_times(data, offsets[local], start, height, n - start, columns, out, sums)


@numba.njit(inline="always", fastmath=True)
def strip_times(
    data, base, start, height, width, columns, out, sums, stretch=2048
):  # pragma: no cover - compiled
    """Add one strip's two uses to ``out``: ``out[:, start:start+height] += S V`` and
    ``out[:, start+height:start+width] += S[:, height:]^T V[start:start+height]``, for
    the strip ``S`` of ``height`` rows and ``width`` columns stored from ``data[base]``
    (its diagonal tile whole), ``V = columns.T`` (an even number of columns).

    The columns are walked in stretches of ``stretch``: the stretch's slices of ``V``
    and of the output stay in cache while every row of the strip passes, four rows at
    a time, and each loaded entry serves two columns of ``V`` at once for both of its
    uses; the row sums wait in ``sums`` (``height + 3`` rows at least) until the strip
    is done. ``fastmath`` lets the compiler split each float64 sum over SIMD lanes
    (another rounding order, not a lower precision). Rows past the strip's end repeat
    its last row with weight 0, and their sums are dropped.
    """
    n_columns = columns.shape[0]
    for q in range(0, height, 4):  # the diagonal tile: its own rows' outputs only
        i1, i2, i3 = min(q + 1, height - 1), min(q + 2, height - 1), min(q + 3, height - 1)
        row0 = data[base + q * width : base + q * width + height]
        row1 = data[base + i1 * width : base + i1 * width + height]
        row2 = data[base + i2 * width : base + i2 * width + height]
        row3 = data[base + i3 * width : base + i3 * width + height]
        for c in range(0, n_columns, 2):
            v, u = columns[c, start : start + height], columns[c + 1, start : start + height]
            s = four_dots_twice(row0, row1, row2, row3, v, u)
            sums[q, c], sums[q + 1, c], sums[q + 2, c], sums[q + 3, c] = s[0], s[1], s[2], s[3]
            sums[q, c + 1], sums[q + 1, c + 1] = s[4], s[5]
            sums[q + 2, c + 1], sums[q + 3, c + 1] = s[6], s[7]
    for j0 in range(height, width, stretch):
        j1 = min(j0 + stretch, width)
        for q in range(0, height, 4):
            i1 = min(q + 1, height - 1)
            i2 = min(q + 2, height - 1)
            i3 = min(q + 3, height - 1)
            live1 = 1.0 if q + 1 < height else 0.0
            live2 = 1.0 if q + 2 < height else 0.0
            live3 = 1.0 if q + 3 < height else 0.0
            row0 = data[base + q * width + j0 : base + q * width + j1]
            row1 = data[base + i1 * width + j0 : base + i1 * width + j1]
            row2 = data[base + i2 * width + j0 : base + i2 * width + j1]
            row3 = data[base + i3 * width + j0 : base + i3 * width + j1]
            for c in range(0, n_columns, 2):
                v, u = columns[c], columns[c + 1]
                s = _four_dots_and_update_twice(
                    row0,
                    row1,
                    row2,
                    row3,
                    v[start + j0 : start + j1],
                    u[start + j0 : start + j1],
                    out[c, start + j0 : start + j1],
                    out[c + 1, start + j0 : start + j1],
                    (
                        v[start + q],
                        v[start + i1] * live1,
                        v[start + i2] * live2,
                        v[start + i3] * live3,
                    ),
                    (
                        u[start + q],
                        u[start + i1] * live1,
                        u[start + i2] * live2,
                        u[start + i3] * live3,
                    ),
                )
                sums[q, c] += s[0]
                sums[q + 1, c] += s[1]
                sums[q + 2, c] += s[2]
                sums[q + 3, c] += s[3]
                sums[q, c + 1] += s[4]
                sums[q + 1, c + 1] += s[5]
                sums[q + 2, c + 1] += s[6]
                sums[q + 3, c + 1] += s[7]
    for i in range(height):
        for c in range(n_columns):
            out[c, start + i] += sums[i, c]

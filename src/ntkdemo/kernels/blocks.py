"""Filling kernel matrices block by block, and mirroring their upper triangle.

Every kernel of :mod:`ntkdemo.kernels` is built in row blocks into one preallocated
output; for a symmetric matrix only the upper block triangle is computed (the diagonal
squares by BLAS's symmetric product) and mirrored, so ``K`` is exactly symmetric.
"""

from __future__ import annotations

import numba
import numpy as np

from ..compiled import balanced_order, jit
from ..errors import InvalidParameterError
from ..validation import check_positive_int
from ..work import upper_row_blocks


@jit(parallel=True)
def mirror_upper(matrix, tile=64):  # pragma: no cover - compiled
    """Copy the strict upper triangle of a square matrix onto the lower one, in tiles.

    Two threads, no temporary: used to finish symmetric kernels and to undo a failed
    in-place Cholesky (:func:`ntkdemo.solvers.cholesky.solve`).
    """
    n = matrix.shape[0]
    n_tiles = (n + tile - 1) // tile
    for position in numba.prange(n_tiles):
        start = balanced_order(position, n_tiles) * tile
        stop = min(start + tile, n)
        for col_start in range(0, stop, tile):
            for i in range(start, stop):
                for j in range(col_start, min(col_start + tile, i)):
                    matrix[i, j] = matrix[j, i]


def assemble(fill, n_rows, Y, out, dtype, block_rows, progress, *, mirror=True):
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
    starts = upper_row_blocks(n_rows, block_rows) if symmetric else range(0, n_rows, block_rows)
    for start in progress(starts) if progress else starts:
        rows = slice(start, min(start + block_rows, n_rows))
        cols = slice(start, n_cols) if symmetric else slice(0, n_cols)
        fill(out[rows, cols], rows, cols, symmetric)
    if symmetric and mirror:
        mirror_upper(out)
    return out


def products(X, other, rows, cols, diagonal, out):
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

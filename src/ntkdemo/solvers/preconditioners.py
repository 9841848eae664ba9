r"""The preconditioner of the ``cg`` strategy: low rank plus cluster blocks.

The preconditioner is low rank plus block diagonal,

.. math::

    P = F F^\top + D, \qquad
    D = \mathrm{blockdiag}_b\big(K_{bb} - F_b F_b^\top + \lambda I\big),

where :math:`F F^\top = K_{:S} K_{SS}^{-1} K_{S:}` is the Nystrom approximation from
``rank`` random landmark columns (Frangella, Tropp & Udell 2023, "Randomized Nystrom
preconditioning") and the blocks are clusters of near neighbours (rows ordered by
k-means, :func:`cluster_order`). It is applied by the Woodbury identity

.. math::

    P^{-1} R = D^{-1} R - D^{-1} F \,(I + F^\top D^{-1} F)^{-1} F^\top D^{-1} R .

The Nystrom part captures the kernel's large, global eigenvalues; the blocks capture
what a low rank cannot: the small eigenvalues of near-duplicate images, which sit in
the same cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numba
import numpy as np
from scipy import linalg
from scipy.linalg import blas

from ..compiled import jit
from ..kernels import mirror_upper
from ..validation import check_positive_int
from .strips import SymmetricStrips, four_dots_twice, strip_sizes, strip_times


def cluster_order(
    X_unit: np.ndarray, block_size: int, *, seed: int = 0, fit_rows: int = 10000
) -> tuple[np.ndarray, list[slice]]:
    r"""An order of the rows in which near neighbours are contiguous, and its blocks.

    k-means (scikit-learn) with :math:`\lceil n / \text{block\_size} \rceil` clusters on the
    unit rows, fitted on at most ``fit_rows`` of them (drawn by ``seed``; the centres
    of a large sample are as good, at a fraction of the time), then every row goes to
    its nearest centre; the order lists cluster after cluster.

    Parameters
    ----------
    X_unit : ndarray of shape (n, n_features)
        Unit rows (:func:`~ntkdemo.kernels.unit_rows`); the NTK depends on directions only.
    block_size : int
        Target rows per block (cluster sizes vary around it).
    seed : int, default=0
        Seeds k-means and the rows it is fitted on.
    fit_rows : int, default=10000
        Rows k-means is fitted on, at most.

    Returns
    -------
    order : ndarray of shape (n,)
        ``X[order]`` has each cluster's rows together.
    blocks : list of slice
        The clusters' positions in ``X[order]``.
    """
    from sklearn.cluster import KMeans  # here: the memory plan imports this module

    n = len(X_unit)
    n_clusters = -(-n // check_positive_int("block_size", block_size))
    if n_clusters == 1:
        return np.arange(n), [slice(0, n)]
    kmeans = KMeans(n_clusters, n_init=1, random_state=seed)
    if n > fit_rows:
        sample = np.random.default_rng(seed).choice(n, fit_rows, replace=False)
        labels = kmeans.fit(X_unit[np.sort(sample)]).predict(X_unit)
    else:
        labels = kmeans.fit_predict(X_unit)
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=n_clusters))])
    blocks = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return order, blocks


def in_original_order(order: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Undo :func:`cluster_order`: ``result[order] = rows``."""
    result = np.empty_like(rows)
    result[order] = rows
    return result


def block_nystrom_preconditioner(
    K: SymmetricStrips,
    blocks: list[slice],
    rank: int,
    rng: np.random.Generator,
    ridge: float = 0.0,
    strip_rows: int = 16,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    r"""The map :math:`R \mapsto P^{-1} R` of :math:`P = F F^\top + D` (module docstring).

    Parameters
    ----------
    K : SymmetricStrips
        The kernel; ``rank`` of its columns and its diagonal blocks are read.
    blocks : list of slice
        Contiguous blocks covering ``0..n`` in order (see :func:`cluster_order`).
    rank : int
        Nystrom landmarks, drawn without replacement by ``rng`` (at most ``n``).
    rng : numpy.random.Generator
    ridge : float, default=0.0
        :math:`\lambda` of the system :math:`(K + \lambda I)`.
    strip_rows : int, default=16
        Rows per strip of each inverted block's upper triangle.
    progress : callable, optional
        Wraps the iterator over the block numbers (a progress bar).

    Returns
    -------
    callable
        Takes float64 arrays of shape (n, k) and returns arrays of that shape. It holds
        the blocks' explicit inverses, each as its upper triangle in the layout of
        :class:`~.strips.SymmetricStrips` (half the memory of the square), and
        :math:`G = D^{-1} F` (in place of :math:`F`).
        Each block is set up from its Cholesky factor :math:`D_b = L_b L_b^\top`:
        :math:`W_b = L_b^{-1} F_b`, :math:`F^\top D^{-1} F = \sum_b W_b^\top W_b`,
        :math:`G_b = L_b^{-\top} W_b` (triangular solves and symmetric rank updates,
        LAPACK/BLAS). An application

        .. math::

            P^{-1} R = D^{-1} R - G\,(I + F^\top G)^{-1} G^\top R

        is two compiled passes on all cores, each reading what it needs once: the
        blocks' products with :math:`R` (:func:`~.strips.strip_times`: each stored
        entry used for its row and, mirrored, its column) together with
        :math:`G^\top R`, then the subtraction of :math:`G` times the small solve's
        answer.
    """
    factor_t = _nystrom_factor_t(K, rank, rng)  # F^T, overwritten block by block by G^T
    sizes = np.array([block.stop - block.start for block in blocks], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    if starts[-1] != K.shape[0]:
        raise ValueError("blocks must cover the rows 0..n in order")
    stored = [strip_sizes(int(size), strip_rows).sum() for size in sizes]
    inverse_offsets = np.concatenate([[0], np.cumsum(stored)]).astype(np.int64)
    inverses = np.empty(int(inverse_offsets[-1]))
    rank = factor_t.shape[0]
    core = np.asfortranarray(np.eye(rank))  # I + F^T D^-1 F (lower triangle)
    # every block is set up in the same two workspaces: fresh arrays for each would
    # touch new memory each time (page faults)
    block_space = np.empty(int(sizes.max()) ** 2)
    factor_space = np.empty(int(sizes.max()) * rank)
    numbers = range(len(blocks))
    for number in progress(numbers) if progress else numbers:
        block = blocks[number]
        m = block.stop - block.start
        indices = np.arange(block.start, block.stop)
        kernel_block = K.take(indices, indices, out=block_space[: m * m].reshape(m, m)).T
        scale = float(np.mean(np.diagonal(kernel_block))) + ridge
        block_factor = factor_space[: m * rank].reshape((m, rank), order="F")  # F_b
        block_factor[...] = factor_t[:, block].T
        lower = _factor_block(kernel_block, block_factor, ridge, scale)
        whitened = blas.dtrsm(1.0, lower, block_factor, lower=1, overwrite_b=1)  # W_b
        core = blas.dsyrk(1.0, whitened, beta=1.0, c=core, trans=1, lower=1, overwrite_c=1)
        factor_t[:, block] = blas.dtrsm(1.0, lower, whitened, lower=1, trans_a=1, overwrite_b=1).T
        span = slice(inverse_offsets[number], inverse_offsets[number + 1])
        _invert_from_cholesky(lower, inverses[span], strip_rows)
    core_factor = linalg.cho_factor(core, lower=True, check_finite=False)

    def apply(R: np.ndarray) -> np.ndarray:
        k = R.shape[1]
        R_t = np.zeros((k + k % 2, R.shape[0]))  # the block products take columns in pairs
        R_t[:k] = R.T
        out_t = np.empty_like(R_t)
        projections = np.empty((len(blocks), len(R_t), factor_t.shape[0]))
        _blocks_and_projection(
            inverses, inverse_offsets, starts, strip_rows, factor_t, R_t, out_t, projections
        )
        weights = linalg.cho_solve(core_factor, projections.sum(axis=0).T, check_finite=False)
        _subtract_low_rank(factor_t, np.ascontiguousarray(weights.T), out_t)
        return out_t[:k].T

    return apply


def _nystrom_factor_t(K: SymmetricStrips, rank: int, rng: np.random.Generator) -> np.ndarray:
    r"""``F^T`` (r, n) with :math:`F F^\top = K_{:S} K_{SS}^{-1} K_{S:}` for ``r`` random
    landmarks S, ``r = min(rank, n)``: :math:`F = K_{:S} L^{-\top}` with
    :math:`K_{SS} = L L^\top`, solved in the storage of :math:`K_{S:}`."""
    n = K.shape[0]
    rank = min(check_positive_int("rank", rank), n)
    landmarks = np.sort(rng.choice(n, rank, replace=False))
    columns_t = K.take(landmarks, np.arange(n))  # K[S, :], C-ordered: K[:, S] in F order
    core = columns_t[:, landmarks]
    shift = 1e-10 * np.trace(core) / rank  # keeps the core factorable when landmarks repeat
    lower = linalg.cholesky(core + shift * np.eye(rank), lower=True, check_finite=False)
    factor = blas.dtrsm(1.0, lower, columns_t.T, side=1, lower=1, trans_a=1, overwrite_b=1)
    return factor.T


def _factor_block(
    kernel_block: np.ndarray, block_factor: np.ndarray, ridge: float, scale: float
) -> np.ndarray:
    r"""Lower Cholesky factor of the block :math:`D_b = K_{bb} - F_b F_b^\top + \lambda I`,
    computed in the storage of ``kernel_block`` (:math:`K_{bb}`, F-ordered), shifted as
    needed.

    :math:`K_{bb} - F_b F_b^\top` is PSD in exact arithmetic but the subtraction
    cancels: a diagonal shift of :math:`10^{-7}` ``scale`` (the block's mean diagonal),
    grown tenfold until the factorisation succeeds, keeps it factorable. A
    preconditioner only needs to be close to the matrix, and the shift lies far below
    the eigenvalues that matter (near-duplicate images give about :math:`10^{-3}`
    ``scale``). The rank update and LAPACK write the lower triangle alone, so a failed
    attempt is undone from the strict upper one (no copy of the block is made); the
    strict upper triangle of the returned factor holds no meaning.
    """
    shift = 1e-7 * max(scale, np.finfo(np.float32).tiny)
    diagonal = np.diagonal(kernel_block).copy()
    while True:
        matrix = blas.dsyrk(-1.0, block_factor, beta=1.0, c=kernel_block, lower=1, overwrite_c=1)
        np.fill_diagonal(matrix, np.diagonal(matrix) + ridge + shift)
        factor, info = linalg.lapack.dpotrf(matrix, lower=1, clean=0, overwrite_a=1)
        if info == 0:
            return factor
        mirror_upper(kernel_block)  # K_bb again below the diagonal
        np.fill_diagonal(kernel_block, diagonal)
        shift *= 10


def _invert_from_cholesky(lower: np.ndarray, packed: np.ndarray, strip_rows: int) -> None:
    r"""Write the upper triangle of the inverse of :math:`L L^\top` into ``packed``, in the
    layout of :class:`~.strips.SymmetricStrips` with ``strip_rows`` (each diagonal tile
    whole), from the lower factor ``L`` (F-ordered; LAPACK ``dpotri`` overwrites it,
    a third of the work of solving against the identity)."""
    inverse, info = linalg.lapack.dpotri(lower, lower=1, overwrite_c=1)
    if info != 0:  # pragma: no cover - dpotrf succeeded, so L is nonsingular
        raise linalg.LinAlgError(f"dpotri failed with info={info}")
    _pack_upper(inverse.T, packed, strip_rows)  # LAPACK's lower triangle, read as upper


@jit()
def _pack_upper(upper, packed, strip_rows):  # pragma: no cover - compiled
    """Copy the upper triangle of the square ``upper`` into ``packed`` strip by strip
    (rows from the strip's first row on), each diagonal tile whole: its lower half
    mirrored from the upper."""
    m = upper.shape[0]
    position = 0
    for q in range(0, m, strip_rows):
        for i in range(q, min(q + strip_rows, m)):
            for j in range(q, i):
                packed[position] = upper[j, i]
                position += 1
            for j in range(i, m):
                packed[position] = upper[i, j]
                position += 1


@jit(parallel=True, fastmath=True)
def _blocks_and_projection(
    inverses, inverse_offsets, starts, strip_rows, factor_t, R_t, out_t, projections
):  # pragma: no cover - compiled
    """First pass of an application, one block per task: ``out_t[:, b] = (D_b^{-1} R_b)^T``
    and ``projections[b] = (G_b^T R_b)^T``, summed over ``b`` by the caller.

    The block's inverse is read strip by strip (:func:`~.strips.strip_times`, an even
    number of columns in ``R_t``). :math:`G_b^\top R_b` is dot products of four
    contiguous rows of :math:`G^\top` over the block's columns with two columns of
    ``R`` at a time (each loaded entry serves both), so each row is read from memory
    once and then from cache for every pair; rows past the end repeat the last one,
    and their sums are written to its place again, unchanged.
    """
    k = R_t.shape[0]
    rank = factor_t.shape[0]
    for b in numba.prange(len(starts) - 1):
        a = starts[b]
        m = starts[b + 1] - a
        out_t[:, a : a + m] = 0.0
        sums = np.empty((strip_rows + 3, k))
        base = inverse_offsets[b]
        for q in range(0, m, strip_rows):
            height = min(strip_rows, m - q)
            strip_times(inverses, base, a + q, height, m - q, R_t, out_t, sums)
            base += height * (m - q)
        for q in range(0, rank, 4):
            j1, j2, j3 = min(q + 1, rank - 1), min(q + 2, rank - 1), min(q + 3, rank - 1)
            g0, g1 = factor_t[q, a : a + m], factor_t[j1, a : a + m]
            g2, g3 = factor_t[j2, a : a + m], factor_t[j3, a : a + m]
            for c in range(0, k, 2):
                s = four_dots_twice(g0, g1, g2, g3, R_t[c, a : a + m], R_t[c + 1, a : a + m])
                row, next_row = projections[b, c], projections[b, c + 1]
                row[q], row[j1], row[j2], row[j3] = s[0], s[1], s[2], s[3]
                next_row[q], next_row[j1], next_row[j2], next_row[j3] = s[4], s[5], s[6], s[7]


@jit(parallel=True, fastmath=True)
def _subtract_low_rank(factor_t, weights_t, out_t, stretch=2048):  # pragma: no cover
    """Second pass: ``out_t -= weights_t @ factor_t`` (an even number of rows in
    ``weights_t``), stretches of columns in parallel.

    Four rows of :math:`G^\top` over a stretch are read from memory once and serve
    every column of the answer, two at a time (each loaded entry serves both), while
    its stretch stays in cache; rows past the end repeat the last one with weight 0.
    """
    rank, n = factor_t.shape
    k = weights_t.shape[0]
    for part in numba.prange((n + stretch - 1) // stretch):
        j0 = part * stretch
        j1 = min(j0 + stretch, n)
        for q in range(0, rank, 4):
            i1, i2, i3 = min(q + 1, rank - 1), min(q + 2, rank - 1), min(q + 3, rank - 1)
            live1 = 1.0 if q + 1 < rank else 0.0
            live2 = 1.0 if q + 2 < rank else 0.0
            live3 = 1.0 if q + 3 < rank else 0.0
            g0, g1 = factor_t[q, j0:j1], factor_t[i1, j0:j1]
            g2, g3 = factor_t[i2, j0:j1], factor_t[i3, j0:j1]
            for c in range(0, k, 2):
                w0, z0 = weights_t[c, q], weights_t[c + 1, q]
                w1, z1 = weights_t[c, i1] * live1, weights_t[c + 1, i1] * live1
                w2, z2 = weights_t[c, i2] * live2, weights_t[c + 1, i2] * live2
                w3, z3 = weights_t[c, i3] * live3, weights_t[c + 1, i3] * live3
                target, next_target = out_t[c, j0:j1], out_t[c + 1, j0:j1]
                for j in range(j1 - j0):
                    e0, e1, e2, e3 = g0[j], g1[j], g2[j], g3[j]
                    target[j] -= w0 * e0 + w1 * e1 + w2 * e2 + w3 * e3
                    next_target[j] -= z0 * e0 + z1 * e1 + z2 * e2 + z3 * e3

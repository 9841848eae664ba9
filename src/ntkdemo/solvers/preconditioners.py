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

from collections.abc import Callable

import numpy as np
from scipy import linalg
from sklearn.cluster import KMeans

from ..kernels import mirror_upper
from ..validation import check_positive_int
from .strips import SymmetricStrips


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
) -> Callable[[np.ndarray], np.ndarray]:
    r"""The map :math:`R \mapsto P^{-1} R` of :math:`P = F F^\top + D` (module docstring).

    Parameters
    ----------
    K : SymmetricStrips
        The kernel; ``rank`` of its columns and its diagonal blocks are read.
    blocks : list of slice
        Contiguous blocks covering ``0..n`` (see :func:`cluster_order`).
    rank : int
        Nystrom landmarks, drawn without replacement by ``rng`` (at most ``n``).
    rng : numpy.random.Generator
    ridge : float, default=0.0
        :math:`\lambda` of the system :math:`(K + \lambda I)`.

    Returns
    -------
    callable
        Takes and returns float64 arrays of shape (n, k). It holds the blocks' explicit
        inverses and :math:`G = D^{-1} F` (``n x rank``, in place of :math:`F`), so that

        .. math::

            P^{-1} R = D^{-1} R - G\,(I + F^\top G)^{-1} G^\top R

        costs one pass over the blocks (a matrix product per block, several times
        faster than two triangular solves with few right-hand sides) and two products
        with :math:`G`.
    """
    factor = _nystrom_factor(K, rank, rng)  # F, overwritten block by block by G
    block_inverses = []
    core = np.eye(factor.shape[1])  # I + F^T D^{-1} F, summed block by block
    for block in blocks:
        indices = np.arange(block.start, block.stop)
        residual = K.take(indices, indices)
        scale = float(np.mean(np.diagonal(residual))) + ridge
        residual -= factor[block] @ factor[block].T
        residual[np.diag_indices_from(residual)] += ridge
        inverse = _inverse_from_cholesky(_cholesky_of_psd(residual, scale))
        whitened = inverse @ factor[block]  # G_b = D_b^{-1} F_b
        core += factor[block].T @ whitened
        factor[block] = whitened
        block_inverses.append(inverse)
    core_factor = linalg.cho_factor((core + core.T) / 2, lower=True, check_finite=False)

    def apply(R: np.ndarray) -> np.ndarray:
        out = np.empty_like(R)
        for block, inverse in zip(blocks, block_inverses):
            out[block] = inverse @ R[block]
        weights = linalg.cho_solve(core_factor, factor.T @ R, check_finite=False)
        out -= factor @ weights
        return out

    return apply


def _nystrom_factor(K: SymmetricStrips, rank: int, rng: np.random.Generator) -> np.ndarray:
    r"""``F`` (n, r) with :math:`F F^\top = K_{:S} K_{SS}^{-1} K_{S:}` for ``r`` random
    landmarks S, ``r = min(rank, n)``; the landmark columns are overwritten by ``F``."""
    n = K.shape[0]
    rank = min(check_positive_int("rank", rank), n)
    landmarks = np.sort(rng.choice(n, rank, replace=False))
    columns_t = K.take(landmarks, np.arange(n))  # K[S, :], C-ordered: K[:, S] in F order
    core = columns_t[:, landmarks]
    shift = 1e-10 * np.trace(core) / rank  # keeps the core factorable when landmarks repeat
    lower = linalg.cholesky(core + shift * np.eye(rank), lower=True, check_finite=False)
    return linalg.solve_triangular(
        lower, columns_t, lower=True, overwrite_b=True, check_finite=False
    ).T


def _cholesky_of_psd(matrix: np.ndarray, scale: float) -> np.ndarray:
    r"""Lower Cholesky factor of a PSD block of the preconditioner, shifted as needed.

    :math:`K_{bb} - F_b F_b^\top` is PSD in exact arithmetic but the subtraction
    cancels: a diagonal shift of :math:`10^{-7}` ``scale`` (the block's mean diagonal),
    grown tenfold until the factorisation succeeds, keeps it factorable. A
    preconditioner only needs to be close to the matrix, and the shift lies far below
    the eigenvalues that matter (near-duplicate images give about :math:`10^{-3}`
    ``scale``). Only the diagonal of ``matrix`` is changed; the strict upper triangle
    of the returned factor holds no meaning.
    """
    shift = 1e-7 * max(scale, np.finfo(np.float32).tiny)
    diagonal = np.diagonal(matrix).copy()
    while True:
        np.fill_diagonal(matrix, diagonal + shift)
        factor, info = linalg.lapack.dpotrf(matrix, lower=1, clean=0)
        if info == 0:
            return factor
        shift *= 10


def _inverse_from_cholesky(lower: np.ndarray) -> np.ndarray:
    """The symmetric inverse of :math:`L L^\top` from its lower factor ``L`` (LAPACK
    ``dpotri``: a third of the work of solving against the identity)."""
    inverse, info = linalg.lapack.dpotri(lower, lower=1)
    if info != 0:  # pragma: no cover - dpotrf succeeded, so L is nonsingular
        raise linalg.LinAlgError(f"dpotri failed with info={info}")
    mirror_upper(inverse.T)  # the lower triangle onto the upper one
    return inverse

r"""Solving :math:`(K + \lambda I) A = Y` by preconditioned conjugate gradients.

For training sets whose float64 kernel does not fit in memory whole: ``K`` is held as
its upper triangle in float64 (:class:`ntkdemo.packed.SymmetricStrips`, the bytes of
the whole matrix in float32), so every product is exact to float64 rounding and CG
reaches float64-quality answers directly (a relative residual of :math:`10^{-6}` and
below), with no refinement against recomputed kernels.

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
the same cluster. On tiled Fashion-MNIST (20,000-30,000 images) rank 1,000 with
blocks of 1,500 takes about 40 iterations to :math:`10^{-6}`; rank 2,000 about 25.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from scipy import linalg
from sklearn.cluster import KMeans

from .errors import InvalidInputError
from .kernels import mirror_upper, unit_rows
from .packed import SymmetricStrips
from .regression import KernelSolution
from .validation import check_nonnegative_float, check_positive_int


def cluster_order(
    X: np.ndarray, block_size: int = 2000, *, seed: int = 0
) -> tuple[np.ndarray, list[slice]]:
    r"""An order of the rows in which near neighbours are contiguous, and its blocks.

    k-means (scikit-learn) with :math:`\lceil n / \text{block\_size} \rceil` clusters on the
    L2-normalised rows (the NTK depends on directions only); the order lists cluster
    after cluster.

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
        Rows with nonzero norms.
    block_size : int, default=2000
        Target rows per block (cluster sizes vary around it).
    seed : int, default=0
        Seeds k-means.

    Returns
    -------
    order : ndarray of shape (n,)
        ``X[order]`` has each cluster's rows together.
    blocks : list of slice
        The clusters' positions in ``X[order]``.
    """
    n = len(X)
    n_clusters = -(-n // check_positive_int("block_size", block_size))
    if n_clusters == 1:
        return np.arange(n), [slice(0, n)]
    labels = KMeans(n_clusters, n_init=1, random_state=seed).fit_predict(unit_rows(X))
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=n_clusters))])
    blocks = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return order, blocks


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
        Takes and returns float64 arrays of shape (n, k). Memory: :math:`F` (``n x
        rank``) and the blocks' explicit inverses (one matrix product per block and
        call, several times faster than two triangular solves with few right-hand
        sides); :math:`D^{-1} F` is never stored but applied as :math:`D^{-1}(F w)`.
    """
    factor = _nystrom_factor(K, rank, rng)
    block_inverses = []
    core = np.eye(factor.shape[1])  # I + F^T D^{-1} F, summed block by block
    for block in blocks:
        indices = np.arange(block.start, block.stop)
        residual = K.take(indices, indices)
        scale = float(np.mean(np.diagonal(residual))) + ridge
        residual -= factor[block] @ factor[block].T
        residual[np.diag_indices_from(residual)] += ridge
        lower = _cholesky_of_psd(residual, scale)
        whitened = linalg.solve_triangular(lower, factor[block], lower=True, check_finite=False)
        core += whitened.T @ whitened  # F_b^T D_b^{-1} F_b = (L^{-1} F_b)^T (L^{-1} F_b)
        block_inverses.append(_inverse_from_cholesky(lower))
    core_factor = linalg.cho_factor(core, lower=True, check_finite=False)

    def inverse_of_blocks(R: np.ndarray) -> np.ndarray:
        out = np.empty_like(R)
        for block, inverse in zip(blocks, block_inverses):
            out[block] = inverse @ R[block]
        return out

    def apply(R: np.ndarray) -> np.ndarray:
        inner = inverse_of_blocks(R)
        weights = linalg.cho_solve(core_factor, factor.T @ inner, check_finite=False)
        return inner - inverse_of_blocks(factor @ weights)

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


def conjugate_gradients(
    times: Callable[[np.ndarray], np.ndarray],
    B: np.ndarray,
    precondition: Callable[[np.ndarray], np.ndarray],
    *,
    tol: float,
    max_iter: int,
    start: np.ndarray | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[np.ndarray, int, float]:
    r"""Preconditioned CG on :math:`M X = B`, one column per right-hand side.

    Each iteration costs one product :math:`M V` with all columns at once (``times``),
    one preconditioner call and :math:`O(nk)` vector work, all in float64. Stops when
    every column's residual, relative to its ``B`` column, is below ``tol``.

    Parameters
    ----------
    times : callable
        ``V -> M @ V`` for a symmetric positive definite ``M``.
    B : ndarray of shape (n, k)
    precondition : callable
        ``R -> P^{-1} R`` for a symmetric positive definite ``P``.
    tol : float
    max_iter : int
    start : ndarray of shape (n, k), optional
        Initial guess (default zero).
    progress : callable, optional
        Wraps the iteration counter (a progress bar).

    Returns
    -------
    X : ndarray of shape B.shape
    iterations : int
    residual : float
        Largest relative residual of the recursion at the end.
    """
    norms = np.maximum(np.linalg.norm(B, axis=0), np.finfo(float).tiny)
    if start is None:
        solution, residual = np.zeros_like(B), B.copy()
    else:
        solution, residual = start.copy(), B - times(start)
    relative = float((np.linalg.norm(residual, axis=0) / norms).max())
    if relative < tol:
        return solution, 0, relative
    preconditioned = precondition(residual)
    direction = preconditioned.copy()
    rho = np.einsum("ij,ij->j", residual, preconditioned)
    counter = range(1, max_iter + 1)
    for iteration in progress(counter) if progress else counter:
        product = times(direction)
        step = rho / np.einsum("ij,ij->j", direction, product)
        solution += step * direction
        residual -= step * product
        relative = float((np.linalg.norm(residual, axis=0) / norms).max())
        if relative < tol or not np.isfinite(relative):  # done, or broken down (the caller says)
            return solution, iteration, relative
        preconditioned = precondition(residual)
        rho_next = np.einsum("ij,ij->j", residual, preconditioned)
        direction = preconditioned + (rho_next / rho) * direction
        rho = rho_next
    return solution, max_iter, relative


def solve_cg(
    K: SymmetricStrips,
    Y: np.ndarray,
    blocks: list[slice],
    *,
    ridge: float = 0.0,
    tol: float = 1e-6,
    rank: int = 1000,
    max_iter: int = 1000,
    max_restarts: int = 3,
    rng: np.random.Generator | None = None,
    report: Callable[[str], None] | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[KernelSolution, np.ndarray]:
    r"""Solve :math:`(K + \lambda I) A = Y` to a float64 relative residual ``tol``.

    Preconditioned CG (module docstring), then the true residual
    :math:`\|Y - (K + \lambda I) A\|_F / \|Y\|_F` from one more product; should the
    recursion have drifted above ``tol``, CG restarts from ``A`` (at most
    ``max_restarts`` times).

    Parameters
    ----------
    K : SymmetricStrips
        The kernel (the ridge is added on the fly).
    Y : ndarray of shape (n, n_outputs)
    blocks : list of slice
        Blocks of near neighbours (rows of ``K`` ordered by :func:`cluster_order`).
    ridge : float, default=0.0
    tol : float, default=1e-6
    rank : int, default=1000
        Nystrom landmarks of the preconditioner.
    max_iter, max_restarts : int
    rng : numpy.random.Generator, optional
        Draws the landmarks (default: seed 0).
    report : callable, optional
        Receives a line per CG run (the command line prints them).
    progress : callable, optional
        Wraps the CG iteration counter (a progress bar).

    Returns
    -------
    solution : KernelSolution
        ``message`` gives the iterations and the final relative residual (and says so
        if ``tol`` was not reached).
    fitted : ndarray of shape (n, n_outputs)
        :math:`K A`, the training outputs (a by-product of the residual check).
    """
    ridge = check_nonnegative_float("ridge", ridge)
    Y = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
    precondition = block_nystrom_preconditioner(
        K, blocks, rank, rng or np.random.default_rng(0), ridge
    )

    def times(V: np.ndarray) -> np.ndarray:
        return K @ V + ridge * V

    target = np.linalg.norm(Y)
    coef, total_iterations, start = np.zeros_like(Y), 0, None
    for run in range(max_restarts + 1):
        coef, iterations, _ = conjugate_gradients(
            times, Y, precondition, tol=tol, max_iter=max_iter, start=start, progress=progress
        )
        total_iterations += iterations
        fitted = K @ coef
        relative = float(np.linalg.norm(Y - fitted - ridge * coef) / target)
        if not np.isfinite(relative):
            break
        if report:
            what = f"CG restart {run}" if run else "CG"
            report(f"{what}: {iterations} iterations, relative residual {relative:.2e}")
        if relative <= tol:
            break
        start = coef
    if not (np.isfinite(relative) and np.isfinite(coef).all()):
        raise InvalidInputError(
            f"conjugate gradients broke down after {total_iterations} iterations (relative "
            f"residual {relative:.3g}): K + ridge*I is singular to working precision, e.g. "
            "identical images with different labels; pass a small --ridge (e.g. 1e-6) or "
            "use --solver cholesky, which adds jitter"
        )
    message = f"{total_iterations} CG iterations, relative residual {relative:.2e}"
    if not relative <= tol:
        message += f" (target {tol:.0e} not reached: K may be singular; try a small --ridge)"
    solution = KernelSolution(
        coef,
        ridge,
        0.0,
        float("nan"),
        message,
        method="preconditioned conjugate gradients (Nystrom + cluster blocks)",
    )
    return solution, fitted

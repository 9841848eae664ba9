r"""Solving :math:`(K + \lambda I) A = Y` when ``K`` is stored in float32.

A 60,000-image kernel takes 28.8 GB in float64 but 14.4 GB in float32. Float32 entries
carry relative errors of about :math:`6\cdot 10^{-8}`, which a condition number of
:math:`10^6` turns into errors of order :math:`10^{-2}` in ``A``; so the float32 matrix
only serves an inner solver, and *iterative refinement* restores float64 quality:

.. math::

    R_j = Y - (K_{64} + \lambda I) A_j, \qquad
    A_{j+1} = A_j + \mathrm{PCG}_{32}(R_j),

where the residual uses float64 kernel products recomputed in blocks
(:func:`ntkdemo.kernels.ntk_times`) and :math:`\mathrm{PCG}_{32}` is conjugate gradients
on the float32 matrix with float64 vectors, preconditioned by a Nystrom approximation
from ``rank`` landmark columns of ``K`` (Frangella, Tropp & Udell 2023, "Randomized
Nystrom preconditioning"):

.. math::

    P = U \Lambda U^\top + \mu (I - U U^\top), \qquad
    P^{-1} = U \Lambda^{-1} U^\top + \mu^{-1}(I - U U^\top),

with :math:`U \Lambda U^\top` the Nystrom approximation and :math:`\mu` its smallest
eigenvalue. Each refinement divides the error by about :math:`\kappa \epsilon_{32}`;
two or three suffice for a relative residual of :math:`10^{-6}`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from scipy import linalg

from .regression import KernelSolution
from .validation import check_nonnegative_float, check_positive_int


def nystrom_preconditioner(
    K: np.ndarray, rank: int, rng: np.random.Generator
) -> Callable[[np.ndarray], np.ndarray]:
    """The map :math:`R \\mapsto P^{-1} R` of a rank-``rank`` Nystrom preconditioner.

    Parameters
    ----------
    K : ndarray of shape (n, n)
        Symmetric PSD matrix (any float dtype); only ``rank`` of its columns are read.
    rank : int
        Landmark columns, drawn without replacement by ``rng``.
    rng : numpy.random.Generator

    Returns
    -------
    callable
        Takes and returns float64 arrays of shape (n, k).
    """
    n = K.shape[0]
    rank = min(check_positive_int("rank", rank), n)
    landmarks = np.sort(rng.choice(n, rank, replace=False))
    columns = K[:, landmarks].astype(np.float64)
    core = columns[landmarks]
    shift = 1e-10 * np.trace(core) / rank  # keeps the core factorable when landmarks repeat
    lower = linalg.cholesky(core + shift * np.eye(rank), lower=True, check_finite=False)
    factor = linalg.solve_triangular(lower, columns.T, lower=True, check_finite=False).T
    basis, singular_values, _ = linalg.svd(factor, full_matrices=False, check_finite=False)
    eigenvalues = np.maximum(singular_values**2, shift)
    floor = eigenvalues[-1]

    def apply(R: np.ndarray) -> np.ndarray:
        projected = basis.T @ R
        return basis @ (projected / eigenvalues[:, None]) + (R - basis @ projected) / floor

    return apply


def conjugate_gradients(
    K: np.ndarray,
    B: np.ndarray,
    precondition: Callable[[np.ndarray], np.ndarray],
    *,
    tol: float,
    max_iter: int,
    ridge: float = 0.0,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[np.ndarray, int, float]:
    r"""Preconditioned CG on :math:`(K + \lambda I) X = B`, one column per right-hand side.

    Products with ``K`` run in its own dtype (float32 storage); vectors and scalars are
    float64. Stops when every column's residual, relative to its ``B`` column, is
    below ``tol``. ``progress`` wraps the iteration counter (a progress bar).

    Returns
    -------
    X : ndarray of shape B.shape
    iterations : int
    residual : float
        Largest relative residual of the recursion at the end.
    """
    solution = np.zeros_like(B)
    residual = B.copy()
    norms = np.maximum(np.linalg.norm(B, axis=0), np.finfo(float).tiny)
    preconditioned = precondition(residual)
    direction = preconditioned.copy()
    rho = np.einsum("ij,ij->j", residual, preconditioned)
    relative = 1.0
    counter = range(1, max_iter + 1)
    for iteration in progress(counter) if progress else counter:
        product = (K @ direction.astype(K.dtype)).astype(np.float64) + ridge * direction
        step = rho / np.einsum("ij,ij->j", direction, product)
        solution += step * direction
        residual -= step * product
        relative = float((np.linalg.norm(residual, axis=0) / norms).max())
        if relative < tol:
            return solution, iteration, relative
        preconditioned = precondition(residual)
        rho_next = np.einsum("ij,ij->j", residual, preconditioned)
        direction = preconditioned + (rho_next / rho) * direction
        rho = rho_next
    return solution, max_iter, relative


def solve_refined(
    K32: np.ndarray,
    Y: np.ndarray,
    exact_product: Callable[[np.ndarray], np.ndarray],
    *,
    ridge: float = 0.0,
    tol: float = 1e-6,
    inner_tol: float = 1e-3,
    rank: int = 1000,
    max_refinements: int = 6,
    max_iter: int = 1000,
    rng: np.random.Generator | None = None,
    report: Callable[[str], None] | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[KernelSolution, np.ndarray]:
    r"""Solve :math:`(K + \lambda I) A = Y` to float64 quality from float32 storage.

    Parameters
    ----------
    K32 : ndarray of shape (n, n), float32
        The stored kernel; its diagonal is used as is (the ridge is added on the fly).
    Y : ndarray of shape (n, n_outputs)
    exact_product : callable
        ``V -> K @ V`` in float64 (e.g. :func:`ntkdemo.kernels.ntk_times`).
    ridge : float, default=0.0
    tol : float, default=1e-6
        Target relative residual :math:`\|Y - (K + \lambda I)A\|_F / \|Y\|_F`, float64.
    inner_tol : float, default=1e-3
        Relative residual each inner CG solve aims for.
    rank : int, default=1000
        Nystrom landmarks of the preconditioner.
    max_refinements, max_iter : int
        Outer refinements, and CG iterations per inner solve.
    rng : numpy.random.Generator, optional
        Draws the landmarks (default: seed 0).
    report : callable, optional
        Receives a line per refinement (the command line prints them).
    progress : callable, optional
        Wraps the CG iteration counter (a progress bar).

    Returns
    -------
    solution : KernelSolution
        ``method`` names the solver; ``message`` gives refinements, iterations and the
        final float64 residual (and says so if ``tol`` was not reached).
    fitted : ndarray of shape (n, n_outputs)
        :math:`K A` in float64, the training outputs (a by-product of the last residual).
    """
    ridge = check_nonnegative_float("ridge", ridge)
    Y = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
    precondition = nystrom_preconditioner(K32, rank, rng or np.random.default_rng(0))
    coef = np.zeros_like(Y)
    residual = Y.copy()
    target = np.linalg.norm(Y)
    relative, total_iterations = 1.0, 0
    for refinement in range(1, max_refinements + 1):
        correction, iterations, _ = conjugate_gradients(
            K32,
            residual,
            precondition,
            tol=inner_tol,
            max_iter=max_iter,
            ridge=ridge,
            progress=progress,
        )
        total_iterations += iterations
        coef += correction
        fitted = exact_product(coef)
        residual = Y - fitted - ridge * coef
        relative = float(np.linalg.norm(residual) / target)
        if report:
            report(
                f"refinement {refinement}: {iterations} CG iterations, float64 relative "
                f"residual {relative:.2e}"
            )
        if relative <= tol:
            break
    message = (
        f"{refinement} refinement(s), {total_iterations} CG iterations, relative "
        f"residual {relative:.2e} in float64"
    )
    if relative > tol:
        message += f" (target {tol:.0e} not reached: K may be singular; try a small --ridge)"
    solution = KernelSolution(
        coef,
        ridge,
        0.0,
        float("nan"),
        message,
        method="preconditioned CG on float32 K, refined in float64",
    )
    return solution, fitted

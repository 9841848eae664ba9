r"""Kernel regression: the function an infinitely wide network converges to.

Under squared loss and gradient flow to convergence, the infinite-width network's
mean prediction is kernel regression with its NTK (Jacot et al. 2018):

.. math:: f(x) = K(x, X)\,(K(X, X) + \lambda I)^{-1} Y,

with one-hot targets ``Y`` and ridge :math:`\lambda` (0 = the trained network, which
interpolates). The system is factorised once by Cholesky, never inverted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from .errors import InvalidInputError
from .kernels import mirror_upper
from .validation import (
    check_finite_result,
    check_matrix,
    check_nonnegative_float,
    check_targets,
)

# Largest condition number (1-norm estimate) a solve accepts: beyond it float64 keeps
# fewer than about 4 significant digits of the coefficients.
MAX_CONDITION = 1e12


@dataclass(frozen=True)
class KernelSolution:
    """Dual coefficients of kernel regression and how they were obtained.

    Attributes
    ----------
    coef : ndarray of shape (n_train, n_outputs)
        :math:`A = (K + (\\lambda + \\epsilon) I)^{-1} Y`.
    ridge : float
        Ridge :math:`\\lambda` asked for.
    jitter : float
        Extra diagonal :math:`\\epsilon` added because ``K + ridge I`` was not
        numerically positive definite (0 when none was needed).
    condition_number : float
        LAPACK estimate of the 1-norm condition number of the factorised matrix.
    message : str
        Empty, or what the fallback did and why.
    method : str, default="Cholesky"
        How ``coef`` was computed (``"eigendecomposition"`` for finite training time).
    """

    coef: np.ndarray
    ridge: float
    jitter: float
    condition_number: float
    message: str
    method: str = "Cholesky"


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """One-hot targets: row i has a 1 in column ``labels[i]``.

    Returns
    -------
    ndarray of shape (n_samples, n_classes), float64
    """
    targets = np.zeros((len(labels), n_classes))
    targets[np.arange(len(labels)), labels] = 1.0
    return targets


def solve(
    K: np.ndarray,
    Y: np.ndarray,
    *,
    ridge: float = 0.0,
    max_jitter_tries: int = 8,
    max_condition: float = MAX_CONDITION,
    overwrite_k: bool = False,
) -> KernelSolution:
    r"""Solve :math:`(K + \lambda I) A = Y` by Cholesky, with a jitter fallback.

    If the Cholesky factorisation fails (``K`` has numerically zero or negative
    eigenvalues, e.g. duplicated training images), a jitter
    :math:`\epsilon = 10^{j-12}\,\mathrm{tr}(K)/n`, ``j = 0, 1, ...``, is added to the
    diagonal until it succeeds, and ``message`` says so. If it succeeds but LAPACK's
    estimate of the condition number exceeds ``max_condition`` (the answer would keep
    too few digits; two identical images with different labels give 1e17), the jitter
    becomes at least :math:`10\,\|K + \lambda I\|_1 / \kappa_{max}`, which bounds the
    condition number by about :math:`\kappa_{max}/10`, and ``message`` says so too.

    Parameters
    ----------
    K : ndarray of shape (n_train, n_train)
        Symmetric kernel matrix.
    Y : ndarray of shape (n_train, n_outputs) or (n_train,)
        Targets.
    ridge : float, default=0.0
        :math:`\lambda \ge 0`.
    max_jitter_tries : int, default=8
        Give up after this many jitters (the largest is ``1e-5 tr(K)/n``).
    max_condition : float, default=1e12
        Largest condition number accepted without jitter.
    overwrite_k : bool, default=False
        Factorise ``K`` in place (no second n x n array: what lets the largest kernels
        fit); ``K`` then holds the factor afterwards. A failed attempt is undone from
        the triangle LAPACK does not touch, so the jitter fallback still works.

    Returns
    -------
    KernelSolution

    Raises
    ------
    InvalidInputError
        If ``K`` is not a finite symmetric square float array, ``Y`` is not finite or
        disagrees in size, or no jitter makes ``K`` positive definite.
    """
    ridge = check_nonnegative_float("ridge", ridge)
    K = check_kernel_matrix(K)
    n = K.shape[0]
    Y = check_targets("Y", Y, n)
    diagonal = np.diagonal(K).copy()
    scale = float(diagonal.sum()) / n
    # K is symmetric: its transpose is the same matrix, Fortran-ordered when K is
    # C-ordered, which LAPACK factorises in place (its lower triangle = K's upper one).
    work = (K if overwrite_k else K.copy()).T
    norm_1 = _column_abs_sum_max(work) + ridge
    jitter, message = 0.0, ""
    for attempt in range(max_jitter_tries + 1):
        np.fill_diagonal(work, diagonal + ridge + jitter)
        try:
            factor = linalg.cho_factor(work, lower=True, overwrite_a=True, check_finite=False)
        except linalg.LinAlgError:
            mirror_upper(work)  # potrf wrote only the lower triangle
            jitter, message = jitter_after_failure(attempt, scale, ridge)
            continue
        condition = _condition_number(factor[0], norm_1 + jitter)
        if not condition <= max_condition and attempt < max_jitter_tries:
            mirror_upper(work)  # undo the factor, as after a failure
            jitter = max(
                jitter_after_failure(attempt, scale, ridge)[0], 10 * norm_1 / max_condition
            )
            message = (
                f"K + ridge*I is ill-conditioned (condition number ~ {condition:.3g} > "
                f"{max_condition:.0e}, ridge={ridge:g}): added jitter {jitter:.3g} to the "
                "diagonal; a --ridge of your choice does the same"
            )
            continue
        coef = linalg.cho_solve(factor, Y, check_finite=False)
        if not np.isfinite(coef).all():
            raise not_positive_definite(jitter)
        return KernelSolution(coef, ridge, jitter, condition, message)
    raise not_positive_definite(jitter)


def check_kernel_matrix(K: object, block: int = 1024) -> np.ndarray:
    """Return ``K`` as a float64 (or float32) ndarray after checking it is a finite,
    symmetric (to ``1e-10`` of its largest entry), non-empty square matrix.

    Checked in row blocks, so no second n x n array is made.

    Raises
    ------
    InvalidInputError
    """
    if not isinstance(K, np.ndarray) or K.dtype not in (np.float64, np.float32):
        try:
            given = np.asarray(K)
        except (TypeError, ValueError):
            given = np.asarray(None)
        if given.dtype.kind not in "biuf":
            raise InvalidInputError(
                f"K must be a square matrix of real numbers, got {type(K).__name__} "
                f"of dtype {given.dtype}"
            )
        K = given.astype(np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise InvalidInputError(f"K must be a non-empty square matrix, got shape {K.shape}")
    largest = 0.0
    for start in range(0, K.shape[0], block):
        rows = K[start : start + block]
        if not np.isfinite(rows).all():
            raise InvalidInputError("K holds NaN or inf; recompute it from finite inputs")
        largest = max(largest, float(np.abs(rows).max()))
    for start in range(0, K.shape[0], block):
        gap = float(np.abs(K[start : start + block] - K[:, start : start + block].T).max())
        if gap > 1e-10 * largest:
            raise InvalidInputError(
                f"K is not symmetric (max |K - K^T| = {gap:.3g}, largest entry {largest:.3g}); "
                "a kernel matrix K(X, X) is symmetric: pass (K + K.T) / 2 if it is rounding"
            )
    return K


def jitter_after_failure(attempt: int, scale: float, ridge: float) -> tuple[float, str]:
    r"""The jitter to try after failed attempt ``attempt`` (0, 1, ...), and what to say.

    :math:`\epsilon = 10^{j-12}\,s` with ``s = trace(K)/n``.
    """
    jitter = scale * 10.0 ** (attempt - 12)
    message = (
        f"K + ridge*I is not numerically positive definite (ridge={ridge:g}); "
        f"added jitter {jitter:.3g} = {10.0 ** (attempt - 12):.0e} * trace(K)/n "
        "to the diagonal"
    )
    return jitter, message


def not_positive_definite(jitter: float) -> InvalidInputError:
    """The error raised when even the largest jitter leaves ``K`` indefinite."""
    return InvalidInputError(
        f"K is not positive definite even with jitter {jitter:.3g}: it has clearly negative "
        "eigenvalues (a kernel is positive semi-definite; check its sign and how it was "
        "computed), or is zero; a larger ridge makes any symmetric K solvable"
    )


def _column_abs_sum_max(matrix: np.ndarray, block: int = 1024) -> float:
    """``max_j sum_i |matrix[i, j]|`` (the 1-norm) in row blocks, without an n x n temporary."""
    sums = np.zeros(matrix.shape[1])
    for start in range(0, matrix.shape[0], block):
        sums += np.abs(matrix[start : start + block]).sum(axis=0)
    return float(sums.max())


def predict(K_test_train: np.ndarray, solution: KernelSolution) -> np.ndarray:
    """Kernel-regression outputs :math:`K(x, X) A`.

    Parameters
    ----------
    K_test_train : ndarray of shape (n_test, n_train)
    solution : KernelSolution

    Returns
    -------
    ndarray of shape (n_test, n_outputs)

    Raises
    ------
    InvalidInputError
        If ``K_test_train`` is not a finite matrix with one column per training row.
    """
    matrix = check_matrix("K_test_train", K_test_train, n_features=len(solution.coef))
    with np.errstate(over="ignore", invalid="ignore"):
        return check_finite_result("the predictions", matrix @ solution.coef)


def _condition_number(lower_factor: np.ndarray, norm_1: float) -> float:
    """1-norm condition number estimate of L L^T from its Cholesky factor (LAPACK pocon)."""
    pocon = linalg.get_lapack_funcs("pocon", (lower_factor,))
    rcond, info = pocon(lower_factor, norm_1, uplo="L")
    return float(np.inf) if info != 0 or rcond == 0 else float(1.0 / rcond)

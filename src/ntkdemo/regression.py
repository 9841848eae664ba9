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
from .validation import check_nonnegative_float


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
    overwrite_k: bool = False,
) -> KernelSolution:
    r"""Solve :math:`(K + \lambda I) A = Y` by Cholesky, with a jitter fallback.

    If the Cholesky factorisation fails (``K`` has numerically zero or negative
    eigenvalues, e.g. duplicated training images), a jitter
    :math:`\epsilon = 10^{j-12}\,\mathrm{tr}(K)/n`, ``j = 0, 1, ...``, is added to the
    diagonal until it succeeds, and ``message`` says so.

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
        If ``K`` and ``Y`` disagree in size, or no jitter makes ``K`` positive definite.
    """
    ridge = check_nonnegative_float("ridge", ridge)
    n = K.shape[0]
    if K.shape != (n, n) or len(Y) != n:
        raise InvalidInputError(
            f"K must be square and match Y: got K {K.shape} and Y with {len(Y)} rows"
        )
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
        coef = linalg.cho_solve(factor, Y, check_finite=False)
        condition = _condition_number(factor[0], norm_1 + jitter)
        return KernelSolution(coef, ridge, jitter, condition, message)
    raise not_positive_definite(jitter)


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
        f"K is not positive definite even with jitter {jitter:.3g}; "
        "check it for NaN or a wrong sign, or pass a larger ridge"
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
    """
    return K_test_train @ solution.coef


def _condition_number(lower_factor: np.ndarray, norm_1: float) -> float:
    """1-norm condition number estimate of L L^T from its Cholesky factor (LAPACK pocon)."""
    pocon = linalg.get_lapack_funcs("pocon", (lower_factor,))
    rcond, info = pocon(lower_factor, norm_1, uplo="L")
    return float(np.inf) if info != 0 or rcond == 0 else float(1.0 / rcond)

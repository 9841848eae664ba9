r"""The whole kernel in float64, factorised once by Cholesky; never inverted.

:func:`solve` solves :math:`(K + \lambda I) A = Y` with a jitter fallback and reports
the conditioning; :func:`factor_with_jitter` is that fallback, shared with the GPU
(:mod:`.cuda`). :class:`CholeskySolver` is the strategy every kernel can use: it holds
``K(X, X)`` whole (``8 n^2`` bytes) and serves the deep kernels and finite training
times too (one eigendecomposition, :mod:`ntkdemo.dynamics`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
from scipy import linalg

from ..compiled import jit
from ..dynamics import GradientDescentDynamics
from ..errors import InvalidInputError
from ..kernels import mirror_upper
from ..spec import KernelSpec
from ..validation import (
    check_finite_result,
    check_kernel_matrix,
    check_nonnegative_float,
    check_targets,
)
from .base import (
    FittedKernel,
    KernelSolution,
    Progress,
    Stopwatch,
    host_available_bytes,
    wrap,
)

# Largest condition number (1-norm estimate) a solve accepts: beyond it float64 keeps
# fewer than about 4 significant digits of the coefficients.
MAX_CONDITION = 1e12


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
        Give up after this many jitters (the largest is ``1e-4 tr(K)/n``).
    max_condition : float, default=1e12
        Largest condition number accepted without jitter.
    overwrite_k : bool, default=False
        Factorise ``K`` in place (no second n x n array: what lets the largest kernels
        fit); ``K`` then holds the factor afterwards. A failed attempt is undone from
        the triangle LAPACK does not touch, so the jitter fallback still works. A
        read-only ``K`` is copied instead.

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
    Y = check_targets("Y", Y, K.shape[0])
    diagonal = np.diagonal(K).copy()
    # K is symmetric: its transpose is the same matrix, Fortran-ordered when K is
    # C-ordered, which LAPACK factorises in place (its lower triangle = K's upper one).
    work = (K if overwrite_k and K.flags.writeable else K.copy()).T
    norm_1 = float(_largest_row_abs_sum(work.T)) + ridge  # the 1-norm of work
    written = [False]  # whether the lower triangle holds a factor to undo

    def factorise(jitter: float):
        if written[0]:
            mirror_upper(work)  # potrf wrote only the lower triangle
        np.fill_diagonal(work, diagonal + ridge + jitter)
        written[0] = True
        try:
            factor = linalg.cho_factor(work, lower=True, overwrite_a=True, check_finite=False)
        except linalg.LinAlgError:
            return None
        return factor, _condition_number(factor[0], norm_1 + jitter)

    factor, jitter, condition, message = factor_with_jitter(
        factorise,
        scale=float(diagonal.sum()) / len(diagonal),
        norm_1=norm_1,
        ridge=ridge,
        max_tries=max_jitter_tries,
        max_condition=max_condition,
    )
    coef = linalg.cho_solve(factor, Y, check_finite=False)
    if not np.isfinite(coef).all():
        raise not_positive_definite(jitter)
    return KernelSolution(
        coef=coef,
        method="Cholesky",
        ridge=ridge,
        jitter=jitter,
        condition_number=condition,
        message=message,
    )


def factor_with_jitter(
    factorise: Callable[[float], tuple[object, float] | None],
    *,
    scale: float,
    norm_1: float,
    ridge: float,
    max_tries: int = 8,
    max_condition: float = MAX_CONDITION,
):
    r"""Factorise ``K + (ridge + jitter) I`` with the smallest jitter that works.

    ``factorise(jitter)`` returns ``(factor, condition_number)``, or None where the
    matrix is not numerically positive definite. Jitters are
    :math:`10^{j-12} s`, ``j = 0, 1, ...`` (``s = scale = trace(K)/n``) after a failure,
    and at least :math:`10 \|K + \lambda I\|_1 / \kappa_{max}` (``norm_1``) after a
    factorisation whose condition number exceeds ``max_condition``.

    Returns
    -------
    factor, jitter, condition_number, message

    Raises
    ------
    InvalidInputError
        If ``max_tries`` jitters leave the matrix indefinite.
    """
    jitter, message = 0.0, ""
    for attempt in range(max_tries + 1):
        outcome = factorise(jitter)
        if outcome is None:
            jitter, message = jitter_after_failure(attempt, scale, ridge)
            continue
        factor, condition = outcome
        if not condition <= max_condition and attempt < max_tries:
            floor = 10 * norm_1 / max_condition
            jitter = max(jitter_after_failure(attempt, scale, ridge)[0], floor)
            message = (
                f"K + ridge*I is ill-conditioned (condition number ~ {condition:.3g} > "
                f"{max_condition:.0e}, ridge={ridge:g}): added jitter {jitter:.3g} to the "
                "diagonal; a --ridge of your choice does the same"
            )
            continue
        return factor, jitter, condition, message
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
        f"K is not positive definite even with jitter {jitter:.3g}: it has clearly negative "
        "eigenvalues (a kernel is positive semi-definite; check its sign and how it was "
        "computed), or is zero; a larger ridge makes any symmetric K solvable"
    )


@jit(parallel=True)
def _largest_row_abs_sum(matrix):  # pragma: no cover - compiled
    r""":math:`\max_i \sum_j |m_{ij}|`, one row per task (no temporary)."""
    sums = np.zeros(matrix.shape[0])
    for i in numba.prange(matrix.shape[0]):
        total = 0.0
        for j in range(matrix.shape[1]):
            total += abs(matrix[i, j])
        sums[i] = total
    return sums.max()


def _condition_number(lower_factor: np.ndarray, norm_1: float) -> float:
    """1-norm condition number estimate of L L^T from its Cholesky factor (LAPACK pocon)."""
    pocon = linalg.get_lapack_funcs("pocon", (lower_factor,))
    rcond, info = pocon(lower_factor, norm_1, uplo="L")
    return float(np.inf) if info != 0 or rcond == 0 else float(1.0 / rcond)


@dataclass(frozen=True)
class CholeskySolver:
    """Strategy: ``K(X, X)`` whole in float64, factorised in place by Cholesky.

    Serves every exact kernel; for a finite training time the same matrix is decomposed once
    by ``eigh`` instead (:class:`~ntkdemo.dynamics.GradientDescentDynamics`).

    Parameters
    ----------
    block_rows : int, default=1024
        Rows per streamed block of kernel values (predictions).
    """

    name: str = "cholesky"
    block_rows: int = 1024

    def serves(self, spec: KernelSpec) -> bool:
        return spec.features is None

    def describe(self) -> str:
        return "float64 kernel, Cholesky in place"

    in_process: bool = True
    gives_spectrum: bool = True

    def available_bytes(self) -> int:
        return host_available_bytes()

    def memory_label(self) -> str:
        return "free memory or --max-memory"

    def kernel_bytes(self, n_train: int) -> int:
        """The whole float64 matrix."""
        return 8 * n_train**2

    def kernel_label(self) -> str:
        return "float64 kernel"

    def estimate_bytes(self, n_train: int, n_test: int, n_features: int, n_outputs: int) -> int:
        """Kernel, inputs and their unit rows (float64), one block of streamed kernel rows,
        and a few (n_train x n_outputs) vectors."""
        inputs = 2 * 8 * (n_train + n_test) * n_features
        block = 8 * min(self.block_rows, max(n_train, n_test)) * n_train
        return self.kernel_bytes(n_train) + inputs + block + 8 * 12 * n_train * n_outputs

    def fit(
        self,
        X_unit: np.ndarray,
        Y: np.ndarray,
        spec: KernelSpec,
        *,
        progress: Progress | None = None,
        report: Callable[[str], None] | None = None,
        spectrum_rows: int = 0,
    ) -> FittedKernel:
        """Kernel (its leading ``spectrum_rows`` block's eigenvalues), then Cholesky (or
        ``eigh`` for a finite time); training outputs ``K A``.

        Every pair's kernel is computed once. The outputs on the training images are the
        product of ``A`` with the kernel itself (the triangle LAPACK left untouched and
        the diagonal saved before; :func:`outputs_of_factorised`), not the identity
        ``K A = Y - (ridge + jitter) A``, which cancels at large ridges and would hide an
        ill-conditioned solve.
        """
        watch = Stopwatch()
        with watch.stage("kernel"):
            K = spec.matrix(X_unit, progress=wrap(progress, "kernel blocks"))
        eigenvalues = None
        if spectrum_rows:
            with watch.stage("spectrum"):
                eigenvalues = np.linalg.eigvalsh(K[:spectrum_rows, :spectrum_rows])
        with watch.stage("solve"):
            if spec.time is None:
                diagonal = np.diagonal(K).copy()
                solution = solve(K, Y, ridge=spec.ridge, overwrite_k=True)
                train_scores = outputs_of_factorised(K, diagonal, solution.coef)
                del K
            else:
                dynamics = GradientDescentDynamics(K, Y)
                solution = KernelSolution(
                    coef=dynamics.dual_coefficients(spec.time),
                    method="eigendecomposition",
                    condition_number=dynamics.condition_number(),
                    message=dynamics.describe(spec.time),
                )
                train_scores = check_finite_result("the outputs", K @ solution.coef)
        return FittedKernel(X_unit, spec, solution, train_scores, watch.timings, eigenvalues)


def outputs_of_factorised(factorised: np.ndarray, diagonal: np.ndarray, coef: np.ndarray):
    r""":math:`K A` from the matrix :func:`solve` factorised in place (``overwrite_k``).

    ``solve`` writes the factor into the upper triangle of the C-ordered ``K`` (the lower
    one of its Fortran-ordered transpose, which LAPACK factorises) and leaves the strict
    lower triangle as it was, undoing a failed attempt from it. With the diagonal saved
    before, that triangle is all of the symmetric :math:`K`: one symmetric product
    (BLAS ``symm``) gives :math:`K A` with no second :math:`n \times n` array and no
    kernel entry computed again. ``factorised``'s diagonal is overwritten.

    Parameters
    ----------
    factorised : ndarray of shape (n, n), C-ordered
    diagonal : ndarray of shape (n,)
        :math:`K`'s diagonal before the factorisation.
    coef : ndarray of shape (n, n_outputs)

    Returns
    -------
    ndarray of shape (n, n_outputs), checked finite
    """
    np.fill_diagonal(factorised, diagonal)
    coefficients = np.asfortranarray(coef.reshape(len(coef), -1))
    symm = linalg.get_blas_funcs("symm", (factorised, coefficients))
    # factorised.T is Fortran-ordered; its upper triangle is factorised's strict lower one
    outputs = symm(1.0, factorised.T, coefficients, lower=0)
    return check_finite_result("the outputs", outputs.reshape(coef.shape))

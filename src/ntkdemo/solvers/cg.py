r"""Strategy ``cg``: the upper triangle in float64, solved by preconditioned CG.

For training sets whose float64 kernel does not fit in memory whole: ``K`` is held as
its upper triangle in float64 (:class:`~.strips.SymmetricStrips`, the bytes of the
whole matrix in float32), so every product is exact to float64 rounding and conjugate
gradients reach float64-quality answers directly (a relative residual of
:math:`10^{-6}` and below), with no refinement against recomputed kernels. Rows are
ordered by k-means clusters so that the preconditioner's blocks
(:mod:`.preconditioners`) are contiguous.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np
from scipy import linalg

from ..errors import InvalidInputError
from ..spec import KernelSpec
from ..validation import check_nonnegative_float
from .base import FittedKernel, KernelSolution, Progress, Stopwatch, host_available_bytes, wrap
from .preconditioners import block_nystrom_preconditioner, cluster_order, in_original_order
from .strips import SymmetricStrips, kernel_strips_of_unit_rows, kernel_times_of_unit_rows


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
    r"""Preconditioned block CG on :math:`M X = B`: one Krylov space for all columns.

    Breakdown-free block conjugate gradients (Ji & Li 2017, "A breakdown-free block
    conjugate gradient method"): the directions :math:`P` are an orthonormal basis of
    :math:`Z + P \beta` (QR, dropping directions that became dependent), and

    .. math::

        \alpha = (P^\top M P)^{-1} P^\top R, \quad X \mathrel{+}= P \alpha, \quad
        R \mathrel{-}= (M P) \alpha, \quad Z = P_{\mathrm{re}}^{-1} R, \quad
        \beta = -(P^\top M P)^{-1} (M P)^\top Z .

    Each column's residual is minimised over the directions of every column, so the
    classes share what each one's search finds: fewer iterations than one CG per
    column (each iteration: one product :math:`M P` with all columns at once, one
    preconditioner call, :math:`O(n k^2)` vector work, all in float64). Stops when
    every column's residual, relative to its ``B`` column, is below ``tol``.

    Parameters
    ----------
    times : callable
        ``V -> M @ V`` for a symmetric positive definite ``M``.
    B : ndarray of shape (n, k)
    precondition : callable
        ``R -> P^{-1} R`` for a symmetric positive definite preconditioner.
    tol : float
    max_iter : int
    start : ndarray of shape (n, k), optional
        Initial guess (default zero).
    progress : callable, optional
        Wraps the iteration counter (a progress bar). The counter has no length: the
        iterations CG needs are not known in advance, and ``max_iter`` is a limit, not
        an estimate (a bar sized to it would give a time left many times the truth).

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
    directions = _orthonormal_basis(precondition(residual))
    counter = iter(range(1, max_iter + 1))  # unsized: progress shows no false total
    for iteration in progress(counter) if progress else counter:
        product = times(directions)
        gram = directions.T @ product  # P^T M P, symmetric positive definite
        gram = (gram + gram.T) / 2
        try:
            gram_factor = linalg.cho_factor(gram, check_finite=False)
        except (linalg.LinAlgError, ValueError):  # M not positive definite, or not finite
            return solution, iteration, np.inf
        step = linalg.cho_solve(gram_factor, directions.T @ residual, check_finite=False)
        solution += directions @ step
        residual -= product @ step
        relative = float((np.linalg.norm(residual, axis=0) / norms).max())
        if relative < tol or not np.isfinite(relative):  # done, or broken down (the caller says)
            return solution, iteration, relative
        preconditioned = precondition(residual)
        beta = linalg.cho_solve(gram_factor, product.T @ preconditioned, check_finite=False)
        directions = _orthonormal_basis(preconditioned - directions @ beta)
    return solution, max_iter, relative


def _orthonormal_basis(Z: np.ndarray) -> np.ndarray:
    """Orthonormal columns spanning ``Z`` (QR with column pivoting), without the
    directions whose share is below ``1e-10`` of the largest (dependent ones)."""
    Q, R, _ = linalg.qr(Z, mode="economic", pivoting=True, check_finite=False)
    magnitudes = np.abs(np.diagonal(R))
    if not magnitudes.size or not np.isfinite(magnitudes).all() or magnitudes[0] == 0:
        return Q[:, :1]
    return Q[:, : int(np.sum(magnitudes > 1e-10 * magnitudes[0]))]


@dataclass(frozen=True)
class CGOptions:
    r"""Tuning of the ``cg`` strategy, in one place (as falkon's ``ConjugateGradientOptions``).

    Attributes
    ----------
    strip_rows : int, default=256
        Rows per strip of the stored upper triangle.
    cluster_size : int, default=1500
        Target rows per k-means cluster: the preconditioner's blocks.
    rank : int, default=2500
        Landmark columns of the preconditioner's Nystrom part, at most: see
        :meth:`nystrom_rank`.
    rows_per_landmark : int, default=12
        Training rows per landmark column below that cap.
    min_rank : int, default=500
        Landmark columns at least (all of them for smaller ``n``), below the cap.
    tol : float, default=1e-6
        Float64 relative residual :math:`\|Y - (K + \lambda I) A\|_F / \|Y\|_F` to reach.
    max_iter : int, default=1000
        Iterations per CG run.
    max_restarts : int, default=3
        CG runs restarted from the last answer when the recursion drifted.
    storage : {numpy.float64, numpy.float32}, default=numpy.float64
        How the triangle is stored. With float32 (half the memory) CG solves the rounded
        matrix, and the answer is refined against the float64 kernel, recomputed in
        blocks: :math:`R = Y - (K + \lambda I) A`, :math:`A \mathrel{+}= \tilde K^{-1} R`.
    max_refinements : int, default=4
        Refinements at most (float32 storage).
    residual_block_rows : int, default=256
        Rows per block of the float64 kernel recomputed for a refinement's residual
        (float32 storage): its workspace is ``residual_block_rows * n`` float64.
    block_strip_rows : int, default=16
        Rows per strip of the preconditioner's inverted blocks, stored as their upper
        triangles.
    """

    strip_rows: int = 256
    cluster_size: int = 1500
    rank: int = 2500
    rows_per_landmark: int = 12
    min_rank: int = 500
    tol: float = 1e-6
    max_iter: int = 1000
    max_restarts: int = 3
    storage: type = np.float64
    max_refinements: int = 4
    residual_block_rows: int = 256
    block_strip_rows: int = 16

    def nystrom_rank(self, n: int) -> int:
        r"""Landmark columns for ``n`` training rows:
        :math:`\min(\text{rank},\ n,\ \max(\text{min\_rank},\ \lceil n /
        \text{rows\_per\_landmark} \rceil))`.

        A landmark costs set-up time in proportion to ``n`` times the rank and saves
        iterations, each of which costs :math:`n^2`, so the rank that gives the
        shortest set-up plus solve grows with ``n`` until memory caps it (``rank``: the
        Nystrom factor holds ``8 n rank`` bytes). README, "The scale benchmark", has
        the measurements behind ``rows_per_landmark``.
        """
        return min(self.rank, n, max(self.min_rank, -(-n // self.rows_per_landmark)))


DEFAULT_OPTIONS = CGOptions()

FLOAT32_MODEL_TOL = 1e-4
"""The relative residual one CG run on the float32 triangle aims at, at most: the
rounded matrix differs from the float64 one by about 6e-8 of its entries, which
limits what a run can gain against the float64 kernel."""


def preconditioner_for(
    K: SymmetricStrips,
    blocks: list[slice],
    ridge: float,
    options: CGOptions,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """The preconditioner every CG strategy uses: Nystrom rank
    ``options.nystrom_rank(n)`` (landmarks drawn with seed 0) plus the cluster ``blocks``
    (:func:`~.preconditioners.block_nystrom_preconditioner`); ``progress`` wraps the
    blocks' set-up."""
    rank = options.nystrom_rank(K.shape[0])
    return block_nystrom_preconditioner(
        K, blocks, rank, np.random.default_rng(0), ridge, options.block_strip_rows, progress
    )


def _ridged_product(K: SymmetricStrips, ridge: float) -> Callable[[np.ndarray], np.ndarray]:
    r"""The map :math:`V \mapsto (K + \lambda I) V` that CG iterates with, from the
    stored ``K`` and the ridge :math:`\lambda`, added on the fly."""
    return lambda V: K @ V + ridge * V


class CGNotConverged(InvalidInputError):
    """CG ended above its residual target (stalled, or broke down on a singular matrix).

    Attributes
    ----------
    relative : float
        The float64 relative residual reached (inf where CG broke down).
    iterations : int
        Iterations spent.
    """

    def __init__(self, relative: float, iterations: int, tol: float):
        self.relative, self.iterations = relative, iterations
        super().__init__(
            f"conjugate gradients stopped at relative residual {relative:.3g} after "
            f"{iterations} iterations (target {tol:.0e} not reached): K + ridge*I is "
            "singular or too ill-conditioned, e.g. identical images with different labels; "
            "pass a small --ridge (e.g. 1e-6) or use --solver cholesky, which adds jitter"
        )


CG_JITTERS = (1e-8, 1e-6, 1e-4)
r"""Jitters tried, relative to :math:`\operatorname{tr}(K)/n`, when CG misses its target."""


def solve_with_jitter(
    attempt: Callable[[float], tuple[KernelSolution, np.ndarray]],
    scale: float,
    ridge: float,
    report: Callable[[str], None] | None = None,
) -> tuple[KernelSolution, np.ndarray]:
    r"""``attempt(0)``; where CG misses its target, ``attempt(jitter)`` with growing jitter.

    A CG answer above its residual target is never returned: near-singular kernels
    (duplicated images with different labels) make CG stall or diverge, and its
    predictions are then no better than chance. As :func:`~.cholesky.solve` does, the
    diagonal is raised by :math:`\epsilon \operatorname{tr}(K)/n` for each
    :math:`\epsilon` of :data:`CG_JITTERS` until CG converges; the solution says so.

    Parameters
    ----------
    attempt : callable
        ``jitter -> (solution, fitted)`` solving :math:`(K + (\lambda + \text{jitter}) I)
        A = Y`; raises :class:`CGNotConverged` when it misses its target.
    scale : float
        :math:`\operatorname{tr}(K)/n`.
    ridge : float
        The ridge :math:`\lambda` asked for (named in the messages).
    report : callable, optional
        Receives a line per retry.

    Raises
    ------
    InvalidInputError
        If CG misses its target with every jitter (one line, with what to do).
    """
    try:
        return attempt(0.0)
    except CGNotConverged as failure:
        last = failure
    if ridge > 1e8 * scale or not np.isfinite(last.relative) and ridge > scale:
        raise InvalidInputError(
            f"conjugate gradients cannot solve with --ridge {ridge:g}: it dwarfs the kernel "
            f"(trace(K)/n = {scale:.3g}), so K + ridge*I loses K's digits or overflows; choose "
            f"a ridge below {1e8 * scale:.3g}, or use --solver cholesky"
        ) from None
    for relative_jitter in CG_JITTERS:
        jitter = relative_jitter * scale
        if report:
            report(
                f"CG missed its target (relative residual {last.relative:.2e}); retrying with "
                f"jitter {jitter:.3g} = {relative_jitter:.0e} * trace(K)/n"
            )
        try:
            solution, fitted = attempt(jitter)
        except CGNotConverged as failure:
            last = failure
            continue
        message = (
            f"{solution.message}; K + ridge*I was too ill-conditioned for CG (relative "
            f"residual {last.relative:.2e} without jitter): added jitter {jitter:.3g} = "
            f"{relative_jitter:.0e} * trace(K)/n"
        )
        return replace(solution, ridge=ridge, jitter=jitter, message=message), fitted
    raise InvalidInputError(
        f"conjugate gradients did not converge even with jitter {CG_JITTERS[-1]:.0e} * "
        f"trace(K)/n (relative residual {last.relative:.3g}): K + ridge*I is too "
        "ill-conditioned for CG; use --solver cholesky, or pass a larger --ridge"
    ) from None


def preconditioned_solve(
    K: SymmetricStrips,
    Y: np.ndarray,
    blocks: list[slice],
    ridge: float,
    options: CGOptions,
    watch: Stopwatch,
    *,
    report: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    solve: Callable[[Callable, float], tuple[KernelSolution, np.ndarray]] | None = None,
) -> tuple[KernelSolution, np.ndarray]:
    r"""What every CG strategy does once its kernel is stored: the preconditioner for
    :math:`K + \lambda I` and the solve (stages ``preconditioner`` and ``solve`` of
    ``watch``), again with growing jitter while CG misses its target
    (:func:`solve_with_jitter`).

    ``solve(precondition, ridge)`` replaces :func:`solve_cg` (the float32 refinement).
    """

    def attempt(jitter: float) -> tuple[KernelSolution, np.ndarray]:
        with watch.stage("preconditioner"):
            precondition = preconditioner_for(
                K, blocks, ridge + jitter, options, wrap(progress, "preconditioner blocks")
            )
        with watch.stage("solve"):
            if solve is not None:
                return solve(precondition, ridge + jitter)
            return solve_cg(
                K,
                Y,
                blocks,
                ridge=ridge + jitter,
                options=options,
                report=report,
                progress=wrap(progress, "CG iterations"),
                precondition=precondition,
            )

    return solve_with_jitter(attempt, kernel_scale(K), ridge, report)


def kernel_scale(K: SymmetricStrips) -> float:
    r""":math:`\operatorname{tr}(K)/n`, estimated from the first 256 diagonal entries."""
    first = np.arange(min(256, K.shape[0]))
    return float(np.mean(np.diag(K.take(first, first))))


def solve_cg(
    K: SymmetricStrips,
    Y: np.ndarray,
    blocks: list[slice],
    *,
    ridge: float = 0.0,
    options: CGOptions = DEFAULT_OPTIONS,
    report: Callable[[str], None] | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    precondition: Callable[[np.ndarray], np.ndarray] | None = None,
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
    options : CGOptions
        Residual target, Nystrom rank, iteration limits.
    report : callable, optional
        Receives a line per CG run (the command line prints them).
    progress : callable, optional
        Wraps the CG iteration counter (a progress bar).
    precondition : callable, optional
        A preconditioner already built for ``K`` and ``ridge`` (default: built here by
        :func:`preconditioner_for`).

    Returns
    -------
    solution : KernelSolution
        ``message`` gives the iterations and the final relative residual.
    fitted : ndarray of shape (n, n_outputs)
        :math:`K A`, the training outputs (a by-product of the residual check).

    Raises
    ------
    CGNotConverged
        If ``tol`` is not reached after ``max_restarts`` restarts, or CG broke down
        (:func:`solve_with_jitter` retries with jitter).
    """
    ridge = check_nonnegative_float("ridge", ridge)
    Y = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
    tol = options.tol
    if precondition is None:
        precondition = preconditioner_for(K, blocks, ridge, options)
    times = _ridged_product(K, ridge)
    target = np.linalg.norm(Y)
    coef, total_iterations, start, previous = np.zeros_like(Y), 0, None, np.inf
    for run in range(options.max_restarts + 1):
        coef, iterations, _ = conjugate_gradients(
            times,
            Y,
            precondition,
            tol=tol,
            max_iter=options.max_iter,
            start=start,
            progress=progress,
        )
        total_iterations += iterations
        fitted = K @ coef
        relative = float(np.linalg.norm(Y - fitted - ridge * coef) / target)
        if not np.isfinite(relative):
            break
        if report:
            what = f"CG restart {run}" if run else "CG"
            report(f"{what}: {iterations} iterations, relative residual {relative:.2e}")
        if relative <= tol or relative >= previous:  # done, or restarts no longer help
            break
        start, previous = coef, relative
    if not (np.isfinite(relative) and np.isfinite(coef).all()):
        raise CGNotConverged(np.inf, total_iterations, tol)
    if relative > tol:
        raise CGNotConverged(relative, total_iterations, tol)
    message = f"{total_iterations} CG iterations, relative residual {relative:.2e}"
    solution = KernelSolution(
        coef=coef,
        method="preconditioned conjugate gradients (Nystrom + cluster blocks)",
        ridge=ridge,
        message=message,
        iterations=total_iterations,
    )
    return solution, fitted


@dataclass(frozen=True)
class CGSolver:
    """Strategy: the upper triangle of ``K`` in float64 and preconditioned CG.

    It serves every kernel at convergence (the one-layer formula's strips by its own
    compiled map, any other by ``KernelSpec.matrix`` strip by strip), in float64 or
    float32 storage; with float32 each refinement recomputes the float64 kernel once
    (:func:`~.strips.kernel_times_of_unit_rows`: for a convolutional kernel, the time
    of building it again). Needs about half the memory of :class:`~.cholesky.CholeskySolver` and,
    for large ``n``, less time (``n^2`` per iteration against ``n^3 / 3``).
    """

    name: str = "cg"
    options: CGOptions = DEFAULT_OPTIONS
    in_process: bool = True

    @property
    def gives_spectrum(self) -> bool:
        """The leading block is read from the float64 triangle (in clustered order, by
        :meth:`~.strips.SymmetricStrips.take`); a float32 one would give the
        spectrum of its rounded entries, so then the block is computed apart."""
        return self.options.storage == np.float64

    def serves(self, spec: KernelSpec) -> bool:
        return spec.time is None and spec.features is None

    def describe(self) -> str:
        if self.options.storage == np.float32:
            return (
                f"{self.kernel_label()} (half the memory), preconditioned conjugate "
                "gradients refined against the float64 kernel"
            )
        return f"{self.kernel_label()}, preconditioned conjugate gradients"

    def kernel_label(self) -> str:
        if self.options.storage == np.float32:
            return "upper triangle of the kernel in float32"
        return "upper triangle of the float64 kernel"

    def available_bytes(self) -> int:
        return host_available_bytes()

    def memory_label(self) -> str:
        return "free memory or --max-memory"

    def kernel_bytes(self, n_train: int) -> int:
        """The strips of the upper triangle (:class:`~.strips.SymmetricStrips`)."""
        entry = np.dtype(self.options.storage).itemsize
        return entry * SymmetricStrips.stored_entries(n_train, self.options.strip_rows)

    def estimate_bytes(self, n_train: int, n_test: int, n_features: int, n_outputs: int) -> int:
        r"""Peak bytes: the kernel strips, the inputs and their unit rows (float64), the
        iteration vectors (ten, and two per thread for the partial sums of a product),
        and the larger of what the build and the solve add.

        The build holds a reordered copy of the unit rows (and, for float32 storage, one
        float64 strip). The solve holds the preconditioner: the Nystrom factor
        (:meth:`CGOptions.nystrom_rank` columns) and the upper triangles of the inverted
        cluster blocks, whose squared sizes sum to 1.15-1.32 :math:`n \cdot`
        ``cluster_size`` for k-means clusters on tiled Fashion-MNIST (1.35 is used),
        and while it is set up the largest block with its rows of the factor (clusters
        reach 2.6 times their target size); for float32 storage also the
        ``residual_block_rows`` float64 kernel rows of the refinement's residual.
        """
        inputs = 2 * 8 * (n_train + n_test) * n_features
        vectors = 8 * (10 + SymmetricStrips.partial_outputs()) * n_train * n_outputs
        rank = self.options.nystrom_rank(n_train)
        cluster = min(self.options.cluster_size, n_train)
        blocks = int(8 * (1.35 * cluster + self.options.block_strip_rows) * n_train / 2)
        largest = min(n_train, int(2.6 * cluster))
        solve = 8 * n_train * rank + 8 * rank * rank + blocks + 8 * largest * (largest + rank)
        build = 8 * n_train * n_features
        if self.options.storage != np.float64:
            build += 8 * self.options.strip_rows * n_train
            solve += 8 * self.options.residual_block_rows * n_train
        return self.kernel_bytes(n_train) + inputs + vectors + max(build, solve)

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
        """Cluster, build the strips of the reordered rows, solve; results in the
        original order. The eigenvalues of the leading ``spectrum_rows`` block (of the
        original order) are read from the stored float64 triangle."""
        watch = Stopwatch()
        with watch.stage("clusters"):
            order, blocks = cluster_order(X_unit, self.options.cluster_size)
        with watch.stage("kernel"):
            K = kernel_strips_of_unit_rows(
                X_unit[order],  # a copy for the build alone, freed before the solve
                spec,
                strip_rows=self.options.strip_rows,
                progress=wrap(progress, "kernel strips"),
                dtype=self.options.storage,
            )

        refine = None
        if self.options.storage != np.float64:

            def refine(precondition, ridge):
                return _refined(
                    K,
                    X_unit,
                    spec,
                    order,
                    Y[order],
                    precondition,
                    ridge,
                    self.options,
                    report,
                    progress,
                )

        solution, fitted = preconditioned_solve(
            K,
            Y[order],
            blocks,
            spec.ridge,
            self.options,
            watch,
            report=report,
            progress=progress,
            solve=refine,
        )
        eigenvalues = None
        if spectrum_rows and self.gives_spectrum:
            with watch.stage("spectrum"):
                leading = np.argsort(order)[:spectrum_rows]  # where rows 0, 1, ... are stored
                eigenvalues = np.linalg.eigvalsh(K.take(leading, leading))
        coef = in_original_order(order, solution.coef)
        train_scores = in_original_order(order, fitted)
        return FittedKernel(
            X_unit, spec, replace(solution, coef=coef), train_scores, watch.timings, eigenvalues
        )


def _refined(
    K: SymmetricStrips,
    X_unit: np.ndarray,
    spec: KernelSpec,
    order: np.ndarray,
    Y: np.ndarray,
    precondition: Callable[[np.ndarray], np.ndarray],
    ridge: float,
    options: CGOptions,
    report: Callable[[str], None] | None,
    progress: Progress | None,
) -> tuple[KernelSolution, np.ndarray]:
    r"""CG on the rounded (float32) triangle, refined against the float64 kernel.

    ``K``, ``Y`` and the solution are in the cluster ``order``; ``X_unit`` is in the
    original order (``K`` is the kernel of ``X_unit[order]``).

    Each pass computes the true residual :math:`R = Y - (K + \lambda I) A` with the
    float64 kernel recomputed in blocks (:func:`~.strips.kernel_times_of_unit_rows`, half
    the blocks by symmetry) and adds the float32 solution of :math:`\tilde K \delta = R`.
    Each CG run reduces its residual by no more than the pass needs: to
    :math:`0.3\,\text{tol} / \rho` of it, where :math:`\rho` is the current float64
    relative residual, and never below :data:`FLOAT32_MODEL_TOL` (what the rounded matrix
    can deliver) nor above 0.1; so the first run goes to 1e-4 and the second, from about
    1e-4, only by two more digits. A run is plain :func:`conjugate_gradients`: the
    float64 pass after it is its check. Returns the float64 training outputs ``K A``
    with the solution.
    """
    target = float(np.linalg.norm(Y))
    coef, iterations, residual = np.zeros_like(Y), 0, Y
    relative = 1.0
    for refinement in range(options.max_refinements + 1):
        inner_tol = min(0.1, max(FLOAT32_MODEL_TOL, 0.3 * options.tol / relative))
        step, run_iterations, _ = conjugate_gradients(
            _ridged_product(K, ridge),
            residual,
            precondition,
            tol=inner_tol,
            max_iter=options.max_iter,
            progress=wrap(progress, "CG iterations"),
        )
        coef += step
        iterations += run_iterations
        fitted = kernel_times_of_unit_rows(  # in the rows' own order: no reordered copy
            X_unit,
            spec,
            in_original_order(order, coef),
            block_rows=options.residual_block_rows,
            progress=wrap(progress, "float64 residual blocks"),
        )[order]
        residual = Y - fitted - ridge * coef
        relative = float(np.linalg.norm(residual)) / target
        if report:
            report(f"CG float64 pass {refinement}: relative residual {relative:.2e}")
        if not np.isfinite(relative):
            raise CGNotConverged(np.inf, iterations, options.tol)
        if relative <= options.tol:
            break
    if relative > options.tol:
        raise CGNotConverged(relative, iterations, options.tol)
    message = (
        f"{iterations} CG iterations on the float32 triangle and {refinement} float64 "
        f"refinement{'' if refinement == 1 else 's'}, relative residual {relative:.2e}"
    )
    solution = KernelSolution(
        coef=coef,
        method="preconditioned conjugate gradients on the float32 triangle, refined in float64",
        ridge=ridge,
        message=message,
        iterations=iterations,
    )
    return solution, fitted

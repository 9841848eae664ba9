"""The demo as one call: kernel, solve and predict on a :class:`~ntkdemo.data.Sample`.

Returns arrays and timings; printing and files are the command line's business. The
memory plan (:mod:`ntkdemo.memory`) decides how the training kernel is stored and
solved; test predictions are always streamed in blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from time import perf_counter

import numpy as np

from .data import Sample
from .dynamics import GradientDescentDynamics
from .errors import InvalidParameterError, MemoryPlanError
from .evaluate import ClassificationReport, evaluate
from .iterative import cluster_order, solve_cg
from .kernels import is_default_kernel, kernel_matrix, ntk_strips, ntk_times
from .memory import CG_CLUSTER_SIZE, CG_NYSTROM_RANK, CG_STRIP_ROWS, MemoryPlan, plan_memory
from .regression import KernelSolution, one_hot, solve


@dataclass
class DemoResult:
    """Everything a run computed.

    Attributes
    ----------
    test_scores, train_scores : ndarray of shape (n, n_classes)
        Kernel-regression outputs.
    solution : KernelSolution
    test_report, train_report : ClassificationReport
    eigenvalues : ndarray
        Eigenvalues of the training Gram matrix (ascending), or of its leading
        ``spectrum_rows`` rows and columns when the sample is larger.
    spectrum_rows : int
        Size of the matrix behind ``eigenvalues``.
    plan : MemoryPlan or None
        None for a GPU run.
    timings : dict of str to float
        Seconds spent in each stage (``spectrum``, ``kernel``, ``solve``, ``predict``).
    """

    test_scores: np.ndarray
    train_scores: np.ndarray
    solution: KernelSolution
    test_report: ClassificationReport
    train_report: ClassificationReport
    eigenvalues: np.ndarray
    spectrum_rows: int
    plan: MemoryPlan | None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def test_predictions(self) -> np.ndarray:
        """Predicted class of each test image (argmax of its outputs)."""
        return self.test_scores.argmax(axis=1)


def run_demo(
    sample: Sample,
    *,
    ridge: float = 0.0,
    kernel: str = "ntk",
    depth: int = 1,
    w_std: float = 1.0,
    b_std: float = 0.0,
    time: float | None = None,
    plan: MemoryPlan | None = None,
    spectrum_rows: int = 2000,
    device: str = "cpu",
    progress: Callable[[str], Callable | None] | None = None,
    report: Callable[[str], None] | None = None,
) -> DemoResult:
    """Kernel regression with one-hot targets on a sample, timed stage by stage.

    Parameters
    ----------
    sample : Sample
    ridge : float, default=0.0
    kernel, depth, w_std, b_std
        Passed to :func:`ntkdemo.kernels.kernel_matrix`.
    time : float, optional
        If given, the infinite network after gradient-descent time ``time``
        (:mod:`ntkdemo.dynamics`, learning rate 1) replaces the converged one. The
        kernel is then in neural-tangents' scale (``reference_scale=True``), which
        fixes what a unit of time means. Cannot be combined with a ridge.
    plan : MemoryPlan, optional
        Default: :func:`ntkdemo.memory.plan_memory` for this sample and free memory.
        With ``plan.solver == "cg"`` (upper-triangle storage) only the default kernel and
        ``time=None`` are available.
    spectrum_rows : int, default=2000
        Largest Gram matrix whose eigenvalues are computed for the spectrum.
    device : {"cpu", "cuda"}, default="cpu"
        ``"cuda"`` computes kernel, solve and predictions on a GPU through CuPy
        (:mod:`ntkdemo.gpu`; default kernel at convergence only).
    progress : callable, optional
        ``progress(description)`` returns a wrapper for a block iterator, or None.
    report : callable, optional
        Receives progress lines of the iterative solver.

    Returns
    -------
    DemoResult
    """
    if time is not None and ridge:
        raise InvalidParameterError(
            f"ridge={ridge:g} and time={time:g} cannot be combined: the time is that of "
            "plain gradient descent; drop one of them"
        )
    if device not in ("cpu", "cuda"):
        raise InvalidParameterError(f"device must be 'cpu' or 'cuda', got {device!r}")
    n_train, n_features = sample.X_train.shape
    mission = is_default_kernel(kernel, depth, w_std, b_std) and time is None
    if device == "cuda" and not mission:
        raise InvalidParameterError(
            "--device cuda serves the default kernel at convergence only (no --kernel, "
            "--depth, --w-std, --b-std or --time)"
        )
    if device == "cpu":
        plan = plan or plan_memory(n_train, len(sample.y_test), n_features, sample.n_classes)
    if plan is not None and plan.solver == "cg" and not mission:
        raise MemoryPlanError(
            f"{n_train} training images need the iterative (cg) path, which serves the "
            "default kernel at convergence only (no --kernel/--depth/--w-std/--b-std/--time); "
            "use fewer images or the default kernel"
        )
    kernel_of = partial(
        kernel_matrix,
        kernel=kernel,
        depth=depth,
        w_std=w_std,
        b_std=b_std,
        reference_scale=time is not None,
    )
    targets = one_hot(sample.y_train, sample.n_classes)
    timings: dict[str, float] = {}

    start = perf_counter()
    shown = min(spectrum_rows, n_train)
    eigenvalues = np.linalg.eigvalsh(kernel_of(sample.X_train[:shown]))
    timings["spectrum"] = perf_counter() - start

    if device == "cuda":
        from .gpu import solve_and_predict_cuda

        start = perf_counter()
        solution, train_scores, test_scores = solve_and_predict_cuda(
            sample.X_train, targets, sample.X_test, ridge=ridge
        )
        timings["kernel+solve+predict on GPU"] = perf_counter() - start
        return _result(
            sample, solution, train_scores, test_scores, eigenvalues, shown, None, timings
        )
    assert plan is not None  # set above for the CPU

    if plan.solver == "cg":
        solution, train_scores = _solve_iteratively(
            sample.X_train, targets, ridge, timings, progress, report
        )
    else:
        start = perf_counter()
        K_train = kernel_of(sample.X_train, progress=_wrap(progress, "kernel blocks"))
        timings["kernel"] = perf_counter() - start
        start = perf_counter()
        if time is None:
            solution = solve(K_train, targets, ridge=ridge, overwrite_k=True)
            del K_train  # now the Cholesky factor
            # The outputs the network gives its training images are K A, computed afresh:
            # Y - (ridge + jitter) A is the same in exact arithmetic, but cancels when the
            # ridge is large and hides an ill-conditioned solve.
            train_scores = (
                ntk_times(sample.X_train, None, solution.coef)
                if mission
                else kernel_of(sample.X_train) @ solution.coef
            )
        else:
            solution = GradientDescentDynamics(K_train, targets).solution(time)
            train_scores = K_train @ solution.coef
            del K_train
        timings["solve"] = perf_counter() - start
    start = perf_counter()
    if mission:
        test_scores = ntk_times(
            sample.X_test,
            sample.X_train,
            solution.coef,
            progress=_wrap(progress, "prediction blocks"),
        )
    else:
        test_scores = kernel_of(sample.X_test, sample.X_train) @ solution.coef
    timings["predict"] = perf_counter() - start
    return _result(sample, solution, train_scores, test_scores, eigenvalues, shown, plan, timings)


def _solve_iteratively(
    X_train: np.ndarray,
    targets: np.ndarray,
    ridge: float,
    timings: dict[str, float],
    progress: Callable | None,
    report: Callable[[str], None] | None,
) -> tuple[KernelSolution, np.ndarray]:
    """The ``cg`` path of the memory plan: cluster, build the upper triangle, solve.

    Rows are ordered by k-means clusters (:func:`ntkdemo.iterative.cluster_order`) so
    that the preconditioner's blocks are contiguous; coefficients and training outputs
    are returned in the original order.
    """
    start = perf_counter()
    order, blocks = cluster_order(X_train, block_size=CG_CLUSTER_SIZE)
    timings["clusters"] = perf_counter() - start
    start = perf_counter()
    K_train = ntk_strips(
        X_train[order], strip_rows=CG_STRIP_ROWS, progress=_wrap(progress, "kernel strips")
    )
    timings["kernel"] = perf_counter() - start
    start = perf_counter()
    solution, fitted = solve_cg(
        K_train,
        targets[order],
        blocks,
        ridge=ridge,
        rank=CG_NYSTROM_RANK,
        report=report,
        progress=_wrap(progress, "CG iterations"),
    )
    del K_train
    coef, train_scores = np.empty_like(solution.coef), np.empty_like(fitted)
    coef[order], train_scores[order] = solution.coef, fitted
    timings["solve"] = perf_counter() - start
    return replace(solution, coef=coef), train_scores


def _result(
    sample: Sample,
    solution: KernelSolution,
    train_scores: np.ndarray,
    test_scores: np.ndarray,
    eigenvalues: np.ndarray,
    spectrum_rows: int,
    plan: MemoryPlan | None,
    timings: dict[str, float],
) -> DemoResult:
    """Evaluate the outputs and gather everything into a :class:`DemoResult`."""
    return DemoResult(
        test_scores=test_scores,
        train_scores=train_scores,
        solution=solution,
        test_report=evaluate(sample.y_test, test_scores.argmax(axis=1), sample.n_classes),
        train_report=evaluate(sample.y_train, train_scores.argmax(axis=1), sample.n_classes),
        eigenvalues=eigenvalues,
        spectrum_rows=spectrum_rows,
        plan=plan,
        timings=timings,
    )


def _wrap(progress, description: str):
    return progress(description) if progress else None

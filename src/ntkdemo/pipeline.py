"""The demo as one call: kernel, solve and predict on a :class:`~ntkdemo.data.Sample`.

Returns arrays and timings; printing and files are the command line's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter

import numpy as np

from .data import Sample
from .dynamics import GradientDescentDynamics
from .errors import InvalidParameterError
from .evaluate import ClassificationReport, evaluate
from .kernels import kernel_matrix
from .regression import KernelSolution, one_hot, predict, solve


@dataclass
class DemoResult:
    """Everything a run computed.

    Attributes
    ----------
    K_train : ndarray of shape (n_train, n_train)
        Training Gram matrix.
    test_scores, train_scores : ndarray of shape (n, n_classes)
        Kernel-regression outputs.
    solution : KernelSolution
    test_report, train_report : ClassificationReport
    timings : dict of str to float
        Seconds spent in each stage (``kernel``, ``solve``, ``predict``).
    """

    K_train: np.ndarray
    test_scores: np.ndarray
    train_scores: np.ndarray
    solution: KernelSolution
    test_report: ClassificationReport
    train_report: ClassificationReport
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
    progress=None,
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
    progress : callable, optional
        Wraps the kernel's block iterator (a progress bar).

    Returns
    -------
    DemoResult
    """
    if time is not None and ridge:
        raise InvalidParameterError(
            f"ridge={ridge:g} and time={time:g} cannot be combined: the time is that of "
            "plain gradient descent; drop one of them"
        )
    spec = dict(
        kernel=kernel,
        depth=depth,
        w_std=w_std,
        b_std=b_std,
        reference_scale=time is not None,
        progress=progress,
    )
    timings = {}
    start = perf_counter()
    K_train = kernel_matrix(sample.X_train, **spec)
    K_test = kernel_matrix(sample.X_test, sample.X_train, **spec)
    timings["kernel"] = perf_counter() - start

    start = perf_counter()
    targets = one_hot(sample.y_train, sample.n_classes)
    if time is None:
        solution = solve(K_train, targets, ridge=ridge)
    else:
        solution = GradientDescentDynamics(K_train, targets).solution(time)
    timings["solve"] = perf_counter() - start

    start = perf_counter()
    test_scores = predict(K_test, solution)
    train_scores = predict(K_train, solution)
    timings["predict"] = perf_counter() - start
    return DemoResult(
        K_train=K_train,
        test_scores=test_scores,
        train_scores=train_scores,
        solution=solution,
        test_report=evaluate(sample.y_test, test_scores.argmax(axis=1), sample.n_classes),
        train_report=evaluate(sample.y_train, train_scores.argmax(axis=1), sample.n_classes),
        timings=timings,
    )

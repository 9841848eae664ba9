"""The demo as one call: plan, fit, predict and evaluate on a :class:`~ntkdemo.data.Sample`.

Returns arrays and timings; printing and files are the command line's business. The
plan (:mod:`ntkdemo.plan`) picks the solver strategy (:mod:`ntkdemo.solvers`); the
inputs are normalised once, here, and every strategy trusts them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .data import Sample
from .errors import InvalidInputError
from .evaluate import ClassificationReport, evaluate
from .kernels import unit_rows
from .kernels.matrix import PairTally
from .plan import MemoryPlan, plan_memory
from .solvers.base import KernelSolution, Progress, Stopwatch, one_hot, wrap
from .solvers.features import AddedFeatures, ApproximationError, FittedFeatures
from .spec import KernelSpec
from .validation import check_matrix


@dataclass
class DemoResult:
    """Everything a run computed.

    Attributes
    ----------
    test_scores, train_scores : ndarray of shape (n, n_classes)
        Kernel-regression outputs; on the training images ``K A``.
    solution : KernelSolution
    test_report, train_report : ClassificationReport
    eigenvalues : ndarray
        Eigenvalues of the training Gram matrix (ascending), or of its leading
        ``spectrum_rows`` rows and columns when the sample is larger.
    spectrum_rows : int
        Size of the matrix behind ``eigenvalues``.
    plan : MemoryPlan
    kernel_pairs : int or None
        Image pairs whose kernel this process's folds computed (:class:`~ntkdemo.kernels.
        matrix.PairTally`), every stage together; None where the kernel is computed
        elsewhere (a Dask cluster's workers, a GPU).
    timings : dict of str to float
        Seconds spent in each stage (``spectrum``, ``kernel``, ``solve``, ``predict``;
        ``clusters`` on the ``cg`` path; ``features`` and ``error check`` with random
        features).
    approximation : ApproximationError or None
        With random features (``spec.features``): their error against the exact kernel,
        measured on a random sample; every number of the run is approximate. None for
        an exact kernel.
    """

    test_scores: np.ndarray
    train_scores: np.ndarray
    solution: KernelSolution
    test_report: ClassificationReport
    train_report: ClassificationReport
    eigenvalues: np.ndarray
    spectrum_rows: int
    plan: MemoryPlan
    kernel_pairs: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    approximation: ApproximationError | None = None

    @property
    def test_predictions(self) -> np.ndarray:
        """Predicted class of each test image (argmax of its outputs)."""
        return self.test_scores.argmax(axis=1)


def run_demo(
    sample: Sample,
    spec: KernelSpec | None = None,
    *,
    plan: MemoryPlan | None = None,
    device: str = "cpu",
    spectrum_rows: int | None = None,
    progress: Progress | None = None,
    report: Callable[[str], None] | None = None,
) -> DemoResult:
    """Kernel regression with one-hot targets on a sample, timed stage by stage.

    Parameters
    ----------
    sample : Sample
    spec : KernelSpec, optional
        Kernel, ridge and training time (default: the one-layer NTK at convergence).
    plan : MemoryPlan, optional
        Default: :func:`ntkdemo.plan.plan_memory` for this sample, ``spec`` and ``device``.
    device : {"cpu", "cuda"}, default="cpu"
        Where the default plan computes.
    spectrum_rows : int, optional
        Largest Gram matrix whose eigenvalues are computed for the spectrum (default
        :func:`spectrum_rows_for` the spec).
    progress : callable, optional
        ``progress(description)`` returns a wrapper for a block iterator, or None.
    report : callable, optional
        Receives progress lines of an iterative solver.

    Returns
    -------
    DemoResult
    """
    tally = PairTally()
    spec = replace(spec or KernelSpec(), tally=tally)
    _check_sample(sample)
    spec = spec.for_images(tuple(sample.image_shape))
    n_train, n_features = sample.X_train.shape
    plan = plan or plan_memory(
        n_train,
        len(sample.y_test),
        spec.row_width(n_features),
        sample.n_classes,
        spec=spec,
        device=device,
    )
    X_train, X_test = unit_rows(sample.X_train, "X_train"), unit_rows(sample.X_test, "X_test")
    watch = Stopwatch()
    added = None
    if spec.added is not None:  # the rows carry the added kernel's features
        with watch.stage("added features"):
            added = AddedFeatures.calibrated(spec, X_train)
            X_train = added.rows(X_train, wrap(progress, "added features (training)"))
            X_test = added.rows(X_test, wrap(progress, "added features (test)"))
    shown = min(spectrum_rows or spectrum_rows_for(spec), n_train)
    targets = one_hot(sample.y_train, sample.n_classes)
    fitted = plan.strategy.fit(
        X_train,
        targets,
        spec,
        progress=progress,
        report=report,
        spectrum_rows=shown if plan.strategy.gives_spectrum else 0,
    )
    eigenvalues = fitted.eigenvalues
    if eigenvalues is None:  # not gives_spectrum: the training Gram is not held whole
        with watch.stage("spectrum"):
            eigenvalues = np.linalg.eigvalsh(spec.matrix(X_train[:shown]))
    with watch.stage("predict"):
        test_scores = fitted.predict(X_test, progress=progress)
    approximation = None
    if isinstance(fitted, FittedFeatures):
        with watch.stage("error check"):
            approximation = fitted.approximation_error(X_train, X_test, targets)
    elif added is not None:
        with watch.stage("error check"):
            approximation = added.approximation_error(X_train, X_test, targets)
    return DemoResult(
        test_scores=test_scores,
        train_scores=fitted.train_scores,
        solution=fitted.solution,
        test_report=evaluate(sample.y_test, test_scores.argmax(axis=1), sample.n_classes),
        train_report=evaluate(sample.y_train, fitted.train_scores.argmax(axis=1), sample.n_classes),
        eigenvalues=eigenvalues,
        spectrum_rows=shown,
        plan=plan,
        kernel_pairs=tally.pairs if plan.strategy.in_process else None,
        timings={"spectrum": 0.0, **fitted.timings, **watch.timings},
        approximation=approximation,
    )


def kernel_pairs(
    spec: KernelSpec,
    n_train: int,
    n_test: int,
    spectrum_rows: int | None = None,
    *,
    spectrum_apart: bool = False,
) -> int:
    """Image pairs whose kernel :func:`run_demo` computes on the CPU, as its
    ``kernel_pairs`` counts them: the training Gram matrix once, ``n (n + 1) / 2`` (the
    Cholesky strategy takes its spectrum from a block of it and its training outputs
    from the factorised matrix), and the test rows, ``n_test n``; with
    ``spectrum_apart`` (a strategy that does not hold the Gram matrix whole) the
    spectrum's Gram matrix too. A kernel averaged over mirrors or shifts computes those
    of each of its terms, a term and its inverse together in a Gram matrix
    (:meth:`~ntkdemo.kernels.averaged.InputAverage.gram_pairs`). The cost of a
    convolutional run is this times a measured per-pair cost."""
    shown = min(n_train, spectrum_rows or spectrum_rows_for(spec))
    pairs = spec.average.gram_pairs(n_train) + spec.average.terms * n_test * n_train
    return pairs + (spec.average.gram_pairs(shown) if spectrum_apart else 0)


def spectrum_rows_for(spec: KernelSpec) -> int:
    """Rows of the Gram matrix whose spectrum a run shows: 2,000, or 200 for a
    convolutional kernel (whose entries cost milliseconds each)."""
    return 2000 if spec.architecture is None else 200


def _check_sample(sample: object) -> None:
    """Refuse what is no usable :class:`~ntkdemo.data.Sample`, naming the field at fault.

    Raises
    ------
    InvalidInputError
    """
    if not isinstance(sample, Sample):
        raise InvalidInputError(
            f"run_demo needs a Sample (ntkdemo.load_sample), got {type(sample).__name__}"
        )
    X_train = check_matrix("sample.X_train", sample.X_train)
    check_matrix("sample.X_test", sample.X_test, n_features=X_train.shape[1])
    for name, X, y in (
        ("train", sample.X_train, sample.y_train),
        ("test", sample.X_test, sample.y_test),
    ):
        labels = np.asarray(y)
        if labels.shape != (len(X),):
            raise InvalidInputError(
                f"sample.y_{name} must hold one label per image of sample.X_{name} "
                f"({len(X)}), got shape {labels.shape}"
            )
        if labels.size and (
            labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= sample.n_classes
        ):
            raise InvalidInputError(
                f"sample.y_{name} must hold whole numbers in 0..{sample.n_classes - 1} (one per "
                f"entry of sample.classes), got values from {labels.min()} to {labels.max()}"
            )

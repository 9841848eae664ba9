r"""What every solver strategy provides, and the one result they all return.

Kernel regression, the function an infinitely wide network trained on squared loss
converges to (Jacot et al. 2018), is

.. math:: f(x) = K(x, X)\,A, \qquad (K(X, X) + \lambda I)\,A = Y,

with one-hot targets ``Y``. A **strategy** decides how ``K(X, X)`` is stored and ``A``
found: whole in float64 and factorised by Cholesky (:mod:`.cholesky`), as its upper
triangle solved by conjugate gradients (:mod:`.cg`), on a GPU (:mod:`.cuda`). Each one
says which runs it serves (:meth:`Solver.serves`) and how many bytes it needs
(:meth:`Solver.estimate_bytes`), so that :mod:`ntkdemo.plan` can pick the first that
fits; :meth:`Solver.fit` returns a :class:`Fitted` model whose ``predict`` streams test
outputs. Inputs arrive as unit rows (:func:`ntkdemo.kernels.unit_rows`), normalised
once per run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import InvalidInputError
from ..kernels.ntk import ntk_times_of_unit_rows
from ..spec import KernelSpec
from ..validation import check_finite_result, check_matrix

Progress = Callable[[str], Callable[[Iterable], Iterable] | None]


@dataclass(frozen=True, kw_only=True)
class KernelSolution:
    """Dual coefficients and how they were obtained: the result of every strategy.

    Attributes
    ----------
    coef : ndarray of shape (n_train, n_outputs)
        :math:`A`, with :math:`K(x, X) A` the prediction.
    method : str
        How ``coef`` was computed (``"Cholesky"``, ``"eigendecomposition"``, ...).
    ridge : float, default=0.0
        Ridge :math:`\\lambda` asked for.
    jitter : float, default=0.0
        Extra diagonal added because ``K + ridge I`` was not numerically positive definite
        or was ill-conditioned (0 when none was needed).
    condition_number : float, default=nan
        Estimate of the condition number of the matrix solved (NaN: not estimated).
    message : str, default=""
        What a fallback did and why, or how an iteration ended.
    iterations : int, default=0
        Iterations of an iterative solver (0 for a direct one).
    """

    coef: np.ndarray
    method: str
    ridge: float = 0.0
    jitter: float = 0.0
    condition_number: float = float("nan")
    message: str = ""
    iterations: int = 0


class Fitted(Protocol):
    """A trained model: its solution, the outputs on its training images, the time spent."""

    solution: KernelSolution
    train_scores: np.ndarray
    timings: dict[str, float]
    eigenvalues: np.ndarray | None
    """Ascending eigenvalues of the leading block of ``K(X, X)`` the fit was asked for
    (``spectrum_rows``), where the strategy held that block; else None."""

    def predict(self, X_unit: np.ndarray, *, progress: Progress | None = None) -> np.ndarray:
        """Outputs :math:`K(x, X) A` of shape (n_test, n_outputs) for unit rows."""
        ...


class Solver(Protocol):
    """A strategy: which runs it serves, what memory it needs, how it fits."""

    @property
    def name(self) -> str:
        """``"cholesky"``, ``"cg"``, ``"cuda"``: what ``--solver`` calls it."""
        ...

    def serves(self, spec: KernelSpec) -> bool:
        """Whether it can compute this kernel and read-out."""
        ...

    def describe(self) -> str:
        """How it stores and solves, in a few words for the memory-plan line."""
        ...

    def kernel_bytes(self, n_train: int) -> int:
        """Bytes of the stored training kernel."""
        ...

    def kernel_label(self) -> str:
        """What the stored training kernel is, in a few words (``"float64 kernel"``)."""
        ...

    def available_bytes(self) -> int:
        """Free memory where it computes (host, device or cluster)."""
        ...

    def memory_label(self) -> str:
        """What bounds its memory, in a few words (``"free GPU memory"``)."""
        ...

    @property
    def in_process(self) -> bool:
        """Whether its memory is this process's (then what the process holds counts too)."""
        ...

    @property
    def gives_spectrum(self) -> bool:
        """Whether it holds the training Gram matrix whole in this process, so its fit
        gives the eigenvalues of a leading block (``spectrum_rows``) at no kernel cost;
        else the spectrum's block is computed apart."""
        ...

    def estimate_bytes(self, n_train: int, n_test: int, n_features: int, n_outputs: int) -> int:
        """Peak bytes of a run (kernel, inputs, workspaces), beyond what the process holds."""
        ...

    def fit(
        self,
        X_unit: np.ndarray,
        Y: np.ndarray,
        spec: KernelSpec,
        *,
        progress: Progress | None = None,
        report: Callable[[str], None] | None = None,
        spectrum_rows: int = 0,
    ) -> Fitted:
        """Train on unit rows ``X_unit`` and targets ``Y``; where the strategy holds the
        training Gram matrix whole, also the eigenvalues of its leading
        ``spectrum_rows`` block (so no pair's kernel is computed twice)."""
        ...


@dataclass
class Stopwatch:
    """Seconds spent per stage, in the order the stages ran."""

    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the ``with`` block and add it to stage ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


@dataclass
class FittedKernel:
    """A fitted kernel model: its training rows (unit), spec and solution; predictions
    are :math:`K(x, X) A`, computed in blocks from the rows."""

    X_unit: np.ndarray
    spec: KernelSpec
    solution: KernelSolution
    train_scores: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    eigenvalues: np.ndarray | None = None

    def predict(self, X_unit: np.ndarray, *, progress: Progress | None = None) -> np.ndarray:
        """Outputs :math:`K(x, X) A`; the one-layer formula streamed in row blocks."""
        return kernel_outputs(self.spec, X_unit, self.X_unit, self.solution.coef, progress)


def kernel_outputs(
    spec: KernelSpec,
    X_unit: np.ndarray,
    X_train_unit: np.ndarray | None,
    coef: np.ndarray,
    progress: Progress | None = None,
    description: str = "prediction blocks",
) -> np.ndarray:
    """:math:`K(X, X_{train}) A`, checked finite; ``X_train_unit=None`` for the training
    rows themselves (then the kernel computes half the blocks). ``progress`` is given
    ``description`` for the kernel's blocks."""
    blocks = wrap(progress, description)
    with np.errstate(over="ignore", invalid="ignore"):
        if spec.is_one_layer_formula:
            spec.count_pairs(len(X_unit), None if X_train_unit is None else len(X_train_unit))
            outputs = ntk_times_of_unit_rows(X_unit, X_train_unit, coef, progress=blocks)
        else:
            outputs = spec.matrix(X_unit, X_train_unit, progress=blocks) @ coef
    return check_finite_result("the outputs", outputs)


def host_available_bytes() -> int:
    """Free memory of this machine (psutil), for the strategies that compute on the CPU."""
    import psutil

    return int(psutil.virtual_memory().available)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """One-hot targets: row i has a 1 in column ``labels[i]``.

    Returns
    -------
    ndarray of shape (n_samples, n_classes), float64

    Raises
    ------
    InvalidInputError
        If a label is not a whole number in ``0 .. n_classes - 1`` (a negative label
        would otherwise index the last class).
    """
    labels = np.asarray(labels)
    if labels.size and (
        not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= n_classes
    ):
        raise InvalidInputError(
            f"labels must be whole numbers in 0..{n_classes - 1}, got values from "
            f"{labels.min()} to {labels.max()}; encode the classes as 0..n_classes-1"
        )
    targets = np.zeros((len(labels), n_classes))
    targets[np.arange(len(labels)), labels] = 1.0
    return targets


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
        If ``K_test_train`` is not a finite matrix with one column per training row, or
        the outputs overflow.
    """
    matrix = check_matrix("K_test_train", K_test_train, n_features=len(solution.coef))
    with np.errstate(over="ignore", invalid="ignore"):
        return check_finite_result("the predictions", matrix @ solution.coef)


def wrap(progress: Progress | None, description: str) -> Callable[[Iterable], Iterable] | None:
    """The iterator wrapper ``progress`` gives for ``description``, if any."""
    return progress(description) if progress else None

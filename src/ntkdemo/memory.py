"""The memory plan of a run: which solver and storage fit, decided before any allocation.

A run holds the training kernel ``K(X, X)`` (``n^2`` entries) and small workspaces.
Two strategies:

* ``cholesky`` -- ``K`` in float64, factorised in place (``8 n^2`` bytes);
* ``cg`` -- only the upper triangle of ``K``, in float64 (about ``4 n^2`` bytes, what
  the whole matrix takes in float32; :class:`ntkdemo.packed.SymmetricStrips`), solved
  by preconditioned conjugate gradients (:mod:`ntkdemo.iterative`). Every product is
  exact to float64 rounding, so the answer has float64 quality (relative residual
  below ``1e-6``).

The plan picks ``cholesky`` when it fits the budget, else ``cg``; if neither fits it
raises :class:`~ntkdemo.errors.MemoryPlanError` naming the largest training set that
would.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidParameterError, MemoryPlanError
from .packed import SymmetricStrips
from .units import format_bytes

# Sizes the cg path runs with (ntkdemo.pipeline) and that its estimate assumes.
CG_CLUSTER_SIZE = 1500  # rows per k-means cluster, the preconditioner's blocks
CG_NYSTROM_RANK = 1500  # landmark columns of the preconditioner's low-rank part
CG_STRIP_ROWS = 256  # rows per strip of the stored upper triangle


@dataclass(frozen=True)
class MemoryPlan:
    """How a run will store and solve its kernel.

    Attributes
    ----------
    solver : {"cholesky", "cg"}
    n_train, n_test : int
    kernel_bytes : int
        Bytes of the training kernel.
    total_bytes : int
        Estimated peak bytes of the run (kernel, inputs, workspaces).
    budget_bytes : int
        The limit the plan had to respect.
    """

    solver: str
    n_train: int
    n_test: int
    kernel_bytes: int
    total_bytes: int
    budget_bytes: int

    def describe(self) -> str:
        """One line for the console."""
        how = (
            "float64 kernel, Cholesky in place"
            if self.solver == "cholesky"
            else "upper triangle of the float64 kernel, preconditioned conjugate gradients"
        )
        return (
            f"memory plan: {how}; kernel {format_bytes(self.kernel_bytes)}, peak about "
            f"{format_bytes(self.total_bytes)} of {format_bytes(self.budget_bytes)} allowed"
        )


def kernel_bytes(solver: str, n_train: int) -> int:
    """Bytes of the stored training kernel: the whole float64 matrix for ``cholesky``,
    its upper-triangle strips for ``cg``."""
    if solver == "cholesky":
        return 8 * n_train**2
    return 8 * SymmetricStrips.stored_entries(n_train, CG_STRIP_ROWS)


def estimate_bytes(
    solver: str,
    n_train: int,
    n_test: int,
    n_features: int,
    n_outputs: int,
    *,
    block_rows: int = 1024,
    rank: int = CG_NYSTROM_RANK,
    cluster_size: int = CG_CLUSTER_SIZE,
) -> int:
    r"""Estimated peak bytes of a run with ``solver``.

    Kernel (:func:`kernel_bytes`), inputs and their unit-norm copies (float64) and
    the iteration vectors (ten, and two per thread for the partial sums of a product);
    for ``cholesky`` a block of ``block_rows`` streamed kernel rows; for ``cg`` (whose
    peak is during the solve) the preconditioner: the Nystrom factor :math:`F`
    (``rank`` columns) and the inverted cluster blocks, whose squared sizes sum to
    about :math:`1.2\, n \cdot` ``cluster_size`` for k-means clusters (measured on
    Fashion-MNIST; 1.25 is used), or, while the kernel is built, a reordered copy of
    the training inputs, whichever is larger.
    """
    inputs = 2 * 8 * (n_train + n_test) * n_features
    vectors = 8 * (10 + SymmetricStrips.partial_outputs()) * n_train * n_outputs
    if solver == "cholesky":
        block = 8 * min(block_rows, max(n_train, n_test)) * n_train
        return kernel_bytes(solver, n_train) + inputs + block + vectors
    rank = min(rank, n_train)
    blocks = int(8 * 1.25 * n_train * min(cluster_size, n_train))
    preconditioner = 8 * n_train * rank + 8 * rank * rank + blocks
    reordered = 8 * n_train * n_features
    return kernel_bytes(solver, n_train) + inputs + vectors + max(preconditioner, reordered)


def plan_memory(
    n_train: int,
    n_test: int,
    n_features: int,
    n_outputs: int,
    *,
    max_memory: int | None = None,
    available: int | None = None,
    solver: str = "auto",
    process_bytes: int | None = None,
) -> MemoryPlan:
    """Choose the solver and storage for a run, before anything large is allocated.

    Parameters
    ----------
    n_train, n_test, n_features, n_outputs : int
    max_memory : int, optional
        Cap in bytes (``--max-memory``).
    available : int, optional
        Free memory in bytes; default ``psutil.virtual_memory().available``. The plan
        keeps 10% of it in reserve.
    solver : {"auto", "cholesky", "cg"}
        ``auto`` takes ``cholesky`` when it fits, else ``cg``.
    process_bytes : int, optional
        Memory the process holds already (interpreter, libraries, the dataset's index);
        default: its resident set size now. It counts against ``max_memory``, which thus
        bounds the whole process, and is part of ``total_bytes``.

    Raises
    ------
    MemoryPlanError
        If the chosen (or every) solver needs more than the budget.
    """
    if solver not in ("auto", "cholesky", "cg"):
        raise InvalidParameterError(f"solver must be 'auto', 'cholesky' or 'cg', got {solver!r}")
    import psutil

    if available is None:
        available = int(psutil.virtual_memory().available)
    if process_bytes is None:
        process_bytes = int(psutil.Process().memory_info().rss)
    budget = int(0.9 * available) + process_bytes
    if max_memory is not None:
        budget = min(budget, int(max_memory))
    candidates = ["cholesky", "cg"] if solver == "auto" else [solver]
    for candidate in candidates:
        total = process_bytes + estimate_bytes(candidate, n_train, n_test, n_features, n_outputs)
        if total <= budget:
            kernel = kernel_bytes(candidate, n_train)
            return MemoryPlan(candidate, n_train, n_test, kernel, total, budget)
    cheapest = candidates[-1]
    needed = estimate_bytes(cheapest, n_train, n_test, n_features, n_outputs)
    room = max(budget - process_bytes, 0)
    largest = largest_training_set(room, n_test, n_features, n_outputs, cheapest)
    images = 2 * 8 * (n_train + n_test) * n_features
    kernel = kernel_bytes(cheapest, n_train)
    what = "float64 kernel" if cheapest == "cholesky" else "upper triangle of the kernel"
    cause = (
        f"{what} {format_bytes(kernel)}"
        if kernel >= images
        else f"the images themselves {format_bytes(images)}: {n_features} values each"
    )
    advice = (
        f"the largest training set that fits is {largest} images"
        if kernel >= images or largest > 0
        else "use smaller images or fewer test images"
    )
    raise MemoryPlanError(
        f"{n_train} training images need about {format_bytes(needed)} ({cause}) on top of "
        f"the {format_bytes(process_bytes)} this process holds, more than the "
        f"{format_bytes(budget)} allowed (free memory or --max-memory); {advice}"
    )


def largest_training_set(
    budget: int, n_test: int, n_features: int, n_outputs: int, solver: str
) -> int:
    """Largest ``n_train`` whose estimate fits ``budget`` (bisection; 0 if none)."""
    low, high = 0, 1
    while estimate_bytes(solver, high, n_test, n_features, n_outputs) <= budget:
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        if estimate_bytes(solver, middle, n_test, n_features, n_outputs) <= budget:
            low = middle
        else:
            high = middle
    return low

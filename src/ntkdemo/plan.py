"""The plan of a run: which solver strategy fits, decided before anything large exists.

Strategies are tried in order of preference for the device (:data:`PREFERENCES`): on
the CPU the whole float64 kernel with Cholesky (a direct solve) when it fits, else its
upper triangle with conjugate gradients (``cg``, half the memory), else that triangle
in float32 refined against the float64 kernel (``cg32``, a quarter); on a GPU the
``cuda`` strategy. A strategy is skipped when it does not serve the kernel asked for (only
``cholesky`` serves finite training times; ``cuda`` does not average over mirrors; every
strategy serves every exact kernel at convergence). A kernel approximated by random
features (``--features``) is served by the ``features`` strategy alone
(:func:`feature_strategies`): the features kept, else computed twice. Each strategy estimates
its own bytes (``estimate_bytes``); the plan adds what the process already holds, so
that ``--max-memory`` bounds the whole process, and compares with the budget: 90% of
the free memory, or the cap. If nothing fits it raises
:class:`~ntkdemo.errors.MemoryPlanError` naming the cause and the largest training set
that would fit. Adding a strategy is one module in :mod:`ntkdemo.solvers` and one entry
here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .errors import InvalidParameterError, MemoryPlanError
from .solvers import CGOptions, CGSolver, CholeskySolver, CudaSolver
from .solvers.base import Solver
from .solvers.features import FeatureSolver
from .spec import KernelSpec
from .units import format_bytes

PREFERENCES: dict[str, tuple[Solver, ...]] = {
    "cpu": (
        CholeskySolver(),
        CGSolver(),
        # a quarter of the float64 matrix; a lighter preconditioner keeps 60,000 images
        # within 10 GB (a 16 GB laptop)
        CGSolver(
            name="cg32",
            options=CGOptions(storage=np.float32, rank=1500, cluster_size=1000),
        ),
    ),
    "cuda": (CudaSolver(),),
}


@dataclass(frozen=True)
class MemoryPlan:
    """How a run will store and solve its kernel.

    Attributes
    ----------
    strategy : Solver
        The chosen strategy (:mod:`ntkdemo.solvers`).
    n_train, n_test : int
    kernel_bytes : int
        Bytes of the stored training kernel.
    total_bytes : int
        Estimated peak bytes of the process (on the GPU: of GPU memory).
    budget_bytes : int
        The limit the plan had to respect.
    process_bytes : int
        What the process held when the plan was made (part of ``total_bytes``).
    """

    strategy: Solver
    n_train: int
    n_test: int
    kernel_bytes: int
    total_bytes: int
    budget_bytes: int
    process_bytes: int = 0

    @property
    def solver(self) -> str:
        """The strategy's name: ``"cholesky"``, ``"cg"`` or ``"cuda"``."""
        return self.strategy.name

    def describe(self) -> str:
        """One line for the console."""
        return (
            f"memory plan: {self.strategy.describe()}; kernel {format_bytes(self.kernel_bytes)}, "
            f"peak about {format_bytes(self.total_bytes)} of {format_bytes(self.budget_bytes)} "
            "allowed"
        )


def feature_strategies(spec: KernelSpec, device: str = "cpu") -> tuple[Solver, ...]:
    """The strategies of a spec with random features (on the CPU): its features kept, or
    computed twice so that they are never held whole (out of core); none otherwise."""
    if spec.features is None or device != "cpu":
        return ()
    return (FeatureSolver(spec.feature_columns), FeatureSolver(spec.feature_columns, keep=False))


def strategy_named(name: str, device: str = "cpu") -> Solver:
    """The strategy of ``device`` called ``name``."""
    for strategy in PREFERENCES.get(device, ()):
        if strategy.name == name:
            return strategy
    names = [s.name for s in PREFERENCES.get(device, ())]
    raise InvalidParameterError(
        f"solver must be 'auto' or one of {names} on {device}, got {name!r}"
    )


def estimate_bytes(solver: str, n_train: int, n_test: int, n_features: int, n_outputs: int) -> int:
    """Estimated peak bytes of strategy ``solver`` (beyond what the process holds)."""
    return strategy_named(solver).estimate_bytes(n_train, n_test, n_features, n_outputs)


def plan_memory(
    n_train: int,
    n_test: int,
    n_features: int,
    n_outputs: int,
    *,
    spec: KernelSpec | None = None,
    device: str = "cpu",
    max_memory: int | None = None,
    available: int | None = None,
    solver: str = "auto",
    process_bytes: int | None = None,
    later_bytes: int = 0,
    strategies: Sequence[Solver] | None = None,
) -> MemoryPlan:
    """Choose the strategy for a run, before anything large is allocated.

    Parameters
    ----------
    n_train, n_test, n_features, n_outputs : int
    spec : KernelSpec, optional
        The kernel; strategies that do not serve it are skipped. Default: the
        one-layer formula at convergence.
    device : {"cpu", "cuda"}, default="cpu"
    max_memory : int, optional
        Cap in bytes (``--max-memory``), for the whole process (CPU).
    available : int, optional
        Free memory in bytes; default: ``psutil.virtual_memory().available`` on the CPU,
        the GPU's free memory on ``cuda``. The plan keeps 10% of it in reserve.
    solver : str, default="auto"
        ``auto`` takes the first strategy of the device that serves the spec and fits;
        a name forces that strategy.
    process_bytes : int, optional
        Memory the process holds already (interpreter, libraries, the dataset's index);
        default: its resident set size now where the strategy computes in this process
        (0 on a GPU or a cluster). It counts against the budget and is part of
        ``total_bytes``.
    later_bytes : int, default=0
        What the run will load besides the strategy's arrays after the plan is made
        (libraries imported late so that a refusal stays quick, figures); added to
        ``process_bytes`` where the strategy computes in this process.
    strategies : sequence of Solver, optional
        The strategies to choose from instead of the device's (e.g. a
        :class:`~ntkdemo.solvers.dask_cg.DaskSolver` bound to a cluster).

    Raises
    ------
    InvalidParameterError
        If the forced strategy does not serve the spec.
    MemoryPlanError
        If no strategy fits.
    """
    import psutil

    spec = spec or KernelSpec()
    if device not in PREFERENCES:
        raise InvalidParameterError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if strategies is not None:
        candidates = [s for s in strategies if s.serves(spec)] or list(strategies[:1])
    elif solver == "auto":
        candidates = [
            *feature_strategies(spec, device),
            *(s for s in PREFERENCES[device] if s.serves(spec)),
        ] or list(PREFERENCES[device][:1])
    else:
        candidates = [strategy_named(solver, device)]
    if not candidates or not candidates[0].serves(spec):
        name = candidates[0].name if candidates else device
        elsewhere = (
            "use --solver cholesky on the CPU"
            if strategies is None
            else (f"run without --engine {name} (--solver cholesky on the CPU)")
        )
        if candidates and candidates[0].serves(replace(spec, time=None)):
            raise InvalidParameterError(
                f"the {name} solver serves kernels at convergence only; drop --time, or {elsewhere}"
            )
        raise InvalidParameterError(
            f"the {name} solver does not serve the {spec.describe()}; {elsewhere}"
        )
    local = candidates[0].in_process
    if max_memory is not None and not local:
        raise InvalidParameterError(
            f"--max-memory bounds a run that computes in this process, but the "
            f"{candidates[0].name} strategy is bounded by its {candidates[0].memory_label()}; "
            "drop --max-memory"
        )
    if available is None:
        available = candidates[0].available_bytes()
    if available <= 0 and not local:
        raise MemoryPlanError(
            f"the {candidates[0].name} strategy has no memory to use "
            f"({candidates[0].memory_label()}: 0 B): no workers, or a memory limit of 0; "
            "start workers with memory, or run without it"
        )
    if process_bytes is None:
        process_bytes = int(psutil.Process().memory_info().rss) + later_bytes if local else 0
    budget = int(0.9 * available) + process_bytes
    if max_memory is not None and local:
        budget = min(budget, int(max_memory))
    for candidate in candidates:
        total = process_bytes + candidate.estimate_bytes(n_train, n_test, n_features, n_outputs)
        if total <= budget:
            kernel = candidate.kernel_bytes(n_train)
            return MemoryPlan(candidate, n_train, n_test, kernel, total, budget, process_bytes)
    raise _refusal(candidates[-1], n_train, n_test, n_features, n_outputs, budget, process_bytes)


def _refusal(
    strategy: Solver,
    n_train: int,
    n_test: int,
    n_features: int,
    n_outputs: int,
    budget: int,
    process_bytes: int,
) -> MemoryPlanError:
    """The error naming what does not fit, why, and the largest training set that would."""
    needed = strategy.estimate_bytes(n_train, n_test, n_features, n_outputs)
    room = max(budget - process_bytes, 0)
    largest = _largest(strategy, room, n_test, n_features, n_outputs)
    images = 2 * 8 * (n_train + n_test) * n_features
    kernel = strategy.kernel_bytes(n_train)
    cause = (
        f"{strategy.kernel_label()}: {format_bytes(kernel)}"
        if kernel >= images
        else f"the images themselves: {format_bytes(images)}, {n_features} values each"
    )
    if process_bytes and process_bytes >= budget:
        advice = "this process alone holds that much; free memory or raise --max-memory"
    elif kernel >= images or largest > 0:
        advice = f"the largest training set that fits is {largest} images"
    else:
        advice = "use smaller images or fewer test images"
    held = (
        f" on top of the {format_bytes(process_bytes)} this process holds or will load"
        if process_bytes
        else ""
    )
    return MemoryPlanError(
        f"{n_train} training images need about {format_bytes(needed)} ({cause}){held}, more "
        f"than the {format_bytes(budget)} allowed ({strategy.memory_label()}); {advice}"
    )


def largest_training_set(
    budget: int, n_test: int, n_features: int, n_outputs: int, solver: str
) -> int:
    """Largest ``n_train`` whose estimate for CPU strategy ``solver`` fits ``budget``."""
    return _largest(strategy_named(solver), budget, n_test, n_features, n_outputs)


def _largest(strategy: Solver, budget: int, n_test: int, n_features: int, n_outputs: int) -> int:
    """Largest ``n_train`` whose estimate for ``strategy`` fits ``budget`` (bisection; 0
    if none)."""
    low, high = 0, 1
    while strategy.estimate_bytes(high, n_test, n_features, n_outputs) <= budget:
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        if strategy.estimate_bytes(middle, n_test, n_features, n_outputs) <= budget:
            low = middle
        else:
            high = middle
    return low

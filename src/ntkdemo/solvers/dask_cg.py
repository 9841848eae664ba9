r"""Strategy ``dask``: the upper triangle spread over the workers of a Dask cluster.

Past one machine the float64 upper triangle of ``K`` no longer fits (60,000 images take
14.5 GB; a million would take 4 TB). This strategy keeps the ``cg`` strategy's
mathematics (:mod:`.cg`: exact float64 products, preconditioned conjugate gradients to a
relative residual of :math:`10^{-6}`) and spreads the storage over a ``distributed``
cluster, a :class:`~distributed.LocalCluster` on one machine or any running scheduler:

* each worker builds its own contiguous range of strips (parts of about equal size):
  its task carries the rows it needs, ``X[first:]`` (``n x d`` at most), so the
  ``n x n`` matrix never crosses the network and a lost part can be rebuilt anywhere;
* a product :math:`K V` is one task per part (its strips' two-use contribution,
  :math:`n \times c` floats back), summed on the client: CG itself runs on the client;
* the preconditioner (:mod:`.preconditioners`: Nystrom columns and the cluster blocks)
  reads kernel entries computed on the client from ``X``, where they are cheapest (a
  few thousand columns, never the strips);
* predictions split the training rows and their coefficients into equal shares, one
  task per worker (which carries them, so a lost share is rebuilt like a part); each
  block of test rows goes to every share and the partial outputs are summed. The
  parts are balanced by stored entries, not rows (the first strips are the longest:
  of two parts the second holds 71% of the rows), so they would share this work
  unevenly.

A worker lost mid-solve loses its part; the scheduler reruns the part's task on
another worker (or the restarted one) and the product waits for it, so the solve goes
on. A part that cannot be rebuilt (no worker left) ends the run with one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import InvalidParameterError, NTKDemoError
from ..kernels.ntk import ntk_of_unit_rows
from ..spec import KernelSpec
from ..validation import check_finite_result
from .base import KernelSolution, Progress, Stopwatch, kernel_outputs, wrap
from .cg import DEFAULT_OPTIONS, CGOptions, preconditioned_solve
from .preconditioners import cluster_order, in_original_order
from .strips import SymmetricStrips, kernel_strips_of_unit_rows, strip_sizes


class ClusterLostError(NTKDemoError, RuntimeError):
    """The cluster lost workers and cannot hold the kernel any more."""


@contextlib.contextmanager
def connect(
    address: str | None = None, *, n_workers: int | None = None, timeout: float = 10.0
) -> Iterator[Any]:
    """A ``distributed.Client``: to the scheduler at ``address``, or to a new local cluster.

    The local cluster has ``n_workers`` processes (default: one per core) of one thread
    each, listens on 127.0.0.1 only, starts no dashboard, never spills a part to disk and
    keeps its workers' log lines below CRITICAL off the terminal (a worker that outlives the
    scheduler as the run ends logs ERRORs; real failures reach the client as errors).
    ``tls://`` addresses use distributed's own security settings
    (``distributed.comm.tls.*`` in the Dask configuration). Both are closed on exit.

    Raises
    ------
    InvalidParameterError
        If ``distributed`` is missing, or the scheduler cannot be reached within
        ``timeout`` seconds.
    """
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise InvalidParameterError(
            '--engine dask needs dask.distributed: pip install "ntkdemo[dask]"'
        ) from None
    logging.getLogger("distributed").setLevel(logging.ERROR)
    if address is not None:
        _probe_scheduler(address, timeout)
        try:
            client = Client(address, timeout=f"{timeout}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise InvalidParameterError(
                f"cannot reach the Dask scheduler at {address!r} within {timeout:g} s "
                f"({type(exc).__name__}); start one (dask scheduler) or leave out "
                "--scheduler for a local cluster"
            ) from None
        with client:
            yield client
        return
    workers = n_workers or os.cpu_count() or 1
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    # A part is most of a worker's memory and is needed by every product: spilling it to
    # disk (distributed's default above 60% of the limit) would pickle gigabytes per task.
    dask.config.set({"distributed.worker.memory.target": False})
    dask.config.set({"distributed.worker.memory.spill": False})
    with _workers_ignoring_interrupts():
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
            env={"NUMBA_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads},
        )
    with cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _workers_ignoring_interrupts() -> Iterator[None]:
    """Start processes that ignore Ctrl-C: Python keeps SIGINT ignored in a process
    started while it is ignored, so an interrupt at the terminal reaches the run alone
    (one line; it closes the workers) instead of each worker printing its traceback.

    A Ctrl-C pressed in the second or two the workers take to start is not seen; the
    next one is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _probe_scheduler(address: str, timeout: float) -> None:
    """Ask ``address`` who it is, within ``timeout`` seconds in all.

    ``distributed.Client`` bounds the connection but not the handshake after it, so a
    port that accepts and never answers would hold the run forever; and a service that
    is no Dask scheduler answers in ways the client reports confusingly. One ``identity``
    call under a hard deadline tells both apart from a scheduler.

    Raises
    ------
    InvalidParameterError
        If no answer comes in time, the answer is not a scheduler's, or a ``tls://``
        address has no TLS settings.
    """
    import asyncio

    import distributed.comm
    from distributed.security import Security

    async def identity() -> dict:
        arguments = Security().get_connection_args("client")
        comm = await distributed.comm.connect(address, timeout=f"{timeout}s", **arguments)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            await comm.close()

    try:
        reply = asyncio.run(asyncio.wait_for(identity(), timeout))
    except (TimeoutError, asyncio.TimeoutError, OSError) as exc:
        raise InvalidParameterError(
            f"cannot reach the Dask scheduler at {address!r} within {timeout:g} s "
            f"({type(exc).__name__}); start one (dask scheduler) or leave out --scheduler "
            "for a local cluster"
        ) from None
    except (TypeError, ValueError) as exc:
        tls = address.startswith("tls://")
        raise InvalidParameterError(
            f"cannot talk to {address!r} ({type(exc).__name__}: {exc}); "
            + (
                "a tls:// scheduler needs TLS settings: set distributed.comm.tls.ca-file and "
                "distributed.comm.tls.client.cert/key in the Dask configuration"
                if tls
                else "is it a Dask scheduler's address?"
            )
        ) from None
    except Exception:  # a service speaking another protocol
        reply = None
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        raise InvalidParameterError(
            f"the service at {address!r} is not a Dask scheduler (it does not answer in "
            "Dask's protocol); give --scheduler the scheduler's address, e.g. tcp://HOST:8786"
        )


@dataclass
class StripPart:
    """What one worker holds: strips of the trailing matrix ``K[first:, first:]`` and its
    own training rows ``X[first:stop]``."""

    first: int
    strips: SymmetricStrips
    X_rows: np.ndarray


def _build_part(
    X_tail: np.ndarray, first: int, n_strips: int, strip_rows: int, spec: KernelSpec
) -> StripPart:
    """On a worker: the first ``n_strips`` strips of ``spec``'s kernel of ``X_tail =
    X[first:]``.

    The task carries its own rows, so the scheduler can rerun it anywhere if the worker
    holding its result is lost.
    """
    strips = kernel_strips_of_unit_rows(X_tail, spec, strip_rows=strip_rows, strips=range(n_strips))
    stop = min(n_strips * strip_rows, len(X_tail))
    return StripPart(first, strips, np.ascontiguousarray(X_tail[:stop]))


def _part_times(part: StripPart, V: np.ndarray) -> np.ndarray:
    """On a worker: the part's contribution to ``(K @ V)[first:]``."""
    return part.strips @ V[part.first :]


def _prediction_share(X_rows: np.ndarray, coef_rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """On a worker: training rows and their coefficients, held for the predictions (the
    task carries them, so the scheduler can rerun it if the worker holding it is lost)."""
    return X_rows, coef_rows


def _share_outputs(
    share: tuple[np.ndarray, ...], X_test: np.ndarray, spec: KernelSpec
) -> np.ndarray:
    """On a worker: :math:`K(x, X_{share}) A_{share}`, the share's part of the outputs."""
    X_rows, coef_rows = share
    return kernel_outputs(spec, X_test, X_rows, coef_rows)


def balanced_ranges(n: int, strip_rows: int, n_parts: int) -> list[range]:
    """Split the strips of order ``n`` into at most ``n_parts`` contiguous ranges of about
    equal stored entries (the first strips are the longest)."""
    sizes = strip_sizes(n, strip_rows)
    bounds = np.searchsorted(np.cumsum(sizes), np.linspace(0, sizes.sum(), n_parts + 1)[1:-1])
    edges = sorted({0, *(int(b) + 1 for b in bounds), len(sizes)})
    return [range(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


class ClusterKernel:
    """``spec``'s kernel of unit rows ``X_unit`` held as strip parts on the workers of
    ``client``.

    ``K @ V`` is computed by the workers; ``take`` (for the preconditioner) on the client
    from ``X_unit``. ``bytes_per_product`` counts what one product sends and receives.
    """

    def __init__(
        self,
        client: Any,
        X_unit: np.ndarray,
        strip_rows: int,
        spec: KernelSpec,
        progress: Callable | None = None,
    ) -> None:
        from distributed import as_completed

        self.client, self.X_unit, self.spec = client, X_unit, spec
        self.n = len(X_unit)
        workers = sorted(client.scheduler_info()["workers"])
        self.ranges = balanced_ranges(self.n, strip_rows, len(workers))
        self.firsts = [r.start * strip_rows for r in self.ranges]
        self.parts = [
            client.submit(
                _build_part,
                X_unit[first:],
                first,
                len(strips),
                strip_rows,
                spec,
                workers=[workers[i % len(workers)]],
                allow_other_workers=True,
                pure=False,
            )
            for i, (first, strips) in enumerate(zip(self.firsts, self.ranges))
        ]
        done = as_completed(self.parts)
        for future in progress(done) if progress else done:
            _raise_if_lost(future)

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.n

    def bytes_per_product(self, n_columns: int) -> int:
        """Bytes a product moves: ``V`` to each part and its partial result back."""
        return 2 * 8 * self.n * n_columns * len(self.parts)

    def __matmul__(self, V: np.ndarray) -> np.ndarray:
        V = np.asarray(V, dtype=np.float64)
        futures = [self.client.submit(_part_times, part, V, pure=False) for part in self.parts]
        result = np.zeros_like(V)
        for first, partial in zip(self.firsts, _gather(self.client, futures)):
            result[first:] += partial
        return result

    def take(self, rows: np.ndarray, cols: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``K[rows][:, cols]`` computed from the unit rows (equal to the strips' entries
        up to the rounding of the products), written into ``out`` where given."""
        if self.spec.is_one_layer_formula:
            return ntk_of_unit_rows(self.X_unit[rows], self.X_unit[cols], out=out)
        block = self.spec.matrix(self.X_unit[rows], self.X_unit[cols])
        if out is None:
            return block
        out[...] = block
        return out


WORKERLESS_SECONDS = 60.0
"""How long results are waited for while the cluster has no worker at all: long enough
for a restarted worker (or a nanny's new one) to join, short enough not to hang."""


def _gather(client: Any, futures: list, workerless_seconds: float = WORKERLESS_SECONDS) -> list:
    """Results of ``futures``; a part that can no longer be computed, or a cluster left
    without workers for ``workerless_seconds``, is one clear error."""
    import asyncio

    from distributed import wait

    alone_since = None
    try:
        while True:
            try:
                wait(futures, timeout=2.0)
                return client.gather(futures)
            except (TimeoutError, asyncio.TimeoutError):  # distinct before Python 3.11
                if client.scheduler_info().get("workers"):
                    alone_since = None
                    continue
                alone_since = alone_since or time.monotonic()
                if time.monotonic() - alone_since > workerless_seconds:
                    raise ClusterLostError(
                        f"the Dask cluster has had no workers for {workerless_seconds:g} s "
                        "while results were awaited; start workers (dask worker ADDRESS) "
                        "and run again"
                    ) from None
    except ClusterLostError:
        raise
    except Exception as exc:  # KilledWorker, CancelledError, CommClosedError, ...
        raise ClusterLostError(
            f"the Dask cluster lost the workers holding the kernel and could not rebuild "
            f"its parts ({type(exc).__name__}); add workers or memory, or use fewer images"
        ) from None


def _raise_if_lost(future: Any) -> None:
    if future.status == "error":
        _gather(future.client, [future])


@dataclass
class ClusterFitted:
    """A model fitted on a cluster: predictions run where the training rows are."""

    kernel: ClusterKernel
    coef_ordered: np.ndarray
    order: np.ndarray
    solution: KernelSolution
    train_scores: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    block_rows: int = 1024
    eigenvalues: np.ndarray | None = None  # the Gram's strips live on the workers

    def predict(self, X_unit: np.ndarray, *, progress: Progress | None = None) -> np.ndarray:
        """Outputs :math:`K(x, X) A`: the training rows in equal shares, one per worker,
        and each block of test rows sent to every share (module docstring)."""
        client = self.kernel.client
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise ClusterLostError(
                "the Dask cluster has no workers left to compute the predictions; add workers"
            )
        bounds = np.linspace(0, self.kernel.n, len(workers) + 1).astype(int)
        shares = [
            client.submit(
                _prediction_share,
                self.kernel.X_unit[a:b],
                self.coef_ordered[a:b],
                workers=[worker],
                allow_other_workers=True,
                pure=False,
            )
            for worker, a, b in zip(workers, bounds[:-1], bounds[1:])
            if b > a
        ]
        scores = np.empty((len(X_unit), self.coef_ordered.shape[1]))
        starts = range(0, len(X_unit), self.block_rows)
        wrapper = wrap(progress, "prediction blocks")
        for start in wrapper(starts) if wrapper else starts:
            block = X_unit[start : start + self.block_rows]
            futures = [
                client.submit(_share_outputs, share, block, self.kernel.spec, pure=False)
                for share in shares
            ]
            scores[start : start + len(block)] = sum(_gather(client, futures))
        return check_finite_result("the predictions", scores)


@dataclass(frozen=True)
class DaskSolver:
    """Strategy: the ``cg`` strategy with its strips spread over a Dask cluster.

    Parameters
    ----------
    client : distributed.Client
        The cluster to use (see :func:`connect`).
    options : CGOptions
        Strip height, preconditioner, residual target.
    """

    client: Any
    options: CGOptions = DEFAULT_OPTIONS
    name: str = "dask"
    in_process: bool = False
    gives_spectrum: bool = False

    def serves(self, spec: KernelSpec) -> bool:
        # added features: rows of thousands of values each, not shipped to workers
        return spec.time is None and spec.features is None and spec.added is None

    def _workers(self) -> dict:
        return self.client.scheduler_info()["workers"]

    def describe(self) -> str:
        return (
            f"{self.kernel_label()} over {len(self._workers())} Dask workers, "
            "preconditioned conjugate gradients"
        )

    def kernel_bytes(self, n_train: int) -> int:
        return 8 * SymmetricStrips.stored_entries(n_train, self.options.strip_rows)

    def kernel_label(self) -> str:
        return "upper triangle of the float64 kernel"

    def estimate_bytes(self, n_train: int, n_test: int, n_features: int, n_outputs: int) -> int:
        """Cluster bytes: the strips, and on every worker the unit rows, a block of test
        rows and the partial sums of a product."""
        workers = max(len(self._workers()), 1)
        per_worker = (
            8 * (n_train * n_features + 1024 * n_train)
            + 8 * (2 + SymmetricStrips.partial_outputs()) * n_train * n_outputs
        )
        return self.kernel_bytes(n_train) + workers * per_worker

    def available_bytes(self) -> int:
        """The workers' memory limits, summed."""
        return int(sum(worker.get("memory_limit") or 0 for worker in self._workers().values()))

    def memory_label(self) -> str:
        return "the Dask workers' memory limits, summed"

    def fit(
        self,
        X_unit: np.ndarray,
        Y: np.ndarray,
        spec: KernelSpec,
        *,
        progress: Progress | None = None,
        report: Callable[[str], None] | None = None,
        spectrum_rows: int = 0,
    ) -> ClusterFitted:
        """Cluster the rows, build the parts on the workers, solve by CG on the client."""
        watch = Stopwatch()
        with watch.stage("clusters"):
            order, blocks = cluster_order(X_unit, self.options.cluster_size)
        with watch.stage("kernel"):
            kernel = ClusterKernel(
                self.client,
                X_unit[order],
                self.options.strip_rows,
                spec,
                wrap(progress, "kernel parts"),
            )

        solution, fitted = preconditioned_solve(
            kernel,  # type: ignore[arg-type]  # the SymmetricStrips interface CG uses
            Y[order],
            blocks,
            spec.ridge,
            self.options,
            watch,
            report=report,
            progress=progress,
        )
        coef = in_original_order(order, solution.coef)
        train_scores = in_original_order(order, fitted)
        message = (
            f"{solution.message}; {len(kernel.parts)} parts, "
            f"{kernel.bytes_per_product(Y.shape[1]) / 1e6:.1f} MB sent per product"
        )
        return ClusterFitted(
            kernel,
            solution.coef,
            order,
            replace(solution, coef=coef, message=message, method=f"{solution.method} on Dask"),
            train_scores,
            watch.timings,
        )

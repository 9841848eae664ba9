"""Scale benchmark: 60,000 x 10,000 against this machine's own reference time.

Measured in one run and printed as three tables:

1. **The machine.** ``T_ref``: the float64 products of the upper triangle of
   ``X X^T`` for ``X`` of 60,000 x 784 (row blocks of 2,048 against the rows below
   them), the flops no kernel build can avoid; the float64 FMA rate (a 4,000 x 4,000
   matrix product), the read bandwidth of all cores, and the cost of the first write
   to fresh memory (page faults), which every run pays for its 14.5 GB triangle.
2. **The strip product** (one CG iteration's ``K V`` with 10 columns, 60,000 rows):
   its GFLOP/s and GB/s as fractions of the FMA rate and of the bandwidth, and the
   fraction of whichever of the two binds (the larger).
3. **End to end** for each size and input proxy, each in its own process (so its peak
   memory is its own), with the strategy the memory plan picks (under
   ``--max-memory`` where given): seconds and multiples of ``T_ref``, the stages, CG
   iterations, the float64 relative residual, the planned and the measured peak memory
   (decimal GB), accuracy, and, up to
   ``--reference-max`` images, agreement with a float64 Cholesky solve.

Real data first: by default the first ``n`` images of the whole official training split
(``../shared/fashion_mnist_60k``; class-balanced, in the sample's order) against every
test image the dataset holds (3,000 there). ``--noise`` adds stress proxies: the
dataset's images tiled to ``n`` training and ``--test`` test images with per-pixel
noise, ``u2`` for uniform noise of +-2/255 and numbers for Gaussian noise of that sigma
(in units of 1/255, 0 to 16).

Usage: ``python benchmarks/bench_scale.py [--dataset PATH] [--sizes 10000,20000,60000]
[--noise u2,12] [--max-memory 10GB] [--reference-max 20000]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace

import numba
import numpy as np

PROXY = "u2"  # the tiled proxy with uniform noise of +-2/255
REAL = "real"  # the real images, no tiling


def reference_time(n: int = 60000, n_features: int = 784, block_rows: int = 2048) -> float:
    """Seconds for the float64 products of the upper triangle of ``X X^T`` (``T_ref``)."""
    X = np.random.default_rng(0).random((n, n_features))
    out = np.empty((block_rows, n))
    start = time.perf_counter()
    for first in range(0, n, block_rows):
        last = min(first + block_rows, n)
        np.matmul(X[first:last], X[first:].T, out=out[: last - first, : n - first])
    return time.perf_counter() - start


def fma_rate(size: int = 4000, repeats: int = 3) -> float:
    """Float64 flop/s of the best of ``repeats`` square matrix products (BLAS)."""
    A = np.random.default_rng(1).random((size, size))
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        A @ A
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


@numba.njit(parallel=True, fastmath=True)
def _parallel_sum(a: np.ndarray, parts: int) -> float:  # pragma: no cover - compiled
    size = len(a) // parts
    sums = np.zeros(parts)
    for part in numba.prange(parts):
        total = 0.0
        for i in range(part * size, (part + 1) * size):
            total += a[i]
        sums[part] = total
    return sums.sum()


def read_bandwidth(gigabytes: float = 4.0, repeats: int = 3) -> float:
    """Bytes/s of a sum over a large float64 array on all cores (best of ``repeats``)."""
    a = np.ones(int(gigabytes * 1e9) // 8)
    parts = 4 * numba.get_num_threads()
    _parallel_sum(a, parts)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        _parallel_sum(a, parts)
        best = min(best, time.perf_counter() - start)
    return a.nbytes / best


def product_speed(n: int, n_columns: int = 10, repeats: int = 3) -> tuple[float, int, int]:
    """Best seconds of the strip product ``K @ V``, its flops and the bytes it reads."""
    from ntkdemo.solvers.strips import SymmetricStrips

    K = SymmetricStrips(n)
    K.data.fill(0.5)
    V = np.random.default_rng(2).normal(size=(n, n_columns))
    K @ V  # compiles
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        K @ V
        best = min(best, time.perf_counter() - start)
    return best, 4 * n_columns * K.data.size, K.data.nbytes


def first_write_seconds_per_gb(gigabytes: float = 2.0) -> float:
    """Seconds per GB of the first write to fresh memory (page faults; on a virtual
    machine whose host backs memory lazily this rivals the arithmetic)."""
    a = np.empty(int(gigabytes * 1e9) // 8)
    start = time.perf_counter()
    a[:: 4096 // 8] = 0.0  # one write per 4 KiB page
    return (time.perf_counter() - start) / gigabytes


def gigabytes_of_kib(kib: float) -> float:
    """Decimal GB of a count in KiB (what ``getrusage`` reports as ``ru_maxrss`` on Linux)."""
    return kib * 1024 / 1e9


def peak_gb() -> float:
    """Peak resident memory of this process, in decimal GB."""
    return gigabytes_of_kib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def measure_machine() -> dict:
    """T_ref, the FMA rate, the bandwidth, the first-write cost and the strip product."""
    fresh = first_write_seconds_per_gb()
    return {
        "fresh": fresh,
        "t_ref": reference_time(),
        "flops_per_s": fma_rate(),
        "bytes_per_s": read_bandwidth(),
        "product": product_speed(60000),
    }


def tiled(images: np.ndarray, n: int, proxy: str, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows: ``images`` repeated plus per-pixel noise, clipped to [0, 1].

    ``proxy`` is ``"u2"`` (uniform, +-2/255) or a Gaussian sigma in units of 1/255.
    """
    rows = np.resize(np.arange(len(images)), n)
    shape = (n, images.shape[1])
    if proxy == PROXY:
        noise = rng.uniform(-2 / 255, 2 / 255, size=shape)
    else:
        noise = rng.normal(0.0, float(proxy) / 255, size=shape)
    return np.clip(images[rows] + noise, 0.0, 1.0)


def tiled_sample(sample, n_train: int, n_test: int, proxy: str = PROXY):
    """A sample of ``n_train`` x ``n_test`` images tiled from ``sample`` (:func:`tiled`,
    seed 1), labels repeated alike."""
    rng = np.random.default_rng(1)
    return type(sample)(
        X_train=tiled(sample.X_train, n_train, proxy, rng),
        y_train=np.resize(sample.y_train, n_train),
        X_test=tiled(sample.X_test, n_test, proxy, rng),
        y_test=np.resize(sample.y_test, n_test),
        class_names=sample.class_names,
        classes=sample.classes,
        train_indices=np.arange(n_train),
        test_indices=np.arange(n_test),
        dataset=sample.dataset,
        image_shape=sample.image_shape,
    )


def one_run(
    dataset: str, n_train: int, n_test: int, solver: str, proxy: str, max_memory: int | None
) -> dict:
    """Plan, kernel, solve and predict for one size and proxy; timings and checks."""
    from ntkdemo.data import load_sample
    from ntkdemo.demo import run_demo
    from ntkdemo.plan import plan_memory

    sample = load_sample(dataset, None, None, seed=0)
    if proxy == REAL:
        n_test = len(sample.y_test)
    # planned before the inputs exist, as the command line plans before it decodes
    plan = plan_memory(
        n_train,
        n_test,
        sample.X_train.shape[1],
        sample.n_classes,
        solver=solver,
        max_memory=max_memory,
    )
    if proxy == REAL:
        if n_train > len(sample.y_train):
            raise SystemExit(
                f"the dataset has {len(sample.y_train)} training images, not {n_train}"
            )
        big = replace(
            sample,
            X_train=sample.X_train[:n_train],
            y_train=sample.y_train[:n_train],
            train_indices=sample.train_indices[:n_train],
        )
    else:
        big = tiled_sample(sample, n_train, n_test, proxy)
    start = time.perf_counter()
    result = run_demo(big, plan=plan, spectrum_rows=1000)
    total = time.perf_counter() - start
    return {
        "solver": plan.solver,
        "seconds": total,
        "timings": result.timings,
        "accuracy": result.test_report.accuracy,
        "iterations": result.solution.iterations,
        "message": result.solution.message,
        "predictions": result.test_predictions.tolist(),
        "planned_gb": plan.total_bytes / 1e9,
        "peak_gb": peak_gb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="../shared/fashion_mnist_60k")
    parser.add_argument("--sizes", default="10000,20000,60000")
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument(
        "--noise",
        default="",
        help="tiled proxies run besides the real images: u2 (uniform +-2/255) and "
        "Gaussian sigmas (units of 1/255, 0 to 16), comma-separated",
    )
    parser.add_argument("--max-memory", help="cap for the plan, e.g. 10GB")
    parser.add_argument(
        "--solver",
        default="cg",
        help="strategy of the end-to-end runs (default cg; auto: the plan's pick, e.g. "
        "cg32 under --max-memory 10GB)",
    )
    parser.add_argument("--machine", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--reference-max",
        type=int,
        default=20000,
        help="largest size also solved by float64 Cholesky for comparison",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("N", "SOLVER", "PROXY"), help=argparse.SUPPRESS
    )
    options = parser.parse_args()
    from ntkdemo.units import parse_bytes

    max_memory = parse_bytes(options.max_memory) if options.max_memory else None
    if options.machine:
        print(json.dumps(measure_machine()))
        return
    if options.child:
        n, solver, proxy = options.child
        print(json.dumps(one_run(options.dataset, int(n), options.test, solver, proxy, max_memory)))
        return
    sigmas = [s for s in options.noise.split(",") if s]
    for sigma in sigmas:
        if sigma != PROXY and not 0 <= float(sigma) <= 16:
            parser.error(f"--noise takes u2 or sigmas from 0 to 16 (units of 1/255), not {sigma}")

    def spawn_json(arguments: list[str]) -> dict:
        """Run this script in a child process (so that its peak memory is its own)."""
        command = [sys.executable, __file__, "--dataset", options.dataset]
        command += ["--test", str(options.test), *arguments]
        if options.max_memory:
            command += ["--max-memory", options.max_memory]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    machine = spawn_json(["--machine"])
    t_ref = machine["t_ref"]
    print(f"T_ref {t_ref:.1f} s (float64 upper triangle of X X^T, 60,000 x 784)")
    print(
        f"float64 FMA rate {machine['flops_per_s'] / 1e9:.1f} GFLOP/s, read bandwidth "
        f"{machine['bytes_per_s'] / 1e9:.1f} GB/s, first write to fresh memory "
        f"{machine['fresh']:.2f} s/GB (the 60,000-image triangle: "
        f"{14.5 * machine['fresh'] / t_ref:.2f} T_ref)"
    )
    seconds, flops, read = machine["product"]
    flop_share = flops / seconds / machine["flops_per_s"]
    byte_share = read / seconds / machine["bytes_per_s"]
    print(
        f"\nstrip product, 60,000 rows x 10 columns: {seconds:.2f} s "
        f"= {seconds / t_ref:.3f} T_ref; "
        f"{flops / seconds / 1e9:.1f} GFLOP/s ({flop_share:.0%} of FMA rate), "
        f"{read / seconds / 1e9:.1f} GB/s ({byte_share:.0%} of bandwidth); "
        f"binding limit reached: {max(flop_share, byte_share):.0%}"
    )

    print(
        f"\n{'n train':>8} {'noise':>6} {'solver':>8} {'total s':>8} {'T_ref':>6} "
        f"{'kernel':>7} {'precond':>7} {'solve':>7} {'predict':>7} {'iters':>5} "
        f"{'planned':>7} {'peak GB':>7} "
        f"{'accuracy':>8} {'= f64':>7}  solver note"
    )
    for n in (int(s) for s in options.sizes.split(",")):
        for proxy in [REAL, *sigmas]:
            run = spawn_json(["--child", str(n), options.solver, proxy])
            agreement = "-"
            if n <= options.reference_max and options.max_memory is None:
                reference = spawn_json(["--child", str(n), "cholesky", proxy])
                same = np.equal(run["predictions"], reference["predictions"])
                agreement = f"{np.mean(same):.4f}"
            t = run["timings"]
            noise = {REAL: "real", PROXY: "+-2u"}.get(proxy) or f"{float(proxy):g}"
            print(
                f"{n:>8} {noise:>6} {run['solver']:>8} {run['seconds']:>8.1f} "
                f"{run['seconds'] / t_ref:>6.2f} {t['kernel']:>7.1f} "
                f"{t.get('preconditioner', 0.0):>7.1f} {t['solve']:>7.1f} "
                f"{t['predict']:>7.1f} {run['iterations']:>5} {run['planned_gb']:>7.2f} "
                f"{run['peak_gb']:>7.2f} "
                f"{run['accuracy']:>8.4f} {agreement:>7}  {run['message']}",
                flush=True,
            )


if __name__ == "__main__":
    main()

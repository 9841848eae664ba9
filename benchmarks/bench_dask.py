"""Dask benchmark: the ``dask`` strategy on a local cluster against the single-process ``cg``.

Training inputs are the local images tiled with +-2/255 uniform noise (as
``bench_scale.py``), 10,000 test images tiled the same way. Each row runs in its own
process; the ``dask`` rows start a ``LocalCluster`` of ``--workers`` processes (one
thread each, 127.0.0.1). Printed: time (and its ratio to ``cg`` at the same size),
iterations, bytes sent per CG product, peak memory of the client and of each worker,
and whether the predictions equal those of ``cg``.

    python benchmarks/bench_dask.py --dataset ../shared/fashion_mnist --sizes 20000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
from bench_scale import gigabytes_of_kib, peak_gb, tiled_sample


def one_run(dataset: str, n_train: int, n_test: int, engine: str, workers: int) -> dict:
    """One end-to-end run with ``engine`` ``cg`` (this process) or ``dask``."""
    from ntkdemo.data import load_sample
    from ntkdemo.demo import run_demo
    from ntkdemo.plan import plan_memory
    from ntkdemo.solvers.dask_cg import DaskSolver, connect

    sample = load_sample(dataset, None, None, seed=0)
    big = tiled_sample(sample, n_train, n_test)
    shape = (n_train, n_test, big.X_train.shape[1], big.n_classes)
    worker_peaks: list[float] = []
    start = time.perf_counter()
    if engine == "cg":
        result = run_demo(big, plan=plan_memory(*shape, solver="cg"), spectrum_rows=1000)
    else:
        with connect(n_workers=workers) as client:
            plan = plan_memory(*shape, strategies=(DaskSolver(client),))
            result = run_demo(big, plan=plan, spectrum_rows=1000)
            peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            worker_peaks = [gigabytes_of_kib(kib) for kib in peaks.values()]
    return {
        "seconds": time.perf_counter() - start,
        "timings": result.timings,
        "message": result.solution.message,
        "predictions": result.test_predictions.tolist(),
        "client_gb": peak_gb(),
        "worker_gb": worker_peaks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="../shared/fashion_mnist")
    parser.add_argument("--sizes", default="20000,60000")
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("N", "ENGINE"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        n, engine = int(options.child[0]), options.child[1]
        print(json.dumps(one_run(options.dataset, n, options.test, engine, options.workers)))
        return

    def spawn(n: int, engine: str) -> dict:
        arguments = ["--dataset", options.dataset, "--test", str(options.test)]
        arguments += ["--workers", str(options.workers), "--child", str(n), engine]
        done = subprocess.run(
            [sys.executable, __file__, *arguments], capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    print(
        f"{'n train':>8} {'engine':>6} {'total s':>8} {'/ cg':>5} {'kernel':>7} {'solve':>7} "
        f"{'predict':>7} {'client GB':>9} {'worker GB':>11} {'argmax = cg':>11}  note"
    )
    for n in (int(s) for s in options.sizes.split(",")):
        reference = spawn(n, "cg")
        run = spawn(n, "dask")
        for engine, row in (("cg", reference), ("dask", run)):
            t = row["timings"]
            workers = "/".join(f"{gb:.2f}" for gb in row["worker_gb"]) or "-"
            same = np.mean(np.equal(row["predictions"], reference["predictions"]))
            print(
                f"{n:>8} {engine:>6} {row['seconds']:>8.1f} "
                f"{row['seconds'] / reference['seconds']:>5.2f} {t['kernel']:>7.1f} "
                f"{t['solve']:>7.1f} {t['predict']:>7.1f} {row['client_gb']:>9.2f} "
                f"{workers:>11} {same:>11.4f}  {row['message']}"
            )


if __name__ == "__main__":
    main()

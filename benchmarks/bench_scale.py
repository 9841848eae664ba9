"""Scale benchmark: end-to-end time and peak memory at 10,000 / 20,000 / 60,000 images.

Above the 8,226 training images of the local copy, inputs of the real shape are built by
tiling the local images and adding uniform noise of +-2/255 per pixel (so no two rows
are equal); the test set is 10,000 images tiled the same way from the local test split.
Each size runs in its own process (so its peak memory is its own) with the solver the
memory plan picks; where a float64 Cholesky solve also fits, it is run too and the
iterative answer is compared with it.

Usage: ``python benchmarks/bench_scale.py [--dataset PATH] [--sizes 10000,20000,60000]
[--reference-max 20000]``. Prints one table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def tiled(images: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows: ``images`` repeated, plus uniform noise of +-2/255, clipped to [0, 1]."""
    rows = np.resize(np.arange(len(images)), n)
    noise = rng.uniform(-2 / 255, 2 / 255, size=(n, images.shape[1]))
    return np.clip(images[rows] + noise, 0.0, 1.0)


def one_run(dataset: str, n_train: int, n_test: int, solver: str) -> dict:
    """Plan, kernel, solve and predict for one size; returns timings and checks."""
    from ntkdemo.data import load_sample
    from ntkdemo.demo import run_demo
    from ntkdemo.plan import plan_memory

    sample = load_sample(dataset, None, None, seed=0)
    rng = np.random.default_rng(1)
    labels_train = np.resize(sample.y_train, n_train)
    labels_test = np.resize(sample.y_test, n_test)
    big = type(sample)(
        X_train=tiled(sample.X_train, n_train, rng),
        y_train=labels_train,
        X_test=tiled(sample.X_test, n_test, rng),
        y_test=labels_test,
        class_names=sample.class_names,
        classes=sample.classes,
        train_indices=np.arange(n_train),
        test_indices=np.arange(n_test),
        dataset=dataset,
        image_shape=sample.image_shape,
    )
    plan = plan_memory(n_train, n_test, big.X_train.shape[1], big.n_classes, solver=solver)
    start = time.perf_counter()
    result = run_demo(big, plan=plan, spectrum_rows=1000)
    total = time.perf_counter() - start
    return {
        "solver": plan.solver,
        "seconds": total,
        "timings": result.timings,
        "accuracy": result.test_report.accuracy,
        "message": result.solution.message,
        "predictions": result.test_predictions.tolist(),
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="../shared/fashion_mnist")
    parser.add_argument("--sizes", default="10000,20000,60000")
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument(
        "--reference-max",
        type=int,
        default=20000,
        help="largest size also solved by float64 Cholesky for comparison",
    )
    parser.add_argument("--child", nargs=2, metavar=("N", "SOLVER"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(
            json.dumps(
                one_run(options.dataset, int(options.child[0]), options.test, options.child[1])
            )
        )
        return

    def spawn(n: int, solver: str) -> dict:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--dataset",
                options.dataset,
                "--test",
                str(options.test),
                "--child",
                str(n),
                solver,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    print(
        f"{'n train':>8} {'solver':>9} {'total s':>8} {'kernel':>7} {'solve':>7} "
        f"{'predict':>7} {'peak GB':>8} {'accuracy':>8} {'argmax = f64':>12}  solver note"
    )
    for n in (int(s) for s in options.sizes.split(",")):
        run = spawn(n, "cg")
        agreement = "-"
        if n <= options.reference_max:
            reference = spawn(n, "cholesky")
            agreement = f"{np.mean(np.equal(run['predictions'], reference['predictions'])):.4f}"
            print(
                f"{n:>8} {'cholesky':>9} {reference['seconds']:>8.1f} "
                f"{reference['timings']['kernel']:>7.1f} {reference['timings']['solve']:>7.1f} "
                f"{reference['timings']['predict']:>7.1f} {reference['peak_gb']:>8.2f} "
                f"{reference['accuracy']:>8.4f} {'(reference)':>12}"
            )
        t = run["timings"]
        print(
            f"{n:>8} {run['solver']:>9} {run['seconds']:>8.1f} {t['kernel']:>7.1f} "
            f"{t['solve']:>7.1f} {t['predict']:>7.1f} {run['peak_gb']:>8.2f} "
            f"{run['accuracy']:>8.4f} {agreement:>12}  {run['message']}"
        )


if __name__ == "__main__":
    main()

"""GPU benchmark: ``--device cuda`` end to end at 10,000 / 20,000 / 60,000 images.

Real data: the first ``n`` images of the official training split and every test image
the file holds (``../shared/fashion_mnist_60k``: 60,000 and 3,000). With ``--noise`` the
images are instead tiled with +-2/255 noise to ``n`` training and ``--test`` test images,
as ``bench_scale.py --noise`` does (a stress proxy). Reads the images from an ``.npz``
(``train``, ``train_labels``, ``test``, ``test_labels``, uint8) so that it runs on a
machine without ``datasets``; where a float64 CPU Cholesky of the same problem is
feasible (``--cpu-max``) its predictions are compared. Prints one table.

Usage: ``python benchmarks/bench_gpu.py images.npz [--sizes 10000,20000,60000] [--noise]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def tiled(images: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    rows = np.resize(np.arange(len(images)), n)
    noise = rng.uniform(-2 / 255, 2 / 255, size=(n, images.shape[1]))
    return np.clip(images[rows] / 255.0 + noise, 0.0, 1.0)


def main() -> None:
    from ntkdemo.kernels import ntk, ntk_times, unit_rows
    from ntkdemo.solvers import CudaSolver, one_hot, solve
    from ntkdemo.spec import KernelSpec

    def solve_and_predict_cuda(X, Y, X_test):
        fitted = CudaSolver().fit(unit_rows(X), Y, KernelSpec())
        return fitted.solution, fitted.train_scores, fitted.predict(unit_rows(X_test))

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images")
    parser.add_argument("--sizes", default="10000,20000,60000")
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--cpu-max", type=int, default=20000)
    parser.add_argument("--noise", action="store_true", help="tiled noisy proxies")
    options = parser.parse_args()
    data = np.load(options.images)
    rng = np.random.default_rng(1)
    train = data["train"].reshape(len(data["train"]), -1)
    test = data["test"].reshape(len(data["test"]), -1)
    if options.noise:
        X_test = tiled(test, options.test, rng)
        y_test = np.resize(data["test_labels"], options.test)
    else:
        X_test, y_test = test / 255.0, data["test_labels"]
    solve_and_predict_cuda(X_test[:100], one_hot(y_test[:100], 10), X_test[:10])  # warm up
    print(
        f"{'n train':>8} {'GPU s':>7} {'accuracy':>8} {'CPU f64 s':>9} {'argmax same':>11} "
        f"{'max |coef diff| / max |coef|':>28}"
    )
    for n in (int(s) for s in options.sizes.split(",")):
        if options.noise:
            X = tiled(train, n, rng)
        elif n <= len(train):
            X = train[:n] / 255.0
        else:
            parser.error(f"the file holds {len(train)} training images; --noise tiles more")
        Y = one_hot(np.resize(data["train_labels"], n), 10)
        start = time.perf_counter()
        solution, _, scores = solve_and_predict_cuda(X, Y, X_test)
        gpu_seconds = time.perf_counter() - start
        accuracy = np.mean(scores.argmax(axis=1) == y_test)
        cpu, same, diff = "-", "-", "-"
        if n <= options.cpu_max:
            start = time.perf_counter()
            reference = solve(ntk(X), Y, overwrite_k=True)
            reference_scores = ntk_times(X_test, X, reference.coef)
            cpu = f"{time.perf_counter() - start:.1f}"
            same = f"{np.mean(reference_scores.argmax(1) == scores.argmax(1)):.4f}"
            scale = np.abs(reference.coef).max()
            diff = f"{np.abs(reference.coef - solution.coef).max() / scale:.1e}"
        print(
            f"{n:>8} {gpu_seconds:>7.1f} {accuracy:>8.4f} {cpu:>9} {same:>11} {diff:>28}",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""Test accuracy of a convolutional kernel with a ridge chosen by leave-one-out on the
training images: the kernels computed once (and cached), then every ridge of a grid.

The sample is ``accuracy_conv.py``'s: ``--per-class`` training images per class
(``load_sample(..., seed=0)``) and the first ``--test`` images of the balanced test
order, rescaled as every strategy rescales them. For a ridge :math:`\\lambda` (given
relative to the mean of the kernel's diagonal) and :math:`G = K + \\lambda I`, the
leave-one-out outputs of kernel ridge regression on one-hot targets :math:`Y` are, with
:math:`A = G^{-1} Y`, :math:`Y_i - A_i / (G^{-1})_{ii}` (one eigendecomposition of
:math:`K` serves every ridge); the ridge with the most leave-one-out hits (the smallest
among ties) is chosen without looking at the test images, whose accuracy is then
printed beside every other ridge's for comparison. Ridge 0 is the trained infinite
network (Cholesky, jitter fallback, as ``ntkdemo run``); every test accuracy is
``ntkdemo.solvers.solve`` at that ridge.

Usage: ``python benchmarks/accuracy_ridge.py [--architecture myrtle5] [--per-class 100]
[--test 1000] [--cache kernels.npz]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import numpy as np

RELATIVE_RIDGES = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
"""Ridges of the grid, relative to the mean of the kernel's diagonal."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="../shared/fashion_mnist_60k")
    parser.add_argument("--architecture", default="myrtle5")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--cache", default=None, help="npz of the kernels (written if absent)")
    options = parser.parse_args()
    from tqdm import tqdm

    from ntkdemo import load_sample
    from ntkdemo.kernels import conv_kernels, scaled_unit_rows
    from ntkdemo.solvers import one_hot, solve

    sample = load_sample(options.dataset, options.per_class, None, seed=0)
    sample = replace(
        sample, X_test=sample.X_test[: options.test], y_test=sample.y_test[: options.test]
    )
    if options.cache and os.path.exists(options.cache):
        cached = np.load(options.cache)
        kernels = {
            name: (cached[f"{name}_train"], cached[f"{name}_test"]) for name in ("nngp", "ntk")
        }
        print(f"kernels read from {options.cache}")
    else:
        start = time.perf_counter()
        X, X_test = scaled_unit_rows(sample.X_train), scaled_unit_rows(sample.X_test)
        network = {"architecture": options.architecture, "image_shape": sample.image_shape}

        def bar(description: str):
            return lambda chunks: tqdm(chunks, desc=description, leave=False)

        train = conv_kernels(X, **network, progress=bar("training pairs"))
        test = conv_kernels(X_test, X, **network, progress=bar("test pairs"))
        kernels = {"nngp": (train[0], test[0]), "ntk": (train[1], test[1])}
        print(
            f"kernels of {len(X)} x {len(X)} and {len(X_test)} x {len(X)}: "
            f"{time.perf_counter() - start:.0f} s"
        )
        if options.cache:
            np.savez(
                options.cache,
                **{
                    f"{n}_{part}": k
                    for n, pair in kernels.items()
                    for part, k in zip(("train", "test"), pair)
                },
            )
    targets = one_hot(sample.y_train, sample.n_classes)
    print(
        f"{options.architecture}, {len(sample.y_train)} training and "
        f"{len(sample.y_test)} test images"
    )
    print(f"{'kernel':<6} {'ridge/mean diag':>15} {'leave-one-out':>13} {'test':>7}")
    for name, (K, K_test) in kernels.items():
        eigenvalues, U = np.linalg.eigh(K)
        rotated = U.T @ targets
        scale = float(np.mean(np.diag(K)))
        rows = []
        for relative in RELATIVE_RIDGES:
            ridge = relative * scale
            loo = float("nan")  # a kernel whose eigenvalues are not all > 0 at ridge 0
            if eigenvalues.min() + ridge > 0:  # leave-one-out from the eigendecomposition
                inverse = 1.0 / (eigenvalues + ridge)
                coef = U @ (inverse[:, None] * rotated)
                diagonal = (U**2) @ inverse
                held_out = targets - coef / diagonal[:, None]
                loo = float(np.mean(held_out.argmax(1) == sample.y_train))
            solution = solve(K, targets, ridge=ridge)
            test = float(np.mean((K_test @ solution.coef).argmax(1) == sample.y_test))
            rows.append((relative, loo, test))
        chosen = max((r for r in rows if r[1] == r[1]), key=lambda r: (r[1], -r[0]))
        for relative, loo, test in rows:
            mark = "  <- chosen by leave-one-out" if (relative, loo, test) == chosen else ""
            print(f"{name:<6} {relative:>15.0e} {loo:>13.4f} {test:>7.4f}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

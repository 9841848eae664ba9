"""Random features against the exact kernel: error, accuracy and time against D, in one run.

The sample is ``accuracy_ridge.py``'s: ``--per-class`` training images per class
(``load_sample(..., seed=0)``), the first ``--test`` images of the balanced test order,
rows rescaled as every strategy rescales them, w_std sqrt(2). The exact NNGP and NTK are
computed, or read from ``accuracy_ridge.py``'s ``--cache`` file of the same sample. Then,
for each D of ``--dimensions`` and each precision of ``--dtypes``, one random network of
the architecture (width ``--width``, seed 0, calibrated on the first 32 training images:
``ntkdemo.kernels.features``) gives the features of every image, and the table holds

* ``ms/image``: the features' time per image (training and test images, this run, every
  core), and ``x pair``: that time over the exact kernel's time per image pair measured
  in the same run (``seconds_per_pair``), the number of exact pairs one image's
  features cost;
* ``K err train`` and ``K err test``: :math:`\\|\\hat K - K\\|_F / \\|K\\|_F` on every
  training pair and every test-training pair;
* ``acc r=0``: test accuracy of kernel regression at ridge 0 (with the jitter fallback,
  as ``ntkdemo run``), and ``acc loo``: at the ridge chosen by leave-one-out on the
  training images alone (``accuracy_ridge.py``'s grid and rule), with that ridge.

The exact kernel's rows come first. Every features row is an approximation.

Usage: ``python benchmarks/bench_features.py [--architecture myrtle5] [--per-class 100]
[--test 1000] [--dimensions 512,1024,2048,4096] [--dtypes float64,float32] [--width 128]
[--cache kernels.npz]``
"""

from __future__ import annotations

import itertools
import sys
import time

import numpy as np
from accuracy_ridge import (
    RELATIVE_RIDGES,
    balanced_sample,
    cache_key,
    leave_one_out_outputs,
    plain_kernels,
    read_cache,
)


def accuracies(
    K: np.ndarray, K_test: np.ndarray, targets: np.ndarray, y_train, y_test
) -> tuple[float, float, float]:
    """Test accuracy at ridge 0, the leave-one-out ridge (relative to the mean of the
    diagonal) and the test accuracy at it."""
    from ntkdemo.solvers import solve

    eigenvalues, U = np.linalg.eigh(K)
    rotated = U.T @ targets
    scale = float(np.mean(np.diag(K)))
    best = (-1.0, 0.0)
    for relative in RELATIVE_RIDGES:
        if eigenvalues.min() + relative * scale <= 0:
            continue
        held_out = leave_one_out_outputs(eigenvalues, U, rotated, targets, relative * scale)
        hits = float(np.mean(held_out.argmax(1) == y_train))
        if hits > best[0]:
            best = (hits, relative)

    def test(ridge: float) -> float:
        solution = solve(K, targets, ridge=ridge)
        return float(np.mean((K_test @ solution.coef).argmax(1) == y_test))

    return test(0.0), best[1], test(best[1] * scale)


def _precision(text: str) -> str:
    """A ``--dtypes`` entry: one of ``FEATURE_DTYPES``."""
    import argparse

    from ntkdemo.kernels.features import FEATURE_DTYPES

    if text not in FEATURE_DTYPES:
        raise argparse.ArgumentTypeError(f"expected one of {FEATURE_DTYPES}, got {text!r}")
    return text


def main() -> int:
    from ntkdemo.cli.options import (
        architecture_name,
        comma_list,
        positive_int,
        script_parser,
    )

    parser = script_parser(__doc__)
    parser.add_argument("--dataset", default="../shared/fashion_mnist_60k", help="dataset folder")
    parser.add_argument(
        "--architecture", type=architecture_name, default="myrtle5", help="the network"
    )
    parser.add_argument("--per-class", type=positive_int, default=100, help="training images")
    parser.add_argument("--test", type=positive_int, default=1000, help="test images")
    parser.add_argument(
        "--dimensions",
        type=comma_list(positive_int),
        default=[512, 1024, 2048, 4096],
        help="D of the features (NNGP columns; the NTK has 2D)",
    )
    parser.add_argument(
        "--dtypes",
        type=comma_list(_precision),
        default=["float64"],
        help="precisions the random network runs in (float64, float32)",
    )
    parser.add_argument("--width", type=positive_int, default=128, help="hidden channels")
    parser.add_argument("--cache", default=None, help="accuracy_ridge.py's npz of the kernels")
    options = parser.parse_args()
    from tqdm import tqdm

    from ntkdemo.kernels import RandomFeatures, scaled_unit_rows
    from ntkdemo.kernels.conv import seconds_per_pair
    from ntkdemo.solvers import one_hot

    sample = balanced_sample(options.dataset, options.per_class, options.test)
    X, X_test = scaled_unit_rows(sample.X_train), scaled_unit_rows(sample.X_test)
    network = {
        "architecture": options.architecture,
        "image_shape": sample.image_shape,
        "w_std": 2**0.5,
    }
    key = cache_key(options.dataset, sample, network)
    exact = read_cache(options.cache, key)
    if "ntk_train" not in exact:
        start = time.perf_counter()
        exact = plain_kernels(
            X, X_test, network, lambda text: lambda chunks: tqdm(chunks, desc=text, leave=False)
        )
        print(f"exact kernels: {time.perf_counter() - start:.0f} s")
        if options.cache:
            np.savez(options.cache, key=np.array(key), **exact)
    per_pair = seconds_per_pair(options.architecture, sample.image_shape, w_std=2**0.5)
    targets = one_hot(sample.y_train, sample.n_classes)
    labels = (sample.y_train, sample.y_test)
    print(
        f"{options.architecture}, {len(X)} training and {len(X_test)} test images, "
        f"width {options.width}; exact kernel {per_pair * 1e3:.2f} ms per pair (this run)"
    )
    header = (
        f"{'kernel':<6} {'D':>6} {'dtype':>8} {'ms/image':>9} {'x pair':>7} {'K err train':>12} "
        f"{'K err test':>11} {'acc r=0':>8} {'loo ridge':>10} {'acc loo':>8}"
    )
    print(header)
    for name in ("nngp", "ntk"):
        K, K_test = exact[f"{name}_train"], exact[f"{name}_test"]
        at_zero, ridge, at_loo = accuracies(K, K_test, targets, *labels)
        print(
            f"{name:<6} {'exact':>6} {'':>8} {'':>9} {'':>7} {'':>12} {'':>11} {at_zero:>8.4f} "
            f"{ridge:>10.0e} {at_loo:>8.4f}"
        )
    for dimension, dtype in itertools.product(options.dimensions, options.dtypes):
        start = time.perf_counter()
        features = RandomFeatures(
            options.architecture,
            sample.image_shape,
            dimension=dimension,
            width=options.width,
            w_std=2**0.5,
            dtype=dtype,
        )
        features.calibrate(X[:32])
        train, test = features.transform(X), features.transform(X_test)
        per_image = (time.perf_counter() - start) / (len(X) + len(X_test))
        for column, name in enumerate(("nngp", "ntk")):
            K, K_test = exact[f"{name}_train"], exact[f"{name}_test"]
            F, F_test = train[column], test[column]
            estimate, estimate_test = F @ F.T, F_test @ F.T
            errors = [
                np.linalg.norm(a - b) / np.linalg.norm(b)
                for a, b in ((estimate, K), (estimate_test, K_test))
            ]
            at_zero, ridge, at_loo = accuracies(estimate, estimate_test, targets, *labels)
            print(
                f"{name:<6} {F.shape[1]:>6} {dtype:>8} {per_image * 1e3:>9.1f} "
                f"{per_image / per_pair:>7.1f} {errors[0]:>12.4f} {errors[1]:>11.4f} "
                f"{at_zero:>8.4f} {ridge:>10.0e} {at_loo:>8.4f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    from ntkdemo.cli.options import run_script

    sys.exit(run_script(main))

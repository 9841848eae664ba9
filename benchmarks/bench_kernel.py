"""Kernel benchmark: the NTK matrix and the balanced sampler against naive versions.

Prints one table of times and ratios measured in this run:

* kernel vs a Python double loop over pairs (n = 200 and 1,000, d = 784);
* kernel vs the bare ``X @ X.T`` it cannot avoid (n = 2,000 / 5,000 / 10,000, float64),
  each allocating its result, and again each writing into an array written before
  (``out=``): a virtual machine whose host backs memory only when first touched makes
  the first write to fresh memory cost as much as the product, and it falls unevenly
  on the two sides (pages freed a moment before are cheap again);
* the kernel averaged over shifts 0-2 and mirrors (50 terms) of one ``cg`` strip, 256
  rows against 30,000, in blocks of ``BLOCK_ENTRIES`` against one block a term (each
  output above 32 MB, mapped anew), and against its 50 bare products alone (into memory
  written before);
* ``load_sample`` vs iterating and decoding the whole split once per label.

Usage: ``python benchmarks/bench_kernel.py [--dataset PATH] [--sizes 2000,5000,10000]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ntkdemo.data import load_sample, open_dataset
from ntkdemo.kernels import ntk


def best_times(functions, repeats: int = 3) -> list[float]:
    """Smallest wall time of each function over ``repeats`` rounds.

    The functions take turns within each round, so a burst of other work on this
    shared machine slows both sides of a ratio rather than one.
    """
    times = [[] for _ in functions]
    for _ in range(repeats):
        for function, record in zip(functions, times):
            start = time.perf_counter()
            function()
            record.append(time.perf_counter() - start)
    return [min(record) for record in times]


def naive_double_loop(X: np.ndarray) -> np.ndarray:
    """What a notebook does: the mission formula as written, one pair at a time."""
    n = len(X)
    K = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            x = X[i] / np.linalg.norm(X[i])
            y = X[j] / np.linalg.norm(X[j])
            k = np.clip(np.dot(x, y), -1.0, 1.0)
            K[i, j] = (
                k
                + np.sqrt(1 - k**2) / np.pi
                + 2
                * k
                / np.pi
                * (np.arcsin(np.sqrt((1 + k) / 2)) - np.arcsin(np.sqrt((1 - k) / 2)))
            )
    return K


def naive_sampling(source: str, per_class: int) -> np.ndarray:
    """Iterate the whole split once per label, decoding every image, keep the first rows."""
    train = open_dataset(source)["train"]
    chosen = []
    for label in range(10):
        rows = [np.asarray(r["image"]) for r in train if r["label"] == label]
        chosen.extend(rows[:per_class])
    return np.stack(chosen)


def averaged_strip_rows(rng: np.random.Generator) -> list[tuple[str, float, float, float]]:
    """One strip of the averaged kernel in one block a term against ``BLOCK_ENTRIES``
    blocks, and the blocks against the bare products of the 50 permuted strips."""
    from ntkdemo.kernels import averaged, unit_rows
    from ntkdemo.spec import KernelSpec

    X = unit_rows(rng.random((30_256, 784)))
    strip, rest = X[:256], X[256:]
    spec = KernelSpec(shifts=2, flip=True, image_shape=(28, 28))
    permutations = [r for r, _ in spec.average.weighted_permutations((28, 28))]
    blocks = averaged.BLOCK_ENTRIES

    def one_block_a_term() -> None:
        averaged.BLOCK_ENTRIES = len(strip) * len(rest)
        try:
            spec.matrix(strip, rest)
        finally:
            averaged.BLOCK_ENTRIES = blocks

    written = np.ones((len(strip), len(rest)))

    def bare_products() -> None:
        for r in permutations:
            np.matmul(strip if r is None else strip[:, r], rest.T, out=written)

    whole, blocked, products = best_times(
        [one_block_a_term, lambda: spec.matrix(strip, rest), bare_products], repeats=2
    )
    return [
        ("averaged strip: one block / blocks", whole, blocked, whole / blocked),
        ("averaged strip: blocks / products", blocked, products, blocked / products),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="../shared/fashion_mnist")
    parser.add_argument("--sizes", default="2000,5000,10000")
    options = parser.parse_args()
    rng = np.random.default_rng(0)
    X_full = rng.random((max(int(s) for s in options.sizes.split(",")), 784))
    ntk(X_full[:50])  # compile the map once, outside the timings

    rows = []
    for n in (200, 1000):
        X = X_full[:n]
        (slow,) = best_times([lambda X=X: naive_double_loop(X)], repeats=1)
        (fast,) = best_times([lambda X=X: ntk(X)], repeats=30)
        rows.append((f"kernel vs double loop, n={n}", slow, fast, slow / fast))
    for n in (int(s) for s in options.sizes.split(",")):
        X = X_full[:n]
        kernel, product = best_times([lambda X=X: ntk(X), lambda X=X: X @ X.T], repeats=5)
        rows.append((f"kernel / bare X @ X.T, n={n}", kernel, product, kernel / product))
        ours, theirs = np.ones((n, n)), np.ones((n, n))
        kernel, product = best_times(
            [
                lambda X=X, out=ours: ntk(X, out=out),
                lambda X=X, out=theirs: np.matmul(X, X.T, out=out),
            ],
            repeats=5,
        )
        rows.append(("  the same into written memory", kernel, product, kernel / product))
    rows += averaged_strip_rows(rng)
    (slow,) = best_times([lambda: naive_sampling(options.dataset, 100)], repeats=1)
    (fast,) = best_times([lambda: load_sample(options.dataset, 100, 50)])
    rows.append(("sampling: iterate+decode vs ours", slow, fast, slow / fast))

    print(f"{'measurement':<36} {'A (s)':>9} {'B (s)':>9} {'A/B':>9}")
    for name, a, b, ratio in rows:
        print(f"{name:<36} {a:9.3f} {b:9.3f} {ratio:9.2f}")


if __name__ == "__main__":
    main()

"""A convolutional kernel's strips on a 2-worker Dask LocalCluster against one process.

Both sides build the upper triangle of the Myrtle-5 NTK of the same real 28 x 28 images
(the first ``--images`` of ``../shared/fashion_mnist_60k``), in strips of 16 rows, as
the ``cg`` strategy and the Dask engine do when they solve with that kernel: one process
with a thread per core, and a LocalCluster of one single-threaded worker per core. The
numba cache is warmed first, so neither side pays for compiling. Prints both times, the
ratio and the largest difference of the two triangles.

Usage: ``python benchmarks/bench_dask_conv.py [--images 400] [--architecture myrtle5]``
"""

from __future__ import annotations

import argparse
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="../shared/fashion_mnist_60k")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--architecture", default="myrtle5")
    options = parser.parse_args()
    import numpy as np

    from ntkdemo import KernelSpec, load_sample
    from ntkdemo.kernels import unit_rows
    from ntkdemo.solvers.dask_cg import ClusterKernel, connect
    from ntkdemo.solvers.strips import kernel_strips_of_unit_rows

    sample = load_sample(options.dataset, -(-options.images // 10), 1, seed=0)
    X_unit = unit_rows(sample.X_train[: options.images])
    spec = KernelSpec(architecture=options.architecture, w_std=2**0.5, image_shape=(28, 28))
    spec.matrix(X_unit[:2])  # compile or load the loops once
    start = time.perf_counter()
    local = kernel_strips_of_unit_rows(X_unit, spec, strip_rows=16)
    one_process = time.perf_counter() - start
    with connect(n_workers=2) as client:
        ClusterKernel(client, X_unit[:4], 16, spec)  # warm the workers' caches
        start = time.perf_counter()
        kernel = ClusterKernel(client, X_unit, 16, spec)
        cluster = time.perf_counter() - start
        V = np.random.default_rng(0).random((len(X_unit), 3))
        difference = np.abs(kernel @ V - local @ V).max() / np.abs(local @ V).max()
    pairs = len(X_unit) * (len(X_unit) + 1) / 2
    print(
        f"{options.architecture}, {len(X_unit)} real images ({pairs:.0f} pairs): one process "
        f"{one_process:.1f} s, 2-worker LocalCluster {cluster:.1f} s, ratio "
        f"{cluster / one_process:.2f}; products differ by {difference:.1e} (relative)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

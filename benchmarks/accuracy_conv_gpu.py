"""Convolutional kernels on a GPU: their speed per image pair, their agreement with the
CPU fold, and test accuracy per architecture x training size x preprocessing: one table.

Reads the images from an ``.npz`` (``train``, ``train_labels``, ``test``,
``test_labels``, uint8, as ``bench_gpu.py``) so that it runs on a machine without
``datasets``. The training sample is the one ``load_sample(..., seed=0)`` draws (the same
rows: :func:`ntkdemo.data.balanced_indices` with the same generators), the test images
the first ``--test`` of the balanced order ``load_sample`` gives with
``test_per_class=None``, as ``accuracy_conv.py`` takes them. Each row computes both
kernels of an architecture once (:func:`ntkdemo.kernels.conv_arrays.pair_kernels`, on the
rows rescaled as every strategy does) and solves each by Cholesky (ridge 0, jitter
fallback); rows whose projected time exceeds what is left of ``--budget`` seconds are
skipped and say so. Flips take the averaged form of ``ntkdemo --flip``
(:mod:`ntkdemo.kernels.mirror`; the architectures here are mirror symmetric on 28 x 28):
the Gram matrix :math:`(K(X, X) + K(X, FX)) / 2` of the originals, :math:`K(X, FX)`
made exactly symmetric, and the test rows against the images and their mirrors.
``--array-module numpy`` runs the same on the CPU (for small checks).

Usage: ``python benchmarks/accuracy_conv_gpu.py images.npz [--architectures myrtle5]
[--sizes 10,100] [--test 1000] [--variants plain,zca,flip] [--budget 400]``
"""

from __future__ import annotations

import argparse
import importlib
import time

import numpy as np


def main() -> None:
    from ntkdemo.data import Sample, balanced_indices
    from ntkdemo.kernels import architecture_layers, conv_kernels
    from ntkdemo.kernels.conv import as_images
    from ntkdemo.kernels.conv_arrays import pair_kernels
    from ntkdemo.kernels.mirror import mirrored
    from ntkdemo.kernels.ntk import scaled_unit_rows
    from ntkdemo.preprocess import zca_whitened
    from ntkdemo.solvers import one_hot, solve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images")
    parser.add_argument("--architectures", default="myrtle5,cnn-gap-2")
    parser.add_argument("--sizes", default="10,100")
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--variants", default="plain,zca,flip")
    parser.add_argument("--zca", type=float, default=0.1, help="epsilon of the ZCA rows")
    parser.add_argument("--budget", type=float, default=400.0, help="seconds for the rows")
    parser.add_argument("--array-module", default="cupy", choices=("cupy", "numpy"))
    parser.add_argument("--memory-gb", type=float, default=None, help="tile workspace")
    parser.add_argument(
        "--check-images", type=int, default=12, help="images of the CPU-fold check (0: none)"
    )
    options = parser.parse_args()
    xp = importlib.import_module(options.array_module)
    to_host = getattr(xp, "asnumpy", np.asarray)
    if options.memory_gb is not None:
        memory = int(options.memory_gb * 1e9)
    elif options.array_module == "cupy":
        memory = int(xp.cuda.runtime.memGetInfo()[0] // 2)
    else:
        memory = 200_000_000

    def synchronise() -> None:
        if options.array_module == "cupy":
            xp.cuda.Device().synchronize()

    def images_of(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The rows rescaled to x.x/d = 1, as every strategy does, as images."""
        return as_images(scaled_unit_rows(rows), shape)

    data = np.load(options.images)
    shape = tuple(data["train"].shape[1:])
    flat_train = data["train"].reshape(len(data["train"]), -1)
    flat_test = data["test"].reshape(len(data["test"]), -1)

    if options.check_images:
        print(
            f"agreement with the CPU fold ({options.check_images} real images, relative to "
            "the largest entry):"
        )
    check = flat_train[: options.check_images] / 255.0
    for architecture in options.architectures.split(",") if options.check_images else ():
        layers = architecture_layers(architecture, 2**0.5)
        got = pair_kernels(xp, layers, xp.asarray(images_of(check, shape)), memory_bytes=memory)
        want = conv_kernels(images_of(check, shape), architecture=layers)
        errors = [
            float(np.abs(to_host(g) - w).max() / np.abs(w).max())
            for g, w in zip(got, want, strict=True)
        ]
        print(f"  {architecture:<12} NNGP {errors[0]:.1e}  NTK {errors[1]:.1e}", flush=True)

    print("speed (64 x 64 real images, the second of two identical calls):")
    per_pair = {}
    for architecture in options.architectures.split(","):
        layers = architecture_layers(architecture, 2**0.5)
        probe = xp.asarray(images_of(flat_train[:64] / 255.0, shape))
        pair_kernels(xp, layers, probe, probe, memory_bytes=memory)  # compiles, allocates
        synchronise()
        start = time.perf_counter()
        pair_kernels(xp, layers, probe, probe, memory_bytes=memory)
        synchronise()
        per_pair[architecture] = (time.perf_counter() - start) / 64**2
        whole = 60_000 * 60_001 / 2 + 60_000 * 10_000
        print(
            f"  {architecture:<12} {per_pair[architecture] * 1e6:8.1f} us per pair (NNGP+NTK); "
            f"projected for the whole split (60,000 x 60,000 upper + 60,000 x 10,000): "
            f"{per_pair[architecture] * whole / 3600:.1f} h on this device",
            flush=True,
        )

    print(
        f"{'architecture':<12} {'per class':>9} {'zca':>4} {'flip':>4} {'train':>6} {'test':>5} "
        f"{'NNGP':>7} {'NTK':>7} {'seconds':>8}",
        flush=True,
    )
    started = time.perf_counter()
    labels_train, labels_test = data["train_labels"], data["test_labels"]
    for size in (int(s) for s in options.sizes.split(",")):
        rng_train, rng_test = np.random.default_rng(0).spawn(2)
        train_rows = balanced_indices(labels_train, size, range(10), rng_train)
        test_rows = balanced_indices(labels_test, None, range(10), rng_test)[: options.test]
        base = Sample(
            X_train=flat_train[train_rows] / 255.0,
            y_train=labels_train[train_rows].astype(np.int64),
            X_test=flat_test[test_rows] / 255.0,
            y_test=labels_test[test_rows].astype(np.int64),
            class_names=tuple(str(c) for c in range(10)),
            classes=tuple(range(10)),
            train_indices=train_rows,
            test_indices=test_rows,
            dataset=options.images,
            image_shape=shape,
        )
        for variant in options.variants.split(","):
            flips = "flip" in variant
            sample = base
            if "zca" in variant:
                sample = zca_whitened(sample, options.zca, with_mirrors=flips)
            n_train, n_test = len(sample.y_train), len(sample.y_test)
            pairs = n_train * (n_train + 1) / 2 + n_train * n_test
            if flips:  # K(X, FX) whole, and the test rows against the mirrors
                pairs += n_train * n_train + n_train * n_test
            for architecture in options.architectures.split(","):
                projected = pairs * per_pair[architecture]
                left = options.budget - (time.perf_counter() - started)
                zca, flip = ("yes" if name in variant else "no" for name in ("zca", "flip"))
                head = f"{architecture:<12} {size:>9} {zca:>4} {flip:>4} {n_train:>6} {n_test:>5}"
                if projected > left:
                    print(f"{head} skipped: projected {projected:.0f} s, {left:.0f} s left")
                    continue
                start = time.perf_counter()
                layers = architecture_layers(architecture, 2**0.5)
                train = xp.asarray(images_of(sample.X_train, shape))
                test = xp.asarray(images_of(sample.X_test, shape))
                gram = pair_kernels(xp, layers, train, memory_bytes=memory)
                cross = pair_kernels(xp, layers, test, train, memory_bytes=memory)
                if flips:
                    mirrors = xp.asarray(images_of(mirrored(sample.X_train, shape), shape))
                    with_mirrors = pair_kernels(xp, layers, train, mirrors, memory_bytes=memory)
                    test_mirrors = pair_kernels(xp, layers, test, mirrors, memory_bytes=memory)
                    gram = tuple(
                        (K + (B + B.T) / 2) / 2 for K, B in zip(gram, with_mirrors, strict=True)
                    )
                    cross = tuple((K + B) / 2 for K, B in zip(cross, test_mirrors, strict=True))
                accuracies = []
                for K, K_test in zip(gram, cross, strict=True):
                    host = to_host(K)
                    if not np.isfinite(host).all():
                        raise SystemExit(f"{architecture}: a kernel entry is not finite")
                    coef = solve(host, one_hot(sample.y_train, 10)).coef
                    predicted = (to_host(K_test) @ coef).argmax(axis=1)
                    accuracies.append(float(np.mean(predicted == sample.y_test)))
                seconds = time.perf_counter() - start
                print(
                    f"{head} {accuracies[0]:>7.4f} {accuracies[1]:>7.4f} {seconds:>8.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()

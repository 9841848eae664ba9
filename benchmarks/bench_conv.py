"""Convolutional kernels against neural-tangents: time per image pair, NNGP and NTK, float64.

Both sides compute the symmetric Gram matrix of the same real 28 x 28 images (the first
``--images`` of the local training split, pixel/255; ``--flatten-images`` for the
flatten read-out, whose pairs cost microseconds: per-call costs would otherwise be most
of the time on both sides) for each architecture, neural-tangents in its own Python
(``--nt-python``; how to make one: ``bench_neural_tangents.py``), in batches of 10 as its
users run it, ntkdemo here on every core. Each side runs twice and the second call is
timed (the first includes JAX's compilation and numba's cache load). This is repeated
``--rounds`` times, the two sides taking turns, and each side's best time is kept
(timeit's convention: noise only adds time); each round's ratio is printed as well.

The table gives seconds per pair, the ratio, the largest difference of the two Gram
matrices relative to their largest entry, the flops per pair of ntkdemo's fold (adds and
multiplies of its steps, the ReLU's angle counted as 40, the planes it skips at black
patches counted too) and the rate they reach against the machine's float64 FMA rate,
measured in the same run by a large ``numpy`` product.

Usage: ``python benchmarks/bench_conv.py --nt-python nt-venv/bin/python [--images 20]
[--flatten-images 200] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARCHITECTURES = ("myrtle5", "cnn-gap-2", "cnn-flatten-3")

NEURAL_TANGENTS = r"""
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from neural_tangents import batch, stax

def conv():
    return [stax.Conv(1, (3, 3), padding="SAME", W_std=2**0.5), stax.Relu()]

def network(name):
    pool = [stax.AvgPool((2, 2), strides=(2, 2))]
    if name == "myrtle5":
        layers = conv() + conv() + pool + conv() + pool + conv() + [stax.GlobalAvgPool()]
    elif name.startswith("cnn-gap-"):
        layers = sum((conv() for _ in range(int(name[-1]))), []) + [stax.GlobalAvgPool()]
    else:
        layers = sum((conv() for _ in range(int(name[-1]))), []) + [stax.Flatten()]
    return stax.serial(*layers, stax.Dense(1, W_std=2**0.5))[2]

images = np.load(sys.argv[1])
result = {}
for name in sys.argv[2:]:
    kernel_fn = batch(network(name), batch_size=10)
    for _ in range(2):
        start = time.perf_counter()
        kernels = kernel_fn(images, None, ("nngp", "ntk"))
        ntk = np.asarray(kernels.ntk)
        seconds = time.perf_counter() - start
    result[name] = {"seconds": seconds, "ntk": ntk.tolist()}
print(json.dumps(result))
"""


def flops_per_pair(name: str, height: int = 28) -> float:
    """Adds and multiplies of ntkdemo's fold for one pair (angle = 40 flops)."""
    from ntkdemo.kernels import AvgPool, Conv, Relu, architecture_layers
    from ntkdemo.kernels.layers import needs_full_covariance

    layers = architecture_layers(name)
    side = height
    entries = side**4 if needs_full_covariance(layers) else side**2
    total = 0.0
    for number, layer in enumerate(layers):
        if isinstance(layer, Conv) and number == 0:
            total += entries * (2 * 9 + 4)  # the patches' nine products, the affine step
        elif isinstance(layer, Conv):
            total += entries * (2 * 8 + 4)  # two nine-offset sums, the affine step
        elif isinstance(layer, Relu):
            total += entries * (8 + 40 + 6)
        elif isinstance(layer, AvgPool):
            total += 2 * entries
            side //= 2
            entries = side**4
    return total


def fma_rate() -> float:
    """Float64 flops per second of a 4,000 x 4,000 product on this machine, best of 3."""
    a = np.random.default_rng(0).random((4000, 4000))
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * 4000**3 / best


def measure_round(
    nt_python: str, sample, counts: dict[str, int]
) -> dict[str, tuple[float, float, np.ndarray, np.ndarray]]:
    """One round, neural-tangents then ntkdemo: per architecture, the two sides' seconds
    for the Gram matrix of its first ``counts[name]`` images and their two NTKs."""
    from ntkdemo.kernels import conv_kernels

    theirs = {}
    with tempfile.TemporaryDirectory() as folder:
        for count in sorted(set(counts.values())):
            path = Path(folder) / f"images{count}.npy"
            np.save(path, sample.X_train[:count].reshape(-1, 28, 28, 1))
            names = [name for name in ARCHITECTURES if counts[name] == count]
            done = subprocess.run(
                [nt_python, "-c", NEURAL_TANGENTS, str(path), *names],
                capture_output=True,
                text=True,
                check=True,
            )
            theirs.update(json.loads(done.stdout.strip().splitlines()[-1]))
    measured = {}
    for name in ARCHITECTURES:
        images = sample.X_train[: counts[name]].reshape(-1, 28, 28, 1)
        for _ in range(2):
            start = time.perf_counter()
            _, ntk = conv_kernels(images, architecture=name, w_std=2**0.5)  # as theirs
            seconds = time.perf_counter() - start
        measured[name] = (theirs[name]["seconds"], seconds, np.asarray(theirs[name]["ntk"]), ntk)
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="../shared/fashion_mnist")
    parser.add_argument("--nt-python", required=True, help="a Python with neural-tangents")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--flatten-images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="turns of both sides, best kept")
    options = parser.parse_args()
    from ntkdemo import load_sample

    largest = max(options.images, options.flatten_images)
    sample = load_sample(options.dataset, max(1, -(-largest // 10)), 1, seed=0)
    counts = {
        name: options.flatten_images if name.startswith("cnn-flatten") else options.images
        for name in ARCHITECTURES
    }
    rounds = [measure_round(options.nt_python, sample, counts) for _ in range(options.rounds)]
    rate = fma_rate()
    print(
        f"real 28 x 28 images, NNGP + NTK, float64; float64 product rate {rate / 1e9:.1f} GFLOP/s;"
        f" best of {options.rounds} rounds"
    )
    print(
        f"{'architecture':<14} {'images':>6} {'neural-tangents ms/pair':>24} "
        f"{'ntkdemo ms/pair':>16} {'ratio':>7} {'max |diff|':>11} {'MFLOP/pair':>11} "
        f"{'of FMA rate':>12}  ratio by round"
    )
    for name in ARCHITECTURES:
        pairs = counts[name] * (counts[name] + 1) / 2
        theirs = min(one[name][0] for one in rounds)
        ours = min(one[name][1] for one in rounds)
        by_round = " ".join(f"{one[name][0] / one[name][1]:.1f}" for one in rounds)
        reference, ntk = rounds[0][name][2], rounds[0][name][3]
        difference = np.abs(ntk - reference).max() / np.abs(reference).max()
        flops = flops_per_pair(name)
        print(
            f"{name:<14} {counts[name]:>6} {theirs / pairs * 1e3:>24.3f} "
            f"{ours / pairs * 1e3:>16.3f} {theirs / ours:>7.2f} "
            f"{difference:>11.1e} {flops / 1e6:>11.1f} {flops * pairs / ours / rate:>11.1%}"
            f"  {by_round}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

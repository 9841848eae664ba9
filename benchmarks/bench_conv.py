"""Convolutional kernels against neural-tangents: time per image pair, NNGP and NTK, float64.

Both sides compute the symmetric Gram matrix of the same images for each network:

* the ReLU networks (``myrtle5``, ``cnn-gap-2``, ``cnn-flatten-3``, w_std sqrt(2)) on the
  first ``--images`` real 28 x 28 images of the local training split (pixel/255;
  ``--flatten-images`` for the flatten read-out, whose pairs cost microseconds: per-call
  costs would otherwise be most of the time on both sides);
* networks of other layers (w_std 1, b_std 0): an Erf ``cnn-gap-2`` and a LayerNorm
  network on the first ``--images`` real images, and a residual Erf network (a conv, two
  blocks ``(|erf+conv+erf+conv)``) on as many random 32 x 32 x 3 images (seed 0).

neural-tangents runs in its own Python (``--nt-python``; how to make one:
``bench_neural_tangents.py``), in batches of 10 as its users run it, ntkdemo here on every
core. Each side runs twice and the second call is timed (the first includes JAX's
compilation and numba's cache load). This is repeated ``--rounds`` times, the two sides
taking turns, and each side's best time is kept (timeit's convention: noise only adds
time); each round's ratio is printed as well.

The table gives seconds per pair, the ratio, the largest difference of the two NTK
matrices relative to their largest entry and, for the ReLU networks, the flops per pair
of ntkdemo's fold (adds and multiplies of its steps, the ReLU's angle counted as 40, the
planes it skips at black patches counted too) and the rate they reach against the
machine's float64 FMA rate, measured in the same run by a large ``numpy`` product.

Usage: ``python benchmarks/bench_conv.py --nt-python nt-venv/bin/python [--images 20]
[--flatten-images 200] [--rounds 3]``
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NETWORKS = {
    "myrtle5": ("grey", "myrtle5", 2**0.5),
    "cnn-gap-2": ("grey", "cnn-gap-2", 2**0.5),
    "cnn-flatten-3": ("flatten", "cnn-flatten-3", 2**0.5),
    "erf-gap-2": ("grey", "conv+erf+conv+erf+gap+dense", 1.0),
    "layernorm-gap-2": ("grey", "conv+layernorm+relu+conv+layernorm+relu+gap+dense", 1.0),
    "residual-erf": (
        "colour",
        "conv+(|erf+conv+erf+conv)+(|erf+conv+erf+conv)+erf+gap+dense",
        1.0,
    ),
}
"""Each network: its images, its ntkdemo architecture and its w_std (b_std 0)."""

NEURAL_TANGENTS = r"""
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from neural_tangents import batch, stax

def conv(w_std=1.0):
    return stax.Conv(1, (3, 3), padding="SAME", W_std=w_std)

def relu_network(name):
    block = lambda: [conv(2**0.5), stax.Relu()]
    pool = [stax.AvgPool((2, 2), strides=(2, 2))]
    if name == "myrtle5":
        layers = block() + block() + pool + block() + pool + block() + [stax.GlobalAvgPool()]
    elif name.startswith("cnn-gap-"):
        layers = sum((block() for _ in range(int(name[-1]))), []) + [stax.GlobalAvgPool()]
    else:
        layers = sum((block() for _ in range(int(name[-1]))), []) + [stax.Flatten()]
    return stax.serial(*layers, stax.Dense(1, W_std=2**0.5))[2]

def network(name):
    if name in ("myrtle5", "cnn-gap-2", "cnn-flatten-3"):
        return relu_network(name)
    if name == "erf-gap-2":
        layers = [conv(), stax.Erf(), conv(), stax.Erf(), stax.GlobalAvgPool()]
    elif name == "layernorm-gap-2":
        norm = lambda: stax.LayerNorm(axis=-1)
        layers = [conv(), norm(), stax.Relu(), conv(), norm(), stax.Relu(), stax.GlobalAvgPool()]
    else:
        block = stax.serial(stax.Erf(), conv(), stax.Erf(), conv())
        residual = [stax.FanOut(2), stax.parallel(stax.Identity(), block), stax.FanInSum()]
        layers = [conv(), *residual, *residual, stax.Erf(), stax.GlobalAvgPool()]
    return stax.serial(*layers, stax.Dense(1))[2]

result = {}
for name, path in zip(sys.argv[1::2], sys.argv[2::2]):
    images = np.load(path)
    kernel_fn = batch(network(name), batch_size=10)
    for _ in range(2):
        start = time.perf_counter()
        ntk = np.asarray(kernel_fn(images, None, ("nngp", "ntk")).ntk)
        seconds = time.perf_counter() - start
    result[name] = {"seconds": seconds, "ntk": ntk.tolist()}
print(json.dumps(result))
"""


def flops_per_pair(name: str, height: int = 28) -> float:
    """Adds and multiplies of ntkdemo's fold of a ReLU network for one pair (angle = 40
    flops)."""
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
    nt_python: str, images: dict[str, np.ndarray]
) -> dict[str, tuple[float, float, np.ndarray, np.ndarray]]:
    """One round, neural-tangents then ntkdemo: per network, the two sides' seconds for
    its Gram matrix and their two NTKs."""
    from ntkdemo.kernels import conv_kernels

    with tempfile.TemporaryDirectory() as folder:
        arguments = []
        for name, (kind, _, _) in NETWORKS.items():
            path = Path(folder) / f"{kind}.npy"
            np.save(path, images[kind])
            arguments += [name, str(path)]
        done = subprocess.run(
            [nt_python, "-c", NEURAL_TANGENTS, *arguments],
            capture_output=True,
            text=True,
            check=True,
        )
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    measured = {}
    for name, (kind, architecture, w_std) in NETWORKS.items():
        for _ in range(2):
            start = time.perf_counter()
            _, ntk = conv_kernels(images[kind], architecture=architecture, w_std=w_std)
            seconds = time.perf_counter() - start
        measured[name] = (theirs[name]["seconds"], seconds, np.asarray(theirs[name]["ntk"]), ntk)
    return measured


def main() -> int:
    from ntkdemo import load_sample
    from ntkdemo.cli.options import positive_int, script_parser

    parser = script_parser(__doc__)
    parser.add_argument("--dataset", default="../shared/fashion_mnist", help="dataset folder")
    parser.add_argument("--nt-python", required=True, help="a Python with neural-tangents")
    parser.add_argument("--images", type=positive_int, default=20, help="images per Gram")
    parser.add_argument(
        "--flatten-images", type=positive_int, default=200, help="images per flatten Gram"
    )
    parser.add_argument("--rounds", type=positive_int, default=3, help="turns, best kept")
    options = parser.parse_args()
    largest = max(options.images, options.flatten_images)
    sample = load_sample(options.dataset, max(1, -(-largest // 10)), 1, seed=0)
    grey = sample.X_train.reshape(-1, 28, 28, 1)
    images = {
        "grey": grey[: options.images],
        "flatten": grey[: options.flatten_images],
        "colour": np.random.default_rng(0).standard_normal((options.images, 32, 32, 3)),
    }
    rounds = [measure_round(options.nt_python, images) for _ in range(options.rounds)]
    rate = fma_rate()
    print(
        f"NNGP + NTK, float64; float64 product rate {rate / 1e9:.1f} GFLOP/s; best of "
        f"{options.rounds} rounds"
    )
    print(
        f"{'network':<16} {'images':>12} {'neural-tangents ms/pair':>24} "
        f"{'ntkdemo ms/pair':>16} {'ratio':>7} {'max |diff|':>11} {'MFLOP/pair':>11} "
        f"{'of FMA rate':>12}  ratio by round"
    )
    for name, (kind, architecture, _) in NETWORKS.items():
        count, *shape = images[kind].shape
        pairs = count * (count + 1) / 2
        theirs = min(one[name][0] for one in rounds)
        ours = min(one[name][1] for one in rounds)
        by_round = " ".join(f"{one[name][0] / one[name][1]:.1f}" for one in rounds)
        reference, ntk = rounds[0][name][2], rounds[0][name][3]
        difference = np.abs(ntk - reference).max() / np.abs(reference).max()
        flops = f"{'':>11} {'':>12}"
        if architecture == name:  # a ReLU network: its flops are counted
            count_flops = flops_per_pair(name)
            flops = f"{count_flops / 1e6:>11.1f} {count_flops * pairs / ours / rate:>12.1%}"
        print(
            f"{name:<16} {'x'.join(map(str, shape)) + f' x{count}':>12} "
            f"{theirs / pairs * 1e3:>24.3f} {ours / pairs * 1e3:>16.3f} {theirs / ours:>7.2f} "
            f"{difference:>11.1e} {flops}  {by_round}"
        )
    return 0


if __name__ == "__main__":
    from ntkdemo.cli.options import run_script

    sys.exit(run_script(main))

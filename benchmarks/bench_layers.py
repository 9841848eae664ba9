"""Networks beyond ReLU against neural-tangents: time per image pair, NNGP and NTK, float64.

The compositions that ntkdemo runs in its array fold (NumPy tiles on every core; the
compiled loops serve only ReLU networks of the default settings), each as the Gram
matrix of the same images on both sides: an Erf ``cnn-gap-2`` and a LayerNorm network
on the first ``--images`` real 28 x 28 images of the local training split (pixel/255),
and a residual Erf network on as many random 32 x 32 x 3 images (seed 0).
neural-tangents runs in its own Python (``--nt-python``; how to make one:
``bench_neural_tangents.py``), in batches of 10 as its users run it. Each side runs
twice and the second call is timed; this is repeated ``--rounds`` times, the two sides
taking turns, and each side's best time is kept. The table gives seconds per pair, the
ratio, and the largest difference of the two NTK matrices relative to their largest
entry.

Usage: ``python benchmarks/bench_layers.py --nt-python nt-venv/bin/python [--images 10]
[--rounds 2]``
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
    "erf-gap-2": ("grey", "conv+erf+conv+erf+gap+dense"),
    "layernorm-gap-2": ("grey", "conv+layernorm+relu+conv+layernorm+relu+gap+dense"),
    "residual-erf": ("colour", "conv+(|erf+conv+erf+conv)+(|erf+conv+erf+conv)+erf+gap+dense"),
}
"""Each benchmark network: its images and its written form (w_std 1, b_std 0)."""

NEURAL_TANGENTS = r"""
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from neural_tangents import batch, stax

def conv():
    return stax.Conv(1, (3, 3), padding="SAME")

def network(name):
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


def measure_round(nt_python: str, images: dict[str, np.ndarray]) -> dict[str, tuple]:
    """One round, neural-tangents then ntkdemo: per network, both sides' seconds for its
    Gram matrix and their two NTKs."""
    from ntkdemo.kernels import conv_kernels

    with tempfile.TemporaryDirectory() as folder:
        arguments = []
        for name, (kind, _) in NETWORKS.items():
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
    for name, (kind, written) in NETWORKS.items():
        for _ in range(2):
            start = time.perf_counter()
            _, ntk = conv_kernels(images[kind], architecture=written)
            seconds = time.perf_counter() - start
        measured[name] = (theirs[name]["seconds"], seconds, np.asarray(theirs[name]["ntk"]), ntk)
    return measured


def main() -> int:
    from ntkdemo import load_sample
    from ntkdemo.cli.options import positive_int, script_parser

    parser = script_parser(__doc__)
    parser.add_argument("--dataset", default="../shared/fashion_mnist", help="dataset folder")
    parser.add_argument("--nt-python", required=True, help="a Python with neural-tangents")
    parser.add_argument("--images", type=positive_int, default=10, help="images per Gram")
    parser.add_argument("--rounds", type=positive_int, default=2, help="turns, best kept")
    options = parser.parse_args()
    count = options.images
    sample = load_sample(options.dataset, max(1, -(-count // 10)), 1, seed=0)
    images = {
        "grey": sample.X_train[:count].reshape(-1, 28, 28, 1),
        "colour": np.random.default_rng(0).standard_normal((count, 32, 32, 3)),
    }
    rounds = [measure_round(options.nt_python, images) for _ in range(options.rounds)]
    pairs = count * (count + 1) / 2
    print(f"{count} images a Gram, NNGP + NTK, float64; best of {options.rounds} rounds")
    print(
        f"{'network':<16} {'images':>12} {'neural-tangents ms/pair':>24} "
        f"{'ntkdemo ms/pair':>16} {'ratio':>7} {'max |diff|':>11}  ratio by round"
    )
    for name, (kind, _) in NETWORKS.items():
        theirs = min(one[name][0] for one in rounds)
        ours = min(one[name][1] for one in rounds)
        by_round = " ".join(f"{one[name][0] / one[name][1]:.1f}" for one in rounds)
        reference, ntk = rounds[0][name][2], rounds[0][name][3]
        difference = np.abs(ntk - reference).max() / np.abs(reference).max()
        shape = "x".join(str(size) for size in images[kind].shape[1:])
        print(
            f"{name:<16} {shape:>12} {theirs / pairs * 1e3:>24.3f} {ours / pairs * 1e3:>16.3f} "
            f"{theirs / ours:>7.2f} {difference:>11.1e}  {by_round}"
        )
    return 0


if __name__ == "__main__":
    from ntkdemo.cli.options import run_script

    sys.exit(run_script(main))

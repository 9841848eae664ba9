"""neural-tangents comparison: the same kernel and solve, float64, 5,000 x 3,000 images.

neural-tangents is not a dependency of ntkdemo, and 0.6.5 (its last release) needs
``jax==0.4.30``, ``jaxlib==0.4.30`` and ``numpy<2``: give the Python of a virtual
environment that has them with ``--nt-python``, e.g.::

    python -m venv nt-venv
    nt-venv/bin/pip install "jax==0.4.30" "jaxlib==0.4.30" "numpy<2" "neural-tangents==0.6.5"
    python benchmarks/bench_neural_tangents.py --nt-python nt-venv/bin/python

The sample (500 training images per class, balanced, and the whole local test split)
is written to a
temporary file; neural-tangents runs in that Python (CPU, ``jax_enable_x64``) on the
unit rows scaled by ``sqrt(784)``, through ``Dense(W_std=1) -> Relu -> Dense(W_std=sqrt 2)``,
whose NTK is the mission formula (checked: the largest difference of the two training
kernels is printed); ntkdemo runs here. Each side is timed twice in its own process
(the first call includes JAX's compilation and numba's cache load); the table gives
both calls, and the ratio of the second ones.
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

NEURAL_TANGENTS = r"""
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from neural_tangents import predict, stax

data = np.load(sys.argv[1])
scale = np.sqrt(data["x_train"].shape[1])
x_train, x_test = data["x_train"] * scale, data["x_test"] * scale
y_train = data["y_train"]
_, _, kernel_fn = stax.serial(
    stax.Dense(512, W_std=1.0), stax.Relu(), stax.Dense(1, W_std=2.0**0.5)
)
kernel_fn = jax.jit(kernel_fn, static_argnames="get")
runs = []
for _ in range(2):
    start = time.perf_counter()
    train = kernel_fn(x_train, None, "ntk").block_until_ready()
    kernel = time.perf_counter() - start
    start = time.perf_counter()
    mean = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, diag_reg=0.0)
    scores = np.asarray(mean(None, x_test, get="ntk"))
    runs.append({"kernel": kernel, "end_to_end": time.perf_counter() - start})
print(json.dumps({
    "runs": runs,
    "corner": np.asarray(train[:200, :200]).tolist(),
    "predictions": scores.argmax(axis=1).tolist(),
}))
"""


def ntkdemo_side(X_train: np.ndarray, Y: np.ndarray, X_test: np.ndarray) -> dict:
    """Kernel, and kernel + Cholesky + predictions, twice, on the same arrays."""
    from ntkdemo import ntk, predict, solve

    runs = []
    for _ in range(2):
        start = time.perf_counter()
        K = ntk(X_train)
        kernel = time.perf_counter() - start
        start = time.perf_counter()
        solution = solve(ntk(X_train), Y, overwrite_k=True)
        scores = predict(ntk(X_test, X_train), solution)
        runs.append({"kernel": kernel, "end_to_end": time.perf_counter() - start})
    return {"runs": runs, "corner": K[:200, :200], "predictions": scores.argmax(axis=1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="../shared/fashion_mnist")
    parser.add_argument("--nt-python", required=True, help="a Python with neural-tangents")
    options = parser.parse_args()
    from ntkdemo import load_sample, one_hot
    from ntkdemo.kernels import unit_rows

    sample = load_sample(options.dataset, 500, None, seed=0)
    X_train, X_test = unit_rows(sample.X_train), unit_rows(sample.X_test)
    Y = one_hot(sample.y_train, sample.n_classes)
    with tempfile.TemporaryDirectory() as folder:
        arrays = Path(folder) / "sample.npz"
        np.savez(arrays, x_train=X_train, x_test=X_test, y_train=Y)
        done = subprocess.run(
            [options.nt_python, "-c", NEURAL_TANGENTS, str(arrays)],
            capture_output=True,
            text=True,
            check=True,
        )
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    ours = ntkdemo_side(X_train, Y, X_test)
    difference = np.abs(np.asarray(theirs["corner"]) - ours["corner"]).max()
    agreement = np.mean(np.equal(theirs["predictions"], ours["predictions"]))
    print(
        f"5,000 x 3,000 images, float64; training kernels differ by at most {difference:.1e}; "
        f"test predictions agree on {agreement:.4f}"
    )
    print(f"{'measurement':<28} {'neural-tangents':>16} {'ntkdemo':>9} {'ratio':>7}")
    for key, name in (("kernel", "training kernel (s)"), ("end_to_end", "end to end (s)")):
        for call in (0, 1):
            a, b = theirs["runs"][call][key], ours["runs"][call][key]
            ratio = f"{a / b:7.2f}" if call else f"{'':>7}"
            print(
                f"{name + (' first' if call == 0 else ' second'):<28} {a:>16.2f} {b:>9.2f} {ratio}"
            )


if __name__ == "__main__":
    sys.exit(main())

"""Test accuracy of a convolutional kernel with a ridge chosen by leave-one-out on the
training images: the kernels computed once (and cached), then every ridge of a grid.

The sample is ``accuracy_conv.py``'s: ``--per-class`` training images per class
(``load_sample(..., seed=0)``) and the first ``--test`` images of the balanced test
order, rescaled as every strategy rescales them. For a ridge :math:`\\lambda` (given
relative to the mean of the kernel's diagonal), the leave-one-out outputs of kernel
ridge regression on one-hot targets come from one eigendecomposition of the kernel
(:func:`leave_one_out_outputs`); the ridge with the most leave-one-out hits (the smallest
among ties) is chosen without looking at the test images, whose accuracy is then
printed beside every other ridge's for comparison. Ridge 0 is the trained infinite
network (Cholesky, jitter fallback, as ``ntkdemo run``); every test accuracy is
``ntkdemo.solvers.solve`` at that ridge.

With ``--flip`` every kernel is the one averaged over left-right mirrors,
:math:`\\bar K(x, y) = (K(x, y) + K(x, Fy)) / 2` (``ntkdemo.kernels.mirror``: training on
the images and their mirrors, at half the ridge), its mirror parts :math:`K(X, FX)`
(upper triangle) and :math:`K(T, FX)` computed beside the plain kernels (and cached
with them).

Usage: ``python benchmarks/accuracy_ridge.py [--architecture myrtle5] [--per-class 100]
[--test 1000] [--flip] [--cache kernels.npz]``
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np

RELATIVE_RIDGES = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
"""Ridges of the grid, relative to the mean of the kernel's diagonal."""

STRIP_ROWS = 50
"""Rows of one strip of the upper triangle of :math:`K(X, FX)`."""


Progress = Callable[[str], Callable[[Iterable], Iterable]]
"""``bar(description)``: a wrapper of an iterator of chunks, showing progress."""


def plain_kernels(
    X: np.ndarray, X_test: np.ndarray, network: dict, bar: Progress
) -> dict[str, np.ndarray]:
    """NNGP and NTK of the training images (``*_train``) and of the test images against
    them (``*_test``)."""
    from ntkdemo.kernels import conv_kernels

    train = conv_kernels(X, **network, progress=bar("training pairs"))
    test = conv_kernels(X_test, X, **network, progress=bar("test pairs"))
    return {
        "nngp_train": train[0],
        "ntk_train": train[1],
        "nngp_test": test[0],
        "ntk_test": test[1],
    }


def mirror_kernels(
    X: np.ndarray, X_test: np.ndarray, network: dict, bar: Progress
) -> dict[str, np.ndarray]:
    """The mirror parts :math:`K(X, FX)` (``*_train``, symmetric: its upper triangle in
    strips of rows, then mirrored) and :math:`K(T, FX)` (``*_test``), NNGP and NTK."""
    from ntkdemo.kernels import conv_kernels, mirror_upper
    from ntkdemo.kernels.blocks import assemble
    from ntkdemo.kernels.mirror import mirrored

    mirrors = mirrored(X, network["image_shape"])
    n = len(X)
    nngp, ntk = np.empty((n, n)), np.empty((n, n))

    def fill(block: np.ndarray, rows: slice, cols: slice, diagonal: bool) -> None:
        block[:], ntk[rows, cols] = conv_kernels(X[rows], mirrors[cols], **network)

    assemble(fill, n, None, nngp, np.float64, STRIP_ROWS, bar("training pairs x mirrors"))
    mirror_upper(ntk)
    test = conv_kernels(X_test, mirrors, **network, progress=bar("test pairs x mirrors"))
    return {"nngp_train": nngp, "ntk_train": ntk, "nngp_test": test[0], "ntk_test": test[1]}


def leave_one_out_outputs(
    eigenvalues: np.ndarray,
    U: np.ndarray,
    rotated: np.ndarray,
    targets: np.ndarray,
    ridge: float,
) -> np.ndarray:
    r"""Outputs of kernel ridge regression at each training point, trained without it.

    With :math:`K = U \operatorname{diag}(e) U^T` and :math:`G = K + \lambda I`, the
    model trained on every point but :math:`i` predicts at :math:`x_i`

    .. math:: Y_i - \frac{(G^{-1} Y)_i}{(G^{-1})_{ii}},

    where :math:`G^{-1} = U \operatorname{diag}(1 / (e + \lambda)) U^T`: one
    eigendecomposition serves every ridge.

    Parameters
    ----------
    eigenvalues, U : ndarray of shape (n,) and (n, n)
        ``np.linalg.eigh(K)``.
    rotated : ndarray of shape (n, n_targets)
        ``U.T @ targets``.
    targets : ndarray of shape (n, n_targets)
    ridge : float
        :math:`\lambda`, with ``eigenvalues.min() + ridge > 0``.

    Returns
    -------
    ndarray of shape (n, n_targets)
    """
    inverse = 1.0 / (eigenvalues + ridge)
    coef = U @ (inverse[:, None] * rotated)
    diagonal = (U**2) @ inverse
    return targets - coef / diagonal[:, None]


def cache_key(dataset: str, sample, network: dict) -> str:
    """Everything that makes the cached kernels, as one JSON text: the network (name,
    weight and bias scales, image shape), the dataset, the rows drawn (a digest of the
    training and test indices: the sizes and seed included). The mirror parts of
    ``--flip`` are more entries of the same file."""
    import hashlib

    from ntkdemo.kernels import architecture_layers

    rows = hashlib.sha256(
        np.concatenate([sample.train_indices, [-1], sample.test_indices]).astype("<i8").tobytes()
    ).hexdigest()
    return json.dumps(
        {
            "layers": [
                repr(layer)
                for layer in architecture_layers(network["architecture"], network["w_std"])
            ],
            "architecture": network["architecture"],
            "image_shape": list(network["image_shape"]),
            "dataset": os.path.abspath(dataset),
            "train": len(sample.y_train),
            "test": len(sample.y_test),
            "rows": rows,
        },
        sort_keys=True,
    )


def read_cache(path: str | None, key: str) -> dict[str, np.ndarray]:
    """The kernels cached at ``path`` for ``key`` (none if there is no such file).

    Raises
    ------
    InvalidParameterError
        If the file holds kernels of anything else (another network, sample or size).
    """
    from ntkdemo.errors import InvalidParameterError

    if not path or not os.path.exists(path):
        return {}
    cached = dict(np.load(path))
    found = str(cached.pop("key", ""))
    if found != key:
        wanted, held = json.loads(key), json.loads(found) if found else {}
        differences = "; ".join(
            f"{name} {held.get(name, 'unrecorded')} (this run: {wanted[name]})"
            for name in sorted(wanted)
            if held.get(name) != wanted[name]
            and (name != "layers" or held.get("architecture") == wanted["architecture"])
        )
        raise InvalidParameterError(
            f"--cache {path} holds the kernels of another run: {differences}; name another "
            "--cache file, or delete it to recompute"
        )
    return cached


def balanced_sample(dataset: str, per_class: int, test: int):
    """``per_class`` training images per class (seed 0) and the first ``test`` images of
    the balanced test order: the sample of every run of this script (and of
    ``bench_features.py``).

    Raises
    ------
    InvalidParameterError
        If ``test`` is more than the balanced test images.
    """
    from ntkdemo import load_sample
    from ntkdemo.errors import InvalidParameterError

    sample = load_sample(dataset, per_class, None, seed=0)
    if test > len(sample.y_test):
        raise InvalidParameterError(
            f"--test {test} asks for more than the {len(sample.y_test)} balanced test "
            f"images of {dataset}; use at most {len(sample.y_test)}"
        )
    return replace(
        sample,
        X_test=sample.X_test[:test],
        y_test=sample.y_test[:test],
        test_indices=sample.test_indices[:test],
    )


def main() -> int:
    from ntkdemo.cli.options import architecture_name, positive_int, script_parser

    parser = script_parser(__doc__)
    parser.add_argument("--dataset", default="../shared/fashion_mnist_60k", help="dataset folder")
    parser.add_argument(
        "--architecture", type=architecture_name, default="myrtle5", help="the network"
    )
    parser.add_argument("--per-class", type=positive_int, default=100, help="training images")
    parser.add_argument("--test", type=positive_int, default=1000, help="test images")
    parser.add_argument("--flip", action="store_true", help="kernels averaged over mirrors")
    parser.add_argument(
        "--cache",
        default=None,
        help="npz of the kernels: read when it holds this run's (its key: network, dataset, "
        "rows, sizes), written if absent, refused if it holds another run's",
    )
    options = parser.parse_args()
    from tqdm import tqdm

    from ntkdemo.errors import InvalidParameterError
    from ntkdemo.kernels import scaled_unit_rows
    from ntkdemo.kernels.mirror import is_mirror_symmetric
    from ntkdemo.solvers import one_hot, solve

    sample = balanced_sample(options.dataset, options.per_class, options.test)
    X, X_test = scaled_unit_rows(sample.X_train), scaled_unit_rows(sample.X_test)
    network = {  # w_std sqrt(2), as every run behind the README's rows (b_std 0: a scale)
        "architecture": options.architecture,
        "image_shape": sample.image_shape,
        "w_std": 2**0.5,
    }
    parts = {"": lambda bar: plain_kernels(X, X_test, network, bar)}
    if options.flip:
        if not is_mirror_symmetric(options.architecture, sample.image_shape):
            raise InvalidParameterError(
                f"{options.architecture} is not mirror symmetric on images of "
                f"{sample.image_shape}: its kernel averaged over mirrors is not the network "
                "trained on the mirrors too"
            )
        parts["_mirror"] = lambda bar: mirror_kernels(X, X_test, network, bar)
    key = cache_key(options.dataset, sample, network)
    cached = read_cache(options.cache, key)
    for suffix, compute in parts.items():
        label = "kernels" + suffix.replace("_", " ")
        if f"ntk_train{suffix}" in cached:
            print(f"{label} read from {options.cache}")
            continue
        start = time.perf_counter()
        computed = compute(
            lambda description: lambda chunks: tqdm(chunks, desc=description, leave=False)
        )
        print(
            f"{label} of {len(X)} x {len(X)} and {len(X_test)} x {len(X)}: "
            f"{time.perf_counter() - start:.0f} s"
        )
        cached.update({f"{name}{suffix}": value for name, value in computed.items()})
        if options.cache:
            np.savez(options.cache, key=np.array(key), **cached)
    kernels = {}
    for name in ("nngp", "ntk"):
        train, test = cached[f"{name}_train"], cached[f"{name}_test"]
        if options.flip:
            train = (train + cached[f"{name}_train_mirror"]) / 2
            test = (test + cached[f"{name}_test_mirror"]) / 2
        kernels[name] = (train, test)
    targets = one_hot(sample.y_train, sample.n_classes)
    averaged = ", kernels averaged over mirrors" if options.flip else ""
    print(
        f"{options.architecture}, {len(sample.y_train)} training and "
        f"{len(sample.y_test)} test images{averaged}"
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
            if eigenvalues.min() + ridge > 0:
                held_out = leave_one_out_outputs(eigenvalues, U, rotated, targets, ridge)
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
    from ntkdemo.cli.options import run_script

    sys.exit(run_script(main))

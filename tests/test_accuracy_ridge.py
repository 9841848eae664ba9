"""The two computations of ``benchmarks/accuracy_ridge.py`` behind its README numbers:
leave-one-out outputs from one eigendecomposition, and the mirror parts of the kernels
averaged over mirrors computed by upper strips."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ntkdemo.kernels import conv_kernels
from ntkdemo.kernels.mirror import mirrored

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy_ridge.py"


@pytest.fixture(scope="module")
def accuracy_ridge():
    spec = importlib.util.spec_from_file_location("accuracy_ridge", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("ridge", [0.0, 1e-3, 0.5])
def test_leave_one_out_outputs_are_the_models_trained_without_each_point(accuracy_ridge, ridge):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((25, 40))
    K = features @ features.T
    targets = np.eye(3)[np.arange(25) % 3]
    eigenvalues, U = np.linalg.eigh(K)
    held_out = accuracy_ridge.leave_one_out_outputs(eigenvalues, U, U.T @ targets, targets, ridge)
    for i in range(25):
        kept = np.arange(25) != i
        coef = np.linalg.solve(K[np.ix_(kept, kept)] + ridge * np.eye(24), targets[kept])
        np.testing.assert_allclose(held_out[i], K[i, kept] @ coef, rtol=0, atol=1e-9)


def test_mirror_parts_by_upper_strips_equal_the_whole_products(accuracy_ridge, monkeypatch):
    """K(X, FX) from strips of rows against the rows from theirs on, mirrored, equals
    the whole product (to rounding: the fold sees other tiles), and K(T, FX) too."""
    monkeypatch.setattr(accuracy_ridge, "STRIP_ROWS", 3)  # several strips of 8 rows
    rng = np.random.default_rng(1)
    X, X_test = rng.random((8, 36)), rng.random((5, 36))
    network = {"architecture": "cnn-gap-1", "image_shape": (6, 6)}
    parts = accuracy_ridge.mirror_kernels(X, X_test, network, lambda description: None)
    train = conv_kernels(X, mirrored(X, (6, 6)), **network)
    test = conv_kernels(X_test, mirrored(X, (6, 6)), **network)
    for index, name in enumerate(("nngp", "ntk")):
        np.testing.assert_array_equal(parts[f"{name}_train"], parts[f"{name}_train"].T)
        for part, whole in (("train", train), ("test", test)):
            np.testing.assert_allclose(
                parts[f"{name}_{part}"], whole[index], rtol=0, atol=1e-13 * whole[index].max()
            )

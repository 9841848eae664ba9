"""Accuracy against training-set size, by training time (kernel) and by width (networks)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ntkdemo.cli import main
from ntkdemo.data import load_sample
from ntkdemo.kernels import ntk
from ntkdemo.solvers import one_hot, predict, solve
from ntkdemo.theory.experiments import accuracy_by_time_and_width


@pytest.fixture(scope="module")
def curves(tiny_dataset):
    sample = load_sample(str(tiny_dataset), 9, 5)
    result = accuracy_by_time_and_width(
        sample, [3, 6, 9], [0.0, 10.0, np.inf], [8, 32], rng=np.random.default_rng(0), steps=20
    )
    return sample, result


def test_converged_curve_is_kernel_regression(curves):
    """t = inf equals the accuracy of kernel regression with the one-layer formula, solved
    independently (at ridge 0 predictions do not depend on the kernel's constant factor)."""
    sample, result = curves
    converged = result.kernel_accuracy["NTK"][list(result.times).index(np.inf)]
    for column, size in enumerate(result.sizes):
        n = size * sample.n_classes
        solution = solve(ntk(sample.X_train[:n]), one_hot(sample.y_train[:n], sample.n_classes))
        scores = predict(ntk(sample.X_test, sample.X_train[:n]), solution)
        assert converged[column] == np.mean(scores.argmax(1) == sample.y_test)


def test_time_zero_is_chance(curves):
    """The network before training outputs 0: argmax is class 0, a third of the test set."""
    sample, result = curves
    for name in ("NTK", "NNGP"):
        np.testing.assert_array_equal(result.kernel_accuracy[name][0], 1 / sample.n_classes)


def test_networks_and_their_kernel_time(curves):
    sample, result = curves
    assert result.network_accuracy.shape == (2, 3)
    assert ((0 <= result.network_accuracy) & (result.network_accuracy <= 1)).all()
    assert (result.network_time > 0).all() and np.isfinite(result.ntk_at_network_time).all()


def test_sgd_training_runs_and_has_no_kernel_time(tiny_dataset):
    sample = load_sample(str(tiny_dataset), 9, 5)
    result = accuracy_by_time_and_width(
        sample, [9], [np.inf], [16], rng=np.random.default_rng(1), training="sgd", epochs=30
    )
    assert np.isnan(result.network_time).all()
    assert result.network_accuracy[0, 0] > 1 / sample.n_classes  # it learns something


def test_the_command_writes_every_point(tiny_dataset, tmp_path, capsys):
    code = main(
        [
            "curve",
            "--dataset",
            str(tiny_dataset),
            "--train-per-class",
            "9",
            "--test-per-class",
            "5",
            "--sizes",
            "3,9",
            "--times",
            "0,1e3,inf",
            "--widths",
            "8,16",
            "--steps",
            "10",
            "--out",
            str(tmp_path),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    payload = json.loads((tmp_path / "curve-time-width.json").read_text())
    assert payload["times"] == ["0", "1000", "inf"] and payload["images"] == [9, 27]
    assert set(payload["kernel_accuracy"]) == {"NTK", "NNGP"}
    assert len(payload["kernel_accuracy"]["NTK"]["inf"]) == 2
    assert set(payload["network_accuracy"]) == {"8", "16"}
    assert payload["kernel_accuracy"]["NTK"]["0"] == [1 / 3, 1 / 3]
    assert "NTK t=inf" in out and "width 16" in out
    assert (tmp_path / "curve-time-width.png").read_bytes()[:4] == b"\x89PNG"

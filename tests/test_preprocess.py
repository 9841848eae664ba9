"""ZCA whitening and flips against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_sample
from ntkdemo.data import Sample
from ntkdemo.errors import InvalidParameterError
from ntkdemo.preprocess import with_flips, zca_whitened


def sample_of(rng: np.random.Generator, n_train: int = 40, shape=(4, 5)) -> Sample:
    return random_sample(rng, n_train, 7, shape, 2)


def test_zca_is_its_definition_fitted_on_the_training_images():
    rng = np.random.default_rng(0)
    sample = sample_of(rng)
    whitened = zca_whitened(sample, 0.1)
    centred = sample.X_train - sample.X_train.mean(1, keepdims=True)
    covariance = centred.T @ centred / len(centred)
    s, U = np.linalg.eigh(covariance)
    s = np.maximum(s, 0)
    W = U @ np.diag(1 / np.sqrt(s + 0.1 * s.mean())) @ U.T
    np.testing.assert_allclose(whitened.X_train, centred @ W, rtol=1e-10, atol=1e-12)
    test_centred = sample.X_test - sample.X_test.mean(1, keepdims=True)
    np.testing.assert_allclose(whitened.X_test, test_centred @ W, rtol=1e-10, atol=1e-12)
    # a small epsilon whitens: the training covariance is near the identity on its span
    nearly = zca_whitened(sample, 1e-8).X_train
    spectrum = np.linalg.eigvalsh(nearly.T @ nearly / len(nearly))
    assert np.allclose(spectrum[spectrum > 0.5], 1.0, atol=1e-4)


def test_zca_needs_a_positive_epsilon():
    with pytest.raises(InvalidParameterError, match="needs EPS > 0"):
        zca_whitened(sample_of(np.random.default_rng(1)), 0.0)


def test_flips_add_each_mirror_with_its_label():
    sample = sample_of(np.random.default_rng(2))
    flipped = with_flips(sample)
    n = len(sample.y_train)
    assert flipped.X_train.shape == (2 * n, 20)
    images = flipped.X_train.reshape(2 * n, 4, 5)
    np.testing.assert_array_equal(images[n:], images[:n, :, ::-1])
    np.testing.assert_array_equal(flipped.y_train, np.tile(sample.y_train, 2))
    np.testing.assert_array_equal(flipped.X_test, sample.X_test)
    np.testing.assert_array_equal(
        with_flips(flipped).X_train[2 * n :], images[:, :, ::-1].reshape(2 * n, -1)
    )


def test_command_line_takes_zca_and_flips(tiny_dataset, tmp_path, capsys):
    import json

    from ntkdemo.cli import main

    code = main(
        ["--dataset", str(tiny_dataset), "--train-per-class", "5", "--test-per-class", "3"]
        + ["--zca", "0.1", "--flip", "--out", str(tmp_path), "--quiet"]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["arguments"]["zca"] == 0.1 and metrics["arguments"]["flip"] is True
    assert metrics["flips"] == "kernel averaged"  # the one-layer NTK is mirror symmetric
    assert len(metrics["train_indices"]) == 15  # the originals: their mirrors live in the kernel

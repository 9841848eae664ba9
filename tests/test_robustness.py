"""Numerical faults, property tests on the kernels, atomic files and reproducible metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import random_images, write_image_dataset
from ntkdemo.cli import main
from ntkdemo.kernels import fc_kernels, ntk

NTK_MINIMUM = -0.13678979673805547  # at k = -0.7941 (scipy minimize_scalar; see test_kernels)


def inputs(min_rows=1, max_rows=10):
    """Random matrices of random shape and scale, rows bounded away from zero norm."""
    shapes = st.tuples(st.integers(min_rows, max_rows), st.integers(1, 8))
    entries = st.floats(-1, 1, allow_nan=False, width=64)
    return st.tuples(
        shapes.flatmap(lambda shape: arrays(np.float64, shape, elements=entries)),
        st.sampled_from([1e-6, 1e-2, 1.0, 1e3, 1e6]),
    ).map(lambda pair: _lift(pair[0]) * pair[1])


def _lift(X):
    """Give every row a direction: a row of zeros gets a 1 in its first column."""
    X = X.copy()
    X[np.linalg.norm(X, axis=1) < 1e-3, 0] = 1.0
    return X


def is_psd(K, tolerance):
    return np.linalg.eigvalsh(K)[0] >= -tolerance * max(1.0, np.abs(K).max()) * len(K)


@settings(deadline=None)
@given(X=inputs())
def test_mission_ntk_properties(X):
    K = ntk(X)
    assert np.isfinite(K).all()
    assert ((K >= NTK_MINIMUM) & (K <= 2)).all()
    np.testing.assert_array_equal(K, K.T)
    np.testing.assert_array_equal(np.diagonal(K), 2.0)
    assert is_psd(K, 1e-12)
    np.testing.assert_allclose(ntk(X, X.copy()), K, rtol=0, atol=1.3e-8)


@settings(deadline=None)
@given(X=inputs(), scale=st.sampled_from([1e-8, 1e-3, 255.0, 1e8]))
def test_mission_ntk_is_scale_free(X, scale):
    """Equal up to the documented 1.3e-8 at near-parallel pairs (unbounded slope at |k| = 1)."""
    np.testing.assert_allclose(ntk(scale * X), ntk(X), rtol=0, atol=1.3e-8)


@settings(deadline=None)
@given(X=inputs(), depth=st.integers(1, 4), w_std=st.floats(0.2, 2.5), b_std=st.floats(0, 1.5))
def test_deep_kernel_properties(X, depth, w_std, b_std):
    nngp, ntk_matrix = fc_kernels(X, depth=depth, w_std=w_std, b_std=b_std)
    cross = fc_kernels(X, X.copy(), depth=depth, w_std=w_std, b_std=b_std)
    for K, K_cross in zip((nngp, ntk_matrix), cross):
        assert np.isfinite(K).all()
        np.testing.assert_array_equal(K, K.T)
        # near-parallel rows: exact to 3e-8 relative, the documented worst case
        assert is_psd(K, 3e-8)
        np.testing.assert_allclose(K_cross, K, rtol=3e-8, atol=1e-300)
        # Cauchy-Schwarz: |K_ij| <= sqrt(K_ii K_jj), the range a covariance allows
        diagonal = np.sqrt(np.diagonal(K))
        assert (np.abs(K) <= (1 + 1e-12) * np.outer(diagonal, diagonal)).all()
    assert (nngp >= 0).all()  # ReLU outputs are never anti-correlated


def test_float32_inputs_keep_float32_and_agree():
    X = np.random.default_rng(0).random((40, 30)).astype(np.float32)
    K32 = ntk(X, dtype=np.float32)
    assert K32.dtype == np.float32
    np.testing.assert_allclose(K32, ntk(X.astype(np.float64)), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(np.diagonal(K32), 2.0)


def test_pixel_scales_give_the_same_kernel():
    pixels = np.random.default_rng(1).integers(0, 256, size=(20, 64))
    np.testing.assert_allclose(ntk(pixels), ntk(pixels / 255.0), rtol=0, atol=1e-13)
    np.testing.assert_allclose(ntk(pixels * 1e12), ntk(pixels / 255.0), rtol=0, atol=1e-13)


@pytest.fixture(scope="module")
def duplicated_dataset(tmp_path_factory):
    """Every training image appears twice: K(X, X) is singular at ridge 0."""
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1, 2], 5)
    images = random_images(rng, labels)
    twice = np.concatenate([images, images]), np.concatenate([labels, labels])
    return write_image_dataset(
        tmp_path_factory.mktemp("dup"),
        {"train": twice, "test": (random_images(rng, labels), labels)},
        ["a", "b", "c"],
    )


def test_duplicated_images_fall_back_with_a_message(duplicated_dataset, tmp_path, capsys):
    code = main(
        [
            "--dataset",
            str(duplicated_dataset),
            "--out",
            str(tmp_path),
            "--train-per-class",
            "10",
            "--test-per-class",
            "5",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "note: K + ridge*I is" in out and "added jitter" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["solver"]["jitter"] > 0
    assert metrics["train_accuracy"] == 1.0  # duplicates share labels: still fitted
    assert np.isfinite(metrics["test_accuracy"])


def _without_run_specifics(path):
    payload = json.loads(path.read_text())
    payload.pop("timings_seconds")
    payload.pop("versions")
    return json.dumps(payload, sort_keys=True).encode()


def test_same_arguments_give_byte_identical_metrics(tiny_dataset, tmp_path, capsys):
    argv = [
        "--dataset",
        str(tiny_dataset),
        "--out",
        str(tmp_path),
        "--quiet",
        "--train-per-class",
        "6",
        "--test-per-class",
        "4",
        "--seed",
        "11",
    ]
    assert main(argv) == 0
    first = _without_run_specifics(tmp_path / "metrics.json")
    first_lines = (tmp_path / "metrics.json").read_text().splitlines()
    assert main(argv) == 0
    second_lines = (tmp_path / "metrics.json").read_text().splitlines()
    assert _without_run_specifics(tmp_path / "metrics.json") == first
    differing = {a.split(":")[0].strip() for a, b in zip(first_lines, second_lines) if a != b}
    assert differing <= {'"kernel"', '"load"', '"predict"', '"solve"', '"spectrum"'}
    assert main([*argv[:-1], "12"]) == 0  # another seed: other rows
    assert _without_run_specifics(tmp_path / "metrics.json") != first


def test_second_run_replaces_cleanly(tiny_dataset, tmp_path, capsys):
    base = [
        "--dataset",
        str(tiny_dataset),
        "--out",
        str(tmp_path),
        "--quiet",
        "--test-per-class",
        "4",
    ]
    assert main([*base, "--train-per-class", "6"]) == 0
    assert main([*base, "--train-per-class", "3"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["sizes"]["train"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".ntkdemo",  # the sets behind the links (ntkdemo.outputs)
        "confusion.png",
        "metrics.json",
        "predictions.png",
        "spectrum.png",
    ]

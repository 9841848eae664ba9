"""The array fold (NumPy here, CuPy on a GPU) against neural-tangents and the CPU fold."""

from __future__ import annotations

import numpy as np
import pytest
from test_conv_kernels import CASES, DUPLICATES, REFERENCE, composed

from ntkdemo.kernels import (
    AvgPool,
    Conv,
    Dense,
    GlobalAvgPool,
    Relu,
    architecture_layers,
    conv_kernels,
)
from ntkdemo.kernels.conv_arrays import bytes_per_pair, pair_kernels, self_variances
from ntkdemo.kernels.layers import check_layers

ROOMY = 10**9  # bytes: every case in one tile


def layers_of(case: str) -> tuple:
    _, name, w_std, b_std = REFERENCE[case]
    w_std, b_std = float(w_std), float(b_std)
    if str(name).startswith("composed-"):
        return check_layers(composed(str(name), w_std, b_std))
    return architecture_layers(str(name), w_std, b_std)


@pytest.mark.parametrize("case", CASES)
def test_array_fold_equals_neural_tangents(case):
    """The tolerances of the CPU fold's test: 1e-11 of the largest entry, 3e-8 on the
    diagonal and at cosine-1 pairs."""
    images = REFERENCE[str(REFERENCE[case][0])]
    nngp, ntk = pair_kernels(np, layers_of(case), images, memory_bytes=ROOMY)
    for got, want in ((nngp, REFERENCE[f"{case}_nngp"]), (ntk, REFERENCE[f"{case}_ntk"])):
        error = np.abs(got - want) / np.abs(want).max()
        tolerant = np.zeros_like(error, dtype=bool)
        duplicates = DUPLICATES[str(REFERENCE[case][0])]
        tolerant[np.ix_(duplicates, duplicates)] = True
        np.fill_diagonal(tolerant, True)
        assert error[~tolerant].max() <= 1e-11
        assert error.max() <= 3e-8
        np.testing.assert_array_equal(got, got.T)


@pytest.mark.parametrize("name", ["cnn-gap-2", "cnn-flatten-3"])
def test_small_tiles_give_the_same_cross_kernel_as_the_cpu_fold(name):
    """A budget of one pair per tile (many tiles, ragged edges) against the compiled
    fold: different arithmetic, so within 1e-12 of the largest entry."""
    rng = np.random.default_rng(3)
    images_a, images_b = rng.random((3, 6, 5, 2)), rng.random((5, 6, 5, 2))
    layers = architecture_layers(name, 1.3, 0.2)
    one_pair = bytes_per_pair((6, 5), name.startswith("cnn-gap"))
    tiled = pair_kernels(np, layers, images_a, images_b, memory_bytes=one_pair)
    whole = pair_kernels(np, layers, images_a, images_b, memory_bytes=ROOMY)
    compiled = conv_kernels(images_a, images_b, architecture=layers)
    for got, same, want in zip(tiled, whole, compiled, strict=True):
        np.testing.assert_allclose(got, same, rtol=1e-15, atol=0)  # other product shapes
        assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()


def test_self_variances_are_the_diagonal_before_each_relu():
    """Conv then ReLU then Conv then ReLU: the first ReLU's variances are
    w^2/9 sum of the patch's squares / C + b^2, by hand."""
    rng = np.random.default_rng(4)
    images = rng.random((2, 4, 4, 3))
    layers = (Conv(1.5, 0.5), Relu(), AvgPool(), Conv(1.0, 0.0), Relu(), GlobalAvgPool())
    layers = check_layers((*layers, Dense(1.0, 0.0)))
    first, second = self_variances(np, layers, images, memory_bytes=ROOMY)
    bordered = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    squares = sum(
        (bordered[:, i : i + 4, j : j + 4] ** 2).sum(axis=-1) for i in range(3) for j in range(3)
    )
    np.testing.assert_allclose(first, 1.5**2 / 9 * squares / 3 + 0.25, rtol=1e-14)
    assert second.shape == (2, 2, 2)


def test_black_borders_give_zero_variance_and_finite_kernels():
    images = np.zeros((3, 8, 8, 1))
    images[:, 2:6, 2:6, 0] = np.random.default_rng(5).random((3, 4, 4))
    layers = architecture_layers("myrtle5")
    nngp, ntk = pair_kernels(np, layers, images, memory_bytes=ROOMY)
    first = self_variances(np, layers, images, memory_bytes=ROOMY)[0]
    assert (first[:, 0, :] == 0).all()
    assert np.isfinite(nngp).all() and np.isfinite(ntk).all()


@pytest.mark.parametrize(("depth", "w_std", "b_std"), [(1, 1.0, 0.0), (3, 1.4, 0.3)])
def test_fully_connected_layers_on_one_pixel_are_fc_kernels(depth, w_std, b_std):
    """fc-L as layers of a 1 x 1 image (features as channels), in the array fold and in
    the compiled one, equals fc_kernels: 1e-13 of the largest entry off the diagonal,
    3e-8 on it (fc_kernels sets theta = 0 there exactly)."""
    from ntkdemo.kernels import fc_kernels

    rng = np.random.default_rng(7)
    X, Z = rng.random((7, 12)), rng.random((4, 12))
    layers = architecture_layers(f"fc-{depth}", w_std, b_std)
    assert len(layers) == 2 * depth + 2
    want = fc_kernels(X, depth=depth, w_std=w_std, b_std=b_std)
    want_cross = fc_kernels(Z, X, depth=depth, w_std=w_std, b_std=b_std)
    pixels = X.reshape(7, 1, 1, 12)
    for got in (
        pair_kernels(np, layers, pixels, memory_bytes=ROOMY),
        conv_kernels(pixels, architecture=layers),
    ):
        for g, w in zip(got, want, strict=True):
            off = ~np.eye(7, dtype=bool)
            assert np.abs(g - w)[off].max() <= 1e-13 * np.abs(w).max()
            assert np.abs(g - w).max() <= 3e-8 * np.abs(w).max()
    cross = pair_kernels(np, layers, Z.reshape(4, 1, 1, 12), pixels, memory_bytes=ROOMY)
    for g, w in zip(cross, want_cross, strict=True):
        assert np.abs(g - w).max() <= 1e-13 * np.abs(w).max()

"""``--flip`` as the kernel averaged over mirrors: the same network as training on the
mirrored images added, on half the rows (ntkdemo.kernels.mirror)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_sample
from ntkdemo.data import Sample
from ntkdemo.demo import run_demo
from ntkdemo.errors import InvalidParameterError
from ntkdemo.kernels import AvgPool, Conv, Dense, GlobalAvgPool, Relu, conv_kernels, unit_rows
from ntkdemo.kernels.mirror import is_mirror_symmetric, mirrored
from ntkdemo.preprocess import flip_kernel, with_flips, zca_whitened
from ntkdemo.spec import KernelSpec

SHAPE = (8, 8)


def sample_of(rng: np.random.Generator, n_train: int = 30, shape=SHAPE) -> Sample:
    return random_sample(rng, n_train, 12, shape, 3)


def test_mirrored_reverses_each_row_of_pixels():
    X = np.arange(2 * 2 * 3 * 2).reshape(2, -1)
    images = mirrored(X, (2, 3, 2)).reshape(2, 2, 3, 2)
    np.testing.assert_array_equal(images, X.reshape(2, 2, 3, 2)[:, :, ::-1])
    np.testing.assert_array_equal(mirrored(mirrored(X, (2, 3, 2)), (2, 3, 2)), X)


ODD_POOL = (Conv(1.4, 0.0), Relu(), AvgPool(), Conv(1.4, 0.0), Relu(), GlobalAvgPool(), Dense(1, 0))


@pytest.mark.parametrize(
    ("architecture", "shape", "symmetric"),
    [
        ("fc-2", (6, 5), True),
        ("cnn-gap-1", (5, 5), True),
        ("cnn-flatten-2", (5, 7), True),
        ("myrtle5", (8, 8), True),
        ("myrtle5", (6, 6), False),  # the second pool sees a width of 3
        (ODD_POOL, (6, 5), False),
        (ODD_POOL, (5, 6), True),  # only the width matters to a left-right mirror
    ],
)
def test_mirror_symmetry_is_decided_as_the_kernels_behave(architecture, shape, symmetric):
    """K(Fx, Fy) = K(x, y) exactly where is_mirror_symmetric says so, and clearly not
    where it says not."""
    assert is_mirror_symmetric(architecture, shape) is symmetric
    rng = np.random.default_rng(3)
    X, Y = rng.random((3, *shape)), rng.random((4, *shape))
    size = int(np.prod(shape))
    flat_X, flat_Y = X.reshape(3, size), Y.reshape(4, size)
    plain = conv_kernels(flat_X, flat_Y, architecture=architecture, image_shape=shape)[1]
    both = conv_kernels(
        mirrored(flat_X, shape),
        mirrored(flat_Y, shape),
        architecture=architecture,
        image_shape=shape,
    )[1]
    difference = np.abs(both - plain).max() / np.abs(plain).max()
    assert bool(difference < 1e-12) is symmetric, difference


SPECS = {
    "formula": KernelSpec(),
    "nngp-2": KernelSpec(kernel="nngp", depth=2, b_std=0.1),
    "ridge": KernelSpec(ridge=0.3),
    "time": KernelSpec(time=5.0),
    "myrtle5": KernelSpec(architecture="myrtle5", w_std=2**0.5),
    "cnn-gap-1-nngp": KernelSpec(architecture="cnn-gap-1", kernel="nngp"),
}


@pytest.mark.parametrize("name", SPECS)
def test_the_averaged_kernel_is_the_network_trained_on_the_mirrors_too(name):
    """run_demo on the n originals with flip_kernel's spec (the ridge halved) predicts
    what run_demo on the 2n images of with_flips does, to rounding, on the test images
    and on the training images and their mirrors."""
    sample = sample_of(np.random.default_rng(0))
    spec = SPECS[name]
    added = run_demo(with_flips(sample), spec)
    averaged_spec, how = flip_kernel(spec, SHAPE)
    assert averaged_spec is not None and averaged_spec.flip and "averaged" in how
    assert averaged_spec.ridge == spec.ridge / 2
    averaged = run_demo(sample, averaged_spec)
    n = len(sample.y_train)
    assert averaged.plan.n_train == n and added.plan.n_train == 2 * n
    scale = np.abs(added.test_scores).max()
    np.testing.assert_allclose(averaged.test_scores, added.test_scores, rtol=0, atol=1e-10 * scale)
    for half in (added.train_scores[:n], added.train_scores[n:]):
        np.testing.assert_allclose(averaged.train_scores, half, rtol=0, atol=1e-10 * scale)


def test_a_symmetric_image_is_a_duplicate_of_its_mirror_but_not_of_the_average():
    """An image equal to its mirror makes the 2n-image Gram matrix singular (jitter),
    while the averaged kernel leaves out the A - B part and stays well conditioned."""
    sample = sample_of(np.random.default_rng(1))
    image = sample.X_train[0].reshape(SHAPE)
    sample.X_train[0] = ((image + image[:, ::-1]) / 2).ravel()
    added = run_demo(with_flips(sample), KernelSpec())
    averaged = run_demo(sample, flip_kernel(KernelSpec(), SHAPE)[0])
    assert added.solution.jitter > 0 and "ill-conditioned" in added.solution.message
    assert averaged.solution.jitter == 0 and averaged.solution.condition_number < 1e4
    np.testing.assert_allclose(averaged.test_scores, added.test_scores, rtol=0, atol=1e-7)


def test_the_symmetric_matrix_is_the_cross_kernel_exactly_symmetric():
    """spec.matrix(X) (K(X, FX) by upper strips, mirrored) equals spec.matrix(X, X)
    within a few ulps and is exactly symmetric."""
    rng = np.random.default_rng(2)
    X = unit_rows(rng.random((45, 64)))
    for spec in (
        KernelSpec(flip=True, image_shape=SHAPE),
        KernelSpec(architecture="cnn-gap-1", flip=True, image_shape=SHAPE),
    ):
        gram, cross = spec.matrix(X), spec.matrix(X, X)
        np.testing.assert_array_equal(gram, gram.T)
        np.testing.assert_allclose(gram, cross, rtol=1e-14, atol=0)


def test_zca_fitted_with_mirrors_is_zca_of_the_flipped_sample():
    """Fitted on the images and their mirrors, the transform commutes with the mirror:
    the whitened mirrors are the mirrors of the whitened images."""
    sample = sample_of(np.random.default_rng(4), shape=(4, 5))
    flipped = zca_whitened(with_flips(sample), 0.1)
    averaged = zca_whitened(sample, 0.1, with_mirrors=True)
    n = len(sample.y_train)
    np.testing.assert_allclose(averaged.X_train, flipped.X_train[:n], rtol=0, atol=1e-10)
    np.testing.assert_allclose(averaged.X_test, flipped.X_test, rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        mirrored(averaged.X_train, (4, 5)), flipped.X_train[n:], rtol=0, atol=1e-10
    )
    plain = zca_whitened(sample, 0.1)
    assert (
        np.abs(
            mirrored(plain.X_train, (4, 5))
            - zca_whitened(
                Sample(**{**sample.__dict__, "X_train": mirrored(sample.X_train, (4, 5))}), 0.1
            ).X_train
        ).max()
        < 1e-10
    )  # mirrors commute with a transform fitted on mirrored data
    assert np.abs(plain.X_train - averaged.X_train).max() > 1e-3


def test_the_decision_and_its_refusals():
    spec = KernelSpec(architecture="myrtle5")
    gpu, how = flip_kernel(spec, (8, 8), "cuda")
    assert gpu is None and "added" in how and "GPU" in how
    odd, how = flip_kernel(spec, (6, 6))
    assert odd is None and "not mirror symmetric on images of (6, 6)" in how
    with pytest.raises(InvalidParameterError, match="not mirror symmetric"):
        KernelSpec(architecture="myrtle5", flip=True, image_shape=(6, 6))
    with pytest.raises(InvalidParameterError, match="flip=True needs the images' shape"):
        KernelSpec(flip=True).matrix(np.eye(4))
    assert not KernelSpec(flip=True).is_one_layer_formula
    assert "averaged over mirrors" in KernelSpec(flip=True).describe()
    ridge, how = flip_kernel(KernelSpec(ridge=0.5), (8, 8))
    assert ridge is not None and ridge.ridge == 0.25 and "ridge 0.5 of 2n images is 0.25" in how
    features, how = flip_kernel(KernelSpec(architecture="myrtle5", features=64), (8, 8))
    assert features is not None and features.flip and "random features averaged" in how
    assert "an approximation of the kernel averaged over mirrors" in how

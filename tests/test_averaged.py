"""Kernels of a network averaged over shifted and mirrored copies of its input
(ntkdemo.kernels.averaged, ``--shifts``): the double sum over copies, computed
independently here, its weights, and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import random_sample
from ntkdemo.demo import kernel_pairs, run_demo
from ntkdemo.errors import InvalidParameterError
from ntkdemo.kernels import kernel_matrix, unit_rows
from ntkdemo.kernels.averaged import InputAverage, symmetric_terms
from ntkdemo.plan import plan_memory
from ntkdemo.solvers import CGOptions, CGSolver
from ntkdemo.spec import KernelSpec

SHAPE = (7, 6)


def copies(images: np.ndarray, shifts: int, flip: bool) -> list[np.ndarray]:
    """Every copy of the images the network averages over, by np.roll and slicing."""
    mirrors = (images, images[:, :, ::-1]) if flip else (images,)
    return [
        np.roll(m, (down, right), axis=(1, 2)).reshape(len(images), -1)
        for m in mirrors
        for down in range(shifts + 1)
        for right in range(shifts + 1)
    ]


def double_sum(X: np.ndarray, Y: np.ndarray, shifts: int, flip: bool, **kernel) -> np.ndarray:
    """(1/|S|^2) sum over a, b in S of K(a X, b Y): the definition, |S|^2 kernels."""
    a_copies = copies(X.reshape(len(X), *SHAPE), shifts, flip)
    b_copies = copies(Y.reshape(len(Y), *SHAPE), shifts, flip)
    total = sum(kernel_matrix(a, b, **kernel) for a in a_copies for b in b_copies)
    return total / (len(a_copies) * len(b_copies))


@pytest.mark.parametrize("shifts, flip", [(0, True), (1, False), (1, True), (2, True)])
@pytest.mark.parametrize("kernel", [{}, {"kernel": "nngp", "depth": 2, "b_std": 0.1}])
def test_the_averaged_kernel_is_the_double_sum_over_copies(shifts, flip, kernel):
    rng = np.random.default_rng(4)
    X, Y = rng.random((9, 42)), rng.random((5, 42))
    spec = KernelSpec(shifts=shifts, flip=flip, image_shape=SHAPE, **kernel)
    gram = spec.matrix(unit_rows(X))
    cross = spec.matrix(unit_rows(Y), unit_rows(X))
    np.testing.assert_allclose(gram, double_sum(X, X, shifts, flip, **kernel), rtol=1e-12)
    np.testing.assert_allclose(cross, double_sum(Y, X, shifts, flip, **kernel), rtol=1e-12)
    np.testing.assert_array_equal(gram, gram.T)
    assert np.linalg.eigvalsh(gram).min() > -1e-12 * np.abs(gram).max()
    assert spec.average.terms == (2 * shifts + 1) ** 2 * (2 if flip else 1)
    assert len(spec.average.weighted_permutations(SHAPE)) == spec.average.terms


def test_the_averaged_kernel_in_small_blocks_is_the_double_sum(monkeypatch):
    """Blocks of 3 rows and 12 entries and a Gram matrix in strips of 4 rows (every
    term's block cut in rows and columns, each strip's square of 4 x 4 by pairs of terms
    and by rows) change no digit that matters."""
    from ntkdemo.kernels import averaged

    monkeypatch.setattr(averaged, "BLOCK_ROWS", 3)
    monkeypatch.setattr(averaged, "BLOCK_ENTRIES", 12)
    monkeypatch.setattr(averaged, "STRIP_ENTRIES", 200)  # 4 rows a strip of 50
    rng = np.random.default_rng(8)
    X, Y = rng.random((50, 42)), rng.random((11, 42))
    spec = KernelSpec(shifts=1, flip=True, image_shape=SHAPE)
    np.testing.assert_allclose(spec.matrix(unit_rows(X)), double_sum(X, X, 1, True), rtol=1e-12)
    cross = spec.matrix(unit_rows(Y), unit_rows(X))
    np.testing.assert_allclose(cross, double_sum(Y, X, 1, True), rtol=1e-12)


@pytest.mark.parametrize("shifts, flip", [(0, True), (1, False), (1, True), (2, True)])
@pytest.mark.parametrize("shape", [SHAPE, (5, 9)])
def test_the_terms_pair_with_their_inverses(shifts, flip, shape):
    """symmetric_terms: every term but the identity once, with its inverse where that is
    another term (of the same weight), the involutions counted as
    InputAverage.involutions says; gram_pairs counts n(n+1)/2 an involution and n^2 a
    pair, checked against the permutations themselves."""
    average = InputAverage(shifts=shifts, flip=flip)
    weighted = average.weighted_permutations(shape)
    weights = {r.tobytes(): w for r, w in weighted[1:]}
    terms = symmetric_terms(weighted)
    covered = [t.permutation.tobytes() for t in terms]
    covered += [t.inverse.tobytes() for t in terms if t.inverse is not None]
    assert sorted(covered) == sorted(weights)
    for term in terms:
        twice = term.permutation[term.permutation]  # r applied twice
        is_involution = np.array_equal(twice, np.arange(twice.size))
        assert (term.inverse is None) == is_involution
        if term.inverse is not None:
            assert np.array_equal(term.permutation[term.inverse], np.arange(twice.size))
            assert weights[term.inverse.tobytes()] == term.weight
    involutions = 1 + sum(term.inverse is None for term in terms)
    assert involutions == average.involutions
    pairs = len(terms) + 1 - involutions
    assert average.gram_pairs(10) == involutions * 55 + pairs * 100


def test_the_weights_are_the_triangle_of_the_shifts():
    """Shifts 0..1 in both directions: differences -1..1 weighted (1, 2, 1) x (1, 2, 1) / 16;
    each permutation's inverse carries its weight."""
    terms = InputAverage(shifts=1).weighted_permutations((5, 5))
    assert len(terms) == 9 and terms[0][0] is None
    assert sum(weight for _, weight in terms) == pytest.approx(1.0, abs=1e-15)
    assert sorted(weight * 16 for _, weight in terms) == [1, 1, 1, 1, 2, 2, 2, 2, 4]
    index = np.arange(25).reshape(5, 5)
    by_shift = {}
    for permutation, weight in terms[1:]:
        moved = index.ravel()[permutation].reshape(5, 5)  # r x for x = the pixel indices
        shift = next(
            (down, right)
            for down in (-1, 0, 1)
            for right in (-1, 0, 1)
            if np.array_equal(np.roll(index, (down, right), axis=(0, 1)), moved)
        )
        by_shift[shift] = weight
    assert by_shift[(1, 1)] == by_shift[(-1, -1)] == 1 / 16
    assert by_shift[(0, 1)] == by_shift[(0, -1)] == 2 / 16


def test_cholesky_and_cg_solve_the_averaged_kernel_alike():
    """The strips of the cg strategy (diagonal tiles as Gram matrices) and the whole
    matrix of the Cholesky one give the same outputs, and compute the same pairs as the
    estimate counts them, none twice: with shifts 0-1 and mirrors 18 terms, of which 4
    are involutions (the identity, and the mirror shifted along the rows by -1, 0, 1:
    a triangle each) and 14 pair with their inverses (one square a pair)."""
    sample = random_sample(np.random.default_rng(5), 40, 8, SHAPE, 3)
    spec = KernelSpec(shifts=1, flip=True)
    whole = run_demo(sample, spec, spectrum_rows=10)
    strategies = (CGSolver(options=CGOptions(strip_rows=16, cluster_size=20, min_rank=5)),)
    plan = plan_memory(40, 8, 42, 3, spec=spec, solver="cg", strategies=strategies)
    strips = run_demo(sample, spec, plan=plan, spectrum_rows=10)
    np.testing.assert_allclose(strips.test_scores, whole.test_scores, rtol=1e-5, atol=1e-6)
    expected = 4 * (40 * 41 // 2) + 7 * 40 * 40 + 18 * 8 * 40
    assert whole.kernel_pairs == strips.kernel_pairs == kernel_pairs(spec, 40, 8) == expected


def test_shifts_refused_where_they_cannot_serve():
    with pytest.raises(InvalidParameterError, match="convolutional kernel pads with zeros"):
        KernelSpec(shifts=1, architecture="cnn-gap-1")
    with pytest.raises(InvalidParameterError, match="shifts=1 averages"):
        KernelSpec(shifts=1, depth=2, features=64)
    with pytest.raises(InvalidParameterError, match="shifts must be >= 0"):
        KernelSpec(shifts=-1)
    with pytest.raises(InvalidParameterError, match="at least 7 pixels a side, got"):
        KernelSpec(shifts=3, image_shape=(6, 28))
    with pytest.raises(InvalidParameterError, match="shifts=2 needs the images' shape"):
        KernelSpec(shifts=2).matrix(np.eye(4))
    assert not KernelSpec(shifts=1).is_one_layer_formula
    assert "averaged over shifts 0-1 and mirrors" in KernelSpec(shifts=1, flip=True).describe()


def test_run_with_shifts_on_real_images(fashion_mnist, tmp_path):
    """``ntkdemo --shifts 1 --flip`` on real images: it says what the averaging costs,
    and beats the plain kernel on the same sample (0.783 against 0.763 here)."""
    from ntkdemo.cli.main import main

    accuracy = {}
    for name, extra in (("plain", []), ("shifted", ["--shifts", "1", "--flip"])):
        out = tmp_path / name
        arguments = ["--dataset", str(fashion_mnist), "--train-per-class", "30"]
        arguments += ["--test-per-class", "30", "--out", str(out), "--quiet", *extra]
        assert main(arguments) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        accuracy[name] = metrics["test_accuracy"]
    assert metrics["arguments"]["shifts"] == 1 and metrics["flips"] == "kernel averaged"
    assert "shifts 0-1 and mirrors" in metrics["network"]
    assert metrics["kernel_pairs"] == 4 * (300 * 301 // 2) + 7 * 300**2 + 18 * 300 * 300
    assert accuracy["shifted"] > accuracy["plain"]


def test_the_estimators_take_shifts():
    """NTKRegressor(shifts=1, flip=True) is kernel regression with the averaged kernel,
    computed here by the double sum; square grey images without image_shape."""
    from ntkdemo import NTKRegressor

    rng = np.random.default_rng(6)
    X, Y, y = rng.random((12, 36)), rng.random((4, 36)), rng.random(12)
    model = NTKRegressor(shifts=1, flip=True).fit(X, y)
    images = (6, 6)

    def averaged(A, B):
        a_copies = copies(A.reshape(len(A), *images), 1, True)
        b_copies = copies(B.reshape(len(B), *images), 1, True)
        return sum(kernel_matrix(a, b) for a in a_copies for b in b_copies) / 64

    expected = averaged(Y, X) @ np.linalg.solve(averaged(X, X), y)
    np.testing.assert_allclose(model.predict(Y), expected, rtol=1e-8)
    with pytest.raises(InvalidParameterError, match="shifts=1 needs image_shape"):
        NTKRegressor(shifts=1).fit(rng.random((5, 7)), rng.random(5))


def test_flips_join_the_shifts_with_the_ridge_of_the_n_images():
    """--flip alone halves the ridge (the network trained on 2n images); with shifts the
    mirrors are more copies of the averaged network, fitted on the n images."""
    from ntkdemo.preprocess import flip_kernel

    alone, _ = flip_kernel(KernelSpec(ridge=0.2), (8, 8))
    shifted, how = flip_kernel(KernelSpec(ridge=0.2, shifts=1), (8, 8))
    assert alone is not None and alone.ridge == 0.1
    assert shifted is not None and shifted.ridge == 0.2 and shifted.flip and shifted.shifts == 1
    assert "join the shifted ones" in how


def test_shifts_larger_than_the_images_are_refused_before_decoding(fashion_mnist, tmp_path, capsys):
    from ntkdemo.cli.main import main

    arguments = ["--dataset", str(fashion_mnist), "--shifts", "14", "--out", str(tmp_path)]
    assert main(arguments) == 2
    captured = capsys.readouterr()
    assert "shifts=14 needs images of at least 29 pixels a side, got (28, 28)" in captured.err
    assert "memory plan" not in captured.out and not (tmp_path / "metrics.json").exists()

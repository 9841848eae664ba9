"""Deep NNGP/NTK (``fc_kernels``) against 40-digit mpmath and against neural-tangents."""

import json
from pathlib import Path

import mpmath
import numpy as np
import pytest

from ntkdemo.errors import InvalidParameterError
from ntkdemo.kernels import fc_kernels, ntk

REFERENCE = json.loads(
    (Path(__file__).parent / "data" / "neural_tangents_reference.json").read_text()
)
SETTINGS = [(1, 1.0, 0.0), (2, 1.5, 0.1), (3, 0.8, 0.4)]


def exact_pair(x, y, depth, w_std, b_std):
    """(nngp, ntk) of one pair at 40 digits: the neural-tangents recursion, scalar by scalar."""
    with mpmath.workdps(40):
        x = [mpmath.mpf(float(v)) for v in x]
        y = [mpmath.mpf(float(v)) for v in y]
        d = len(x)
        k11 = mpmath.fsum(a * a for a in x) / d
        k22 = mpmath.fsum(b * b for b in y) / d
        k12 = mpmath.fsum(a * b for a, b in zip(x, y)) / d
        w2, b2 = mpmath.mpf(w_std) ** 2, mpmath.mpf(b_std) ** 2
        theta_ntk = mpmath.mpf(0)

        def dense(k11, k22, k12, theta_ntk):
            k11, k22, k12 = w2 * k11 + b2, w2 * k22 + b2, w2 * k12 + b2
            return k11, k22, k12, k12 + w2 * theta_ntk

        for _ in range(depth):
            k11, k22, k12, theta_ntk = dense(k11, k22, k12, theta_ntk)
            norms = mpmath.sqrt(k11 * k22)
            cosine = (
                max(min(k12 / norms, mpmath.mpf(1)), mpmath.mpf(-1)) if norms else mpmath.mpf(0)
            )
            angle = mpmath.acos(cosine)
            k12 = norms * (mpmath.sin(angle) + (mpmath.pi - angle) * cosine) / (2 * mpmath.pi)
            theta_ntk = theta_ntk * (mpmath.pi - angle) / (2 * mpmath.pi)
            k11, k22 = k11 / 2, k22 / 2
        k11, k22, k12, theta_ntk = dense(k11, k22, k12, theta_ntk)
        return float(k12), float(theta_ntk)


def exact_matrices(X, Y, setting):
    pairs = [[exact_pair(x, y, *setting) for y in Y] for x in X]
    array = np.array(pairs)
    return array[..., 0], array[..., 1]


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(9, 6)) * rng.uniform(0.1, 10, size=(9, 1))
    return X, rng.normal(size=(5, 6))


@pytest.mark.parametrize("setting", SETTINGS)
def test_generic_pairs_to_1e12(inputs, setting):
    X, Y = inputs
    depth, w_std, b_std = setting
    got = fc_kernels(X, Y, depth=depth, w_std=w_std, b_std=b_std)
    for computed, exact in zip(got, exact_matrices(X, Y, setting)):
        np.testing.assert_allclose(computed, exact, rtol=1e-12, atol=0)


@pytest.mark.parametrize("setting", SETTINGS)
def test_diagonal_exact_to_rounding(inputs, setting):
    X, _ = inputs
    depth, w_std, b_std = setting
    got = fc_kernels(X, depth=depth, w_std=w_std, b_std=b_std)
    for computed, exact in zip(got, exact_matrices(X, X, setting)):
        np.testing.assert_allclose(np.diagonal(computed), np.diagonal(exact), rtol=1e-14, atol=0)


@pytest.mark.parametrize("setting", SETTINGS)
def test_duplicates_parallel_and_antipodes_to_3e8(inputs, setting):
    X, _ = inputs
    depth, w_std, b_std = setting
    edge = np.vstack([X[:3], X[:3], 2.5 * X[:3], -X[:3], -0.3 * X[:3]])
    got = fc_kernels(edge, depth=depth, w_std=w_std, b_std=b_std)
    for computed, exact in zip(got, exact_matrices(edge, edge, setting)):
        scale = np.abs(exact).max()
        assert np.abs(computed - exact).max() <= 3e-8 * scale


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=lambda c: f"depth{c['depth']}")
def test_same_numbers_as_neural_tangents(case):
    """Values computed by neural-tangents 0.6.5 (x64) and stored with their inputs."""
    x_train, x_test = np.array(REFERENCE["x_train"]), np.array(REFERENCE["x_test"])
    options = dict(depth=case["depth"], w_std=case["w_std"], b_std=case["b_std"])
    nngp, ntk_train = fc_kernels(x_train, **options)
    cross_nngp, cross_ntk = fc_kernels(x_test, x_train, **options)
    for computed, key in (
        (nngp, "train_nngp"),
        (ntk_train, "train_ntk"),
        (cross_nngp, "cross_nngp"),
        (cross_ntk, "cross_ntk"),
    ):
        np.testing.assert_allclose(computed, case[key], rtol=1e-12, atol=1e-15)


def test_depth_one_is_the_mission_formula_over_2d(inputs):
    """ntk(X, Y) == 2 d fc_kernels(X', Y')[1] for unit rows X', Y' with d features."""
    X, Y = inputs
    unit_x = X / np.linalg.norm(X, axis=1, keepdims=True)
    unit_y = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    d = X.shape[1]
    np.testing.assert_allclose(2 * d * fc_kernels(unit_x, unit_y)[1], ntk(X, Y), rtol=1e-13, atol=0)
    np.testing.assert_allclose(2 * d * fc_kernels(unit_x)[1], ntk(X), rtol=1e-13, atol=0)


@pytest.mark.parametrize("setting", SETTINGS)
def test_symmetric_psd_and_auto_equals_cross(inputs, setting):
    X, _ = inputs
    depth, w_std, b_std = setting
    auto = fc_kernels(X, depth=depth, w_std=w_std, b_std=b_std)
    cross = fc_kernels(X, X.copy(), depth=depth, w_std=w_std, b_std=b_std)
    for a, c in zip(auto, cross):
        np.testing.assert_array_equal(a, a.T)
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=0)
        assert np.linalg.eigvalsh(a)[0] > 0


def test_blocks_agree_with_one_block(inputs):
    X, Y = inputs
    ntk_matrix = fc_kernels(X, Y, depth=2, b_std=0.2)[1]
    blocked = fc_kernels(X, Y, depth=2, b_std=0.2, block_rows=2)
    np.testing.assert_allclose(blocked[1], ntk_matrix, rtol=1e-15, atol=0)


@pytest.mark.parametrize("bad", [dict(depth=0), dict(w_std=-1.0), dict(b_std=float("nan"))])
def test_bad_parameters_rejected(inputs, bad):
    with pytest.raises(InvalidParameterError):
        fc_kernels(inputs[0], **bad)

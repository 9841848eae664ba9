"""Closed-form training dynamics: limits, vectorised times, and neural-tangents' numbers."""

import json
from pathlib import Path

import numpy as np
import pytest

from ntkdemo.dynamics import GradientDescentDynamics, gradient_descent_mean
from ntkdemo.errors import InvalidParameterError
from ntkdemo.kernels import fc_kernels, ntk
from ntkdemo.solvers import predict, solve

REFERENCE = json.loads(
    (Path(__file__).parent / "data" / "neural_tangents_reference.json").read_text()
)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(3)
    X, X_test = rng.normal(size=(25, 8)), rng.normal(size=(6, 8))
    Y = rng.normal(size=(25, 3))
    return ntk(X), ntk(X_test, X), Y


def test_time_zero_is_the_zero_function(problem):
    K, K_test, Y = problem
    np.testing.assert_array_equal(gradient_descent_mean(K, K_test, Y, 0.0), 0.0)


@pytest.mark.parametrize("t", [None, np.inf])
def test_infinite_time_is_kernel_regression(problem, t):
    K, K_test, Y = problem
    expected = predict(K_test, solve(K, Y))
    np.testing.assert_allclose(gradient_descent_mean(K, K_test, Y, t), expected, rtol=0, atol=1e-9)


def test_long_finite_time_approaches_the_limit(problem):
    K, K_test, Y = problem
    limit = gradient_descent_mean(K, K_test, Y)
    late = gradient_descent_mean(K, K_test, Y, 1e12)
    early = gradient_descent_mean(K, K_test, Y, 1.0)
    assert np.abs(late - limit).max() < 1e-6 < np.abs(early - limit).max()


def test_vector_of_times_equals_scalar_calls(problem):
    K, K_test, Y = problem
    times = np.array([0.0, 0.1, 2.0, 50.0, np.inf])
    together = gradient_descent_mean(K, K_test, Y, times, learning_rate=0.3)
    assert together.shape == (5, 6, 3)
    for t, outputs in zip(times, together):
        np.testing.assert_allclose(
            outputs, gradient_descent_mean(K, K_test, Y, t, learning_rate=0.3), rtol=1e-14, atol=0
        )


def test_small_time_is_one_gradient_step(problem):
    """f_t ~ eta t K(x, X) Y / m for small t (expm1 keeps it accurate)."""
    K, K_test, Y = problem
    t = 1e-9
    np.testing.assert_allclose(
        gradient_descent_mean(K, K_test, Y, t), t * K_test @ Y / Y.size, rtol=1e-6, atol=0
    )


def test_training_loss_falls_monotonically(problem):
    K, _, Y = problem
    outputs = GradientDescentDynamics(K, Y).predict(K, np.geomspace(1e-2, 1e3, 30))
    losses = ((outputs - Y) ** 2).mean(axis=(1, 2))
    assert (np.diff(losses) < 0).all()


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=lambda c: f"depth{c['depth']}")
@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_same_numbers_as_neural_tangents(case, get):
    """``predict.gradient_descent_mse_ensemble(kernel_fn, x, y, learning_rate=0.7,
    diag_reg=0)(t, x_test, get=get)`` as computed by neural-tangents 0.6.5."""
    rows = case["dynamics_rows"]
    x_train = np.array(REFERENCE["x_train"])[rows]
    x_test = np.array(REFERENCE["x_test"])
    y_train = np.array(REFERENCE["y_train"])[rows]
    options = dict(depth=case["depth"], w_std=case["w_std"], b_std=case["b_std"])
    index = 0 if get == "nngp" else 1
    K, K_test = fc_kernels(x_train, **options)[index], fc_kernels(x_test, x_train, **options)[index]
    times = [np.inf if t is None else t for t in REFERENCE["times"]]
    outputs = gradient_descent_mean(
        K, K_test, y_train, times, learning_rate=REFERENCE["learning_rate"]
    )
    np.testing.assert_allclose(outputs, case["dynamics"][get], rtol=0, atol=1e-10)


@pytest.mark.parametrize("t", [-1.0, float("nan"), [1.0, -2.0]])
def test_bad_times_rejected(problem, t):
    K, K_test, Y = problem
    with pytest.raises(InvalidParameterError, match="t must be >= 0"):
        gradient_descent_mean(K, K_test, Y, t)


def test_mismatched_shapes_rejected(problem):
    K, K_test, Y = problem
    with pytest.raises(
        ValueError,
        match=r"y_train must have shape \(\d+,\) or \(\d+, n_outputs\) to match the kernel",
    ):
        gradient_descent_mean(K, K_test, Y[:-1], 1.0)


def test_round_off_eigenvalues_are_not_inverted():
    """An all-ones kernel has one eigenvalue 12 and eleven null ones, which eigh returns as
    round-off of either sign; inverted, they gave 1.3e33. The pseudo-inverse answer is 1."""
    from ntkdemo.dynamics import gradient_descent_mean

    predicted = gradient_descent_mean(np.ones((12, 12)), np.ones((1, 12)), np.ones((12, 1)))
    np.testing.assert_allclose(predicted, [[1.0]], rtol=1e-12)


def test_identical_images_with_split_labels_score_at_most_half():
    """20 copies of one image, labelled 10/10: every prediction is the same, at any time."""
    from ntkdemo.dynamics import GradientDescentDynamics
    from ntkdemo.kernels import ntk
    from ntkdemo.solvers import one_hot

    X = np.tile(np.random.default_rng(0).random((1, 16)), (20, 1))
    labels = np.repeat([0, 1], 10)
    K = ntk(X)
    dynamics = GradientDescentDynamics(K, one_hot(labels, 2))
    for t in (1.0, 1e300, None):
        outputs = dynamics.predict(K, t)
        np.testing.assert_allclose(outputs, np.broadcast_to(outputs[0], outputs.shape), rtol=1e-12)
        assert np.mean(outputs.argmax(1) == labels) == 0.5


def test_discrete_steps_past_the_stability_limit_are_refused():
    from ntkdemo.dynamics import GradientDescentDynamics
    from ntkdemo.errors import InvalidParameterError

    dynamics = GradientDescentDynamics(np.eye(3) + 1, np.ones(3), learning_rate=1e6)
    with pytest.raises(InvalidParameterError, match=r"stability limit 2 m / lambda_max = 1\.5\b"):
        dynamics.discrete_dual_coefficients(100)
    stable = GradientDescentDynamics(np.eye(3) + 1, np.ones(3), learning_rate=1.4)
    assert np.isfinite(stable.discrete_dual_coefficients(100)).all()


@pytest.mark.parametrize("K", [-np.eye(3), np.diag([1.0, 1.0, -0.5])])
def test_a_kernel_that_is_not_psd_is_refused(K):
    from ntkdemo.dynamics import gradient_descent_mean
    from ntkdemo.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="not positive semi-definite"):
        gradient_descent_mean(K, np.ones((1, 3)), np.ones(3))

"""Every public function, fed hostile arrays, raises an ``ntkdemo.errors`` exception or
returns finite numbers: never both silent and wrong."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ntkdemo import NTKClassifier, fc_kernels, gradient_descent_mean, kernel_matrix, ntk, solve
from ntkdemo.errors import NTKDemoError
from ntkdemo.solvers import KernelSolution, predict

HOSTILE_VALUES = st.one_of(
    st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1e308, -1e308, 1e-308, 5e-324, 1e200]),
    st.floats(-10, 10, allow_nan=False),
)
SHAPES = st.one_of(
    st.tuples(st.integers(0, 5), st.integers(0, 4)),
    st.tuples(st.integers(0, 5)),
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2)),
)
HOSTILE_ARRAYS = st.one_of(
    arrays(np.float64, SHAPES, elements=HOSTILE_VALUES),
    arrays(np.complex128, SHAPES, elements=st.complex_numbers(max_magnitude=5, allow_nan=False)),
    arrays(np.int64, SHAPES, elements=st.integers(-3, 3)),
    arrays(np.float16, SHAPES, elements=st.floats(-5, 5, width=16)),
)


def finite_or_refused(call):
    """Run ``call``; it must raise an ntkdemo error or return only finite numbers."""
    try:
        result = call()
    except NTKDemoError:
        return
    for value in result if isinstance(result, tuple) else (result,):
        values = getattr(value, "coef", value)
        assert np.isfinite(np.asarray(values, dtype=np.complex128)).all(), value


@given(HOSTILE_ARRAYS)
def test_one_layer_kernel(X):
    finite_or_refused(lambda: ntk(X))


@given(HOSTILE_ARRAYS, st.integers(1, 4), st.sampled_from([0.5, 1.0, 1.5, 30.0]))
def test_deep_kernels(X, depth, w_std):
    finite_or_refused(lambda: fc_kernels(X, depth=depth, w_std=w_std))
    finite_or_refused(lambda: kernel_matrix(X, kernel="nngp", depth=depth, w_std=w_std))


@given(HOSTILE_ARRAYS, HOSTILE_ARRAYS)
def test_solve_any_matrix_and_targets(K, Y):
    finite_or_refused(lambda: solve(K, Y))
    if K.ndim == 2 and K.shape[0] == K.shape[1]:
        symmetric = K / 2 + K.T / 2 if K.dtype.kind == "f" else K
        finite_or_refused(lambda: solve(symmetric, Y))


@given(HOSTILE_ARRAYS)
def test_solve_a_real_kernel_with_hostile_targets(Y):
    K = ntk(np.random.default_rng(0).random((5, 3)))
    finite_or_refused(lambda: solve(K, Y))


@given(HOSTILE_ARRAYS)
def test_predict_with_hostile_test_kernels(K_test):
    solution = KernelSolution(coef=np.ones((4, 2)), method="test")
    finite_or_refused(lambda: predict(K_test, solution))


@given(HOSTILE_ARRAYS, st.one_of(st.none(), st.floats(0, 1e6), st.sampled_from([[1.0, None]])))
def test_dynamics_with_hostile_test_kernels_and_times(K_test, t):
    K = ntk(np.random.default_rng(1).random((4, 3)))
    finite_or_refused(lambda: gradient_descent_mean(K, K_test, np.eye(4)[:, :2], t))


@given(HOSTILE_ARRAYS)
@pytest.mark.filterwarnings("ignore")
def test_estimator(X):
    y = np.arange(len(X)) % 2 if X.ndim >= 1 else np.zeros(0)

    def fit_and_predict():
        model = NTKClassifier().fit(X, y)
        return model.decision_function(X)

    try:
        finite_or_refused(fit_and_predict)
    except ValueError as error:  # scikit-learn's own input validation, as its contract says
        assert not isinstance(error, NTKDemoError)
        assert (
            "Found array with" in str(error)
            or "Expected" in str(error)
            or "dtype" in str(error)
            or "Input" in str(error)
            or "Complex" in str(error)
            or "class" in str(error)
        ), error

"""The scikit-learn estimators: the library's own checks, and agreement with the demo."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from ntkdemo import NTKClassifier, NTKRegressor
from ntkdemo.data import load_sample
from ntkdemo.demo import run_demo
from ntkdemo.errors import InvalidParameterError

# Integer inputs drawn by this check contain all-zero rows; a zero row has no direction,
# so the normalised NTK rejects it (InvalidInputError) by design instead of inventing a value.
EXPECTED_FAILURES = {
    "check_estimators_dtypes": "integer test data has all-zero rows, which the normalised "
    "NTK rejects by design (a zero vector has no direction)",
}


@parametrize_with_checks(
    [
        NTKClassifier(),
        NTKRegressor(),
        NTKClassifier(kernel="nngp", depth=2),
        NTKRegressor(time=1e6),
    ],
    expected_failed_checks=lambda estimator: EXPECTED_FAILURES,
)
def test_scikit_learn_compatible(estimator, check):
    check(estimator)


def test_classifier_reproduces_the_demo(tiny_dataset):
    sample = load_sample(str(tiny_dataset), 9, 5)
    model = NTKClassifier().fit(sample.X_train, np.array(sample.class_names)[sample.y_train])
    demo = run_demo(sample)
    np.testing.assert_allclose(
        model.decision_function(sample.X_test), demo.test_scores, rtol=0, atol=1e-12
    )
    assert (
        model.score(sample.X_test, np.array(sample.class_names)[sample.y_test])
        == demo.test_report.accuracy
    )
    assert list(model.classes_) == ["alpha", "beta", "gamma"]


def test_regressor_time_limits():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(15, 4)), rng.normal(size=15)
    converged = NTKRegressor().fit(X, y).predict(X)
    np.testing.assert_allclose(converged, y, atol=1e-9)  # interpolation
    np.testing.assert_array_equal(NTKRegressor(time=0.0).fit(X, y).predict(X), 0.0)
    late = NTKRegressor(time=1e14).fit(X, y).predict(X)
    np.testing.assert_allclose(late, y, atol=1e-6)


def test_pipeline_and_grid_search(tiny_dataset):
    sample = load_sample(str(tiny_dataset), 9, 5)
    pipeline = make_pipeline(FunctionTransformer(np.sqrt), NTKClassifier())
    search = GridSearchCV(
        pipeline, {"ntkclassifier__ridge": [0.0, 0.1], "ntkclassifier__depth": [1, 2]}, cv=3
    )
    search.fit(sample.X_train, sample.y_train)
    assert set(search.best_params_) == {"ntkclassifier__ridge", "ntkclassifier__depth"}
    assert search.score(sample.X_test, sample.y_test) >= 0.8


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(depth=0), "depth must be >= 1"),
        (dict(ridge=-1.0), "ridge must be a finite number >= 0"),
        (dict(time=-1.0), "t must be >= 0"),
        (dict(time=1.0, ridge=0.5), "cannot be combined"),
        (dict(kernel="rbf"), "kernel must be 'ntk' or 'nngp'"),
    ],
)
def test_bad_parameters(params, message):
    X = np.random.default_rng(0).normal(size=(6, 3))
    with pytest.raises(InvalidParameterError, match=message):
        NTKClassifier(**params).fit(X, [0, 1] * 3)


@pytest.mark.parametrize(
    ("settings", "averaged"),
    [
        ({"ridge": 0.2}, True),  # the one-layer formula: mirror symmetric
        ({"architecture": "cnn-gap-1", "kernel": "nngp"}, True),
        ({"architecture": "myrtle5", "image_shape": (6, 6)}, False),  # a pool of width 3
    ],
)
def test_flip_is_the_estimator_fitted_on_the_mirrors_too(settings, averaged):
    """flip=True predicts what the same estimator fitted on the images and their mirrors
    predicts: by the averaged kernel on n rows where it can, else on the 2n images."""
    from ntkdemo.kernels.mirror import mirrored

    rng = np.random.default_rng(5)
    shape = settings.get("image_shape", (8, 8))
    X, X_test = rng.random((24, shape[0] * shape[1])), rng.random((9, shape[0] * shape[1]))
    y = np.arange(24) % 3
    flipped = NTKClassifier(**settings, flip=True).fit(X, y)
    added = NTKClassifier(**settings).fit(np.vstack([X, mirrored(X, shape)]), np.tile(y, 2))
    assert flipped.dual_coef_.shape == ((24 if averaged else 48), 3)
    np.testing.assert_allclose(
        flipped.decision_function(X_test), added.decision_function(X_test), rtol=0, atol=1e-9
    )
    with pytest.raises(InvalidParameterError, match="flip=True needs image_shape"):
        NTKClassifier(flip=True).fit(rng.random((6, 10)), [0, 1] * 3)

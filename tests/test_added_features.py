"""A kernel added as random features to an exact one (KernelSpec.added): the sum against
its two parts computed apart, the strategies against each other, the pairs counted, the
refusals, and a run from the command line on the real images."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from conftest import random_sample
from ntkdemo.demo import run_demo
from ntkdemo.errors import InvalidParameterError
from ntkdemo.kernels import unit_rows
from ntkdemo.kernels.mirror import mirrored
from ntkdemo.plan import plan_memory
from ntkdemo.solvers.features import AddedFeatures, features_of
from ntkdemo.spec import KernelSpec

ADDED = KernelSpec(architecture="cnn-gap-1", features=16, feature_width=4, image_shape=(8, 8))


def _sum_spec(**changes) -> KernelSpec:
    spec = KernelSpec(flip=True, image_shape=(8, 8), added=ADDED, added_weight=2.5)
    return replace(spec, **changes)


def test_the_sum_is_the_exact_kernel_plus_the_weighted_features():
    rng = np.random.default_rng(3)
    X, Y = unit_rows(rng.random((30, 64))), unit_rows(rng.random((7, 64)))
    spec = _sum_spec()
    added = AddedFeatures.calibrated(spec, X)
    rows, rows_y = added.rows(X), added.rows(Y)
    assert rows.shape == (30, 64 + 32) and np.array_equal(rows[:, :64], X)
    F = features_of(added.added, added.feature_map, X)  # the NTK's 32 columns, apart
    F_y = features_of(added.added, added.feature_map, Y)
    np.testing.assert_array_equal(rows[:, 64:], F)
    exact = replace(spec, added=None)
    gram = spec.matrix(rows)
    np.testing.assert_allclose(gram, exact.matrix(X) + 2.5 * F @ F.T, rtol=1e-13, atol=1e-14)
    np.testing.assert_array_equal(gram, gram.T)  # a Gram matrix, exactly symmetric
    np.testing.assert_allclose(
        spec.matrix(rows_y, rows), exact.matrix(Y, X) + 2.5 * F_y @ F.T, rtol=1e-13, atol=1e-14
    )
    # the features part is a real part of it: the sum differs from the exact kernel
    assert np.abs(gram - exact.matrix(X)).max() > 0.1


def test_cholesky_and_cg_solve_the_same_sum_and_count_every_pair():
    sample = random_sample(np.random.default_rng(5), 60, 14, (8, 8), 3)
    spec = _sum_spec(image_shape=())
    results = {}
    for solver in ("cholesky", "cg"):
        shaped = spec.for_images((8, 8))
        plan = plan_memory(60, 14, shaped.row_width(64), 3, spec=shaped, solver=solver)
        results[solver] = run_demo(sample, spec, plan=plan)
    direct, iterative = results["cholesky"], results["cg"]
    np.testing.assert_allclose(iterative.test_scores, direct.test_scores, rtol=1e-6, atol=1e-7)
    assert direct.approximation is not None and " of the added cnn-gap-1" in (
        direct.approximation.describe()
    )
    assert direct.approximation.n_train == 60 and direct.approximation.n_test == 14
    # the exact part's pairs as a run of it alone counts them; the added network's
    # calibration (32 images) and its error check, no other pair
    exact = run_demo(sample, replace(spec, added=None)).kernel_pairs
    assert exact >= 2 * (60 * 61 // 2 + 14 * 60)  # mirrors: twice the plain kernel's
    added = 32 * 33 // 2 + 60 * 61 // 2 + 14 * 60
    assert direct.kernel_pairs == exact + added
    assert "added features" in direct.timings


def test_estimators_fit_the_sum_and_predict_with_the_test_images_features():
    # NTKRegressor(added_features=...) is kernel regression on the sum: its predictions
    # are those of the sum's matrices (the features of the training and test images,
    # calibrated as AddedFeatures does) solved apart; the classifier picks their argmax
    from sklearn.base import clone

    from ntkdemo import NTKClassifier, NTKRegressor

    rng = np.random.default_rng(11)
    X, X_test = rng.random((40, 64)), rng.random((9, 64))
    labels = np.arange(40) % 3
    targets = np.eye(3)[labels]
    parameters = dict(shifts=1, added_features=16, added_architecture="cnn-gap-1", feature_width=4)
    regressor = NTKRegressor(added_weight=2.5, **parameters).fit(X, targets)
    spec = KernelSpec(shifts=1, image_shape=(8, 8), added=ADDED, added_weight=2.5)
    added = AddedFeatures.calibrated(spec, unit_rows(X))
    rows, rows_test = added.rows(unit_rows(X)), added.rows(unit_rows(X_test))
    expected = spec.matrix(rows_test, rows) @ np.linalg.solve(spec.matrix(rows), targets)
    np.testing.assert_allclose(regressor.predict(X_test), expected, rtol=1e-9, atol=1e-9)
    assert regressor.added_features_.solver.columns == 32  # the NTK's 2 x 16
    classifier = NTKClassifier(added_weight=2.5, **parameters).fit(X, labels)
    np.testing.assert_array_equal(classifier.predict(X_test), expected.argmax(1))
    # the weight is a parameter like any other (a grid search clones and sets it)
    heavier = clone(classifier).set_params(added_weight=50.0).fit(X, labels)
    assert not np.allclose(heavier.dual_coef_, classifier.dual_coef_)
    with pytest.raises(InvalidParameterError, match="drop features or time"):
        NTKClassifier(time=3.0, **parameters).fit(X, labels)


def test_the_added_network_averaged_over_mirrors():
    # add_flip: each image's added features are the mean of its own and its mirror's
    # (computed apart here); a network whose kernel is not mirror symmetric on the
    # images is refused as soon as their shape is known
    base = KernelSpec(shifts=1, image_shape=(8, 8))
    spec = base.with_added_features(16, "cnn-gap-1", 2.5, flip=True)
    spec = replace(spec, added=replace(spec.added, feature_width=4)).for_images((8, 8))
    assert spec.added.flip and spec.added.image_shape == (8, 8)
    X = unit_rows(np.random.default_rng(4).random((12, 64)))
    added = AddedFeatures.calibrated(spec, X)
    plain = replace(spec.added, flip=False)
    own = features_of(plain, added.feature_map, X)
    mirror = features_of(plain, added.feature_map, mirrored(X, (8, 8)))
    np.testing.assert_allclose(added.rows(X)[:, 64:], 0.5 * (own + mirror), rtol=1e-13)
    assert np.abs(own - mirror).max() > 1e-3  # the mirror's features are other features
    odd = KernelSpec(shifts=1).with_added_features(16, "myrtle5", flip=True)
    with pytest.raises(InvalidParameterError, match="not mirror symmetric"):
        odd.for_images((10, 10))  # Myrtle-5 pools a width of 5


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"added": KernelSpec(architecture="cnn-gap-1")}, "KernelSpec with features"),
        ({"added_weight": 0.0}, "added_weight must be > 0"),
        ({"time": 2.0}, "drop features or time"),
        ({"features": 8, "architecture": "cnn-gap-1"}, "drop features or time"),
    ],
)
def test_spec_refuses_an_added_kernel_it_cannot_serve(changes, match):
    with pytest.raises(InvalidParameterError, match=match):
        _sum_spec(**changes)


def test_only_the_in_process_strategies_serve_the_sum():
    from ntkdemo.solvers import CudaSolver

    spec = _sum_spec(image_shape=(28, 28), added=replace(ADDED, features=2048, image_shape=()))
    assert not CudaSolver().serves(spec) and not CudaSolver().serves(_sum_spec(flip=False))
    assert spec.row_width(784) == 784 + 4096
    plan = plan_memory(60000, 3000, spec.row_width(784), 10, spec=spec, available=30 << 30)
    assert plan.solver == "cg"  # the float64 triangle; the rows carry 4880 values each
    plain = plan_memory(60000, 3000, 784, 10, spec=replace(spec, added=None), available=30 << 30)
    assert plan.total_bytes - plain.total_bytes >= 2 * 8 * 60000 * 4096


def test_run_with_added_features_end_to_end(tmp_path, fashion_mnist):
    from conftest import run_ntkdemo

    out = tmp_path / "out"
    arguments = ["run", "--dataset", str(fashion_mnist), "--train-per-class", "6"]
    arguments += ["--test-per-class", "3", "--flip", "--out", str(out)]
    done = run_ntkdemo(
        *arguments,
        "--add-features",
        "64",
        "--add-architecture",
        "cnn-gap-1",
        "--feature-width",
        "8",
        "--add-weight",
        "3",
        "--add-flip",
        "--feature-dtype",
        "float32",
    )
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert "APPROXIMATE (random features): approximation error of the added cnn-gap-1" in text
    assert "test accuracy (approximate kernel):" in text
    metrics = json.loads((out / "metrics.json").read_text())
    added = metrics["network"].split("+ 3 x the ")[1]
    assert added.startswith("NTK of cnn-gap-1") and "averaged over mirrors" in added
    assert "(width 8, float32)" in added
    assert metrics["memory_plan"]["solver"] == "cholesky"
    error = metrics["approximation"]
    assert (error["n_train"], error["n_test"]) == (60, 30)
    assert 0 < error["kernel_train"] < 0.3 and 0 < error["kernel_test"] < 0.3
    assert metrics["test_accuracy"] >= 0.4  # chance 0.1
    for lonely_option in (["--add-weight", "3"], ["--add-flip"]):
        lonely = run_ntkdemo(*arguments, *lonely_option)
        assert lonely.returncode != 0 and "Traceback" not in lonely.stderr
        assert "--add-architecture and --add-flip need --add-features D" in lonely.stderr

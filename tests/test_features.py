"""Random features (ntkdemo.kernels.features) and the features strategy: the drawn
network's gradients against finite differences, the sketches against the gradients they
sketch, the features against the exact kernels, the primal solve against the dual, and
the error report against an independent computation."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy import sparse

from ntkdemo.errors import InvalidParameterError
from ntkdemo.kernels import (
    AvgPool,
    Conv,
    Dense,
    Erf,
    Gelu,
    GlobalAvgPool,
    LeakyRelu,
    Relu,
    conv_features,
    conv_kernels,
    unit_rows,
)
from ntkdemo.kernels import features as features_module
from ntkdemo.kernels.features import RandomFeatures
from ntkdemo.solvers import one_hot, solve
from ntkdemo.solvers.features import FeatureSolver, approximation_error, features_of
from ntkdemo.spec import KernelSpec

STRIDED = (
    Conv(1.3, 0.2, filter=(3, 2), stride=(2, 1), padding="VALID"),
    Erf(1.0, 0.8, 0.1),
    Conv(1.0, 0.3, filter=(2, 2)),
    LeakyRelu(0.2),
    AvgPool((2, 2), (1, 2)),
    Conv(1.2, 0.0),
    Gelu(),
    GlobalAvgPool(),
    Dense(1.0, 0.5),
    Relu(),
    Dense(1.1, 0.2),
)


def _images(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape))


def _output(feature_map: RandomFeatures, images: np.ndarray) -> np.ndarray:
    """The drawn network's output f(x), forward alone (the read-out's bias, a constant,
    dropped)."""
    x = images[..., None] if images.ndim == 3 else images
    for step in feature_map.steps:
        x, _ = features_module._forward(step, x)
    hidden = x.reshape(len(x), -1)
    scale = feature_map.readout_weight / np.sqrt(hidden.shape[1])
    return scale * hidden @ feature_map.readout


def _backward_all(feature_map: RandomFeatures, images: np.ndarray, sketch: np.ndarray):
    """The derivative of f by the images, every step's backward rule run."""
    kept, x = [], images[..., None] if images.ndim == 3 else images
    for step in feature_map.steps:
        x, memo = features_module._forward(step, x)
        kept.append(memo)
    scale = feature_map.readout_weight / np.sqrt(x.shape[3])
    delta = np.broadcast_to(scale * feature_map.readout, x.shape).copy()
    for step, memo in zip(reversed(feature_map.steps), reversed(kept), strict=True):
        delta = features_module._backward(step, delta, memo, sketch, need_input=True)
    return delta


@pytest.mark.parametrize("architecture", [STRIDED, "myrtle5", "fc-2"])
def test_backward_rules_give_the_input_gradient(architecture):
    # every layer's backward rule, chained, is the derivative of the network's output by
    # its input: central differences of f at a few pixels agree to 1e-6
    shape = (9, 8) if architecture is not STRIDED else (11, 9)
    feature_map = RandomFeatures(architecture, shape, dimension=12, width=5, b_std=0.3, seed=2)
    image = _images(1, shape)
    sketch = np.zeros((1, 12))
    gradient = _backward_all(feature_map, image, sketch)[0, ..., 0]
    rng = np.random.default_rng(1)
    for _ in range(6):
        i, j = rng.integers(shape[0]), rng.integers(shape[1])
        step = np.zeros_like(image)
        step[0, i, j] = 1e-5
        numeric = (_output(feature_map, image + step) - _output(feature_map, image - step)) / 2e-5
        assert gradient[i, j] == pytest.approx(numeric[0], rel=1e-6, abs=1e-9)


def test_weight_gradients_are_what_the_count_sketch_sketches():
    # with the CountSketch of one layer replaced by the identity, the "sketch" is that
    # layer's weight and bias gradients: central differences of f by each raw weight
    feature_map = RandomFeatures(STRIDED, (11, 9), dimension=12, width=4, b_std=0.3, seed=3)
    index = 2  # the second Conv (2 x 2 filter, 4 -> 4 channels): a formed gradient
    step = feature_map.steps[index]
    assert step.count is not None
    entries = step.weights.size + step.bias.size
    feature_map.steps[index] = replace(step, count=sparse.identity(entries, format="csr"))
    for other, linear in enumerate(feature_map.steps):  # silence the other layers
        if other != index and isinstance(linear, features_module._Linear):
            if linear.count is not None:
                silent = replace(linear, count=sparse.csr_matrix((entries, linear.count.shape[1])))
            else:
                silent = replace(linear, patch_sketch=0 * linear.patch_sketch)
            feature_map.steps[other] = silent
    image = _images(1, (11, 9), seed=4)
    sketch = np.zeros((1, entries))
    _backward_all(feature_map, image, sketch)
    rng = np.random.default_rng(0)
    for flat in rng.choice(entries, 8, replace=False):
        parameters = step.weights.reshape(-1) if flat < step.weights.size else step.bias
        where = flat if flat < step.weights.size else flat - step.weights.size
        saved = parameters[where]
        parameters[where] = saved + 1e-6
        up = _output(feature_map, image)[0]
        parameters[where] = saved - 1e-6
        down = _output(feature_map, image)[0]
        parameters[where] = saved
        assert sketch[0, flat] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-9)


def test_tensor_sketch_is_unbiased_for_the_gradients_inner_product():
    # <TS(sum_p a_p (x) d_p), TS(sum_q b_q (x) e_q)> averages, over sketches, to
    # sum_pq <a_p, b_q><d_p, e_q>: 4,000 draws within 4 standard errors
    rng = np.random.default_rng(5)
    patches = rng.standard_normal((2, 3, 7))
    deltas = rng.standard_normal((2, 3, 5))
    exact = np.einsum("pk,qk,pc,qc->", patches[0], patches[1], deltas[0], deltas[1])
    estimates = []
    for draw in range(4000):
        draws = np.random.default_rng(draw)
        step = features_module._Linear(
            None,
            np.zeros((1, 1, 7, 5)),
            np.zeros(5),
            1.0,
            0.0,
            None,
            features_module._count_sketch(7, 16, draws, np.float64),
            features_module._count_sketch(5, 16, draws, np.float64),
        )
        sketched = features_module._tensor_sketch(step, patches, deltas, 16)
        estimates.append(sketched[0] @ sketched[1])
    error = np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - exact) < 4 * error
    assert np.std(estimates) > 0.1 * abs(exact)  # a sketch, not the exact product


def test_one_layer_features_are_unbiased():
    # cnn-gap-1's drawn kernels are unbiased (Gaussian pre-activations): over 100
    # uncalibrated draws every entry's mean is within 4 standard errors of the exact
    # kernel (a dropped bias, 0.16 of 0.37, would be 20 of them away)
    X = _images(3, (6, 6), seed=6)
    exact = conv_kernels(X, architecture="cnn-gap-1", b_std=0.4)
    draws = [
        conv_features(
            X,
            architecture="cnn-gap-1",
            dimension=64,
            width=8,
            b_std=0.4,
            seed=seed,
            calibration=0,
        )
        for seed in range(100)
    ]
    for kernel in (0, 1):
        estimates = np.array([d[kernel] @ d[kernel].T for d in draws])
        error = estimates.std(axis=0) / np.sqrt(len(draws))
        assert np.all(np.abs(estimates.mean(axis=0) - exact[kernel]) < 4 * error)
        assert np.all(error < 0.05 * exact[kernel])  # the test has the power to see a bias


@pytest.mark.parametrize("architecture", ["myrtle5", STRIDED, "fc-2"])
def test_features_do_not_depend_on_the_batch(architecture):
    # each image's features are its own: one image a batch, three (batches that end
    # short) and all at once agree within rounding (the batched products' order differs)
    shape = (8, 8) if architecture != STRIDED else (11, 9)
    X = _images(7, shape, seed=8)
    feature_map = RandomFeatures(architecture, shape, dimension=64, width=6, b_std=0.3, seed=4)
    alone = feature_map.transform(X, batch_size=1)
    for batch_size in (3, 7):
        for single, batched in zip(alone, feature_map.transform(X, batch_size=batch_size)):
            np.testing.assert_allclose(batched, single, rtol=0, atol=1e-13 * abs(single).max())
    assert not np.allclose(alone[1][0], alone[1][1])  # images that differ, features too


@pytest.mark.parametrize("architecture", ["myrtle5", STRIDED])
def test_float32_runs_the_same_network_to_rounding(architecture):
    # the same drawn network in single precision: both kernels' Gram matrices within
    # 1e-5 of float64's (rounding, not another network: those differ by percents), and
    # not equal to them (the arithmetic did run in float32); float64 arrays come out
    shape = (8, 8) if architecture != STRIDED else (11, 9)
    X = _images(6, shape, seed=9)
    options = dict(architecture=architecture, dimension=256, width=16, b_std=0.2, seed=2)
    double = conv_features(X, **options)
    single = conv_features(X, **options, dtype=np.float32)
    for a, b in zip(double, single, strict=True):
        assert b.dtype == np.float64
        error = np.linalg.norm(a @ a.T - b @ b.T) / np.linalg.norm(a @ a.T)
        assert 1e-10 < error < 1e-5
    spec = KernelSpec(architecture="myrtle5", features=8, feature_dtype="float32")
    assert "(width 128, float32)" in spec.describe()
    with pytest.raises(InvalidParameterError, match="feature_dtype must be"):
        replace(spec, feature_dtype="float16")


@pytest.mark.parametrize("architecture", ["cnn-gap-2", "myrtle5", STRIDED, "fc-2"])
def test_wide_features_approach_the_exact_kernels(architecture):
    # width 256, 8,000 columns: within 4% of the exact kernels (Frobenius), calibrated;
    # 12% for fc-2, whose kernel of unrelated random images is near 0 off the diagonal
    shape = (8, 8) if architecture != STRIDED else (11, 9)
    X = _images(6, shape, seed=7)
    exact = conv_kernels(X, architecture=architecture, b_std=0.2)
    approximate = conv_features(
        X, architecture=architecture, dimension=8000, width=256, b_std=0.2, seed=1
    )
    for features, kernel in zip(approximate, exact, strict=True):
        error = np.linalg.norm(features @ features.T - kernel) / np.linalg.norm(kernel)
        assert error < (0.12 if architecture == "fc-2" else 0.04)


def test_calibration_scales_to_the_exact_kernel():
    X = _images(6, (8, 8), seed=8)
    feature_map = RandomFeatures("myrtle5", (8, 8), dimension=300, width=6, seed=3)
    scales = feature_map.calibrate(X, 6)
    exact = conv_kernels(X, architecture="myrtle5")
    for features, kernel in zip(feature_map.transform(X), exact, strict=True):
        estimate = features @ features.T  # the least-squares factor is now 1
        assert np.vdot(estimate, kernel) / np.vdot(estimate, estimate) == pytest.approx(1.0)
    assert min(scales) > 0 and max(abs(np.log(scales))) > 1e-3  # it did rescale


@pytest.mark.parametrize(
    ("architecture", "match"),
    [
        ("cnn-flatten-2", "read-out fed by the last hidden layer"),
        ("conv+layernorm+gap+dense", "entry by entry"),
        ("conv+(|relu+conv)+relu+gap+dense", "Parallel"),
        ("flatten+dense", "hidden Conv or Dense"),
    ],
)
def test_features_refuse_what_they_cannot_draw(architecture, match):
    with pytest.raises(InvalidParameterError, match=match):
        conv_features(_images(2, (6, 6)), architecture=architecture, dimension=16)
    with pytest.raises(InvalidParameterError, match=match):
        KernelSpec(architecture=architecture, features=16)


def test_spec_refuses_features_where_they_cannot_serve():
    with pytest.raises(InvalidParameterError, match="one-layer formula is exact"):
        KernelSpec(features=64)
    with pytest.raises(InvalidParameterError, match="at convergence only"):
        KernelSpec(architecture="cnn-gap-1", features=64, time=3.0)
    with pytest.raises(InvalidParameterError, match="features"):
        KernelSpec(architecture="cnn-gap-1", features=0)
    assert KernelSpec(architecture="cnn-gap-1", features=64).feature_columns == 128
    assert KernelSpec(depth=2, kernel="nngp", features=64).feature_columns == 64


def _problem(n_train=40, n_test=12):
    rng = np.random.default_rng(9)
    X = unit_rows(rng.random((n_train + n_test, 64)))
    labels = rng.integers(0, 3, n_train)
    return X[:n_train], X[n_train:], one_hot(labels, 3)


@pytest.mark.parametrize("flip", [False, True])
def test_primal_solve_equals_the_dual_on_the_features(flip):
    # (F^T F + r I) w = F^T Y  and  (F F^T + r I) a = Y  give the same outputs
    X, X_test, Y = _problem()
    spec = KernelSpec(
        architecture="cnn-gap-2",
        features=24,
        feature_width=6,
        ridge=0.05,
        image_shape=(8, 8),
        flip=flip,
    )
    fitted = FeatureSolver(spec.feature_columns, batch_rows=7).fit(X, Y, spec)
    F = features_of(spec, fitted.feature_map, X)
    F_test = features_of(spec, fitted.feature_map, X_test)
    dual = solve(F @ F.T, Y, ridge=0.05).coef
    np.testing.assert_allclose(fitted.predict(X_test), F_test @ F.T @ dual, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fitted.train_scores, F @ F.T @ dual, rtol=1e-8, atol=1e-10)


def test_out_of_core_fit_equals_the_kept_features():
    X, X_test, Y = _problem()
    spec = KernelSpec(architecture="cnn-gap-1", features=32, ridge=0.01, image_shape=(8, 8))
    kept = FeatureSolver(spec.feature_columns, batch_rows=9).fit(X, Y, spec, spectrum_rows=10)
    streamed = FeatureSolver(spec.feature_columns, keep=False, batch_rows=9).fit(X, Y, spec)
    np.testing.assert_array_equal(kept.solution.coef, streamed.solution.coef)
    np.testing.assert_allclose(kept.train_scores, streamed.train_scores, rtol=1e-12)
    assert kept.eigenvalues.shape == (10,) and streamed.eigenvalues is None


def test_plan_chooses_features_and_refuses_other_solvers_for_them():
    from ntkdemo.plan import plan_memory

    spec = KernelSpec(architecture="myrtle5", features=1024, image_shape=(28, 28))
    plan = plan_memory(60000, 10000, 784, 10, spec=spec, available=8 << 30)
    assert plan.solver == "features" and plan.strategy.keep
    small = plan_memory(60000, 10000, 784, 10, spec=spec, available=int(2.2 * 2**30))
    assert small.solver == "features" and not small.strategy.keep  # out of core
    with pytest.raises(InvalidParameterError, match="does not serve"):
        plan_memory(100, 10, 784, 10, spec=spec, solver="cg")


def test_approximation_error_against_an_independent_computation():
    X, X_test, Y = _problem()
    spec = KernelSpec(
        architecture="cnn-gap-2", features=16, feature_width=4, ridge=0.1, image_shape=(8, 8)
    )
    fitted = FeatureSolver(spec.feature_columns).fit(X, Y, spec)
    report = approximation_error(spec, fitted.feature_map, X, X_test, Y, n_train=15, n_test=5)
    rng = np.random.default_rng(0)  # the draw the report makes
    train = np.sort(rng.choice(len(X), 15, replace=False))
    test = np.sort(rng.choice(len(X_test), 5, replace=False))
    scaled = np.sqrt(64)
    K = conv_kernels(X[train] * scaled, architecture="cnn-gap-2", image_shape=(8, 8))[1]
    K_test = conv_kernels(
        X_test[test] * scaled, X[train] * scaled, architecture="cnn-gap-2", image_shape=(8, 8)
    )[1]
    F = features_of(spec, fitted.feature_map, X[train])
    F_test = features_of(spec, fitted.feature_map, X_test[test])
    expected = np.linalg.norm(F_test @ F.T - K_test) / np.linalg.norm(K_test)
    assert report.kernel_test == pytest.approx(expected, rel=1e-10)
    exact_outputs = K_test @ np.linalg.solve(K + 0.1 * np.eye(15), Y[train])
    approximate = F_test @ F.T @ np.linalg.solve(F @ F.T + 0.1 * np.eye(15), Y[train])
    outputs = np.linalg.norm(approximate - exact_outputs) / np.linalg.norm(exact_outputs)
    assert report.outputs == pytest.approx(outputs, rel=1e-6)
    agree = np.mean(approximate.argmax(axis=1) == exact_outputs.argmax(axis=1))
    assert report.classes_agree == agree
    assert (report.n_train, report.n_test) == (15, 5) and 0 < report.kernel_train < 1
    assert "approximation error" in report.describe()


def test_feature_curve_equals_a_fit_at_each_size():
    from conftest import random_sample
    from ntkdemo.theory.experiments import feature_curve

    sample = random_sample(np.random.default_rng(11), 40, 12, (8, 8), 3)
    X, y, X_test, y_test = sample.X_train, sample.y_train, sample.X_test, sample.y_test
    spec = KernelSpec(
        architecture="cnn-gap-2", features=32, feature_width=4, ridge=0.01, image_shape=(8, 8)
    )
    lines: list[str] = []
    scores = feature_curve(sample, spec, np.array([32, 40]), progress=lines.append)
    for n, score in zip([32, 40], scores, strict=True):
        # a run's fit on the first n images: calibrated on the same first 32
        fitted = FeatureSolver(spec.feature_columns).fit(unit_rows(X[:n]), one_hot(y[:n], 3), spec)
        assert score == np.mean(fitted.predict(unit_rows(X_test)).argmax(axis=1) == y_test)
    assert len(lines) == 1 and "APPROXIMATE, approximation error" in lines[0]
    assert "on 40 training and 12 test images" in lines[0]
    # in float32 the same network: the same features to rounding, so the same scores
    single = feature_curve(sample, replace(spec, feature_dtype="float32"), np.array([32, 40]))
    np.testing.assert_array_equal(single, scores)


def test_estimators_and_the_transformer_in_a_pipeline():
    from sklearn.base import clone
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline

    from ntkdemo import ConvKernelFeatures, NTKClassifier

    rng = np.random.default_rng(10)
    X = rng.random((30, 36))
    y = np.arange(30) % 3
    model = NTKClassifier(architecture="cnn-gap-1", features=64, ridge=0.01).fit(X, y)
    assert model.coef_.shape == (128, 3) and not hasattr(model, "dual_coef_")
    assert model.predict(X).shape == (30,)
    pipeline = make_pipeline(
        ConvKernelFeatures(architecture="cnn-gap-1", dimension=64), RidgeClassifier(1e-3)
    )
    pipeline.fit(X, y)
    transformer = pipeline[0]
    assert transformer.transform(X).shape == (30, 128)
    nngp = clone(transformer).set_params(kernel="nngp").fit(X)
    features = nngp.transform(X)
    exact = conv_kernels(X, architecture="cnn-gap-1", image_shape=(6, 6))[0]
    assert np.linalg.norm(features @ features.T - exact) < 0.1 * np.linalg.norm(exact)
    assert pipeline.score(X, y) > 0.5
    single = clone(transformer).set_params(dtype="float32").fit(X).transform(X)
    double = transformer.transform(X)
    assert single.dtype == np.float64 and 0 < np.abs(single - double).max() < 1e-4
    with pytest.raises(InvalidParameterError, match="dtype must be float64 or float32"):
        clone(transformer).set_params(dtype="float16").fit(X)
    with pytest.raises(InvalidParameterError, match="no square grey image"):
        ConvKernelFeatures(architecture="cnn-gap-1").fit(rng.random((4, 10)))


def test_run_with_features_end_to_end(tmp_path, fashion_mnist):
    from conftest import run_ntkdemo

    out = tmp_path / "out"
    done = run_ntkdemo(
        "run",
        "--dataset",
        str(fashion_mnist),
        "--architecture",
        "cnn-gap-1",
        "--features",
        "256",
        "--feature-width",
        "16",
        "--ridge",
        "0.01",
        "--train-per-class",
        "8",
        "--test-per-class",
        "3",
        "--out",
        str(out),
    )
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert "memory plan: 512 random features (an approximation" in text
    assert "APPROXIMATE (random features): approximation error" in text
    assert "test accuracy (approximate kernel):" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["memory_plan"]["solver"] == "features"
    assert "approximated by 512 random features" in metrics["network"]
    error = metrics["approximation"]
    assert (error["n_train"], error["n_test"]) == (80, 30)
    assert 0 < error["kernel_train"] < 0.2 and 0 < error["kernel_test"] < 0.2
    assert 0.5 <= error["classes_agree"] <= 1
    # the calibration's Gram matrix of 32 images and the error check's pairs, no other,
    # as the estimate printed first counted them
    exact_pairs = 32 * 33 // 2 + 80 * 81 // 2 + 30 * 80
    assert metrics["kernel_pairs"] == exact_pairs
    assert "against the exact kernel: about" in text and f"({exact_pairs:,} pairs)" in text
    assert metrics["test_accuracy"] >= 0.3  # the exact kernel: 0.433 (13/30); chance 0.1


def test_forced_solver_with_features_is_one_clear_line(tmp_path, tiny_dataset):
    from conftest import run_ntkdemo, tiny

    done = run_ntkdemo(
        "run",
        *tiny(
            tiny_dataset,
            tmp_path / "o",
            "--architecture",
            "cnn-gap-1",
            "--features",
            "64",
            "--solver",
            "cg",
        ),
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "does not serve" in done.stderr


def test_curve_with_float32_features_from_the_command_line(tmp_path, tiny_dataset):
    from conftest import run_ntkdemo, tiny

    arguments = ["--architectures", "cnn-gap-1", "--features", "32", "--depths", "1"]
    arguments += ["--sizes", "2,4", "--no-svc", "--feature-dtype", "float32"]
    done = run_ntkdemo("curve", *tiny(tiny_dataset, tmp_path / "o", *arguments))
    assert done.returncode == 0, done.stderr
    assert "float32)" in done.stdout + done.stderr  # the error line names the precision
    accuracy = json.loads((tmp_path / "o" / "curve.json").read_text())["accuracy"]
    assert all(0 <= v <= 1 for v in accuracy["NTK cnn-gap-1, 64 features"])


def test_every_finite_form_has_its_derivative():
    # each activation's slopes are the derivative of its values (central differences),
    # and LayerNorm, which mixes the channels, has none
    from ntkdemo.kernels.activations import WORDS, LayerNorm

    z = np.linspace(-3.0, 3.0, 61) + 0.013  # off the kinks at 0
    made = {"abrelu": (0.3, 1.5), "erf": (1.2, 0.7, 0.1)}
    for name, kind in WORDS.items():
        layer = kind(*made.get(name, ()))
        finite = layer.finite(z)
        if kind is LayerNorm:
            assert finite is None
            continue
        values, slopes = finite
        up, down = layer.finite(z + 1e-6)[0], layer.finite(z - 1e-6)[0]
        np.testing.assert_allclose(slopes, (up - down) / 2e-6, rtol=1e-6, atol=1e-8, err_msg=name)

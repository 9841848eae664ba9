"""Convolutional NNGP and NTK against neural-tangents, and the fold's properties."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import random_sample
from ntkdemo.errors import InvalidParameterError
from ntkdemo.kernels import (
    AvgPool,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    Relu,
    architecture_layers,
    conv_kernels,
    fc_kernels,
    unit_rows,
)

REFERENCE = np.load(Path(__file__).parent / "data" / "conv_reference.npz")
CASES = [str(key) for key in REFERENCE.files if key.startswith("case") and "_" not in key]
DUPLICATES = {"grey": [1, 7, 8], "colour": [0, 3]}  # rescaled and near-duplicate images


def composed(name: str, w_std: float, b_std: float) -> list:
    """The layer values of the generator's ``composed-*`` cases: the first step is not
    a rectified conv (pooled pixels; an unrectified conv), a ReLU stands alone."""
    start = {
        "composed-pool": [AvgPool(), Conv(w_std, b_std), Relu(), Conv(w_std, b_std)],
        "composed-diagonal": [Conv(w_std, b_std), Relu(), Conv(w_std, b_std)],
    }[name]
    return [*start, Conv(w_std, b_std), Relu(), Flatten(), Dense(w_std, b_std)]


@pytest.mark.parametrize("case", CASES)
def test_architectures_equal_neural_tangents(case):
    """<= 1e-11 of the largest entry everywhere, <= 3e-8 where two images have cosine 1
    (a rescaled or near-duplicate image: the angle is ill-conditioned there) and on the
    diagonal, where ntkdemo is exact (theta = 0) and neural-tangents rounds."""
    inputs, name, w_std, b_std = REFERENCE[case]
    images = REFERENCE[str(inputs)]
    w_std, b_std = float(w_std), float(b_std)
    architecture = (
        composed(str(name), w_std, b_std) if str(name).startswith("composed-") else str(name)
    )
    nngp, ntk = conv_kernels(images, architecture=architecture, w_std=w_std, b_std=b_std)
    for got, want in ((nngp, REFERENCE[f"{case}_nngp"]), (ntk, REFERENCE[f"{case}_ntk"])):
        scale = np.abs(want).max()
        error = np.abs(got - want) / scale
        tolerant = np.zeros_like(error, dtype=bool)
        tolerant[np.ix_(DUPLICATES[str(inputs)], DUPLICATES[str(inputs)])] = True
        np.fill_diagonal(tolerant, True)
        assert error[~tolerant].max() <= 1e-11, (name, error[~tolerant].max())
        assert error.max() <= 3e-8
        assert np.isfinite(got).all()


def test_flat_rows_with_image_shape_equal_images():
    images = REFERENCE["colour"]
    flat = images.reshape(len(images), -1)
    for name in ("cnn-gap-1", "cnn-flatten-2"):
        expected = conv_kernels(images, architecture=name)
        got = conv_kernels(flat, architecture=name, image_shape=(8, 8, 3))
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("name", ["cnn-gap-2", "cnn-flatten-2", "myrtle5"])
def test_cross_kernel_equals_the_gram_blocks(name):
    """K(X, Y) computed as a cross kernel equals the rows and columns of the Gram matrix
    of X and Y together: symmetric and cross paths agree."""
    images = REFERENCE["grey"][:5, ::2, ::2]  # 14 x 14: quick
    nngp, ntk = conv_kernels(images, architecture=name)
    cross_nngp, cross_ntk = conv_kernels(images[:2], images[2:], architecture=name)
    np.testing.assert_allclose(cross_nngp, nngp[:2, 2:], rtol=1e-14, atol=0)
    np.testing.assert_allclose(cross_ntk, ntk[:2, 2:], rtol=1e-14, atol=0)
    np.testing.assert_array_equal(nngp, nngp.T)
    assert np.linalg.eigvalsh(ntk).min() > -1e-12 * np.abs(ntk).max()


def test_black_borders_give_zero_not_nan():
    """At b_std = 0 the zero positions of real images have zero variance: the ReLU must
    give 0 there, and a wholly black image a zero row."""
    images = REFERENCE["grey"][:3, ::2, ::2].copy()
    images[2] = 0.0
    for name in ("myrtle5", "cnn-flatten-3", "cnn-gap-1"):
        nngp, ntk = conv_kernels(images, architecture=name, b_std=0.0)
        assert np.isfinite(nngp).all() and np.isfinite(ntk).all()
        assert (nngp[2] == 0).all() and (ntk[2] == 0).all()


def test_fc_names_are_the_fully_connected_kernels():
    images = REFERENCE["colour"]
    got = conv_kernels(images, architecture="fc-2", w_std=1.3, b_std=0.2)
    expected = fc_kernels(images.reshape(len(images), -1), depth=2, w_std=1.3, b_std=0.2)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_named_architectures_are_their_layers():
    w, b = 1.5, 0.1
    assert architecture_layers("cnn-gap-1", w, b) == (
        Conv(w, b),
        Relu(),
        GlobalAvgPool(),
        Dense(w, b),
    )
    assert architecture_layers("cnn-flatten-1", w, b) == (
        Conv(w, b),
        Relu(),
        Flatten(),
        Dense(w, b),
    )
    myrtle = architecture_layers("myrtle5", w, b)
    assert sum(isinstance(layer, Conv) for layer in myrtle) == 4
    assert [type(layer) for layer in myrtle].count(AvgPool) == 2
    assert len(architecture_layers("myrtle10")) == 2 * 9 + 4


@pytest.mark.parametrize(
    "architecture, message",
    [
        ("resnet", "unknown architecture 'resnet'"),
        ("cnn-gap-0", "unknown architecture"),
        ([Conv(1.0, 0.0), Relu(), Dense(1.0, 0.0)], "exactly one GlobalAvgPool or Flatten"),
        ([Conv(1.0, 0.0), Flatten(), AvgPool(), Dense(1.0, 0.0)], "Conv and AvgPool come before"),
        (
            [Relu(), Conv(1.0, 0.0), Flatten(), Dense(1.0, 0.0)],
            "Relu needs a Conv or Dense before it",
        ),
        (
            [Conv(1.0, 0.0), Relu(), AvgPool(), Relu(), Flatten(), Dense(1.0, 0.0)],
            "Relu needs a Conv or Dense before it",
        ),
    ],
)
def test_bad_architectures_are_refused(architecture, message):
    with pytest.raises(InvalidParameterError, match=message):
        conv_kernels(REFERENCE["colour"], architecture=architecture)


def test_flat_rows_need_an_image_shape():
    with pytest.raises(InvalidParameterError, match="pass image_shape"):
        conv_kernels(np.ones((2, 64)), architecture="cnn-gap-1")
    with pytest.raises(InvalidParameterError, match="holds 49 values but the rows of X have 64"):
        conv_kernels(np.ones((2, 64)), architecture="cnn-gap-1", image_shape=(7, 7))


def test_spec_with_an_architecture_is_the_conv_kernel_of_rescaled_rows():
    from ntkdemo.kernels import unit_rows
    from ntkdemo.spec import KernelSpec

    images = REFERENCE["colour"]
    X_unit = unit_rows(images.reshape(len(images), -1))
    spec = KernelSpec(architecture="cnn-gap-1", w_std=1.3, image_shape=(8, 8, 3))
    assert not spec.is_one_layer_formula
    expected = conv_kernels(
        X_unit * np.sqrt(192), architecture="cnn-gap-1", w_std=1.3, image_shape=(8, 8, 3)
    )
    np.testing.assert_array_equal(spec.matrix(X_unit), expected[1])
    nngp_spec = KernelSpec(
        kernel="nngp", architecture="cnn-gap-1", w_std=1.3, image_shape=(8, 8, 3)
    )
    np.testing.assert_array_equal(nngp_spec.matrix(X_unit), expected[0])
    assert KernelSpec(architecture="fc-3").depth == 3  # fc-L is the fully connected network
    with pytest.raises(InvalidParameterError, match="unknown architecture"):
        KernelSpec(architecture="resnet50")
    with pytest.raises(InvalidParameterError, match="needs the images' shape"):
        KernelSpec(architecture="myrtle5").matrix(X_unit)


def test_command_line_and_estimator_take_an_architecture(tiny_dataset, tmp_path, capsys):
    """ntkdemo --architecture runs end to end (Cholesky); the estimator agrees with it."""
    import json

    from ntkdemo import NTKClassifier, load_sample
    from ntkdemo.cli import main

    arguments = ["--dataset", str(tiny_dataset), "--train-per-class", "5", "--test-per-class", "3"]
    code = main([*arguments, "--architecture", "cnn-gap-2", "--out", str(tmp_path), "--quiet"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["arguments"]["architecture"] == "cnn-gap-2"
    sample = load_sample(tiny_dataset, 5, 3)
    model = NTKClassifier(architecture="cnn-gap-2").fit(sample.X_train, sample.y_train)
    accuracy = model.score(sample.X_test, sample.y_test)
    assert accuracy == pytest.approx(metrics["test_accuracy"])
    code = main([*arguments, "--architecture", "vgg", "--out", str(tmp_path)])
    assert code == 2 and "unknown architecture 'vgg'" in capsys.readouterr().err
    with pytest.raises(InvalidParameterError, match="no square grey image"):
        NTKClassifier(architecture="myrtle5").fit(np.ones((4, 10)), [0, 1, 0, 1])


@pytest.mark.parametrize(
    "spec_settings",
    [
        {"depth": 3, "w_std": 1.4, "b_std": 0.1},
        {"kernel": "nngp", "depth": 2},
        {"architecture": "cnn-gap-1", "w_std": 2**0.5, "image_shape": (8, 8, 3)},
        {"architecture": "cnn-flatten-2", "kernel": "nngp", "image_shape": (8, 8, 3)},
        {"depth": 2, "flip": True, "image_shape": (8, 8, 3)},
        {"architecture": "cnn-gap-1", "flip": True, "image_shape": (8, 8, 3)},
    ],
)
@pytest.mark.parametrize("storage", [np.float64, np.float32])
def test_cg_serves_every_kernel_at_convergence(spec_settings, storage):
    """Deep and convolutional kernels solved by the cg and cg32 strategies (their strips
    from KernelSpec.matrix; cg32 refined against the float64 kernel recomputed block by
    block) give Cholesky's answer."""
    from ntkdemo.kernels import unit_rows
    from ntkdemo.solvers import CGOptions, CGSolver, CholeskySolver, one_hot
    from ntkdemo.spec import KernelSpec

    rng = np.random.default_rng(7)
    X_unit = unit_rows(rng.random((90, 192)) ** 2)
    Y = one_hot(rng.integers(0, 3, 90), 3)
    spec = KernelSpec(**spec_settings)
    options = CGOptions(
        rank=20, cluster_size=30, strip_rows=16, storage=storage, residual_block_rows=32
    )
    solver = CGSolver(options=options)
    assert solver.serves(spec)
    lines: list[str] = []
    iterative = solver.fit(X_unit, Y, spec, report=lines.append)
    assert (storage == np.float32) == any("float64 pass" in line for line in lines)
    direct = CholeskySolver().fit(X_unit, Y, spec)
    scale = np.abs(direct.solution.coef).max()
    np.testing.assert_allclose(iterative.solution.coef, direct.solution.coef, atol=1e-5 * scale)
    test = unit_rows(rng.random((20, 192)) ** 2)
    np.testing.assert_array_equal(iterative.predict(test).argmax(1), direct.predict(test).argmax(1))


def test_a_workspace_beyond_memory_is_refused_up_front():
    """A pooling read-out of 256 x 256 images would need 140 GB per thread."""
    with pytest.raises(InvalidParameterError, match="need .* of workspace for a pooling read-out"):
        conv_kernels(np.ones((2, 256, 256)), architecture="cnn-gap-1")


def test_relu_angle_is_arctan2_within_two_ulp():
    """The fold's straight-line arctan2 (one division) against numpy's, across angles and
    magnitudes; exact at cos = +-1 and 0 at (0, 0), as arctan2."""
    import numba

    from ntkdemo.kernels.conv_loops import _angle

    angles = numba.njit(lambda s, c: np.array([_angle(s[i], c[i]) for i in range(len(s))]))
    rng = np.random.default_rng(1)
    theta = np.concatenate([rng.uniform(0, np.pi, 200_000), np.linspace(0, np.pi, 10_001)])
    radius = np.exp(rng.uniform(-300, 300, len(theta)))
    sine, cosine = np.abs(np.sin(theta)) * radius, np.cos(theta) * radius
    want = np.arctan2(sine, cosine)
    ulps = np.abs(angles(sine, cosine) - want) / np.spacing(np.maximum(want, 1e-300))
    assert ulps.max() <= 2.0
    edges = angles(np.zeros(3), np.array([2.0, -3.0, 0.0]))
    np.testing.assert_array_equal(edges, [0.0, np.pi, 0.0])


@pytest.mark.parametrize("flip", [False, True])
def test_every_long_stage_of_a_conv_run_shows_progress(flip):
    """The kernel and the predictions of a convolutional kernel (minutes to hours each)
    each reach the progress bar; averaged over mirrors, the strips of K(X, FX) too. The
    training outputs cost no kernel pair (they come from the factorised matrix)."""
    from ntkdemo.kernels import unit_rows
    from ntkdemo.solvers import CholeskySolver, one_hot
    from ntkdemo.spec import KernelSpec

    seen: list[str] = []

    def progress(description):
        def record(iterable):
            for item in iterable:
                seen.append(description)
                yield item

        return record

    rng = np.random.default_rng(9)
    X_unit = unit_rows(rng.random((20, 64)))
    spec = KernelSpec(architecture="cnn-gap-1", image_shape=(8, 8), flip=flip)
    fitted = CholeskySolver().fit(X_unit, one_hot(np.arange(20) % 2, 2), spec, progress=progress)
    fitted.predict(unit_rows(rng.random((5, 64))), progress=progress)
    assert {"kernel blocks", "prediction blocks"} == set(seen)
    # the plain kernel's one chunk, then K(X, FX)'s upper strips of ceil(20 / 16) rows
    assert seen.count("kernel blocks") == (1 + 10 if flip else 1)


@pytest.mark.parametrize(
    "flip, solver", [(False, "cholesky"), (True, "cholesky"), (False, "cg"), (True, "cg")]
)
def test_a_runs_pairs_are_counted_before_it_starts(flip, solver, monkeypatch):
    """kernel_pairs, which the time estimates multiply by a per-pair cost, counts the
    pairs run_demo has the convolutional fold compute, and so does the run's own tally:
    exactly, and averaged over mirrors with the mirror's term (an involution: its matrix
    is symmetric) a triangle too, no pair twice. The spectrum and the training outputs
    cost no pair of their own (the Cholesky strategy's from its matrix, the cg
    strategy's from its stored triangle), and the cg strategy's strips (here of 16 rows,
    the last one short) compute their diagonal tiles' triangles alone."""
    from ntkdemo.demo import kernel_pairs, run_demo
    from ntkdemo.kernels import matrix
    from ntkdemo.plan import plan_memory
    from ntkdemo.solvers import CGOptions, CGSolver
    from ntkdemo.spec import KernelSpec

    computed = []

    def counting(X, Y=None, **settings):
        computed.append(len(X) * (len(X) + 1) // 2 if Y is None else len(X) * len(Y))
        return conv_kernels(X, Y, **settings)

    monkeypatch.setattr(matrix, "conv_kernels", counting)
    rng = np.random.default_rng(10)
    sample = random_sample(rng, 40, 7, (8, 8), 2)
    spec = KernelSpec(architecture="cnn-gap-1", image_shape=(8, 8), flip=flip)
    strategies = (CGSolver(options=CGOptions(strip_rows=16, cluster_size=20, min_rank=5)),)
    plan = plan_memory(
        40, 7, 64, 2, spec=spec, solver=solver, strategies=strategies if solver == "cg" else None
    )
    assert plan.strategy.name == solver
    result = run_demo(sample, spec, plan=plan, spectrum_rows=10)
    counted = kernel_pairs(spec, 40, 7, spectrum_rows=10)
    assert result.kernel_pairs == sum(computed)  # the run's own tally
    # no pair twice: the Gram's triangle and the test rows, nothing more (twice with flips)
    assert sum(computed) == counted == (2 if flip else 1) * (40 * 41 // 2 + 7 * 40)
    leading = KernelSpec(architecture="cnn-gap-1", image_shape=(8, 8), flip=flip).matrix(
        unit_rows(sample.X_train[:10])
    )
    np.testing.assert_allclose(result.eigenvalues, np.linalg.eigvalsh(leading), atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 23])
def test_pairs_made_round_by_round_are_the_upper_triangle_in_order(n):
    """The rounds' pairs, made from their linear range alone, are together the strict
    upper triangle (or every pair) in row-major order, each once."""
    from ntkdemo.kernels.conv import _pair_count, _pairs

    count = _pair_count(n, n, True)
    pieces = [_pairs(n, n, True, a, min(a + 5, count)) for a in range(0, count, 5)]
    rows = np.concatenate([p[0] for p in pieces]) if pieces else np.empty(0, int)
    cols = np.concatenate([p[1] for p in pieces]) if pieces else np.empty(0, int)
    expected = np.triu_indices(n, 1)
    np.testing.assert_array_equal(rows, expected[0])
    np.testing.assert_array_equal(cols, expected[1])
    all_rows, all_cols = _pairs(3, 4, False, 0, 12)
    np.testing.assert_array_equal(all_rows * 4 + all_cols, np.arange(12))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"architecture": "cnn-flatten-300", "w_std": 0.01}, "underflowed to zero at cnn-flat"),
        ({"architecture": "myrtle10", "w_std": 1e-30}, "underflowed to zero at myrtle10"),
        ({"architecture": "myrtle10", "w_std": 1e30}, "overflowed to inf/NaN at myrtle10"),
        ({"architecture": "cnn-gap-1", "w_std": 1e200}, r"w_std=1e\+200 of a Conv layer overflows"),
    ],
)
def test_a_kernel_out_of_range_is_refused_with_advice(settings, message):
    """A conv kernel that underflowed holds no information (a ridge would solve it to
    chance with exit 0); one that overflowed would fail later in LAPACK."""
    from ntkdemo.errors import InvalidParameterError

    X = np.random.default_rng(0).random((4, 8, 8))
    with pytest.raises(InvalidParameterError, match=message):
        conv_kernels(X, **settings)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"X": np.empty((0, 36))}, r"X holds no images \(shape \(0, 36\)\)"),
        ({"Y": np.empty((0, 36))}, r"Y holds no images"),
        ({"image_shape": (-6, -6)}, r"image_shape must be \(H, W\) or \(H, W, C\) of whole"),
        ({"image_shape": (6.0, 6.0)}, r"whole numbers >= 1, got \(6\.0, 6\.0\)"),
        ({"architecture": None}, r"architecture must be a name .* got None"),
        ({"architecture": 5}, r"architecture must be a name .* got 5"),
        ({"architecture": [5]}, r"or a sequence of layers"),
    ],
)
def test_bad_arguments_are_named(arguments, message):
    from ntkdemo.errors import NTKDemoError

    settings = {
        "X": np.random.default_rng(1).random((3, 36)),
        "architecture": "cnn-gap-1",
        "image_shape": (6, 6),
        **arguments,
    }
    with pytest.raises(NTKDemoError, match=message):
        conv_kernels(**settings)


def test_an_underflowing_conv_network_is_one_line_on_the_command_line(tiny_dataset, capsys):
    from ntkdemo.cli import main

    for ridge in ("0", "1"):
        code = main(
            ["--dataset", str(tiny_dataset), "--architecture", "cnn-flatten-300"]
            + ["--w-std", "0.01", "--ridge", ridge, "--train-per-class", "4"]
            + ["--test-per-class", "2", "--quiet"]
        )
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "underflowed to zero" in err
    code = main(
        ["--dataset", str(tiny_dataset), "--architecture", "cnn-gap-1", "--w-std", "1e200"]
        + ["--train-per-class", "4", "--test-per-class", "2", "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "overflows float64" in err


def test_identical_images_have_identical_kernel_rows():
    """Two copies of an image are one input: every fold gives them the same rows."""
    x = np.random.default_rng(0).integers(0, 256, size=(1, 8, 8)).astype(float)
    X = np.repeat(x, 5, axis=0)
    for architecture in ("cnn-gap-2", "cnn-flatten-2", "myrtle5"):
        for kernel in conv_kernels(X, architecture=architecture):
            np.testing.assert_allclose(kernel, kernel[0, 0], rtol=4e-15)


def test_a_conv_kernel_collapsed_to_a_constant_is_refused():
    """100 conv layers with a bias forget their input: correlations within an ulp of 1."""
    from ntkdemo.errors import InvalidParameterError
    from ntkdemo.kernels import unit_rows
    from ntkdemo.spec import KernelSpec

    X = unit_rows(np.random.default_rng(2).random((3, 36)))
    settings = {"w_std": 1.0, "b_std": 1.0, "image_shape": (6, 6)}
    with pytest.raises(InvalidParameterError, match="constant to rounding at NTK of cnn-flat"):
        KernelSpec(architecture="cnn-flatten-100", **settings).matrix(X)
    kernel = KernelSpec(architecture="cnn-flatten-10", **settings).matrix(X)
    assert np.linalg.matrix_rank(kernel) == 3  # ten layers still tell them apart
    identical = unit_rows(np.ones((3, 36)))  # rows that are one image: not a collapse
    KernelSpec(architecture="cnn-flatten-100", **settings).matrix(identical)


def test_the_per_pair_cost_of_a_cheap_kernel_is_measured_on_enough_pairs(monkeypatch):
    """Twelve images of a microsecond kernel time its call, not its pairs: the count
    doubles until the measurement lasts (here up to the ``largest`` given)."""
    from ntkdemo.kernels import conv
    from ntkdemo.units import format_pair_cost

    sizes: list[int] = []
    measured = conv.conv_kernels

    def recording(X, *arguments, **settings):
        sizes.append(len(X))
        return measured(X, *arguments, **settings)

    monkeypatch.setattr(conv, "conv_kernels", recording)
    cost = conv.seconds_per_pair("cnn-flatten-1", (4, 4), largest=48)
    assert sizes == [2, 12, 24, 48] and 0 < cost < 1e-3
    assert format_pair_cost(0.0025) == "2.50 ms" and format_pair_cost(4.1e-6) == "4.1 us"

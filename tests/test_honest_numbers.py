"""No wrong or NaN number with exit 0: each case that once printed one is checked here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import random_images, write_image_dataset
from ntkdemo.cli import main
from ntkdemo.data import load_sample
from ntkdemo.demo import run_demo
from ntkdemo.dynamics import gradient_descent_mean
from ntkdemo.errors import InvalidInputError, InvalidParameterError
from ntkdemo.kernels import fc_kernels, ntk
from ntkdemo.solvers import ntk_strips, one_hot, solve
from ntkdemo.solvers.cg import CGOptions, solve_cg
from ntkdemo.spec import KernelSpec
from ntkdemo.validation import check_kernel_matrix


@pytest.fixture(scope="module")
def contradicting_dataset(tmp_path_factory):
    """Each training image appears twice, once per label of a pair: no function fits both."""
    rng = np.random.default_rng(11)
    labels = np.repeat([0, 1, 2], 4)
    images = random_images(rng, labels)
    train = np.concatenate([images, images]), np.concatenate([labels, (labels + 1) % 3])
    return write_image_dataset(
        tmp_path_factory.mktemp("contradicting"),
        {"train": train, "test": (random_images(rng, labels), labels)},
        ["a", "b", "c"],
    )


def run(capsys, dataset, *arguments):
    code = main(
        ["--dataset", str(dataset), "--train-per-class", "8", "--test-per-class", "4", *arguments]
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_contradicting_labels_get_jitter_and_an_honest_train_accuracy(
    contradicting_dataset, tmp_path, capsys
):
    """Identical images with different labels: K is singular (condition ~1e17). The solve
    adds jitter and says so; train accuracy is that of K A, which cannot fit both labels."""
    code, out, err = run(capsys, contradicting_dataset, "--out", str(tmp_path))
    assert code == 0, err
    assert "ill-conditioned" in out and "added jitter" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["solver"]["jitter"] > 0
    assert metrics["solver"]["condition_number"] <= 1e12
    assert metrics["train_accuracy"] <= 0.75  # at most one label of each pair is right


def test_contradicting_labels_on_the_cg_path_do_not_print_nan(
    contradicting_dataset, tmp_path, capsys
):
    code, out, err = run(
        capsys,
        contradicting_dataset,
        "--out",
        str(tmp_path),
        "--solver",
        "cg",
    )
    assert "nan" not in out.lower()
    if code == 0:  # the residual target was met or the miss is reported
        assert "relative residual" in out
    else:
        assert code == 2 and err.count("\n") == 1 and "--ridge" in err


def test_train_outputs_are_k_times_a_even_with_a_huge_ridge(tiny_dataset):
    """Y - ridge A cancels at ridge 1e17; the outputs must be K A."""
    sample = load_sample(str(tiny_dataset), 9, 5)
    result = run_demo(sample, KernelSpec(ridge=1e17))
    expected = ntk(sample.X_train) @ result.solution.coef
    np.testing.assert_allclose(result.train_scores, expected, rtol=1e-12, atol=0)
    accuracy = np.mean(expected.argmax(1) == sample.y_train)
    assert result.train_report.accuracy == accuracy


def test_cg_breakdown_is_an_error_not_nan():
    X = np.random.default_rng(0).random((30, 4))
    X = np.vstack([X, X])
    labels = np.concatenate([np.zeros(30, int), np.ones(30, int)])
    K = ntk_strips(X, strip_rows=8)
    try:
        solution, fitted = solve_cg(
            K, one_hot(labels, 2), [slice(0, 60)], options=CGOptions(rank=5, max_iter=300)
        )
    except InvalidInputError as error:
        assert "--ridge" in str(error)
    else:
        assert np.isfinite(solution.coef).all() and np.isfinite(fitted).all()
        assert "not reached" in solution.message


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda K, Y: (np.where(np.eye(len(K)) > 0, np.nan, K), Y), "NaN or inf"),
        (lambda K, Y: (K, np.where(Y > 0, np.inf, Y)), "Y holds NaN or inf"),
        (lambda K, Y: (K + np.triu(np.ones_like(K), 1) * 0.1, Y), "not symmetric"),
        (lambda K, Y: (K, Y.astype(str)), "real numbers"),
        (lambda K, Y: (K, Y[None]), "must have shape"),
        (lambda K, Y: (K.tolist(), Y), None),  # a list is fine
        (lambda K, Y: (np.zeros((0, 0)), Y[:0]), "non-empty square"),
    ],
)
def test_solve_checks_its_inputs(change, match):
    X = np.random.default_rng(1).random((12, 5))
    K, Y = change(ntk(X), one_hot(np.arange(12) % 3, 3))
    if match is None:
        assert np.isfinite(solve(K, Y).coef).all()
    else:
        with pytest.raises(InvalidInputError, match=match):
            solve(K, Y)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_check_finds_one_bad_entry_anywhere(dtype):
    """The compiled check reads tiles with their mirror images (64 x 64 here, n = 150:
    two whole tiles and a partial one): one inf, NaN or asymmetric pair in any tile,
    the partial one included, is found; a strided view is read as well."""
    K = ntk(np.random.default_rng(4).random((150, 6))).astype(dtype)
    assert check_kernel_matrix(K) is K
    np.testing.assert_array_equal(check_kernel_matrix(K[::2, ::2]), K[::2, ::2])
    for i, j in ((0, 149), (70, 5), (149, 149), (130, 140)):
        for value, match in ((np.inf, "NaN or inf"), (np.nan, "NaN or inf")):
            bad = K.copy()
            bad[i, j] = value
            with pytest.raises(InvalidInputError, match=match):
                check_kernel_matrix(bad)
        if i != j:
            skewed = K.copy()
            skewed[i, j] += 1e-6
            with pytest.raises(InvalidInputError, match="not symmetric"):
                check_kernel_matrix(skewed)


def test_solve_minus_identity_names_the_real_cause():
    with pytest.raises(InvalidInputError, match="clearly negative eigenvalues"):
        solve(-np.eye(3), np.ones(3))


def test_dynamics_checks_its_inputs_and_takes_none_in_a_list():
    X = np.random.default_rng(2).random((10, 4))
    K, K_test, Y = ntk(X), ntk(X[:3], X), one_hot(np.arange(10) % 2, 2)
    together = gradient_descent_mean(K, K_test, Y, t=[1, 100, None])
    np.testing.assert_allclose(together[2], K_test @ np.linalg.solve(K, Y), atol=1e-8)
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        gradient_descent_mean(K, np.full_like(K_test, np.nan), Y)
    for bad in ([], "abc", 1j):
        with pytest.raises(InvalidParameterError, match="training time t"):
            gradient_descent_mean(K, K_test, Y, t=bad)


def test_the_kernel_sees_directions_at_any_scale():
    X = np.random.default_rng(3).random((20, 30))
    reference = ntk(X)
    eps = np.finfo(np.float64).eps
    for factor in (1e200, 1e-170, 1e-300, 1e300):
        np.testing.assert_allclose(ntk(X * factor), reference, rtol=0, atol=16 * eps)


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"w_std": 10.0, "depth": 400}, "overflowed"),
        ({"w_std": 1e200}, "overflowed"),
        ({"depth": 1100}, "underflowed"),
        ({"depth": 1060}, "underflowed"),
    ],
)
def test_deep_kernels_out_of_range_are_errors(settings, match):
    X = np.random.default_rng(4).random((6, 5))
    with np.errstate(all="raise"):  # and no floating-point warning on the way
        with pytest.raises(InvalidParameterError, match=match):
            fc_kernels(X, **settings)


def test_a_depth_that_underflows_is_one_line(tiny_dataset, tmp_path, capsys):
    code, _, err = run(capsys, tiny_dataset, "--out", str(tmp_path), "--depth", "1100")
    assert code == 2 and err.count("\n") == 1 and "underflowed" in err and "w_std" in err


@pytest.mark.parametrize(
    "array, match",
    [
        ([[1.0, 2.0], [3.0]], "rectangular"),
        (np.ones((3, 2)) * (1 + 1j), "real numbers"),
        (np.array([["a", "b"]]), "real numbers"),
    ],
)
def test_kernel_inputs_of_the_wrong_kind(array, match):
    with pytest.raises(InvalidInputError, match=match):
        ntk(array)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--solver", "cg32", "--time", "5"], "the cg32 solver serves kernels at convergence"),
        (["compare-network", "--learning-rate", "1e308"], "above the stability limit"),
        (["verify", "--widths", "16"], "at least two different widths"),
        (["dynamics", "--points", "1"], "2 <= points <= 10000"),
        (["dynamics", "--points", "100000000"], "2 <= points <= 10000"),
        (["dynamics", "--t-min", "10", "--t-max", "1"], "must be below --t-max"),
        (["spectrum", "--bound-per-class", "1"], "the bound needs several sizes"),
    ],
)
def test_theory_and_solver_options_that_cannot_give_a_true_number(
    tiny_dataset, tmp_path, capsys, argv, message
):
    command = argv[:1] if argv[0] in ("compare-network", "verify", "dynamics", "spectrum") else []
    rest = argv[len(command) :]
    sizes = ["--train-per-class", "4", "--test-per-class", "2"]
    if command == ["spectrum"]:
        sizes += ["--bound-classes", "0,1"]
    code = main([*command, "--dataset", str(tiny_dataset), "--out", str(tmp_path), *sizes, *rest])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_closed_pipe_does_not_stop_the_run(tiny_dataset, tmp_path):
    """``ntkdemo ... | head -1``: the reader leaves after one line; the run still ends
    well and writes its files."""
    import subprocess
    import sys

    command = (
        f"{sys.executable} -m ntkdemo --dataset {tiny_dataset} --out {tmp_path} "
        "--train-per-class 4 --test-per-class 2 | head -1; echo ${PIPESTATUS[0]}"
    )
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    first, status = done.stdout.strip().splitlines()
    assert first.startswith("loading ") and status == "0", done.stderr
    assert (tmp_path / "metrics.json").is_file() and done.stderr == ""


def test_huge_label_ids_without_class_names_are_just_ids(tmp_path):
    """Integer labels without a ClassLabel: the classes are the ids found, however large
    (no range 0..max is allocated)."""
    import datasets

    rng = np.random.default_rng(0)
    labels = np.array([0, 2**40] * 4)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    (tmp_path / "data").mkdir()
    for split in ("train", "test"):
        datasets.Dataset.from_dict(
            {"image": list(random_images(rng, labels % 3)), "label": labels.tolist()},
            features=features,
        ).to_parquet(str(tmp_path / "data" / f"{split}-00000-of-00001.parquet"))
    sample = load_sample(str(tmp_path), 2, 1)
    assert sample.classes == (0, 2**40) and sample.class_names == ("0", str(2**40))


def test_an_all_zero_kernel_is_not_solved_at_any_ridge():
    """No ridge turns a kernel without information into a result."""
    for ridge in (0.0, 1.0):
        with pytest.raises(InvalidInputError, match="K is all zero: it holds no information"):
            solve(np.zeros((4, 4)), np.eye(4), ridge=ridge)


@pytest.fixture(scope="module")
def identical_images_dataset(tmp_path_factory):
    """20 copies of one 28 x 28 image, labelled 10 / 10 (train and test); with this seed
    the matrix product of the input layer and the squared norms differ in the last bit."""
    image = np.random.default_rng(3).integers(0, 255, size=(28, 28), dtype=np.uint8)
    images, labels = np.repeat(image[None], 20, axis=0), np.repeat([0, 1], 10)
    return write_image_dataset(
        tmp_path_factory.mktemp("identical"),
        {"train": (images, labels), "test": (images, labels)},
        ["a", "b"],
    )


@pytest.mark.parametrize("time", ["1e300", "1", "inf"])
def test_identical_images_with_split_labels_tie_at_any_time(
    identical_images_dataset, time, tmp_path, capsys
):
    """No function of the input scores more than 0.5 on them; at t = 1e300 the run's own
    kernel was rank one only to 1e-9 (the input products of a matrix product and the
    squared norms differ in the last bits, which the ReLU's angle carried to 1e-9), so
    it learned the rounding and printed 1.0000."""
    code = main(
        ["--dataset", str(identical_images_dataset), "--train-per-class", "all"]
        + ["--test-per-class", "all", "--time", time, "--quiet", "--out", str(tmp_path)]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train_accuracy"] == 0.5 and metrics["test_accuracy"] == 0.5


def test_identical_inputs_have_identical_deep_kernel_rows():
    """The case the review found (681 features: spread 3e-9, condition number 6e9)."""
    from ntkdemo.kernels.ntk import fold_inputs, unit_rows

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(1, rng.integers(10, 800))).astype(np.float64)
    X = fold_inputs(unit_rows(np.repeat(x, 20, axis=0)))
    for depth in (1, 3):
        _, kernel = fc_kernels(X, depth=depth)
        np.testing.assert_allclose(kernel, kernel[0, 0], rtol=4e-16)


@pytest.mark.parametrize("duplicates", [False, True])
def test_training_outputs_from_the_factorised_matrix_are_k_times_a(duplicates):
    """The Cholesky strategy reads K A from the triangle LAPACK left untouched and the
    saved diagonal (no kernel entry computed twice), also after a jitter retry."""
    from ntkdemo.solvers.cholesky import outputs_of_factorised

    rng = np.random.default_rng(5)
    X = rng.random((60, 20))
    if duplicates:
        X[30:] = X[:30]  # singular: Cholesky fails, jitter is added, the attempt undone
    K = ntk(X)
    targets = one_hot(np.arange(60) % 3, 3)
    work = K.copy()
    solution = solve(work, targets, overwrite_k=True)
    assert (solution.jitter > 0) == duplicates
    outputs = outputs_of_factorised(work, np.diagonal(K).copy(), solution.coef)
    expected = K @ solution.coef
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-12 * np.abs(expected).max())

"""The theory toolkit: Monte-Carlo check, network evidence, discrete steps, and its subcommands."""

import dataclasses
import json
import re
import time

import numpy as np
import pytest

from conftest import run_ntkdemo
from ntkdemo.cli import main
from ntkdemo.data import load_sample
from ntkdemo.demo import run_demo
from ntkdemo.dynamics import GradientDescentDynamics
from ntkdemo.kernels import ntk
from ntkdemo.theory.experiments import compare_with_networks, learning_curve, monte_carlo_error


def test_monte_carlo_error_falls_like_inverse_square_root():
    X = np.random.default_rng(0).normal(size=(40, 30))
    result = monte_carlo_error(X, [16, 256, 4096], repeats=4, rng=np.random.default_rng(1))
    means = result.errors.mean(axis=1)
    assert means[0] > means[1] > means[2]
    assert -0.65 < result.slope < -0.35
    assert means[2] < 0.05


def test_discrete_steps_tend_to_the_flow_and_match_iteration():
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(20, 6)), rng.normal(size=(20, 2))
    K = ntk(X)
    dynamics = GradientDescentDynamics(K, Y, learning_rate=0.5)
    outputs = np.zeros_like(Y)  # f_{s+1} = f_s - eta/m K (f_s - Y)
    for _ in range(37):
        outputs = outputs - 0.5 / Y.size * K @ (outputs - Y)
    np.testing.assert_allclose(
        K @ dynamics.discrete_dual_coefficients(37), outputs, rtol=0, atol=1e-12
    )
    fine = GradientDescentDynamics(K, Y, learning_rate=0.5 / 1000)
    np.testing.assert_allclose(
        K @ fine.discrete_dual_coefficients(37_000),
        K @ dynamics.dual_coefficients(37.0),
        rtol=0,
        atol=1e-4,
    )


def test_networks_agree_more_with_the_kernel_as_width_grows(fashion_mnist):
    sample = load_sample(str(fashion_mnist), 10, 20, seed=1)
    result = compare_with_networks(sample, [16, 4096], steps=60, rng=np.random.default_rng(0))
    assert result.output_distance[1] < 0.5 * result.output_distance[0]
    assert result.agreement[1] > result.agreement[0]
    assert result.agreement[1] >= 0.9


def test_learning_curve_uses_nested_samples_and_improves(tiny_dataset):
    sample = load_sample(str(tiny_dataset), 9, 5)
    curve = learning_curve(sample, [1, 3, 9], depths=[1, 2])
    assert list(curve.accuracy) == [
        "NNGP depth 1",
        "NTK depth 1",
        "NNGP depth 2",
        "NTK depth 2",
        "RBF SVC",
    ]
    assert all(values.shape == (3,) for values in curve.accuracy.values())
    whole = run_demo(sample)  # the largest size is the whole sample
    assert curve.accuracy["NTK depth 1"][-1] == whole.test_report.accuracy
    small = dataclasses.replace(sample, X_train=sample.X_train[:3], y_train=sample.y_train[:3])
    assert curve.accuracy["NTK depth 1"][0] == run_demo(small).test_report.accuracy


@pytest.mark.parametrize(
    "command, options, keys",
    [
        ("curve", ["--train-per-class", "20", "--depths", "1,2"], {"accuracy", "sizes_per_class"}),
        (
            "curve",
            ["--train-per-class", "3", "--depths", "1", "--architectures", "fc-2,cnn-flatten-2"],
            {"accuracy"},
        ),
        ("dynamics", ["--train-per-class", "10", "--points", "5"], {"loss", "accuracy", "times"}),
        (
            "spectrum",
            ["--train-per-class", "10", "--bound-per-class", "30"],
            {"train_eigenvalues", "circle_eigenvalues", "bound"},
        ),
        (
            "verify",
            ["--train-per-class", "3", "--widths", "16,256,4096", "--repeats", "2"],
            {"widths", "errors", "slope"},
        ),
        (
            "compare-network",
            ["--train-per-class", "5", "--widths", "16,512", "--steps", "20"],
            {"agreement", "network_accuracy", "kernel_accuracy"},
        ),
    ],
)
def test_subcommands_on_real_data(fashion_mnist, tmp_path, capsys, command, options, keys):
    code = main([command, "--dataset", str(fashion_mnist), "--out", str(tmp_path), *options])
    out, err = capsys.readouterr()
    assert code == 0, err
    payload = json.loads((tmp_path / f"{command}.json").read_text())
    assert keys <= set(payload) and "versions" in payload
    if "--architectures" in options:
        assert {"NTK fc-2", "NNGP cnn-flatten-2"} <= set(payload["accuracy"])
    assert (tmp_path / f"{command}.png").read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {command}.json" in out


def test_curve_values_on_real_data(fashion_mnist, tmp_path, capsys):
    main(
        [
            "curve",
            "--dataset",
            str(fashion_mnist),
            "--out",
            str(tmp_path),
            "--quiet",
            "--train-per-class",
            "100",
            "--sizes",
            "5,100",
            "--depths",
            "1",
        ]
    )
    accuracy = json.loads((tmp_path / "curve.json").read_text())["accuracy"]
    # at 100 per class the depth-1 NTK is the demo itself: 0.808 for seed 0
    assert accuracy["NTK depth 1"][1] == pytest.approx(0.808, abs=1e-12)
    assert accuracy["NTK depth 1"][0] < accuracy["NTK depth 1"][1]
    assert 0.7 < accuracy["RBF SVC"][1] < 0.85


def test_run_with_time_moves_from_zero_to_regression(fashion_mnist, tmp_path, capsys):
    accuracies = {}
    for t in ("1", "1e9"):
        assert (
            main(["--dataset", str(fashion_mnist), "--out", str(tmp_path), "--quiet", "--time", t])
            == 0
        )
        accuracies[t] = json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"]
    assert accuracies["1e9"] == pytest.approx(0.808, abs=1e-12)  # converged: the demo's number
    assert accuracies["1"] < 0.7


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["curve", "--train-per-class", "5", "--test-per-class", "5", "--sizes", "2,9"],
            "asks for 9 images per class",
        ),
        (["curve", "--depths", "0"], "--depths: expected whole numbers >= 1"),
        (["curve", "--architectures", "myrtle6"], "--architectures: unknown architecture"),
        (["curve", "--add-weight", "3"], "--add-flip need --add-features D"),
        (
            ["curve", "--times", "1,inf", "--add-features", "8"],
            "--add-features are for curves by size",
        ),
        (["curve", "--widths", "8", "--architectures", "myrtle5"], "for curves by size"),
        (["dynamics", "--t-min", "10", "--t-max", "1"], r"--t-min \(10\) must be below --t-max"),
        (["dynamics", "--t-max", "-3"], "--t-max: must be a finite number > 0"),
        (["spectrum", "--bound-classes", "1"], "needs exactly two class ids"),
        (["verify", "--widths", "16,x"], "--widths: expected comma-separated whole numbers"),
        (
            ["compare-network", "--learning-rate", "0"],
            "--learning-rate: must be a finite number > 0",
        ),
        (["run", "--time", "-1"], r"--time: must be >= 0 \(or inf\)"),
        (["run", "--time", "nan"], r"--time: must be >= 0 \(or inf\)"),
        (
            [
                "run",
                "--time",
                "5",
                "--ridge",
                "1",
                "--train-per-class",
                "5",
                "--test-per-class",
                "5",
            ],
            "cannot be combined",
        ),
    ],
)
def test_theory_errors_are_one_line(tiny_dataset, tmp_path, capsys, argv, message):
    code = main([*argv, "--dataset", str(tiny_dataset), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("ntkdemo: error:")
    assert re.search(message, err), err


def test_curve_whole_images_option(tiny_dataset, tmp_path, capsys, monkeypatch):
    """``--whole-images`` sets the largest size whose kernels are held whole (larger
    sizes run one kernel at a time, with the same accuracy), and is refused past the
    free memory."""
    argv = ["curve", "--dataset", str(tiny_dataset), "--train-per-class", "4"]
    argv += ["--test-per-class", "2", "--sizes", "2,4", "--depths", "1", "--no-svc"]
    scores = {}
    for whole in ("12", "11"):  # 4 per class: 12 images of the 3 classes
        out = tmp_path / whole
        assert main([*argv, "--out", str(out), "--whole-images", whole]) == 0
        printed = capsys.readouterr().out
        assert ("12 images): NTK depth 1, as a run" in printed) == (whole == "11"), printed
        scores[whole] = json.loads((out / "curve.json").read_text())["accuracy"]
    assert scores["11"] == scores["12"]
    monkeypatch.setattr("ntkdemo.cli.theory.free_bytes", lambda: 32 * 12 * 17)
    code = main([*argv, "--out", str(tmp_path / "refused"), "--whole-images", "12"])
    err = capsys.readouterr().err
    assert code == 2 and "--whole-images 12: the kernels of 12 training images" in err, err
    assert err.rstrip().endswith("use at most 11"), err


def test_curve_command_adds_features(tiny_dataset, tmp_path, capsys):
    """``curve --add-features``: the sums join the table, curve.json and the figure's
    legend, with the added features' measured error printed as approximate."""
    out = tmp_path / "curve"
    argv = ["curve", "--dataset", str(tiny_dataset), "--train-per-class", "4"]
    argv += ["--test-per-class", "2", "--sizes", "2,4", "--depths", "1", "--no-svc"]
    argv += ["--add-features", "16", "--add-architecture", "cnn-gap-1", "--add-weight", "0.5"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summed = "NTK depth 1 + 0.5 x cnn-gap-1 features"
    assert summed in printed and "APPROXIMATE" in printed, printed
    accuracy = json.loads((out / "curve.json").read_text())["accuracy"]
    assert set(accuracy) == {
        "NNGP depth 1",
        "NTK depth 1",
        "NNGP depth 1 + 0.5 x cnn-gap-1 features",
        summed,
    }
    assert all(0 <= value <= 1 for value in accuracy[summed])


def test_learning_curve_past_whole_matrices_runs_every_kernel(tiny_dataset):
    """Sizes above whole_matrix_rows are solved as a run solves them (the plan's strategy),
    for every network and kernel, with the same accuracy as the whole-matrix path; the
    SVC above its limit is NaN there (not computed)."""
    sample = load_sample(str(tiny_dataset), 9, 5)
    networks = {"depths": [1, 2], "architectures": ["cnn-flatten-1"]}
    described: list[str] = []

    def bars(description):
        described.append(description)
        return lambda chunks: chunks

    whole = learning_curve(sample, [3, 9], **networks, bars=bars)
    assert described == ["training pairs", "test pairs"]  # the conv kernels' bars
    lines: list[str] = []
    described.clear()
    split = learning_curve(
        sample,
        [3, 9],
        **networks,
        whole_matrix_rows=9,
        svc_max_rows=9,
        progress=lines.append,
        bars=bars,
    )
    assert "kernel blocks" in described  # the runs past whole_matrix_rows (Cholesky)
    # each convolutional kernel announces its time: 9 x 10 / 2 + 15 x 9 pairs held whole,
    # then per run 27 x 28 / 2 (the Gram once: spectrum and training outputs from it)
    # + 15 x 27 (test)
    held = "cnn-flatten-1 kernels of 9 training images (about "
    assert any(line.startswith(held) and ": 180 image pairs at " in line for line in lines)
    run = "9 per class (27 images): NTK cnn-flatten-1, as a run (about "
    assert any(line.startswith(run) and ": 783 image pairs at " in line for line in lines)
    found = f"{whole.accuracy['NTK depth 2'][1]:.4f}"
    assert f"  NTK depth 2 at {9 * sample.n_classes} images: test accuracy {found}" in lines
    assert set(split.accuracy) == set(whole.accuracy) >= {"NNGP depth 2", "NTK cnn-flatten-1"}
    for model in set(whole.accuracy) - {"RBF SVC"}:
        np.testing.assert_array_equal(split.accuracy[model], whole.accuracy[model])
    assert np.isnan(split.accuracy["RBF SVC"][1])
    assert split.accuracy["RBF SVC"][0] == whole.accuracy["RBF SVC"][0]


def test_learning_curve_adds_random_features_as_a_run_does(tiny_dataset):
    """With ``added`` each exact network is also scored summed with an added network's
    random features: from the kernels held whole (``K + c F F^T``, the features computed
    once) with the accuracy of a run of the sum's spec, and past ``whole_matrix_rows``
    as such a run; the added features' error is reported, labelled approximate."""
    from ntkdemo.spec import KernelSpec

    sample = load_sample(str(tiny_dataset), 9, 5)

    def added(spec):
        return spec.with_added_features(16, "cnn-gap-1", 3.0)

    lines: list[str] = []
    whole = learning_curve(
        sample, [3, 9], depths=[1], added=added, svc_baseline=False, progress=lines.append
    )
    summed = "NTK depth 1 + 3 x cnn-gap-1 features"
    assert set(whole.accuracy) == {
        "NNGP depth 1",
        "NTK depth 1",
        "NNGP depth 1 + 3 x cnn-gap-1 features",
        summed,
    }
    assert sum(": APPROXIMATE, " in line for line in lines) == 2, lines  # NNGP and NTK
    split = learning_curve(
        sample, [3, 9], depths=[1], added=added, svc_baseline=False, whole_matrix_rows=9
    )
    # 27 images: both calibrate the added network on the same images
    assert split.accuracy[summed][1] == whole.accuracy[summed][1]
    spec = added(KernelSpec()).for_images(tuple(sample.image_shape))
    run = run_demo(sample, spec, spectrum_rows=10)
    assert run.test_report.accuracy == whole.accuracy[summed][1]
    # the sum is another kernel: its outputs are not the exact one's
    plain = run_demo(sample, KernelSpec(), spectrum_rows=10)
    assert not np.allclose(run.test_scores, plain.test_scores)


def test_learning_curve_added_network_takes_the_curves_feature_options(tiny_dataset, monkeypatch):
    """The added network runs at the curve's ``feature_width`` and ``feature_dtype``."""
    from ntkdemo.solvers.features import AddedFeatures

    calibrated = AddedFeatures.calibrated.__func__
    seen = []

    def spy(cls, spec, X_train_unit):
        seen.append((spec.added.kernel, spec.added.feature_width, spec.added.feature_dtype))
        return calibrated(cls, spec, X_train_unit)

    monkeypatch.setattr(AddedFeatures, "calibrated", classmethod(spy))
    sample = load_sample(str(tiny_dataset), 3, 2)
    learning_curve(
        sample,
        [3],
        depths=[1, 2],
        feature_width=8,
        feature_dtype="float32",
        added=lambda spec: spec.with_added_features(16, "cnn-gap-1", 3.0),
        svc_baseline=False,
    )
    assert seen == [("nngp", 8, "float32"), ("ntk", 8, "float32")]  # once for both depths


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["curve", "--times", "1,10", "--widths", "300000000"], "--widths: a network of width"),
        (["verify", "--widths", "1000000000000"], "use widths up to"),
        (["compare-network", "--steps", "1000000000"], "hours at 50 GFLOP/s"),
        (["spectrum", "--circle-points", "100000"], "--circle-points 100000: its Gram matrix"),
    ],
)
def test_theory_requests_past_memory_or_time_are_refused_up_front(
    tiny_dataset, tmp_path, arguments, message
):
    """The review: OOM-killed after 64 s, or running on; advice naming --max-memory."""
    start = time.monotonic()
    done = run_ntkdemo(
        *arguments,
        "--dataset",
        str(tiny_dataset),
        "--out",
        str(tmp_path),
        "--train-per-class",
        "5",
        "--test-per-class",
        "1",
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr and "--max-memory" not in done.stderr
    assert time.monotonic() - start < 60


def test_network_cost_model():
    from ntkdemo.errors import InvalidParameterError
    from ntkdemo.theory.cost import check_networks, network_bytes

    assert network_bytes(10, 784, 100) == 8 * 100 * (2 * 784 + 50)
    check_networks([100], 10, 784, available=network_bytes(10, 784, 100))
    with pytest.raises(InvalidParameterError, match="use widths up to 100$"):
        check_networks([101], 10, 784, available=network_bytes(10, 784, 100))


def test_whole_kernels_cost_model():
    """NNGP and NTK of n training and m test images, and as much again: 32 n (n + m)
    bytes; the refusal names the largest n that fits."""
    from ntkdemo.errors import InvalidParameterError
    from ntkdemo.theory.cost import check_whole_kernels

    available = 32 * 1000 * (1000 + 300)
    check_whole_kernels(1000, 300, available=available, option="--whole-images")
    with pytest.raises(InvalidParameterError, match=r"--whole-images 1001: .* use at most 1000$"):
        check_whole_kernels(1001, 300, available=available, option="--whole-images")
    # with 64 added feature columns: their (n + m) rows and the sum's n (n + m) more
    available = 8 * (1000 + 300) * (5 * 1000 + 64)
    check_whole_kernels(1000, 300, available=available, option="-w", added_columns=64)
    with pytest.raises(InvalidParameterError, match=r"-w 1001: .* use at most 1000$"):
        check_whole_kernels(1001, 300, available=available, option="-w", added_columns=64)

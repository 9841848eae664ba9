"""The accuracy benchmarks behind the README numbers: ``accuracy_ridge.py``'s two
computations (leave-one-out outputs from one eigendecomposition, the mirror parts of the
kernels averaged over mirrors by upper strips) and its cache keyed on what makes the
kernels; both scripts' argument checks and help."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ntkdemo.kernels import conv_kernels
from ntkdemo.kernels.mirror import mirrored

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy_ridge.py"
CONV_SCRIPT = SCRIPT.with_name("accuracy_conv.py")
BENCH_CONV_SCRIPT = SCRIPT.with_name("bench_conv.py")


@pytest.fixture(scope="module")
def accuracy_ridge():
    spec = importlib.util.spec_from_file_location("accuracy_ridge", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("ridge", [0.0, 1e-3, 0.5])
def test_leave_one_out_outputs_are_the_models_trained_without_each_point(accuracy_ridge, ridge):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((25, 40))
    K = features @ features.T
    targets = np.eye(3)[np.arange(25) % 3]
    eigenvalues, U = np.linalg.eigh(K)
    held_out = accuracy_ridge.leave_one_out_outputs(eigenvalues, U, U.T @ targets, targets, ridge)
    for i in range(25):
        kept = np.arange(25) != i
        coef = np.linalg.solve(K[np.ix_(kept, kept)] + ridge * np.eye(24), targets[kept])
        np.testing.assert_allclose(held_out[i], K[i, kept] @ coef, rtol=0, atol=1e-9)


def test_mirror_parts_by_upper_strips_equal_the_whole_products(accuracy_ridge, monkeypatch):
    """K(X, FX) from strips of rows against the rows from theirs on, mirrored, equals
    the whole product (to rounding: the fold sees other tiles), and K(T, FX) too."""
    monkeypatch.setattr(accuracy_ridge, "STRIP_ROWS", 3)  # several strips of 8 rows
    rng = np.random.default_rng(1)
    X, X_test = rng.random((8, 36)), rng.random((5, 36))
    network = {"architecture": "cnn-gap-1", "image_shape": (6, 6)}
    parts = accuracy_ridge.mirror_kernels(X, X_test, network, lambda description: None)
    train = conv_kernels(X, mirrored(X, (6, 6)), **network)
    test = conv_kernels(X_test, mirrored(X, (6, 6)), **network)
    for index, name in enumerate(("nngp", "ntk")):
        np.testing.assert_array_equal(parts[f"{name}_train"], parts[f"{name}_train"].T)
        for part, whole in (("train", train), ("test", test)):
            np.testing.assert_allclose(
                parts[f"{name}_{part}"], whole[index], rtol=0, atol=1e-13 * whole[index].max()
            )


def run_script(script: Path, *arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_a_cache_of_another_run_is_refused(fashion_mnist, tmp_path):
    """Kernels cached for cnn-gap-1 were read back for cnn-flatten-2 (its name, their
    table); another --per-class met a raw ValueError. The cache is keyed on what makes
    the kernels: a mismatch is one line and exit 2, a match is read."""
    common = ["--dataset", str(fashion_mnist), "--test", "10", "--cache", "c.npz"]
    first = run_script(
        SCRIPT, "--architecture", "cnn-gap-1", "--per-class", "1", *common, cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    for other, difference in (
        (["--architecture", "cnn-flatten-2", "--per-class", "1"], "architecture cnn-gap-1 (this"),
        (["--architecture", "cnn-gap-1", "--per-class", "2"], "train 10 (this run: 20)"),
    ):
        refused = run_script(SCRIPT, *other, *common, cwd=tmp_path)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and difference in refused.stderr
        assert "holds the kernels of another run" in refused.stderr
    again = run_script(
        SCRIPT, "--architecture", "cnn-gap-1", "--per-class", "1", *common, cwd=tmp_path
    )
    assert again.returncode == 0 and again.stdout.startswith("kernels read from c.npz")
    assert again.stdout.splitlines()[1:] == first.stdout.splitlines()[1:]


@pytest.mark.parametrize(
    ("script", "arguments", "message"),
    [
        (SCRIPT, ["--test", "-5"], "argument --test: must be >= 1, got -5"),
        (SCRIPT, ["--per-class", "0"], "argument --per-class: must be >= 1, got 0"),
        (SCRIPT, ["--architecture", "bogus"], "unknown architecture 'bogus'"),
        (CONV_SCRIPT, ["--variants", "zca+flpi"], "'zca+flpi' is not one of plain, zca"),
        (CONV_SCRIPT, ["--sizes", "10,0"], "argument --sizes: must be >= 1, got 0"),
        (CONV_SCRIPT, ["--test", "0"], "argument --test: must be >= 1, got 0"),
        (CONV_SCRIPT, ["--architectures", "fc-1,nope"], "unknown architecture 'nope'"),
        (CONV_SCRIPT, ["--kernels", "ntk,ntx"], "'ntx' is not one of ntk, nngp"),
        (BENCH_CONV_SCRIPT, ["--nt-python", "x", "--images", "0"], "--images: must be >= 1, got 0"),
    ],
)
def test_benchmark_scripts_refuse_nonsense_in_one_line(script, arguments, message, tmp_path):
    refused = run_script(script, *arguments, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and message in refused.stderr


@pytest.mark.parametrize("script", [SCRIPT, CONV_SCRIPT, BENCH_CONV_SCRIPT])
def test_benchmark_help_is_whole_and_shows_defaults(script, tmp_path):
    shown = run_script(script, "--help", cwd=tmp_path)
    assert shown.returncode == 0
    assert "Usage: ``python benchmarks/" in shown.stdout  # the docstring's last paragraph
    assert "(default: ../shared/fashion_mnist" in shown.stdout

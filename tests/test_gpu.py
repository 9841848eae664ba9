"""``--device cuda``: the same numbers on a GPU (skipped without CuPy and a GPU)."""

import numpy as np
import pytest

from ntkdemo.errors import InvalidParameterError
from ntkdemo.kernels import ntk, unit_rows
from ntkdemo.solvers import one_hot, solve
from ntkdemo.spec import KernelSpec


def _gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, or no driver
        return False


needs_gpu = pytest.mark.skipif(not _gpu_available(), reason="needs CuPy and a CUDA GPU")
without_gpu = pytest.mark.skipif(_gpu_available(), reason="a GPU is present")


@needs_gpu
def test_gpu_matches_cpu():
    from ntkdemo.solvers import CudaSolver

    rng = np.random.default_rng(0)
    X, X_test = rng.random((500, 64)) ** 2, rng.random((130, 64)) ** 2
    Y = one_hot(rng.integers(0, 5, 500), 5)
    fitted = CudaSolver(block_rows=64).fit(unit_rows(X), Y, KernelSpec())
    solution, train_scores = fitted.solution, fitted.train_scores
    test_scores = fitted.predict(unit_rows(X_test))
    reference = solve(ntk(X), Y)
    np.testing.assert_allclose(
        solution.coef, reference.coef, rtol=1e-6, atol=1e-8 * np.abs(reference.coef).max()
    )
    np.testing.assert_allclose(test_scores, ntk(X_test, X) @ reference.coef, rtol=0, atol=1e-8)
    np.testing.assert_allclose(train_scores, Y, atol=1e-8)


@needs_gpu
def test_gpu_duplicates_fall_back_to_jitter():
    from ntkdemo.solvers import CudaSolver

    rng = np.random.default_rng(1)
    X = rng.random((50, 16))
    doubled, Y = np.vstack([X, X]), one_hot(np.tile(rng.integers(0, 3, 50), 2), 3)
    solution = CudaSolver().fit(unit_rows(doubled), Y, KernelSpec()).solution
    assert solution.jitter > 0 and "added jitter" in solution.message


@without_gpu
def test_without_gpu_the_message_says_what_to_do():
    from ntkdemo.solvers.cuda import require_cupy

    with pytest.raises(InvalidParameterError, match="--device cuda"):
        require_cupy()


@without_gpu
def test_command_line_without_gpu_is_one_line(tiny_dataset, tmp_path, capsys):
    from ntkdemo.cli import main

    code = main(
        [
            "--dataset",
            str(tiny_dataset),
            "--out",
            str(tmp_path),
            "--device",
            "cuda",
            "--train-per-class",
            "3",
            "--test-per-class",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--device cuda needs CuPy" in err
    assert 'pip install "ntkdemo[gpu]"' in err


@needs_gpu
@pytest.mark.parametrize("architecture", ["myrtle5", "cnn-flatten-2"])
def test_gpu_conv_kernels_match_the_cpu_fold(architecture):
    """The GPU's tiles (CuPy) against the compiled CPU fold, and the cuda strategy's
    predictions against Cholesky on the CPU, on the same rows."""
    rng = np.random.default_rng(2)
    X, X_test = rng.random((24, 28 * 28)), rng.random((7, 28 * 28))
    X[:, :28] = 0.0  # a black border: zero variance there
    Y = one_hot(rng.integers(0, 3, 24), 3)
    spec = KernelSpec(architecture=architecture, w_std=2**0.5, image_shape=(28, 28))
    assert_cuda_is_cholesky(spec, X, Y, X_test, tolerance=1e-8)


def assert_cuda_is_cholesky(spec: KernelSpec, X, Y, X_test, tolerance: float) -> None:
    """The cuda strategy's coefficients and test outputs are the CPU Cholesky
    strategy's within ``tolerance`` of their largest; it interpolates the targets."""
    from ntkdemo.solvers import CholeskySolver, CudaSolver

    fitted = CudaSolver(block_rows=2).fit(unit_rows(X), Y, spec)
    reference = CholeskySolver().fit(unit_rows(X), Y, spec)
    coef, want_coef = fitted.solution.coef, reference.solution.coef
    assert np.abs(coef - want_coef).max() <= tolerance * np.abs(want_coef).max()
    got, want = fitted.predict(unit_rows(X_test)), reference.predict(unit_rows(X_test))
    assert np.abs(got - want).max() <= tolerance * np.abs(want).max()
    np.testing.assert_allclose(fitted.train_scores, Y, atol=1e-8)


def test_the_cuda_strategy_serves_every_kernel_at_convergence():
    from ntkdemo.solvers import CudaSolver

    assert CudaSolver().serves(KernelSpec(architecture="myrtle5", image_shape=(28, 28)))
    assert CudaSolver().serves(KernelSpec(kernel="nngp", depth=3, b_std=0.1))
    assert not CudaSolver().serves(KernelSpec(architecture="myrtle5", time=3.0))
    assert not CudaSolver().serves(KernelSpec(flip=True, image_shape=(28, 28)))


@pytest.fixture
def numpy_as_cupy(monkeypatch):
    """NumPy and SciPy standing in for CuPy and cupyx: the cuda strategy's own steps
    (inputs, tiles, diagonal, jitter, solves, prediction blocks) run on the CPU."""
    import contextlib
    import sys
    import types

    import scipy.linalg

    fake = types.ModuleType("cupy")
    for name in dir(np):
        if not name.startswith("__") and name != "fuse":
            setattr(fake, name, getattr(np, name))
    fake.asnumpy = np.asarray
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, memGetInfo=lambda: (10**9, 10**9))
    device = types.SimpleNamespace(synchronize=lambda: None)
    fake.cuda = types.SimpleNamespace(runtime=runtime, Device=lambda: device)
    fakex = types.ModuleType("cupyx")
    fakex.errstate = lambda **_: contextlib.nullcontext()
    fakex.scipy = types.SimpleNamespace(linalg=scipy.linalg)
    for name, module in {
        "cupy": fake,
        "cupyx": fakex,
        "cupyx.scipy": fakex.scipy,
        "cupyx.scipy.linalg": scipy.linalg,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.parametrize(
    "spec",
    [
        KernelSpec(kernel="nngp", architecture="cnn-gap-2", image_shape=(6, 6, 2)),
        KernelSpec(depth=3, w_std=1.3, b_std=0.2),
    ],
    ids=["cnn-gap-2", "fc-3"],
)
def test_the_cuda_strategy_steps_for_every_kernel(numpy_as_cupy, spec):
    """With NumPy standing in for CuPy, the cuda strategy on a conv and a deep kernel
    gives the CPU Cholesky strategy's coefficients and predictions (the GPU itself is
    checked by the test above where one is present)."""
    rng = np.random.default_rng(6)
    X, X_test = rng.random((9, 6 * 6 * 2)), rng.random((5, 6 * 6 * 2))
    assert_cuda_is_cholesky(spec, X, one_hot(rng.integers(0, 3, 9), 3), X_test, tolerance=1e-9)


def test_the_command_line_runs_a_conv_kernel_on_the_cuda_strategy(
    numpy_as_cupy, tiny_dataset, tmp_path, capsys
):
    """``--device cuda --architecture``: the plan takes the cuda strategy, the estimate
    line names the GPU's per-pair cost, and the accuracy is the CPU run's."""
    import json

    from ntkdemo.cli import main

    arguments = ["--dataset", str(tiny_dataset), "--train-per-class", "5", "--test-per-class", "3"]
    arguments += ["--architecture", "cnn-gap-2"]
    assert main([*arguments, "--device", "cuda", "--out", str(tmp_path / "gpu")]) == 0
    printed = capsys.readouterr().out
    assert "image pairs on the GPU at" in printed and "Cholesky on the GPU" in printed
    assert main([*arguments, "--out", str(tmp_path / "cpu"), "--quiet"]) == 0
    gpu, cpu = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("gpu", "cpu"))
    assert gpu["test_accuracy"] == cpu["test_accuracy"]


def test_flips_on_the_cuda_strategy_add_the_mirrors_and_score_as_the_cpu_average(
    numpy_as_cupy, tiny_dataset, tmp_path, capsys
):
    """``--device cuda --flip`` adds the mirrored images (the GPU's kernels do not
    average) and reaches the accuracy of the CPU's kernel averaged over mirrors."""
    import json

    from ntkdemo.cli import main

    arguments = ["--dataset", str(tiny_dataset), "--train-per-class", "6", "--test-per-class", "4"]
    arguments += ["--flip", "--depth", "2"]
    assert main([*arguments, "--device", "cuda", "--out", str(tmp_path / "gpu")]) == 0
    assert "mirrored training images added (the GPU's" in capsys.readouterr().out
    assert main([*arguments, "--out", str(tmp_path / "cpu")]) == 0
    assert "the kernel averaged over each training image" in capsys.readouterr().out
    gpu, cpu = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("gpu", "cpu"))
    assert (gpu["flips"], cpu["flips"]) == ("mirrors added", "kernel averaged")
    assert (gpu["sizes"]["train"], cpu["sizes"]["train"]) == (36, 18)
    assert gpu["confusion"] == cpu["confusion"]


def test_the_plan_refuses_a_finite_time_on_the_gpu():
    from ntkdemo.plan import plan_memory

    with pytest.raises(InvalidParameterError, match=r"cuda solver serves kernels at convergence"):
        plan_memory(
            100, 10, 64, 3, spec=KernelSpec(depth=2, time=3.0), device="cuda", available=10**9
        )

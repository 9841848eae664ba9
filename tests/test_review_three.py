"""Defects found by the third hostile review (issue 26), each reproduced and now passing."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from ntkdemo.outputs import OutputSet
from ntkdemo.supervisor import blas_environment

AMD_AVX512 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512dq\n"
AMD_AVX2 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2\n"
INTEL_AVX512 = "vendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f\n"


def command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "ntkdemo", *arguments]


def tiny(dataset: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", str(dataset), "--train-per-class", "4", "--test-per-class", "2"] + [
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize(
    "cpuinfo, environ, expected",
    [
        (AMD_AVX512, {}, {"OPENBLAS_CORETYPE": "Haswell"}),
        (AMD_AVX512, {"OPENBLAS_CORETYPE": "Zen"}, {}),  # the user's choice stands
        (AMD_AVX2, {}, {}),
        (INTEL_AVX512, {}, {}),
        ("", {}, {}),  # no /proc/cpuinfo
    ],
)
def test_openblas_coretype_is_set_only_on_amd_with_avx512(cpuinfo, environ, expected):
    assert blas_environment(environ, cpuinfo) == expected


def test_each_subcommand_keeps_the_others_results(tmp_path):
    run = OutputSet(tmp_path, "run")
    run.write_json("metrics.json", {"run": 1})
    run.write_bytes("log.txt", b"x")
    run.commit()
    dynamics = OutputSet(tmp_path, "dynamics")
    dynamics.write_json("dynamics.json", {"t": 1})
    dynamics.commit()
    again = OutputSet(tmp_path, "dynamics")
    again.write_json("dynamics.json", {"t": 2})
    again.commit()
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"run": 1}
    assert (tmp_path / "log.txt").read_bytes() == b"x"
    assert json.loads((tmp_path / "dynamics.json").read_text()) == {"t": 2}
    assert len(list((tmp_path / ".ntkdemo" / "sets").iterdir())) == 2  # one per scope
    rerun = OutputSet(tmp_path, "run")  # a new run set drops only the run's old files
    rerun.write_json("metrics.json", {"run": 2})
    rerun.commit()
    assert not (tmp_path / "log.txt").exists()
    assert json.loads((tmp_path / "dynamics.json").read_text()) == {"t": 2}


def test_run_then_a_theory_command_keeps_both(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    for arguments in (
        tiny(tiny_dataset, out, "--quiet"),
        ["dynamics", *tiny(tiny_dataset, out, "--quiet", "--points", "3")],
    ):
        done = subprocess.run(command(*arguments), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert (out / "metrics.json").is_file() and (out / "dynamics.json").is_file()


def test_result_folders_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        result = OutputSet(tmp_path)
        result.write_json("metrics.json", {})
        result.commit()
    finally:
        os.umask(previous)
    folder = (tmp_path / ".ntkdemo" / "current-run").resolve()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / "metrics.json").stat().st_mode) == 0o644


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_with_its_parent_and_writes_nothing(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    parent = subprocess.Popen(
        command(*tiny(tiny_dataset, out, "--quiet")),
        env={**os.environ, "NTKDEMO_TEST_FAULT": "compute:SIGSTOP"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        children: list[psutil.Process] = []
        while time.monotonic() < deadline:
            children = psutil.Process(parent.pid).children()
            if children and children[0].status() == psutil.STATUS_STOPPED:
                break
            time.sleep(0.1)
        assert children, "the child never reached the compute stage"
        status_folders = list(Path(tempfile.gettempdir()).glob(f"ntkdemo-status-{parent.pid}-*"))
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, "the child outlived its parent"
    finally:
        parent.kill()
    assert not (out / "metrics.json").exists()
    assert status_folders  # left by the killed parent, removed by the next run
    done = subprocess.run(command("--version"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert not any(folder.exists() for folder in status_folders)


def test_closed_stderr_and_full_stdout(tiny_dataset, tmp_path):
    closed = subprocess.run(
        command(*tiny(tiny_dataset, tmp_path / "a", "--quiet")),
        stderr=subprocess.DEVNULL,
        timeout=300,
        preexec_fn=lambda: os.close(2),
    )
    assert closed.returncode == 0
    assert (tmp_path / "a" / "metrics.json").is_file()
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            command(*tiny(tiny_dataset, tmp_path / "b")),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert done.returncode == 2
    assert done.stderr == (
        "ntkdemo: error: cannot write to standard output (No space left on device); "
        "redirect it elsewhere or use --quiet\n"
    )


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


@pytest.mark.parametrize("labels", [[0, -1], [0, 2], [0.5, 1]])
def test_one_hot_refuses_labels_outside_the_classes(labels):
    from ntkdemo.errors import InvalidInputError
    from ntkdemo.solvers import one_hot

    with pytest.raises(InvalidInputError, match="labels must be whole numbers in 0..1"):
        one_hot(np.array(labels), 2)


PEAK_OF_A_RUN = """
import resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "ntkdemo", *sys.argv[1:]], capture_output=True)
sys.stderr.write(done.stderr.decode())
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, done.returncode)
"""


@pytest.mark.parametrize("cap, solver", [("450MB", "auto"), ("600MB", "cg32")])
def test_max_memory_bounds_the_whole_run(fashion_mnist, tmp_path, cap, solver):
    """The plan counts what the run loads after it (scikit-learn, matplotlib, figures):
    the review measured peaks 95-157 MB above --max-memory."""
    from ntkdemo.units import parse_bytes

    per_class = "100" if solver == "auto" else "300"
    done = subprocess.run(
        [sys.executable, "-c", PEAK_OF_A_RUN, "--dataset", str(fashion_mnist)]
        + ["--train-per-class", per_class, "--max-memory", cap, "--solver", solver]
        + ["--out", str(tmp_path), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    peak, code = (int(v) for v in done.stdout.split())
    assert code == 0, done.stderr
    assert peak <= parse_bytes(cap)


def test_max_memory_with_a_strategy_outside_this_process_is_refused():
    from ntkdemo.errors import InvalidParameterError
    from ntkdemo.plan import plan_memory

    with pytest.raises(InvalidParameterError, match="the cuda strategy is bounded by its free"):
        plan_memory(100, 10, 784, 10, device="cuda", max_memory=1000)


def _dataset(
    folder: Path, train_shape=(8, 8), test_shape=(8, 8), test_names=None, test_images=None
):
    from conftest import random_images, write_image_dataset

    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1, 2], 6)
    names = ["a", "b", "c"]
    write_image_dataset(folder, {"train": (random_images(rng, labels, train_shape), labels)}, names)
    images = random_images(rng, labels, test_shape) if test_images is None else test_images
    write_image_dataset(folder, {"test": (images, labels)}, test_names or names)
    return folder


def _run(*arguments: str):
    return subprocess.run(command(*arguments), capture_output=True, text=True, timeout=300)


def _one_line_refusal(folder: Path, out: Path) -> str:
    """stderr of a run on ``folder`` that must end in one line with exit code 2."""
    done = _run(
        "--dataset",
        str(folder),
        "--train-per-class",
        "3",
        "--test-per-class",
        "3",
        "--out",
        str(out),
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def test_splits_that_name_their_classes_differently_are_refused(tmp_path):
    folder = _dataset(tmp_path / "d", test_names=["b", "a", "c"])
    stderr = _one_line_refusal(folder, tmp_path / "o")
    assert "name their classes differently (['a', 'b', 'c'] against ['b', 'a', 'c'])" in stderr


def test_splits_of_different_image_shapes_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(1, 255, size=(18, 8, 8, 3), dtype=np.uint8)
    folder = _dataset(tmp_path / "d", test_images=rgb[:, :, :, 0].repeat(3, axis=2))  # 8 x 24
    del rgb
    stderr = _one_line_refusal(folder, tmp_path / "o")
    assert "have shape (8, 8) but 'test' images (8, 24)" in stderr


def test_class_names_with_control_characters_are_printed_escaped(tmp_path):
    from conftest import random_images, write_image_dataset

    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1], 6)
    images = random_images(rng, labels)
    folder = write_image_dataset(
        tmp_path / "d",
        {"train": (images, labels), "test": (images, labels)},
        ["line\nbreak", "\x1b[31mred"],
    )
    done = _run(
        "--dataset",
        str(folder),
        "--train-per-class",
        "3",
        "--test-per-class",
        "2",
        "--out",
        str(tmp_path / "o"),
    )
    assert done.returncode == 0, done.stderr
    assert "line\\nbreak" in done.stdout and "\\x1b[31mred" in done.stdout
    assert "\x1b" not in done.stdout and "line\nbreak" not in done.stdout


@pytest.mark.parametrize("value, expected", [("-1,3", "unknown class id(s) [-1, 3]")])
def test_negative_values_reach_their_check(tiny_dataset, tmp_path, value, expected):
    done = _run("--dataset", str(tiny_dataset), "--classes", value, "--out", str(tmp_path))
    assert done.returncode == 2 and expected in done.stderr


@pytest.mark.parametrize("text", ["1 0GB", "GB", "5XB"])
def test_memory_sizes_with_stray_characters_are_refused(text):
    from ntkdemo.errors import InvalidParameterError
    from ntkdemo.units import parse_bytes

    with pytest.raises(InvalidParameterError, match="cannot read the memory size"):
        parse_bytes(text)


def test_a_folder_named_like_a_result_is_one_clear_error_and_the_old_set_stays(tmp_path):
    from ntkdemo.errors import InvalidParameterError

    first = OutputSet(tmp_path)
    first.write_json("metrics.json", {"run": 1})
    first.commit()
    (tmp_path / "confusion.png").mkdir()
    second = OutputSet(tmp_path)
    second.write_json("metrics.json", {"run": 2})
    second.write_bytes("confusion.png", b"png")
    with pytest.raises(InvalidParameterError, match="already holds a folder named 'confusion.png'"):
        second.commit()
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"run": 1}
    OutputSet(tmp_path).abandon()  # the lock was released


def test_library_calls_take_paths_and_read_only_arrays(fashion_mnist):
    from ntkdemo.data import load_sample
    from ntkdemo.solvers import solve

    sample = load_sample(fashion_mnist, 2, 1)
    assert sample.X_train.shape == (20, 784)
    K = np.eye(3) + 1
    K.setflags(write=False)
    np.testing.assert_allclose(solve(K, np.ones(3), overwrite_k=True).coef, np.full(3, 0.25))


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
    done = _run(
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


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: {"y_train": s.y_train[:-1]}, "one label per image of sample.X_train"),
        (lambda s: {"X_test": s.X_test[:, :5]}, "sample.X_test has 5 features"),
        (lambda s: {"y_test": s.y_test + 20}, r"sample.y_test must hold whole numbers in 0..2"),
        (lambda s: {"X_train": s.X_train.astype(str)}, "sample.X_train must hold real numbers"),
    ],
)
def test_run_demo_names_the_field_of_a_bad_sample(tiny_dataset, change, message):
    import dataclasses

    from ntkdemo.data import load_sample
    from ntkdemo.demo import run_demo
    from ntkdemo.errors import InvalidInputError

    sample = load_sample(tiny_dataset, 4, 2)
    with pytest.raises(InvalidInputError, match=message):
        run_demo(dataclasses.replace(sample, **change(sample)))
    with pytest.raises(InvalidInputError, match="run_demo needs a Sample"):
        run_demo("not a sample")


def test_a_swallowed_ctrl_c_is_sent_again_and_repeats_are_ignored():
    """A KeyboardInterrupt raised inside a callback (distributed's gc hook, seen under load)
    is 'ignored' by Python; the command's hook sends SIGINT again instead of printing it.
    A second SIGINT just after one was raised is ignored (nothing interrupts the line)."""
    from types import SimpleNamespace

    from ntkdemo.cli.main import Interrupts

    received, passed_on = [], []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        interrupts = Interrupts(passed_on.append)
        with pytest.raises(KeyboardInterrupt):
            interrupts.on_signal(signal.SIGINT, None)
        interrupts.on_signal(signal.SIGINT, None)  # a repeat: ignored
        interrupts.unraisable(SimpleNamespace(exc_type=KeyboardInterrupt))  # that one was lost
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:  # sent again, from a timer
            time.sleep(0.01)
        with pytest.raises(KeyboardInterrupt):
            interrupts.on_signal(signal.SIGINT, None)  # so the re-sent one is raised
        other = SimpleNamespace(exc_type=ValueError)
        interrupts.unraisable(other)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert received == [signal.SIGINT] and passed_on == [other]


def _array_dataset(folder: Path, train_images: list, labels: list[int]) -> Path:
    """Train and test splits whose images are float arrays (or missing), as some hub
    datasets store them."""
    import datasets

    features = datasets.Features(
        {
            "image": datasets.Array2D(shape=(4, 4), dtype="float32"),
            "label": datasets.ClassLabel(names=["a", "b"]),
        }
    )
    (folder / "data").mkdir(parents=True)
    for split in ("train", "test"):
        table = datasets.Dataset.from_dict(
            {"image": train_images, "label": labels}, features=features
        )
        table.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def test_a_nan_pixel_is_named_by_its_dataset_row(tmp_path):
    from ntkdemo.data import load_sample
    from ntkdemo.errors import DatasetError

    rng = np.random.default_rng(3)
    images = [rng.random((4, 4)).astype(np.float32) + 0.1 for _ in range(8)]
    images[5][2, 2] = np.nan
    folder = _array_dataset(tmp_path / "d", [image.tolist() for image in images], [0, 1] * 4)
    with pytest.raises(DatasetError, match=r"row\(s\) 5 of the 'train' split .* hold NaN"):
        load_sample(folder, 4, 1, seed=0, image_column="image")


def test_a_missing_image_is_named_by_its_dataset_row(tmp_path):
    from conftest import random_images, write_image_dataset
    from ntkdemo.data import load_sample
    from ntkdemo.errors import DatasetError

    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1], 4)
    images = list(random_images(rng, labels))
    images[3] = None
    folder = write_image_dataset(
        tmp_path / "d",
        {"train": (images, labels), "test": (random_images(rng, labels), labels)},
        ["a", "b"],
    )
    with pytest.raises(DatasetError, match=r"row\(s\) 3 of the 'train' split .* have no image"):
        load_sample(folder, 4, 1, seed=0)

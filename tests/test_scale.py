"""Scale: the memory plan, the iterative (cg) path, whole splits."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from ntkdemo.cli import main
from ntkdemo.errors import InvalidParameterError, MemoryPlanError
from ntkdemo.plan import estimate_bytes, largest_training_set, plan_memory
from ntkdemo.solvers import CudaSolver
from ntkdemo.units import format_duration, parse_bytes


@pytest.mark.parametrize(
    "text, value", [("16GB", 16e9), ("500M", 5e8), ("2e9", 2e9), ("1.5 kb", 1500)]
)
def test_parse_bytes(text, value):
    assert parse_bytes(text) == int(value)


@pytest.mark.parametrize("text", ["lots", "-1GB", "0", "3XB", "0.5", "1e400", "-5GB", "nan"])
def test_parse_bytes_rejects(text):
    with pytest.raises(InvalidParameterError):
        parse_bytes(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(42.4, "42 s"), (119.4, "119 s"), (120, "2 min"), (2100, "35 min"), (7199, "120 min")]
    + [(7200, "2.0 h"), (13300, "3.7 h")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_plan_prefers_cholesky_then_the_triangle_then_float32_then_refuses():
    gb = 10**9
    assert plan_memory(60_000, 10_000, 784, 10, available=100 * gb).solver == "cholesky"
    plan = plan_memory(60_000, 10_000, 784, 10, available=24 * gb, process_bytes=3 * 10**8)
    assert plan.solver == "cg"
    assert plan.kernel_bytes == pytest.approx(8 * 60_000 * 60_001 / 2, rel=5e-3)
    assert plan.total_bytes < 18 * gb  # the peak-memory target
    laptop = plan_memory(
        60_000, 10_000, 784, 10, available=24 * gb, max_memory=10 * gb, process_bytes=3 * 10**8
    )
    assert laptop.solver == "cg32" and laptop.total_bytes <= 10 * gb
    assert laptop.kernel_bytes == pytest.approx(plan.kernel_bytes / 2)
    with pytest.raises(MemoryPlanError, match=r"the largest training set that fits is \d+"):
        plan_memory(60_000, 10_000, 784, 10, available=24 * gb, max_memory=6 * gb)


def test_refusal_names_the_stored_kernel_and_what_the_process_holds():
    gb = 10**9
    with pytest.raises(MemoryPlanError) as refused:
        plan_memory(
            60_000, 10_000, 784, 10, available=24 * gb, max_memory=6 * gb, process_bytes=3 * 10**8
        )
    message = str(refused.value)
    # cg32, the last strategy tried: 4 bytes for n(n+1)/2 entries and half of each
    # 256-row diagonal tile, 4 * (60,000 * 60,001 / 2 + 60,000 * 128) = 7.2308e9
    assert "(upper triangle of the kernel in float32: 7.23 GB)" in message
    assert "on top of the 300.00 MB this process holds" in message
    largest = int(message.split("fits is ")[1].split()[0])
    assert 30_000 < largest < 60_000
    assert estimate_bytes("cg32", largest, 10_000, 784, 10) <= 6 * gb - 3 * 10**8
    with pytest.raises(MemoryPlanError, match="(float64 kernel: 28.80 GB)") as refused:
        plan_memory(60_000, 10_000, 784, 10, solver="cholesky", available=20 * gb, process_bytes=0)
    assert "this process holds" not in str(refused.value)
    with pytest.raises(MemoryPlanError, match="this process alone holds that much; free memory"):
        plan_memory(1000, 100, 784, 10, max_memory=10**8, process_bytes=2 * 10**8)
    with pytest.raises(MemoryPlanError) as refused:  # its budget is given: no GPU is asked
        plan_memory(10**5, 1000, 784, 10, strategies=(CudaSolver(),), available=80 * gb)
    assert (
        "(float64 kernel: 80.00 GB), more than the 72.00 GB allowed (free GPU memory); the "
        "largest training set that fits is"
    ) in str(refused.value)


def test_largest_training_set_is_tight():
    budget = 10**9
    n = largest_training_set(budget, 100, 784, 10, "cg")
    assert (
        estimate_bytes("cg", n, 100, 784, 10) <= budget < estimate_bytes("cg", n + 1, 100, 784, 10)
    )


def test_too_big_fails_fast_naming_the_limit(fashion_mnist, tmp_path, capsys):
    start = time.perf_counter()
    code = main(
        [
            "--dataset",
            str(fashion_mnist),
            "--train-per-class",
            "all",
            "--max-memory",
            "100MB",
            "--out",
            str(tmp_path),
        ]
    )
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "8226 training images need about" in err and "100.00 MB allowed" in err
    assert "this process alone holds that much" in err  # the interpreter and libraries
    assert elapsed < 3  # no image decoded: dataset opening and the label column only


def test_cg_path_agrees_with_cholesky(tiny_dataset, tmp_path, capsys):
    outputs = {}
    for solver in ("cholesky", "cg"):
        out = tmp_path / solver
        assert (
            main(
                [
                    "--dataset",
                    str(tiny_dataset),
                    "--train-per-class",
                    "9",
                    "--test-per-class",
                    "5",
                    "--solver",
                    solver,
                    "--out",
                    str(out),
                    "--quiet",
                ]
            )
            == 0
        )
        outputs[solver] = json.loads((out / "metrics.json").read_text())
    assert outputs["cg"]["memory_plan"]["solver"] == "cg"
    assert outputs["cg"]["confusion"] == outputs["cholesky"]["confusion"]
    assert "relative residual" in outputs["cg"]["solver"]["message"]


def test_whole_local_split(fashion_mnist, tmp_path, capsys):
    code = main(
        [
            "--dataset",
            str(fashion_mnist),
            "--train-per-class",
            "all",
            "--test-per-class",
            "all",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["sizes"] == {"train": 8226, "test": 3000, "features": 784}
    assert 0.86 <= metrics["test_accuracy"] <= 0.89  # 0.8767 measured
    assert metrics["train_accuracy"] == 1.0
    assert np.array(metrics["confusion"]).sum() == 3000


def test_cg32_serves_deep_kernels_and_refuses_a_training_time(tiny_dataset, tmp_path, capsys):
    """--solver cg32 solves a deep kernel (refined against it in float64) to Cholesky's
    predictions; a finite --time is refused in one line (the solvers converge)."""
    import json

    arguments = ["--dataset", str(tiny_dataset), "--train-per-class", "9", "--test-per-class"]
    arguments += ["5", "--depth", "2", "--quiet"]
    outcomes = {}
    for solver in ("cg32", "cholesky"):
        code = main([*arguments, "--solver", solver, "--out", str(tmp_path / solver)])
        assert code == 0, capsys.readouterr().err
        outcomes[solver] = json.loads((tmp_path / solver / "metrics.json").read_text())
    assert "float32" in outcomes["cg32"]["solver"]["method"]
    assert outcomes["cg32"]["test_accuracy"] == outcomes["cholesky"]["test_accuracy"]
    code = main([*arguments, "--solver", "cg32", "--time", "5", "--out", str(tmp_path)])
    assert code == 2 and "serves kernels at convergence only; drop --time" in (
        capsys.readouterr().err
    )


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


@pytest.mark.parametrize("text", ["1 0GB", "GB", "5XB"])
def test_memory_sizes_with_stray_characters_are_refused(text):
    from ntkdemo.errors import InvalidParameterError
    from ntkdemo.units import parse_bytes

    with pytest.raises(InvalidParameterError, match="cannot read the memory size"):
        parse_bytes(text)


def test_durations_as_people_write_them():
    from ntkdemo.units import parse_duration

    assert [parse_duration(t) for t in ("90", "90s", "30min", "1.5 h", "1d")] == [
        90.0,
        90.0,
        1800.0,
        5400.0,
        86400.0,
    ]
    for text, message in [("2 parsecs", "cannot read the duration"), ("0", "finite time > 0")]:
        with pytest.raises(InvalidParameterError, match=message):
            parse_duration(text)

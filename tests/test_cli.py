"""The command line end to end: real data, files written, one-line errors."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_ntkdemo
from ntkdemo.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_demo_on_real_data(fashion_mnist, tmp_path, capsys):
    code, out, err = run_cli(capsys, "--dataset", str(fashion_mnist), "--out", str(tmp_path))
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # 100 per class, 50 per class test, seed 0: 0.808 here; correct NTK code gives 0.80-0.85
    assert 0.78 <= metrics["test_accuracy"] <= 0.87
    assert metrics["train_accuracy"] == 1.0
    assert metrics["sizes"] == {"train": 1000, "test": 500, "features": 784}
    assert np.array(metrics["confusion"]).sum() == 500
    assert len(metrics["train_indices"]) == 1000 and len(set(metrics["train_indices"])) == 1000
    assert metrics["solver"]["smallest_eigenvalue"] > 0
    assert set(metrics["timings_seconds"]) == {"load", "spectrum", "kernel", "solve", "predict"}
    assert metrics["kernel_pairs"] == 1000 * 1001 // 2 + 500 * 1000  # no pair twice
    for name in ("predictions.png", "confusion.png", "spectrum.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "test accuracy:" in out and "Ankle boot" in out and "chance 0.1000" in out


def test_two_class_task(fashion_mnist, tmp_path, capsys):
    code, out, _ = run_cli(
        capsys,
        "--dataset",
        str(fashion_mnist),
        "--out",
        str(tmp_path),
        "--classes",
        "1,3",
        "--quiet",
    )
    assert code == 0 and out == ""
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["class_names"] == ["Trouser", "Dress"]
    assert 0.93 <= metrics["test_accuracy"] <= 0.99


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--train-per-class", "900"], r"class 0 \('T - shirt / top'\) has only 766 rows"),
        (["--classes", "1,12"], r"unknown class id\(s\) \[12\]"),
        (["--train-per-class", "0"], "--train-per-class: must be >= 1, got 0"),
        (["--test-per-class", "-5"], "--test-per-class: must be >= 1, got -5"),
        (["--ridge", "-1"], "--ridge: must be a finite number >= 0"),
        (["--ridge", "abc"], "--ridge: expected a number, got 'abc'"),
    ],
)
def test_user_errors_on_real_data(fashion_mnist, tmp_path, capsys, argv, message):
    code, _, err = run_cli(capsys, "--dataset", str(fashion_mnist), "--out", str(tmp_path), *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("ntkdemo: error:")
    assert __import__("re").search(message, err), err


def test_missing_dataset_folder(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--dataset", str(tmp_path / "none"), "--out", str(tmp_path))
    assert code == 2 and "does not exist; pass --dataset PATH" in err


def test_dataset_without_label_column(tmp_path, capsys):
    import datasets

    (tmp_path / "bad" / "data").mkdir(parents=True)
    for split in ("train", "test"):
        datasets.Dataset.from_dict(
            {"image": [np.zeros((2, 2), np.uint8)], "kind": ["x"]},
            features=datasets.Features(
                {"image": datasets.Image(), "kind": datasets.Value("string")}
            ),
        ).to_parquet(str(tmp_path / "bad" / "data" / f"{split}-00000-of-00001.parquet"))
    code, _, err = run_cli(capsys, "--dataset", str(tmp_path / "bad"), "--out", str(tmp_path))
    assert code == 2 and "has no label column (columns: image, kind)" in err


def test_no_network_fails_fast_with_advice(tmp_path):
    """The hub id path, pointed at a closed local port: one line, exit 2, and no wait on
    the network: its time beyond that of importing what it imports (measured in the same
    test, so that a busy machine slows both) is well under 10 s."""
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "NTKDEMO_DATASET": ""}
    env.pop("HF_HUB_OFFLINE", None)

    def seconds(*arguments: str) -> tuple[float, subprocess.CompletedProcess]:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, *arguments], capture_output=True, text=True, env=env, timeout=120
        )
        return time.perf_counter() - start, done

    imports, _ = seconds("-c", "import datasets, ntkdemo.cli.main, ntkdemo.data")
    elapsed, done = seconds("-m", "ntkdemo", "--out", str(tmp_path))
    assert done.returncode == 2
    assert elapsed - imports < 10
    assert "cannot reach the Hugging Face hub" in done.stderr
    assert "--dataset PATH" in done.stderr and "HF_HUB_OFFLINE=1" in done.stderr
    assert "Traceback" not in done.stderr


def test_tiny_dataset_run(tiny_dataset, tmp_path, capsys):
    code, out, err = run_cli(
        capsys,
        "--dataset",
        str(tiny_dataset),
        "--out",
        str(tmp_path),
        "--train-per-class",
        "9",
        "--test-per-class",
        "5",
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["sizes"]["train"] == 27 and metrics["train_accuracy"] == 1.0


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("ntkdemo ")


def test_unexpected_failure_is_one_line(tiny_dataset, tmp_path, capsys, monkeypatch):
    """A bug must not print a traceback either; NTKDEMO_DEBUG=1 shows it."""
    import ntkdemo.demo

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(ntkdemo.demo, "run_demo", broken)
    argv = [
        "--dataset",
        str(tiny_dataset),
        "--out",
        str(tmp_path),
        "--train-per-class",
        "3",
        "--test-per-class",
        "2",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: simulated bug" in err
    monkeypatch.setenv("NTKDEMO_DEBUG", "1")
    with pytest.raises(RuntimeError, match="simulated bug"):
        main(argv)


def test_a_source_tree_without_package_metadata_still_imports(tmp_path):
    """``PYTHONPATH=src`` without ``pip install`` (as on a machine without the
    installer): the version is ``0+unknown`` instead of a PackageNotFoundError."""

    import ntkdemo

    source = Path(ntkdemo.__file__).parent
    (tmp_path / "ntkdemo").symlink_to(source)
    code = (
        "import importlib.metadata as m\n"
        "def missing(name):\n"
        "    raise m.PackageNotFoundError(name)\n"
        "m.version = missing\n"
        "import ntkdemo; print(ntkdemo.__version__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0+unknown"


def test_a_conv_run_beyond_max_time_is_refused_naming_what_fits(tiny_dataset, tmp_path, capsys):
    code, out, err = run_cli(
        capsys,
        "--dataset",
        str(tiny_dataset),
        "--architecture",
        "cnn-gap-1",
        "--train-per-class",
        "9",
        "--test-per-class",
        "5",
        "--max-time",
        "1e-6s",
        "--out",
        str(tmp_path),
    )
    assert code == 2 and err.count("\n") == 1
    assert "more than --max-time 0 s" in err
    assert "not even one training image per class fits" in err
    assert "kernel: about" in out and not (tmp_path / "metrics.json").exists()


def test_the_largest_sample_within_a_time_is_named():
    from ntkdemo.cli.run import KernelEstimate
    from ntkdemo.errors import InvalidParameterError

    # 10 classes, 100 per class; a pair costs 1 ms; pairs n (n + 1) / 2
    estimate = KernelEstimate(lambda n: n * (n + 1) / 2 * 1e-3, "pairs", 1000, 100)
    assert estimate.largest_per_class(500.5) == 100  # exactly the whole: 1000 * 1001 / 2 ms
    assert estimate.largest_per_class(500.4) == 99
    assert estimate.largest_per_class(0.0549) == 0 and estimate.largest_per_class(0.055) == 1
    with pytest.raises(InvalidParameterError, match=r"--train-per-class 44 takes about 97 s"):
        estimate.bound(100.0)
    assert estimate.bound(600.0) == ""
    assert "--max-time 1h refuses up front" in KernelEstimate(
        lambda n: n * 10.0, "pairs", 1000, 100
    ).bound(None)


def test_a_depth_beside_an_fc_architecture_of_another_depth_is_refused(
    tiny_dataset, tmp_path, capsys
):
    for depth in ("3", "1"):
        code, _, err = run_cli(
            capsys, "--dataset", str(tiny_dataset), "--architecture", "fc-2", "--depth", depth
        )
        assert code == 2 and err.count("\n") == 1
        assert f"has depth 2 but --depth {depth} was given too" in err or (
            f"has depth 2 but depth={depth} was asked too" in err
        )
    code, _, err = run_cli(
        capsys,
        "--dataset",
        str(tiny_dataset),
        "--architecture",
        "fc-2",
        "--depth",
        "2",
        "--train-per-class",
        "4",
        "--test-per-class",
        "2",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["network"] == "NTK of fc-2 (w_std 1, b_std 0)"


def test_zca_zero_is_refused_before_loading(capsys):
    code, _, err = run_cli(capsys, "--dataset", "./no/such/folder", "--zca", "0")
    assert code == 2
    assert err.strip() == (
        "ntkdemo: error: ntkdemo run: argument --zca: must be a finite number > 0, got '0' "
        "(see --help)"
    )


@pytest.mark.parametrize("value, expected", [("-1,3", "unknown class id(s) [-1, 3]")])
def test_negative_values_reach_their_check(tiny_dataset, tmp_path, value, expected):
    done = run_ntkdemo("--dataset", str(tiny_dataset), "--classes", value, "--out", str(tmp_path))
    assert done.returncode == 2 and expected in done.stderr


def test_progress_off_a_terminal_is_a_line_a_minute_with_the_time_left(capsys):
    from ntkdemo.cli.options import progress_lines

    ticks = iter([0.0, 10.0, 70.0, 80.0, 150.0, 200.0])  # the clock at start and per block
    items = list(progress_lines(range(5), "kernel strips", "block", clock=lambda: next(ticks)))
    assert items == [0, 1, 2, 3, 4]
    lines = capsys.readouterr().err.splitlines()
    # a line at 70 s (2 done: 35 s each, 3 left) and at 150 s (4 done), none at 10, 80, 200
    assert lines == [
        "kernel strips: 2 of 5 blocks (40%), 70 s so far, about 105 s left",
        "kernel strips: 4 of 5 blocks (80%), 2 min so far, about 38 s left",
    ]
    unsized = progress_lines(
        iter("ab"), "iterations", "iteration", clock=iter([0, 61, 62]).__next__
    )
    assert "".join(unsized) == "ab"
    assert capsys.readouterr().err == "iterations: 1 iteration, 61 s so far\n"


def test_progress_of_a_triangle_counts_its_work_not_its_blocks(capsys):
    """The row blocks of an upper triangle shrink: the time left is read from the entries
    done (the first of four 10-row blocks of a 40 x 40 triangle is 400 of 1,000 entries)."""
    from ntkdemo.cli.options import _bar, progress_lines
    from ntkdemo.solvers.strips import SymmetricStrips
    from ntkdemo.work import upper_row_blocks

    blocks = upper_row_blocks(40, 10)
    assert list(blocks) == [0, 10, 20, 30] and blocks.weights.tolist() == [400, 300, 200, 100]
    strips = SymmetricStrips(1000, 64)
    assert strips.strip_numbers.weights.sum() == strips.data.size
    ticks = iter([0.0, 80.0, 90.0, 95.0, 100.0])
    assert list(progress_lines(blocks, "kernel strips", "block", clock=lambda: next(ticks))) == [
        0,
        10,
        20,
        30,
    ]
    assert capsys.readouterr().err == (
        "kernel strips: 1 of 4 blocks (40% of the work), 80 s so far, about 2 min left\n"
    )
    assert list(_bar(blocks, "kernel strips", "block")) == [0, 10, 20, 30]  # a terminal's
    assert "/1.00k" in capsys.readouterr().err  # the bar counts the 1,000 entries

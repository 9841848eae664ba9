"""The catalogue of bad inputs: each one a one-line message with the fix, exit code 2
from the command line and a specific exception type from the library.

README.md lists the same cases (section "Errors").
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from conftest import random_images, write_image_dataset
from ntkdemo import errors
from ntkdemo.cli import main
from ntkdemo.cli.run import KernelEstimate
from ntkdemo.data import load_sample
from ntkdemo.dynamics import gradient_descent_mean
from ntkdemo.kernels import conv_kernels, fc_kernels, ntk, unit_rows
from ntkdemo.outputs import prepare_out_dir
from ntkdemo.plan import plan_memory
from ntkdemo.preprocess import zca_whitened
from ntkdemo.solvers import solve
from ntkdemo.spec import KernelSpec
from ntkdemo.units import parse_bytes


def write_with_label_metadata(folder: Path, labels: list[int], names: list[str]) -> Path:
    """A Parquet dataset whose ClassLabel has ``names`` but whose labels may exceed them."""
    import datasets
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    good = np.zeros(len(labels), dtype=int)
    write_image_dataset(
        folder, {s: (random_images(rng, good), good) for s in ("train", "test")}, names
    )
    for split in ("train", "test"):
        path = folder / "data" / f"{split}-00000-of-00001.parquet"
        table = pq.read_table(path)
        table = table.set_column(
            table.schema.get_field_index("label"),
            "label",
            datasets.Dataset.from_dict({"l": labels}).data.column("l"),
        )
        pq.write_table(table.replace_schema_metadata(pq.read_schema(path).metadata), path)
    return folder


@pytest.fixture(scope="module")
def bad_datasets(tmp_path_factory) -> dict[str, Path]:
    """Small datasets, each broken in one way, in the hub's Parquet layout."""
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 6)
    made = {}
    mixed = [
        random_images(rng, labels[:1], (8, 8))[0]
        if i % 2
        else random_images(rng, labels[:1], (6, 6))[0]
        for i in range(12)
    ]
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}
    )
    (root / "mixed" / "data").mkdir(parents=True)
    for split in ("train", "test"):
        datasets.Dataset.from_dict(
            {"image": mixed, "label": labels.tolist()}, features=features
        ).to_parquet(str(root / "mixed" / "data" / f"{split}-00000-of-00001.parquet"))
    made["mixed"] = root / "mixed"
    blank = random_images(rng, labels)
    blank[:] = 0
    made["blank"] = write_image_dataset(
        root / "blank",
        {"train": (blank, labels), "test": (random_images(rng, labels), labels)},
        ["a", "b"],
    )
    made["sizes"] = write_image_dataset(
        root / "sizes",
        {
            "train": (random_images(rng, labels, (8, 8)), labels),
            "test": (random_images(rng, labels, (10, 10)), labels),
        },
        ["a", "b"],
    )
    made["range"] = write_with_label_metadata(
        root / "range", [0, 1, 0, 1, 5, 0, 1, 0, 1, 0, 1, 1], ["a", "b"]
    )
    made["empty"] = write_image_dataset(
        root / "empty",
        {
            "train": (random_images(rng, labels), labels),
            "test": (np.zeros((0, 8, 8), np.uint8), np.zeros(0, int)),
        },
        ["a", "b"],
    )
    made["notads"] = root / "notads"
    made["notads"].mkdir()
    (made["notads"] / "notes.txt").write_text("not a dataset\n")
    made["good"] = write_image_dataset(
        root / "good",
        {
            "train": (random_images(rng, labels), labels),
            "test": (random_images(rng, labels), labels),
        },
        ["a", "b"],
    )
    made["noimage"] = root / "noimage"
    (made["noimage"] / "data").mkdir(parents=True)
    for split in ("train", "test"):
        datasets.Dataset.from_dict({"pixels": [[1, 2]] * 4, "label": [0, 1, 0, 1]}).to_parquet(
            str(made["noimage"] / "data" / f"{split}-00000-of-00001.parquet")
        )
    made["undecodable"] = root / "undecodable"
    made["truncated"] = root / "truncated"
    png = io.BytesIO()
    PIL.Image.fromarray(random_images(rng, labels[:1])[0]).save(png, format="PNG")
    for name, broken in (("undecodable", b"not an image"), ("truncated", png.getvalue()[:40])):
        (made[name] / "data").mkdir(parents=True)
        images = [{"bytes": png.getvalue(), "path": None} for _ in labels]
        images[7] = {"bytes": broken, "path": None}
        for split in ("train", "test"):
            datasets.Dataset.from_dict(
                {"image": images, "label": labels.tolist()}, features=features
            ).to_parquet(str(made[name] / "data" / f"{split}-00000-of-00001.parquet"))
    made["absent"] = write_image_dataset(
        root / "absent",
        {
            "train": (random_images(rng, labels), labels),
            "test": (random_images(rng, labels[:6]), labels[:6]),  # class 1 missing
        },
        ["a", "b"],
    )
    return made


@dataclass
class Case:
    """One bad input: command-line arguments, the library call, the exception, the message."""

    name: str
    argv: list[str]
    library: Callable[[dict[str, Path]], object]
    error: type
    message: str


def good(data):
    return str(data["good"])


CASES = [
    Case(
        "size zero",
        ["--train-per-class", "0"],
        lambda d: load_sample(good(d), 0),
        errors.InvalidParameterError,
        "must be >= 1, got 0",
    ),
    Case(
        "size above a class",
        ["--train-per-class", "7"],
        lambda d: load_sample(good(d), 7),
        errors.InvalidParameterError,
        r"class 0 \('a'\) has only 6 rows in the train split.*use at most 6",
    ),
    Case(
        "unknown class",
        ["--classes", "0,4"],
        lambda d: load_sample(good(d), 2, 2, classes=[0, 4]),
        errors.InvalidParameterError,
        r"unknown class id\(s\) \[4\]; this dataset has classes 0..1",
    ),
    Case(
        "repeated class",
        ["--classes", "1,1"],
        lambda d: load_sample(good(d), 2, 2, classes=[1, 1]),
        errors.InvalidParameterError,
        "repeat an id; list each class once",
    ),
    Case(
        "single class",
        ["--classes", "1"],
        lambda d: load_sample(good(d), 2, 2, classes=[1]),
        errors.InvalidParameterError,
        "single class; classification needs at least two",
    ),
    Case(
        "non-numeric option",
        ["--seed", "abc"],
        lambda d: load_sample(good(d), "abc"),
        errors.InvalidParameterError,
        "(invalid int value: 'abc'|must be a whole number)",
    ),
    Case(
        "negative ridge",
        ["--ridge", "-1"],
        lambda d: solve(np.eye(2), np.ones(2), ridge=-1),
        errors.InvalidParameterError,
        "ridge must be a finite number >= 0|--ridge: must be a finite number >= 0",
    ),
    Case(
        "depth below 1",
        ["--depth", "0"],
        lambda d: fc_kernels(np.ones((2, 2)), depth=0),
        errors.InvalidParameterError,
        "depth must be >= 1, got 0|--depth: must be >= 1",
    ),
    Case(
        "negative time",
        ["--time", "-2"],
        lambda d: gradient_descent_mean(np.eye(2), np.eye(2), np.ones(2), -2.0),
        errors.InvalidParameterError,
        r"t must be >= 0|--time: must be >= 0",
    ),
    Case(
        "NaN time",
        ["--time", "nan"],
        lambda d: gradient_descent_mean(np.eye(2), np.eye(2), np.ones(2), float("nan")),
        errors.InvalidParameterError,
        r"t must be >= 0|--time: must be >= 0",
    ),
    Case(
        "dataset path missing",
        ["--dataset", "./no/such/folder"],
        lambda d: load_sample("./no/such/folder"),
        errors.DatasetError,
        "does not exist; pass --dataset PATH",
    ),
    Case(
        "not a dataset",
        ["--dataset", "{notads}"],
        lambda d: load_sample(str(d["notads"])),
        errors.DatasetError,
        r"has no image column \(columns: text\); name it with --image-column",
    ),
    Case(
        "no image column",
        ["--dataset", "{noimage}"],
        lambda d: load_sample(str(d["noimage"])),
        errors.DatasetError,
        r"has no image column \(columns: pixels, label\); name it with --image-column",
    ),
    Case(
        "labels out of range",
        ["--dataset", "{range}"],
        lambda d: load_sample(str(d["range"]), 2, 2),
        errors.DatasetError,
        r"label\(s\) \[5\] in row\(s\) 4 of the 'train' split .* out of range",
    ),
    Case(
        "images of mixed shapes",
        ["--dataset", "{mixed}"],
        lambda d: load_sample(str(d["mixed"]), 2, 2),
        errors.DatasetError,
        "have different shapes .*resize them first",
    ),
    Case(
        "train and test sizes differ",
        ["--dataset", "{sizes}"],
        lambda d: load_sample(str(d["sizes"]), 2, 2),
        errors.DatasetError,
        r"'train' images have shape \(8, 8\) but 'test' images \(10, 10\)",
    ),
    Case(
        "blank image (zero norm)",
        ["--dataset", "{blank}"],
        lambda d: load_sample(str(d["blank"]), 2, 2),
        errors.DatasetError,
        "are blank \\(all zero\\).*no direction",
    ),
    Case(
        "empty split",
        ["--dataset", "{empty}"],
        lambda d: load_sample(str(d["empty"]), 2, 2),
        errors.DatasetError,
        "the 'test' split of .* is empty; every split needs at least one image",
    ),
    Case(
        "unwritable --out",
        ["--out", "/proc/ntkdemo-out"],
        lambda d: prepare_out_dir("/proc/ntkdemo-out"),
        errors.InvalidParameterError,
        "cannot write to --out '/proc/ntkdemo-out'.*choose a writable folder",
    ),
    Case(
        "more than fits in memory",
        ["--max-memory", "1KB"],
        lambda d: plan_memory(12, 12, 64, 2, max_memory=1000),
        errors.MemoryPlanError,
        r"12 training images need about .* more than the 1000 B allowed|1.00 KB allowed",
    ),
    Case(
        "unknown split",
        ["--test-split", "validation"],
        lambda d: load_sample(good(d), 2, 2, test_split="validation"),
        errors.DatasetError,
        r"has no 'validation' split \(splits: train, test\)",
    ),
    Case(
        "negative seed",
        ["--seed", "-1"],
        lambda d: load_sample(good(d), 2, 2, seed=-1),
        errors.InvalidParameterError,
        r"(seed|--seed): must be a whole number >= 0|seed must be a whole number >= 0",
    ),
    Case(
        "no classes",
        ["--classes", ""],
        lambda d: load_sample(good(d), 2, 2, classes=[]),
        errors.InvalidParameterError,
        "classes is empty; name at least two label ids",
    ),
    Case(
        "class ids not whole numbers",
        ["--classes", "1.7,0"],
        lambda d: load_sample(good(d), 2, 2, classes=[1.7, 0]),
        errors.InvalidParameterError,
        "class ids such as 1,3|whole-number label ids",
    ),
    Case(
        "class absent from a split",
        ["--dataset", "{absent}", "--test-per-class", "1"],
        lambda d: load_sample(str(d["absent"]), 2, 1),
        errors.InvalidParameterError,
        r"class 1 \('b'\) has no rows in the test split; leave it out with --classes",
    ),
    Case(
        "bytes that are not an image",
        ["--dataset", "{undecodable}", "--train-per-class", "6"],
        lambda d: load_sample(str(d["undecodable"]), 6, 1),
        errors.DatasetError,
        r"cannot decode the image in row 7 of the 'train' split of .* \(column 'image'\)",
    ),
    Case(
        "truncated PNG",
        ["--dataset", "{truncated}", "--train-per-class", "6"],
        lambda d: load_sample(str(d["truncated"]), 6, 1),
        errors.DatasetError,
        r"cannot decode the image in row 7 of the 'train' split",
    ),
    Case(
        "deep kernel underflows",
        ["--depth", "1100"],
        lambda d: fc_kernels(np.eye(3), depth=1100),
        errors.InvalidParameterError,
        "underflowed to zero at depth=1100.*use w_std=sqrt\\(2\\)",
    ),
    Case(
        "conv kernel underflows",
        ["--architecture", "cnn-flatten-300", "--w-std", "0.01", "--ridge", "1"],
        lambda d: conv_kernels(np.ones((2, 4, 4)), architecture="cnn-flatten-300", w_std=0.01),
        errors.InvalidParameterError,
        r"the kernel underflowed to zero at cnn-flatten-300 \(w_std=0\.01, b_std=0\).* it holds "
        r"no information about the images; use w_std=sqrt\(2\)",
    ),
    Case(
        "kernel collapsed to a constant",
        ["--depth", "100", "--b-std", "1"],
        lambda d: KernelSpec(depth=100, b_std=1.0).matrix(unit_rows(np.eye(3) + 0.5)),
        errors.InvalidParameterError,
        r"the kernel is constant to rounding at NTK of fc-100 \(w_std 1, b_std 1\): .* "
        r"holds no information about them",
    ),
    Case(
        "weights overflow",
        ["--architecture", "cnn-gap-1", "--w-std", "1e200"],
        lambda d: conv_kernels(np.ones((2, 4, 4)), architecture="cnn-gap-1", w_std=1e200),
        errors.InvalidParameterError,
        r"w_std=1e\+200 of a Conv layer overflows float64 when squared",
    ),
    Case(
        "depth beside fc-L",
        ["--architecture", "fc-2", "--depth", "3"],
        lambda d: KernelSpec(architecture="fc-2", depth=3),
        errors.InvalidParameterError,
        r"architecture 'fc-2' has depth 2 but depth=3 was asked too; give one of them",
    ),
    Case(
        "ZCA without regularisation",
        ["--zca", "0"],
        lambda d: zca_whitened(load_sample(good(d), 2, 2), 0),
        errors.InvalidParameterError,
        r"zca.* > 0",
    ),
    Case(
        "run longer than --max-time",
        ["--architecture", "cnn-gap-1", "--max-time", "1e-6s"],
        lambda d: KernelEstimate(lambda n: n * 1.0, "pairs", 20, 10).bound(1e-6),
        errors.InvalidParameterError,
        r"the kernel will take about .* here, more than --max-time .*; (not even one|"
        r"--train-per-class \d+ takes about)",
    ),
    Case(
        "zero weights",
        ["--w-std", "0"],
        lambda d: fc_kernels(np.eye(3), w_std=0),
        errors.InvalidParameterError,
        "w_std must be > 0: with zero weights",
    ),
    Case(
        "memory size out of range",
        ["--max-memory", "1e400"],
        lambda d: parse_bytes("1e400"),
        errors.InvalidParameterError,
        "memory size must be a finite number of bytes >= 1",
    ),
    Case(
        "empty --out",
        ["--out", ""],
        lambda d: prepare_out_dir(""),
        errors.InvalidParameterError,
        "--out is empty; name a folder",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_command_line_says_one_line_and_exits_2(case, bad_datasets, tmp_path, capsys):
    argv = [a.format(**{k: str(v) for k, v in bad_datasets.items()}) for a in case.argv]
    defaults = [
        "--dataset",
        str(bad_datasets["good"]),
        "--out",
        str(tmp_path / "out"),
        "--train-per-class",
        "2",
        "--test-per-class",
        "2",
    ]
    code = main([*defaults, *argv])  # later options win
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("ntkdemo: error: ") and err.count("\n") == 1, err
    assert re.search(case.message, err), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.name != "non-numeric option"]
    + [
        Case(
            "NaN in an array",
            [],
            lambda d: ntk(np.array([[1.0, np.nan], [1.0, 2.0]])),
            errors.InvalidInputError,
            r"NaN or inf in row\(s\) 0",
        ),
        Case(
            "inf in an array",
            [],
            lambda d: fc_kernels(np.array([[1.0, 2.0], [np.inf, 2.0]])),
            errors.InvalidInputError,
            r"NaN or inf in row\(s\) 1",
        ),
        Case(
            "zero-norm row",
            [],
            lambda d: ntk(np.array([[1.0, 2.0], [0.0, 0.0]])),
            errors.InvalidInputError,
            r"zero-norm row\(s\) 1",
        ),
        Case(
            "feature counts differ",
            [],
            lambda d: ntk(np.ones((2, 3)), np.ones((2, 4))),
            errors.InvalidInputError,
            "has 4 features but 3",
        ),
        Case(
            "non-numeric size",
            [],
            lambda d: load_sample(good(d), "abc"),
            errors.InvalidParameterError,
            "train_per_class must be a whole number",
        ),
    ],
    ids=lambda c: c.name,
)
def test_library_raises_a_specific_error(case, bad_datasets):
    with pytest.raises(case.error, match=case.message):
        case.library(bad_datasets)


def test_every_theory_command_rejects_bad_sizes(bad_datasets, tmp_path, capsys):
    for command in ("curve", "dynamics", "spectrum", "verify", "compare-network"):
        code = main(
            [
                command,
                "--dataset",
                str(bad_datasets["good"]),
                "--out",
                str(tmp_path),
                "--train-per-class",
                "0",
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "must be >= 1, got 0" in err, err


def test_readme_lists_the_catalogue():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [case.name for case in CASES if f"| {case.name} |" not in readme]
    assert not missing, f"README.md error table lacks {missing}"
    assert len(CASES) >= 15
    json.dumps([c.name for c in CASES])
    rows = {}  # name -> (error type, message) from "| name | how | type | message |"
    for line in readme.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) >= 6:
            rows[cells[1]] = (cells[3], "|".join(cells[4:-1]).strip())
    stale = [
        case.name
        for case in CASES
        if rows[case.name][0] != case.error.__name__
        or not re.search(case.message, rows[case.name][1])
    ]
    assert not stale, f"README.md shows other errors or messages for {stale}"

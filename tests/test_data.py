"""Balanced, seeded sampling from the label column; errors a user will make."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_ntkdemo
from ntkdemo.data import balanced_indices, load_sample
from ntkdemo.errors import DatasetError, InvalidParameterError


def test_balanced_and_reindexed(tiny_dataset):
    sample = load_sample(str(tiny_dataset), train_per_class=4, test_per_class=2, seed=1)
    assert np.bincount(sample.y_train).tolist() == [4, 4, 4]
    assert np.bincount(sample.y_test).tolist() == [2, 2, 2]
    assert sample.class_names == ("alpha", "beta", "gamma")
    assert sample.X_train.shape == (12, 64) and sample.X_train.dtype == np.float64
    assert 0 <= sample.X_train.min() and sample.X_train.max() == 1.0


def test_images_are_the_chosen_rows(tiny_dataset):
    import datasets

    sample = load_sample(str(tiny_dataset), train_per_class=3, test_per_class=1, seed=5)
    train = datasets.load_dataset(str(tiny_dataset))["train"]
    for row, image, label in zip(sample.train_indices, sample.X_train, sample.y_train):
        expected = np.asarray(train[int(row)]["image"], dtype=np.float64).reshape(-1) / 255
        np.testing.assert_array_equal(image, expected)
        assert train[int(row)]["label"] == label


def test_seeded_reproducible_and_seed_sensitive(tiny_dataset):
    first = load_sample(str(tiny_dataset), 5, 2, seed=7)
    again = load_sample(str(tiny_dataset), 5, 2, seed=7)
    other = load_sample(str(tiny_dataset), 5, 2, seed=8)
    np.testing.assert_array_equal(first.train_indices, again.train_indices)
    np.testing.assert_array_equal(first.X_train, again.X_train)
    assert not np.array_equal(first.train_indices, other.train_indices)


def test_two_class_task_reindexes_in_given_order(tiny_dataset):
    sample = load_sample(str(tiny_dataset), 3, 2, classes=[2, 0])
    assert sample.class_names == ("gamma", "alpha")
    assert sample.classes == (2, 0)
    assert sorted(set(sample.y_train.tolist())) == [0, 1]
    import datasets

    labels = np.array(datasets.load_dataset(str(tiny_dataset))["train"]["label"])
    np.testing.assert_array_equal(labels[sample.train_indices], np.array([2, 0])[sample.y_train])


def test_samples_of_growing_size_are_nested():
    labels = np.repeat(np.arange(4), 25)
    small = balanced_indices(labels, 3, range(4), np.random.default_rng(0))
    large = balanced_indices(labels, 10, range(4), np.random.default_rng(0))
    np.testing.assert_array_equal(large[:12], small)
    assert np.bincount(labels[large[:20]]).tolist() == [5, 5, 5, 5]


def test_all_takes_every_row(tiny_dataset):
    sample = load_sample(str(tiny_dataset), "all", "all")
    assert np.bincount(sample.y_train).tolist() == [12, 9, 15]
    assert sorted(sample.train_indices.tolist()) == list(range(36))


def test_too_many_per_class_names_class_and_count(tiny_dataset):
    with pytest.raises(
        InvalidParameterError, match=r"class 1 \('beta'\) has only 9 rows in the train split"
    ):
        load_sample(str(tiny_dataset), train_per_class=10)


@pytest.mark.parametrize(
    "classes, message",
    [
        ([0, 7], r"unknown class id\(s\) \[7\]; this dataset has classes 0..2"),
        ([1, 1], "repeat an id"),
        ([1], "single class"),
    ],
)
def test_bad_classes(tiny_dataset, classes, message):
    with pytest.raises(InvalidParameterError, match=message):
        load_sample(str(tiny_dataset), 2, 1, classes=classes)


@pytest.mark.parametrize("size", [0, -3, 2.5, "ten"])
def test_bad_sizes(tiny_dataset, size):
    with pytest.raises(InvalidParameterError, match="train_per_class must be"):
        load_sample(str(tiny_dataset), train_per_class=size)


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist; pass --dataset PATH"):
        load_sample(str(tmp_path / "nothing"))


def test_folder_without_image_column(tmp_path):
    import datasets

    (tmp_path / "data").mkdir()
    for split in ("train", "test"):
        datasets.Dataset.from_dict({"pixels": [[1, 2]], "label": [0]}).to_parquet(
            str(tmp_path / "data" / f"{split}-00000-of-00001.parquet")
        )
    with pytest.raises(DatasetError, match=r"has no image column \(columns: pixels, label\)"):
        load_sample(str(tmp_path))


def test_environment_variable_sets_default(tiny_dataset, monkeypatch):
    monkeypatch.setenv("NTKDEMO_DATASET", str(tiny_dataset))
    assert load_sample(None, 2, 1).dataset == str(tiny_dataset)


def test_other_shapes_columns_and_splits(tmp_path, capsys):
    """An RGB, CIFAR-like dataset with other column and split names runs unchanged."""

    from conftest import random_images, write_image_dataset
    from ntkdemo.cli import main

    rng = np.random.default_rng(8)
    labels = np.repeat([0, 1, 2, 3], 6)
    folder = write_image_dataset(
        tmp_path / "rgb",
        {
            "fit": (random_images(rng, labels, (6, 5, 3)), labels),
            "holdout": (random_images(rng, labels, (6, 5, 3)), labels),
        },
        ["plane", "car", "bird", "cat"],
        image_column="img",
        label_column="fine_label",
    )
    sample = load_sample(str(folder), 4, 2, train_split="fit", test_split="holdout")
    assert sample.X_train.shape == (16, 90) and sample.image_shape == (6, 5, 3)
    assert sample.class_names == ("plane", "car", "bird", "cat")
    out = tmp_path / "out"
    code = main(
        [
            "--dataset",
            str(folder),
            "--train-split",
            "fit",
            "--test-split",
            "holdout",
            "--train-per-class",
            "5",
            "--test-per-class",
            "3",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sizes"] == {"train": 20, "test": 12, "features": 90}
    assert metrics["train_accuracy"] == 1.0


def test_dataset_without_a_test_split_says_so(tmp_path):
    from conftest import random_images, write_image_dataset

    rng = np.random.default_rng(9)
    labels = np.repeat([0, 1], 4)
    folder = write_image_dataset(
        tmp_path / "only", {"train": (random_images(rng, labels), labels)}, ["a", "b"]
    )
    with pytest.raises(DatasetError, match=r"has no 'test' split \(splits: train\); choose one"):
        load_sample(str(folder), 2, 2)


def test_every_row_drawn_is_interleaved_as_far_as_the_smallest_class_goes():
    """per_class=None (``all``): the leading rows are balanced too, so learning curves and
    the scale benchmark can take the first k images per class of a whole split."""
    from ntkdemo.data import balanced_indices

    labels = np.array([0] * 5 + [1] * 3 + [2] * 4)
    rows = balanced_indices(labels, None, [0, 1, 2], np.random.default_rng(0))
    assert sorted(rows.tolist()) == list(range(12))
    np.testing.assert_array_equal(labels[rows[:9]], np.tile([0, 1, 2], 3))
    np.testing.assert_array_equal(np.sort(labels[rows[9:]]), [0, 0, 2])


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


def _one_line_refusal(folder: Path, out: Path) -> str:
    """stderr of a run on ``folder`` that must end in one line with exit code 2."""
    done = run_ntkdemo(
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
    done = run_ntkdemo(
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


def test_library_calls_take_paths_and_read_only_arrays(fashion_mnist):
    from ntkdemo.data import load_sample
    from ntkdemo.solvers import solve

    sample = load_sample(fashion_mnist, 2, 1)
    assert sample.X_train.shape == (20, 784)
    K = np.eye(3) + 1
    K.setflags(write=False)
    np.testing.assert_allclose(solve(K, np.ones(3), overwrite_k=True).coef, np.full(3, 0.25))


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

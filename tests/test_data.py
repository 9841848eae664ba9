"""Balanced, seeded sampling from the label column; errors a user will make."""

import numpy as np
import pytest

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
    import json

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

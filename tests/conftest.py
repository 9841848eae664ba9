"""Shared fixtures: tiny datasets in the hub's Parquet layout, and the shared real data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from ntkdemo.data import Sample

# Property tests draw the same examples on every run, so CI cannot turn red by chance;
# HYPOTHESIS_PROFILE=explore searches afresh (and longer) on a developer machine.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=50)
settings.register_profile("explore", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED_FASHION_MNIST = Path(__file__).resolve().parents[2] / "shared" / "fashion_mnist"


def write_image_dataset(
    folder: Path,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    class_names: list[str],
    *,
    image_column: str = "image",
    label_column: str = "label",
) -> Path:
    """Write ``{split: (images uint8 (n, h, w[, c]), labels)}`` as hub-style Parquet."""
    import datasets

    features = datasets.Features(
        {
            image_column: datasets.Image(),
            label_column: datasets.ClassLabel(names=class_names),
        }
    )
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in splits.items():
        table = datasets.Dataset.from_dict(
            {image_column: list(images), label_column: labels.tolist()}, features=features
        )
        table.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def random_sample(
    rng: np.random.Generator, n_train: int, n_test: int, shape: tuple[int, ...], n_classes: int
) -> Sample:
    """A Sample of uniform random images of ``shape`` (training rows drawn first), with
    labels cycling through ``n_classes`` classes."""
    size = int(np.prod(shape))
    return Sample(
        X_train=rng.random((n_train, size)),
        y_train=np.arange(n_train) % n_classes,
        X_test=rng.random((n_test, size)),
        y_test=np.arange(n_test) % n_classes,
        class_names=tuple("abcdefghij"[:n_classes]),
        classes=tuple(range(n_classes)),
        train_indices=np.arange(n_train),
        test_indices=np.arange(n_test),
        dataset="made here",
        image_shape=shape,
    )


def random_images(rng: np.random.Generator, labels: np.ndarray, shape=(8, 8)) -> np.ndarray:
    """Images whose brightest pixel encodes the label, so a kernel can learn them."""
    images = rng.integers(0, 60, size=(len(labels), *shape), dtype=np.uint8)
    flat = images.reshape(len(labels), -1)
    flat[np.arange(len(labels)), labels * 3] = 255
    return images


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Three classes; train holds 12, 9, 15 images, test 5 of each; 8x8 grayscale."""
    rng = np.random.default_rng(123)
    train_labels = np.repeat([0, 1, 2], [12, 9, 15])
    rng.shuffle(train_labels)
    test_labels = np.repeat([0, 1, 2], 5)
    return write_image_dataset(
        tmp_path_factory.mktemp("tiny"),
        {
            "train": (random_images(rng, train_labels), train_labels),
            "test": (random_images(rng, test_labels), test_labels),
        },
        ["alpha", "beta", "gamma"],
    )


@pytest.fixture(scope="session")
def fashion_mnist() -> Path:
    """The local copy of the hub dataset; tests that need it skip where it is absent."""
    if not (SHARED_FASHION_MNIST / "fashion_mnist").is_dir():
        pytest.skip(f"real data absent: {SHARED_FASHION_MNIST} is not there")
    return SHARED_FASHION_MNIST


def command(*arguments: str) -> list[str]:
    """The command line of ``python -m ntkdemo ARGUMENTS`` in this interpreter."""
    return [sys.executable, "-m", "ntkdemo", *arguments]


def tiny(dataset: Path, out: Path, *extra: str) -> list[str]:
    """Arguments of a small run on ``dataset`` writing to ``out``, then ``extra``."""
    return ["--dataset", str(dataset), "--train-per-class", "4", "--test-per-class", "2"] + [
        "--out",
        str(out),
        *extra,
    ]


def run_ntkdemo(*arguments: str) -> subprocess.CompletedProcess:
    """``python -m ntkdemo ARGUMENTS`` as a user runs it, bounded in time."""
    return subprocess.run(command(*arguments), capture_output=True, text=True, timeout=300)

"""Load a class-balanced sample of an image-classification dataset.

Rows are chosen from the label column alone (an Arrow column read without
decoding any image); only the chosen images are decoded. The default dataset is
the Hugging Face hub's ``zalando-datasets/fashion_mnist``; a local folder in the
same layout (Parquet files with an ``image`` and a ``label`` column) works the same.
"""

from __future__ import annotations

import atexit
import json
import numbers
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError, InvalidParameterError
from .validation import check_positive_int, list_rows

HUB_DATASET = "zalando-datasets/fashion_mnist"
DATASET_ENV = "NTKDEMO_DATASET"


@dataclass(frozen=True)
class Sample:
    """A balanced train/test sample, ready for a kernel.

    Attributes
    ----------
    X_train : ndarray of shape (n_train, n_features)
        Flattened images, float64 in [0, 1].
    y_train : ndarray of shape (n_train,)
        Labels re-indexed to ``0 .. n_classes - 1`` (the order of ``classes``).
    X_test, y_test : ndarray
        The same for the test split.
    class_names : tuple of str
        Name of each re-indexed class.
    classes : tuple of int
        Original label id of each re-indexed class.
    train_indices, test_indices : ndarray of int
        Row of each sample in its split, in sample order.
    dataset : str
        Hub id or folder the sample came from.
    image_shape : tuple of int
        Shape of one decoded image, ``(height, width)`` or ``(height, width, channels)``;
        ``X_train[i].reshape(image_shape)`` is the picture.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    classes: tuple[int, ...]
    train_indices: np.ndarray
    test_indices: np.ndarray
    dataset: str
    image_shape: tuple[int, ...] = ()

    @property
    def n_classes(self) -> int:
        """Number of classes in the sample."""
        return len(self.classes)


@dataclass(frozen=True)
class SampleDraw:
    """The rows of a balanced sample, chosen but not yet decoded (see :func:`draw_sample`).

    Attributes
    ----------
    n_values : int
        Values per image (from the first one, decoded to find out).
    image_shape : tuple of int
        The first image's shape, as :class:`Sample`'s.
    Others as :class:`Sample`; ``splits`` and ``split_names`` are the train and test
    ``datasets`` splits and their names.
    """

    source: str
    splits: tuple
    split_names: tuple[str, str]
    image_column: str
    train_indices: np.ndarray
    test_indices: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    classes: tuple[int, ...]
    n_values: int
    image_shape: tuple[int, ...]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def decode(self) -> Sample:
        """Decode the chosen images (and only them) into a :class:`Sample`.

        Raises
        ------
        DatasetError
            If an image cannot be decoded, is blank, or the splits' sizes differ.
        """
        (train, test), (train_name, test_name) = self.splits, self.split_names
        X_train, image_shape = decode_images(
            train, self.train_indices, self.image_column, self.source, train_name
        )
        X_test, test_shape = decode_images(
            test, self.test_indices, self.image_column, self.source, test_name
        )
        if image_shape != test_shape:
            raise DatasetError(
                f"{self.source!r}: {train_name!r} images have shape {image_shape} but "
                f"{test_name!r} images {test_shape}; both splits need one image size and "
                "the same channels"
            )
        return Sample(
            X_train=X_train,
            y_train=self.y_train,
            X_test=X_test,
            y_test=self.y_test,
            class_names=self.class_names,
            classes=self.classes,
            train_indices=self.train_indices,
            test_indices=self.test_indices,
            dataset=self.source,
            image_shape=image_shape,
        )


def resolve_dataset(dataset: str | os.PathLike | None) -> str:
    """Return the dataset to use: ``dataset`` (a hub id or a folder, as text), else
    ``$NTKDEMO_DATASET``, else the hub id."""
    if dataset:
        return os.fspath(dataset)
    return os.environ.get(DATASET_ENV) or HUB_DATASET


def balanced_indices(
    labels: np.ndarray,
    per_class: int | None,
    classes: Sequence[int],
    rng: np.random.Generator,
    *,
    split: str = "train",
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Choose the same number of rows of every class, at random.

    Each class's rows are put in a random order (one permutation per class, drawn
    in the order of ``classes``) and the first ``per_class`` are kept. The result is
    interleaved rank by rank: ``[c0 r0, c1 r0, ..., c0 r1, c1 r1, ...]``, so that its
    first ``k * len(classes)`` entries are themselves a balanced sample of ``k`` per
    class, and samples of different sizes drawn with the same generator state are
    nested.

    Parameters
    ----------
    labels : ndarray of shape (n_rows,)
        Label of every row of the split.
    per_class : int or None
        Rows per class; None takes every row of every class, interleaved rank by rank
        as far as the smallest class goes, then the rest of the larger classes (so the
        first ``k * len(classes)`` rows are still balanced for ``k`` up to the smallest
        class's size).
    classes : sequence of int
        Label ids to sample.
    rng : numpy.random.Generator
        Source of randomness.
    split, class_names : optional
        Used in error messages only.

    Returns
    -------
    ndarray of int64
        Chosen row indices.

    Raises
    ------
    InvalidParameterError
        If a class has fewer than ``per_class`` rows.
    """
    chosen = []
    for position, label in enumerate(classes):
        rows = np.flatnonzero(labels == label)
        name = f" ({class_names[position]!r})" if class_names else ""
        if len(rows) == 0:
            raise InvalidParameterError(
                f"class {label}{name} has no rows in the {split} split; leave it out with "
                "--classes (a list of the other ids)"
            )
        if per_class is not None and len(rows) < per_class:
            raise InvalidParameterError(
                f"class {label}{name} has only {len(rows)} rows in the {split} split, "
                f"but {per_class} per class were asked; use at most {len(rows)}"
            )
        chosen.append(rows[rng.permutation(len(rows))][:per_class])
    balanced = min(len(rows) for rows in chosen) if per_class is None else per_class
    interleaved = np.stack([rows[:balanced] for rows in chosen], axis=1).reshape(-1)
    rest = [rows[balanced:] for rows in chosen]
    return np.concatenate([interleaved, *rest]).astype(np.int64)


def load_sample(
    dataset: str | os.PathLike | None = None,
    train_per_class: int | None = 100,
    test_per_class: int | None = 50,
    classes: Sequence[int] | None = None,
    seed: int | None = 0,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
) -> Sample:
    """Draw a class-balanced, seeded sample of train and test images.

    The same as ``draw_sample(...).decode()``: :func:`draw_sample` chooses the rows
    from the label columns only, so a caller can check the sizes (a memory plan)
    before any image is decoded.

    Parameters
    ----------
    dataset : str or os.PathLike, optional
        Hugging Face hub id or local folder in the hub layout. Default:
        ``$NTKDEMO_DATASET`` if set, else ``"zalando-datasets/fashion_mnist"``.
    train_per_class, test_per_class : int or None, default=100 and 50
        Images per class in each sample; None takes the whole split.
    classes : sequence of int, optional
        Label ids to keep (e.g. ``[1, 3]`` for Trouser vs Dress); they are
        re-indexed to ``0 .. len(classes) - 1`` in the order given. Default: all.
    seed : int >= 0 or None, default=0
        Seed of ``numpy.random.default_rng``; train and test rows come from two
        independent child generators. None draws fresh entropy from the operating
        system: a different sample each call, which cannot be drawn again.
    image_column, label_column : str, optional
        Column names; found from the dataset's features (the ``Image`` and the
        ``ClassLabel`` column) when omitted.
    train_split, test_split : str, default="train" and "test"
        Split names.

    Returns
    -------
    Sample
        Images scaled to [0, 1] by the maximum of their integer dtype.

    Raises
    ------
    DatasetError
        The dataset cannot be read or lacks a split or column.
    InvalidParameterError
        Bad sizes or class ids.
    """
    return draw_sample(
        dataset,
        train_per_class,
        test_per_class,
        classes,
        seed,
        image_column=image_column,
        label_column=label_column,
        train_split=train_split,
        test_split=test_split,
    ).decode()


def draw_sample(
    dataset: str | os.PathLike | None = None,
    train_per_class: int | None = 100,
    test_per_class: int | None = 50,
    classes: Sequence[int] | None = None,
    seed: int | None = 0,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
) -> SampleDraw:
    """Choose the rows of a balanced sample from the label columns; decode one image only.

    Parameters and errors as :func:`load_sample`; :meth:`SampleDraw.decode` decodes the
    chosen images.
    """
    train_per_class = _check_per_class("train_per_class", train_per_class)
    test_per_class = _check_per_class("test_per_class", test_per_class)
    checked_seed = _check_seed(seed)
    source = resolve_dataset(dataset)
    splits = open_dataset(source)
    train = _get_split(splits, train_split, source)
    image_column, label_column = find_columns(train, source, image_column, label_column)
    test = _get_split(splits, test_split, source)
    names = _class_names(train, label_column)
    test_names = _class_names(test, label_column)
    if Path(source).is_dir():  # datasets gives every split the first file's names
        names = _declared_class_names(Path(source), train_split, label_column) or names
        test_names = _declared_class_names(Path(source), test_split, label_column) or test_names
    if test_names != names:
        raise DatasetError(
            f"the {train_split!r} and {test_split!r} splits of {source!r} name their classes "
            f"differently ({_shown(names)} against {_shown(test_names)}), so a label would "
            "mean one class in training and another in testing; give both splits one "
            "ClassLabel feature"
        )
    labels_train = _label_array(train, label_column, source, train_split, names)
    labels_test = _label_array(test, label_column, source, test_split, names)
    available = list(range(len(names))) if names else np.unique(labels_train).tolist()
    chosen_classes = _check_classes(classes, available)
    class_names = tuple(printable(names[c]) if names else str(c) for c in chosen_classes)

    rng_train, rng_test = np.random.default_rng(checked_seed).spawn(2)
    train_rows = balanced_indices(
        labels_train,
        train_per_class,
        chosen_classes,
        rng_train,
        split=train_split,
        class_names=class_names,
    )
    test_rows = balanced_indices(
        labels_test,
        test_per_class,
        chosen_classes,
        rng_test,
        split=test_split,
        class_names=class_names,
    )
    relabel = {label: position for position, label in enumerate(chosen_classes)}
    first, first_shape = decode_images(train, train_rows[:1], image_column, source, train_split)
    return SampleDraw(
        source=source,
        splits=(train, test),
        split_names=(train_split, test_split),
        image_column=image_column,
        train_indices=train_rows,
        test_indices=test_rows,
        y_train=np.array([relabel[v] for v in labels_train[train_rows]], dtype=np.int64),
        y_test=np.array([relabel[v] for v in labels_test[test_rows]], dtype=np.int64),
        class_names=class_names,
        classes=tuple(chosen_classes),
        n_values=int(first.shape[1]),
        image_shape=tuple(first_shape),
    )


def open_dataset(source: str):
    """Open a hub dataset or local folder as a ``datasets.DatasetDict``.

    A name that looks like a path (it exists, starts with ``.``, ``/`` or ``~``) is
    read from disk; anything else is a hub id. Failures become one
    :class:`DatasetError` that says what to do.
    """
    import datasets

    looks_local = source.startswith((".", "/", "~")) or os.sep in source.strip("/").split("/", 1)[0]
    path = Path(source).expanduser()
    if looks_local and not path.exists():
        raise DatasetError(
            f"dataset folder {source!r} does not exist; pass --dataset PATH to a folder "
            "in the Hugging Face layout (e.g. ../shared/fashion_mnist)"
        )
    if not path.exists():
        _check_hub_reachable(source)
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # "Generating train split" bars would garble one-line errors
    try:
        loaded = datasets.load_dataset(
            str(path) if path.exists() else source, cache_dir=_writable_cache_folder()
        )
    except Exception as exc:  # datasets raises many types; the user needs one message
        empty = re.search(r'Instruction "(.+)" corresponds to no data', str(exc))
        if path.exists() and empty:
            raise DatasetError(
                f"the {empty.group(1)!r} split of {source!r} is empty; every split needs at "
                "least one image"
            ) from None
        if path.exists():
            raise DatasetError(
                f"{source!r} is not a readable dataset folder ({type(exc).__name__}: "
                f"{_first_line(exc)}); it needs Parquet files with an image and a label column"
            ) from None
        raise DatasetError(
            f"cannot load {source!r} from the Hugging Face hub ({type(exc).__name__}: "
            f"{_first_line(exc)}); with no network pass --dataset PATH to a local copy, "
            "or set HF_HUB_OFFLINE=1 if the dataset is in your cache"
        ) from None
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    if not isinstance(loaded, datasets.DatasetDict):
        raise DatasetError(f"{source!r} did not load as a dataset with named splits")
    return loaded


def _writable_cache_folder() -> str | None:
    """``None`` (the ``datasets`` cache) where it can be written, else a temporary folder.

    An account without a writable home (a service account) has no usable cache; the
    run then converts the dataset into a folder under the system's temporary folder,
    removed when the process ends.
    """
    import datasets

    try:
        cache = Path(datasets.config.HF_DATASETS_CACHE)
        cache.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=cache).close()
        return None
    except OSError:
        folder = tempfile.mkdtemp(prefix="ntkdemo-datasets-cache-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        return folder


def find_columns(split, source: str, image_column: str | None, label_column: str | None):
    """Find the image and label columns from the split's features.

    Returns
    -------
    (str, str)
        Image column (a ``datasets.Image`` feature) and label column (a
        ``ClassLabel``, or an integer column named ``label``).
    """
    import datasets

    features = split.features
    if image_column is None:
        found = [n for n, f in features.items() if isinstance(f, datasets.Image)]
        image_column = found[0] if found else None
    if label_column is None:
        found = [n for n, f in features.items() if isinstance(f, datasets.ClassLabel)]
        label_column = found[0] if found else ("label" if "label" in features else None)
    for role, column in (("image", image_column), ("label", label_column)):
        if column is None or column not in features:
            flag = f"--{role}-column"
            raise DatasetError(
                f"{source!r} has no {role} column (columns: {', '.join(features)}); "
                f"name it with {flag}"
            )
    return image_column, label_column


def decode_images(
    split, rows: np.ndarray, image_column: str, source: str, split_name: str = "train"
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Decode the images of ``rows`` only and flatten them to float64 in [0, 1].

    Grayscale, RGB or any other mode: the pixel array is flattened as it is decoded.

    Returns
    -------
    images : ndarray of shape (len(rows), n_values)
    image_shape : tuple of int
        Shape of one image before flattening.

    Raises
    ------
    DatasetError
        If the images differ in shape, or one is blank (all zero): a blank image has
        no direction, so the normalised NTK is undefined for it.
    """
    column = split.select_columns([image_column]).with_format("numpy")
    where = f"the {split_name!r} split of {source!r} (column {image_column!r})"
    try:
        images = column[rows][image_column]
    except Exception:  # PIL and datasets raise many types for a broken image
        raise _undecodable(column, rows, image_column, where) from None
    if isinstance(images, np.ndarray) and images.dtype != object:
        stacked = images
    else:
        missing = [int(row) for row, image in zip(rows, images) if image is None]
        if missing:
            raise DatasetError(
                f"row(s) {list_rows(np.sort(missing))} of {where} have no image; remove them "
                "from the dataset or draw another sample with --seed"
            )
        shapes = {np.shape(image) for image in images}
        if len(shapes) > 1:
            raise DatasetError(
                f"images in {source!r} have different shapes {sorted(shapes)}; "
                "the kernel needs one size: resize them first"
            )
        stacked = np.stack(list(images))
    if stacked.dtype.kind not in "biuf" or stacked.ndim < 2:
        raise DatasetError(
            f"{where} holds {stacked.dtype} values, not decoded images; give the column "
            "the datasets Image feature (or name the image column with --image-column)"
        )
    scale = np.iinfo(stacked.dtype).max if np.issubdtype(stacked.dtype, np.integer) else 1.0
    flat = stacked.reshape(len(rows), -1).astype(np.float64) / scale
    broken = rows[~np.isfinite(flat).all(axis=1)]
    if broken.size:
        raise DatasetError(
            f"row(s) {list_rows(np.sort(broken))} of {where} hold NaN or infinite pixels; "
            "repair or remove them"
        )
    blank = rows[~flat.any(axis=1)]
    if blank.size:
        raise DatasetError(
            f"row(s) {list_rows(np.sort(blank))} of the {split_name!r} split of {source!r} "
            "are blank (all zero): a blank image has no direction, so the normalised NTK is "
            "undefined; remove them from the dataset or draw another sample with --seed"
        )
    return flat, tuple(stacked.shape[1:])


def _undecodable(column, rows: np.ndarray, image_column: str, where: str) -> DatasetError:
    """The error for a batch that failed to decode, naming the first row that fails alone."""
    for row in np.sort(rows):
        try:
            column[int(row)]
        except Exception as exc:
            return DatasetError(
                f"cannot decode the image in row {int(row)} of {where}: "
                f"{type(exc).__name__}: {re.sub(r' <[^>]* at 0x[0-9a-f]+>', '', _first_line(exc))}"
                "; repair or remove that row"
            )
    return DatasetError(f"cannot decode the images of {where}")


def printable(name: str) -> str:
    """``name`` with control characters (newlines, terminal escapes) written as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _shown(names: list[str] | None) -> str:
    """A short rendering of a split's class names for a message."""
    if names is None:
        return "no class names"
    shown = ", ".join(repr(printable(n)) for n in names[:4])
    return f"[{shown}{', ...' if len(names) > 4 else ''}]"


def _check_seed(seed: object) -> int | None:
    """A seed is None or a whole number >= 0 (what ``numpy.random.default_rng`` accepts)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InvalidParameterError(
            f"seed must be a whole number >= 0 (or None for a fresh, unrepeatable sample), "
            f"got {seed!r}"
        )
    return int(seed)


def _check_per_class(name: str, value: int | str | None) -> int | None:
    if value is None or value == "all":
        return None
    return check_positive_int(name, value)


def _check_classes(classes: Sequence[int] | None, available: list[int]) -> list[int]:
    """The class ids to sample: ``classes`` checked against the ``available`` label ids."""
    if classes is None:
        return available
    if isinstance(classes, str) or not all(
        isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in classes
    ):
        raise InvalidParameterError(
            f"classes must be a list of whole-number label ids such as [1, 3], got {classes!r}"
        )
    chosen = [int(c) for c in classes]
    if not chosen:
        raise InvalidParameterError(
            "classes is empty; name at least two label ids, e.g. --classes 1,3"
        )
    known = set(available)
    unknown = [c for c in chosen if c not in known]
    if unknown:
        span = (
            f"0..{available[-1]}"
            if available == list(range(len(available)))
            else f"{available[:10]}" + (" ..." if len(available) > 10 else "")
        )
        raise InvalidParameterError(
            f"unknown class id(s) {unknown}; this dataset has classes {span}"
        )
    if len(set(chosen)) != len(chosen):
        raise InvalidParameterError(f"classes {chosen} repeat an id; list each class once")
    if len(chosen) < 2:
        raise InvalidParameterError(
            f"classes {chosen} name a single class; classification needs at least two"
        )
    return chosen


def _get_split(splits, name: str, source: str):
    if name not in splits:
        raise DatasetError(
            f"{source!r} has no {name!r} split (splits: {', '.join(splits)}); "
            "choose one with --train-split/--test-split"
        )
    split = splits[name]
    if len(split) == 0:
        raise DatasetError(
            f"the {name!r} split of {source!r} is empty; every split needs at least one image"
        )
    return split


def _declared_class_names(folder: Path, split: str, label_column: str) -> list[str] | None:
    """The class names a local folder's Parquet files of ``split`` declare (None if none).

    ``datasets`` casts every split to the features of the first file it reads, so splits
    whose files name their classes differently load as if they agreed; the files' own
    ``huggingface`` metadata tells.
    """
    import pyarrow.parquet as parquet

    for path in sorted(folder.rglob(f"{split}-*.parquet")):
        metadata = parquet.read_schema(path).metadata or {}
        try:
            info = json.loads(metadata.get(b"huggingface", b"{}"))
            return list(info["info"]["features"][label_column]["names"])
        except (ValueError, KeyError, TypeError):
            return None
    return None


def _class_names(split, label_column: str) -> list[str] | None:
    import datasets

    feature = split.features[label_column]
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _label_array(
    split, label_column: str, source: str, split_name: str, names: list[str] | None
) -> np.ndarray:
    labels = split.data.column(label_column).to_numpy()
    if not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
        raise DatasetError(
            f"labels of the {split_name!r} split of {source!r} must be integers >= 0 "
            "with no missing values"
        )
    if names and labels.max() >= len(names):
        bad = np.flatnonzero(labels >= len(names))
        raise DatasetError(
            f"label(s) {sorted(set(labels[bad].tolist()))[:5]} in row(s) {list_rows(bad)} of the "
            f"{split_name!r} split of {source!r} are out of range: its ClassLabel has "
            f"{len(names)} names (0..{len(names) - 1}); fix the labels or the names"
        )
    return labels


def _check_hub_reachable(source: str, timeout: float = 5.0) -> None:
    """Fail fast, instead of after a minute of retries, when the hub is unreachable.

    Skipped when ``HF_HUB_OFFLINE`` is set: then ``datasets`` reads its cache.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise DatasetError(
            f"cannot reach the Hugging Face hub at {constants.ENDPOINT} to load {source!r} "
            f"({exc.strerror or exc}); with no network pass --dataset PATH to a local copy "
            "(e.g. ../shared/fashion_mnist), or set HF_HUB_OFFLINE=1 if it is in your cache"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no details"

"""The questions students ask after the demo, each one function returning arrays.

* :func:`learning_curve` -- test accuracy against training-set size;
* :func:`training_curve` -- loss and accuracy against gradient-descent time;
* :func:`norm_bound_curve` -- the complexity :math:`\\sqrt{y^\\top K^{-1} y / n}` against n;
* :func:`monte_carlo_error` -- empirical finite-width NTK against the formula;
* :func:`compare_with_networks` -- trained finite networks against the kernel.

They reuse the library's data, kernels, solver and dynamics; only the last builds a
network (:mod:`ntkdemo.network`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from ..data import Sample
from ..dynamics import GradientDescentDynamics, check_times
from ..errors import InvalidParameterError
from ..kernels import fc_kernels, ntk, scaled_unit_rows, unit_rows
from ..solvers import one_hot, predict, solve
from ..solvers.base import Progress, wrap
from ..validation import check_positive_int
from .network import OneHiddenLayerNet, train_network, train_network_sgd

if TYPE_CHECKING:
    from ..spec import KernelSpec

KERNEL_NAMES = ("NNGP", "NTK")
"""The two kernels of each network, as the curves' labels name them."""


def sample_kernels(sample: Sample, depth: int = 1) -> tuple[tuple, tuple]:
    """``fc_kernels`` of the sample's train and test-vs-train rows, inputs at ``x.x/d = 1``.

    Returns
    -------
    (nngp, ntk) of K(X_train, X_train), and (nngp, ntk) of K(X_test, X_train).
    """
    X_train, X_test = scaled_unit_rows(sample.X_train), scaled_unit_rows(sample.X_test)
    return fc_kernels(X_train, depth=depth), fc_kernels(X_test, X_train, depth=depth)


@dataclass
class LearningCurve:
    """Test accuracy of each model at each training-set size.

    Attributes
    ----------
    sizes : ndarray of int
        Training images per class.
    accuracy : dict of str to ndarray
        Model label (``"NTK depth 1"``, ``"NNGP depth 2"``, ``"RBF SVC"``) to accuracies.
    """

    sizes: np.ndarray
    accuracy: dict[str, np.ndarray]


def held_images(sizes_per_class: Iterable[int], n_classes: int, whole_matrix_rows: int) -> int:
    """Training images whose kernels :func:`learning_curve` holds whole: the largest size
    of at most ``whole_matrix_rows`` images (0 if none is)."""
    images = [size * n_classes for size in sizes_per_class]
    return max((n for n in images if n <= whole_matrix_rows), default=0)


def learning_curve(
    sample: Sample,
    sizes_per_class: Sequence[int],
    *,
    depths: Sequence[int] = (1, 2, 3),
    architectures: Sequence[str] = (),
    features: int | None = None,
    feature_width: int = 128,
    feature_dtype: str = "float64",
    added: Callable[[KernelSpec], KernelSpec] | None = None,
    svc_baseline: bool = True,
    whole_matrix_rows: int = 8000,
    svc_max_rows: int | None = None,
    progress: Callable[[str], None] | None = None,
    bars: Progress | None = None,
) -> LearningCurve:
    r"""Test accuracy of kernel regression (NTK and NNGP) and an RBF SVC against size.

    The sample's training rows are interleaved class by class (see
    :func:`ntkdemo.data.balanced_indices`), so its first ``k * n_classes`` rows hold ``k``
    images of each class: one kernel matrix per network serves every size up to
    ``whole_matrix_rows`` images, each size solving its leading block. Larger sizes are
    run as the demo runs them (:func:`ntkdemo.demo.run_demo`: the memory plan picks
    Cholesky, ``cg`` or ``cg32``), one run per network and kernel; the SVC is NaN above
    ``svc_max_rows`` images, if given (its time grows as the square: 8 minutes at
    60,000 images on one core of one machine).

    Parameters
    ----------
    sample : Sample
        With at least ``max(sizes_per_class)`` training images per class.
    sizes_per_class : sequence of int
    depths : sequence of int, default=(1, 2, 3)
        Fully connected networks (labels ``"NTK depth 2"``, ...).
    architectures : sequence of str, default=()
        Convolutional networks of :func:`ntkdemo.kernels.conv_kernels` (labels
        ``"NTK myrtle5"``, ...), on the sample's ``image_shape``.
    features : int or None, default=None
        Approximate the architectures' kernels by random features (labels ``"NTK
        myrtle5, 4096 features"``; :func:`feature_curve`): every size from one set of
        features, solved in the primal, the error against the exact kernel measured on
        100 + 100 images and sent to ``progress``.
    feature_width : int, default=128
        The random networks' hidden channels (of ``features`` and of ``added``).
    feature_dtype : {"float64", "float32"}, default="float64"
        Precision the random networks run in (:attr:`ntkdemo.spec.KernelSpec.feature_dtype`).
    added : callable, optional
        Turns a network's spec into that of a sum with random features
        (:meth:`~ntkdemo.spec.KernelSpec.with_added_features`, its arguments bound): each
        exact network's NNGP and NTK are then also scored summed, :math:`K + c\,F F^T`
        (labels ``"NTK depth 1 + 70 x myrtle5 features"``), the added features of each
        image computed once for every network and size, their error against the added
        network's exact kernel sent to ``progress``.
    svc_baseline : bool, default=True
        Also fit ``sklearn.svm.SVC(kernel="rbf", gamma="scale")`` on the same samples.
    whole_matrix_rows : int, default=8000
        Largest training set whose kernels are held whole (8,000 images: 0.5 GB each).
    svc_max_rows : int or None, default=None
        Largest training set the SVC is fitted on (None: every size).
    progress : callable, optional
        Receives a line as each kernel, large size or large SVC fit starts (a
        convolutional one with its time, from a per-pair cost measured then), and the
        accuracy of each large one as it ends (so a stopped curve keeps what it found).
    bars : callable, optional
        A progress bar for a description (as the strategies take it): the
        convolutional kernels' chunks of image pairs, and the runs' blocks and iterations.
    """
    from ..demo import kernel_pairs, run_demo
    from ..kernels.conv import conv_kernels
    from ..spec import KernelSpec

    sizes = np.array(sorted({check_positive_int("size", s) for s in sizes_per_class}))
    images = sizes * sample.n_classes
    whole = images <= whole_matrix_rows
    targets = one_hot(sample.y_train, sample.n_classes)
    accuracy: dict[str, np.ndarray] = {}
    held = replace(
        sample, X_train=sample.X_train[: held_images(sizes, sample.n_classes, whole_matrix_rows)]
    )
    # the random networks of --features and of the added network, if any
    network_spec = partial(KernelSpec, feature_width=feature_width, feature_dtype=feature_dtype)
    networks = [(f"depth {depth}", network_spec(depth=depth)) for depth in depths] + [
        (name, network_spec(architecture=name, image_shape=sample.image_shape))
        for name in architectures
    ]
    n_test = len(sample.y_test)
    shape = tuple(sample.image_shape)
    held_unit = unit_rows(held.X_train), unit_rows(held.X_test)  # fully connected, added
    added_features: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # by kernel
    for label, spec in networks:
        if features is not None and spec.architecture is not None:
            for name in KERNEL_NAMES:
                one = replace(spec, features=features, kernel=name.lower())
                accuracy[f"{name} {label}, {one.feature_columns} features"] = feature_curve(
                    sample, one, images, progress
                )
            continue
        train_kernels: tuple[np.ndarray, ...] = ()
        test_kernels: tuple[np.ndarray, ...] = ()
        per_pair = _seconds_per_pair(spec) if progress else 0.0

        if whole.any() and spec.architecture is None:  # in a run's scale, as a sum adds to
            X_train, X_test = held_unit
            kinds = [replace(spec, kernel=name.lower()) for name in KERNEL_NAMES]
            train_kernels = tuple(one.matrix(X_train) for one in kinds)
            test_kernels = tuple(one.matrix(X_test, X_train) for one in kinds)
        elif whole.any() and spec.architecture is not None:
            if progress:
                n_held = len(held.X_train)
                pairs = n_held * (n_held + 1) // 2 + n_test * n_held  # both kernels at once
                cost = _cost(pairs, per_pair)
                progress(f"{spec.architecture} kernels of {n_held} training images{cost}")
            X_train, X_test = scaled_unit_rows(held.X_train), scaled_unit_rows(held.X_test)
            network = partial(
                conv_kernels, architecture=spec.architecture, w_std=spec.w_std, image_shape=shape
            )
            train_kernels = network(X_train, progress=wrap(bars, "training pairs"))
            test_kernels = network(X_test, X_train, progress=wrap(bars, "test pairs"))
        for name, K, K_test in zip(KERNEL_NAMES, train_kernels, test_kernels):
            accuracy[f"{name} {label}"] = _nested_scores(K, K_test, targets, sample, images, whole)
            if added is not None:
                summed = added(replace(spec, kernel=name.lower())).for_images(shape)
                if name not in added_features:  # the added network is the same for every network
                    added_features[name] = _added_features(summed, *held_unit, targets, progress)
                F, F_test = added_features[name]
                K_sum = K + summed.added_weight * (F @ F.T)
                K_test_sum = K_test + summed.added_weight * (F_test @ F.T)
                accuracy[_sum_label(name, label, summed)] = _nested_scores(
                    K_sum, K_test_sum, targets, sample, images, whole
                )
                del K_sum, K_test_sum
        for index in np.flatnonzero(~whole):
            n = images[index]
            part = replace(
                sample,
                X_train=sample.X_train[:n],
                y_train=sample.y_train[:n],
                train_indices=sample.train_indices[:n],
            )
            for name in KERNEL_NAMES:
                one = replace(spec, kernel=name.lower())
                runs = [(f"{name} {label}", one)]
                if added is not None:
                    summed = added(one).for_images(shape)
                    runs.append((_sum_label(name, label, summed), summed))
                for model, model_spec in runs:
                    if progress:
                        pairs = kernel_pairs(model_spec, n, n_test, spectrum_rows=10)
                        progress(
                            f"{sizes[index]} per class ({n} images): {model}, as a run"
                            + _cost(pairs, per_pair)
                        )
                    scores = accuracy.setdefault(model, np.full(len(sizes), np.nan))
                    run = run_demo(part, model_spec, spectrum_rows=10, progress=bars)
                    scores[index] = run.test_report.accuracy
                    if progress:
                        progress(f"  {model} at {n} images: test accuracy {scores[index]:.4f}")
    if svc_baseline:
        from sklearn.svm import SVC

        scores = np.full(len(sizes), np.nan)
        for index in np.flatnonzero(images <= (svc_max_rows or images.max())):
            n = images[index]
            if progress and n > whole_matrix_rows:
                progress(
                    f"RBF SVC on {n} images (libsvm, one core: its time grows as the square "
                    "of the images: minutes at 60,000)"
                )
            model = SVC(kernel="rbf", gamma="scale").fit(sample.X_train[:n], sample.y_train[:n])
            scores[index] = model.score(sample.X_test, sample.y_test)
            if progress and n > whole_matrix_rows:
                progress(f"  RBF SVC at {n} images: test accuracy {scores[index]:.4f}")
        accuracy["RBF SVC"] = scores
    return LearningCurve(sizes, accuracy)


def _nested_scores(
    K: np.ndarray,
    K_test: np.ndarray,
    targets: np.ndarray,
    sample: Sample,
    images: np.ndarray,
    whole: np.ndarray,
) -> np.ndarray:
    """Test accuracy of kernel regression on the first ``images[i]`` training images,
    each a leading block of ``K``, for each ``i`` where ``whole`` (NaN elsewhere)."""
    scores = np.full(len(images), np.nan)
    for index in np.flatnonzero(whole):
        n = images[index]
        solution = solve(K[:n, :n], targets[:n])
        predicted = predict(K_test[:, :n], solution).argmax(axis=1)
        scores[index] = np.mean(predicted == sample.y_test)
    return scores


def _sum_label(name: str, label: str, summed: KernelSpec) -> str:
    """``"NTK depth 1 + 70 x myrtle5 features"``: a sum's label in the curve."""
    assert summed.added is not None
    flipped = " flipped" if summed.added.flip else ""
    return f"{name} {label} + {summed.added_weight:g} x {summed.added.network}{flipped} features"


def _added_features(
    summed: KernelSpec,
    X_train: np.ndarray,
    X_test: np.ndarray,
    targets: np.ndarray,
    progress: Callable[[str], None] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The added network's features of the training and test unit rows
    (:class:`~ntkdemo.solvers.features.AddedFeatures`, calibrated on the training
    ones), without the rows' values; their error against its exact kernel goes to
    ``progress``."""
    from ..solvers.features import AddedFeatures

    features = AddedFeatures.calibrated(summed, X_train)
    train_rows, test_rows = features.rows(X_train), features.rows(X_test)
    if progress:
        error = features.approximation_error(train_rows, test_rows, targets[: len(X_train)])
        progress(f"{summed.describe()}: APPROXIMATE, {error.describe()}")
    values = X_train.shape[1]
    return train_rows[:, values:].copy(), test_rows[:, values:].copy()  # the rows freed


def feature_curve(
    sample: Sample,
    spec,
    images: np.ndarray,
    progress: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Test accuracy of kernel regression on random features (``spec.features``) on
    the first ``images[i]`` training images of the sample, for each ``i``: one set of
    features serves every size, each solved in the primal
    (:class:`~ntkdemo.solvers.features.FeatureSolver`: its calibration, primal solve
    and error check against the exact kernel, which goes to ``progress``)."""
    from ..solvers.features import FeatureSolver, features_of, primal_solve

    X_train = unit_rows(sample.X_train[: images.max()])
    X_test = unit_rows(sample.X_test)
    targets = one_hot(sample.y_train[: images.max()], sample.n_classes)
    solver = FeatureSolver(spec.feature_columns)
    feature_map = solver.calibrated_map(X_train, spec)
    F, F_test = features_of(spec, feature_map, X_train), features_of(spec, feature_map, X_test)
    scores = np.full(len(images), np.nan)
    for index, n in enumerate(images):
        weights = primal_solve(F[:n].T @ F[:n], F[:n].T @ targets[:n], spec.ridge).coef
        scores[index] = np.mean((F_test @ weights).argmax(axis=1) == sample.y_test)
    if progress:
        error = solver.approximation_error(spec, feature_map, X_train, X_test, targets)
        progress(f"{spec.describe()}: APPROXIMATE, {error.describe()}")
    return scores


def _seconds_per_pair(spec) -> float:
    """A convolutional kernel's seconds per image pair, measured now
    (:func:`~ntkdemo.kernels.conv.seconds_per_pair`); 0 for a fully connected one, whose
    kernels take seconds."""
    from ..kernels.conv import seconds_per_pair

    if spec.architecture is None:
        return 0.0
    return seconds_per_pair(spec.architecture, spec.image_shape, w_std=spec.w_std)


def _cost(pairs: int, per_pair: float) -> str:
    """`` (about T here: P image pairs at C ms each, ...)``, or nothing without a
    per-pair cost."""
    from ..units import format_duration, format_pair_cost

    if not per_pair:
        return ""
    return (
        f" (about {format_duration(pairs * per_pair)} here: {pairs:,} image pairs at "
        f"{format_pair_cost(per_pair)} each, measured now)"
    )


@dataclass
class TrainingCurve:
    """Loss and accuracy against training time, per kernel ("NTK", "NNGP").

    ``loss[name]`` and ``accuracy[name]`` are dicts with keys ``"train"`` and
    ``"test"`` mapping to arrays over ``times``; the loss is
    ``0.5 * mean((f - y)^2)`` over images and outputs.
    """

    times: np.ndarray
    loss: dict[str, dict[str, np.ndarray]]
    accuracy: dict[str, dict[str, np.ndarray]]


def training_curve(
    sample: Sample, times: np.ndarray, *, depth: int = 1, learning_rate: float = 1.0
) -> TrainingCurve:
    """Closed-form training dynamics of the infinite network on a sample.

    One eigendecomposition per kernel serves every time (:mod:`ntkdemo.dynamics`).
    """
    targets_train = one_hot(sample.y_train, sample.n_classes)
    targets_test = one_hot(sample.y_test, sample.n_classes)
    train_kernels, test_kernels = sample_kernels(sample, depth)
    loss: dict[str, dict[str, np.ndarray]] = {}
    accuracy: dict[str, dict[str, np.ndarray]] = {}
    for name, K, K_test in zip(("NNGP", "NTK"), train_kernels, test_kernels):
        dynamics = GradientDescentDynamics(K, targets_train, learning_rate)
        loss[name], accuracy[name] = {}, {}
        for split, kernel, targets, labels in (
            ("train", K, targets_train, sample.y_train),
            ("test", K_test, targets_test, sample.y_test),
        ):
            outputs = dynamics.predict(kernel, times)
            loss[name][split] = 0.5 * ((outputs - targets) ** 2).mean(axis=(1, 2))
            accuracy[name][split] = (outputs.argmax(axis=2) == labels).mean(axis=1)
    return TrainingCurve(np.asarray(times, dtype=float), loss, accuracy)


def circle_points(n: int) -> np.ndarray:
    """``n`` equally spaced points on the unit circle, shape (n, 2)."""
    angles = 2 * np.pi * np.arange(n) / n
    return np.column_stack([np.cos(angles), np.sin(angles)])


def norm_bound_curve(
    X: np.ndarray, y: np.ndarray, sizes: Sequence[int] | np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    r"""The complexity measure :math:`\sqrt{y^\top K^{-1} y / n}` of Arora et al. (2019).

    Computed with the one-layer NTK on the first ``n`` rows, for labels ``y`` in {-1, +1}
    and, for contrast, for the same labels randomly permuted (which a kernel finds
    harder to fit: the measure grows).

    Returns
    -------
    dict with keys "true labels" and "random labels", arrays over ``sizes``.
    """
    sizes = np.asarray(sizes)
    if sizes.size == 0 or sizes.min() < 2 or sizes.max() > len(X):
        raise InvalidParameterError(
            f"the bound's sizes must lie in 2..{len(X)} (the images given), got "
            f"{sizes.tolist()}; draw more images per class"
        )
    K = ntk(X)
    shuffled = rng.permutation(y)
    curves: dict[str, list[float]] = {"true labels": [], "random labels": []}
    for n in sizes:
        for name, labels in (("true labels", y), ("random labels", shuffled)):
            coef = solve(K[:n, :n], labels[:n].astype(float)).coef
            curves[name].append(float(np.sqrt(labels[:n] @ coef / n)))
    return {name: np.array(values) for name, values in curves.items()}


@dataclass
class MonteCarloResult:
    """Relative Frobenius error of the empirical NTK at each width.

    ``errors`` has shape (len(widths), repeats); ``slope`` is the least-squares slope
    of log(mean error) against log(width), about -1/2.
    """

    widths: np.ndarray
    errors: np.ndarray
    slope: float


def monte_carlo_error(
    X: np.ndarray, widths: Sequence[int], *, repeats: int, rng: np.random.Generator
) -> MonteCarloResult:
    r"""Empirical NTK of random width-m networks against the one-layer formula.

    With inputs rescaled to norm :math:`\sqrt d`, the expected empirical NTK of
    :class:`~ntkdemo.network.OneHiddenLayerNet` is ``ntk(X) / 2``; the error is
    :math:`\|2\hat\Theta - \mathrm{NTK}\|_F / \|\mathrm{NTK}\|_F`.
    """
    exact = ntk(X)
    inputs = scaled_unit_rows(X)
    widths_array = np.array([check_positive_int("width", w) for w in widths])
    if len(set(widths_array.tolist())) < 2:
        raise InvalidParameterError(
            f"widths must hold at least two different widths to fit the error's slope, "
            f"got {widths_array.tolist()}; e.g. 16,64,256"
        )
    errors = np.empty((len(widths_array), repeats))
    for row, width in enumerate(widths_array):
        for repeat in range(repeats):
            net = OneHiddenLayerNet.initialise(inputs.shape[1], int(width), 1, rng)
            empirical = 2 * net.empirical_ntk(inputs)
            errors[row, repeat] = np.linalg.norm(empirical - exact) / np.linalg.norm(exact)
    slope = float(np.polyfit(np.log(widths_array), np.log(errors.mean(axis=1)), 1)[0])
    return MonteCarloResult(widths_array, errors, slope)


@dataclass
class NetworkComparison:
    """Trained finite networks against the infinite network at the same time t.

    Attributes
    ----------
    widths : ndarray of int
    network_accuracy : ndarray
        Test accuracy of each trained network.
    agreement : ndarray
        Fraction of test images where network and kernel predict the same class.
    output_distance : ndarray
        Relative distance of the network's test outputs to the kernel's.
    kernel_accuracy : float
        Test accuracy of the infinite network after the same gradient-descent steps.
    flow_accuracy : float
        Test accuracy of the infinite network after gradient flow for the same time t.
    discretisation : float
        Relative distance between those two kernel predictions (the part of the
        network's distance to the flow that is due to finite steps, not finite width).
    time, learning_rate : float
    steps : int
    """

    widths: np.ndarray
    network_accuracy: np.ndarray
    agreement: np.ndarray
    output_distance: np.ndarray
    kernel_accuracy: float
    flow_accuracy: float
    discretisation: float
    time: float
    learning_rate: float
    steps: int


def compare_with_networks(
    sample: Sample,
    widths: Sequence[int],
    *,
    steps: int,
    rng: np.random.Generator,
    learning_rate: float | None = None,
) -> NetworkComparison:
    """Train one-hidden-layer networks by full-batch gradient descent and compare.

    Each network starts with paired hidden units (initial output exactly 0, see
    :meth:`OneHiddenLayerNet.initialise`) and takes ``steps`` steps of size
    ``learning_rate`` on ``0.5 * sum((f - Y)^2) / Y.size``. The kernel prediction it
    is compared with is the infinite network (depth-1 NTK) after the same steps
    (:meth:`~ntkdemo.dynamics.GradientDescentDynamics.discrete_dual_coefficients`),
    which the network approaches as its width grows; the gradient-flow prediction at
    ``t = learning_rate * steps`` is reported beside it, with their distance. The
    default learning rate is ``Y.size / lambda_max(K)``, half the stability limit of
    gradient descent on the linearised network.
    """
    X_train, X_test = scaled_unit_rows(sample.X_train), scaled_unit_rows(sample.X_test)
    targets = one_hot(sample.y_train, sample.n_classes)
    K, K_test = fc_kernels(X_train)[1], fc_kernels(X_test, X_train)[1]  # rows the network sees
    stability_limit = 2 * targets.size / float(np.linalg.eigvalsh(K)[-1])
    if learning_rate is None:
        learning_rate = stability_limit / 2
    if not learning_rate < stability_limit:
        raise InvalidParameterError(
            f"learning rate {learning_rate:g} is above the stability limit of gradient "
            f"descent here, 2 Y.size / lambda_max(K) = {stability_limit:.4g}: training "
            f"would diverge; choose a learning rate below it (default "
            f"{stability_limit / 2:.4g})"
        )
    time = learning_rate * steps
    dynamics = GradientDescentDynamics(K, targets, learning_rate)
    kernel_outputs = K_test @ dynamics.discrete_dual_coefficients(steps)
    kernel_labels = kernel_outputs.argmax(axis=1)
    flow_outputs = dynamics.predict(K_test, time)
    widths_array = np.array([check_positive_int("width", w) for w in widths])
    accuracy, agreement, distance = [], [], []
    for width in widths_array:
        net = OneHiddenLayerNet.initialise(
            X_train.shape[1], int(width), sample.n_classes, rng, symmetric=True
        )
        train_network(net, X_train, targets, learning_rate=learning_rate, steps=steps)
        outputs = net(X_test)
        if not np.isfinite(outputs).all():
            raise InvalidParameterError(
                f"the width-{width} network diverged at learning rate {learning_rate:g}; "
                "choose a smaller learning rate"
            )
        accuracy.append(np.mean(outputs.argmax(axis=1) == sample.y_test))
        agreement.append(np.mean(outputs.argmax(axis=1) == kernel_labels))
        distance.append(np.linalg.norm(outputs - kernel_outputs) / np.linalg.norm(kernel_outputs))
    return NetworkComparison(
        widths_array,
        np.array(accuracy),
        np.array(agreement),
        np.array(distance),
        float(np.mean(kernel_labels == sample.y_test)),
        float(np.mean(flow_outputs.argmax(axis=1) == sample.y_test)),
        float(np.linalg.norm(flow_outputs - kernel_outputs) / np.linalg.norm(flow_outputs)),
        time,
        learning_rate,
        steps,
    )


@dataclass
class TimeWidthCurves:
    """Test accuracy against training-set size for infinite networks after time t and
    for trained finite networks of several widths, on the same nested samples.

    Attributes
    ----------
    sizes : ndarray of int
        Training images per class; ``sizes * n_classes`` images in all.
    times : ndarray
        Gradient-descent times t of the infinite network (``inf``: converged).
    kernel_accuracy : dict of str to ndarray of shape (len(times), len(sizes))
        ``"NTK"`` (the whole network trained) and ``"NNGP"`` (its readout only).
    widths : ndarray of int
    network_accuracy : ndarray of shape (len(widths), len(sizes))
    network_time : ndarray of shape (len(sizes),)
        The time ``learning_rate * steps`` the networks trained for at each size (NaN
        for SGD, which has no such time).
    ntk_at_network_time : ndarray of shape (len(sizes),)
        The infinite network after that same time (NaN for SGD).
    training : str
        How the networks were trained.
    """

    sizes: np.ndarray
    times: np.ndarray
    kernel_accuracy: dict[str, np.ndarray]
    widths: np.ndarray
    network_accuracy: np.ndarray
    network_time: np.ndarray
    ntk_at_network_time: np.ndarray
    training: str


def accuracy_by_time_and_width(
    sample: Sample,
    sizes_per_class: Sequence[int],
    times: Sequence[float],
    widths: Sequence[int],
    *,
    rng: np.random.Generator,
    steps: int = 100,
    training: str = "gradient descent",
    epochs: int = 20,
    progress: Callable[[str], None] | None = None,
) -> TimeWidthCurves:
    r"""When does the kernel picture hold? Accuracy against size, by time and by width.

    For each size ``n`` (the sample's first ``n * n_classes`` training rows, balanced
    because they are interleaved class by class) and the depth-1 kernels in
    neural-tangents' scale (inputs at :math:`x \cdot x/d = 1`):

    * the infinite network after gradient-descent time ``t`` for every ``t`` in
      ``times``, NTK and NNGP, in closed form from one eigendecomposition
      (:class:`~ntkdemo.dynamics.GradientDescentDynamics`); ``t = inf`` is kernel
      regression, ``t = 0`` the zero function (chance);
    * one-hidden-layer networks of each width in ``widths``, trained on the same images
      either by full-batch ``"gradient descent"`` on the squared loss for ``steps``
      steps at half the stability limit, :math:`\eta = Y.size / \lambda_{max}(K)`,
      as :func:`compare_with_networks` (time :math:`t = \eta \cdot steps`), or by
      ``"sgd"``: softmax cross-entropy, momentum SGD in minibatches of 64, ``epochs``
      epochs (:func:`~ntkdemo.network.train_network_sgd`).

    Parameters
    ----------
    sample : Sample
        With at least ``max(sizes_per_class)`` training images per class.
    sizes_per_class : sequence of int
    times : sequence of float
        Times >= 0; ``inf`` for the converged network.
    widths : sequence of int
    rng : numpy.random.Generator
        Initialisations and SGD's batches.
    steps : int, default=100
        Gradient-descent steps of the networks.
    training : {"gradient descent", "sgd"}
    epochs : int, default=20
        SGD epochs.
    progress : callable, optional
        Receives one line per trained network.

    Returns
    -------
    TimeWidthCurves
    """
    if training not in ("gradient descent", "sgd"):
        raise InvalidParameterError(
            f"training must be 'gradient descent' or 'sgd', got {training!r}"
        )
    sizes = np.array(sorted({check_positive_int("size", s) for s in sizes_per_class}))
    largest = len(sample.y_train) // sample.n_classes
    if sizes.max() > largest:
        raise InvalidParameterError(
            f"sizes ask for {sizes.max()} images per class but the sample has {largest}"
        )
    time_grid = check_times(list(times)).reshape(-1)
    widths_array = np.array([check_positive_int("width", w) for w in widths])
    X_train, X_test = scaled_unit_rows(sample.X_train), scaled_unit_rows(sample.X_test)
    train_kernels, test_kernels = fc_kernels(X_train), fc_kernels(X_test, X_train)
    targets = one_hot(sample.y_train, sample.n_classes)
    kernel_accuracy = {name: np.empty((len(time_grid), len(sizes))) for name in ("NNGP", "NTK")}
    network_accuracy = np.empty((len(widths_array), len(sizes)))
    network_time = np.full(len(sizes), np.nan)
    ntk_at_network_time = np.full(len(sizes), np.nan)
    for column, size in enumerate(sizes):
        n = size * sample.n_classes
        for name, K, K_test in zip(("NNGP", "NTK"), train_kernels, test_kernels):
            dynamics = GradientDescentDynamics(K[:n, :n], targets[:n])
            outputs = dynamics.predict(K_test[:, :n], time_grid)
            kernel_accuracy[name][:, column] = (outputs.argmax(axis=2) == sample.y_test).mean(1)
        K_ntk = train_kernels[1][:n, :n]
        learning_rate = targets[:n].size / float(np.linalg.eigvalsh(K_ntk)[-1])
        if training == "gradient descent":
            network_time[column] = learning_rate * steps
            flow = GradientDescentDynamics(K_ntk, targets[:n]).predict(
                test_kernels[1][:, :n], network_time[column]
            )
            ntk_at_network_time[column] = np.mean(flow.argmax(axis=1) == sample.y_test)
        for row, width in enumerate(widths_array):
            net = OneHiddenLayerNet.initialise(
                X_train.shape[1], int(width), sample.n_classes, rng, symmetric=True
            )
            if training == "gradient descent":
                train_network(
                    net, X_train[:n], targets[:n], learning_rate=learning_rate, steps=steps
                )
            else:
                train_network_sgd(
                    net, X_train[:n], targets[:n], learning_rate=1.0, epochs=epochs, rng=rng
                )
            outputs = net(X_test)
            if not np.isfinite(outputs).all():
                raise InvalidParameterError(
                    f"the width-{width} network diverged on {n} images; use fewer --steps"
                )
            network_accuracy[row, column] = np.mean(outputs.argmax(axis=1) == sample.y_test)
            if progress:
                progress(
                    f"{n} images, width {width}: test accuracy {network_accuracy[row, column]:.4f}"
                )
    return TimeWidthCurves(
        sizes,
        time_grid,
        kernel_accuracy,
        widths_array,
        network_accuracy,
        network_time,
        ntk_at_network_time,
        training,
    )

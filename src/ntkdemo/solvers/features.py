r"""``features``: kernel regression with a kernel approximated by random features, solved
in the primal, and the measurement of its own error.

With features :math:`F` of shape (n_train, D) whose inner products approximate the
kernel (:mod:`ntkdemo.kernels.features`), :math:`\hat K = F F^T`, and kernel regression
with ridge :math:`\lambda` is, in the primal,

.. math:: (F^T F + \lambda I)\,w = F^T Y, \qquad f(x) = \phi(x)^T w
          = \hat K(x, X)\,(\hat K + \lambda I)^{-1} Y,

a D x D system (Cholesky, :func:`~.cholesky.solve`, with its jitter fallback) whose
cost grows with n only through :math:`F^T F`. The features are computed in batches;
:math:`F` is kept for the training outputs where it fits the memory plan, else computed
again (``keep=False``: the plan's second choice, out of core). With ``flip`` each
image's features are averaged with its mirror's, whose inner products approximate the
kernel averaged over mirrors.

Every number from it is approximate: :func:`approximation_error` computes the exact
kernel on a random sample of training and test images and reports the relative error of
the kernel and of the outputs it gives.

:class:`AddedFeatures` serves a kernel added to an exact one
(:attr:`~ntkdemo.spec.KernelSpec.added`): the sum :math:`K + c\,F F^T` is solved in
the dual like any exact kernel, from rows that carry each image's features after its
values, and its approximate part measured the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from ..kernels.features import RandomFeatures
from ..kernels.mirror import mirrored
from ..kernels.ntk import fold_inputs
from ..spec import KernelSpec
from ..validation import check_finite_result, check_positive_int
from .base import KernelSolution, Progress, Stopwatch, host_available_bytes, wrap
from .cholesky import solve

__all__ = [
    "AddedFeatures",
    "ApproximationError",
    "FeatureSolver",
    "FittedFeatures",
    "approximation_error",
    "features_of",
    "primal_solve",
]


@dataclass
class FittedFeatures:
    """A model fitted on random features: predictions :math:`\\phi(x)^T w`.

    ``solution.coef`` holds the primal weights :math:`w`, of shape (columns,
    n_outputs), not dual coefficients; ``solver`` is the strategy that fitted it (its
    feature batches and its error check serve the predictions and the check).
    """

    feature_map: RandomFeatures
    spec: KernelSpec
    solution: KernelSolution
    train_scores: np.ndarray
    solver: FeatureSolver
    timings: dict[str, float] = field(default_factory=dict)
    eigenvalues: np.ndarray | None = None

    def predict(self, X_unit: np.ndarray, *, progress: Progress | None = None) -> np.ndarray:
        """Outputs :math:`\\phi(x)^T w` of shape (n_test, n_outputs) for unit rows."""
        return _outputs(
            self.feature_map,
            self.spec,
            X_unit,
            self.solver.batch_rows,
            self.solution.coef,
            progress,
        )

    def approximation_error(
        self, X_train_unit: np.ndarray, X_test_unit: np.ndarray, Y: np.ndarray
    ) -> ApproximationError:
        """The fitting solver's error check (:meth:`FeatureSolver.approximation_error`)
        of this model's features."""
        return self.solver.approximation_error(
            self.spec, self.feature_map, X_train_unit, X_test_unit, Y
        )


@dataclass(frozen=True)
class FeatureSolver:
    """Strategy: the kernel approximated by ``columns`` random features, the D x D
    primal system solved by Cholesky.

    Parameters
    ----------
    columns : int
        Feature columns (:attr:`~ntkdemo.spec.KernelSpec.feature_columns`).
    keep : bool, default=True
        Keep the training features for the training outputs (``False``: compute them
        again, so that no n x D array is held).
    batch_rows : int, default=1024
        Images whose features are computed, and summed into :math:`F^T F`, at once.
    calibration : int, default=32
        Training images (the first) whose exact kernel sets the features' scale
        (:meth:`~ntkdemo.kernels.features.RandomFeatures.calibrate`).
    error_images : int, default=100
        Training images, and as many test images, drawn at random for the error check
        against the exact kernel (:func:`approximation_error`).
    """

    columns: int
    keep: bool = True
    batch_rows: int = 1024
    calibration: int = 32
    error_images: int = 100

    @property
    def name(self) -> str:
        return "features"

    in_process: bool = True
    gives_spectrum: bool = True

    def serves(self, spec: KernelSpec) -> bool:
        return spec.features is not None and spec.feature_columns == self.columns

    def describe(self) -> str:
        kept = "kept" if self.keep else "computed twice, never held whole"
        return (
            f"{self.columns} random features (an approximation; features {kept}), the "
            f"{self.columns} x {self.columns} primal system by Cholesky"
        )

    def available_bytes(self) -> int:
        return host_available_bytes()

    def memory_label(self) -> str:
        return "free memory or --max-memory"

    def kernel_bytes(self, n_train: int) -> int:
        """The training features where kept, and :math:`F^T F`."""
        return 8 * (n_train * self.columns * self.keep + self.columns**2)

    def kernel_label(self) -> str:
        return "float64 random features"

    def estimate_bytes(self, n_train: int, n_test: int, n_features: int, n_outputs: int) -> int:
        """Features kept, the D x D system and its factor, inputs and their unit rows, a
        batch of features, and the random network's weights (about 256 MB of work)."""
        inputs = 2 * 8 * (n_train + n_test) * n_features
        batch = 8 * self.batch_rows * (self.columns + n_features)
        system = 8 * self.columns**2 + 8 * self.columns * n_outputs
        return self.kernel_bytes(n_train) + system + inputs + batch + (512 << 20)

    def fit(
        self,
        X_unit: np.ndarray,
        Y: np.ndarray,
        spec: KernelSpec,
        *,
        progress: Progress | None = None,
        report: Callable[[str], None] | None = None,
        spectrum_rows: int = 0,
    ) -> FittedFeatures:
        """Features, :math:`F^T F` and :math:`F^T Y` summed batch by batch, Cholesky;
        training outputs :math:`F w`; the spectrum of :math:`\\hat K` on the leading
        ``spectrum_rows`` images (from the features kept or computed)."""
        check_positive_int("batch_rows", self.batch_rows)
        watch = Stopwatch()
        with watch.stage("features"):
            feature_map = self.calibrated_map(X_unit, spec)
        gram = np.zeros((self.columns, self.columns))
        right = np.zeros((self.columns, Y.shape[1]))
        kept = np.empty((len(X_unit), self.columns)) if self.keep else None
        leading = None
        with watch.stage("features"):
            batches = _feature_batches(
                feature_map, spec, X_unit, self.batch_rows, wrap(progress, "feature batches")
            )
            for rows, batch in batches:
                gram += batch.T @ batch
                right += batch.T @ Y[rows]
                if kept is not None:
                    kept[rows] = batch
                if rows.start < spectrum_rows:
                    part = batch[: spectrum_rows - rows.start]
                    leading = part if leading is None else np.vstack([leading, part])
        with watch.stage("solve"):
            solution = primal_solve(gram, right, spec.ridge)
        with watch.stage("features"):
            if kept is not None:
                scores = check_finite_result("the outputs", kept @ solution.coef)
            else:
                scores = _outputs(
                    feature_map, spec, X_unit, self.batch_rows, solution.coef, progress
                )
        eigenvalues = None
        if leading is not None:
            with watch.stage("spectrum"):
                eigenvalues = np.linalg.eigvalsh(leading @ leading.T)
        return FittedFeatures(feature_map, spec, solution, scores, self, watch.timings, eigenvalues)

    def calibrated_map(self, X_unit: np.ndarray, spec: KernelSpec) -> RandomFeatures:
        """The spec's random network, scaled to the exact kernel of the first
        ``calibration`` unit rows (whose pairs the spec's tally counts)."""
        feature_map = spec.feature_map(X_unit.shape[1])
        images = fold_inputs(X_unit[: self.calibration])
        feature_map.calibrate(images, len(images))
        spec.count_pairs(len(images), None)  # its exact Gram matrix
        return feature_map

    def approximation_error(
        self,
        spec: KernelSpec,
        feature_map: RandomFeatures,
        X_train_unit: np.ndarray,
        X_test_unit: np.ndarray,
        Y: np.ndarray,
    ) -> ApproximationError:
        """:func:`approximation_error` of ``feature_map`` on ``error_images`` training
        and as many test images: the check every fit and curve of this solver reports."""
        return approximation_error(
            spec,
            feature_map,
            X_train_unit,
            X_test_unit,
            Y,
            n_train=self.error_images,
            n_test=self.error_images,
        )

    def exact_pairs(self, n_train: int, n_test: int) -> int:
        """Exact kernel pairs a fit on ``n_train`` images and its error check on
        ``n_test`` test images compute: the calibration's Gram matrix, the error
        check's training Gram matrix and its test rows."""
        calibration = min(self.calibration, n_train)
        train, test = min(self.error_images, n_train), min(self.error_images, n_test)
        return (calibration * (calibration + 1) + train * (train + 1)) // 2 + test * train


def primal_solve(gram: np.ndarray, right: np.ndarray, ridge: float) -> KernelSolution:
    r"""Solve the primal system :math:`(F^T F + \lambda I)\,w = F^T Y` by Cholesky
    (:func:`~.cholesky.solve`, its jitter fallback included), given ``gram`` :math:`=
    F^T F` (overwritten) and ``right`` :math:`= F^T Y`; ``coef`` holds :math:`w`."""
    solution = solve(gram, right, ridge=ridge, overwrite_k=True)
    return replace(solution, method="Cholesky of the primal (random features)")


def _outputs(
    feature_map: RandomFeatures,
    spec: KernelSpec,
    X_unit: np.ndarray,
    batch_rows: int,
    coef: np.ndarray,
    progress: Progress | None,
) -> np.ndarray:
    """Outputs :math:`\\phi(x)^T w` of shape (n_rows, n_outputs) of unit rows, their
    features computed batch by batch."""
    outputs = np.empty((len(X_unit), coef.shape[1]))
    batches = _feature_batches(
        feature_map, spec, X_unit, batch_rows, wrap(progress, "feature batches")
    )
    for rows, batch in batches:
        outputs[rows] = batch @ coef
    return check_finite_result("the outputs", outputs)


def features_of(
    spec: KernelSpec,
    feature_map: RandomFeatures,
    X_unit: np.ndarray,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> np.ndarray:
    """The features of the kernel ``spec`` asks for (NNGP or NTK, averaged over mirrors
    under ``flip``) of unit rows, all at once: ndarray of shape (n, columns)."""
    batches = _feature_batches(feature_map, spec, X_unit, 1024, progress)
    return np.vstack([batch for _, batch in batches])


def _feature_batches(
    feature_map: RandomFeatures,
    spec: KernelSpec,
    X_unit: np.ndarray,
    batch_rows: int,
    progress: Callable[[Iterable], Iterable] | None,
) -> Iterable[tuple[slice, np.ndarray]]:
    """``(rows, features)`` of the unit rows batch by batch: the rows rescaled to
    ``x.x/d = 1`` (as the exact kernels see them), the NNGP or NTK columns, averaged
    with the mirror's under ``flip``."""
    column = 0 if spec.kernel == "nngp" else 1
    starts = range(0, len(X_unit), batch_rows)
    for start in progress(starts) if progress else starts:
        rows = slice(start, min(start + batch_rows, len(X_unit)))
        images = fold_inputs(X_unit[rows])
        batch = feature_map.transform(images)[column]
        if spec.flip:
            mirror = feature_map.transform(mirrored(images, spec.image_shape))[column]
            batch = 0.5 * (batch + mirror)
        yield rows, batch


@dataclass(frozen=True)
class ApproximationError:
    r"""How far random features are from the exact kernel, on a random sample.

    Attributes
    ----------
    n_train, n_test : int
        Training and test images sampled.
    kernel_train, kernel_test : float
        :math:`\|\hat K - K\|_F / \|K\|_F` on the sampled training pairs and on the
        sampled test-training pairs.
    outputs : float
        :math:`\|\hat f - f\|_F / \|f\|_F` for the test images' outputs of kernel
        regression on the sampled training images, with :math:`\hat K` and with
        :math:`K` (the same ridge). At ridge 0 the solve amplifies the kernel's error
        by up to the condition number of :math:`K`: this is the strictest measure.
    classes_agree : float
        Fraction of the sampled test images given the same class (the largest output)
        by :math:`\hat f` and by :math:`f`: what the accuracy sees of ``outputs``.
    """

    n_train: int
    n_test: int
    kernel_train: float
    kernel_test: float
    outputs: float
    classes_agree: float
    part: str = ""
    """What was approximated, where it is a part of the kernel (``" of the added
    kernel"``); empty for the whole kernel."""

    def describe(self) -> str:
        """One line for the console."""
        return (
            f"approximation error{self.part} against the exact kernel on {self.n_train} "
            f"training and {self.n_test} test images drawn at random: kernel "
            f"{self.kernel_train:.2%} (training pairs), {self.kernel_test:.2%} (test pairs); "
            f"outputs {self.outputs:.2%}, the same class for {self.classes_agree:.0%} of the test "
            "images"
        )


def approximation_error(
    spec: KernelSpec,
    feature_map: RandomFeatures,
    X_train_unit: np.ndarray,
    X_test_unit: np.ndarray,
    Y: np.ndarray,
    *,
    n_train: int = 100,
    n_test: int = 100,
    seed: int = 0,
) -> ApproximationError:
    """Measure random features against the exact kernel on ``n_train`` training and
    ``n_test`` test images drawn at random (``n_train (n_train + 1) / 2 + n_test
    n_train`` exact pairs, counted by the spec's tally).

    Parameters
    ----------
    spec : KernelSpec
        With ``features``: which kernel (NNGP or NTK, averaged over mirrors or not), its
        ridge.
    feature_map : RandomFeatures
        The drawn network (calibrated as the fit calibrated it).
    X_train_unit, X_test_unit : ndarray
        Unit rows of the training and test images.
    Y : ndarray of shape (n_train_total, n_outputs)
        Training targets.
    n_train, n_test : int, default=100
        Images sampled (at most all of them).
    seed : int, default=0

    Returns
    -------
    ApproximationError
    """
    rng = np.random.default_rng(seed)
    train = np.sort(rng.choice(len(X_train_unit), min(n_train, len(X_train_unit)), replace=False))
    test = np.sort(rng.choice(len(X_test_unit), min(n_test, len(X_test_unit)), replace=False))
    exact_spec = replace(spec, features=None)
    exact = exact_spec.matrix(X_train_unit[train])
    exact_test = exact_spec.matrix(X_test_unit[test], X_train_unit[train])
    F = features_of(spec, feature_map, X_train_unit[train])
    F_test = features_of(spec, feature_map, X_test_unit[test])
    approximate, approximate_test = F @ F.T, F_test @ F.T
    ridge = spec.ridge
    outputs = exact_test @ solve(exact, Y[train], ridge=ridge).coef
    approximate_outputs = approximate_test @ solve(approximate, Y[train], ridge=ridge).coef

    def relative(estimate: np.ndarray, reference: np.ndarray) -> float:
        return float(np.linalg.norm(estimate - reference) / np.linalg.norm(reference))

    return ApproximationError(
        n_train=len(train),
        n_test=len(test),
        kernel_train=relative(approximate, exact),
        kernel_test=relative(approximate_test, exact_test),
        outputs=relative(approximate_outputs, outputs),
        classes_agree=float(np.mean(approximate_outputs.argmax(axis=1) == outputs.argmax(axis=1))),
    )


@dataclass(frozen=True)
class AddedFeatures:
    r"""The random features of a kernel added to an exact one, carried by the rows.

    For a spec with an ``added`` kernel, :meth:`rows` gives each unit row its added
    network's features after its values, :math:`z = (x, \phi(x))`, so that every
    strategy solves the sum :math:`K(x, y) + c\,\phi(x)^T \phi(y)` from
    :meth:`~ntkdemo.spec.KernelSpec.matrix` of such rows as it solves an exact kernel
    (the features computed once per image, never per pair).

    Parameters
    ----------
    added : KernelSpec
        The added network's spec (the sum's ``added``, with ``features``).
    feature_map : RandomFeatures
        The added network, calibrated on the training images (:meth:`calibrated`).
    solver : FeatureSolver
        Its feature batches, calibration and error check.
    """

    added: KernelSpec
    feature_map: RandomFeatures
    solver: FeatureSolver

    @classmethod
    def calibrated(cls, spec: KernelSpec, X_train_unit: np.ndarray) -> AddedFeatures:
        """The added network of ``spec``, calibrated on the first training unit rows
        (:meth:`FeatureSolver.calibrated_map`)."""
        if spec.added is None:
            raise ValueError("this spec has no added kernel")
        solver = FeatureSolver(spec.added.feature_columns)
        return cls(spec.added, solver.calibrated_map(X_train_unit, spec.added), solver)

    def rows(
        self, X_unit: np.ndarray, progress: Callable[[Iterable], Iterable] | None = None
    ) -> np.ndarray:
        """The unit rows followed by their added features: ndarray of shape
        (n, :meth:`~ntkdemo.spec.KernelSpec.row_width`), float64."""
        values = X_unit.shape[1]
        carried = np.empty((len(X_unit), values + self.solver.columns))
        carried[:, :values] = X_unit
        batches = _feature_batches(
            self.feature_map, self.added, X_unit, self.solver.batch_rows, progress
        )
        for rows, batch in batches:
            carried[rows, values:] = batch
        return check_finite_result("the added features", carried)

    def approximation_error(
        self, X_train_rows: np.ndarray, X_test_rows: np.ndarray, Y: np.ndarray
    ) -> ApproximationError:
        """The error check of the added features against the added network's exact
        kernel (:meth:`FeatureSolver.approximation_error`), from rows that carry them
        (their values are read)."""
        values = X_train_rows.shape[1] - self.solver.columns
        error = self.solver.approximation_error(
            self.added,
            self.feature_map,
            X_train_rows[:, :values],
            X_test_rows[:, :values],
            Y,
        )
        return replace(error, part=f" of the added {self.added.network} features")

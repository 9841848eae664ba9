r"""scikit-learn estimators: the infinite network as ``NTKClassifier`` and ``NTKRegressor``.

Both are kernel regression with an infinitely wide ReLU network's kernel,

.. math:: f(x) = K(x, X)\,(K(X, X) + \lambda I)^{-1} Y

(``time=None``), or the same network after gradient-descent time ``t``,
:math:`f_t(x) = K(x, X) K^{-1}(I - e^{-t K/m}) Y` (:mod:`ntkdemo.dynamics`). They wrap
the ``cholesky`` strategy (:class:`ntkdemo.solvers.CholeskySolver`: the kernel of a
:class:`ntkdemo.spec.KernelSpec`, a Cholesky solve or, for a time, one ``eigh``), or
with ``features`` the ``features`` one (random features, the primal solved); nothing is
trained iteratively. With ``added_features`` the kernel is an exact one plus a second
network's random-features kernel (:attr:`ntkdemo.spec.KernelSpec.added`).
:class:`ConvKernelFeatures` is the random features themselves as a transformer, for
any scikit-learn pipeline.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import InvalidParameterError
from .kernels import unit_rows
from .kernels.mirror import mirrored
from .preprocess import flip_kernel
from .solvers import CholeskySolver, one_hot
from .solvers.features import AddedFeatures, FeatureSolver
from .spec import KernelSpec, image_reader


def _image_shape(image_shape, n_features: int, needs: str) -> tuple[int, ...]:
    """``image_shape`` as given, else square grey images of ``n_features`` values (what
    ``needs`` the shape names the parameter that does, for the message)."""
    if image_shape is not None:
        return tuple(image_shape)
    side = math.isqrt(n_features)
    if side * side != n_features:
        raise InvalidParameterError(
            f"{needs} needs image_shape=(H, W) or (H, W, C): {n_features} features are "
            "no square grey image"
        )
    return (side, side)


class NumericalFallbackWarning(UserWarning):
    """The solver had to add jitter: ``K(X, X) + ridge I`` was not positive definite."""


class _KernelModel(BaseEstimator):
    """Shared parameters, fitting and outputs of the two estimators."""

    def __init__(
        self,
        kernel="ntk",
        depth=1,
        w_std=1.0,
        b_std=0.0,
        ridge=0.0,
        time=None,
        architecture=None,
        image_shape=None,
        flip=False,
        shifts=0,
        features=None,
        feature_width=128,
        feature_dtype="float64",
        added_features=None,
        added_architecture="myrtle5",
        added_weight=1.0,
        added_flip=False,
        random_state=0,
    ):
        self.kernel = kernel
        self.depth = depth
        self.w_std = w_std
        self.b_std = b_std
        self.ridge = ridge
        self.time = time
        self.architecture = architecture
        self.image_shape = image_shape
        self.flip = flip
        self.shifts = shifts
        self.features = features
        self.feature_width = feature_width
        self.feature_dtype = feature_dtype
        self.added_features = added_features
        self.added_architecture = added_architecture
        self.added_weight = added_weight
        self.added_flip = added_flip
        self.random_state = random_state

    def _shape(self, n_features: int) -> tuple[int, ...]:
        """The images' shape where a convolutional architecture, ``flip``, ``shifts`` or
        ``added_features`` needs it (without ``image_shape``: square grey images), else
        ``()``."""
        if self.image_shape is not None:
            return tuple(self.image_shape)
        needs = image_reader(self.architecture, self.flip, self.shifts)
        if needs is None and self.added_features is not None:
            needs = f"added_features={self.added_features}"
        return () if needs is None else _image_shape(None, n_features, needs)

    def _spec(self, n_features: int) -> KernelSpec:
        """The estimator's parameters as a validated :class:`~ntkdemo.spec.KernelSpec`
        (for the images alone: ``flip`` is applied in :meth:`_fit_targets`)."""
        shape = self._shape(n_features)
        spec = KernelSpec(
            kernel=self.kernel,
            depth=self.depth,
            w_std=self.w_std,
            b_std=self.b_std,
            ridge=self.ridge,
            time=self.time,
            architecture=self.architecture,
            image_shape=shape,
            shifts=self.shifts,
            features=self.features,
            feature_width=self.feature_width,
            feature_seed=self.random_state,
            feature_dtype=self.feature_dtype,
        )
        if self.added_features is None:
            return spec
        return spec.with_added_features(
            self.added_features, self.added_architecture, self.added_weight, flip=self.added_flip
        ).for_images(shape)

    def _fit_targets(self, X, targets):
        spec, rows = self._spec(X.shape[1]), unit_rows(X, "X")
        if self.flip:  # the network trained on the images and their mirrors
            averaged, _ = flip_kernel(spec, spec.image_shape)
            if averaged is None:
                rows = np.vstack([rows, mirrored(rows, spec.image_shape)])
                targets = np.vstack([targets, targets])
            spec = averaged or spec
        self.added_features_ = None if spec.added is None else AddedFeatures.calibrated(spec, rows)
        if self.added_features_ is not None:
            rows = self.added_features_.rows(rows)
        strategy = (
            CholeskySolver() if spec.features is None else FeatureSolver(spec.feature_columns)
        )
        fitted = strategy.fit(rows, targets, spec)
        if fitted.solution.jitter:
            warnings.warn(fitted.solution.message, NumericalFallbackWarning, stacklevel=3)
        self.X_fit_ = X
        self.fitted_ = fitted
        if spec.features is None:
            self.dual_coef_ = fitted.solution.coef
        else:
            self.coef_ = fitted.solution.coef
        self.condition_number_ = fitted.solution.condition_number
        return self

    def _outputs(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        rows = unit_rows(X, "X")
        if self.added_features_ is not None:
            rows = self.added_features_.rows(rows)
        return self.fitted_.predict(rows)


class NTKClassifier(ClassifierMixin, _KernelModel):
    """Classify with the infinitely wide ReLU network trained on one-hot targets.

    Parameters
    ----------
    kernel : {"ntk", "nngp"}, default="ntk"
        ``"ntk"``: the whole network trained by gradient descent; ``"nngp"``: only its
        readout layer.
    depth : int, default=1
        Hidden ReLU layers; with the other defaults, depth 1 is the one-layer formula on
        L2-normalised inputs (:func:`ntkdemo.kernels.ntk`).
    w_std, b_std : float, default=1.0 and 0.0
        Weight and bias standard deviations (neural-tangents' conventions).
    ridge : float, default=0.0
        :math:`\\lambda` added to the diagonal; 0 is the trained network (interpolation).
    time : float, optional
        Gradient-descent time t (learning rate 1, neural-tangents' convention; inputs
        rescaled to ``x.x/d = 1``); None is the converged network.
    architecture : str, optional
        A convolutional network (``cnn-flatten-L``, ``cnn-gap-L``, ``myrtle5``, ...:
        :func:`ntkdemo.kernels.conv_kernels`) in place of the fully connected one.
    image_shape : tuple of int, optional
        ``(H, W)`` or ``(H, W, C)`` of one image for ``architecture`` and ``flip``
        (default: square grey images).
    flip : bool, default=False
        Train on each image and its left-right mirror: the kernel averaged over mirrors
        where it is mirror symmetric (the same network on the ``n`` images, ``ridge``
        being that of the ``2n``; :func:`ntkdemo.preprocess.flip_kernel`), else the
        mirrored images added (``dual_coef_`` then has ``2n`` rows).
    shifts : int, default=0
        The fully connected network averaged over its input cyclically shifted by
        ``0 .. shifts`` pixels down and right (and mirrored, with ``flip``):
        :attr:`ntkdemo.spec.KernelSpec.shifts`.
    features : int, optional
        Approximate the kernel of ``architecture`` by this many random features (twice
        as many for the NTK; :mod:`ntkdemo.kernels.features`), solved in the primal
        (:class:`ntkdemo.solvers.features.FeatureSolver`): for training sets whose exact
        kernel would take too long. An approximation: measure its error with
        :func:`ntkdemo.solvers.features.approximation_error`; a ``ridge`` helps.
    feature_width : int, default=128
        Channels of the random network's hidden layers but the last.
    feature_dtype : {"float64", "float32"}, default="float64"
        Precision the random network runs in (``"float32"``: about 1.5 times as fast).
    added_features : int, optional
        Add to the exact kernel ``added_weight`` times the kernel of this many random
        features of ``added_architecture`` (their kernel, width and seed those above):
        :math:`K(x, y) + c\\,\\phi(x)^T \\phi(y)`, the kernel of the two networks'
        outputs added (:meth:`ntkdemo.spec.KernelSpec.with_added_features`). An
        approximation in its added part: measure its error with
        ``added_features_.approximation_error``.
    added_architecture : str, default="myrtle5"
        The added network.
    added_weight : float, default=1.0
        ``c``; choose it on held-out training images (e.g. ``GridSearchCV``).
    added_flip : bool, default=False
        Average the added network over mirrors (each image's features the mean of its
        own and its mirror's; twice their time), as ``flip`` averages the exact kernel.
    random_state : int, default=0
        Seed of the random network of ``features`` or ``added_features``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    X_fit_ : ndarray of shape (n_samples, n_features)
        Training inputs (the kernel needs them to predict).
    dual_coef_ : ndarray of shape (n_samples, n_classes)
        :math:`A` with :math:`f(x) = K(x, X) A` (an exact kernel).
    coef_ : ndarray of shape (n_columns, n_classes)
        :math:`w` with :math:`f(x) = \\phi(x)^T w` (with ``features``).
    condition_number_ : float
        Condition estimate of the solved system.
    added_features_ : AddedFeatures or None
        The added network, calibrated on the training images (with ``added_features``).
    fitted_ : FittedKernel or FittedFeatures
        The fitted model of the ``cholesky`` strategy (unit training rows, solution), or
        of the ``features`` one.

    Examples
    --------
    >>> from ntkdemo import NTKClassifier
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.1], [0.9, 0.2], [0.1, 1.0], [0.2, 0.8]])
    >>> NTKClassifier().fit(X, [0, 0, 1, 1]).predict([[1.0, 0.0], [0.0, 1.0]])
    array([0, 1])
    """

    def fit(self, X, y):
        """Solve for the dual coefficients of one-hot targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        return self._fit_targets(X, one_hot(encoded, len(self.classes_)))

    def decision_function(self, X):
        """Kernel-regression outputs (not probabilities).

        Returns
        -------
        ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
            For two classes, output of ``classes_[1]`` minus that of ``classes_[0]``.
        """
        outputs = self._outputs(X)
        if len(self.classes_) == 2:
            return outputs[:, 1] - outputs[:, 0]
        return outputs

    def predict(self, X):
        """Class with the largest output.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        outputs = self._outputs(X)  # checks fitting before classes_ is read
        return self.classes_[outputs.argmax(axis=1)]


class NTKRegressor(RegressorMixin, _KernelModel):
    """Regress with the infinitely wide ReLU network trained on squared loss.

    Parameters and attributes are those of :class:`NTKClassifier`, without
    ``classes_``; ``dual_coef_`` has shape (n_samples, n_targets).

    Examples
    --------
    >>> from ntkdemo import NTKRegressor
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> NTKRegressor().fit(X, [1.0, 2.0, 3.0]).predict(X).round(12)
    array([1., 2., 3.])
    """

    def fit(self, X, y):
        """Solve for the dual coefficients.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)

        Returns
        -------
        self
        """
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
        self._single_target = y.ndim == 1
        return self._fit_targets(X, y.reshape(len(y), -1).astype(np.float64))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def predict(self, X):
        """Predicted targets, shape (n_samples,) or (n_samples, n_targets)."""
        outputs = self._outputs(X)
        return outputs[:, 0] if self._single_target else outputs


class ConvKernelFeatures(TransformerMixin, BaseEstimator):
    """Random features whose inner products approximate a network's NNGP or NTK, as a
    scikit-learn transformer (:func:`ntkdemo.kernels.conv_features`).

    ``make_pipeline(ConvKernelFeatures(architecture="myrtle5"), RidgeClassifier())`` is
    ridge regression on the approximate kernel. The features are an approximation: the
    drawn network's kernel, calibrated on the first ``calibration`` training images
    (:meth:`ntkdemo.kernels.features.RandomFeatures.calibrate`).

    Parameters
    ----------
    architecture : str or sequence of layers, default="myrtle5"
        A network with a ``GlobalAvgPool`` read-out, or ``Dense`` layers after a
        ``Flatten``.
    kernel : {"ntk", "nngp"}, default="ntk"
    dimension : int, default=4096
        NNGP columns; the NTK has twice as many.
    width : int, default=128
        Channels of the random network's hidden layers but the last.
    w_std, b_std : float, default=1.0 and 0.0
    image_shape : tuple of int, optional
        ``(H, W)`` or ``(H, W, C)`` of one image (default: square grey images).
    calibration : int, default=32
        Training images whose exact kernel sets the features' scale (0: none).
    dtype : {"float64", "float32"}, default="float64"
        Precision the random network runs in (float32: about 1.5 times as fast); the
        features are float64 either way.
    random_state : int, default=0
        Seed of the random network.

    Attributes
    ----------
    feature_map_ : RandomFeatures
        The drawn network.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import RidgeClassifier
    >>> from sklearn.pipeline import make_pipeline
    >>> from ntkdemo import ConvKernelFeatures
    >>> X = np.random.default_rng(0).random((20, 64))
    >>> model = make_pipeline(
    ...     ConvKernelFeatures(architecture="cnn-gap-1", dimension=256), RidgeClassifier()
    ... )
    >>> model.fit(X, [0, 1] * 10).predict(X[:4]).shape
    (4,)
    """

    def __init__(
        self,
        architecture="myrtle5",
        kernel="ntk",
        dimension=4096,
        width=128,
        w_std=1.0,
        b_std=0.0,
        image_shape=None,
        calibration=32,
        dtype="float64",
        random_state=0,
    ):
        self.architecture = architecture
        self.kernel = kernel
        self.dimension = dimension
        self.width = width
        self.w_std = w_std
        self.b_std = b_std
        self.image_shape = image_shape
        self.calibration = calibration
        self.dtype = dtype
        self.random_state = random_state

    def fit(self, X, y=None):
        """Draw the random network for the images' shape and calibrate it on ``X``.

        Returns
        -------
        self
        """
        from .kernels.features import RandomFeatures

        X = validate_data(self, X)
        if self.kernel not in ("ntk", "nngp"):
            raise InvalidParameterError(f"kernel must be 'ntk' or 'nngp', got {self.kernel!r}")
        shape = _image_shape(self.image_shape, X.shape[1], f"architecture {self.architecture!r}")
        self.feature_map_ = RandomFeatures(
            self.architecture,
            shape,
            dimension=self.dimension,
            width=self.width,
            w_std=self.w_std,
            b_std=self.b_std,
            seed=self.random_state,
            dtype=self.dtype,
        )
        if self.calibration:
            self.feature_map_.calibrate(X, self.calibration)
        return self

    def transform(self, X):
        """The features of ``X``.

        Returns
        -------
        ndarray of shape (n_samples, dimension), or (n_samples, 2 * dimension) for the NTK
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        nngp, ntk = self.feature_map_.transform(X)
        return ntk if self.kernel == "ntk" else nngp

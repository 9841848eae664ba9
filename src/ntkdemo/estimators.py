r"""scikit-learn estimators: the infinite network as ``NTKClassifier`` and ``NTKRegressor``.

Both are kernel regression with an infinitely wide ReLU network's kernel,

.. math:: f(x) = K(x, X)\,(K(X, X) + \lambda I)^{-1} Y

(``time=None``), or the same network after gradient-descent time ``t``,
:math:`f_t(x) = K(x, X) K^{-1}(I - e^{-t K/m}) Y` (:mod:`ntkdemo.dynamics`). They wrap
the ``cholesky`` strategy (:class:`ntkdemo.solvers.CholeskySolver`: the kernel of a
:class:`ntkdemo.spec.KernelSpec`, a Cholesky solve or, for a time, one ``eigh``);
nothing is trained iteratively.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import InvalidParameterError
from .kernels import unit_rows
from .kernels.mirror import mirrored
from .preprocess import flip_kernel
from .solvers import CholeskySolver, one_hot
from .spec import KernelSpec


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

    def _shape(self, n_features: int) -> tuple[int, ...]:
        """The images' shape where a convolutional architecture or ``flip`` needs it
        (without ``image_shape``: square grey images), else ``()``."""
        if self.image_shape is not None:
            return tuple(self.image_shape)
        if self.architecture is None and not self.flip:
            return ()
        side = math.isqrt(n_features)
        if side * side != n_features:
            needs = f"architecture {self.architecture!r}" if self.architecture else "flip=True"
            raise InvalidParameterError(
                f"{needs} needs image_shape=(H, W) or (H, W, C): {n_features} features are "
                "no square grey image"
            )
        return (side, side)

    def _spec(self, n_features: int) -> KernelSpec:
        """The estimator's parameters as a validated :class:`~ntkdemo.spec.KernelSpec`
        (for the images alone: ``flip`` is applied in :meth:`_fit_targets`)."""
        return KernelSpec(
            kernel=self.kernel,
            depth=self.depth,
            w_std=self.w_std,
            b_std=self.b_std,
            ridge=self.ridge,
            time=self.time,
            architecture=self.architecture,
            image_shape=self._shape(n_features),
        )

    def _fit_targets(self, X, targets):
        spec, rows = self._spec(X.shape[1]), unit_rows(X, "X")
        if self.flip:  # the network trained on the images and their mirrors
            averaged, _ = flip_kernel(spec, spec.image_shape)
            if averaged is None:
                rows = np.vstack([rows, mirrored(rows, spec.image_shape)])
                targets = np.vstack([targets, targets])
            spec = averaged or spec
        fitted = CholeskySolver().fit(rows, targets, spec)
        if fitted.solution.jitter:
            warnings.warn(fitted.solution.message, NumericalFallbackWarning, stacklevel=3)
        self.X_fit_ = X
        self.fitted_ = fitted
        self.dual_coef_ = fitted.solution.coef
        self.condition_number_ = fitted.solution.condition_number
        return self

    def _outputs(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return self.fitted_.predict(unit_rows(X, "X"))


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

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    X_fit_ : ndarray of shape (n_samples, n_features)
        Training inputs (the kernel needs them to predict).
    dual_coef_ : ndarray of shape (n_samples, n_classes)
        :math:`A` with :math:`f(x) = K(x, X) A`.
    condition_number_ : float
        Condition estimate of the solved system.
    fitted_ : FittedKernel
        The fitted model of the ``cholesky`` strategy (unit training rows, solution).

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

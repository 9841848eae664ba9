r"""Predictions of the infinite network after gradient-descent time t, in closed form.

Gradient flow on the loss :math:`\mathcal{L} = \frac{1}{2m}\sum_{i,c}(f_c(x_i) - y_{ic})^2`
with learning rate :math:`\eta`, from a network whose mean output is zero, moves the mean
prediction as (Lee et al. 2019, "Wide Neural Networks of Any Depth Evolve as Linear
Models Under Gradient Descent")

.. math::

    f_t(x) = K(x, X)\, K^{-1}\big(I - e^{-\eta t K / m}\big)\, Y,

where :math:`K = K(X, X)` and :math:`m` = ``y_train.size`` (training points times outputs),
the convention of neural-tangents' ``predict.gradient_descent_mse_ensemble``. With the
NTK this is the whole network trained; with the NNGP only its readout layer. ``t = 0``
gives the zero function and ``t = inf`` kernel regression ``K(x,X) K^{-1} Y``.

One eigendecomposition :math:`K = V \Lambda V^\top` serves every t:

.. math::

    K^{-1}(I - e^{-\eta t K/m})
    = V\,\mathrm{diag}\big(-\mathrm{expm1}(-\eta t \lambda/m)/\lambda\big)V^\top,

with a null eigenvalue contributing nothing (for a PSD kernel :math:`K(x, X)v = 0` when
:math:`Kv = 0`). Eigenvalues at or below :math:`n\,\epsilon\,\lambda_{max}` (the
round-off of ``eigh``, as in ``numpy.linalg.matrix_rank``) count as null: their
computed values are noise, and dividing by them would blow noise up to :math:`10^{30}`
(identical training images would no longer get identical predictions). A kernel with
an eigenvalue below :math:`-\sqrt{\epsilon}\,\lambda_{max}` is not PSD and is refused.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidInputError, InvalidParameterError
from .validation import (
    check_finite_result,
    check_kernel_matrix,
    check_matrix,
    check_nonnegative_float,
    check_positive_int,
    check_targets,
)


class GradientDescentDynamics:
    """Closed-form gradient-descent predictions from one cached ``eigh`` of ``K(X, X)``.

    Parameters
    ----------
    k_train_train : ndarray of shape (n_train, n_train)
        Symmetric PSD kernel of the training inputs (NTK or NNGP).
    y_train : ndarray of shape (n_train, n_outputs) or (n_train,)
        Targets.
    learning_rate : float, default=1.0
        :math:`\\eta`.
    """

    def __init__(self, k_train_train: np.ndarray, y_train: np.ndarray, learning_rate: float = 1.0):
        self.learning_rate = check_nonnegative_float("learning_rate", learning_rate)
        k = check_kernel_matrix(k_train_train)
        y = check_targets("y_train", y_train, k.shape[0])
        eigenvalues, self.eigenvectors_ = np.linalg.eigh(k)
        self.eigenvalues_ = null_eigenvalues_cut(eigenvalues)
        self.projected_targets_ = self.eigenvectors_.T @ y.reshape(len(y), -1)
        self.normalisation_ = y.size
        self._output_shape = y.shape[1:]

    def dual_coefficients(self, t: float) -> np.ndarray:
        r"""The weights :math:`A_t = K^{-1}(I - e^{-\eta t K/m})Y`, shape (n_train, n_outputs)."""
        rate = self.learning_rate * self.eigenvalues_ / self.normalisation_
        positive = self.eigenvalues_ > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            filtered = np.where(
                positive, -np.expm1(-rate * t) / np.where(positive, self.eigenvalues_, 1.0), 0.0
            )
        return self.eigenvectors_ @ (filtered[:, None] * self.projected_targets_)

    def discrete_dual_coefficients(self, steps: int) -> np.ndarray:
        r"""Weights after ``steps`` discrete gradient-descent steps of size :math:`\eta`.

        The linearised network's gradient descent
        :math:`f_{s+1}(X) = f_s(X) - \frac{\eta}{m} K (f_s(X) - Y)` gives
        :math:`A_s = K^{-1}\big(I - (I - \eta K/m)^s\big) Y`, which tends to
        :meth:`dual_coefficients` at ``t = eta * steps`` as :math:`\eta \to 0`.
        This is what a finite network trained with that step size approaches as its
        width grows.
        """
        steps = check_positive_int("steps", steps)
        rate = self.learning_rate * self.eigenvalues_ / self.normalisation_
        if rate[-1] >= 2:
            limit = 2 * self.normalisation_ / self.eigenvalues_[-1]
            raise InvalidParameterError(
                f"learning_rate {self.learning_rate:g} is past the stability limit "
                f"2 m / lambda_max = {limit:.4g} of discrete gradient descent (it diverges); "
                f"use a learning_rate below {limit:.4g}"
            )
        positive = self.eigenvalues_ > 0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            stable = rate < 1
            learned = np.where(
                stable,
                -np.expm1(steps * np.log1p(-np.where(stable, rate, 0.0))),
                1.0 - (1.0 - rate) ** steps,
            )
            filtered = np.where(positive, learned / np.where(positive, self.eigenvalues_, 1.0), 0.0)
        return self.eigenvectors_ @ (filtered[:, None] * self.projected_targets_)

    def condition_number(self) -> float:
        r""":math:`\lambda_{max} / \lambda_{min}` of ``K`` (inf when it is singular, which
        gradient descent tolerates: null directions are never learned)."""
        smallest, largest = self.eigenvalues_[0], self.eigenvalues_[-1]
        return float(largest / smallest) if smallest > 0 else float("inf")

    def describe(self, t: float) -> str:
        """One line naming the network these weights are."""
        return (
            f"infinite network after gradient-descent time t = {float(t):g} "
            f"(learning rate {self.learning_rate:g}, m = {self.normalisation_})"
        )

    def predict(self, k_test_train: np.ndarray, t) -> np.ndarray:
        """Mean predictions at time(s) ``t``.

        Parameters
        ----------
        k_test_train : ndarray of shape (n_test, n_train)
        t : float, None or array-like of float
            Times >= 0; None or ``inf`` is the end of training.

        Returns
        -------
        ndarray
            Shape (n_test, *outputs) for a scalar t, (len(t), n_test, *outputs) for an array.
        """
        times = check_times(t)
        k_test_train = check_matrix("k_test_train", k_test_train, n_features=len(self.eigenvalues_))
        with np.errstate(over="ignore", invalid="ignore"):
            outputs = np.stack(
                [k_test_train @ self.dual_coefficients(time) for time in times.ravel()]
            )
        check_finite_result("the predictions", outputs)
        outputs = outputs.reshape(len(times.ravel()), k_test_train.shape[0], *self._output_shape)
        return outputs[0] if times.ndim == 0 else outputs


def gradient_descent_mean(
    k_train_train: np.ndarray,
    k_test_train: np.ndarray,
    y_train: np.ndarray,
    t=None,
    learning_rate: float = 1.0,
) -> np.ndarray:
    """Mean prediction of the infinite network after training time ``t``.

    Equals neural-tangents' ``predict.gradient_descent_mse_ensemble(kernel_fn, x_train,
    y_train, learning_rate=learning_rate, diag_reg=0)(t, x_test, get=...)`` when the
    kernels are that ``kernel_fn``'s (``get='ntk'`` or ``'nngp'``).

    Parameters
    ----------
    k_train_train : ndarray of shape (n_train, n_train)
    k_test_train : ndarray of shape (n_test, n_train)
    y_train : ndarray of shape (n_train, n_outputs)
    t : float, None or array-like, default=None
        Training time(s); None or inf for the converged network, also inside a list
        (``t=[1, 100, None]``).
    learning_rate : float, default=1.0

    Returns
    -------
    ndarray of shape (n_test, n_outputs), or (len(t), n_test, n_outputs) for several t
    """
    return GradientDescentDynamics(k_train_train, y_train, learning_rate).predict(k_test_train, t)


def null_eigenvalues_cut(eigenvalues: np.ndarray) -> np.ndarray:
    r"""Ascending eigenvalues of a PSD kernel with round-off set to exactly 0.

    Those at or below :math:`n\,\epsilon\,\lambda_{max}` become 0 (module docstring).

    Raises
    ------
    InvalidInputError
        If the kernel is not positive semi-definite: its largest eigenvalue is not
        positive, or one is below :math:`-\sqrt{\epsilon}\,\lambda_{max}`.
    """
    largest = float(eigenvalues[-1])
    if not largest > 0 or eigenvalues[0] < -np.sqrt(np.finfo(float).eps) * largest:
        raise InvalidInputError(
            f"K is not positive semi-definite (eigenvalues from {eigenvalues[0]:.3g} to "
            f"{largest:.3g}); a kernel matrix K(X, X) has none below 0: pass the NTK or "
            "NNGP of the training inputs"
        )
    cutoff = len(eigenvalues) * np.finfo(float).eps * largest
    return np.where(eigenvalues > cutoff, eigenvalues, 0.0)


def check_times(t) -> np.ndarray:
    """Times as a float array (0-d for a scalar); None becomes inf.

    Raises
    ------
    InvalidParameterError
        If a time is negative or NaN.
    """
    try:
        given = [np.inf if v is None else v for v in t] if isinstance(t, list | tuple) else t
        times = np.asarray(np.inf if given is None else given)
    except ValueError:
        raise InvalidParameterError(
            f"training time t must be a number or a list, got {t!r}"
        ) from None
    if times.dtype.kind not in "biuf" or times.size == 0:
        raise InvalidParameterError(
            f"training time t must be a real number >= 0, None/inf, or a non-empty list "
            f"of them, got {t!r}"
        )
    times = times.astype(np.float64)
    if np.isnan(times).any() or (times < 0).any():
        raise InvalidParameterError(
            f"training time t must be >= 0 (inf or None for convergence), got {t!r}"
        )
    return times

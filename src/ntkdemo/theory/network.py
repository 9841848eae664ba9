r"""Finite one-hidden-layer ReLU networks, as evidence for the kernel. Nothing else uses them.

The network, in the NTK parameterisation of neural-tangents' ``stax.serial(Dense(m),
Relu(), Dense(1))`` with unit weight scales and no bias:

.. math:: f(x) = \frac{1}{\sqrt m}\sum_{r=1}^m v_r\,\mathrm{relu}(a_r(x)),\qquad
          a_r(x) = \frac{u_r \cdot x}{\sqrt d},\qquad u_r \sim N(0, I_d),\ v_r \sim N(0, 1).

Its parameter gradients give the empirical NTK exactly:

.. math:: \hat\Theta(x, y) = \frac{1}{m}\sum_r \Big[\mathrm{relu}(a_r(x))\,\mathrm{relu}(a_r(y))
          + v_r^2\,\mathbf 1[a_r(x) > 0]\,\mathbf 1[a_r(y) > 0]\,\frac{x \cdot y}{d}\Big],

whose expectation is ``fc_kernels(X, Y, depth=1)[1]``; the error of a draw falls as
:math:`m^{-1/2}`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..validation import check_positive_int


@dataclass
class OneHiddenLayerNet:
    """Parameters of a width-m network with ``n_outputs`` readouts.

    Attributes
    ----------
    hidden : ndarray of shape (d, m)
        :math:`u` (columns are hidden units).
    readout : ndarray of shape (m, n_outputs)
        :math:`v`.
    """

    hidden: np.ndarray
    readout: np.ndarray

    @classmethod
    def initialise(
        cls,
        n_features: int,
        width: int,
        n_outputs: int,
        rng: np.random.Generator,
        *,
        symmetric: bool = False,
    ) -> OneHiddenLayerNet:
        """Standard normal parameters.

        With ``symmetric=True`` hidden units come in pairs with equal input weights and
        opposite readouts, so the initial output is exactly 0 (as the infinite network's
        mean), while the NTK's distribution is unchanged in the large-width limit.
        """
        width = check_positive_int("width", width)
        if symmetric:
            half = rng.standard_normal((n_features, (width + 1) // 2))
            readout_half = rng.standard_normal((half.shape[1], n_outputs))
            return cls(
                np.hstack([half, half])[:, :width], np.vstack([readout_half, -readout_half])[:width]
            )
        return cls(
            rng.standard_normal((n_features, width)), rng.standard_normal((width, n_outputs))
        )

    @property
    def width(self) -> int:
        """Number of hidden units m."""
        return self.hidden.shape[1]

    def _pre_activations(self, X: np.ndarray) -> np.ndarray:
        return X @ self.hidden / np.sqrt(X.shape[1])

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Outputs of shape (n, n_outputs)."""
        return np.maximum(self._pre_activations(X), 0) @ self.readout / np.sqrt(self.width)

    def empirical_ntk(self, X: np.ndarray, Y: np.ndarray | None = None) -> np.ndarray:
        """Exact inner products of parameter gradients (first output), shape (len(X), len(Y))."""
        Y = X if Y is None else Y
        a_x, a_y = self._pre_activations(X), self._pre_activations(Y)
        readout_term = np.maximum(a_x, 0) @ np.maximum(a_y, 0).T
        weights = self.readout[:, 0] ** 2
        hidden_term = ((a_x > 0) * weights) @ (a_y > 0).T * (X @ Y.T / X.shape[1])
        return (readout_term + hidden_term) / self.width

    def gradients(
        self, X: np.ndarray, output_gradient_of: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        r"""Gradients of a loss with respect to ``hidden`` and ``readout``.

        ``output_gradient_of(f)`` maps the outputs :math:`f(X)`, shape (n, n_outputs), to
        :math:`\partial L / \partial f`; back-propagation does the rest.
        """
        pre = self._pre_activations(X)
        hidden_out = np.maximum(pre, 0)
        scale = 1 / np.sqrt(self.width)
        output_gradient = output_gradient_of(hidden_out @ self.readout * scale)
        grad_readout = hidden_out.T @ output_gradient * scale
        grad_pre = (output_gradient @ self.readout.T) * (pre > 0) * scale
        return X.T @ grad_pre / np.sqrt(X.shape[1]), grad_readout

    def gradient_step(self, X: np.ndarray, Y: np.ndarray, step: float) -> None:
        r"""One full-batch gradient step on :math:`\frac{1}{2\,Y.size}\sum (f(X) - Y)^2`."""
        grad_hidden, grad_readout = self.gradients(X, lambda f: (f - Y) / Y.size)
        self.readout -= step * grad_readout
        self.hidden -= step * grad_hidden


def train_network(
    net: OneHiddenLayerNet, X: np.ndarray, Y: np.ndarray, *, learning_rate: float, steps: int
) -> OneHiddenLayerNet:
    r"""Full-batch gradient descent: ``steps`` steps of size ``learning_rate``.

    The loss is :math:`\frac{1}{2\,Y.size}\sum(f - Y)^2`, so after ``steps`` steps the
    network has trained for time ``t = learning_rate * steps`` in the convention of
    :mod:`ntkdemo.dynamics`. Modifies and returns ``net``.
    """
    for _ in range(check_positive_int("steps", steps)):
        net.gradient_step(X, Y, learning_rate)
    return net


def train_network_sgd(
    net: OneHiddenLayerNet,
    X: np.ndarray,
    Y: np.ndarray,
    *,
    learning_rate: float,
    epochs: int,
    rng: np.random.Generator,
    batch_size: int = 64,
    momentum: float = 0.9,
) -> OneHiddenLayerNet:
    r"""The usual practice: softmax cross-entropy, minibatch SGD with heavy-ball momentum.

    Each epoch visits the rows in a new random order in batches of ``batch_size``; the
    loss of a batch is :math:`-\frac{1}{b}\sum_i \log \mathrm{softmax}(f(x_i))_{y_i}`
    for one-hot ``Y``, and the update :math:`u \leftarrow \mu u - \eta \nabla`,
    :math:`\theta \leftarrow \theta + u`. Not kernel regression: it shows how far the
    practice moves from the kernel picture. Modifies and returns ``net``.
    """
    epochs = check_positive_int("epochs", epochs)
    velocity_hidden, velocity_readout = np.zeros_like(net.hidden), np.zeros_like(net.readout)

    for _ in range(epochs):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            batch = order[start : start + batch_size]
            grad_hidden, grad_readout = net.gradients(
                X[batch], partial(_cross_entropy_gradient, targets=Y[batch])
            )
            velocity_hidden = momentum * velocity_hidden - learning_rate * grad_hidden
            velocity_readout = momentum * velocity_readout - learning_rate * grad_readout
            net.hidden += velocity_hidden
            net.readout += velocity_readout
    return net


def _cross_entropy_gradient(f: np.ndarray, targets: np.ndarray) -> np.ndarray:
    r""":math:`(\mathrm{softmax}(f) - Y) / b`: the gradient of the mean cross-entropy."""
    shifted = np.exp(f - f.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True) - targets) / len(targets)

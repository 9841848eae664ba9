r"""Elementwise nonlinearities as layer values, each carrying its kernel rule (its *dual*).

A nonlinearity :math:`\phi` after a random ``Dense`` or ``Conv`` layer sees, at each pair
of positions of two images, Gaussian pre-activations :math:`(u, v)` with variances
:math:`q_a, q_b` and covariance :math:`K`. Its kernel rule maps them to

.. math::

    K' = \mathbb{E}[\phi(u)\phi(v)], \qquad
    \dot K = \mathbb{E}[\phi'(u)\phi'(v)], \qquad \Theta' = \Theta\,\dot K

(Lee et al. 2018; Jacot et al. 2018), as neural-tangents' ``stax`` does ('ntk'
parameterisation). Each class below writes that map once, in :meth:`Activation.dual`,
as whole-array operations in a NumPy-compatible module ``xp``; the array fold of
:mod:`.conv_arrays` applies it to every position pair. Positions of zero variance (a
black border at ``b_std = 0``) give finite values, never NaN.

The arc-cosine step shared by the ReLU family (Cho & Saul 2009) takes its angle from
:func:`arc_cosine_angle`, with the one rounding rule of every such step: an angle within
rounding of 0 is 0 (:func:`~.ntk.snap_tolerance`).

Adding an activation is one class here with its dual, its name in ``__all__`` and its
word in :data:`WORDS`, and its reference case in
``tests/data/make_activation_reference.py`` (``docs/extending.md``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .ntk import snap_tolerance

__all__ = [
    "ABRelu",
    "Abs",
    "Activation",
    "Erf",
    "Gelu",
    "Identity",
    "LayerNorm",
    "LeakyRelu",
    "Relu",
    "UNSNAPPED",
    "WORDS",
    "arc_cosine_angle",
]


UNSNAPPED = 1.0 - snap_tolerance(np.float64)
r"""The arc-cosine steps' :math:`1 - \epsilon`: :math:`q_a q_b` is taken as
:math:`q_a q_b (1 - \epsilon)`, so an angle within rounding of 0 (a covariance an ulp
below :math:`\sqrt{q_a q_b}`, two identical positions) is 0: the one rounding rule of
every arc-cosine step, here and in the compiled and fused folds."""


class Activation(ABC):
    """A layer acting on each position of Gaussian pre-activations alone, given their
    variances: an elementwise nonlinearity, or a normalisation over the channels
    (:class:`LayerNorm`). Its kernel rule is :meth:`dual`."""

    preserves_gaussian: ClassVar[bool] = False
    """Whether its output is Gaussian again (then an activation may follow it directly)."""

    @abstractmethod
    def dual(
        self, xp: Any, nngp: Any, ntk: Any, variance_a: Any, variance_b: Any
    ) -> tuple[Any, Any]:
        r"""The layer's NNGP :math:`K'` and NTK :math:`\Theta \dot K` from its input's.

        Parameters
        ----------
        xp : module
            ``numpy`` or ``cupy``.
        nngp, ntk : array
            :math:`K` and :math:`\Theta` of the input, one entry per position pair.
        variance_a, variance_b : array
            :math:`q_a` and :math:`q_b` of each entry's two positions, broadcastable.

        Returns
        -------
        nngp, ntk : array
        """

    def finite(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        r""":math:`\phi(z)` and :math:`\phi'(z)` on the pre-activations of a finite network
        (the random features of :mod:`.features`), or None for a layer that does not act
        entry by entry.

        Parameters
        ----------
        z : ndarray
            Pre-activations, float64, any shape.

        Returns
        -------
        values, slopes : ndarray of the shape of ``z``, or None
        """
        return None


def arc_cosine_angle(xp: Any, nngp: Any, variance_a: Any, variance_b: Any) -> tuple[Any, Any]:
    r"""The sine term and angle of the arc-cosine kernels.

    :math:`s = \sqrt{(q_a q_b (1 - \epsilon) - K^2)_+}` and
    :math:`\theta = \operatorname{arctan2}(s, K)`, with :math:`\epsilon` the
    :func:`~.ntk.snap_tolerance`: a covariance within rounding of
    :math:`\sqrt{q_a q_b}` (two identical positions) gives :math:`\theta = 0` exactly,
    where the angle's unbounded derivative would turn an ulp into :math:`10^{-8}`.
    Zero variances give :math:`s = 0, \theta = 0`.
    """
    sine = xp.sqrt(xp.maximum(variance_a * variance_b * UNSNAPPED - nngp * nngp, 0.0))
    return sine, xp.arctan2(sine, nngp)


@dataclass(frozen=True)
class ABRelu(Activation):
    r""":math:`\phi(x) = a \min(x, 0) + b \max(x, 0)` (``stax.ABRelu(a, b)``).

    With :math:`s, \theta` of :func:`arc_cosine_angle`,

    .. math::

        K' = \frac{(a - b)^2 s + \big((a^2 + b^2)\pi - (a - b)^2\theta\big) K}{2\pi},
        \qquad
        \dot K = \frac{(a^2 + b^2)\pi - (a - b)^2\theta}{2\pi}:

    the ReLU's arc-cosine kernels (:math:`a = 0, b = 1`) of :math:`\phi(x) = b\,
    \mathrm{relu}(x) - a\,\mathrm{relu}(-x)`, whose cross terms are the same kernels at
    :math:`-K`.
    """

    a: float
    b: float

    def dual(self, xp, nngp, ntk, variance_a, variance_b):
        sine, angle = arc_cosine_angle(xp, nngp, variance_a, variance_b)
        a, b = float(self.a), float(self.b)
        gap, total = (a - b) ** 2, a * a + b * b
        derivative = (total * math.pi - gap * angle) / (2 * math.pi)
        return (gap * sine) / (2 * math.pi) + derivative * nngp, ntk * derivative

    def finite(self, z):
        a, b = float(self.a), float(self.b)
        slopes = np.where(z > 0, z.dtype.type(b), z.dtype.type(a))
        return slopes * z, slopes


@dataclass(frozen=True)
class Relu(ABRelu):
    """The ReLU, :math:`\\max(x, 0)` (``stax.Relu``): :class:`ABRelu` with ``a = 0, b = 1``;
    its NNGP is never below 0 (rounding at antipodes could leave -1e-32)."""

    a: float = field(default=0.0, init=False)
    b: float = field(default=1.0, init=False)

    def dual(self, xp, nngp, ntk, variance_a, variance_b):
        nngp_next, ntk_next = super().dual(xp, nngp, ntk, variance_a, variance_b)
        return xp.maximum(nngp_next, 0.0), ntk_next


@dataclass(frozen=True)
class LeakyRelu(ABRelu):
    r""":math:`\max(x, \alpha x)` for :math:`0 \le \alpha \le 1` (``stax.LeakyRelu``):
    :class:`ABRelu` with ``a = alpha, b = 1``."""

    a: float = field(default=0.0, init=False)
    b: float = field(default=1.0, init=False)
    alpha: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", float(self.alpha))


@dataclass(frozen=True)
class Abs(ABRelu):
    """:math:`|x|` (``stax.Abs``): :class:`ABRelu` with ``a = -1, b = 1``."""

    a: float = field(default=-1.0, init=False)
    b: float = field(default=1.0, init=False)


@dataclass(frozen=True)
class Erf(Activation):
    r""":math:`\phi(x) = a \operatorname{erf}(b x) + c` (``stax.Erf(a, b, c)``).

    With :math:`r_a = 1 + 2 b^2 q_a` and :math:`r_b = 1 + 2 b^2 q_b` (Williams 1997),

    .. math::

        K' = \frac{2 a^2}{\pi} \arcsin\frac{2 b^2 K}{\sqrt{r_a r_b}} + c^2, \qquad
        \dot K = \frac{4 a^2 b^2}{\pi \sqrt{r_a r_b - 4 b^4 K^2}}

    (:math:`\mathbb{E}[\operatorname{erf}(bu)] = 0`, so :math:`c` adds :math:`c^2` alone).
    The arcsine's argument is clipped to [-1, 1] and the square root's to >= 1 (its
    exact value is :math:`\ge r_a + r_b - 1 \ge 1`): rounding never gives NaN.
    """

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def dual(self, xp, nngp, ntk, variance_a, variance_b):
        a, b, c = float(self.a), float(self.b), float(self.c)
        scale = 2.0 * b * b
        products = (1.0 + scale * variance_a) * (1.0 + scale * variance_b)
        argument = xp.clip(scale * nngp / xp.sqrt(products), -1.0, 1.0)
        nngp_next = (2.0 * a * a / math.pi) * xp.arcsin(argument) + c * c
        remaining = xp.maximum(products - (scale * nngp) ** 2, 1.0)
        derivative = (2.0 * a * a * scale / math.pi) / xp.sqrt(remaining)
        return nngp_next, ntk * derivative

    def finite(self, z):
        from scipy.special import erf

        a, b, c = float(self.a), float(self.b), float(self.c)
        slopes = (2.0 * a * b / math.sqrt(math.pi)) * np.exp(-((b * z) ** 2))
        return a * erf(b * z) + c, slopes


@dataclass(frozen=True)
class Gelu(Activation):
    r""":math:`\phi(x) = x\,\Phi(x)`, :math:`\Phi` the standard normal CDF (``stax.Gelu``).

    With :math:`\Delta = \sqrt{(1 + q_a)(1 + q_b) - K^2}` and
    :math:`\beta = \operatorname{arctan2}(K, \Delta)` (Tsuchida, Pearce and van der
    Heide 2021, "Avoiding Kernel Fixed Points: Computing with ELU and GELU Infinite
    Networks"),

    .. math::

        K' = \frac{K}{4} + \frac{1}{2\pi}\Big(K\beta
             + \frac{K^2 + q_a q_b \Delta^2}{(1 + q_a)(1 + q_b)\,\Delta}\Big),

        \dot K = \frac14 + \frac{\beta}{2\pi} + \frac{K}{2\pi\Delta}\Big(
             \frac{1}{\Delta^2} + \frac{1 - q_a q_b}{(1 + q_a)(1 + q_b)} + 1\Big).

    :math:`\Delta^2 \ge 1 + q_a + q_b \ge 1` exactly, so it is taken as at least 1.
    """

    def dual(self, xp, nngp, ntk, variance_a, variance_b):
        shifted = (1.0 + variance_a) * (1.0 + variance_b)
        products = variance_a * variance_b
        delta_squared = xp.maximum(shifted - nngp * nngp, 1.0)
        delta = xp.sqrt(delta_squared)
        angle = xp.arctan2(nngp, delta)
        spread = (nngp * nngp + products * delta_squared) / (shifted * delta)
        nngp_next = nngp / 4 + (nngp * angle + spread) / (2 * math.pi)
        slope = 1.0 / delta_squared + (1.0 - products) / shifted + 1.0
        derivative = 0.25 + angle / (2 * math.pi) + nngp * slope / (2 * math.pi * delta)
        return nngp_next, ntk * derivative

    def finite(self, z):
        from scipy.special import ndtr

        cdf = ndtr(z)
        return z * cdf, cdf + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


@dataclass(frozen=True)
class LayerNorm(Activation):
    r"""Each position's pre-activations divided by their standard deviation over the
    channels (``stax.LayerNorm(axis=-1, eps=1e-12)``): in the infinite-width limit the
    channels' mean is 0 and their variance :math:`q`, so

    .. math:: K' = \frac{K}{\sqrt{(q_a + \epsilon)(q_b + \epsilon)}}, \qquad
              \Theta' = \frac{\Theta}{\sqrt{(q_a + \epsilon)(q_b + \epsilon)}},

    and the output is Gaussian again. ``eps`` keeps a zero variance finite.
    """

    eps: float = 1e-12

    preserves_gaussian: ClassVar[bool] = True

    def dual(self, xp, nngp, ntk, variance_a, variance_b):
        scale = 1.0 / xp.sqrt((variance_a + self.eps) * (variance_b + self.eps))
        return nngp * scale, ntk * scale


@dataclass(frozen=True)
class Identity(Activation):
    """:math:`\\phi(x) = x` (``stax.Identity``): the kernels pass unchanged."""

    preserves_gaussian: ClassVar[bool] = True

    def dual(self, xp, nngp, ntk, variance_a, variance_b):
        return nngp, ntk

    def finite(self, z):
        return z, np.ones_like(z)


WORDS: dict[str, type[Activation]] = {
    "relu": Relu,
    "abrelu": ABRelu,
    "leaky-relu": LeakyRelu,
    "abs": Abs,
    "erf": Erf,
    "gelu": Gelu,
    "layernorm": LayerNorm,
    "identity": Identity,
}
"""Each activation's word in the written form of a network
(:func:`~.architecture.written_layers`): ``erf:A:B:C`` makes ``Erf(A, B, C)``."""

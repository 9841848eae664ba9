r"""The checks every kernel fold's output passes: finite, not underflowed to zero, and
not collapsed to a constant.

Without bias each ``Dense`` or ``Conv`` layer multiplies a pre-activation's variance by
:math:`\sigma_w^2` and each ReLU halves it, so a network of :math:`L` such pairs scales
it by :math:`(\sigma_w^2/2)^L`. Beyond the float64 range the kernel is inf or NaN; below
it, zero or subnormal: no digits are left to tell one image from another. A kernel
regression on either would print chance, or noise, as if it were a result, so the folds
(:func:`~ntkdemo.kernels.deep.fc_kernels`, :func:`~ntkdemo.kernels.conv.conv_kernels`)
raise instead, naming what to change.

A deep network with a bias can also forget its input: each layer pulls every pair's
correlation towards the same fixed point, and after enough layers the kernel of
different images is constant to the last bits (a fully connected network of depth 100
with ``b_std=1`` gives correlations within an ulp of 1). Its Gram matrix is then rank
one up to rounding; jitter would make it solvable and the run would print chance as a
result. :func:`check_kernel_informative` refuses such a Gram matrix where a run is about
to solve it (:meth:`ntkdemo.spec.KernelSpec.matrix`); the folds themselves return it (a
library user may want it, and inputs of norm 1e-6 beside a bias of 1 look the same).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError

DIGITS_ABOVE_TINY = 1e16
"""A kernel whose largest entry is within this factor of the smallest normal float64 has
lost its digits (an ulp of such an entry is subnormal): it counts as underflowed."""


def check_kernel_range(nngp: np.ndarray, ntk: np.ndarray, network: str) -> None:
    r"""Refuse kernels that overflowed or underflowed in their fold.

    Parameters
    ----------
    nngp, ntk : ndarray
        The fold's outputs.
    network : str
        The network and its settings in words (``"depth=3, w_std=0.01, b_std=0"``), for
        the message.

    Raises
    ------
    InvalidParameterError
        If an entry is inf or NaN (overflow), or the largest magnitude is at most
        :data:`DIGITS_ABOVE_TINY` times the smallest normal float64 (underflow: the kernel
        is zero or has no digits left).
    """
    if not (np.isfinite(ntk).all() and np.isfinite(nngp).all()):
        raise InvalidParameterError(
            f"the kernel overflowed to inf/NaN at {network} (each Dense or Conv layer "
            "scales the variance by w_std**2, each ReLU by 1/2); lower w_std (sqrt(2) keeps "
            "the variance constant), the depth, or the scale of the inputs"
        )
    smallest_normal = float(np.finfo(np.float64).tiny)
    if not max(np.abs(ntk).max(), np.abs(nngp).max()) > DIGITS_ABOVE_TINY * smallest_normal:
        raise InvalidParameterError(
            f"the kernel underflowed to zero at {network} (each Dense or Conv layer scales "
            "the variance by w_std**2, each ReLU by 1/2): it holds no information about the "
            "images; use w_std=sqrt(2) (the critical value), a bias b_std > 0, or fewer layers"
        )


COLLAPSED_CORRELATION = 1000 * float(np.finfo(np.float64).eps)
r"""Kernel correlations :math:`K_{ij}/\sqrt{K_{ii}K_{jj}}` all within this of 1 leave fewer
than three digits to tell any two images apart: the kernel counts as collapsed."""

DISTINCT_INPUTS = 1e-6
"""Inputs count as distinct when some pair's cosine is this far below 1 (identical
images legitimately have identical kernel rows)."""

ROWS_CHECKED = 200
"""Rows of the Gram matrix (against all its columns) that the collapse check reads."""


def check_kernel_informative(kernel: np.ndarray, inputs: np.ndarray, network: str) -> None:
    r"""Refuse a symmetric Gram matrix that is constant to rounding while its inputs differ.

    Reads the first :data:`ROWS_CHECKED` rows: if the inputs' cosines there reach
    :data:`DISTINCT_INPUTS` below 1 but every kernel correlation is within
    :data:`COLLAPSED_CORRELATION` of 1, the network has mapped different images to the
    same point.

    Parameters
    ----------
    kernel : ndarray of shape (n, n)
        A Gram matrix ``K(X, X)`` with a positive diagonal.
    inputs : ndarray of shape (n, n_features)
        The inputs ``X`` (flattened images).
    network : str
        The network and its settings in words, for the message.

    Raises
    ------
    InvalidParameterError
    """
    rows = min(ROWS_CHECKED, len(kernel))
    if len(kernel) < 2:
        return
    with np.errstate(divide="ignore", invalid="ignore"):  # zero rows: NaN, never counted
        norms = np.linalg.norm(inputs, axis=1)
        cosines = (inputs[:rows] @ inputs.T) / np.outer(norms[:rows], norms)
        scale = np.sqrt(np.diagonal(kernel))
        correlations = kernel[:rows] / np.outer(scale[:rows], scale)
    if np.isnan(cosines).any() or np.isnan(correlations).any():
        return
    spread = float(np.abs(1 - correlations).max())
    if cosines.min() < 1 - DISTINCT_INPUTS and spread < COLLAPSED_CORRELATION:
        raise InvalidParameterError(
            f"the kernel is constant to rounding at {network}: its network maps images "
            f"whose cosine is {cosines.min():.3g} to correlations within {spread:.1g} of 1, "
            "so it holds no information about them (the layers forgot their input); use "
            "fewer layers, a smaller b_std, or w_std=sqrt(2) with b_std=0"
        )

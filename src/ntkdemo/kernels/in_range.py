r"""The one check every kernel fold's output passes: finite, and not underflowed to zero.

Without bias each ``Dense`` or ``Conv`` layer multiplies a pre-activation's variance by
:math:`\sigma_w^2` and each ReLU halves it, so a network of :math:`L` such pairs scales
it by :math:`(\sigma_w^2/2)^L`. Beyond the float64 range the kernel is inf or NaN; below
it, zero or subnormal: no digits are left to tell one image from another. A kernel
regression on either would print chance, or noise, as if it were a result, so the folds
(:func:`~ntkdemo.kernels.deep.fc_kernels`, :func:`~ntkdemo.kernels.conv.conv_kernels`)
raise instead, naming what to change.
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

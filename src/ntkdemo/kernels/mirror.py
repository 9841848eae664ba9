r"""Left-right mirrors of images, and why a kernel averaged over them is the network
trained on them (the averaging itself: :mod:`.averaged`).

Let :math:`F` mirror an image left to right and let the kernel be mirror symmetric,
:math:`K(Fx, Fy) = K(x, y)`. Training on the images :math:`X` and their mirrors
:math:`FX` (labels repeated) is then kernel regression on the originals alone with

.. math:: \bar K(x, y) = \tfrac12 \big(K(x, y) + K(x, Fy)\big).

Proof: the Gram matrix of :math:`[X; FX]` is :math:`G = [[A, B], [B, A]]` with
:math:`A = K(X, X)` and :math:`B = K(X, FX)`, which is symmetric (:math:`K(x_i, Fx_j) =
K(Fx_i, x_j) = K(x_j, Fx_i)`). On vectors :math:`[v; v]` it acts as :math:`2 \bar K`,
so the coefficients of the targets :math:`[Y; Y]` are :math:`[a; a]` with
:math:`2 \bar K a = Y` and every prediction is :math:`K(x, X) a + K(x, FX) a = \bar
K(x, X) \bar K^{-1} Y`. The same steps give, for a ridge :math:`\lambda` on :math:`G`,
:math:`\bar K + \tfrac{\lambda}{2} I`, and for gradient-descent time :math:`t` (the
kernel divided by the training set's size, here :math:`2n` against :math:`n`) the same
:math:`t`. The network is the same; its Gram matrix has :math:`n` rows, not :math:`2n`,
and leaves out the eigenvalues of :math:`A - B`, which nearly symmetric images (a
T-shirt and its mirror) push towards 0.

Mirror symmetry holds for every fully connected kernel (a mirror permutes the
features, keeping inner products) and for the convolutional ones when each ``AvgPool``
sees an even width (a 'VALID' pool of odd width drops the last column, not the first).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .architecture import network_layers
from .layers import Layer, spatial_windows


def mirrored(X: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """Flat rows of images mirrored left to right (each row reversed along the width).

    Parameters
    ----------
    X : ndarray of shape (n, H * W * C)
    image_shape : tuple of int
        ``(H, W)`` or ``(H, W, C)``.

    Returns
    -------
    ndarray of shape (n, H * W * C)
    """
    images = np.asarray(X).reshape(len(X), *image_shape)
    return images[:, :, ::-1].reshape(len(X), -1)


def is_mirror_symmetric(
    architecture: str | Sequence[Layer] | None, image_shape: tuple[int, ...]
) -> bool:
    """Whether the kernel of ``architecture`` on images of ``image_shape`` satisfies
    :math:`K(Fx, Fy) = K(x, y)` (module docstring): always for a fully connected network
    (``None`` or ``fc-L``), else when every ``Conv`` and ``AvgPool`` reads mirrored
    windows for mirrored outputs (:meth:`~.layers.Window.mirror_symmetric`: a 2 x 2 pool
    on an even width, a 'SAME' 3 x 3 convolution; not a pool dropping its last column)."""
    if architecture is None:
        return True
    layers = network_layers(architecture) if isinstance(architecture, str) else architecture
    width = image_shape[1]
    for windows in spatial_windows(layers, (image_shape[0], image_shape[1])):
        if not windows[1].mirror_symmetric(width):
            return False
        width = windows[1].count
    return True

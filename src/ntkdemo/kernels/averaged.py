r"""Kernels of a network averaged over transformed copies of its input: left-right
mirrors and small cyclic shifts.

Let :math:`S` be a set of pixel permutations of an image (each a mirror or not, then a
cyclic shift by ``0 .. shifts`` pixels down and right) and :math:`f` an infinitely wide
network. The network :math:`g(x) = \frac{1}{|S|} \sum_{a \in S} f(a x)`, the same weights
applied to every copy and the outputs averaged, has the kernel (NTK and NNGP alike)

.. math:: \bar K(x, y) = \frac{1}{|S|^2} \sum_{a, b \in S} K(a x, b y),

positive semi-definite as the Gram matrix of the averaged features. Where ``K`` is
invariant under the permutations, :math:`K(a x, b y) = K(b^{-1} a\, x, y)`, and the
double sum is a weighted sum over the distinct :math:`r = b^{-1} a`:

.. math:: \bar K(x, y) = \sum_r w_r\, K(r x, y), \qquad
          w_r = \#\{(a, b) : b^{-1} a = r\} / |S|^2,

with :math:`w_r = w_{r^{-1}}`, so :math:`\bar K(X, X)` is symmetric and its upper
triangle is all that is computed. Every fully connected kernel is invariant under any
pixel permutation (it sees inner products and norms); a convolutional one only under
mirrors where :func:`~.mirror.is_mirror_symmetric` says so ('SAME' padding is not
cyclic, so shifts are for fully connected kernels alone).

Mirrors alone (:math:`S = \{I, F\}`) give :math:`\bar K = (K(x, y) + K(Fx, y)) / 2`,
which is also the network trained on the images and their mirrors (:mod:`.mirror`).
Shifts of ``0 .. s`` in both directions give :math:`(2s + 1)^2` distinct :math:`r` (the
shifts by ``-s .. s``, weighted by the triangle :math:`(s + 1 - |d_y|)(s + 1 - |d_x|) /
(s + 1)^4`), twice as many with mirrors: the cost of :math:`\bar K` is that many kernels
of the plain network. The shifts wrap around the image's edges; Fashion-MNIST's
borders are nearly black, so a wrapped column is nearly a blank one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidParameterError
from .blocks import assemble

KernelFunction = Callable[..., np.ndarray]
"""``kernel(X, Y=None, progress=None)``: the matrix of the rows of X against those of Y."""

STRIP_ENTRIES = 2**24
"""Entries of one strip of the transformed terms of a symmetric matrix (128 MB of float64)."""


@dataclass(frozen=True)
class InputAverage:
    """The copies of each input a network averages over: ``S`` of the module docstring.

    Parameters
    ----------
    shifts : int, default=0
        Cyclic shifts by ``0 .. shifts`` pixels down and right (``(shifts + 1)^2``
        copies).
    flip : bool, default=False
        Each of them also mirrored left to right (twice the copies).
    """

    shifts: int = 0
    flip: bool = False

    @property
    def terms(self) -> int:
        """Distinct permutations :math:`r` of :math:`\\bar K` (kernels of the plain
        network it costs): :math:`(2 s + 1)^2`, twice that with mirrors."""
        return (2 * self.shifts + 1) ** 2 * (2 if self.flip else 1)

    def describe(self) -> str:
        """In a few words, for the console ("" for no averaging)."""
        parts = [f"shifts 0-{self.shifts}"] if self.shifts else []
        parts += ["mirrors"] if self.flip else []
        return " and ".join(parts)

    def check_image_shape(self, image_shape: tuple[int, ...]) -> None:
        """Refuse images too small for the shifts to be distinct (``2 shifts + 1``
        pixels a side at least).

        Raises
        ------
        InvalidParameterError
        """
        if self.shifts and 2 * self.shifts + 1 > min(image_shape[:2]):
            raise InvalidParameterError(
                f"shifts={self.shifts} needs images of at least {2 * self.shifts + 1} pixels a "
                f"side, got {tuple(image_shape)}; use at most {(min(image_shape[:2]) - 1) // 2}"
            )

    def weighted_permutations(
        self, image_shape: tuple[int, ...]
    ) -> list[tuple[np.ndarray | None, float]]:
        """The terms :math:`(r, w_r)` of :math:`\\bar K(x, y) = \\sum_r w_r K(r x, y)`, each
        ``r`` as the gather of flat pixel values (``x[:, r]`` is :math:`r x`), None for
        the identity (first)."""
        self.check_image_shape(image_shape)
        index = np.arange(int(np.prod(image_shape))).reshape(image_shape)
        copies = [
            np.roll(index[:, ::-1] if mirror else index, (down, right), axis=(0, 1)).ravel()
            for mirror in ((False, True) if self.flip else (False,))
            for down in range(self.shifts + 1)
            for right in range(self.shifts + 1)
        ]
        counts: Counter[bytes] = Counter()
        for b in copies:
            inverse_b = np.argsort(b)
            for a in copies:  # (b^-1 a x)[i] = (a x)[b^-1[i]] = x[a[b^-1[i]]]
                counts[a[inverse_b].tobytes()] += 1
        identity = index.ravel()
        total = len(copies) ** 2
        plain: list[tuple[np.ndarray | None, float]] = [
            (None, counts.pop(identity.tobytes()) / total)
        ]
        return plain + [
            (np.frombuffer(r, dtype=identity.dtype), c / total) for r, c in counts.items()
        ]


def input_averaged(
    kernel: KernelFunction,
    X: np.ndarray,
    Y: np.ndarray | None,
    image_shape: tuple[int, ...],
    average: InputAverage,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> np.ndarray:
    r""":math:`\bar K(X, Y) = \sum_r w_r K(r X, Y)` (module docstring) of a ``kernel``
    invariant under the permutations of ``average`` (not checked here).

    Without ``Y`` the matrix is symmetric: the plain term's Gram matrix is computed as
    one, each other term's upper triangle in strips of rows against the rows from theirs
    on (about :math:`n^2 / 2` pairs a term, not :math:`n^2`), and the sum is mirrored,
    exactly symmetric. Only the rows of ``X`` are permuted, a strip at a time.

    Parameters
    ----------
    kernel : callable
        ``kernel(X, Y=None, progress=None)``.
    X, Y : ndarray of shape (n, H * W * C)
        Flat rows of images.
    image_shape : tuple of int
    average : InputAverage
    progress : callable, optional
        Wraps the iterators of ``kernel``'s blocks, and of the strips.

    Returns
    -------
    ndarray of shape (len(X), len(Y))
    """
    if not image_shape:
        raise InvalidParameterError(
            "a kernel averaged over mirrors or shifts needs the images' shape: pass "
            "image_shape=(H, W) or (H, W, C)"
        )
    (_, plain_weight), *others = average.weighted_permutations(tuple(image_shape))
    K = kernel(X, Y, progress=progress)
    K *= plain_weight
    if Y is not None:
        for permutation, weight in others:
            K += weight * kernel(X[:, permutation], Y, progress=progress)
        return K
    n = len(X)

    def add_terms(upper: np.ndarray, rows: slice, cols: slice, diagonal: bool) -> None:
        for permutation, weight in others:
            upper += weight * kernel(X[rows][:, permutation], X[cols])

    rows_per_strip = max(1, min(-(-n // 16), STRIP_ENTRIES // max(n, 1)))
    return assemble(add_terms, n, None, K, np.float64, rows_per_strip, progress)

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
triangle is all that is needed. No pair :math:`(r x_i, x_j)` is computed twice for it:
the term of :math:`r^{-1}` is the transpose of that of :math:`r`, :math:`K(r^{-1} x_i,
x_j) = K(x_i, r x_j)`, so a pair of such terms costs the :math:`n^2` pairs of one
matrix, and the term of an involution (:math:`r = r^{-1}`: the identity, and a mirror
combined with a shift along the rows alone) is symmetric and costs its upper triangle,
:math:`n (n + 1) / 2` (:meth:`InputAverage.gram_pairs`).

Every fully connected kernel is invariant under any pixel permutation (it sees inner
products and norms); a convolutional one only under mirrors where
:func:`~.mirror.is_mirror_symmetric` says so ('SAME' padding is not cyclic, so shifts
are for fully connected kernels alone).

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidParameterError
from .blocks import assemble

KernelFunction = Callable[..., np.ndarray]
"""``kernel(X, Y=None, progress=None)``: the matrix of the rows of X against those of Y."""

STRIP_ENTRIES = 2**24
"""Entries of one strip of the transformed terms of a symmetric matrix (128 MB of float64)."""

BLOCK_ROWS = 256
"""Rows of one term's block: each is permuted once a block row."""

BLOCK_ENTRIES = 2**20
"""Entries of one term's block (8 MB of float64): the kernel's output is then reused
from the heap, where an array above 32 MB is mapped anew each time and faulting its
pages in cost a fifth of a term's time (256 rows against 30,000, one-layer NTK)."""


@dataclass(frozen=True)
class SymmetricTerm:
    """A term :math:`w_r K(r x, y)` of :math:`\\bar K(X, X)` (module docstring) with that
    of :math:`r^{-1}` if it is another one: :math:`w_r (M + M^T)` of the square
    :math:`M_{ij} = K(r x_i, x_j)`.

    Attributes
    ----------
    permutation : ndarray
        :math:`r`, as the gather of flat pixel values (``x[:, permutation]`` is
        :math:`r x`).
    inverse : ndarray or None
        :math:`r^{-1}`, or None where :math:`r` is an involution (:math:`M` symmetric).
    weight : float
        :math:`w_r`, which is also :math:`w_{r^{-1}}`.
    """

    permutation: np.ndarray
    inverse: np.ndarray | None
    weight: float


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

    @property
    def involutions(self) -> int:
        """Terms :math:`r` of :math:`\\bar K` that are their own inverse: the identity,
        and with mirrors the mirror combined with each horizontal shift by ``-s .. s``
        (a reflection about another column); the other terms pair with their inverses."""
        return 1 + (2 * self.shifts + 1 if self.flip else 0)

    def gram_pairs(self, n: int) -> int:
        """Pairs :math:`(r x_i, x_j)` whose kernel :math:`\\bar K(X, X)` of ``n`` rows
        costs (module docstring): :math:`n (n + 1) / 2` for each involution and
        :math:`n^2` for each pair of a term and its inverse."""
        paired = (self.terms - self.involutions) // 2
        return self.involutions * (n * (n + 1) // 2) + paired * n * n

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
    one, the other terms' upper triangle in strips of rows against the rows from theirs
    on, and the sum is mirrored, exactly symmetric. In a strip's diagonal square a term
    and its inverse come from one product, :math:`w_r (M + M^T)`, and an involution's
    symmetric square row by row from the diagonal on, so that no pair is computed twice
    (:meth:`InputAverage.gram_pairs` counts them). Only the rows of ``X`` are permuted,
    a strip at a time.

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
    weighted = average.weighted_permutations(tuple(image_shape))
    if Y is not None:
        K = np.zeros((len(X), len(Y)))
        _accumulate(K, X, Y, weighted, kernel, progress)
        return K
    n = len(X)
    K = kernel(X, None, progress=progress)
    K *= weighted[0][1]  # the identity's weight
    terms = symmetric_terms(weighted)
    beyond_terms = [(term.permutation, term.weight) for term in terms]
    beyond_terms += [(term.inverse, term.weight) for term in terms if term.inverse is not None]

    def add_terms(upper: np.ndarray, rows: slice, cols: slice, diagonal: bool) -> None:
        width = rows.stop - rows.start
        square, strip = upper[:, :width], X[rows]
        for term in terms:
            moved = strip[:, term.permutation]
            if term.inverse is None:  # M symmetric: its upper triangle, row by row
                for i in range(width):
                    square[i, i:] += term.weight * kernel(moved[i : i + 1], strip[i:])[0]
            else:  # the terms of r and of r^-1 on the square: w (M + M^T)
                product = kernel(moved, strip)
                square += term.weight * (product + product.T)
        _accumulate(upper[:, width:], strip, X[rows.stop : cols.stop], beyond_terms, kernel)

    rows_per_strip = max(1, min(-(-n // 16), STRIP_ENTRIES // max(n, 1)))
    return assemble(add_terms, n, None, K, np.float64, rows_per_strip, progress)


def symmetric_terms(
    weighted: Sequence[tuple[np.ndarray | None, float]],
) -> list[SymmetricTerm]:
    """The terms ``(r, w_r)`` of :meth:`InputAverage.weighted_permutations` but the
    identity (its first), each paired with its inverse where that is another term
    (:class:`SymmetricTerm`), for a symmetric matrix."""
    terms: list[SymmetricTerm] = []
    paired: set[bytes] = set()
    for permutation, weight in weighted[1:]:
        assert permutation is not None
        if permutation.tobytes() in paired:
            continue
        inverse = np.argsort(permutation)
        if np.array_equal(inverse, permutation):
            terms.append(SymmetricTerm(permutation, None, weight))
        else:
            paired.add(inverse.tobytes())
            terms.append(SymmetricTerm(permutation, inverse, weight))
    return terms


def _accumulate(
    out: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    weighted: Sequence[tuple[np.ndarray | None, float]],
    kernel: KernelFunction,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> None:
    """``out += sum_r w_r kernel(X[:, r], Y)`` over the ``(r, w_r)`` of ``weighted``
    (``r`` None: the identity), in blocks of :data:`BLOCK_ROWS` rows and
    :data:`BLOCK_ENTRIES` entries (each row block permuted once a term)."""
    if not out.size:
        return
    block_cols = max(1, BLOCK_ENTRIES // min(len(X), BLOCK_ROWS))
    starts = range(0, len(X), BLOCK_ROWS)
    for start in progress(starts) if progress else starts:
        rows = slice(start, start + BLOCK_ROWS)
        for permutation, weight in weighted:
            moved = X[rows] if permutation is None else X[rows][:, permutation]
            for first in range(0, len(Y), block_cols):
                cols = slice(first, first + block_cols)
                term = kernel(moved, Y[cols])
                term *= weight
                out[rows, cols] += term

"""The kernel a run uses, chosen by name: the one-layer formula, the deep fully connected
fold or a convolutional one; every choice between them is made here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..errors import InvalidParameterError
from .averaged import InputAverage, input_averaged
from .conv import conv_kernels
from .deep import fc_kernels
from .layers import Layer
from .ntk import fold_inputs, ntk, ntk_of_unit_rows, unit_rows


@dataclass
class PairTally:
    """Image pairs whose kernel the folds computed: ``n (n + 1) / 2`` for the Gram matrix
    of ``n`` rows (its upper triangle and diagonal, all a fold computes of it) and
    ``n m`` for ``n`` rows against ``m``."""

    pairs: int = 0

    def add(self, n_rows: int, n_columns: int | None) -> None:
        """Count a kernel of ``n_rows`` against ``n_columns`` (None: themselves)."""
        self.pairs += n_rows * (n_rows + 1) // 2 if n_columns is None else n_rows * n_columns


def is_default_kernel(kernel: str, depth: int, w_std: float, b_std: float) -> bool:
    """Whether these settings name the one-layer formula of :func:`ntk` (the fast paths'
    kernel: strips, CG and the GPU serve it alone)."""
    return kernel == "ntk" and (depth, w_std, b_std) == (1, 1.0, 0.0)


def kernel_matrix(
    X: np.ndarray,
    Y: np.ndarray | None = None,
    *,
    kernel: str = "ntk",
    depth: int = 1,
    w_std: float = 1.0,
    b_std: float = 0.0,
    dtype: type = np.float64,
    reference_scale: bool = False,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> np.ndarray:
    """The kernel a run uses, chosen by name.

    With the defaults (``kernel="ntk", depth=1, w_std=1, b_std=0``) this is the one-layer
    formula :func:`ntk`. Otherwise it is the ``kernel`` output of :func:`fc_kernels`
    on the rows rescaled to norm ``sqrt(n_features)`` (so ``x.x/d = 1``), in float64.
    Kernel regression without ridge does not depend on a constant factor of the kernel,
    so the two agree in their predictions wherever they coincide up to that factor.

    Parameters
    ----------
    X, Y : array-like of shape (n, n_features)
    kernel : {"ntk", "nngp"}
    depth, w_std, b_std
        See :func:`fc_kernels`.
    dtype, progress
        See :func:`ntk` (one-layer formula only).
    reference_scale : bool, default=False
        Always use :func:`fc_kernels` (neural-tangents' scale, ``1/(2d)`` of the
        one-layer formula at depth 1), as training-time dynamics require.

    Returns
    -------
    ndarray of shape (len(X), len(Y))
    """
    if kernel not in ("ntk", "nngp"):
        raise InvalidParameterError(f"kernel must be 'ntk' or 'nngp', got {kernel!r}")
    if is_default_kernel(kernel, depth, w_std, b_std) and not reference_scale:
        return ntk(X, Y, dtype=dtype, progress=progress)
    X_unit = unit_rows(X, "X")
    Y_unit = None if Y is None else unit_rows(Y, "Y", n_features=X_unit.shape[1])
    return kernel_of_unit_rows(
        X_unit,
        Y_unit,
        kernel=kernel,
        depth=depth,
        w_std=w_std,
        b_std=b_std,
        reference_scale=True,
        progress=progress,
    )


def kernel_of_unit_rows(
    X_unit: np.ndarray,
    Y_unit: np.ndarray | None = None,
    *,
    kernel: str = "ntk",
    depth: int = 1,
    w_std: float = 1.0,
    b_std: float = 0.0,
    architecture: str | Sequence[Layer] | None = None,
    image_shape: tuple[int, ...] = (),
    reference_scale: bool = False,
    average: InputAverage | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    tally: PairTally | None = None,
) -> np.ndarray:
    """:func:`kernel_matrix` (float64) of rows already normalised by :func:`unit_rows`;
    with an ``architecture``, :func:`conv_kernels` of the rows rescaled to ``x.x/d = 1``
    seen as images of ``image_shape``; with an ``average`` (mirrors, shifts), the
    kernel of that network averaged over those copies of its input
    (:func:`~ntkdemo.kernels.averaged.input_averaged`; the kernel must be invariant
    under them on ``image_shape``). ``tally`` counts the pairs each fold computes (the
    copies' too)."""
    if average is not None and average.terms > 1:
        plain = partial(
            kernel_of_unit_rows,
            kernel=kernel,
            depth=depth,
            w_std=w_std,
            b_std=b_std,
            architecture=architecture,
            image_shape=image_shape,
            reference_scale=reference_scale,
            tally=tally,
        )
        return input_averaged(plain, X_unit, Y_unit, image_shape, average, progress)
    if tally is not None:
        tally.add(len(X_unit), None if Y_unit is None else len(Y_unit))
    formula = architecture is None and is_default_kernel(kernel, depth, w_std, b_std)
    if formula and not reference_scale:
        return ntk_of_unit_rows(X_unit, Y_unit, progress=progress)
    scaled_Y = None if Y_unit is None else fold_inputs(Y_unit)
    if architecture is not None:
        nngp, ntk_matrix = conv_kernels(
            fold_inputs(X_unit),
            scaled_Y,
            architecture=architecture,
            w_std=w_std,
            b_std=b_std,
            image_shape=image_shape,
            progress=progress,
        )
    else:
        nngp, ntk_matrix = fc_kernels(
            fold_inputs(X_unit), scaled_Y, depth=depth, w_std=w_std, b_std=b_std, progress=progress
        )
    return ntk_matrix if kernel == "ntk" else nngp

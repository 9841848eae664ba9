r"""NNGP and NTK of deep fully-connected ReLU networks, as a fold of layer steps.

Jacot et al. 2018, "Neural Tangent Kernel"; Arora et al. 2019, "On Exact Computation
with an Infinitely Wide Neural Net"; in the conventions of neural-tangents' ``stax``
('ntk' parameterisation): the state :math:`(q_{11}, q_{22}, q_{12}, \Theta)` of a block
of pairs passes through ``dense`` and ``relu`` steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InvalidParameterError
from ..validation import check_matrix, check_nonnegative_float, check_positive_int
from .activations import Relu
from .blocks import assemble, mirror_upper, products
from .in_range import check_kernel_range


@dataclass(frozen=True)
class _PairState:
    """Second moments of a layer's pre-activations for a block of pairs.

    ``q11`` (rows,) and ``q22`` (cols,) are the variances of each input, ``q12``
    (rows, cols) the covariances (the NNGP), ``ntk`` (rows, cols) the tangent kernel.
    ``diagonal`` marks a block whose row i and column i are the same input.
    """

    q11: np.ndarray
    q22: np.ndarray
    q12: np.ndarray
    ntk: np.ndarray
    diagonal: bool


def _dense(state: _PairState, w_std: float, b_std: float) -> _PairState:
    r"""Dense layer on the pair and both diagonals.

    :math:`K' = \sigma_w^2 K + \sigma_b^2` and :math:`\Theta' = K' + \sigma_w^2\Theta`.
    """
    w2, b2 = np.float64(w_std) ** 2, np.float64(b_std) ** 2  # inf, not OverflowError
    q12 = w2 * state.q12 + b2
    return replace(
        state, q11=w2 * state.q11 + b2, q22=w2 * state.q22 + b2, q12=q12, ntk=q12 + w2 * state.ntk
    )


def _relu(state: _PairState) -> _PairState:
    r"""ReLU layer: the rule of :class:`~.activations.Relu` (arc-cosine kernels of degree
    1 and 0, Cho & Saul 2009, with the one snapped angle of
    :func:`~.activations.arc_cosine_angle`) on the block's pairs, and on the
    diagonal :math:`q' = q/2` exactly (the same input on both sides: angle 0)."""
    q12, ntk_values = Relu().dual(np, state.q12, state.ntk, state.q11[:, None], state.q22[None, :])
    q11, q22 = state.q11 / 2, state.q22 / 2
    if state.diagonal:
        np.fill_diagonal(q12, q11)
        np.fill_diagonal(ntk_values, np.diagonal(state.ntk) / 2)
    return replace(state, q11=q11, q22=q22, q12=q12, ntk=ntk_values)


def _snap_parallel_inputs(q12: np.ndarray, q11: np.ndarray, q22: np.ndarray, terms: int) -> None:
    r"""Set to :math:`\pm\sqrt{q_{11} q_{22}}` the input products within rounding of it.

    A dot product of ``terms`` terms is exact only to about ``terms`` ulps of
    :math:`\|x\|\|y\|`, and the product of two identical inputs by a matrix product and
    their squared norms by another sum differ by that much. The ReLU's angle has an
    unbounded derivative at 0, so such a difference would become one of
    :math:`\sqrt{terms\,\epsilon}` (1e-7) in the kernel: identical images would no
    longer have identical kernel rows. Products :math:`q_{12}` with
    :math:`|q_{12}| \ge \sqrt{q_{11} q_{22}}\,(1 - terms\,\epsilon)` are taken as
    parallel inputs, the Cauchy-Schwarz bound itself (in place).
    """
    bound = np.sqrt(q11[:, None] * q22[None, :])
    tolerance = terms * float(np.finfo(np.float64).eps)
    np.copyto(q12, np.copysign(bound, q12), where=np.abs(q12) >= bound * (1.0 - tolerance))


def fc_kernels(
    X: np.ndarray,
    Y: np.ndarray | None = None,
    *,
    depth: int = 1,
    w_std: float = 1.0,
    b_std: float = 0.0,
    block_rows: int = 1024,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""NNGP and NTK of an infinitely wide fully-connected ReLU network.

    The network is neural-tangents' ``stax.serial(Dense(N, w_std, b_std), Relu(), ...,
    Dense(1, w_std, b_std))`` with ``depth`` hidden ``Dense``/``Relu`` pairs, in the
    'ntk' parameterisation. The kernels are a fold over the state
    :math:`(q_{11}, q_{22}, q_{12}, \Theta)` starting from :math:`q = x \cdot x'/d`,
    :math:`\Theta = 0`:

    * Dense: :math:`K' = \sigma_w^2 K + \sigma_b^2`, :math:`\Theta' = K' + \sigma_w^2 \Theta`;
    * ReLU: see ``_relu`` (arc-cosine formulas, angle from ``arctan2``).

    **Relation to the one-layer formula.** For ``depth=1, w_std=1, b_std=0`` and unit rows
    with ``d`` features, ``k = x.y`` and :math:`\theta = \arccos k`:
    ``nngp = (sqrt(1-k^2) + (pi - theta) k) / (2 pi d)`` and
    ``ntk = (2k (pi - theta) + sqrt(1-k^2)) / (2 pi d) = NTK(k) / (2d)``, that is
    ``ntk(X, Y) == 2 * d * fc_kernels(Xn, Yn)[1]``.

    Parameters
    ----------
    X : array-like of shape (n_samples_X, n_features)
        Inputs (not normalised; zero rows are allowed).
    Y : array-like of shape (n_samples_Y, n_features), optional
        Default ``X``; then the diagonal is exact to rounding (``theta = 0`` there).
    depth : int, default=1
        Number of hidden ReLU layers (>= 1).
    w_std, b_std : float, default=1.0 and 0.0
        Weight and bias standard deviations of every Dense layer.
    block_rows : int, default=1024
        Rows per block.
    progress : callable, optional
        Wraps the block iterator.

    Returns
    -------
    nngp, ntk : ndarray of shape (n_samples_X, n_samples_Y)
        float64.
    """
    depth = check_positive_int("depth", depth)
    w_std = check_nonnegative_float("w_std", w_std)
    b_std = check_nonnegative_float("b_std", b_std)
    if w_std == 0:
        raise InvalidParameterError(
            "w_std must be > 0: with zero weights the network ignores its input and its "
            "kernel is constant (no image can be told from another); try w_std=1 or sqrt(2)"
        )
    X_checked = check_matrix("X", X).astype(np.float64, copy=False)
    Y_checked = (
        None
        if Y is None
        else check_matrix("Y", Y, n_features=X_checked.shape[1]).astype(np.float64, copy=False)
    )
    other = X_checked if Y_checked is None else Y_checked
    n_features = X_checked.shape[1]
    sq_x = np.einsum("ij,ij->i", X_checked, X_checked) / n_features
    sq_y = sq_x if Y_checked is None else np.einsum("ij,ij->i", other, other) / n_features
    nngp = np.empty((X_checked.shape[0], other.shape[0]))

    def fill(block_out: np.ndarray, rows: slice, cols: slice, diagonal: bool) -> None:
        q12 = products(X_checked, other, rows, cols, diagonal, np.empty(block_out.shape))
        q12 /= n_features
        _snap_parallel_inputs(q12, sq_x[rows], sq_y[cols], n_features)
        if diagonal:
            np.fill_diagonal(q12, sq_x[rows])
        state = _PairState(sq_x[rows], sq_y[cols], q12, np.zeros_like(q12), diagonal)
        for _ in range(depth):
            state = _relu(_dense(state, w_std, b_std))
        state = _dense(state, w_std, b_std)
        block_out[...] = state.ntk
        nngp[rows, cols] = state.q12

    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        ntk_matrix = assemble(
            fill, X_checked.shape[0], Y_checked, None, np.float64, block_rows, progress
        )
    if Y_checked is None:
        mirror_upper(nngp)
    check_kernel_range(nngp, ntk_matrix, f"depth={depth}, w_std={w_std:g}, b_std={b_std:g}")
    return nngp, ntk_matrix

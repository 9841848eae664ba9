r"""The convolutional fold of :mod:`.conv` on whole tiles of image pairs, as array
operations in a NumPy-compatible array module: CuPy on a GPU (the ``cuda`` strategy),
NumPy in the tests that hold it against the compiled CPU fold.

It serves the fully connected networks too, as layers of a 1 x 1 image whose channels
are the features (``architecture_layers("fc-L")``). A tile is ``A`` images against
``B`` images. Its state holds all their pairs at once:
the covariances :math:`K(p, p')` and :math:`\Theta(p, p')` of shape
``(A, B, H, W, H, W)`` where the read-out pools (every position against every
position), ``(A, B, H, W)`` for a ``Flatten`` read-out without pooling (the diagonal
:math:`p = p'`, which the convolutions map among themselves), ``(A, B)`` after the
read-out. Each layer is a few whole-array operations, the mathematics of :mod:`.conv`:

* ``Conv``: the padding's zero border on each spatial axis, then one strided slice per
  filter tap shifted by the same offset :math:`d` on both sides, summed,
  :math:`K' = \frac{\sigma_w^2}{|F|} \sum_d K(s p + d, s p' + d) + \sigma_b^2`,
  :math:`\Theta' = K' + \frac{\sigma_w^2}{|F|} \sum_d \Theta(s p + d, s p' + d)`;
* an activation: its own rule (:meth:`~.activations.Activation.dual`) with the
  variances of the two images; the ``Relu``, fused: with :math:`q_x(p) q_y(p')`,
  :math:`s = \sqrt{(q_x q_y (1 - \epsilon) - K^2)_+}` (:math:`\epsilon` the
  :data:`~.activations.UNSNAPPED`: an angle within rounding of 0 is 0),
  :math:`\theta = \operatorname{atan2}(s, K)`,
  :math:`K' = (s + (\pi - \theta) K) / 2\pi`, :math:`\Theta' = \Theta (\pi - \theta) / 2\pi`
  (positions of zero variance give :math:`\theta = 0`: :math:`K' = 0`, never NaN);
* ``AvgPool``: the mean of one strided slice per window tap, on the first positions,
  then on the second;
* ``Parallel``: each branch folded from the same state, the kernels summed;
* ``GlobalAvgPool`` the mean over all position pairs, ``Flatten`` over the diagonal;
* ``Dense``: :math:`K' = \sigma_w^2 K + \sigma_b^2`, :math:`\Theta' = K' + \sigma_w^2 \Theta`.

A first ``Conv`` is one batched matrix product of the images' patches
(:math:`\sum_d K_0(s p + d, s p' + d)` is the dot product of the patches at :math:`p`
and :math:`p'`). The variances come from the same fold on the pairs :math:`(x, x)` (state of
shape ``(n, H, W, H, W)``), read off its diagonal before each activation:
:func:`self_variances`; the kernels of those pairs are the Gram matrix's diagonal.
With CuPy each elementwise step (a 3 x 3 conv's nine-slice sum and
affine map, the ReLU's angle, its NNGP, its NTK) is one compiled kernel
(``cupy.fuse``), reading the shifted slices and the broadcast variances in place; with
NumPy the same functions run as written. A tile's memory is about
:data:`ARRAYS_PER_PAIR` bordered states per pair (:func:`bytes_per_pair`);
:func:`pair_kernels` sizes its tiles from a budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .activations import UNSNAPPED, Activation, Relu
from .layers import (
    AvgPool,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    Layer,
    Parallel,
    Window,
    needs_full_covariance,
)

__all__ = ["bytes_per_pair", "pair_kernels", "self_variances"]

ARRAYS_PER_PAIR = 6
"""Bordered float64 states a pair holds at the peak of a layer: the two states, a
conv's bordered copy and its result, a ReLU's angle, a spare for the library's own
temporaries."""


def bytes_per_pair(image_shape: Sequence[int], full: bool) -> int:
    """Peak bytes of one pair in a tile (:data:`ARRAYS_PER_PAIR` bordered states)."""
    height, width = image_shape[0], image_shape[1]
    positions = (height + 2) * (width + 2)
    return 8 * ARRAYS_PER_PAIR * (positions**2 if full else positions)


def pair_kernels(
    xp: Any,
    layers: Sequence[Layer],
    images_X: Any,
    images_Y: Any | None = None,
    *,
    memory_bytes: int,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[Any, Any]:
    """NNGP and NTK of every pair of ``images_X`` (n1, H, W, C) and ``images_Y`` (n2, ...),
    tile by tile, in the array module ``xp``.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``; the images are ``xp`` arrays of float64.
    layers : sequence of layers
        Already checked (:func:`.layers.check_layers`).
    images_X, images_Y : array
        ``images_Y`` None is the symmetric Gram matrix of ``images_X`` (its upper
        tiles computed, mirrored).
    memory_bytes : int
        Workspace a tile may use (:func:`bytes_per_pair` per pair).
    progress : callable, optional
        Wraps the iterator over tiles.

    Returns
    -------
    nngp, ntk : ``xp`` arrays of shape (n1, n2)
    """
    steps = _Steps.of(xp)
    symmetric = images_Y is None
    columns: Any = images_X if images_Y is None else images_Y
    full = needs_full_covariance(layers)
    variances_X, self_kernels = _self_variances(xp, steps, layers, images_X, memory_bytes)
    variances_Y = (
        variances_X if symmetric else _self_variances(xp, steps, layers, columns, memory_bytes)[0]
    )
    pairs = max(1, memory_bytes // bytes_per_pair(images_X.shape[1:3], full))
    n_X, n_Y = len(images_X), len(columns)
    rows_per_tile = min(n_X, max(1, math.isqrt(pairs)))
    cols_per_tile = min(n_Y, max(1, pairs // rows_per_tile))
    tiles = [
        (slice(r, r + rows_per_tile), slice(c, c + cols_per_tile))
        for r in range(0, n_X, rows_per_tile)
        for c in range(0, n_Y, cols_per_tile)
        if not symmetric or c + cols_per_tile > r
    ]
    nngp = xp.zeros((n_X, n_Y))
    ntk = xp.zeros((n_X, n_Y))
    for rows, cols in progress(tiles) if progress else tiles:

        def variances(index: int, _: Any, rows: slice = rows, cols: slice = cols) -> tuple:
            return _broadcast(variances_X[index][rows], variances_Y[index][cols], full, False)

        nngp[rows, cols], ntk[rows, cols] = _fold(
            xp, steps, layers, images_X[rows], columns[cols], variances, paired=False
        )
    if symmetric:
        lower = xp.tril(xp.ones((n_X, n_X), dtype=bool), -1)
        nngp = xp.where(lower, nngp.T, nngp)
        ntk = xp.where(lower, ntk.T, ntk)
        diagonal = xp.arange(n_X)
        nngp[diagonal, diagonal], ntk[diagonal, diagonal] = self_kernels
    return nngp, ntk


def self_variances(xp: Any, layers: Sequence[Layer], images: Any, *, memory_bytes: int) -> list:
    """Each activation's input variances :math:`q(p) = K_{xx}(p, p)` of every image.

    Returns
    -------
    list of ``xp`` arrays
        One per activation: shape (n, H, W) at its resolution, or (n,) after the
        read-out.
    """
    return _self_variances(xp, _Steps.of(xp), layers, images, memory_bytes)[0]


def _self_variances(
    xp: Any, steps: _Steps, layers: Sequence[Layer], images: Any, memory_bytes: int
) -> tuple[list, tuple[Any, Any]]:
    """:func:`self_variances`, and the kernels of the pairs :math:`(x, x)`: the Gram
    matrix's diagonal, where the recorded variances make every angle exactly 0."""
    full = needs_full_covariance(layers)
    per_chunk = max(1, memory_bytes // bytes_per_pair(images.shape[1:3], full))
    chunks: list[list] = []
    nngp_parts, ntk_parts = [], []
    for start in range(0, len(images), per_chunk):
        recorded: list = []

        def record(index: int, nngp: Any, recorded: list = recorded) -> tuple[Any, Any]:
            variances = _diagonal(xp, nngp, full)
            recorded.append(variances)
            return _broadcast(variances, variances, full, paired=True)

        chunk = images[start : start + per_chunk]
        nngp, ntk = _fold(xp, steps, layers, chunk, chunk, record, paired=True)
        chunks.append(recorded)
        nngp_parts.append(nngp)
        ntk_parts.append(ntk)
    variances = [xp.concatenate(parts) for parts in zip(*chunks, strict=True)]
    return variances, (xp.concatenate(nngp_parts), xp.concatenate(ntk_parts))


@dataclass(frozen=True)
class _Steps:
    """The elementwise steps, each one compiled kernel under CuPy (``cupy.fuse``)."""

    conv_nngp: Callable[..., Any]
    conv_ntk: Callable[..., Any]
    relu_rest: Callable[..., Any]
    relu_nngp: Callable[..., Any]
    relu_ntk: Callable[..., Any]

    @classmethod
    def of(cls, xp: Any) -> _Steps:
        inverse = 1.0 / (2.0 * math.pi)

        def conv_nngp(v0, v1, v2, v3, v4, v5, v6, v7, v8, scale, bias):
            return (v0 + v1 + v2 + v3 + v4 + v5 + v6 + v7 + v8) * scale + bias

        def conv_ntk(nngp, v0, v1, v2, v3, v4, v5, v6, v7, v8, scale):
            return nngp + (v0 + v1 + v2 + v3 + v4 + v5 + v6 + v7 + v8) * scale

        def relu_rest(nngp, variance_a, variance_b):
            sine = xp.sqrt(xp.maximum(variance_a * variance_b * UNSNAPPED - nngp * nngp, 0.0))
            return math.pi - xp.arctan2(sine, nngp)

        def relu_nngp(nngp, variance_a, variance_b, rest):
            sine = xp.sqrt(xp.maximum(variance_a * variance_b * UNSNAPPED - nngp * nngp, 0.0))
            return xp.maximum((sine + rest * nngp) * inverse, 0.0)

        def relu_ntk(ntk, rest):
            return ntk * (rest * inverse)

        functions = (conv_nngp, conv_ntk, relu_rest, relu_nngp, relu_ntk)
        fuse = getattr(xp, "fuse", None)
        return cls(*(fuse()(function) if fuse else function for function in functions))


def _fold(
    xp: Any,
    steps: _Steps,
    layers: Sequence[Layer],
    images_a: Any,
    images_b: Any,
    variances: Callable[[int, Any], tuple[Any, Any]],
    *,
    paired: bool,
) -> tuple[Any, Any]:
    """NNGP and NTK of the pairs of ``images_a`` and ``images_b`` (each with each, or
    ``paired``); ``variances(i, nngp)`` gives the i-th activation's :math:`q_a, q_b`,
    broadcastable to the state; each activation applies its own rule
    (:meth:`~.activations.Activation.dual`), the ReLU's fused in :class:`_Steps`."""
    full = needs_full_covariance(layers)
    spatial = 4 if full else 2
    channels = images_a.shape[-1]
    first = layers[0]
    if isinstance(first, Conv):
        w2, b2 = float(first.w_std) ** 2, float(first.b_std) ** 2
        patches_a, patches_b = _patches(xp, images_a, first), _patches(xp, images_b, first)
        nngp = _products(xp, patches_a, patches_b, full, paired)
        nngp = nngp * (w2 / (first.filter[0] * first.filter[1] * channels)) + b2
        ntk = nngp.copy()
        layers = layers[1:]
    else:
        nngp = _products(xp, images_a, images_b, full, paired) / channels
        ntk = xp.zeros_like(nngp)
    count = [0]  # activations met so far, in order, the branches' included

    def run(layers: Sequence[Layer], nngp: Any, ntk: Any, spatial: int) -> tuple:
        for layer in layers:
            if isinstance(layer, Conv):
                w2, b2 = float(layer.w_std) ** 2, float(layer.b_std) ** 2
                scale = w2 / (layer.filter[0] * layer.filter[1])
                nngp_taps = _conv_slices(xp, nngp, spatial, layer)
                ntk_taps = _conv_slices(xp, ntk, spatial, layer)
                if len(nngp_taps) == 9:  # 3 x 3: one fused kernel a step on CuPy
                    nngp_next = steps.conv_nngp(*nngp_taps, scale, b2)
                    ntk = steps.conv_ntk(nngp_next, *ntk_taps, scale)
                else:
                    nngp_next = sum(nngp_taps[1:], nngp_taps[0]) * scale + b2
                    ntk = nngp_next + sum(ntk_taps[1:], ntk_taps[0]) * scale
                nngp = nngp_next
            elif isinstance(layer, Dense):
                w2, b2 = float(layer.w_std) ** 2, float(layer.b_std) ** 2
                nngp = nngp * w2 + b2
                ntk = nngp + ntk * w2
            elif isinstance(layer, Relu):  # the ReLU's rule, fused (one kernel a step on CuPy)
                variance_a, variance_b = variances(count[0], nngp)
                rest = steps.relu_rest(nngp, variance_a, variance_b)
                nngp = steps.relu_nngp(nngp, variance_a, variance_b, rest)
                ntk = steps.relu_ntk(ntk, rest)
                count[0] += 1
            elif isinstance(layer, Activation):
                variance_a, variance_b = variances(count[0], nngp)
                nngp, ntk = layer.dual(xp, nngp, ntk, variance_a, variance_b)
                count[0] += 1
            elif isinstance(layer, Parallel):  # independent branches: the kernels add
                outputs = [run(branch, nngp, ntk, spatial) for branch in layer.branches]
                nngp = sum(output[0] for output in outputs[1:]) + outputs[0][0]
                ntk = sum(output[1] for output in outputs[1:]) + outputs[0][1]
            elif isinstance(layer, AvgPool):
                nngp, ntk = _pool(xp, nngp, layer), _pool(xp, ntk, layer)
            elif isinstance(layer, GlobalAvgPool):
                nngp, ntk = _mean_positions(nngp, spatial), _mean_positions(ntk, spatial)
                spatial = 0
            elif isinstance(layer, Flatten):
                nngp, ntk = _mean_diagonal(nngp, spatial), _mean_diagonal(ntk, spatial)
                spatial = 0
        return nngp, ntk, spatial

    nngp, ntk, _ = run(layers, nngp, ntk, spatial)
    return nngp, ntk


def _patches(xp: Any, images: Any, conv: Conv) -> Any:
    """Each output position's patch of the convolution (zeros outside the image), shape
    (n, H_out, W_out, filter height * filter width * C)."""
    return xp.concatenate(_tap_views(xp, images, conv, axes=(1, 2)), axis=-1)


def _bordered(xp: Any, state: Any, windows: tuple[Window, Window], axes: tuple[int, ...]) -> Any:
    """``state`` with the windows' zero padding on the spatial ``axes`` (height, width
    alternating), long enough for every tap."""
    shape = list(state.shape)
    where: list[Any] = [slice(None)] * state.ndim
    for number, axis in enumerate(axes):
        window = windows[number % 2]
        length = state.shape[axis]
        shape[axis] = max(window.before + length, (window.count - 1) * window.stride + window.size)
        where[axis] = slice(window.before, window.before + length)
    bordered = xp.zeros(shape)
    bordered[tuple(where)] = state
    return bordered


def _taps(window: Window, offset: int) -> slice:
    """The positions the window's ``offset``-th tap reads, one per output."""
    return slice(offset, offset + (window.count - 1) * window.stride + 1, window.stride)


def _products(xp: Any, images_a: Any, images_b: Any, full: bool, paired: bool) -> Any:
    r""":math:`\sum_v a_{pv} b_{p'v}` of each pair of images (or patches): of each ``a``
    with each ``b`` (leading axes ``(A, B)``), or ``paired`` the i-th with the i-th;
    every position pair where ``full``, else :math:`p = p'` alone."""
    count, height, width, values = images_a.shape
    a = images_a.reshape(count, height * width, values)
    b = images_b.reshape(len(images_b), height * width, values)
    if not full and paired:
        return (a * b).sum(axis=-1).reshape(count, height, width)
    if not full:  # a matrix product per position: (P, A, V) (P, V, B) -> (A, B, P)
        products = xp.matmul(a.transpose(1, 0, 2), b.transpose(1, 2, 0)).transpose(1, 2, 0)
        return products.reshape(count, len(images_b), height, width)
    products = (
        xp.matmul(a, b.transpose(0, 2, 1))
        if paired
        else xp.matmul(a[:, None], b.transpose(0, 2, 1)[None])
    )
    return products.reshape(*products.shape[:-2], height, width, height, width)


def _conv_slices(xp: Any, state: Any, spatial: int, conv: Conv) -> list:
    """The views :math:`S(s p + d, s p' + d)` of a state bordered with zeros (the
    positions outside the image), one per tap :math:`d` of the filter (the same offset
    on both sides), at the stride :math:`s`."""
    return _tap_views(xp, state, conv, axes=tuple(range(state.ndim - spatial, state.ndim)))


def _tap_views(xp: Any, array: Any, conv: Conv, axes: tuple[int, ...]) -> list:
    """One view of ``array`` zero-bordered for the convolution per tap of its filter, the
    tap's strided positions taken on each (height, width) pair of ``axes`` (the same
    offset on every pair)."""
    rows, columns = conv.windows(array.shape[axes[0]], array.shape[axes[1]])
    bordered = _bordered(xp, array, (rows, columns), axes)
    lead = (slice(None),) * axes[0]
    return [
        bordered[lead + (_taps(rows, i), _taps(columns, j)) * (len(axes) // 2)]
        for i in range(rows.size)
        for j in range(columns.size)
    ]


def _pool(xp: Any, state: Any, pool: AvgPool) -> Any:
    """Average pooling on both sides of a full state (..., H, W, H, W): the mean over
    the window's taps of the first position, then of the second ('VALID')."""
    height, width = state.shape[-4], state.shape[-3]
    rows, columns = pool.windows(height, width)
    for first in (state.ndim - 4, state.ndim - 2):
        lead = (slice(None),) * first
        taps = [
            state[lead + (_taps(rows, i), _taps(columns, j))]
            for i in range(rows.size)
            for j in range(columns.size)
        ]
        state = sum(taps[1:], taps[0]) / len(taps)
    return state


def _mean_positions(state: Any, spatial: int) -> Any:
    """The mean over all position pairs."""
    return state.mean(axis=tuple(range(-spatial, 0)))


def _mean_diagonal(state: Any, spatial: int) -> Any:
    """The mean over the diagonal :math:`p = p'` (the state itself where it is stored)."""
    if spatial == 2:
        return state.mean(axis=(-2, -1))
    *lead, height, width, _, _ = state.shape
    square = state.reshape(*lead, height * width, height * width)
    return square.diagonal(axis1=-2, axis2=-1).mean(axis=-1)


def _diagonal(xp: Any, nngp: Any, full: bool) -> Any:
    """:math:`K(p, p)` of paired states (leading axis ``n``): (n, H, W), or (n,)."""
    if nngp.ndim == 1 or not full:
        return nngp
    count, height, width, _, _ = nngp.shape
    square = nngp.reshape(count, height * width, height * width)
    return xp.ascontiguousarray(square.diagonal(axis1=1, axis2=2)).reshape(count, height, width)


def _broadcast(variances_a: Any, variances_b: Any, full: bool, paired: bool) -> tuple[Any, Any]:
    """:math:`q_a(p)` and :math:`q_b(p')` as views that broadcast to the state: pairs of
    each ``a`` with each ``b`` (leading ``(A, B)``) or ``paired``; every position pair
    where ``full``."""
    spatial = variances_a.ndim - 1
    if not paired:
        variances_a, variances_b = variances_a[:, None], variances_b[None]
    if spatial and full:
        return variances_a[..., :, :, None, None], variances_b[..., None, None, :, :]
    return variances_a, variances_b

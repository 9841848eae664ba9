r"""NNGP and NTK of infinitely wide convolutional networks, as a fold of layer steps.

Novak et al. 2019, "Bayesian Deep Convolutional Networks with Many Channels are
Gaussian Processes"; Arora et al. 2019, "On Exact Computation with an Infinitely Wide
Neural Net"; Shankar et al. 2020, "Neural Kernels Without Tangents" (the Myrtle
networks). Conventions of neural-tangents' ``stax`` ('ntk' parameterisation), as for
:func:`~ntkdemo.kernels.deep.fc_kernels`.

The state of a pair of images :math:`(x, y)` is the covariance of a layer's
pre-activations between every position :math:`p` of :math:`x` and :math:`p'` of
:math:`y`, :math:`K(p, p')` (the NNGP), and the tangent kernel :math:`\Theta(p, p')`.
It starts from :math:`K_0(p, p') = \sum_c x_{pc} y_{p'c} / C`, :math:`\Theta_0 = 0`, and
passes through:

* ``Conv`` (by default 3 x 3, stride 1, 'SAME' zero padding; any filter, stride and
  'SAME' or 'VALID' padding, :class:`~.layers.Window`): with :math:`A` the mean over
  the filter's :math:`|F|` taps :math:`d`, :math:`(A K)(p, p') = \frac{1}{|F|} \sum_d K(s p + d,
  s p' + d)` (the same offset on both sides, so each relative offset :math:`p' - p`
  evolves on its own), :math:`K' = \sigma_w^2 A K + \sigma_b^2` and
  :math:`\Theta' = K' + \sigma_w^2 A \Theta`;
* an activation (:mod:`.activations`; the ``Relu``: the arc-cosine step of
  :func:`~ntkdemo.kernels.deep.fc_kernels`): its rule entry by entry, with the
  variances :math:`q_x(p) = K_{xx}(p, p)` and :math:`q_y(p')` of each image (computed
  once per image, by the same fold on the pair :math:`(x, x)`); positions of zero
  variance (black borders at :math:`\sigma_b = 0`) give numbers, never NaN;
* ``AvgPool`` (by default 2 x 2, stride 2; any window and stride, 'VALID'): the mean
  over each window's positions on both sides;
* ``Parallel``: its branches run on the same state, their kernels summed;
* ``GlobalAvgPool``: the mean over all :math:`(p, p')`; ``Flatten``: the mean over the
  diagonal :math:`p = p'`; both end the spatial part;
* ``Dense``: :math:`K' = \sigma_w^2 K + \sigma_b^2`, :math:`\Theta' = K' + \sigma_w^2 \Theta`.

The compiled loops (:mod:`.conv_loops`) run the networks of 3 x 3 convolutions, 2 x 2
pools, residual blocks and the activations with a compiled rule (:func:`_encode`);
every other network runs in the array fold of
:mod:`.conv_arrays`, whose layer steps are these. The read-out decides what is stored:
without pooling, a ``Flatten`` read-out needs only
the entries :math:`K(p, p)` (``H W`` per pair: the conv maps them among themselves),
with pooling the whole :math:`(H W)^2`. Pairs are computed in chunks, so memory is
bounded by the chunk, never by the :math:`(n_1, n_2, H, W, H, W)` tensor.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..errors import InvalidInputError, InvalidParameterError
from ..validation import check_matrix
from .activations import ABRelu, Abs, Erf, Gelu, Identity, LayerNorm, LeakyRelu, Relu
from .architecture import fully_connected_depth, network_layers
from .blocks import mirror_upper
from .in_range import check_kernel_range
from .layers import (
    AvgPool,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    Layer,
    Parallel,
    every_layer,
    needs_full_covariance,
    spatial_windows,
)

__all__ = ["as_images", "conv_kernels", "seconds_per_pair"]


def conv_kernels(
    X: np.ndarray,
    Y: np.ndarray | None = None,
    *,
    architecture: str | Sequence[Layer],
    w_std: float = 1.0,
    b_std: float = 0.0,
    image_shape: tuple[int, ...] | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""NNGP and NTK of an infinitely wide convolutional (or fully connected) network.

    Parameters
    ----------
    X : array-like of shape (n_samples_X, H, W, C), (n_samples_X, H, W) or (n_samples_X, H * W * C)
        Images; flat rows (as :func:`ntkdemo.load_sample` gives them) need ``image_shape``.
    Y : array-like, optional
        Second set of images (default ``X``: the symmetric Gram matrix).
    architecture : str or sequence of layers
        A name for :func:`~.architecture.architecture_layers` (``w_std`` and ``b_std``
        apply), ``fc-L`` (:func:`~ntkdemo.kernels.deep.fc_kernels` at depth L, on the
        flattened images),
        or the layers themselves (``Conv``, an activation, ``AvgPool``, ``GlobalAvgPool``,
        ``Flatten``, ``Dense``).
    w_std, b_std : float, default=1.0 and 0.0
        For a named architecture: the defaults of ``stax``, of
        :class:`~ntkdemo.spec.KernelSpec`, the command line and the estimators (with
        ``b_std = 0`` the scale is a constant factor of the kernel per layer; it matters
        with a bias, a ridge or a training time).
    image_shape : tuple of int, optional
        ``(H, W)`` or ``(H, W, C)`` of one image, for flat rows.
    progress : callable, optional
        Wraps the iterator over chunks of pairs.

    Returns
    -------
    nngp, ntk : ndarray of shape (n_samples_X, n_samples_Y)
        float64.
    """
    image_shape = _check_image_shape(image_shape)
    if not isinstance(architecture, str | Sequence) or (
        not isinstance(architecture, str)
        and not all(isinstance(layer, Layer) for layer in architecture)
    ):
        raise InvalidParameterError(
            "architecture must be a name (fc-L, cnn-flatten-L, cnn-gap-L, myrtle5, myrtle7, "
            "myrtle10, or words such as conv+erf+gap+dense) or a sequence of layers (Conv, "
            f"activations, AvgPool, GlobalAvgPool, Flatten, Dense), got {architecture!r}"
        )
    depth = fully_connected_depth(architecture)
    if depth is not None:
        from .deep import fc_kernels

        flat_X = as_images(X, image_shape, "X").reshape(len(X), -1)
        flat_Y = None if Y is None else as_images(Y, image_shape, "Y").reshape(len(Y), -1)
        return fc_kernels(flat_X, flat_Y, depth=depth, w_std=w_std, b_std=b_std)
    layers = network_layers(architecture, w_std, b_std)
    images_X = as_images(X, image_shape, "X")
    images_Y = images_X if Y is None else as_images(Y, image_shape, "Y")
    if images_Y.shape[1:] != images_X.shape[1:]:
        raise InvalidParameterError(
            f"X and Y images differ in shape: {images_X.shape[1:]} and {images_Y.shape[1:]}"
        )
    spatial_windows(layers, images_X.shape[1:3])  # refuses images too small for the layers
    with np.errstate(over="ignore", invalid="ignore"):  # refused just below, with advice
        encoded = _encode(layers, images_X.shape[1:3])
        if encoded is not None:
            nngp, ntk = _compiled_kernels(
                images_X, images_Y, Y is None, encoded, needs_full_covariance(layers), progress
            )
            if Y is None:
                mirror_upper(nngp)
                mirror_upper(ntk)
        else:
            nngp, ntk = _array_kernels(layers, images_X, None if Y is None else images_Y, progress)
    check_kernel_range(nngp, ntk, _describe(architecture, layers))
    return nngp, ntk


def _describe(architecture: str | Sequence[Layer], layers: Sequence[Layer]) -> str:
    """The network and its weight and bias scales in words, for messages."""
    scales = sorted(
        {
            (layer.w_std, layer.b_std)
            for layer in every_layer(layers)
            if isinstance(layer, Conv | Dense)
        }
    )
    settings = ", ".join(f"w_std={w:g}, b_std={b:g}" for w, b in scales)
    name = architecture if isinstance(architecture, str) else f"{len(layers)} layers"
    return f"{name} ({settings})"


def _check_image_shape(image_shape: object) -> tuple[int, ...] | None:
    """``image_shape`` as a tuple of 2 or 3 whole numbers >= 1 (or None).

    Raises
    ------
    InvalidParameterError
    """
    if image_shape is None:
        return None
    shape: tuple = tuple(image_shape) if isinstance(image_shape, Iterable) else ()
    if len(shape) not in (2, 3) or not all(
        isinstance(size, int | np.integer) and not isinstance(size, bool) and size >= 1
        for size in shape
    ):
        raise InvalidParameterError(
            f"image_shape must be (H, W) or (H, W, C) of whole numbers >= 1, got {image_shape!r}"
        )
    return tuple(int(size) for size in shape)


MEASURED_SECONDS = 0.5
"""How long the per-pair measurement of :func:`seconds_per_pair` runs at least, so
that a call's fixed cost is a small part of what it times."""


def seconds_per_pair(
    architecture: str | Sequence[Layer],
    image_shape: tuple[int, ...],
    *,
    w_std: float = 1.0,
    b_std: float = 0.0,
    images: int = 12,
    largest: int = 768,
) -> float:
    """Seconds one image pair of ``conv_kernels`` takes on this machine, measured.

    The Gram matrix of ``images`` random images of ``image_shape`` is computed once
    (loading or compiling the loops), then timed; while it takes less than
    :data:`MEASURED_SECONDS` the count of images doubles (up to ``largest``), so that a
    cheap kernel's per-call cost does not pass for a per-pair one (12 ``cnn-flatten-3``
    images read 20 us a pair where a whole split takes 6). The time divided by the
    pairs is a calibrated cost for estimating a whole run (every core in use).
    """
    import time

    shape = tuple(image_shape)
    rng = np.random.default_rng(0)
    conv_kernels(rng.random((2, *shape)), architecture=architecture, w_std=w_std, b_std=b_std)
    while True:
        sample = rng.random((images, *shape))
        start = time.perf_counter()
        conv_kernels(sample, architecture=architecture, w_std=w_std, b_std=b_std)
        seconds = time.perf_counter() - start
        if seconds >= MEASURED_SECONDS or images >= largest:
            return seconds / (images * (images + 1) / 2)
        images = min(2 * images, largest)


def _pair_count(n_X: int, n_Y: int, symmetric: bool) -> int:
    """Pairs computed: the strict upper triangle when ``symmetric`` (the diagonal comes
    from the variances' own pairs), else all."""
    return n_X * (n_X - 1) // 2 if symmetric else n_X * n_Y


def _pairs(
    n_X: int, n_Y: int, symmetric: bool, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the pairs ``start .. stop - 1`` in row-major order (of the
    strict upper triangle when ``symmetric``), made for one round: no list of all
    pairs is held (at 20,000 images it would be 6.4 GB)."""
    index = np.arange(start, stop, dtype=np.int64)
    if not symmetric:
        return index // n_Y, index % n_Y
    row_starts = np.arange(n_X, dtype=np.int64)
    row_starts = row_starts * n_X - row_starts * (row_starts + 1) // 2  # pairs before row i
    rows = np.searchsorted(row_starts, index, side="right") - 1
    return rows, index - row_starts[rows] + rows + 1


ENTRIES_PER_TASK = 10_000_000
"""Stored entries (pairs times entries per pair) a thread computes between two looks at
the progress bar: 16 pairs of whole 28 x 28 covariances, 12,755 of their diagonals."""


def _compiled_kernels(
    images_X: np.ndarray,
    images_Y: np.ndarray,
    symmetric: bool,
    encoded: tuple[np.ndarray, np.ndarray, np.ndarray],
    full: bool,
    progress: Callable[[Iterable], Iterable] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The fold for every pair, compiled, on every core (:mod:`.conv_loops`): each pair's
    whole position covariance where the read-out pools (``full``), else its diagonal;
    ``encoded`` is :func:`_encode`'s."""
    from concurrent.futures import ThreadPoolExecutor

    from . import conv_loops

    fold = conv_loops.fold_one_pair if full else conv_loops.fold_one_pair_diagonal
    threads = max(1, min(os.cpu_count() or 1, len(images_X) * len(images_Y)))
    stored = conv_loops.workspace_entries(images_X.shape[1], images_X.shape[2], full)
    rows = conv_loops.workspace_rows(encoded[1])
    _check_workspace(threads * rows * 8 * stored, rows, images_X.shape[1:3])
    workspaces = np.empty((threads, rows, stored))
    per_task = max(1, ENTRIES_PER_TASK // stored)
    n_pairs = _pair_count(len(images_X), len(images_Y), symmetric)
    nngp = np.empty((len(images_X), len(images_Y)))
    ntk = np.empty_like(nngp)
    with ThreadPoolExecutor(threads) as pool:

        def variances_of(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """Each image's variance maps, and its pair (x, x)'s NNGP and NTK, in rounds
            of ``per_task`` images a thread (between two rounds the main thread takes
            a stop request: one share of 8,000 images held it for half a minute)."""
            found = np.zeros((len(images), encoded[0][-1]))
            self_nngp, self_ntk = np.empty(len(images)), np.empty(len(images))
            for start in range(0, len(images), per_task * threads):
                stop = min(start + per_task * threads, len(images))
                shares = [slice(*share) for share in _equal_shares(start, stop, threads)]
                list(
                    pool.map(
                        lambda t, shares=shares: conv_loops.self_variances(
                            fold,
                            images[shares[t]],
                            found[shares[t]],
                            encoded,
                            workspaces[t],
                            self_nngp[shares[t]],
                            self_ntk[shares[t]],
                        ),
                        range(threads),
                    )
                )
            return found, self_nngp, self_ntk

        variances_X, self_nngp, self_ntk = variances_of(images_X)
        variances_Y = variances_X if symmetric else variances_of(images_Y)[0]

        def task(share: tuple[int, int], thread: int) -> None:
            rows, cols = _pairs(len(images_X), len(images_Y), symmetric, *share)
            conv_loops.fold_pairs(
                fold,
                images_X,
                images_Y,
                rows,
                cols,
                variances_X,
                variances_Y,
                encoded,
                nngp,
                ntk,
                workspaces[thread],
            )

        starts = range(0, n_pairs, per_task * threads)
        for start in progress(starts) if progress else starts:
            stop = min(start + per_task * threads, n_pairs)
            list(pool.map(task, _equal_shares(start, stop, threads), range(threads)))
    if symmetric:  # the diagonal: the pairs (x, x) the variances came from
        np.fill_diagonal(nngp, self_nngp)
        np.fill_diagonal(ntk, self_ntk)
    return nngp, ntk


def _equal_shares(start: int, stop: int, threads: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into ``threads`` contiguous shares as equal as can be."""
    bounds = np.linspace(start, stop, threads + 1).astype(int)
    return [(int(bounds[t]), int(bounds[t + 1])) for t in range(threads)]


ARRAY_FOLD_BYTES = 500_000_000
"""Workspace of a tile of the array fold on the CPU (at most a quarter of free memory)."""


def _array_kernels(
    layers: Sequence[Layer],
    images_X: np.ndarray,
    images_Y: np.ndarray | None,
    progress: Callable[[Iterable], Iterable] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The array fold of :mod:`.conv_arrays` in NumPy: every composition of layers, tile
    by tile (the symmetric Gram matrix when ``images_Y`` is None)."""
    import psutil

    from .conv_arrays import pair_kernels

    budget = min(ARRAY_FOLD_BYTES, psutil.virtual_memory().available // 4)
    return pair_kernels(np, layers, images_X, images_Y, memory_bytes=budget, progress=progress)


def _check_workspace(needed: int, rows: int, shape: tuple[int, ...]) -> None:
    """Refuse workspaces beyond the free memory (pooling read-outs hold
    ``(H W)(H+2)(W+2)`` entries per covariance: 140 GB per thread at 256 x 256)."""
    import psutil

    from ..units import format_bytes

    free = psutil.virtual_memory().available
    if needed > 0.9 * free:
        raise InvalidParameterError(
            f"images of {shape[0]} x {shape[1]} need {format_bytes(needed)} of workspace for a "
            f"pooling read-out ({rows} covariances of (H W)(H+2)(W+2) entries per thread), more "
            f"than the {format_bytes(free)} free; use smaller images or a Flatten read-out "
            "(cnn-flatten-L)"
        )


def _encode(
    layers: Sequence[Layer], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    r"""The network as the compiled loops (:mod:`.conv_loops`) take it, or None where they
    cannot run it: the offset of each activation's variance map in an image's flat row
    (a bordered plane; one entry after the read-out; last: the row's length), the layer
    codes, and each step's parameters (:math:`\sigma_w^2, \sigma_b^2` of a ``Conv`` or
    ``Dense``, an activation's own, the empty branches of a ``Parallel``).

    The loops run 3 x 3 'SAME' convolutions of stride 1, 2 x 2 pools of stride 2, the
    activations with a compiled rule (:func:`_activation_code`) and ``Parallel`` blocks
    of them before the read-out (not nested); any other network runs in the array fold.
    """
    from . import conv_loops

    codes: list[int] = []
    params: list[tuple[float, ...]] = []
    offsets = [0]
    height, width = shape
    spatial = True  # before the read-out (an activation after it needs one entry)

    def add(code: int, values: tuple[float, ...] = ()) -> None:
        codes.append(code)
        params.append((*values, 0.0, 0.0, 0.0)[:3])

    def encode(layer: Layer, in_branch: bool) -> bool:
        nonlocal height, width, spatial
        if isinstance(layer, Conv | Dense):
            if isinstance(layer, Conv) and (layer.filter, layer.stride, layer.padding) != (
                (3, 3),
                (1, 1),
                "SAME",
            ):
                return False
            code = conv_loops.CONV if isinstance(layer, Conv) else conv_loops.DENSE
            add(code, (float(layer.w_std) ** 2, float(layer.b_std) ** 2))
        elif isinstance(layer, AvgPool):
            if (layer.window, layer.stride) != ((2, 2), (2, 2)):
                return False
            add(conv_loops.POOL)
            height, width = height // 2, width // 2  # sizes checked by the caller
        elif isinstance(layer, GlobalAvgPool | Flatten):
            add(conv_loops.GLOBAL_POOL if isinstance(layer, GlobalAvgPool) else conv_loops.FLATTEN)
            spatial = False
        elif isinstance(layer, Parallel):
            if in_branch or not spatial:
                return False
            add(conv_loops.FAN_OUT)
            filled = [branch for branch in layer.branches if branch]
            for number, branch in enumerate(filled):
                if number:
                    add(conv_loops.BRANCH)
                if not all(encode(step, True) for step in branch):
                    return False
            identities = len(layer.branches) - len(filled) - (0 if filled else 1)
            add(conv_loops.FAN_IN, (float(identities),))
        else:
            activation = _activation_code(layer)
            if activation is None:
                return False
            add(*activation)
            offsets.append(offsets[-1] + ((height + 2) * (width + 2) if spatial else 1))
        return True

    if not all(encode(layer, False) for layer in layers):
        return None
    return (
        np.array(offsets, dtype=np.int64),
        np.array(codes, dtype=np.int64),
        np.array(params, dtype=np.float64).reshape(len(codes), 3),
    )


def _activation_code(layer: Layer) -> tuple[int, tuple[float, ...]] | None:
    """An activation's code in the compiled loops and its parameters, or None for one
    without a compiled rule (a subclass may change the rule: only these classes)."""
    from . import conv_loops

    kind = type(layer)
    if kind is Relu:
        return conv_loops.RELU, ()
    if isinstance(layer, ABRelu) and kind in (ABRelu, LeakyRelu, Abs):
        return conv_loops.ABRELU, (float(layer.a), float(layer.b))
    if isinstance(layer, Erf) and kind is Erf:
        return conv_loops.ERF, (float(layer.a), float(layer.b), float(layer.c))
    if kind is Gelu:
        return conv_loops.GELU, ()
    if isinstance(layer, LayerNorm) and kind is LayerNorm:
        return conv_loops.LAYERNORM, (float(layer.eps),)
    if kind is Identity:
        return conv_loops.IDENTITY, ()
    return None


def as_images(X: object, image_shape: tuple[int, ...] | None, name: str = "X") -> np.ndarray:
    """Images as float64 of shape (n, H, W, C)."""
    array = np.asarray(X)
    if array.ndim >= 1 and len(array) == 0:
        raise InvalidInputError(f"{name} holds no images (shape {array.shape})")
    if array.ndim == 2:
        if image_shape is None:
            raise InvalidParameterError(
                f"{name} holds flat rows of {array.shape[1]} values; pass image_shape=(H, W) or "
                "(H, W, C) (a Sample's image_shape), or images of shape (n, H, W, C)"
            )
        if math.prod(image_shape) != array.shape[1]:
            raise InvalidParameterError(
                f"image_shape {tuple(image_shape)} holds {math.prod(image_shape)} values but "
                f"the rows of {name} have {array.shape[1]}"
            )
        array = array.reshape(len(array), *image_shape)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or min(array.shape[1:]) < 1:
        raise InvalidParameterError(
            f"{name} must be images of shape (n, H, W, C), (n, H, W) or flat rows, got "
            f"shape {array.shape}"
        )
    checked = check_matrix(name, array.reshape(len(array), -1)).astype(np.float64, copy=False)
    return checked.reshape(array.shape)

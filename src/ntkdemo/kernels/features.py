r"""Random features whose inner products approximate a network's kernels (an
approximation, labelled as one wherever it is used).

An infinitely wide network's kernels are the limits of a random finite network's (Lee
et al. 2018; Jacot et al. 2018; Novak et al. 2019): the NNGP is the covariance of the
inputs of its read-out, the NTK the inner product of its output's parameter gradients.
:class:`RandomFeatures` draws one finite network of the architecture, in the NTK
parameterisation of neural-tangents' ``stax`` (standard normal weights scaled by
:math:`w_{std}/\sqrt{\text{fan in}}`, biases by :math:`b_{std}`), with ``width``
channels in every hidden layer but the last before the read-out, which has ``D``
(``dimension``, less one column for the read-out's bias when ``b_std > 0``). Of the
read-out :math:`f(x) = \frac{w_{std}}{\sqrt D} v \cdot h(x) + b_{std} b`, it keeps

.. math::

    \psi(x) = \Big(\frac{w_{std}}{\sqrt D} h(x),\ b_{std}\Big), \qquad
    \phi(x) = \Big(\psi(x),\ S\big(\nabla_{\theta_{hidden}} f(x)\big)\Big),

the NNGP features :math:`\psi` (the gradient of :math:`f` with respect to the
read-out's weights) and the NTK features :math:`\phi`: :math:`\psi` and a CountSketch
:math:`S` (Charikar, Chen and Farach-Colton 2002) of the gradient with respect to every
other layer's weights and biases into ``dimension`` buckets, each entry added with a
random sign to a random bucket. A convolution's weight gradient is
:math:`\frac{w_{std}}{\sqrt{\text{fan in}}}\sum_p \mathrm{patch}_p \otimes \delta_p`,
its bias's :math:`b_{std} \sum_p \delta_p`, with :math:`\delta_p` the output's
derivative by the layer's pre-activations at position :math:`p` (back-propagated).

**Which are unbiased.** The sketch is unbiased for the drawn network's gradients,
:math:`\mathbb E_S \langle S g, S g' \rangle = \langle g, g' \rangle`, with variance
about :math:`\|g\|^2\|g'\|^2 / D`. The drawn network's kernels are unbiased for the
exact ones when one random layer stands before the read-out (``cnn-gap-1``,
``fc-1``: its pre-activations are exactly Gaussian); deeper, they are consistent, with
an error falling as :math:`\text{width}^{-1/2}`, and biased at finite width. Most of
that error is one factor over the whole kernel (the few channels' weights scale every
image alike), so by default the features are *calibrated*: scaled to the exact kernels
on a few images (:meth:`RandomFeatures.calibrate`), which leaves them consistent but
not unbiased. Every run that uses them measures the error against the exact kernel
(:func:`ntkdemo.solvers.features.approximation_error`).

**Precision.** The network runs in float64, or in float32 where asked (``dtype``):
about 1.5 times as fast, with the features' Gram matrix within about 1e-5 of float64's,
far below their approximation error; the features are returned as float64 either way.

Supported: ``Conv`` (any filter, stride, padding), ``AvgPool``, ``GlobalAvgPool``,
``Flatten``, ``Dense`` and the activations acting entry by entry (their
:meth:`~.activations.Activation.finite`); the read-out's input must be the last hidden
layer's channels (a ``GlobalAvgPool`` read-out, or ``Dense`` layers after a ``Flatten``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import DTypeLike
from scipy import sparse

from ..errors import InvalidParameterError
from ..validation import check_positive_int
from .activations import Activation
from .architecture import network_layers
from .conv import as_images
from .layers import AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Layer, Parallel, Window

__all__ = [
    "FEATURE_DTYPES",
    "RandomFeatures",
    "check_feature_dtype",
    "check_feature_layers",
    "conv_features",
]

FEATURE_DTYPES = ("float64", "float32")
"""The precisions a random network runs in (module docstring, "Precision")."""


@dataclass(frozen=True)
class _Linear:
    r"""A drawn ``Conv`` or ``Dense`` (a 1 x 1 convolution of a 1 x 1 image): standard
    normal ``weights`` of shape (filter height, filter width, C_in, C_out) and ``bias``,
    its windows on its input, and the sketch of its weight and bias gradients.

    The gradient is :math:`\sum_p a_p \otimes \delta_p`, with :math:`a_p` the patch
    at :math:`p` scaled by ``weight_scale`` and the bias's ``bias_scale`` appended. Where
    it has fewer entries than positions times buckets it is formed and CountSketched
    (``count``: a sparse matrix of shape (dimension, entries), one signed 1 per column);
    else it is TensorSketched without being formed (Pham and Pagh 2013): with
    CountSketches :math:`C_1` of the patches (``patch_sketch``) and :math:`C_2` of the
    :math:`\delta_p` (``delta_sketch``),
    :math:`\mathcal F^{-1}\big(\sum_p \mathcal F(C_1 a_p) \odot \mathcal F(C_2
    \delta_p)\big)`, a CountSketch of the whole gradient whose bucket of entry
    :math:`(k, c)` is the sum of theirs modulo the dimension.
    """

    windows: tuple[Window, Window]
    weights: np.ndarray
    bias: np.ndarray
    weight_scale: float
    bias_scale: float
    count: sparse.csr_matrix | None
    patch_sketch: sparse.csr_matrix | None
    delta_sketch: sparse.csr_matrix | None


@dataclass(frozen=True)
class _Pool:
    """An ``AvgPool`` and its windows on its input."""

    windows: tuple[Window, Window]


_Step = _Linear | _Pool | Activation | GlobalAvgPool | Flatten


class RandomFeatures:
    """One random finite network of an architecture, mapping images to NNGP and NTK
    features (see the module's docstring for the maths and which are unbiased).

    Parameters
    ----------
    architecture : str or sequence of layers
        As :func:`~ntkdemo.kernels.conv_kernels` takes it.
    image_shape : tuple of int
        ``(H, W)`` or ``(H, W, C)`` of one image.
    dimension : int, default=4096
        Columns of the NNGP features (the last hidden layer's channels, and the read-out's
        bias), and of the sketch of the other layers' gradients: the NTK features have
        ``2 * dimension``.
    width : int, default=128
        Channels of every other hidden layer.
    w_std, b_std : float, default=1.0 and 0.0
        For a named architecture, as :func:`~ntkdemo.kernels.conv_kernels`.
    seed : int, default=0
        Seed of the weights and the sketch.
    dtype : numpy dtype, default=np.float64
        Precision of the network's arithmetic (float64 or float32; the weights are
        drawn in float64 and rounded, so both precisions run the same network).

    Raises
    ------
    InvalidParameterError
        If the architecture holds a layer without a finite form here (``Parallel``,
        ``LayerNorm``) or a read-out whose input is not the last hidden layer's channels,
        or a size is not a whole number >= 1 (``dimension`` >= 2 with a bias).
    """

    def __init__(
        self,
        architecture: str | Sequence[Layer],
        image_shape: tuple[int, ...],
        *,
        dimension: int = 4096,
        width: int = 128,
        w_std: float = 1.0,
        b_std: float = 0.0,
        seed: int = 0,
        dtype: DTypeLike = np.float64,
    ) -> None:
        layers = network_layers(architecture, w_std, b_std)
        self.dtype = check_feature_dtype("dtype", dtype)
        self.dimension = check_positive_int("dimension", dimension)
        self.width = check_positive_int("width", width)
        shape = tuple(int(value) for value in image_shape)
        self.image_shape = (shape[0], shape[1], shape[2] if len(shape) == 3 else 1)
        readout = layers[-1]
        assert isinstance(readout, Dense)  # check_layers: a Dense last
        self.readout_weight, self.readout_bias = float(readout.w_std), float(readout.b_std)
        channels = self.dimension - (1 if self.readout_bias else 0)
        if channels < 1:
            raise InvalidParameterError(
                f"dimension must be >= 2 when the read-out has a bias, got {dimension}"
            )
        check_feature_layers(layers)
        rng = np.random.default_rng(seed)
        self.readout = rng.standard_normal(channels).astype(self.dtype)
        self.layers = layers
        self.scales = (1.0, 1.0)
        self.steps = _draw(
            layers[:-1], self.image_shape, self.width, channels, self.dimension, rng, self.dtype
        )

    def calibrate(self, X: object, count: int = 32) -> tuple[float, float]:
        r"""Set the features' scales to the exact kernels' on the first ``count`` images
        of ``X``: each kernel's features are multiplied by :math:`\sqrt{c}`, with
        :math:`c = \langle \hat K, K \rangle / \langle \hat K, \hat K \rangle` on
        those images' Gram matrices (``count (count + 1) / 2`` exact pairs).

        A drawn network's kernels are off by a nearly global factor, from its few
        channels' weights (about :math:`2.2 / \sqrt{\text{width}}` for a ReLU layer on
        images that look alike), which the rest of their error is small beside; the
        factor changes no prediction at ridge 0, but it is what a ridge is measured
        against. Calibrated features are consistent but no longer unbiased.

        Returns
        -------
        nngp_scale, ntk_scale : float
            The multipliers now applied.
        """
        from .conv import conv_kernels

        images = as_images(X, self.image_shape)[: check_positive_int("count", count)]
        self.scales = (1.0, 1.0)
        exact = conv_kernels(images, architecture=self.layers)
        drawn = self.transform(images)
        factors = []
        for features, kernel in zip(drawn, exact, strict=True):
            estimate = features @ features.T
            factors.append(
                math.sqrt(max(np.vdot(estimate, kernel), 0.0) / np.vdot(estimate, estimate))
            )
        self.scales = (factors[0], factors[1])
        return self.scales

    def transform(
        self,
        X: object,
        *,
        batch_size: int | None = None,
        progress: Callable[[Iterable], Iterable] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """NNGP and NTK features of images (flat rows of ``image_shape`` or images).

        Returns
        -------
        nngp_features : ndarray of shape (n_samples, dimension), float64
        ntk_features : ndarray of shape (n_samples, 2 * dimension), float64
        """
        images = as_images(X, self.image_shape).astype(self.dtype, copy=False)
        if images.shape[1:] != self.image_shape:
            raise InvalidParameterError(
                f"the images have shape {images.shape[1:]}, the features were drawn for "
                f"{self.image_shape}"
            )
        batch = batch_size or self._batch_rows()
        nngp = np.empty((len(images), self.dimension))
        ntk = np.empty((len(images), 2 * self.dimension))
        starts = range(0, len(images), batch)
        for start in progress(starts) if progress else starts:
            rows = slice(start, start + batch)
            nngp[rows], ntk[rows] = self._batch(images[rows])
        return nngp, ntk

    def _batch_rows(self) -> int:
        """Images per batch: each array a layer makes (its patches, the formed gradient
        or the two sketches and their spectra) about 32 MB at most.

        Small batches keep the arrays below glibc's largest mmap threshold (32 MB), so
        the allocator reuses memory from one batch to the next; a larger array is
        mapped afresh each time, and faulting its pages in cost more than the
        arithmetic on the machines measured (docs/benchmarks.md, session 26)."""
        largest = 0
        for step in self.steps:
            if isinstance(step, _Linear):
                positions = step.windows[0].count * step.windows[1].count
                patch = step.weights[..., 0].size + 1
                work = (
                    patch * step.weights.shape[3]
                    if step.count is not None
                    else 4 * positions * self.dimension
                )
                largest = max(largest, self.dtype.itemsize * max(positions * patch, work))
        return max(1, min(256, (32 << 20) // largest))

    def _batch(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward through the drawn network keeping what the backward pass needs, then
        the gradients back, sketched layer by layer."""
        kept: list[Any] = []
        x = images
        for step in self.steps:
            x, memo = _forward(step, x)
            kept.append(memo)
        hidden = x.reshape(len(x), -1)  # (B, channels): the read-out's input
        scale = self.readout_weight / math.sqrt(hidden.shape[1])
        psi = scale * hidden
        if self.readout_bias:
            bias = np.full((len(x), 1), self.readout_bias, dtype=self.dtype)
            psi = np.concatenate([psi, bias], axis=1)
        sketch = np.zeros((len(x), self.dimension), dtype=self.dtype)
        delta = np.broadcast_to(scale * self.readout, x.shape).copy()
        for index in range(len(self.steps) - 1, -1, -1):
            first = index == 0
            delta = _backward(self.steps[index], delta, kept[index], sketch, need_input=not first)
        nngp_scale, ntk_scale = self.scales
        return nngp_scale * psi, ntk_scale * np.concatenate([psi, sketch], axis=1)


def conv_features(
    X: object,
    *,
    architecture: str | Sequence[Layer],
    dimension: int = 4096,
    width: int = 128,
    w_std: float = 1.0,
    b_std: float = 0.0,
    seed: int = 0,
    image_shape: tuple[int, ...] | None = None,
    calibration: int = 32,
    progress: Callable[[Iterable], Iterable] | None = None,
    dtype: DTypeLike = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    r"""NNGP and NTK random features of images: approximations, whose inner products
    estimate :func:`~ntkdemo.kernels.conv_kernels` (``nngp @ nngp.T`` and
    ``ntk @ ntk.T``; module docstring: which are unbiased, and the error's size).

    Parameters
    ----------
    X : array-like of shape (n_samples, H, W, C), (n_samples, H, W) or (n_samples, H * W * C)
        Images; flat rows need ``image_shape``.
    architecture : str or sequence of layers
        A network with a ``GlobalAvgPool`` read-out (``cnn-gap-L``, ``myrtle5``, ...) or
        ``Dense`` layers after a ``Flatten`` (``fc-L``).
    dimension, width, w_std, b_std, seed
        As :class:`RandomFeatures`.
    image_shape : tuple of int, optional
        ``(H, W)`` or ``(H, W, C)``, for flat rows.
    calibration : int, default=32
        Images of ``X`` (the first) whose exact kernels set the features' scales
        (:meth:`RandomFeatures.calibrate`); 0: none, the drawn network as it is.
    progress : callable, optional
        Wraps the iterator over batches of images.
    dtype : numpy dtype, default=np.float64
        Precision of the network's arithmetic (:class:`RandomFeatures`).

    Returns
    -------
    nngp_features : ndarray of shape (n_samples, dimension)
    ntk_features : ndarray of shape (n_samples, 2 * dimension)

    Examples
    --------
    >>> import numpy as np
    >>> from ntkdemo.kernels import conv_features, conv_kernels
    >>> X = np.random.default_rng(0).standard_normal((4, 8, 8))
    >>> nngp, ntk = conv_features(X, architecture="cnn-gap-1", dimension=20000)
    >>> exact = conv_kernels(X, architecture="cnn-gap-1")[1]
    >>> bool(np.abs(ntk @ ntk.T - exact).max() < 0.05 * exact.max())
    True
    """
    images = as_images(X, image_shape)
    features = RandomFeatures(
        architecture,
        images.shape[1:],
        dimension=dimension,
        width=width,
        w_std=w_std,
        b_std=b_std,
        seed=seed,
        dtype=dtype,
    )
    if calibration:
        features.calibrate(images, calibration)
    return features.transform(images, progress=progress)


def check_feature_dtype(name: str, value: DTypeLike) -> np.dtype:
    """``value`` as one of the :data:`FEATURE_DTYPES` (a name or a numpy type).

    Raises
    ------
    InvalidParameterError
        For any other precision, or what is no dtype at all.
    """
    try:
        dtype = np.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in FEATURE_DTYPES:
        raise InvalidParameterError(f"{name} must be float64 or float32, got {value!r}")
    return dtype


def check_feature_layers(layers: Sequence[Layer]) -> None:
    """Refuse what the drawn network cannot run: ``Parallel`` blocks, activations that
    do not act entry by entry, a read-out fed more than the last hidden layer's channels.

    Raises
    ------
    InvalidParameterError
    """
    for layer in layers:
        if isinstance(layer, Parallel):
            raise InvalidParameterError(
                "random features do not run Parallel blocks yet; use the exact kernel "
                "(conv_kernels) for residual networks"
            )
        if isinstance(layer, Activation) and layer.finite(np.zeros(1)) is None:
            raise InvalidParameterError(
                f"random features need activations acting entry by entry; {layer} does not "
                "(use the exact kernel)"
            )
    hidden = [i for i, layer in enumerate(layers[:-1]) if isinstance(layer, Conv | Dense)]
    if not hidden:
        raise InvalidParameterError(
            "random features need a hidden Conv or Dense layer before the read-out; a "
            "network without one is linear: use its exact kernel (conv_kernels)"
        )
    if any(isinstance(layer, Flatten) for layer in layers[hidden[-1] + 1 : -1]):
        raise InvalidParameterError(
            "random features need a read-out fed by the last hidden layer's channels: a "
            "GlobalAvgPool after the last Conv, or Dense layers after a Flatten "
            "(cnn-flatten-L networks cost microseconds per pair exactly: use conv_kernels)"
        )


def _draw(
    layers: Sequence[Layer],
    shape: tuple[int, int, int],
    width: int,
    channels: int,
    dimension: int,
    rng: np.random.Generator,
    dtype: np.dtype,
) -> list[_Step]:
    """The network's steps for inputs of ``shape``: weights drawn, ``width`` channels in
    every hidden linear layer but the last (``channels``), each with its sketch into
    ``dimension`` buckets."""
    last = max(i for i, layer in enumerate(layers) if isinstance(layer, Conv | Dense))
    height, breadth, depth = shape
    steps: list[_Step] = []
    for index, layer in enumerate(layers):
        if isinstance(layer, Conv | Dense):
            windows = (
                layer.windows(height, breadth)
                if isinstance(layer, Conv)
                else (Window(1, 1, 0, 1), Window(1, 1, 0, 1))
            )
            outputs = channels if index == last else width
            size = (windows[0].size, windows[1].size)
            weights = rng.standard_normal((*size, depth, outputs)).astype(dtype)
            patch = size[0] * size[1] * depth + 1  # the bias's constant appended
            positions = windows[0].count * windows[1].count
            tensor = patch * outputs > positions * dimension
            steps.append(
                _Linear(
                    windows,
                    weights,
                    rng.standard_normal(outputs).astype(dtype),
                    float(layer.w_std) / math.sqrt(patch - 1),
                    float(layer.b_std),
                    None if tensor else _count_sketch(patch * outputs, dimension, rng, dtype),
                    _count_sketch(patch, dimension, rng, dtype) if tensor else None,
                    _count_sketch(outputs, dimension, rng, dtype) if tensor else None,
                )
            )
            height, breadth, depth = windows[0].count, windows[1].count, outputs
        elif isinstance(layer, AvgPool):
            windows = layer.windows(height, breadth)
            steps.append(_Pool(windows))
            height, breadth = windows[0].count, windows[1].count
        elif isinstance(layer, GlobalAvgPool | Flatten):
            steps.append(layer)
            depth = depth if isinstance(layer, GlobalAvgPool) else height * breadth * depth
            height = breadth = 1
        elif isinstance(layer, Activation):
            steps.append(layer)
    return steps


def _count_sketch(
    entries: int, dimension: int, rng: np.random.Generator, dtype: type | np.dtype
) -> sparse.csr_matrix:
    """A CountSketch of ``entries`` values into ``dimension`` buckets: a sparse matrix
    with one random sign in a random row of each column."""
    signs = rng.choice(np.array([-1.0, 1.0]), entries).astype(dtype)
    buckets = rng.integers(0, dimension, entries)
    return sparse.csr_matrix((signs, (buckets, np.arange(entries))), shape=(dimension, entries))


def _window_slice(window: Window, offset: int) -> slice:
    """The inputs (of the padded axis) that offset ``offset`` of every window reads."""
    return slice(offset, offset + window.stride * (window.count - 1) + 1, window.stride)


def _padded(x: np.ndarray, windows: tuple[Window, Window]) -> np.ndarray:
    """``x`` with the zeros its windows read before and after it (height and width)."""
    pads = [(0, 0)]
    for axis, window in zip((1, 2), windows, strict=True):
        after = (window.count - 1) * window.stride + window.size - x.shape[axis] - window.before
        pads.append((window.before, max(after, 0)))
    return np.pad(x, [*pads, (0, 0)]) if any(sum(p) for p in pads) else x


def _patches(step: _Linear, x: np.ndarray) -> np.ndarray:
    """The scaled patches :math:`a_p` a linear step reads, bias constant appended: shape
    (batch, positions, filter height * filter width * C_in + 1), contiguous."""
    rows, columns = step.windows
    padded = _padded(x, step.windows)
    channels = x.shape[3]
    patch = rows.size * columns.size * channels + 1
    patches = np.empty((len(x), rows.count * columns.count, patch), dtype=x.dtype)
    grid = patches.reshape(len(x), rows.count, columns.count, patch)
    for index, (i, j) in enumerate(np.ndindex(rows.size, columns.size)):
        np.multiply(
            padded[:, _window_slice(rows, i), _window_slice(columns, j), :],
            step.weight_scale,
            out=grid[..., index * channels : (index + 1) * channels],
        )
    patches[:, :, -1] = step.bias_scale
    return patches


def _forward(step: _Step, x: np.ndarray) -> tuple[np.ndarray, Any]:
    """The step's output and what its backward pass needs."""
    if isinstance(step, _Linear):
        patches = _patches(step, x)
        outputs = step.weights.shape[3]
        parameters = np.concatenate([step.weights.reshape(-1, outputs), step.bias[None]])
        out = patches @ parameters
        rows, columns = step.windows
        return out.reshape(len(x), rows.count, columns.count, outputs), (patches, x.shape)
    if isinstance(step, _Pool):
        rows, columns = step.windows
        out = np.zeros((len(x), rows.count, columns.count, x.shape[3]), dtype=x.dtype)
        for i in range(rows.size):
            for j in range(columns.size):
                out += x[:, _window_slice(rows, i), _window_slice(columns, j), :]
        return out / (rows.size * columns.size), x.shape
    if isinstance(step, GlobalAvgPool):
        return x.mean(axis=(1, 2), keepdims=True), x.shape
    if isinstance(step, Flatten):
        return x.reshape(len(x), 1, 1, -1), x.shape
    finite = step.finite(x)
    assert finite is not None  # check_feature_layers: every activation acts entry by entry
    return finite


def _backward(
    step: _Step, delta: np.ndarray, memo: Any, sketch: np.ndarray, *, need_input: bool
) -> np.ndarray:
    """The output's derivative by the step's input, from that by its output (``delta``);
    a linear step adds the sketch of its weight and bias gradients to ``sketch``."""
    if isinstance(step, _Linear):
        patches, shape = memo
        rows, columns = step.windows
        batch, outputs = len(delta), delta.shape[3]
        flat_delta = delta.reshape(batch, -1, outputs)
        if step.count is not None:
            gradient = np.matmul(patches.transpose(0, 2, 1), flat_delta).reshape(batch, -1)
            sketch += (step.count @ gradient.T).T
        else:
            sketch += _tensor_sketch(step, patches, flat_delta, sketch.shape[1])
        if not need_input:
            return delta
        padded_shape = (
            batch,
            (rows.count - 1) * rows.stride + rows.size,
            (columns.count - 1) * columns.stride + columns.size,
            shape[3],
        )
        into = np.zeros(
            (
                batch,
                max(padded_shape[1], rows.before + shape[1]),
                max(padded_shape[2], columns.before + shape[2]),
                shape[3],
            ),
            dtype=delta.dtype,
        )
        rows_delta = flat_delta.reshape(-1, outputs)
        for i, j in np.ndindex(rows.size, columns.size):
            part = rows_delta @ (step.weight_scale * step.weights[i, j].T)
            into[:, _window_slice(rows, i), _window_slice(columns, j), :] += part.reshape(
                batch, rows.count, columns.count, shape[3]
            )
        return into[
            :, rows.before : rows.before + shape[1], columns.before : columns.before + shape[2], :
        ]
    if isinstance(step, _Pool):
        rows, columns = step.windows
        into = np.zeros(memo, dtype=delta.dtype)
        share = delta / (rows.size * columns.size)
        for i in range(rows.size):
            for j in range(columns.size):
                into[:, _window_slice(rows, i), _window_slice(columns, j), :] += share
        return into
    if isinstance(step, GlobalAvgPool):
        shape = memo
        return np.broadcast_to(delta / (shape[1] * shape[2]), shape).copy()
    if isinstance(step, Flatten):
        return delta.reshape(memo)
    return delta * memo  # an Activation: memo holds its slopes


def _tensor_sketch(
    step: _Linear, patches: np.ndarray, deltas: np.ndarray, dimension: int
) -> np.ndarray:
    r"""The TensorSketch of :math:`\sum_p a_p \otimes \delta_p` for each image, from
    ``patches`` (batch, positions, patch) and ``deltas`` (batch, positions, channels)."""
    assert step.patch_sketch is not None and step.delta_sketch is not None
    batch, positions = deltas.shape[:2]
    left = (step.patch_sketch @ patches.reshape(batch * positions, -1).T).T
    right = (step.delta_sketch @ deltas.reshape(batch * positions, -1).T).T
    spectra = np.fft.rfft(left, axis=1) * np.fft.rfft(right, axis=1)
    summed = spectra.reshape(batch, positions, -1).sum(axis=1)
    return np.fft.irfft(summed, n=dimension, axis=1)

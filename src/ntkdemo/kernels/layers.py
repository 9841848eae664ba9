r"""The layers of a network, as values: what each is, where it may stand, what it does
to the positions.

``Conv`` and ``AvgPool`` carry their windows (:class:`Window`: filter or window, stride,
padding); ``GlobalAvgPool`` and ``Flatten`` end the spatial part; ``Dense`` acts after
it; ``Parallel`` sums independent branches; the activations of :mod:`.activations` act on
each position. Their kernel rules are the folds' (:mod:`.conv_arrays`, the reference for
every composition, and :mod:`.conv_loops`, compiled for the networks of 3 x 3
convolutions and 2 x 2 pools: ``conv._encode``); :func:`check_layers` decides once which
sequences are networks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidParameterError
from ..validation import check_nonnegative_float
from .activations import Activation

__all__ = [
    "AvgPool",
    "Conv",
    "Dense",
    "Flatten",
    "GlobalAvgPool",
    "Layer",
    "Parallel",
    "Window",
    "check_layers",
    "every_layer",
    "needs_full_covariance",
    "spatial_windows",
]


@dataclass(frozen=True)
class Window:
    """Where a window of ``size`` positions, moved by ``stride``, reads along one axis of
    ``length`` positions: ``before`` zeros padded first, ``count`` outputs.

    'SAME' keeps ``ceil(length / stride)`` outputs and pads ``max((count - 1) stride +
    size - length, 0)`` zeros, half of them (rounded down) before, as XLA does; 'VALID'
    pads none and keeps the windows inside.
    """

    size: int
    stride: int
    before: int
    count: int

    @classmethod
    def along(cls, length: int, size: int, stride: int, padding: str) -> Window:
        if padding == "SAME":
            count = -(-length // stride)
            total = max((count - 1) * stride + size - length, 0)
            return cls(size, stride, total // 2, count)
        return cls(size, stride, 0, (length - size) // stride + 1 if length >= size else 0)

    @classmethod
    def pair(
        cls,
        height: int,
        width: int,
        size: tuple[int, int],
        stride: tuple[int, int],
        padding: str,
    ) -> tuple[Window, Window]:
        """The windows along the height and the width of an input of ``height`` x
        ``width`` for a filter or pooling window of ``size`` and ``stride``."""
        return (
            cls.along(height, size[0], stride[0], padding),
            cls.along(width, size[1], stride[1], padding),
        )

    def mirror_symmetric(self, length: int) -> bool:
        """Whether mirroring the input mirrors the outputs' windows: window ``j`` reads
        ``[j s - l, j s - l + f)``, so the mirror of window ``j`` is window
        ``count - 1 - j`` iff ``(count - 1) s = length + 2 l - f``."""
        return (self.count - 1) * self.stride == length + 2 * self.before - self.size


def _pair(value: object, name: str) -> tuple[int, int]:
    """``value`` as a pair of whole numbers >= 1 (an int is used twice)."""
    if isinstance(value, int | np.integer):
        pair: tuple = (value, value)
    else:
        pair = tuple(value) if isinstance(value, Iterable) else ()
    if len(pair) != 2 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in pair
    ):
        raise InvalidParameterError(f"{name} must be two whole numbers >= 1, got {value!r}")
    return int(pair[0]), int(pair[1])


@dataclass(frozen=True)
class Conv:
    """A convolution (neural-tangents' ``stax.Conv``): ``filter`` positions (height,
    width), moved by ``stride``, zero ``padding`` 'SAME' or 'VALID'; by default 3 x 3,
    stride 1, 'SAME'."""

    w_std: float
    b_std: float
    filter: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: str = "SAME"

    def __post_init__(self) -> None:
        object.__setattr__(self, "filter", _pair(self.filter, "Conv filter"))
        object.__setattr__(self, "stride", _pair(self.stride, "Conv stride"))
        if self.padding not in ("SAME", "VALID"):
            raise InvalidParameterError(
                f"Conv padding must be 'SAME' or 'VALID', got {self.padding!r}"
            )

    def windows(self, height: int, width: int) -> tuple[Window, Window]:
        """The windows along the height and the width of its input."""
        return Window.pair(height, width, self.filter, self.stride, self.padding)


@dataclass(frozen=True)
class AvgPool:
    """Average pooling over ``window`` positions moved by ``stride`` (None: the window),
    'VALID' (neural-tangents' ``stax.AvgPool``): by default 2 x 2 blocks, an odd last row
    or column dropped."""

    window: tuple[int, int] = (2, 2)
    stride: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", _pair(self.window, "AvgPool window"))
        stride = self.window if self.stride is None else _pair(self.stride, "AvgPool stride")
        object.__setattr__(self, "stride", stride)

    def windows(self, height: int, width: int) -> tuple[Window, Window]:
        """The windows along the height and the width of its input."""
        return Window.pair(height, width, self.window, self.stride or self.window, "VALID")


@dataclass(frozen=True)
class GlobalAvgPool:
    """The mean over all positions: ends the spatial part."""


@dataclass(frozen=True)
class Flatten:
    """All positions as one feature vector: ends the spatial part."""


@dataclass(frozen=True)
class Dense:
    """A fully connected read-out layer."""

    w_std: float
    b_std: float


@dataclass(frozen=True, init=False)
class Parallel:
    r"""Branches applied to the same input, their outputs summed (``stax.FanOut``,
    ``stax.parallel``, ``stax.FanInSum``): a branch is a sequence of layers, ``[]`` the
    identity. ``Parallel([], [Relu(), Conv(...), Relu(), Conv(...)])`` is a residual block.

    The kernels add: :math:`K' = \sum_b K_b`, :math:`\Theta' = \sum_b \Theta_b`, which is
    exact when the branches are independent in the limit: every branch but one holds a
    ``Conv`` or ``Dense`` (its own random weights). Branches keep the positions: no
    pooling or read-out inside them.
    """

    branches: tuple[tuple[Layer, ...], ...]

    def __init__(self, *branches: Sequence[Layer]) -> None:
        object.__setattr__(self, "branches", tuple(tuple(branch) for branch in branches))


Layer = Conv | Activation | AvgPool | GlobalAvgPool | Flatten | Dense | Parallel


def spatial_windows(layers: Sequence[Layer], shape: tuple[int, int]) -> list[tuple[Window, ...]]:
    """The windows of each ``Conv`` and ``AvgPool`` along the height and the width, in
    order, for images of ``shape`` (the branches of a ``Parallel`` keep the positions).

    Raises
    ------
    InvalidParameterError
        If a layer leaves no position (images too small for its filter or window).
    """
    height, width = shape
    found: list[tuple[Window, ...]] = []
    for layer in layers:
        if isinstance(layer, Conv | AvgPool):
            windows = layer.windows(height, width)
            height, width = windows[0].count, windows[1].count
            if min(height, width) < 1:
                raise InvalidParameterError(
                    f"images of {shape[0]} x {shape[1]} are too small for this architecture: "
                    f"its {layer} leaves no position"
                )
            found.append(windows)
    return found


def needs_full_covariance(layers: Sequence[Layer]) -> bool:
    """Whether any layer averages over positions (then all :math:`(p, p')` are needed;
    the branches of a ``Parallel`` hold no pooling)."""
    return any(isinstance(layer, AvgPool | GlobalAvgPool) for layer in layers)


def every_layer(layers: Sequence[Layer]) -> Iterator[Layer]:
    """The layers in order, those of each ``Parallel``'s branches in its place."""
    for layer in layers:
        yield layer
        if isinstance(layer, Parallel):
            for branch in layer.branches:
                yield from every_layer(branch)


def check_layers(layers: Sequence[Layer]) -> tuple[Layer, ...]:
    """The layers, checked: spatial steps, one read-out, then ``Dense`` only; every
    activation after a ``Conv`` or ``Dense``; every ``Parallel`` a sum of independent
    branches without pooling."""
    layers = tuple(layers)
    ends = [i for i, layer in enumerate(layers) if isinstance(layer, GlobalAvgPool | Flatten)]
    if len(ends) != 1 or not layers or not isinstance(layers[-1], Dense):
        raise InvalidParameterError(
            "a convolutional architecture needs exactly one GlobalAvgPool or Flatten, and "
            f"a Dense layer last; got {[type(layer).__name__ for layer in layers]}"
        )
    end = ends[0]
    if any(isinstance(layer, Dense) for layer in every_layer(layers[:end])) or any(
        isinstance(layer, Conv | AvgPool) for layer in every_layer(layers[end:])
    ):
        raise InvalidParameterError(
            "Conv and AvgPool come before the GlobalAvgPool or Flatten, Dense after it"
        )
    _gaussian_after(layers, gaussian=False)
    for layer in every_layer(layers):
        if isinstance(layer, Conv | Dense):
            for name in ("w_std", "b_std"):
                value = check_nonnegative_float(name, getattr(layer, name))
                if not math.isfinite(value * value):  # a product overflows to inf, ** raises
                    raise InvalidParameterError(
                        f"{name}={value:g} of a {type(layer).__name__} layer overflows float64 "
                        f"when squared (the variance it scales by); use {name} < 1e150, "
                        "e.g. sqrt(2)"
                    )
    return layers


def _gaussian_after(layers: Sequence[Layer], gaussian: bool) -> bool:
    """Whether the output of ``layers`` is a Gaussian process when their input is (or
    not); refuses an activation whose input is not, and a ``Parallel`` whose branches
    are not independent or hold a pooling or a read-out.

    Raises
    ------
    InvalidParameterError
    """
    for layer in layers:
        if isinstance(layer, Activation) and not gaussian:
            raise InvalidParameterError(
                f"{type(layer).__name__} needs a Conv or Dense before it (with no "
                "activation between): its kernel rule holds for Gaussian inputs, which only "
                "a random affine step gives"
            )
        if isinstance(layer, Parallel):
            inside = [list(every_layer(branch)) for branch in layer.branches]
            if any(
                isinstance(step, AvgPool | GlobalAvgPool | Flatten)
                or (isinstance(step, Conv) and (step.stride, step.padding) != ((1, 1), "SAME"))
                for branch in inside
                for step in branch
            ):
                raise InvalidParameterError(
                    "the branches of a Parallel keep the positions: put AvgPool, "
                    "GlobalAvgPool, Flatten and strided or 'VALID' convolutions before or "
                    "after it"
                )
            shared = [b for b in inside if not any(isinstance(s, Conv | Dense) for s in b)]
            if not layer.branches or len(shared) > 1:
                raise InvalidParameterError(
                    f"a Parallel of {len(layer.branches)} branches, {len(shared)} of them "
                    "without a Conv or Dense: its kernels add only when the branches are "
                    "independent, so every branch but one needs a Conv or Dense of its own"
                )
            gaussian = all(_gaussian_after(branch, gaussian) for branch in layer.branches)
        else:
            keeps = isinstance(layer, AvgPool) or getattr(layer, "preserves_gaussian", False)
            gaussian = isinstance(layer, Conv | Dense) or (gaussian and keeps)
    return gaussian

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
  'SAME' or 'VALID' padding, :class:`Window`): with :math:`A` the mean over the filter's
  :math:`|F|` taps :math:`d`, :math:`(A K)(p, p') = \frac{1}{|F|} \sum_d K(s p + d,
  s p' + d)` (the same offset on both sides, so each relative offset :math:`p' - p`
  evolves on its own), :math:`K' = \sigma_w^2 A K + \sigma_b^2` and
  :math:`\Theta' = K' + \sigma_w^2 A \Theta`;
* an activation (:mod:`.activations`; here the ``Relu``, the one the compiled loops
  run): the arc-cosine step of :func:`~ntkdemo.kernels.deep.fc_kernels` entry by
  entry, with the variances :math:`q_x(p) = K_{xx}(p, p)` and :math:`q_y(p')` of each
  image (computed once per image, by the same fold on the pair :math:`(x, x)`);
  positions of zero variance (black borders at :math:`\sigma_b = 0`) give 0, never NaN;
* ``AvgPool`` (by default 2 x 2, stride 2; any window and stride, 'VALID'): the mean
  over each window's positions on both sides;
* ``Parallel``: its branches run on the same state, their kernels summed;
* ``GlobalAvgPool``: the mean over all :math:`(p, p')`; ``Flatten``: the mean over the
  diagonal :math:`p = p'`; both end the spatial part;
* ``Dense``: :math:`K' = \sigma_w^2 K + \sigma_b^2`, :math:`\Theta' = K' + \sigma_w^2 \Theta`.

The compiled loops (:mod:`.conv_loops`) run the ReLU networks of the default settings
(:func:`runs_compiled`); every other network runs in the array fold of
:mod:`.conv_arrays`, whose layer steps are these. The read-out decides what is stored:
without pooling, a ``Flatten`` read-out needs only
the entries :math:`K(p, p)` (``H W`` per pair: the conv maps them among themselves),
with pooling the whole :math:`(H W)^2`. Pairs are computed in chunks, so memory is
bounded by the chunk, never by the :math:`(n_1, n_2, H, W, H, W)` tensor.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInputError, InvalidParameterError
from ..validation import check_matrix, check_nonnegative_float
from .activations import WORDS as ACTIVATION_WORDS
from .activations import Activation, Relu
from .blocks import mirror_upper
from .in_range import check_kernel_range

__all__ = [
    "AvgPool",
    "Conv",
    "Dense",
    "Flatten",
    "GlobalAvgPool",
    "Parallel",
    "architecture_layers",
    "conv_kernels",
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
        return (
            Window.along(height, self.filter[0], self.stride[0], self.padding),
            Window.along(width, self.filter[1], self.stride[1], self.padding),
        )


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
        stride = self.stride or self.window
        return (
            Window.along(height, self.window[0], stride[0], "VALID"),
            Window.along(width, self.window[1], stride[1], "VALID"),
        )


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


def runs_compiled(layers: Sequence[Layer]) -> bool:
    """Whether the compiled fold (:mod:`.conv_loops`) runs this network: ReLU networks of
    3 x 3 'SAME' convolutions of stride 1 and 2 x 2 pools of stride 2. Any other runs in
    the array fold of :mod:`.conv_arrays`, the reference every path is held to."""
    for layer in layers:
        if isinstance(layer, Conv) and (layer.filter, layer.stride, layer.padding) != (
            (3, 3),
            (1, 1),
            "SAME",
        ):
            return False
        if isinstance(layer, AvgPool) and (layer.window, layer.stride) != ((2, 2), (2, 2)):
            return False
        if isinstance(layer, Activation | Parallel) and type(layer) is not Relu:
            return False
    return True


MYRTLE_FACTORS = {"myrtle5": (2, 1, 1), "myrtle7": (2, 2, 2), "myrtle10": (3, 3, 3)}
"""Convolutions before the first pool, between the pools, and after the second."""


def fully_connected_depth(name: object) -> int | None:
    """L of an architecture named ``fc-L`` (L >= 1), the one place such names are read;
    None for any other name or value."""
    written = re.fullmatch(r"fc-(\d+)", name) if isinstance(name, str) else None
    return int(written.group(1)) if written and int(written.group(1)) >= 1 else None


def architecture_layers(name: str, w_std: float = 1.0, b_std: float = 0.0) -> tuple[Layer, ...]:
    """The layers of a named architecture (every ``conv`` is a ``Conv`` then a ``Relu``).

    Parameters
    ----------
    name : str
        ``cnn-flatten-L`` (L convolutions, ``Flatten``, ``Dense``), ``cnn-gap-L`` (L
        convolutions, ``GlobalAvgPool``, ``Dense``), ``myrtle5``, ``myrtle7`` or
        ``myrtle10`` (f1 convolutions, ``AvgPool``, f2, ``AvgPool``, f3,
        ``GlobalAvgPool``, ``Dense``; factors in :data:`MYRTLE_FACTORS`), or ``fc-L``:
        the fully connected network of :func:`~ntkdemo.kernels.deep.fc_kernels` as
        layers of a 1 x 1 image whose channels are the features (``Flatten``, then L
        times ``Dense``, ``Relu``, then ``Dense``), layers written as words joined by
        ``+`` (:func:`written_layers`), or a JSON file of them, ``NAME.json``
        (:func:`json_layers`).
    w_std, b_std : float
        Weight and bias standard deviations of every ``Conv`` and ``Dense``.

    Raises
    ------
    InvalidParameterError
        If the name is none of these.
    """

    def convs(count: int) -> list[Layer]:
        return [layer for _ in range(count) for layer in (Conv(w_std, b_std), Relu())]

    depth = fully_connected_depth(name)
    if depth is not None:
        hidden: list[Layer] = [Dense(w_std, b_std), Relu()] * depth
        return (Flatten(), *hidden, Dense(w_std, b_std))
    written = re.fullmatch(r"cnn-(flatten|gap)-(\d+)", name)
    if written and int(written.group(2)) >= 1:
        ending: Layer = Flatten() if written.group(1) == "flatten" else GlobalAvgPool()
        return (*convs(int(written.group(2))), ending, Dense(w_std, b_std))
    if name in MYRTLE_FACTORS:
        f1, f2, f3 = MYRTLE_FACTORS[name]
        return (
            *convs(f1),
            AvgPool(),
            *convs(f2),
            AvgPool(),
            *convs(f3),
            GlobalAvgPool(),
            Dense(w_std, b_std),
        )
    if name.endswith(".json"):
        return json_layers(name, w_std, b_std)
    if "+" in name:
        return written_layers(name, w_std, b_std)
    raise InvalidParameterError(
        f"unknown architecture {name!r}; use fc-L, cnn-flatten-L, cnn-gap-L (L >= 1), "
        "myrtle5, myrtle7, myrtle10, or layers written as conv+erf+conv+erf+gap+dense"
    )


LAYER_WORDS: dict[str, Callable[..., Layer]] = {
    "conv": Conv,
    "dense": Dense,
    "pool": AvgPool,
    "gap": GlobalAvgPool,
    "flatten": Flatten,
    **ACTIVATION_WORDS,
}
"""The words of the written form of a network (:func:`written_layers`) and the layers
they make; numbers after a word, ``:``-separated, are the layer's parameters."""


def written_layers(text: str, w_std: float = 1.0, b_std: float = 0.0) -> tuple[Layer, ...]:
    """The layers of a network written as words joined by ``+``, e.g.
    ``conv+erf+conv+erf+gap+dense`` or ``conv:1.5:0.1+leaky-relu:0.1+pool+conv+abs+gap+dense``.

    Each word is a key of :data:`LAYER_WORDS`; values after it (``:``-separated) are
    the layer's parameters in order (``conv:W_STD:B_STD:FILTER:STRIDE:PADDING`` as in
    ``conv:1.5:0.1:5:2:valid``, ``pool:WINDOW:STRIDE``, ``erf:A:B:C``, ``abrelu:A:B``,
    ``leaky-relu:ALPHA``); a ``conv`` or ``dense`` without them takes ``w_std`` and
    ``b_std``. Branches in parentheses, separated by ``|``, are a
    :class:`Parallel` (an empty one the identity): ``conv+(|relu+conv+relu+conv)+relu+gap+dense``
    is a residual network. ``+`` joins layers because ``,`` separates networks in
    ``ntkdemo curve --architectures``.

    Raises
    ------
    InvalidParameterError
        If a word is unknown, its numbers do not fit the layer, or parentheses do not
        match.
    """
    layers: list[Layer] = []
    for part in _split_outside_parentheses(text, "+", text):
        part = part.strip()
        if part.startswith("(") and part.endswith(")"):
            branches = _split_outside_parentheses(part[1:-1], "|", text)
            layers.append(
                Parallel(*(written_layers(b, w_std, b_std) if b.strip() else () for b in branches))
            )
            continue
        word, *numbers = part.split(":")
        if word not in LAYER_WORDS:
            raise InvalidParameterError(
                f"unknown layer {word!r} in architecture {text!r}; use "
                f"{', '.join(LAYER_WORDS)} joined by +, and (A|B) for parallel branches"
            )
        try:
            values: list[object] = [_written_value(number) for number in numbers]
            if word in ("conv", "dense") and not values:
                values = [w_std, b_std]
            layers.append(LAYER_WORDS[word](*values))
        except (TypeError, ValueError):
            raise InvalidParameterError(
                f"layer {part!r} of architecture {text!r} takes other numbers "
                f"(see ntkdemo.kernels.{LAYER_WORDS[word].__name__})"
            ) from None
    return tuple(layers)


def json_layers(path: str, w_std: float = 1.0, b_std: float = 0.0) -> tuple[Layer, ...]:
    """The layers of a network in a JSON file: a list whose items are a layer's word of
    :data:`LAYER_WORDS` alone (``"gap"``), an object naming it with its parameters
    (``{"layer": "conv", "w_std": 1.5, "filter": [5, 5], "stride": 2, "padding":
    "VALID"}``), or ``{"parallel": [[...], [...]]}`` (branches, each such a list). A
    ``conv`` or ``dense`` without scales takes ``w_std`` and ``b_std``.

    Raises
    ------
    InvalidParameterError
        If the file cannot be read, is not such a list, or names an unknown layer or
        parameter.
    """
    import json

    try:
        with open(path) as file:
            items = json.load(file)
    except (OSError, ValueError) as exc:
        raise InvalidParameterError(
            f"cannot read the architecture file {path!r}: {exc}; it holds a JSON list of "
            'layers such as ["conv", "erf", "gap", "dense"]'
        ) from None

    def layers_of(items: object) -> tuple[Layer, ...]:
        if not isinstance(items, list):
            raise InvalidParameterError(
                f"{path!r} must hold a JSON list of layers, found {type(items).__name__}"
            )
        return tuple(layer_of(item) for item in items)

    def layer_of(item: object) -> Layer:
        if isinstance(item, dict) and set(item) == {"parallel"}:
            return Parallel(*(layers_of(branch) for branch in item["parallel"]))
        settings: dict[str, Any] = dict(item) if isinstance(item, dict) else {"layer": item}
        word = settings.pop("layer", None)
        if word not in LAYER_WORDS:
            raise InvalidParameterError(
                f"unknown layer {word!r} in {path!r}; use {', '.join(LAYER_WORDS)} or "
                '{"parallel": [...]}'
            )
        if word in ("conv", "dense"):
            settings = {"w_std": w_std, "b_std": b_std, **settings}
        for key in ("filter", "stride", "window"):
            value = settings.get(key)
            if isinstance(value, list):
                settings[key] = tuple(value)
        try:
            return LAYER_WORDS[word](**settings)
        except TypeError as exc:
            raise InvalidParameterError(f"layer {item!r} in {path!r}: {exc}") from None

    return layers_of(items)


def _written_value(text: str) -> object:
    """A written layer parameter: a whole number, a number, or a word (a padding)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.upper()


def _split_outside_parentheses(text: str, separator: str, whole: str) -> list[str]:
    """``text`` split at each ``separator`` outside parentheses (``whole`` names the
    architecture in the message when they do not match)."""
    parts, depth, start = [], 0, 0
    for position, character in enumerate(text):
        depth += {"(": 1, ")": -1}.get(character, 0)
        if depth < 0:
            break
        if character == separator and depth == 0:
            parts.append(text[start:position])
            start = position + 1
    if depth != 0:
        raise InvalidParameterError(f"the parentheses of architecture {whole!r} do not match")
    return [*parts, text[start:]]


def network_layers(
    architecture: str | Sequence[Layer], w_std: float = 1.0, b_std: float = 0.0
) -> tuple[Layer, ...]:
    """The checked layers of a network given by name (:func:`architecture_layers`, with
    ``w_std`` and ``b_std``) or as layers: spatial steps, one read-out, ``Dense`` and
    activations after it, each activation after a ``Conv`` or ``Dense``.

    Raises
    ------
    InvalidParameterError
    """
    if isinstance(architecture, str):
        return _check_layers(architecture_layers(architecture, w_std, b_std))
    return _check_layers(architecture)


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


def _check_layers(layers: Sequence[Layer]) -> tuple[Layer, ...]:
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
        A name for :func:`architecture_layers` (``w_std`` and ``b_std`` apply), ``fc-L``
        (:func:`~ntkdemo.kernels.deep.fc_kernels` at depth L, on the flattened images),
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
        if runs_compiled(layers):
            nngp, ntk = _compiled_kernels(images_X, images_Y, Y is None, layers, progress)
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


def seconds_per_pair(
    architecture: str | Sequence[Layer],
    image_shape: tuple[int, ...],
    *,
    w_std: float = 1.0,
    b_std: float = 0.0,
    images: int = 12,
) -> float:
    """Seconds one image pair of ``conv_kernels`` takes on this machine, measured.

    The Gram matrix of ``images`` random images of ``image_shape`` is computed twice
    (the first call loads or compiles the loops) and the second timed, divided by its
    pairs: a calibrated cost for estimating a whole run (every core in use).
    """
    import time

    shape = tuple(image_shape)
    rng = np.random.default_rng(0)
    sample = rng.random((images, *shape))
    conv_kernels(sample[:2], architecture=architecture, w_std=w_std, b_std=b_std)
    start = time.perf_counter()
    conv_kernels(sample, architecture=architecture, w_std=w_std, b_std=b_std)
    return (time.perf_counter() - start) / (images * (images + 1) / 2)


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
    layers: Sequence[Layer],
    progress: Callable[[Iterable], Iterable] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The fold for every pair, compiled, on every core (:mod:`.conv_loops`): each pair's
    whole position covariance where the read-out pools, else its diagonal."""
    from concurrent.futures import ThreadPoolExecutor

    from . import conv_loops

    full = needs_full_covariance(layers)
    fold = conv_loops.fold_one_pair if full else conv_loops.fold_one_pair_diagonal
    encoded = _encode(layers, images_X.shape[1:3])
    threads = max(1, min(os.cpu_count() or 1, len(images_X) * len(images_Y)))
    stored = conv_loops.workspace_entries(images_X.shape[1], images_X.shape[2], full)
    _check_workspace(threads * 4 * 8 * stored, images_X.shape[1:3])
    workspaces = np.empty((threads, 4, stored))
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
                bounds = np.linspace(start, stop, threads + 1).astype(int)
                shares = [slice(bounds[t], bounds[t + 1]) for t in range(threads)]
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
            bounds = np.linspace(start, stop, threads + 1).astype(int)  # equal shares
            shares = [(int(bounds[t]), int(bounds[t + 1])) for t in range(threads)]
            list(pool.map(task, shares, range(threads)))
    if symmetric:  # the diagonal: the pairs (x, x) the variances came from
        np.fill_diagonal(nngp, self_nngp)
        np.fill_diagonal(ntk, self_ntk)
    return nngp, ntk


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


def _check_workspace(needed: int, shape: tuple[int, ...]) -> None:
    """Refuse workspaces beyond the free memory (pooling read-outs hold
    ``(H W)(H+2)(W+2)`` entries per covariance: 140 GB per thread at 256 x 256)."""
    import psutil

    from ..units import format_bytes

    free = psutil.virtual_memory().available
    if needed > 0.9 * free:
        raise InvalidParameterError(
            f"images of {shape[0]} x {shape[1]} need {format_bytes(needed)} of workspace for a "
            f"pooling read-out (4 covariances of (H W)(H+2)(W+2) entries per thread), more "
            f"than the {format_bytes(free)} free; use smaller images or a Flatten read-out "
            "(cnn-flatten-L)"
        )


def _encode(
    layers: Sequence[Layer], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""The offset of each ReLU's variance map in an image's flat row (a bordered plane;
    one entry after the read-out; last: the row's length), the layer codes of
    :mod:`.conv_loops` and their :math:`\sigma_w^2, \sigma_b^2`."""
    from . import conv_loops

    codes, w2s, b2s, offsets = [], [], [], [0]
    height, width = shape
    spatial = True  # before the read-out (a ReLU after it needs one entry)
    for layer in layers:
        w2 = b2 = 0.0
        if isinstance(layer, Conv | Dense):
            w2, b2 = float(layer.w_std) ** 2, float(layer.b_std) ** 2
        if isinstance(layer, Relu):
            offsets.append(offsets[-1] + ((height + 2) * (width + 2) if spatial else 1))
        spatial = spatial and not isinstance(layer, GlobalAvgPool | Flatten)
        if isinstance(layer, AvgPool):
            height, width = height // 2, width // 2
            if min(height, width) < 1:
                raise InvalidParameterError(
                    f"images of {shape[0]} x {shape[1]} are too small for this architecture's "
                    "pooling layers"
                )
        code = {
            Conv: conv_loops.CONV,
            Relu: conv_loops.RELU,
            AvgPool: conv_loops.POOL,
            GlobalAvgPool: conv_loops.GLOBAL_POOL,
            Flatten: conv_loops.FLATTEN,
            Dense: conv_loops.DENSE,
        }[type(layer)]
        codes.append(code)
        w2s.append(w2)
        b2s.append(b2)
    return (
        np.array(offsets, dtype=np.int64),
        np.array(codes, dtype=np.int64),
        np.array(w2s),
        np.array(b2s),
    )


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

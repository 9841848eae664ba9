"""Networks by name: the named architectures (``fc-L``, ``cnn-flatten-L``, ``cnn-gap-L``,
the Myrtle networks), networks written as words (``conv+erf+gap+dense``) and networks in
a JSON file, each read into layers here and nowhere else (:func:`network_layers`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InvalidParameterError
from .activations import WORDS as ACTIVATION_WORDS
from .activations import Relu
from .layers import (
    AvgPool,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    Layer,
    Parallel,
    check_layers,
)

__all__ = [
    "LAYER_WORDS",
    "MYRTLE_FACTORS",
    "architecture_layers",
    "fully_connected_depth",
    "json_layers",
    "network_layers",
    "written_layers",
]


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
        _check_known(word, f"architecture {text!r}")
        try:
            layers.append(_layer(word, [_written_value(n) for n in numbers], {}, w_std, b_std))
        except (TypeError, ValueError):
            raise InvalidParameterError(
                f"layer {part!r} of architecture {text!r} takes other numbers "
                f"(see ntkdemo.kernels.{LAYER_WORDS[word].__name__})"
            ) from None
    return tuple(layers)


def _check_known(word: object, where: str) -> None:
    """Refuse a ``word`` that names no layer of :data:`LAYER_WORDS` (``where`` says where
    it stood).

    Raises
    ------
    InvalidParameterError
    """
    if word not in LAYER_WORDS:
        raise InvalidParameterError(
            f"unknown layer {word!r} in {where}; the layers are {', '.join(LAYER_WORDS)}, "
            'and parallel branches ((A|B) in words, {"parallel": [...]} in JSON)'
        )


def _layer(
    word: str, values: Sequence[object], settings: dict[str, Any], w_std: float, b_std: float
) -> Layer:
    """The layer :data:`LAYER_WORDS` names ``word``, made from ``values`` and
    ``settings``; a ``conv`` or ``dense`` given no values takes ``w_std`` and ``b_std``
    unless ``settings`` name its scales. Raises what the layer's constructor raises
    (each reader says so its way)."""
    if word in ("conv", "dense") and not values:
        settings = {"w_std": w_std, "b_std": b_std, **settings}
    return LAYER_WORDS[word](*values, **settings)


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
        for key in ("filter", "stride", "window"):
            value = settings.get(key)
            if isinstance(value, list):
                settings[key] = tuple(value)
        _check_known(word, repr(path))
        try:
            return _layer(str(word), (), settings, w_std, b_std)
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
        return check_layers(architecture_layers(architecture, w_std, b_std))
    return check_layers(architecture)

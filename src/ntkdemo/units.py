"""Sizes in bytes as people write them (``16GB``, ``500MB``, ``2e9``) and as ntkdemo prints
them, and durations as people write them (``90s``, ``30min``, ``2h``) and as it prints them.

Decimal units (1 GB = 10^9 bytes), as memory is reported by ``free -h --si`` and psutil.
Standard library only: the command's thin parent process uses it too.
"""

from __future__ import annotations

import math
import re

from .errors import InvalidParameterError

_UNITS: dict[str, float] = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6}
_UNITS.update({"G": 1e9, "GB": 1e9, "T": 1e12, "TB": 1e12})


def parse_bytes(text: str) -> int:
    """Parse a size such as ``"16GB"``, ``"500M"`` or ``"2e9"`` into a whole number of bytes.

    Raises
    ------
    InvalidParameterError
        If the text is not a number with an optional unit, or the size is not finite or
        below one byte.
    """
    pattern = r"\s*([^\sKMGTB]+)\s*([KMGT]?B?)\s*"
    value = _number_with_unit(text, pattern, _UNITS, "memory size", "16GB, 500MB or 2e9")
    if not math.isfinite(value) or value < 1:
        raise InvalidParameterError(
            f"the memory size must be a finite number of bytes >= 1, such as 16GB, got {text!r}"
        )
    return int(value)


_DURATION_UNITS: dict[str, float] = {"": 1, "S": 1, "M": 60, "MIN": 60, "H": 3600, "D": 86400}


def parse_duration(text: str) -> float:
    """Parse a duration such as ``"90"`` or ``"90s"`` (seconds), ``"30min"``, ``"2h"``
    or ``"1d"`` into seconds.

    Raises
    ------
    InvalidParameterError
        If the text is not a number with an optional unit, or the duration is not a
        finite number of seconds > 0.
    """
    pattern = r"\s*([0-9.eE+-]+)\s*([A-Z]*)\s*"
    value = _number_with_unit(text, pattern, _DURATION_UNITS, "duration", "90s, 30min or 2h")
    if not math.isfinite(value) or value <= 0:
        raise InvalidParameterError(
            f"the duration must be a finite time > 0, such as 30min or 2h, got {text!r}"
        )
    return value


def _number_with_unit(
    text: str, pattern: str, units: dict[str, float], what: str, examples: str
) -> float:
    """The number ``pattern``'s first group reads in ``text`` (upper-cased) times the unit
    its second names.

    Raises
    ------
    InvalidParameterError
        If the text does not match or names no unit of ``units``.
    """
    written = re.fullmatch(pattern, text.upper())
    try:
        return float(written.group(1)) * units[written.group(2)]  # type: ignore[union-attr]
    except (AttributeError, ValueError, KeyError):
        raise InvalidParameterError(
            f"cannot read the {what} {text!r}; write e.g. {examples}"
        ) from None


def format_duration(seconds: float) -> str:
    """``42`` -> ``"42 s"``, ``2100`` -> ``"35 min"``, ``13300`` -> ``"3.7 h"`` (seconds
    below 2 minutes, minutes below 2 hours)."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_pair_cost(seconds: float) -> str:
    """A per-pair cost: ``0.0025`` -> ``"2.50 ms"``, ``4.1e-06`` -> ``"4.1 us"``."""
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-4 else f"{seconds * 1e6:.1f} us"


def format_bytes(count: float) -> str:
    """``1.5e9`` -> ``"1.50 GB"``."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{int(count)} B"


def format_count(count: int, unit: str) -> str:
    """``count`` with ``unit``, plural but for one: ``1 strip``, ``1,024 strips``."""
    return f"{count:,} {unit}" + ("" if count == 1 else "s")

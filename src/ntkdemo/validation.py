"""Checks of user-supplied parameters and arrays, with messages that say how to fix them."""

from __future__ import annotations

import math

import numba
import numpy as np

from .compiled import balanced_order, jit
from .errors import InvalidInputError, InvalidParameterError


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is a whole number >= 1.

    Raises
    ------
    InvalidParameterError
        If ``value`` is not an integer or is < 1.
    """
    return _check_whole_number(name, value, 1)


def check_nonnegative_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is a whole number >= 0.

    Raises
    ------
    InvalidParameterError
        If ``value`` is not an integer or is negative.
    """
    return _check_whole_number(name, value, 0)


def _check_whole_number(name: str, value: object, minimum: int) -> int:
    """``value`` as an int if it is a whole number >= ``minimum`` (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidParameterError(
            f"{name} must be a whole number >= {minimum}, got {value!r}; pass e.g. {name}=10"
        )
    if value < minimum:
        if minimum == 1:
            raise InvalidParameterError(f"{name} must be >= 1, got {value}; pass a positive count")
        raise InvalidParameterError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_nonnegative_float(name: str, value: object) -> float:
    """Return ``value`` as a float if it is finite and >= 0.

    Raises
    ------
    InvalidParameterError
        If ``value`` is not a real number, is NaN or infinite, or is negative.
    """
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name} must be a number >= 0, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise InvalidParameterError(
            f"{name} must be a finite number >= 0, got {value!r}; use 0 for none"
        )
    return number


def check_matrix(name: str, array: object, *, n_features: int | None = None) -> np.ndarray:
    """Return ``array`` as a 2-D float array with finite entries.

    Parameters
    ----------
    name : str
        Name used in error messages.
    array : array-like of shape (n_samples, n_features)
        Input; float32 is kept, other dtypes become float64.
    n_features : int, optional
        Required number of columns (e.g. that of the training data).

    Raises
    ------
    InvalidInputError
        If the array is not 2-D, is empty, has the wrong width, or holds NaN/inf.
    """
    try:
        matrix = np.asarray(array)
    except ValueError:  # ragged nested lists
        raise InvalidInputError(
            f"{name} must be a rectangular array (n_samples, n_features); its rows differ in length"
        ) from None
    if matrix.dtype.kind not in "biuf":
        raise InvalidInputError(
            f"{name} must hold real numbers, got dtype {matrix.dtype}"
            + ("; take the real part or the magnitude first" if matrix.dtype.kind == "c" else "")
        )
    if matrix.dtype != np.float32:
        try:
            matrix = matrix.astype(np.float64, copy=False)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{name} must hold numbers, got dtype {matrix.dtype}") from None
    if matrix.ndim != 2:
        raise InvalidInputError(
            f"{name} must be 2-D (n_samples, n_features), got shape {matrix.shape}; "
            "flatten each image into one row"
        )
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise InvalidInputError(f"{name} is empty (shape {matrix.shape})")
    if n_features is not None and matrix.shape[1] != n_features:
        raise InvalidInputError(
            f"{name} has {matrix.shape[1]} features but {n_features} were expected "
            "(the training data's width); use images of the same size"
        )
    if not np.isfinite(matrix).all():
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        raise InvalidInputError(
            f"{name} holds NaN or inf in row(s) {list_rows(bad)}; remove or repair them"
        )
    return matrix


def check_kernel_matrix(K: object, tile: int = 64) -> np.ndarray:
    """Return ``K`` as a float64 (or float32) ndarray after checking it is a finite,
    symmetric (to ``1e-10`` of its largest entry), non-empty square matrix, not all zero
    (a kernel without information, which a ridge would solve to outputs of zero).

    Checked in one compiled pass over pairs of mirrored tiles, so no second n x n array
    is made.

    Raises
    ------
    InvalidInputError
    """
    if not isinstance(K, np.ndarray) or K.dtype not in (np.float64, np.float32):
        try:
            given = np.asarray(K)
        except (TypeError, ValueError):
            given = np.asarray(None)
        if given.dtype.kind not in "biuf":
            raise InvalidInputError(
                f"K must be a square matrix of real numbers, got {type(K).__name__} "
                f"of dtype {given.dtype}"
            )
        K = given.astype(np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise InvalidInputError(f"K must be a non-empty square matrix, got shape {K.shape}")
    finite, largest, gap = _finite_largest_asymmetry(K, tile)
    if not finite:
        raise InvalidInputError("K holds NaN or inf; recompute it from finite inputs")
    if largest == 0:
        raise InvalidInputError(
            "K is all zero: it holds no information about the inputs, and no ridge makes its "
            "solution one; a kernel that underflowed (a deep network with small w_std) "
            "needs w_std=sqrt(2) or a bias"
        )
    if gap > 1e-10 * largest:
        raise InvalidInputError(
            f"K is not symmetric (max |K - K^T| = {gap:.3g}, largest entry {largest:.3g}); "
            "a kernel matrix K(X, X) is symmetric: pass (K + K.T) / 2 if it is rounding"
        )
    return K


@jit(parallel=True)
def _finite_largest_asymmetry(K, tile):  # pragma: no cover - compiled
    """Whether every entry of the square ``K`` is finite, the largest :math:`|K_{ij}|`
    and the largest :math:`|K_{ij} - K_{ji}|`: each tile is read with its mirror image
    (rows of tiles in :func:`~ntkdemo.compiled.balanced_order`), so every entry once."""
    n = K.shape[0]
    n_tiles = (n + tile - 1) // tile
    finite = np.ones(n_tiles, dtype=np.bool_)
    largest = np.zeros(n_tiles)
    gap = np.zeros(n_tiles)
    for position in numba.prange(n_tiles):
        a = balanced_order(position, n_tiles)
        ok, big, worst = True, 0.0, 0.0
        for b in range(a, n_tiles):
            for i in range(a * tile, min(a * tile + tile, n)):
                for j in range(b * tile, min(b * tile + tile, n)):
                    x, y = K[i, j], K[j, i]
                    ok = ok and x - x == 0.0 and y - y == 0.0  # false for NaN and inf
                    big = max(big, abs(x), abs(y))
                    worst = max(worst, abs(x - y))
        finite[a], largest[a], gap[a] = ok, big, worst
    return finite.all(), largest.max(), gap.max()


def check_targets(name: str, Y: object, n_rows: int) -> np.ndarray:
    """Return targets as a finite float64 array of 1 or 2 dimensions with ``n_rows`` rows.

    Raises
    ------
    InvalidInputError
        If ``Y`` is not numeric (or complex), has another dimension or row count, or
        holds NaN/inf.
    """
    try:
        targets = np.asarray(Y)
    except ValueError:
        raise InvalidInputError(f"{name} must be a rectangular array of numbers") from None
    if targets.dtype.kind not in "biuf":
        raise InvalidInputError(
            f"{name} must hold real numbers, got dtype {targets.dtype}; encode labels with "
            "ntkdemo.regression.one_hot"
        )
    targets = targets.astype(np.float64, copy=False)
    if targets.ndim not in (1, 2) or len(targets) != n_rows:
        raise InvalidInputError(
            f"{name} must have shape ({n_rows},) or ({n_rows}, n_outputs) to match the "
            f"kernel, got {targets.shape}"
        )
    if not np.isfinite(targets).all():
        raise InvalidInputError(f"{name} holds NaN or inf; targets must be finite")
    return targets


def check_finite_result(name: str, result: np.ndarray) -> np.ndarray:
    """Return ``result`` if all its entries are finite.

    Raises
    ------
    InvalidInputError
        If the computation overflowed (inf) or met an undefined value (NaN): the inputs'
        magnitudes are beyond float64 for this computation.
    """
    if not np.isfinite(result).all():
        raise InvalidInputError(
            f"{name} overflowed float64 (inf or NaN): the inputs are too large for this "
            "computation; rescale them (a kernel of unit-norm rows is at most 2)"
        )
    return result


def list_rows(rows: np.ndarray, limit: int = 10) -> str:
    """Format row indices for an error message, eliding long lists."""
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > limit else "")

r"""What the theory experiments will cost, checked before they start.

A finite network of width :math:`m` on :math:`n` images of :math:`d` values holds its
weights and their gradients (:math:`2 d m`) and a handful of :math:`n \times m` arrays
(pre-activations, activations, their gradients and masks: five), and one full-batch
gradient step costs about :math:`6 n d m` flops (two products forward and back, each
:math:`2 n d m`, and the readout's). A Gram matrix of :math:`p` points for an
eigendecomposition holds about four :math:`p \times p` arrays (kernel, products,
LAPACK's workspace). A learning curve holding a network's kernels of :math:`n` training
and :math:`m` test images whole keeps NNGP and NTK of both, :math:`2 n (n + m)` floats,
and as much again while they are computed (the fully connected fold's temporaries) or
solved (a block's factor). A request past the free memory, or past
:data:`MAX_SECONDS` at a stated rate, is refused in one line naming the size that fits.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InvalidParameterError
from ..units import format_bytes

MAX_SECONDS = 6 * 3600.0
"""Longest run the theory commands start (at :data:`FLOP_RATE`): beyond it they refuse."""

FLOP_RATE = 50e9
"""Float64 flops per second assumed for the estimate: an ordinary two-core machine."""


def network_bytes(n_images: int, n_features: int, width: int) -> int:
    """Peak bytes of a width-``width`` network trained on ``n_images`` (module docstring)."""
    return 8 * width * (2 * n_features + 5 * n_images)


def check_networks(
    widths: Sequence[int],
    n_images: int,
    n_features: int,
    *,
    available: int,
    steps: int = 1,
    option: str = "--widths",
) -> None:
    """Refuse widths whose networks exceed ``available`` bytes, or training past
    :data:`MAX_SECONDS` (``steps`` full-batch steps for every width).

    Raises
    ------
    InvalidParameterError
        Naming the width and the largest one that fits, or the time and what to lower.
    """
    widest = max(widths)
    needed = network_bytes(n_images, n_features, widest)
    if needed > available:
        fits = available // (8 * (2 * n_features + 5 * n_images))
        raise InvalidParameterError(
            f"{option}: a network of width {widest} on {n_images} images needs about "
            f"{format_bytes(needed)}, more than the {format_bytes(available)} free; use widths "
            f"up to {fits}"
        )
    seconds = 6 * n_images * n_features * sum(widths) * steps / FLOP_RATE
    if seconds > MAX_SECONDS:
        raise InvalidParameterError(
            f"training widths {list(widths)} for {steps} steps on {n_images} images would take "
            f"about {seconds / 3600:.3g} hours at {FLOP_RATE / 1e9:g} GFLOP/s (at most "
            f"{MAX_SECONDS / 3600:g} are started); use fewer --steps or smaller {option}"
        )


def check_gram(points: int, *, available: int, option: str) -> None:
    """Refuse a Gram matrix of ``points`` points (and its eigendecomposition) that would
    exceed ``available`` bytes.

    Raises
    ------
    InvalidParameterError
    """
    needed = 4 * 8 * points * points
    if needed > available:
        fits = int((available / 32) ** 0.5)
        raise InvalidParameterError(
            f"{option} {points}: its Gram matrix and eigendecomposition need about "
            f"{format_bytes(needed)}, more than the {format_bytes(available)} free; use at "
            f"most {fits}"
        )


def check_whole_kernels(
    images: int, test_images: int, *, available: int, option: str, added_columns: int = 0
) -> None:
    r"""Refuse holding a network's kernels of ``images`` training and ``test_images`` test
    images whole past ``available`` bytes: :math:`4 n (n + m)` floats (module docstring),
    and with ``added_columns`` random features of an added network (every image's, both
    kernels' together), also those features and the sum's matrices, :math:`(n + m)(n +
    c)` floats more.

    Raises
    ------
    InvalidParameterError
        Naming the number of images that fits.
    """
    matrices = 5 if added_columns else 4
    rows = images + test_images
    needed = 8 * rows * (matrices * images + added_columns)
    if needed > available:
        # the positive root of 8 (n + m)(a n + c) = available, a = matrices
        linear = matrices * test_images + added_columns
        constant = added_columns * test_images - available / 8
        fits = int((-linear + (linear**2 - 4 * matrices * constant) ** 0.5) / (2 * matrices))
        raise InvalidParameterError(
            f"{option} {images}: the kernels of {images} training images held whole need "
            f"about {format_bytes(needed)}, more than the {format_bytes(available)} free; "
            f"use at most {fits}"
        )

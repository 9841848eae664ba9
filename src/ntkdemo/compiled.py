"""How ntkdemo compiles its loops with numba: one place for the threading layer and the cache.

* **Threads.** Unless ``NUMBA_THREADING_LAYER`` is set, numba's ``workqueue`` layer is
  selected: its idle threads sleep, whereas OpenMP's spin after each parallel loop and
  take the cores BLAS needs for the next product.
* **Balance.** Loops over the rows of a triangle visit them as :func:`balanced_order`
  gives, so that both threads of a static schedule get the same work.
* **Cache.** Compiled machine code is cached on disk where numba finds a writable place
  (beside the source, in ``$NUMBA_CACHE_DIR`` or in the user's cache folder). A read-only
  install run by an account without a writable home has none; numba then refuses
  ``cache=True`` when the function is defined, so :func:`jit` compiles in memory instead,
  silently: every process then compiles on first use (a few seconds), nothing else changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]


def jit(*, cache: bool = True, **options: Any) -> Callable[[Callable], Callable]:
    """``numba.njit(cache=True, **options)``, or without the cache where none can be written.

    Parameters
    ----------
    cache : bool, default=True
        False for a function numba cannot cache reliably (one taking a function).
    **options
        Passed to :func:`numba.njit` (``parallel``, ``fastmath``, ...).

    Returns
    -------
    callable
        A decorator.
    """

    def decorate(function: Callable) -> Callable:
        if not cache:
            return numba.njit(**options)(function)
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return numba.njit(**options)(function)

    return decorate


@numba.njit(inline="always")
def balanced_order(position, count):  # pragma: no cover - compiled
    """0, n-1, 1, n-2, ...: long and short triangular rows alternate across threads."""
    half = position // 2
    return half if position % 2 == 0 else count - 1 - half

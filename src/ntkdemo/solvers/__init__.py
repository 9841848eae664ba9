"""Solver strategies: how the training kernel is stored and the system solved.

* :mod:`.base` -- the :class:`~.base.Solver` protocol, the fitted model, the one result
  every strategy returns (:class:`~.base.KernelSolution`), ``one_hot`` and ``predict``;
* :mod:`.cholesky` -- ``cholesky``: the whole float64 kernel, factorised in place
  (every kernel, finite training times too), and :func:`~.cholesky.solve`;
* :mod:`.cg` -- ``cg``: the upper triangle in float64 (:mod:`.strips`), preconditioned
  conjugate gradients (:mod:`.preconditioners`);
* :mod:`.cuda` -- ``cuda``: kernel and factor on a GPU through CuPy;
* :mod:`.features` -- ``features``: a kernel approximated by random features, solved in
  the primal, and the measurement of its error against the exact kernel.

:mod:`ntkdemo.plan` asks each for its memory estimate and picks the first that fits.
This layer imports nothing from the data, the command line or the figures.
"""

from .base import KernelSolution, one_hot, predict
from .cg import CGOptions, CGSolver, solve_cg
from .cholesky import CholeskySolver, solve
from .cuda import CudaSolver
from .strips import SymmetricStrips, ntk_strips

__all__ = [
    "CGOptions",
    "CGSolver",
    "CholeskySolver",
    "CudaSolver",
    "KernelSolution",
    "SymmetricStrips",
    "ntk_strips",
    "one_hot",
    "predict",
    "solve",
    "solve_cg",
]

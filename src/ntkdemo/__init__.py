"""ntkdemo: the Neural Tangent Kernel at work on real data.

An infinitely wide network trained by gradient descent on squared loss is kernel
regression with its Neural Tangent Kernel. This package computes that kernel in
closed form and shows it classifying Fashion-MNIST, with no network and no
gradient step.

The names below are imported on first use, so that the ``ntkdemo`` command's thin
parent process (:mod:`ntkdemo.supervisor`) starts without loading numba or datasets.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .data import Sample, load_sample
    from .demo import run_demo
    from .dynamics import gradient_descent_mean
    from .estimators import ConvKernelFeatures, NTKClassifier, NTKRegressor
    from .kernels import fc_kernels, kernel_matrix, ntk
    from .solvers import one_hot, predict, solve
    from .spec import KernelSpec

try:
    __version__ = metadata.version("ntkdemo")
except metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
    __version__ = "0+unknown"

_HOMES = {
    "ConvKernelFeatures": "estimators",
    "NTKClassifier": "estimators",
    "NTKRegressor": "estimators",
    "Sample": "data",
    "fc_kernels": "kernels",
    "gradient_descent_mean": "dynamics",
    "kernel_matrix": "kernels",
    "load_sample": "data",
    "ntk": "kernels",
    "solve": "solvers",
    "predict": "solvers",
    "one_hot": "solvers",
    "KernelSpec": "spec",
    "run_demo": "demo",
}

__all__ = [
    "ConvKernelFeatures",
    "KernelSpec",
    "NTKClassifier",
    "NTKRegressor",
    "Sample",
    "__version__",
    "fc_kernels",
    "gradient_descent_mean",
    "kernel_matrix",
    "load_sample",
    "ntk",
    "one_hot",
    "predict",
    "run_demo",
    "solve",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'ntkdemo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__

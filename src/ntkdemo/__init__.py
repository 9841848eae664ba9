"""ntkdemo: the Neural Tangent Kernel at work on real data.

An infinitely wide network trained by gradient descent on squared loss is kernel
regression with its Neural Tangent Kernel. This package computes that kernel in
closed form and shows it classifying Fashion-MNIST, with no network and no
gradient step.
"""

from importlib import metadata

from .data import Sample, load_sample
from .dynamics import gradient_descent_mean
from .estimators import NTKClassifier, NTKRegressor
from .kernels import fc_kernels, kernel_matrix, ntk
from .regression import solve

__version__ = metadata.version("ntkdemo")

__all__ = [
    "NTKClassifier",
    "NTKRegressor",
    "Sample",
    "__version__",
    "fc_kernels",
    "gradient_descent_mean",
    "kernel_matrix",
    "load_sample",
    "ntk",
    "solve",
]

"""Closed-form kernels of infinitely wide ReLU networks.

* :mod:`~ntkdemo.kernels.ntk` -- the one-hidden-layer NTK as a map of cosines;
* :mod:`~ntkdemo.kernels.deep` -- NNGP and NTK of deeper networks, a fold of layer steps;
* :mod:`~ntkdemo.kernels.layers` -- the layers of a network as values, and which
  sequences are networks; :mod:`~ntkdemo.kernels.architecture` -- networks by name, in
  words (``conv+erf+gap+dense``) or in a JSON file;
* :mod:`~ntkdemo.kernels.conv` -- the same fold for convolutional networks (with
  :mod:`~ntkdemo.kernels.conv_loops`, its compiled loops, and
  :mod:`~ntkdemo.kernels.conv_arrays`, the fold over whole arrays that runs every
  composition);
* :mod:`~ntkdemo.kernels.features` -- random features whose inner products
  approximate those kernels (a random finite network of the architecture, its gradients
  sketched): an approximation, for training sets the exact kernels cannot reach;
* :mod:`~ntkdemo.kernels.activations` -- the layers acting position by position
  (``Relu``, ``ABRelu``, ``LeakyRelu``, ``Abs``, ``Erf``, ``Gelu``, ``Identity``,
  ``LayerNorm``), each with its kernel rule;
* :mod:`~ntkdemo.kernels.matrix` -- the kernel a run uses, chosen by name;
* :mod:`~ntkdemo.kernels.blocks` -- block assembly and mirroring;
* :mod:`~ntkdemo.kernels.in_range` -- the check every fold's output passes (no overflow,
  no underflow to a kernel without information);
* :mod:`~ntkdemo.kernels.mirror` -- left-right mirrors of images (``--flip``);
  :mod:`~ntkdemo.kernels.averaged` -- kernels of a network averaged over mirrored and
  shifted copies of its input (``--flip``, ``--shifts``).

This layer imports nothing from the solvers, the plan or the command line.
"""

from . import activations
from .activations import *  # noqa: F403 - every activation, by the module's __all__
from .architecture import architecture_layers
from .blocks import mirror_upper
from .conv import conv_kernels
from .deep import fc_kernels
from .features import RandomFeatures, conv_features
from .layers import AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Parallel
from .matrix import is_default_kernel, kernel_matrix
from .ntk import ntk, ntk_of_cosine, ntk_times, scaled_unit_rows, unit_rows

__all__ = [
    "AvgPool",
    "Conv",
    "Dense",
    "Flatten",
    "GlobalAvgPool",
    "Parallel",
    "RandomFeatures",
    "architecture_layers",
    "conv_features",
    "conv_kernels",
    "fc_kernels",
    "is_default_kernel",
    "kernel_matrix",
    "mirror_upper",
    "ntk",
    "ntk_of_cosine",
    "ntk_times",
    "scaled_unit_rows",
    "unit_rows",
    *activations.__all__,
]

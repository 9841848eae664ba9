r"""Strategy ``cuda``: kernel, Cholesky solve and predictions on a CUDA GPU through CuPy.

Same mathematics as the CPU strategies, in float64 on the device. The one-layer formula
is one matrix product of the unit rows and the NTK map as one in-place CUDA elementwise
kernel (cosines within :data:`~ntkdemo.kernels.ntk.SNAP_ULPS` ulps of +-1 snapped,
diagonal exactly 2); every other kernel (deep, convolutional) is the layer fold of
:mod:`ntkdemo.kernels.conv_arrays` on tiles of pairs (the rows rescaled to
:math:`x \cdot x / d = 1`, as on the CPU). Then a Cholesky factorisation with the
jitter fallback of :func:`.cholesky.factor_with_jitter`, and test predictions in row
blocks. CuPy is imported only here, only when asked for (``--device cuda``;
``pip install "ntkdemo[gpu]"``); the CPU path never needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidParameterError
from ..kernels.architecture import network_layers
from ..kernels.conv import as_images
from ..kernels.conv_arrays import pair_kernels
from ..kernels.ntk import fold_inputs, snap_tolerance
from ..spec import KernelSpec
from .base import KernelSolution, Progress, Stopwatch, wrap
from .cholesky import factor_with_jitter

_MAP_SOURCE = """
double c = k;
if (c >= 1.0 - snap) c = 1.0; else if (c <= -1.0 + snap) c = -1.0;
k = (2.0 * c * (M_PI - acos(c)) + sqrt((1.0 - c) * (1.0 + c))) / M_PI;
"""


def require_cupy():
    """Import CuPy and check that it sees a GPU.

    Raises
    ------
    InvalidParameterError
        With what to install or check, if CuPy or a GPU is missing.
    """
    try:
        import cupy
    except ImportError:
        raise InvalidParameterError(
            '--device cuda needs CuPy and a CUDA GPU: pip install "ntkdemo[gpu]" (CuPy for '
            "CUDA 12; for another CUDA install its own cupy-cudaXXx wheel), or run on the CPU "
            "(the default)"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        count = 0
    if count == 0:
        raise InvalidParameterError("--device cuda: CuPy is installed but sees no CUDA GPU")
    return cupy


@dataclass(frozen=True)
class DeviceKernel:
    """The run's kernel on the GPU: the one-layer formula, or the layer fold of
    :func:`ntkdemo.kernels.conv_arrays.pair_kernels` (a convolutional architecture, or
    a deep fully connected network as layers of a 1 x 1 image whose channels are the
    features) whose tiles take half the GPU's free memory.

    Parameters
    ----------
    spec : KernelSpec
        Served by :class:`CudaSolver` (any kernel at convergence).
    """

    spec: KernelSpec

    @property
    def is_formula(self) -> bool:
        return self.spec.is_one_layer_formula

    def layers(self) -> tuple:
        """The fold's layers (the spec's architecture, or ``fc-L`` at its depth)."""
        name = self.spec.architecture or f"fc-{self.spec.depth}"
        return network_layers(name, self.spec.w_std, self.spec.b_std)

    def inputs(self, X_unit: np.ndarray) -> Any:
        r"""What the kernel reads, on the device: the unit rows for the formula, else
        the rows rescaled to :math:`x \cdot x / d = 1` as images (1 x 1 with the
        features as channels for a fully connected network)."""
        cupy = require_cupy()
        if self.is_formula:
            return cupy.asarray(X_unit)
        scaled = fold_inputs(X_unit)
        if self.spec.architecture is None:
            return cupy.asarray(scaled.reshape(len(scaled), 1, 1, -1))
        return cupy.asarray(as_images(scaled, self.spec.image_shape))

    def matrix(
        self,
        rows: Any,
        columns: Any | None = None,
        *,
        progress: Callable[[Iterable], Iterable] | None = None,
    ) -> Any:
        r""":math:`K(\text{rows}, \text{columns})` on the device (default: the rows'
        symmetric Gram matrix)."""
        cupy = require_cupy()
        if self.is_formula:
            K = rows @ (rows if columns is None else columns).T
            _ntk_map(cupy)(snap_tolerance(np.float64), K)
            if columns is None:
                diagonal = cupy.arange(K.shape[0])
                K[diagonal, diagonal] = 2.0
            return K
        free, _ = cupy.cuda.runtime.memGetInfo()
        nngp, ntk = pair_kernels(
            cupy, self.layers(), rows, columns, memory_bytes=free // 2, progress=progress
        )
        return ntk if self.spec.kernel == "ntk" else nngp

    def seconds_per_pair(self, images: int = 32) -> float:
        """Seconds per image pair of :meth:`matrix` on this GPU, measured: the Gram
        matrix of ``images`` random images computed twice (the first compiles and
        allocates), the second timed, divided by its pairs."""
        import time

        cupy = require_cupy()
        values = int(np.prod(self.spec.image_shape))
        inputs = self.inputs(np.random.default_rng(0).random((images, values)))
        self.matrix(inputs, inputs)
        cupy.cuda.Device().synchronize()
        start = time.perf_counter()
        self.matrix(inputs, inputs)
        cupy.cuda.Device().synchronize()
        return (time.perf_counter() - start) / images**2


@dataclass
class CudaFitted:
    """A model fitted on the GPU: the kernel's training inputs and the coefficients stay
    on the device."""

    kernel: DeviceKernel
    train: Any  # cupy.ndarray: unit rows (n_train, n_features) or images (n_train, H, W, C)
    coef_device: Any  # cupy.ndarray (n_train, n_outputs)
    solution: KernelSolution
    train_scores: np.ndarray
    block_rows: int
    timings: dict[str, float] = field(default_factory=dict)
    eigenvalues: np.ndarray | None = None  # the spectrum is computed on the CPU

    def predict(self, X_unit: np.ndarray, *, progress: Progress | None = None) -> np.ndarray:
        """Outputs :math:`K(x, X) A`, computed on the GPU in row blocks."""
        cupy = require_cupy()
        test = self.kernel.inputs(X_unit)
        scores = cupy.empty((test.shape[0], self.coef_device.shape[1]))
        starts = range(0, test.shape[0], self.block_rows)
        tiles = wrap(progress, "test kernel tiles")
        for start in starts:
            block = self.kernel.matrix(
                test[start : start + self.block_rows], self.train, progress=tiles
            )
            scores[start : start + self.block_rows] = block @ self.coef_device
        return cupy.asnumpy(scores)


def _ntk_map(cupy):
    """The NTK map as an in-place CUDA elementwise kernel."""
    return cupy.ElementwiseKernel("float64 snap", "float64 k", _MAP_SOURCE, "ntkdemo_map")


@dataclass(frozen=True)
class CudaSolver:
    """Strategy: the float64 kernel and its Cholesky factor in GPU memory.

    Serves every kernel at convergence, not averaged over mirrors (with ``--flip`` the
    mirrored images are added instead, :func:`ntkdemo.preprocess.flip_kernel`).
    Its memory is the GPU's: the plan (:mod:`ntkdemo.plan`) compares
    :meth:`estimate_bytes` with :meth:`available_bytes`, once.
    """

    name: str = "cuda"
    block_rows: int = 4096
    in_process: bool = False
    gives_spectrum: bool = False

    def serves(self, spec: KernelSpec) -> bool:
        return (
            spec.time is None
            and spec.average.terms == 1
            and spec.features is None
            and spec.added is None
        )

    def describe(self) -> str:
        return "float64 kernel and Cholesky factor on the GPU"

    def kernel_bytes(self, n_train: int) -> int:
        return 8 * n_train**2

    def kernel_label(self) -> str:
        return "float64 kernel"

    def estimate_bytes(self, n_train: int, n_test: int, n_features: int, n_outputs: int) -> int:
        """GPU bytes: kernel and factor (``2 * 8 n^2``), inputs, one block of test rows
        (a convolutional kernel's tiles take half of what is free beside them)."""
        return 16 * n_train**2 + 16 * n_train * n_features + 8 * self.block_rows * n_train

    def available_bytes(self) -> int:
        """Free GPU memory."""
        free, _ = require_cupy().cuda.runtime.memGetInfo()
        return int(free)

    def memory_label(self) -> str:
        return "free GPU memory"

    def fit(
        self,
        X_unit: np.ndarray,
        Y: np.ndarray,
        spec: KernelSpec,
        *,
        progress: Progress | None = None,
        report: Callable[[str], None] | None = None,
        spectrum_rows: int = 0,
    ) -> CudaFitted:
        """Kernel, Cholesky with jitter fallback, training outputs ``K A``, on the GPU.

        The condition number is estimated from the factor's diagonal,
        :math:`(\\max_i L_{ii} / \\min_i L_{ii})^2`, a lower bound of the true one.
        """
        cupy = require_cupy()
        import cupyx
        import cupyx.scipy.linalg

        kernel = DeviceKernel(spec)
        watch = Stopwatch()
        with watch.stage("kernel"):
            train = kernel.inputs(X_unit)
            K = kernel.matrix(train, progress=wrap(progress, "kernel tiles"))
            diagonal = cupy.arange(K.shape[0])
            kernel_diagonal = K[diagonal, diagonal].copy()
        with watch.stage("solve"):

            def factorise(jitter: float):
                K[diagonal, diagonal] = kernel_diagonal + (spec.ridge + jitter)
                with cupyx.errstate(linalg="raise"):
                    try:
                        factor = cupy.linalg.cholesky(K)
                    except np.linalg.LinAlgError:
                        return None
                pivots = cupy.diagonal(factor)
                return factor, float((pivots.max() / pivots.min()) ** 2)

            factor, jitter, condition, message = factor_with_jitter(
                factorise,
                scale=float(kernel_diagonal.mean()),
                norm_1=float(cupy.abs(K).sum(axis=0).max()),
                ridge=spec.ridge,
            )
            targets = cupy.asarray(np.asarray(Y, dtype=np.float64))
            half = cupyx.scipy.linalg.solve_triangular(factor, targets, lower=True)
            coef = cupyx.scipy.linalg.solve_triangular(factor.T, half, lower=False)
            del factor, half
            K[diagonal, diagonal] = kernel_diagonal  # the kernel again: training outputs are K A
            train_scores = cupy.asnumpy(K @ coef)
            K = None  # free the GPU memory
        solution = KernelSolution(
            coef=cupy.asnumpy(coef),
            method="Cholesky on the GPU",
            ridge=spec.ridge,
            jitter=jitter,
            condition_number=condition,
            message=message,
        )
        return CudaFitted(
            kernel, train, coef, solution, train_scores, self.block_rows, watch.timings
        )

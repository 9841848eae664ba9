r"""The demo on a CUDA GPU through CuPy (optional): kernel, Cholesky solve, predictions.

Same mathematics as the CPU path, in float64 on the device: one matrix product of the
unit rows, the NTK map as one in-place CUDA elementwise kernel (cosines within 4 ulps of
+-1 snapped, diagonal exactly 2), a Cholesky factorisation with the same jitter
fallback, and test predictions in row blocks. CuPy is imported only here, only when
asked for (``--device cuda``); the CPU path never needs it.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidParameterError, MemoryPlanError
from .kernels import unit_rows
from .regression import KernelSolution, jitter_after_failure, not_positive_definite
from .units import format_bytes

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


def check_gpu_memory(n_train: int, n_features: int, *, block_rows: int = 4096) -> int:
    """Bytes the GPU run needs; raises :class:`MemoryPlanError` if they exceed free memory.

    The kernel and its Cholesky factor (``2 * 8 n^2``), the inputs, and one block of
    test rows.
    """
    cupy = require_cupy()
    free, _ = cupy.cuda.runtime.memGetInfo()
    needed = _gpu_bytes(n_train, n_features, block_rows)
    if needed > 0.9 * free:
        largest = int(np.sqrt(0.9 * free / 16))
        raise MemoryPlanError(
            f"{n_train} training images need about {format_bytes(needed)} on the GPU, more "
            f"than 90% of its {format_bytes(free)} free; at most about {largest} fit"
        )
    return needed


def _gpu_bytes(n_train: int, n_features: int, block_rows: int) -> int:
    return 16 * n_train**2 + 16 * n_train * n_features + 8 * block_rows * n_train


def solve_and_predict_cuda(
    X_train: np.ndarray,
    Y: np.ndarray,
    X_test: np.ndarray,
    *,
    ridge: float = 0.0,
    max_jitter_tries: int = 8,
    block_rows: int = 4096,
) -> tuple[KernelSolution, np.ndarray, np.ndarray]:
    r"""Mission-NTK kernel regression on the GPU.

    Parameters
    ----------
    X_train : ndarray of shape (n_train, n_features)
    Y : ndarray of shape (n_train, n_outputs)
    X_test : ndarray of shape (n_test, n_features)
    ridge : float, default=0.0
    max_jitter_tries : int, default=8
        As in :func:`ntkdemo.regression.solve`.
    block_rows : int, default=4096
        Test rows per prediction block.

    Returns
    -------
    solution : KernelSolution
        ``coef`` copied back to the host; the condition number is not estimated (NaN).
    train_scores, test_scores : ndarray
        :math:`K A` on the training and test images.
    """
    cupy = require_cupy()
    import cupyx
    import cupyx.scipy.linalg

    check_gpu_memory(len(X_train), X_train.shape[1], block_rows=block_rows)
    ntk_map = cupy.ElementwiseKernel("float64 snap", "float64 k", _MAP_SOURCE, "ntkdemo_map")
    snap = 4 * float(np.finfo(np.float64).eps)
    train = cupy.asarray(unit_rows(X_train, "X_train"))
    test = cupy.asarray(unit_rows(X_test, "X_test", n_features=X_train.shape[1]))
    targets = cupy.asarray(np.asarray(Y, dtype=np.float64))

    K = train @ train.T
    ntk_map(snap, K)
    n = K.shape[0]
    diagonal = cupy.arange(n)
    K[diagonal, diagonal] = 2.0
    scale = 2.0  # trace(K) / n: every diagonal entry is exactly 2
    jitter, message = 0.0, ""
    factor = None
    for attempt in range(max_jitter_tries + 1):
        K[diagonal, diagonal] = 2.0 + ridge + jitter
        with cupyx.errstate(linalg="raise"):
            try:
                factor = cupy.linalg.cholesky(K)
                break
            except np.linalg.LinAlgError:
                jitter, message = jitter_after_failure(attempt, scale, ridge)
    if factor is None:
        raise not_positive_definite(jitter)
    half = cupyx.scipy.linalg.solve_triangular(factor, targets, lower=True)
    coef = cupyx.scipy.linalg.solve_triangular(factor.T, half, lower=False)
    del factor, half
    K[diagonal, diagonal] = 2.0  # the kernel again: training outputs are K A, not Y - jitter A
    train_scores = K @ coef
    del K
    test_scores = cupy.empty((test.shape[0], coef.shape[1]))
    for start in range(0, test.shape[0], block_rows):
        block = test[start : start + block_rows] @ train.T
        ntk_map(snap, block)
        test_scores[start : start + block_rows] = block @ coef
    solution = KernelSolution(
        cupy.asnumpy(coef), ridge, jitter, float("nan"), message, method="Cholesky on the GPU"
    )
    return solution, cupy.asnumpy(train_scores), cupy.asnumpy(test_scores)

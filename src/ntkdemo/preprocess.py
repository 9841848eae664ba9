r"""Preprocessing a sample for any kernel: ZCA whitening and left-right flips.

Both are fitted on (or applied to) the training images only, as Shankar et al. 2020
("Neural Kernels Without Tangents") and Lee et al. 2020 ("Finite Versus Infinite Neural
Networks") do for convolutional kernels:

* **ZCA whitening** with regularisation :math:`\epsilon`: each image is centred by its
  own mean over its values; with the training images' covariance
  :math:`\Sigma = X^\top X / n = U \operatorname{diag}(s) U^\top`,

  .. math:: W = U \operatorname{diag}\big((s + \epsilon \bar s)^{-1/2}\big) U^\top,
            \qquad \bar s = \operatorname{mean}(s),

  and every image (training and test) becomes :math:`x W`. Large :math:`\epsilon`
  approaches the centred images up to a scale; small ones flatten the spectrum.
* **Flips**: each training image mirrored left to right is added with its label (the
  test images are left alone). Where the kernel is mirror symmetric the same network is
  kernel regression on the originals with the kernel averaged over mirrors
  (:mod:`ntkdemo.kernels.mirror`): :func:`flip_kernel` decides which form a run takes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .data import Sample
from .errors import InvalidParameterError
from .kernels.mirror import is_mirror_symmetric, mirrored
from .spec import KernelSpec
from .validation import check_nonnegative_float

__all__ = ["flip_kernel", "with_flips", "zca_whitened"]


def zca_whitened(sample: Sample, epsilon: float, *, with_mirrors: bool = False) -> Sample:
    r"""``sample`` with its images ZCA-whitened, the transform fitted on the training
    images (module docstring).

    Parameters
    ----------
    sample : Sample
    epsilon : float
        Regularisation :math:`\epsilon > 0`, relative to the mean eigenvalue (0.1 is a
        common choice).
    with_mirrors : bool, default=False
        Fit on the training images and their mirrors, as :func:`with_flips` would add
        them (the covariance then commutes with the mirror, and so does the transform:
        the form of ``--flip`` that averages the kernel over mirrors).

    Returns
    -------
    Sample
        The same rows and labels, whitened images (float64, any sign).

    Raises
    ------
    InvalidParameterError
        If ``epsilon`` is not a finite number > 0.
    """
    if check_nonnegative_float("epsilon", epsilon) == 0:
        raise InvalidParameterError(
            "--zca EPS needs EPS > 0: without regularisation the whitening divides by the "
            "covariance's zero eigenvalues; try 0.1"
        )
    X_train = _centred(sample.X_train)
    covariance = X_train.T @ X_train / len(X_train)
    if with_mirrors:
        mirrors = mirrored(X_train, _image_shape(sample))
        covariance = (covariance + mirrors.T @ mirrors / len(mirrors)) / 2
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    eigenvalues = np.maximum(eigenvalues, 0.0)
    scale = 1.0 / np.sqrt(eigenvalues + epsilon * eigenvalues.mean())
    transform = (eigenvectors * scale) @ eigenvectors.T
    return replace(sample, X_train=X_train @ transform, X_test=_centred(sample.X_test) @ transform)


def with_flips(sample: Sample) -> Sample:
    """``sample`` with each training image's left-right mirror added, with its label.

    The mirrors follow the originals (rows ``n .. 2n-1`` mirror rows ``0 .. n-1``);
    ``train_indices`` repeats the originals' rows for them.

    Raises
    ------
    InvalidParameterError
        If the sample does not know its image shape.
    """
    mirrors = mirrored(sample.X_train, _image_shape(sample))
    return replace(
        sample,
        X_train=np.vstack([sample.X_train, mirrors]),
        y_train=np.concatenate([sample.y_train, sample.y_train]),
        train_indices=np.concatenate([sample.train_indices, sample.train_indices]),
    )


def flip_kernel(
    spec: KernelSpec, image_shape: tuple[int, ...], device: str = "cpu"
) -> tuple[KernelSpec | None, str]:
    """How a run trains on its images and their mirrors: the decision, made once.

    The kernel averaged over mirrors on the ``n`` originals, where the kernel is mirror
    symmetric on ``image_shape`` and the device is the CPU (the GPU's kernels do not
    average); else the ``2 n`` images of :func:`with_flips`. Both are the same network
    (for random features the average is of each image's features with its mirror's,
    an approximation of the averaged kernel).

    Parameters
    ----------
    spec : KernelSpec
        The run's kernel, ridge and time, as for the ``2 n`` images.
    image_shape : tuple of int
    device : {"cpu", "cuda"}

    Returns
    -------
    spec : KernelSpec or None
        ``spec`` averaged over mirrors with half its ridge (the ridge of the ``2 n``
        images' system, :mod:`ntkdemo.kernels.mirror`), or None where the mirrored
        images are to be added. With ``spec.shifts`` the mirrors join the copies the
        network averages over (:mod:`ntkdemo.kernels.averaged`), its ridge kept: that
        network is fitted on the ``n`` images, not on ``2 n``.
    how : str
        One line for the console.
    """
    if device != "cpu":
        return None, "flips: the mirrored training images added (the GPU's kernels do not average)"
    if not is_mirror_symmetric(spec.architecture, image_shape):
        return None, (
            f"flips: the mirrored training images added (the kernel of {spec.architecture} is "
            f"not mirror symmetric on images of {tuple(image_shape)}: an AvgPool sees an odd width)"
        )
    if spec.shifts:  # the mirrors join the copies the network averages over
        return replace(spec, flip=True, image_shape=tuple(image_shape)), (
            "flips: the mirrored copies join the shifted ones the network averages over "
            "(kernels.averaged; the ridge is that of the n images)"
        )
    averaged = replace(spec, flip=True, image_shape=tuple(image_shape), ridge=spec.ridge / 2)
    halved = f"; ridge {spec.ridge:g} of 2n images is {averaged.ridge:g} here" if spec.ridge else ""
    if spec.features is not None:  # the equality holds for the exact kernel only
        return averaged, (
            "flips: each image's random features averaged with its mirror's, an approximation "
            "of the kernel averaged over mirrors (K(x,y) + K(x,Fy))/2 (the exact kernel's "
            f"network trained on 2n images), solved on n{halved}"
        )
    return averaged, (
        "flips: the kernel averaged over each training image and its mirror, "
        f"(K(x,y) + K(x,Fy))/2: the network trained on 2n images, solved on n{halved}"
    )


def _image_shape(sample: Sample) -> tuple[int, ...]:
    """The sample's image shape, which mirrors need."""
    if not sample.image_shape:
        raise InvalidParameterError(
            "--flip needs the images' shape; load the sample with ntkdemo.load_sample"
        )
    return tuple(sample.image_shape)


def _centred(X: np.ndarray) -> np.ndarray:
    """Each row minus its own mean."""
    return X - X.mean(axis=1, keepdims=True)

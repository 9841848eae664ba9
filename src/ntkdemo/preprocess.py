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
  test images are left alone).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .data import Sample
from .errors import InvalidParameterError
from .validation import check_nonnegative_float

__all__ = ["with_flips", "zca_whitened"]


def zca_whitened(sample: Sample, epsilon: float) -> Sample:
    r"""``sample`` with its images ZCA-whitened, the transform fitted on the training
    images (module docstring).

    Parameters
    ----------
    sample : Sample
    epsilon : float
        Regularisation :math:`\epsilon > 0`, relative to the mean eigenvalue (0.1 is a
        common choice).

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
    if not sample.image_shape:
        raise InvalidParameterError(
            "--flip needs the images' shape; load the sample with ntkdemo.load_sample"
        )
    images = sample.X_train.reshape(len(sample.X_train), *sample.image_shape)
    mirrored = images[:, :, ::-1].reshape(len(images), -1)
    return replace(
        sample,
        X_train=np.vstack([sample.X_train, mirrored]),
        y_train=np.concatenate([sample.y_train, sample.y_train]),
        train_indices=np.concatenate([sample.train_indices, sample.train_indices]),
    )


def _centred(X: np.ndarray) -> np.ndarray:
    """Each row minus its own mean."""
    return X - X.mean(axis=1, keepdims=True)

"""Accuracy, per-class accuracy and confusion matrix of a classifier's outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import confusion_matrix


@dataclass(frozen=True)
class ClassificationReport:
    """How well predicted labels match true ones.

    Attributes
    ----------
    accuracy : float
        Fraction of correct predictions.
    n_correct, n_total : int
        The counts behind ``accuracy``.
    per_class_accuracy : ndarray of shape (n_classes,)
        Recall of each class (correct / images of that class); NaN for a class with
        no image.
    confusion : ndarray of shape (n_classes, n_classes)
        ``confusion[i, j]`` = images of class i predicted as class j.
    chance : float
        Accuracy of always guessing the most frequent true class.
    """

    accuracy: float
    n_correct: int
    n_total: int
    per_class_accuracy: np.ndarray
    confusion: np.ndarray
    chance: float


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> ClassificationReport:
    """Compare predicted labels with true labels.

    Parameters
    ----------
    y_true, y_pred : ndarray of shape (n_samples,)
        Labels in ``0 .. n_classes - 1``.
    n_classes : int

    Returns
    -------
    ClassificationReport
    """
    confusion = confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))
    per_class_total = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diagonal(confusion) / per_class_total
    n_correct = int(np.trace(confusion))
    n_total = int(len(y_true))
    return ClassificationReport(
        accuracy=n_correct / n_total,
        n_correct=n_correct,
        n_total=n_total,
        per_class_accuracy=per_class,
        confusion=confusion,
        chance=float(per_class_total.max() / n_total),
    )

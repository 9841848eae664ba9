"""Figures of a run. Each function returns a matplotlib ``Figure`` (no pyplot state)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure


def prediction_grid(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    *,
    n_shown: int = 40,
    columns: int = 8,
) -> Figure:
    """Test images with their true and predicted class; mistakes framed in red.

    Parameters
    ----------
    images : ndarray of shape (n_samples, n_pixels)
        Flattened square grayscale images (or RGB, ``n_pixels = 3 s^2``).
    y_true, y_pred : ndarray of shape (n_samples,)
    class_names : sequence of str
    n_shown, columns : int
        How many images, and how many per row.
    """
    count = min(n_shown, len(images))
    rows = -(-count // columns)
    figure = Figure(figsize=(1.6 * columns, 2.2 * rows))
    shape = _picture_shape(images.shape[1])
    for index in range(count):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(images[index].reshape(shape), cmap="gray_r", vmin=0, vmax=1, aspect="auto")
        wrong = y_true[index] != y_pred[index]
        axes.set_title(
            f"true: {class_names[y_true[index]]}\npred: {class_names[y_pred[index]]}",
            fontsize=7, color="crimson" if wrong else "black",
        )
        axes.set_xticks([])
        axes.set_yticks([])
        for spine in axes.spines.values():
            spine.set_edgecolor("crimson" if wrong else "lightgray")
            spine.set_linewidth(2.5 if wrong else 0.5)
    figure.suptitle("NTK kernel regression on test images (mistakes in red)")
    return figure


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Confusion matrix as a heat map with the counts written in each cell."""
    size = max(4.0, 0.6 * len(class_names) + 2)
    figure = Figure(figsize=(size + 1, size))
    axes = figure.add_subplot()
    shown = axes.imshow(confusion, cmap="Blues")
    figure.colorbar(shown, ax=axes, label="test images")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(ticks, class_names, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    threshold = confusion.max() / 2
    for (row, col), value in np.ndenumerate(confusion):
        axes.text(col, row, str(value), ha="center", va="center", fontsize=7,
                  color="white" if value > threshold else "black")
    axes.set_title("Confusion matrix")
    return figure


def spectrum_figure(eigenvalues: np.ndarray, *, label: str = "K(X, X)") -> Figure:
    """Eigenvalues in decreasing order on a log scale (non-positive ones not drawn)."""
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    ordered = np.sort(eigenvalues)[::-1]
    positive = ordered > 0
    axes.semilogy(np.flatnonzero(positive) + 1, ordered[positive], ".", markersize=3, label=label)
    axes.set_xlabel("index i (decreasing order)")
    axes.set_ylabel("eigenvalue lambda_i")
    axes.set_title(f"Spectrum of the training Gram matrix (n = {len(ordered)})")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    return figure


def _picture_shape(n_pixels: int) -> tuple[int, ...]:
    """Shape of a flattened square image: (s, s), (s, s, 3), or a strip (1, n)."""
    for channels in (1, 3):
        side = int(round(np.sqrt(n_pixels / channels)))
        if side * side * channels == n_pixels:
            return (side, side) if channels == 1 else (side, side, 3)
    return (1, n_pixels)

"""Figures of a run. Each function returns a matplotlib ``Figure`` (no pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure


def prediction_grid(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    *,
    image_shape: tuple[int, ...] = (),
    n_shown: int = 40,
    columns: int = 8,
) -> Figure:
    """Test images with their true and predicted class; mistakes framed in red.

    Parameters
    ----------
    images : ndarray of shape (n_samples, n_values)
        Flattened images with values in [0, 1].
    y_true, y_pred : ndarray of shape (n_samples,)
    class_names : sequence of str
    image_shape : tuple of int, optional
        Shape of one image (``Sample.image_shape``): (h, w) is drawn in gray, (h, w, 3)
        in colour. Default: a one-pixel-high strip.
    n_shown, columns : int
        How many images, and how many per row.
    """
    count = min(n_shown, len(images))
    rows = -(-count // columns)
    figure = Figure(figsize=(1.6 * columns, 2.2 * rows))
    shape = image_shape or (1, images.shape[1])
    for index in range(count):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(
            images[index].reshape(shape),
            cmap="gray_r",
            vmin=0,
            vmax=1,
            aspect="equal" if image_shape else "auto",
        )
        wrong = y_true[index] != y_pred[index]
        axes.set_title(
            f"true: {class_names[y_true[index]]}\npred: {class_names[y_pred[index]]}",
            fontsize=7,
            color="crimson" if wrong else "black",
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
        axes.text(
            col,
            row,
            str(value),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if value > threshold else "black",
        )
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


def learning_curve_figure(
    sizes: np.ndarray, accuracy: dict[str, np.ndarray], n_classes: int
) -> Figure:
    """Test accuracy against training images per class (log x axis), one line per model."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for name, values in accuracy.items():
        style = "k--" if "SVC" in name else ("-" if name.startswith("NTK") else ":")
        axes.semilogx(sizes, values, style, marker="o", markersize=3, label=name)
    axes.axhline(1 / n_classes, color="gray", linewidth=0.8, label="chance")
    axes.set_xlabel("training images per class")
    axes.set_ylabel("test accuracy")
    axes.set_title("Learning curves: infinite networks (kernel regression) vs RBF SVC")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, ncol=2)
    return figure


def time_width_figure(curves, n_classes: int) -> Figure:
    """Two panels against training images (log x): the infinite network after each time
    t (NTK solid, NNGP dashed), and trained networks by width with the converged NTK
    (dashed) and, for gradient descent, the NTK after the networks' own time (dotted)."""
    figure = Figure(figsize=(12, 4.6))
    by_time, by_width = figure.subplots(1, 2, sharey=True)
    images = curves.sizes * n_classes
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(curves.times)))
    for index, (time, color) in enumerate(zip(curves.times, colors)):
        label = "t = inf" if np.isinf(time) else f"t = {time:.3g}"
        by_time.semilogx(
            images,
            curves.kernel_accuracy["NTK"][index],
            "-o",
            color=color,
            markersize=3,
            label=f"NTK {label}",
        )
        by_time.semilogx(
            images, curves.kernel_accuracy["NNGP"][index], "--", color=color, label=f"NNGP {label}"
        )
    by_time.set_title("Infinite network after gradient-descent time t")
    widths_colors = matplotlib.colormaps["plasma"](np.linspace(0, 0.85, len(curves.widths)))
    for index, (width, color) in enumerate(zip(curves.widths, widths_colors)):
        by_width.semilogx(
            images,
            curves.network_accuracy[index],
            "-o",
            color=color,
            markersize=3,
            label=f"width {width}",
        )
    converged = np.flatnonzero(np.isinf(curves.times))
    if converged.size:
        by_width.semilogx(
            images, curves.kernel_accuracy["NTK"][converged[0]], "k--", label="NTK, t = inf"
        )
    if np.isfinite(curves.ntk_at_network_time).all():
        by_width.semilogx(
            images,
            curves.ntk_at_network_time,
            ":",
            color="gray",
            label=f"NTK at the networks' t ~ {np.median(curves.network_time):.3g}",
        )
    by_width.set_title(f"Trained networks ({curves.training}) by width")
    for axes in (by_time, by_width):
        axes.axhline(1 / n_classes, color="gray", linewidth=0.8)
        axes.set_xlabel("training images")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7, ncol=2)
    by_time.set_ylabel("test accuracy")
    return figure


def training_curve_figure(times: np.ndarray, loss: dict, accuracy: dict) -> Figure:
    """Loss and accuracy against training time t (log x axis), train and test, NTK and NNGP."""
    figure = Figure(figsize=(11, 4.2))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for name, color in (("NTK", "C0"), ("NNGP", "C1")):
        for split, style in (("train", "--"), ("test", "-")):
            label = f"{name} {split}"
            loss_axes.loglog(times, loss[name][split], style, color=color, label=label)
            accuracy_axes.semilogx(times, accuracy[name][split], style, color=color, label=label)
    largest = max(float(np.max(loss[name][split])) for name in loss for split in loss[name])
    loss_axes.set_ylim(bottom=1e-8 * largest)  # a converged train loss would flatten the rest
    loss_axes.set_ylabel("loss 0.5 * mean (f - y)^2")
    accuracy_axes.set_ylabel("accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.set_xlabel("training time t = learning rate x steps")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle("Infinite network trained by gradient descent, in closed form")
    return figure


def spectrum_panels_figure(
    data_eigenvalues: np.ndarray,
    circle_eigenvalues: np.ndarray,
    sizes: np.ndarray,
    bound: dict[str, np.ndarray],
    *,
    data_label: str = "training Gram",
) -> Figure:
    """Three panels: the data Gram spectrum, the unit-circle spectrum, and the norm bound.

    Eigenvalues below ``1e-12`` times the largest are zero to rounding (on the circle,
    the ReLU NTK's odd Fourier coefficients above 1 vanish); they are counted in the
    title, not drawn.
    """
    figure = Figure(figsize=(15, 4.2), layout="constrained")
    data_axes, circle_axes, bound_axes = figure.subplots(1, 3)
    for axes, values, title in (
        (data_axes, data_eigenvalues, f"{data_label} (n = {len(data_eigenvalues)})"),
        (circle_axes, circle_eigenvalues, f"{len(circle_eigenvalues)} points on the unit circle"),
    ):
        ordered = np.sort(values)[::-1]
        keep = ordered > 1e-12 * ordered[0]
        axes.loglog(np.flatnonzero(keep) + 1, ordered[keep], ".", markersize=3)
        axes.set_xlabel("index i (decreasing order)")
        axes.set_ylabel("eigenvalue lambda_i of the NTK Gram matrix")
        zeros = int((~keep).sum())
        axes.set_title(title + (f"; {zeros} zero to rounding" if zeros else ""), fontsize=10)
        axes.grid(True, which="both", alpha=0.3)
    for name, values in bound.items():
        bound_axes.plot(sizes, values, marker="o", markersize=3, label=name)
    bound_axes.set_xlabel("training set size n")
    bound_axes.set_ylabel("sqrt(y' K^-1 y / n)")
    bound_axes.set_title("Complexity measure on a two-class task", fontsize=10)
    bound_axes.grid(True, alpha=0.3)
    bound_axes.legend(fontsize=8)
    return figure


def monte_carlo_figure(widths: np.ndarray, errors: np.ndarray, slope: float) -> Figure:
    """Relative error of the empirical NTK against width, log-log, with the fitted slope."""
    figure = Figure(figsize=(6, 4.2))
    axes = figure.add_subplot()
    mean = errors.mean(axis=1)
    axes.loglog(
        np.repeat(widths, errors.shape[1]),
        errors.ravel(),
        ".",
        color="C0",
        alpha=0.4,
        label="one random network",
    )
    axes.loglog(widths, mean, "o-", color="C0", label="mean over draws")
    intercept = np.log(mean).mean() - slope * np.log(widths).mean()
    axes.loglog(widths, np.exp(intercept) * widths**slope, "k--", label=f"fit: slope {slope:.2f}")
    axes.set_xlabel("hidden width m")
    axes.set_ylabel("||empirical NTK - formula||_F / ||formula||_F")
    axes.set_title("Finite-width NTK converges to the formula")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    return figure


def network_comparison_figure(
    widths: np.ndarray, agreement: np.ndarray, network_accuracy: np.ndarray, kernel_accuracy: float
) -> Figure:
    """Agreement and accuracy of trained networks against width, with the kernel's accuracy."""
    figure = Figure(figsize=(6.5, 4.2))
    axes = figure.add_subplot()
    axes.semilogx(widths, agreement, "o-", label="agreement with the infinite network")
    axes.semilogx(widths, network_accuracy, "s-", label="network test accuracy")
    axes.axhline(
        kernel_accuracy,
        color="k",
        linestyle="--",
        label="infinite network test accuracy (same steps)",
    )
    axes.set_xlabel("hidden width m")
    axes.set_ylabel("fraction of test images")
    axes.set_title("Trained finite networks approach the kernel")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    return figure

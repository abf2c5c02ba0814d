"""Figures for people: image grids, training curves and the confusion matrix (PNG)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or wanted

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fmnist.files import atomic_path

# Without these, matplotlib stamps its version into the PNG and the bytes change on upgrade.
PNG_METADATA = {"Software": None}


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> None:
    """Write ``figure`` as a PNG atomically and release its memory."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100, metadata=PNG_METADATA)
    plt.close(figure)


def plot_image_grid(
    images: np.ndarray, titles: Sequence[str], columns: int = 5, title: str = ""
) -> Figure:
    """Images in a grid, each with its caption below it."""
    rows = max(1, math.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.3 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, titles, strict=False):
        axis.imshow(image, cmap="gray_r", vmin=0, vmax=255)
        axis.set_title(caption, fontsize=9)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_curves(history: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch (from 1), training against validation, side by side.

    The validation series is labelled with dvclive's name for it, ``eval``, as DVC's plots
    and ``dvc exp show`` name it.
    """
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        axis.plot(history["epoch"], history[f"train_{metric}"], marker="o", label="train")
        axis.plot(history["epoch"], history[f"val_{metric}"], marker="o", label="validation (eval)")
        axis.set_xlabel("epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_ylabel(metric)
        axis.set_title(metric.capitalize())
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return figure


def error_shares(matrix: np.ndarray) -> np.ndarray:
    """Each off-diagonal cell as a share of its row (the images of that true class); the
    diagonal, the correct answers, as NaN: it would dwarf every error in a colour scale.
    """
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    np.fill_diagonal(shares, np.nan)
    return shares


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Confusion matrix with counts in each cell; rows true, columns predicted, in label order.

    The colour of an error is its share of the true class's images, so that 150 Pullovers
    taken for Coats stand out; the diagonal (correct answers) is grey, its counts in bold.
    """
    figure, axis = plt.subplots(figsize=(8, 7))
    shares = error_shares(matrix)
    colours = plt.get_cmap("Reds").with_extremes(bad="#e8e8e8")
    image = axis.imshow(shares, cmap=colours, vmin=0, vmax=max(np.nanmax(shares), 0.01))
    colourbar = figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    colourbar.set_label("share of the true class's images")
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    threshold = np.nanmax(shares) / 2
    for (row, column), count in np.ndenumerate(matrix):
        correct = row == column
        color = "white" if not correct and shares[row, column] > threshold else "black"
        weight = "bold" if correct else "normal"
        axis.text(
            column,
            row,
            str(count),
            ha="center",
            va="center",
            color=color,
            fontsize=8,
            fontweight=weight,
        )
    axis.set_title("Confusion matrix (test set): errors by share of the true class")
    figure.tight_layout()
    return figure

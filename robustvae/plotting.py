"""One plotting style for the whole book, and the figures every chapter reuses."""

from __future__ import annotations

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["set_style", "FIGSIZE", "image_grid", "show_images"]

#: Figure sizes (inches) kept the same across chapters.
FIGSIZE = {"wide": (9.0, 3.2), "square": (4.5, 4.5), "panel": (9.0, 4.5)}


def set_style() -> None:
    """Seaborn's clean style with the book's font sizes; called once by :func:`robustvae.setup`."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({
        "figure.dpi": 100, "savefig.dpi": 100, "axes.titlesize": 11, "axes.labelsize": 10,
        "legend.fontsize": 9, "figure.autolayout": False,
    })


def image_grid(images: torch.Tensor, nrow: int) -> np.ndarray:
    """Tile ``(N, 1, H, W)`` images into one ``(rows*H, nrow*W)`` array with 1-pixel gaps."""
    imgs = images.detach().cpu().numpy()[:, 0]
    n, h, w = imgs.shape
    ncol = nrow
    nrows = int(np.ceil(n / ncol))
    grid = np.ones((nrows * (h + 1) - 1, ncol * (w + 1) - 1))
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = imgs[i]
    return grid


def show_images(rows: dict[str, torch.Tensor], titles: list[str] | None = None, scale: float = 0.9):
    """One row of images per entry of ``rows`` (label -> ``(N, 1, 28, 28)``), labelled on the left.

    ``titles`` (one per column) go above the first row. Returns the figure.
    """
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(scale * n, scale * len(rows) + 0.3), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([]); ax.set_yticks([])
            ax.grid(False)
            if c < len(imgs):
                ax.imshow(imgs[c, 0].detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
            if r == 0 and titles is not None and c < len(titles):
                ax.set_title(titles[c], fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig

"""One plotting style for the whole book, and the figures every chapter reuses."""

from __future__ import annotations

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["set_style", "COLUMN_WIDTH", "FIGSIZE", "image_grid", "show_images"]

#: Width (inches) of the book's text column at ``figure.dpi`` 100: about 772 px. A figure no
#: wider than this is shown at 100%, so its fonts keep the sizes set by :func:`set_style`.
COLUMN_WIDTH = 7.7

#: Figure sizes (inches) kept the same across chapters, all within the text column.
FIGSIZE = {
    "wide": (COLUMN_WIDTH, 3.4), "square": (4.5, 4.5), "panel": (COLUMN_WIDTH, 4.3),
    "tall": (COLUMN_WIDTH, 5.2),
}


def set_style() -> None:
    """Seaborn's clean style with the book's font sizes; called once by :func:`robustvae.setup`.

    Figures default to the text column's width (:data:`COLUMN_WIDTH` inches at 100 dpi), so the
    book shows them unscaled and a 10-point legend is about 14 px on the page.
    """
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({
        "figure.dpi": 100, "savefig.dpi": 100, "figure.figsize": FIGSIZE["wide"],
        "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "figure.titlesize": 12,
        "xtick.labelsize": 10, "ytick.labelsize": 10, "legend.fontsize": 10,
        "legend.title_fontsize": 10, "figure.autolayout": False,
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

    ``titles`` (one per column) go above the first row. Each image is ``scale`` inches, shrunk
    so that the grid and its row labels fit the text column. Returns the figure.
    """
    n = max(len(v) for v in rows.values())
    scale = min(scale, (COLUMN_WIDTH - 1.3) / n)
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
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
            if r == 0 and titles is not None and c < len(titles):
                ax.set_title(titles[c], fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig

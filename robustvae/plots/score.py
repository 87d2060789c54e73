"""Chapter 10's figure: a scored VAE's row beside the book's models, one panel per scorecard column.

It draws what :func:`robustvae.score.evaluate` and :func:`robustvae.score_report.reference_rows`
return (a :func:`robustvae.scorecard.table`) and returns the :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .. import scorecard as sc
from ..plotting import COLUMN_WIDTH
from ..score_report import SHORT

__all__ = ["beside_book"]


def beside_book(card: pd.DataFrame, highlight: str, book: str, what: str = "the scored VAE") -> Figure:
    """Returns a 2 x 4 grid of panels, one per column: each model's estimate with its 95% interval.

    ``card`` is a scorecard table (columns ``(column, value|lo|hi)``, one row per model, the first
    row at the top). The row ``highlight`` is drawn in red (with "none" where its value is
    missing) and bold in the labels; the row ``book`` in blue, with a dotted line at its value.
    Each panel's title says whether higher or lower is better; the figure's title names the
    highlighted model as ``what``.
    """
    ypos = np.arange(len(card))[::-1]  # the first row at the top
    fig, axes = plt.subplots(2, 4, figsize=(COLUMN_WIDTH, 6.4), sharey=True)
    for ax, c in zip(axes.flat, sc.COLUMNS):
        est = card[c].astype(float).replace([np.inf, -np.inf], np.nan)
        for y, n in zip(ypos, card.index):
            v, lo, hi = est.loc[n, ["value", "lo", "hi"]]
            color = "C3" if n == highlight else ("C0" if n == book else "0.55")
            if np.isnan(v):
                if n == highlight:
                    ax.text(0.5, y, "none", transform=ax.get_yaxis_transform(),
                            ha="center", va="center", fontsize=9, color=color)
                continue
            err = [[v - lo], [hi - v]] if not np.isnan(lo) else None
            ax.errorbar(v, y, xerr=err, fmt="o", ms=4, color=color, capsize=2, lw=1.2)
        if book in card.index and not np.isnan(est.loc[book, "value"]):
            ax.axvline(est.loc[book, "value"], color="C0", ls=":", lw=1)
        better = "higher" if sc.COLUMNS[c][1] else "lower"
        ax.set_title(f"{SHORT[c]}\n({better} is better)", fontsize=10)
        ax.tick_params(axis="x", labelsize=8, rotation=30)
        ax.grid(axis="y", visible=False)
    axes[0, 0].set_yticks(ypos, card.index, fontsize=9)
    for lab in axes[0, 0].get_yticklabels() + axes[1, 0].get_yticklabels():
        if lab.get_text() == highlight:
            lab.set_color("C3")
            lab.set_fontweight("bold")
    fig.suptitle(
        f"{what[:1].upper()}{what[1:]} (top row) beside the book's models: estimates and 95% intervals\n"
        "(dotted line: the book's VAE, beta = 1)",
        fontsize=11,
    )
    fig.tight_layout()
    return fig

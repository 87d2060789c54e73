"""Chapter 9's figures: the scorecard as a heat map, and the trade-offs between its columns.

Both take :func:`robustvae.scorecard.table`'s output (per column ``value``, ``lo`` and ``hi``; one
row per model) and only draw it.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .. import scorecard as sc
from ..plotting import COLUMN_WIDTH, FIGSIZE
from ..score_report import DIGITS, SHORT
from ..tables import fmt_number

__all__ = ["heatmap", "trade_off"]


def _values(card: pd.DataFrame) -> pd.DataFrame:
    return card.xs("value", axis=1, level="stat")


def heatmap(card: pd.DataFrame) -> Figure:
    """Return the scorecard as a heat map: each column rescaled so that the best model is 1 and
    the worst 0 (:func:`robustvae.scorecard.normalise_columns`; grey: no value), each cell
    annotated with the raw estimate."""
    values = _values(card)
    norm = sc.normalise_columns(values)
    annot = values.copy().astype(object)
    for c in values.columns:
        annot[c] = [fmt_number(v, min(DIGITS[c], 3)) for v in values[c]]
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 5.2))
    sns.heatmap(norm.astype(float), annot=annot.to_numpy(), fmt="", cmap="viridis", vmin=0, vmax=1, ax=ax,
                cbar_kws={"label": "per column: 0 = worst model, 1 = best"}, linewidths=0.5,
                linecolor="white", annot_kws={"fontsize": 9.5})
    ax.set_facecolor("lightgrey")
    ax.set_xticklabels([SHORT[c] for c in values.columns], rotation=30, ha="right", fontsize=10)
    ax.set(xlabel="", ylabel="", title="Robustness scorecard, normalised per column\n(numbers: the raw estimates)")
    fig.tight_layout()
    return fig


def trade_off(card: pd.DataFrame, r: float, certified: Sequence[str] = ()) -> Figure:
    """Return two panels, one point per model with its 95% intervals as error bars: median
    empirical margin against pixel MSE, and detection AUROC against the margin. The models named
    in ``certified`` (the Lipschitz VAEs) are squares, with their certified margin as a dash in
    the first panel; ``r`` goes in the axis labels."""
    values = _values(card)

    def err(col: str) -> np.ndarray:
        v = values[col]
        return np.vstack([v - card[(col, "lo")], card[(col, "hi")] - v])

    fig, axes = plt.subplots(1, 2, figsize=FIGSIZE["tall"])
    for i, n in enumerate(values.index):
        kw = dict(fmt="o" if n not in certified else "s", color=f"C{i}", ms=7, capsize=3, label=n)
        axes[0].errorbar(values.loc[n, "mse"], values.loc[n, "margin"], xerr=err("mse")[:, [i]],
                         yerr=err("margin")[:, [i]], **kw)
        axes[1].errorbar(values.loc[n, "margin"], values.loc[n, "detection_auroc"], xerr=err("margin")[:, [i]],
                         yerr=err("detection_auroc")[:, [i]], **kw)
        if n in certified:
            axes[0].plot(values.loc[n, "mse"], values.loc[n, "certified"], marker="_", ms=14, mew=2, color=f"C{i}")
    margin = f"median emp. margin ||delta||_2 (r = {r:g})"
    axes[0].set(xlabel="test pixel MSE (reconstruction error)", ylabel=margin,
                title="Robustness costs reconstruction\n(dashes: certified margins)")
    axes[1].set(xlabel=margin, ylabel="adv. detection AUROC", title="Robust VAEs are\nworse witnesses")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9.5, frameon=False)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    return fig

"""Chapter 5's figures: the VAE's reconstructions, the seed study's per-bin plot, reconstruction
error against correctness, reliability diagrams and risk-coverage curves.

Each function takes what the chapter "The VAE as a judge of classifier confidence" computed
(the per-image ``scores`` of :func:`robustvae.calibration.score_inputs`, the
:func:`~robustvae.calibration.confidence_bins` tables, the recalibrated probabilities and the
selective-prediction scores of :mod:`robustvae.reports.calibration`) and returns the
:class:`matplotlib.figure.Figure` it drew.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from .. import calibration as cal
from ..plotting import COLUMN_WIDTH, FIGSIZE, show_images
from ..reports.calibration import conf_correct

__all__ = ["RELIABILITY_STYLES", "SELECTION_COLORS", "reconstructions", "confidence_bins",
           "reconstruction_error", "reliability", "risk_coverage"]

#: Colour and marker of each map in the reliability diagrams.
RELIABILITY_STYLES = {
    "none": ("C7", "o"),
    "temperature": ("C0", "s"),
    "VAE temperature": ("C1", "D"),
    "Platt + VAE": ("C3", "^"),
}

#: Colour of each ranking in the risk-coverage curves.
SELECTION_COLORS = {
    "confidence": "C0",
    "low recon. MSE": "C1",
    "high ELBO": "C4",
    "confidence + VAE (fitted)": "C3",
    "oracle": "C7",
}


@torch.no_grad()
def reconstructions(inputs: Mapping[str, tuple[torch.Tensor, Any]], labels: torch.Tensor, vae,
                    device: torch.device | str | None = None) -> Figure:
    """Returns the figure of one row per input set and one of its VAE reconstructions below it.

    The labelled sets show the first image of each class 0..9 (classes from ``labels``), sets
    whose labels are ``None`` their first ten items; the reconstruction is the decoder's mean at
    ``z = mu(x)``. ``device`` defaults to the VAE's.
    """
    device = next(vae.parameters()).device if device is None else device
    show = torch.cat([torch.nonzero(labels == c)[0] for c in range(10)])
    rows = {}
    for name, (x, y) in inputs.items():
        xs = x[show if y is not None else torch.arange(10)].to(device)
        rows[name] = xs
        rows[f"{name}: VAE"] = vae.reconstruct(xs, sample=False)
    return show_images(rows)


def confidence_bins(bins: Mapping[str, pd.DataFrame]) -> Figure:
    """Returns the seed study's plot for each table of ``bins`` (set -> its
    :func:`~robustvae.calibration.confidence_bins` of the reconstruction MSE): the per-bin mean
    with its 95% t-interval above, the images per bin (log scale) below.

    The first two tables are drawn in C0 and C1 with their count bars side by side.
    """
    n_bins = len(next(iter(bins.values())))
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(COLUMN_WIDTH, 5.5), sharex=True,
                                   gridspec_kw={"height_ratios": [2.2, 1]})
    for i, ((name, table), color) in enumerate(zip(bins.items(), ("C0", "C1"))):
        cal.plot_confidence_bins(table, ax, label=f"{name} test images", color=color)
        full = table[table["count"] > 0]
        ax_n.bar((full["lo"] + full["hi"]) / 2 + (0.011 if i == 1 else -0.011), full["count"],
                 width=0.02, color=color, label=name)
    top_ci = max(t.loc[t["count"] >= 5, "ci_high"].max() for t in bins.values())
    ax.set(xlabel="", ylim=(0, 1.3 * top_ci),
           title=f"VAE reconstruction error per classifier-confidence bin\n({n_bins} "
                 "bins, 95% t-intervals)")
    ax.legend()
    ax_n.set(yscale="log", xlabel="classifier confidence (max softmax)", ylabel="images per bin",
             xlim=(0, 1))
    fig.tight_layout()
    return fig


def reconstruction_error(scores: Mapping[str, pd.DataFrame],
                         unlabelled: tuple[str, ...] = ("foreign",)) -> Figure:
    """Returns the figure of the reconstruction MSE per input set: its histogram (log scale) on
    the left, and boxplots of correct (green) against wrong (red) predictions per labelled set
    on the right."""
    fig, ax = plt.subplots(1, 2, figsize=FIGSIZE["wide"])
    edges = np.logspace(np.log10(min(s["mse"].min() for s in scores.values())),
                        np.log10(max(s["mse"].max() for s in scores.values())), 40)
    for name, s in scores.items():
        ax[0].hist(s["mse"], bins=edges, histtype="step", lw=1.5, density=True, label=name)
    ax[0].set(xscale="log", xlabel="reconstruction MSE (log scale)", ylabel="density",
              title="Reconstruction error by input set")
    ax[0].xaxis.set_minor_formatter(NullFormatter())  # label decades only
    ax[0].legend()
    labelled = [n for n in scores if n not in unlabelled]
    data, pos = [], []
    for i, name in enumerate(labelled):
        s = scores[name]
        data += [s.loc[s["correct"] == 1, "mse"], s.loc[s["correct"] == 0, "mse"]]
        pos += [3 * i, 3 * i + 1]
    box = ax[1].boxplot(data, positions=pos, widths=0.8, showfliers=False, patch_artist=True)
    for j, patch in enumerate(box["boxes"]):
        patch.set_facecolor("C2" if j % 2 == 0 else "C3")
    ax[1].set_xticks([3 * i + 0.5 for i in range(len(labelled))], labelled)
    ax[1].set(yscale="log", ylabel="reconstruction MSE (log scale)",
              title="Correct (green) vs wrong (red)\npredictions")
    fig.tight_layout()
    return fig


def reliability(probs: Mapping[tuple[str, str, str], np.ndarray],
                eval_sets: Mapping[str, Mapping[str, Any]], n_bins: int = 15,
                sets: tuple[str, ...] = ("clean", "rotated", "noisy"),
                setting: str = "clean") -> Figure:
    """Returns the reliability diagrams (one panel per set of ``sets``) of the maps of
    :data:`RELIABILITY_STYLES` fitted on ``setting``, from the recalibrated ``probs`` keyed
    ``(setting, method, set)`` and the labels ``eval_sets[set]["y"]``."""
    fig, axes = plt.subplots(1, len(sets), figsize=(COLUMN_WIDTH, 3.9), sharey=True)
    for ax, name in zip(axes, sets):
        for method, (color, marker) in RELIABILITY_STYLES.items():
            c, k = conf_correct(probs[(setting, method, name)], eval_sets[name]["y"])
            cal.plot_reliability(ax, c, k, n_bins=n_bins, label=method, color=color, marker=marker)
        ax.set_title(f"{name}\n(evaluation half)")
    for ax in axes[1:]:
        ax.set_ylabel("")
    axes[1].legend(loc="upper left", fontsize=9)
    fig.suptitle(f"Reliability diagrams, maps fitted on the {setting} calibration half\n(marker "
                 "area ~ images in bin)")
    fig.tight_layout()
    return fig


def risk_coverage(parts: Mapping[str, tuple[Mapping[str, np.ndarray], np.ndarray]],
                  panels: Mapping[str, str] | None = None) -> Figure:
    """Returns the risk-coverage curves of every ranking of
    :func:`~robustvae.reports.calibration.selection_scores`, one panel per entry of ``panels``
    (set -> title; by default the pool and the rotated digits), the AURC in each label."""
    panels = panels or {"pool": "Pool: clean + rotated\n+ noisy + foreign",
                        "rotated": "Rotated digits only"}
    fig, axes = plt.subplots(1, len(panels), figsize=(COLUMN_WIDTH, 4.4))
    for ax, (name, title) in zip(np.atleast_1d(axes), panels.items()):
        sc, correct = parts[name]
        for key, values in sc.items():
            cal.plot_risk_coverage(ax, values, correct, label=key, color=SELECTION_COLORS[key],
                                   ls=":" if key == "oracle" else "-")
        ax.set(title=title, ylim=(0, None))
        ax.legend(fontsize=9, loc="upper left")
    fig.tight_layout()
    return fig

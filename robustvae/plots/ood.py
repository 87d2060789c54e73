"""Chapter 2's figures: the OOD test sets, the scores' histograms and ROC curves, and the likelihood's ceiling.

Each function draws what the chapter computed (the test sets of
:func:`robustvae.reports.ood.ood_sets`, the scores of :func:`robustvae.ood.score_sets`, by score
then by set) and returns the figure.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .. import ood
from ..plotting import COLUMN_WIDTH, FIGSIZE, show_images
from ..reports.ood import CEIL, IC, LATENT, LIKE

__all__ = ["sample_images", "latent_histograms", "likelihood_ceiling", "corrections", "roc_curves"]

Scores = Mapping[str, Mapping[str, torch.Tensor]]

#: The axis label of each latent signal.
UNITS = {
    "KL(q(z|x) || p(z))": "KL (nats)",
    "||mu(x)||": "||mu(x)||",
    "mean sigma^2(x)": "mean encoder variance",
    "Mahalanobis(mu)": "squared Mahalanobis distance",
}
#: The scores whose ROC curves :func:`roc_curves` draws.
CURVES = [LIKE, "reconstruction MSE", "Mahalanobis(mu)", IC, CEIL, "max softmax (classifier)", "energy (classifier)"]


def _hist(ax: Axes, data: Mapping[str, object], xlabel: str, log: bool = False, bins: int = 40) -> None:
    """Overlaid histograms of several score arrays (label -> values) on shared bins."""
    vals = {k: np.asarray(v, dtype=float) for k, v in data.items()}
    if log:  # the latent signals are positive and span decades: histogram their log10
        vals = {k: np.log10(v) for k, v in vals.items()}
        xlabel = f"log10 {xlabel}"
    allv = np.concatenate(list(vals.values()))
    edges = np.linspace(allv.min(), allv.max(), bins)
    for k, v in vals.items():
        ax.hist(v, bins=edges, alpha=0.55, density=True, label=k)
    ax.set(xlabel=xlabel, ylabel="density")


def sample_images(sets1: Mapping[str, torch.Tensor], sets2: Mapping[str, torch.Tensor]) -> Figure:
    """Return ten images of each of direction 1's test sets, then of direction 2's in-distribution and inverted sets."""
    rows = {name: x[:10] for name, x in sets1.items()}
    rows["Fashion-MNIST (dir. 2 in)"] = sets2["in-distribution"][:10]
    rows["inverted (dir. 2)"] = sets2["inverted"][:10]
    fig = show_images(rows, scale=0.75)
    fig.suptitle("Ten images of each test set: direction 1, then two of direction 2's own", y=0.93)
    return fig


def latent_histograms(scores1: Scores, scores2: Scores, dataset: str, label1: str) -> Figure:
    """Return histograms of the four latent signals (rows), direction 1 (left) and 2 (right).

    Each panel overlays the in-distribution test images, the other dataset and uniform noise, on a
    log10 axis, with the AUROC against the other dataset in its title.
    """
    fig, axes = plt.subplots(4, 2, figsize=(COLUMN_WIDTH, 11))
    for col, (scores, lab, name_in) in enumerate([(scores1, label1, dataset), (scores2, "MNIST", "fashion-mnist")]):
        for ax, s in zip(axes[:, col], LATENT):
            _hist(
                ax,
                {
                    f"{name_in} (in)": scores[s]["in-distribution"],
                    f"{lab} (OOD)": scores[s][lab],
                    "uniform noise (OOD)": scores[s]["uniform noise"],
                },
                UNITS[s],
                log=True,
            )
            auc = ood.ood_metrics(scores[s]["in-distribution"], scores[s][lab])["auroc"]
            ax.set_title(f"VAE trained on {name_in}\nAUROC vs {lab}: {auc:.2f}", fontsize=10)
    axes[0, 0].legend(fontsize=9)
    axes[0, 1].legend(fontsize=9)
    fig.suptitle("Latent signals, in-distribution vs OOD\n(left: direction 1, right: direction 2)")
    fig.tight_layout()
    return fig


def likelihood_ceiling(scores2: Scores, sets2: Mapping[str, torch.Tensor]) -> Figure:
    """Return the Fashion-MNIST VAE's log p(x) on Fashion-MNIST and MNIST (left) and against its ceiling (right).

    Left: histograms of log p(x) in bits per pixel. Right: each image's log p(x) against its
    Bernoulli ceiling ``-sum_i H_b(x_i)`` (:func:`robustvae.ood.bernoulli_entropy`), with the
    line where they are equal.
    """
    bits_per_dim = 1 / (784 * np.log(2))
    ll_f = -scores2[LIKE]["in-distribution"].numpy() * bits_per_dim
    ll_m = -scores2[LIKE]["MNIST"].numpy() * bits_per_dim
    ceil_f = -ood.bernoulli_entropy(sets2["in-distribution"]).numpy() * bits_per_dim
    ceil_m = -ood.bernoulli_entropy(sets2["MNIST"]).numpy() * bits_per_dim

    fig, ax = plt.subplots(1, 2, figsize=FIGSIZE["wide"])
    _hist(ax[0], {"Fashion-MNIST test (in)": ll_f, "MNIST test (OOD)": ll_m}, "log p(x) (bits per pixel)")
    ax[0].set_title("Fashion-MNIST VAE: MNIST looks more likely")
    ax[0].legend()
    ax[1].scatter(ceil_f, ll_f, s=4, alpha=0.5, label="Fashion-MNIST test (in)")
    ax[1].scatter(ceil_m, ll_m, s=4, alpha=0.5, label="MNIST test (OOD)")
    lim = [min(ceil_f.min(), ll_f.min()), 0]
    ax[1].plot(lim, lim, "k--", lw=1, label="ceiling: log p(x) = -sum H_b(x)")
    ax[1].set(
        xlabel="ceiling -sum_i H_b(x_i) (bits per pixel)",
        ylabel="log p(x) (bits per pixel)",
        title="The likelihood follows its ceiling",
    )
    ax[1].legend(fontsize=9, markerscale=3)
    fig.tight_layout()
    return fig


def corrections(scores2: Scores, auroc2: pd.DataFrame) -> Figure:
    """Return histograms of input complexity (left) and the Bernoulli-ceiling distance (right) in direction 2.

    Fashion-MNIST, MNIST and uniform noise overlaid; each title gives the AUROC against MNIST
    from ``auroc2`` (:func:`robustvae.reports.ood.auroc_matrix`).
    """
    fig, ax = plt.subplots(1, 2, figsize=FIGSIZE["wide"])
    for a, s, xlabel in [(ax[0], IC, "S(x) = -log2 p(x) - L_PNG(x) (bits per pixel)"),
                         (ax[1], CEIL, "-log p(x) - sum_i H_b(x_i) (nats)")]:
        _hist(
            a,
            {
                "Fashion-MNIST (in)": scores2[s]["in-distribution"],
                "MNIST (OOD)": scores2[s]["MNIST"],
                "uniform noise (OOD)": scores2[s]["uniform noise"],
            },
            xlabel,
            bins=60,
        )
        a.set_title(f"{s}: AUROC vs MNIST {auroc2.loc[s, 'MNIST']:.3f}", fontsize=10)
    ax[0].legend(fontsize=9)
    fig.tight_layout()
    return fig


def roc_curves(scores1: Scores, scores2: Scores, dataset: str, label1: str) -> Figure:
    """Return the ROC curves of the scores in :data:`CURVES` on the two headline pairs (top: direction 1).

    Classifier scores dashed; each legend entry gives the score's AUROC; the diagonal is chance.
    """
    fig, ax = plt.subplots(2, 1, figsize=(COLUMN_WIDTH, 9.6))
    for a, scores, lab, title in [
        (ax[0], scores1, label1, f"Direction 1: {dataset} (in) vs {label1}"),
        (ax[1], scores2, "MNIST", "Direction 2: Fashion-MNIST (in) vs MNIST"),
    ]:
        for j, s in enumerate(CURVES):
            fpr, tpr = ood.roc(scores[s]["in-distribution"], scores[s][lab])
            auc = ood.ood_metrics(scores[s]["in-distribution"], scores[s][lab])["auroc"]
            a.plot(fpr, tpr, lw=1.6, ls="--" if "classifier" in s else "-", label=f"{s} ({auc:.3f})", color=f"C{j}")
        a.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        a.set(
            xlabel="false-positive rate (in-distribution flagged)",
            ylabel="true-positive rate (OOD flagged)",
            title=title,
            xlim=(0, 1),
            ylim=(0, 1.01),
        )
        a.legend(fontsize=9, loc="lower right", title="score (AUROC)", title_fontsize=9)
    fig.tight_layout()
    return fig

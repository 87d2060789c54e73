"""Chapter 3's figures: the attacked digits, the number of distinct labels over stochastic
reconstructions, the latent statistics and means of adversarial inputs, and the attacks on the VAE.

Each function draws what ``book/03_adversarial.md`` computed (with :mod:`robustvae.consistency`,
:mod:`robustvae.attacks` and :mod:`robustvae.reports.consistency`) and returns the
:class:`matplotlib.figure.Figure`, its message in its title.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from .. import consistency as cons
from ..plotting import COLUMN_WIDTH, FIGSIZE, show_images
from ..reports.consistency import STAT_NAMES

__all__ = [
    "attacked_digits",
    "distinct_label_bars",
    "seed_experiment",
    "latent_statistics",
    "lda_plane",
    "targeted_attacks",
    "latent_attack_images",
    "damage_images",
]


def attacked_digits(x: torch.Tensor, y: torch.Tensor, adv: Mapping[str, torch.Tensor]) -> Figure:
    """Returns a grid of one digit of each of the first eight classes, clean and under every
    attack in ``adv`` (one row each), taken from the images that every attack attacked (the
    first ``min(len(adv[k]))`` of ``x``)."""
    n = min(len(v) for v in adv.values())
    show = torch.cat([torch.nonzero(y[:n] == c)[:1, 0] for c in range(10)])[:8]
    rows = {"clean": x[show]}
    rows.update({k: v[show] for k, v in adv.items()})
    fig = show_images(rows, titles=[f"digit {int(c)}" for c in y[show]])
    fig.suptitle("The same digits under each attack", y=1.0)
    return fig


def _share_bins(nd: torch.Tensor, label: str) -> float:
    return ((nd >= 4) if label == ">=4" else (nd == int(label))).float().mean().item()


def distinct_label_bars(labels: Mapping[str, Mapping[str, torch.Tensor]], keep: Mapping[str, torch.Tensor],
                        n_samples: int) -> Figure:
    """Returns one panel per VAE (``labels[vae][kind]``, labels of ``n_samples`` reconstructions per
    input): per input kind, the share of the inputs counted (``keep[kind]``) whose reconstructions
    get 1, 2, 3 or at least 4 distinct labels."""
    fig, axes = plt.subplots(1, 2, figsize=(COLUMN_WIDTH, 4.6), sharey=True)
    bins = ["1", "2", "3", ">=4"]
    width = 0.8 / len(bins)
    for ax, (name, by_kind) in zip(axes, labels.items()):
        kinds = list(by_kind)
        for b, label in enumerate(bins):
            shares = [_share_bins(cons.n_distinct(by_kind[k][keep[k]]), label) for k in kinds]
            ax.bar(np.arange(len(kinds)) + (b - 1.5) * width, shares, width, label=f"{label} label(s)")
        ax.set_xticks(np.arange(len(kinds)), kinds, rotation=30, ha="right")
        ax.set(title=f"VAE {name}", xlabel="input")
    axes[0].set_ylabel("share of inputs")
    fig.legend(*axes[1].get_legend_handles_labels(), title=f"distinct labels in {n_samples} samples",
               loc="lower center", ncol=4, fontsize=10, frameon=False)
    fig.suptitle(f"Number of distinct classifier labels over {n_samples} stochastic reconstructions")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def seed_experiment(labels: Mapping[str, torch.Tensor], kinds: Sequence[str], n_samples: int,
                    vae_name: str) -> Figure:
    """Returns the seed study's figure on our models: for each input kind in ``kinds`` (every input
    of it, ``labels[kind]`` of one VAE), the share of inputs per number of distinct labels among
    the ``n_samples`` reconstructions."""
    fig, ax = plt.subplots(figsize=FIGSIZE["wide"])
    width = 0.8 / len(kinds)
    counts = np.arange(1, n_samples + 1)
    for j, k in enumerate(kinds):
        nd = cons.n_distinct(labels[k]).numpy()
        share = [(nd == c).mean() for c in counts]
        ax.bar(counts + (j - (len(kinds) - 1) / 2) * width, share, width, label=f"{k} ({len(nd)} inputs)")
    ax.set(xlabel=f"number of distinct labels among {n_samples} reconstructions",
           ylabel="share of inputs", xticks=counts,
           title=f"Seed experiment A, our models (VAE {vae_name}, every attacked input)")
    ax.legend(fontsize=9, frameon=False)
    fig.tight_layout()
    return fig


def latent_statistics(stats: Mapping[str, Mapping[str, np.ndarray]]) -> Figure:
    """Returns one box plot per latent statistic (:data:`robustvae.reports.consistency.STAT_NAMES`),
    one box per input kind of ``stats`` (:func:`robustvae.consistency.latent_stats` of each)."""
    fig, axes = plt.subplots(2, 2, figsize=(COLUMN_WIDTH, 7.4))
    for ax, (s, label) in zip(axes.flat, STAT_NAMES.items()):
        ax.boxplot([stats[k][s] for k in stats], showfliers=False)
        ax.set_xticks(np.arange(1, len(stats) + 1), list(stats), rotation=45, ha="right", fontsize=10)
        ax.set(title=label, ylabel=label)
    fig.suptitle("Latent statistics of clean and adversarial inputs\n(chapter-1 VAE; boxes: quartiles)")
    fig.tight_layout()
    return fig


def lda_plane(mu_test: np.ndarray, y_test: torch.Tensor, mu_adv: Mapping[str, np.ndarray], y: torch.Tensor,
              success: Mapping[str, torch.Tensor], panels: Sequence[str]) -> Figure:
    """Returns one panel per attack in ``panels``: the latent means of the clean test set
    (``mu_test``, faint, coloured by ``y_test``) in the plane of a linear discriminant analysis
    fitted to them, and the means of the attack's successful inputs (``mu_adv[k]``, outlined,
    coloured by their true class: ``y`` where ``success[k]``)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(n_components=2).fit(mu_test, y_test.numpy())
    emb_test = lda.transform(mu_test)
    fig, axes = plt.subplots(1, len(panels), figsize=(COLUMN_WIDTH, 4.2), sharex=True, sharey=True)
    cmap = plt.cm.tab10
    for ax, k in zip(axes, panels):
        ax.scatter(emb_test[:, 0], emb_test[:, 1], c=y_test.numpy(), cmap=cmap, vmin=0, vmax=9, s=6, alpha=0.35)
        e = lda.transform(mu_adv[k])
        y_true = y[: len(success[k])][success[k]].cpu().numpy()
        ax.scatter(e[:, 0], e[:, 1], c=y_true, cmap=cmap, vmin=0, vmax=9, s=22, edgecolors="black",
                   linewidths=0.6)
        ax.set(title=k, xlabel="LDA 1")
    axes[0].set_ylabel("LDA 2")
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(c / 9), label=str(c)) for c in range(10)]
    fig.legend(handles=handles, title="true class", loc="lower center", ncol=10, fontsize=10, frameon=False)
    fig.suptitle("Latent means in the LDA plane of the clean test set (faint: clean test\ndigits; "
                 "outlined: adversarial inputs, coloured by their true class)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def targeted_attacks(table: pd.DataFrame, n: int) -> Figure:
    """Returns the first three columns of :func:`robustvae.reports.consistency.latent_attack_table`
    (shares of ``n`` images) against the L2 radius: the latent attack on the VAE against targeted
    PGD on the classifier."""
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    for col, style in zip(table.columns[:3], ["o-", "s--", "^:"]):
        ax.plot(table.index, table[col], style, label=col)
    ax.set(xlabel="L2 radius of the perturbation", ylabel="share of images",
           title=f"Targeted attacks on {n} images: the VAE's encoder vs the classifier")
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=1)
    fig.tight_layout()
    return fig


@torch.no_grad()
def latent_attack_images(vae: nn.Module, x_src: torch.Tensor, x_tgt: torch.Tensor,
                         latent_adv: Mapping[float, torch.Tensor], table: pd.DataFrame) -> Figure:
    """Returns sources, targets, and the latent attack's inputs ``x'`` and reconstructions ``g(x')``
    (up to eight pairs) at two radii: the first where it turns half the reconstructions into the
    target (from ``table``, :func:`robustvae.reports.consistency.latent_attack_table`; the middle
    radius if none) and the largest."""
    col_t = table.columns[0]
    half = table.index[table[col_t] >= 0.5]  # first radius fooling half the VAE
    radii = list(latent_adv)
    grid_eps = sorted({half.min() if len(half) else radii[len(radii) // 2], radii[-1]})
    cols = torch.arange(min(8, len(x_src)))
    rows = {"source": x_src[cols], "target": x_tgt[cols]}
    for eps in grid_eps:
        rows[f"x' (eps {eps:g})"] = latent_adv[eps][cols]
        rows[f"g(x') (eps {eps:g})"] = vae.reconstruct(latent_adv[eps][cols], sample=False)
    fig = show_images(rows)
    fig.suptitle("Latent attack: adversarial inputs x' and their reconstructions g(x')", y=1.0)
    return fig


@torch.no_grad()
def damage_images(vae: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> Figure:
    """Returns up to eight inputs ``x``, their reconstructions, the maximum-damage inputs ``x_adv``
    (L2 radius ``eps``) and their reconstructions, one row each."""
    cols = torch.arange(min(8, len(x)))
    rows = {"x": x[cols], "g(x)": vae.reconstruct(x[cols], sample=False),
            f"x + delta (eps {eps:g})": x_adv[cols],
            "g(x + delta)": vae.reconstruct(x_adv[cols], sample=False)}
    fig = show_images(rows)
    fig.suptitle("Maximum-damage attack: inputs and reconstructions", y=1.0)
    return fig

"""Chapter 6's figures: how r-robustness is lost under attack, what breaking it looks like, and
the margins of Camuto et al. (AISTATS 2021) against the attacks' margins.

Each function draws what the chapter computed, a ``results`` dictionary
``{model name: robustvae.reports.rrobust.model_results(...)}`` (its entries are listed in
:mod:`robustvae.reports.rrobust`), and returns the figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from .. import rrobust as rr
from ..plotting import COLUMN_WIDTH, FIGSIZE, show_images

__all__ = ["probability_curves", "breaking_examples", "theory_vs_attacks", "latent_margins", "margins_by_beta"]

Results = Mapping[str, Mapping[str, Any]]


def probability_curves(results: Results, radii: Sequence[float] | np.ndarray, r_values: Sequence[float]) -> Figure:
    """A 2x2 figure, one panel per model: the probability of staying within ``r`` (mean over the
    inputs, quartile band) against the max-damage attack's budget, one curve per ``r``.

    The max-damage search must have kept the sampled distances at every radius of ``radii``.
    """
    fig, axes = plt.subplots(2, 2, figsize=(COLUMN_WIDTH, 6.6), sharex=True, sharey=True)
    for ax, (name, res) in zip(axes.flat, results.items()):
        s = res["searches"]["max-damage"]
        for rc in r_values:
            p = torch.stack([rr.probability_from_distances(s.distances[k], rc).p for k in range(len(radii))])
            ax.plot(radii, p.mean(1), marker="o", ms=3, label=f"r = {rc:g}")
            ax.fill_between(radii, p.quantile(0.25, dim=1), p.quantile(0.75, dim=1), alpha=0.15)
        ax.axhline(0.5, color="k", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xticks([t for t in (0.25, 0.5, 1, 2, 4, 8, 16) if radii[0] <= t <= radii[-1]])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(title=name)
    for ax in axes[1]:
        ax.set_xlabel("max-damage budget ||delta||_2")
    for ax in axes[:, 0]:
        ax.set_ylabel("P(||f(x+delta) - f(x)|| <= r)")
    axes[0, 0].legend(loc="lower left", fontsize=9)
    fig.suptitle("r-robustness probability under the max-damage attack\n(mean over inputs, band: quartiles)")
    fig.tight_layout()
    return fig


def breaking_examples(models: Mapping[str, torch.nn.Module], results: Results, x: torch.Tensor,
                      index: int = 0, seed: int = 0) -> Figure:
    """One row per model for input ``x[index]``: the input, the input plus the smallest
    max-damage perturbation that broke r-robustness, and two stochastic reconstructions of each
    (drawn, model after model, from one generator seeded by ``seed``)."""
    titles = ["input x", "x + delta", "f(x)", "f(x)", "f(x + delta)", "f(x + delta)"]
    rows = {}
    gen = torch.Generator().manual_seed(seed)
    x0 = x[index : index + 1]
    for name, res in results.items():
        s = res["searches"]["max-damage"]
        x1 = (x0 + s.perturbation[index : index + 1].to(x.device)).clamp(0, 1)
        clean = rr.stochastic_reconstructions(models[name], x0, 2, generator=gen)[:, 0]
        pert = rr.stochastic_reconstructions(models[name], x1, 2, generator=gen)[:, 0]
        rows[f"{name}\n||delta|| = {s.margin[index].item():.2f}"] = torch.cat([x0, x1, clean, pert]).cpu()
    return show_images(rows, titles=titles, scale=1.0)


def theory_vs_attacks(results: Results, max_radius: float) -> Figure:
    """A 2x2 figure, one panel per model: the paper's margin (filled) and the whitened margin
    (open) against the empirical margin (clamped at ``max_radius``), input by input, log axes,
    with the diagonal."""
    fig, axes = plt.subplots(2, 2, figsize=(COLUMN_WIDTH, 7.4), sharex=True, sharey=True)
    for ax, (name, res) in zip(axes.flat, results.items()):
        emp = res["empirical"].clamp(max=max_radius)
        ax.scatter(res["theory"]["paper"], emp, s=18, label="paper: sigma_min Phi^-1(p) / ||J||_F")
        ax.scatter(res["theory"]["whitened"], emp, s=18, facecolors="none", edgecolors="C1",
                   label="whitened: Phi^-1(p) / ||J / sigma||_2")
        lim = [0.01, 2 * max_radius]
        ax.plot(lim, lim, color="k", lw=0.8)
        ax.set(xscale="log", yscale="log", xlim=lim, ylim=[0.1, 2 * max_radius], title=name)
    for ax in axes[1]:
        ax.set_xlabel("theoretical margin")
    for ax in axes[:, 0]:
        ax.set_ylabel("empirical margin ||delta||_2")
    fig.suptitle("Theory against attacks: points below the diagonal break the theory")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=1, fontsize=10, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def latent_margins(results: Results, cap: float = 12.0) -> Figure:
    """The latent-space check: per input and model, the empirical latent margin ``||h||_2``
    (clamped at ``cap``) against the bound ``Phi^-1(p)`` at the lower end of ``p``'s interval,
    with the diagonal."""
    fig, ax = plt.subplots(figsize=FIGSIZE["square"])
    for i, (name, res) in enumerate(results.items()):
        ax.scatter(res["theory_lower"], res["latent"].margin.clamp(max=cap), s=16, color=f"C{i}", label=name)
    ax.plot([0, cap], [0, cap], color="k", lw=0.8)
    ax.set(
        xlabel="Phi^-1(p), lower 95% (units of sigma)",
        ylabel="empirical latent margin ||h||_2",
        title="Latent-space margin: the strict step",
        xlim=[0, 3.2],
        ylim=[0, cap + 0.5],
    )
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def margins_by_beta(results: Results, mse: Sequence[float] | np.ndarray, r: float) -> Figure:
    """Three panels over the models: the median empirical, paper and whitened margins at ``r``;
    the ingredients of the theory (medians of ``sigma_min``, ``||J_mu||_F``, the decoder's
    spectral norm and ``p``); and the price, each model's test pixel MSE ``mse``."""
    names = list(results)
    xs = np.arange(len(names))
    short = [n.replace(" (", "\n(") for n in names]
    fig, axes = plt.subplots(3, 1, figsize=(COLUMN_WIDTH, 9), sharex=True)

    def medians(get):
        return [get(results[n]).median().item() for n in names]

    ax = axes[0]
    ax.plot(xs, medians(lambda res: res["empirical"]), "o-", label="empirical (attacks)")
    ax.plot(xs, medians(lambda res: res["theory"]["paper"]), "s--", label="paper margin")
    ax.plot(xs, medians(lambda res: res["theory"]["whitened"]), "^--", label="whitened margin")
    ax.set(yscale="log", ylabel="median margin ||delta||_2", title=f"Margins at r = {r:g}")
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax = axes[1]
    ax.plot(xs, medians(lambda res: res["theory"]["sigma_min"]), "o-", label="sigma_min(x)")
    ax.plot(xs, medians(lambda res: res["theory"]["jac_fro"]), "s-", label="||J_mu(x)||_F")
    ax.plot(xs, medians(lambda res: res["dec_spec"]), "^-", label="||J_g(mu)||_2 (decoder)")
    ax.plot(xs, medians(lambda res: res["p0"].p), "d-", label="p = P(||Delta(x)|| <= r)")
    ax.set(yscale="log", title="The ingredients (medians over inputs)")
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax = axes[2]
    ax.bar(xs, np.asarray(mse), color="C3")
    ax.set(ylabel="test pixel MSE", title="The price: reconstruction error")
    for a in axes:
        a.set_xticks(xs)
        a.set_xticklabels(short, fontsize=10)
    fig.tight_layout()
    return fig

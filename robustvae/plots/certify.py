"""Chapter 7's figures: certified margin against encoder noise, certified against requested
margins and their price, reconstructions, per-input certified and empirical margins, damage
against attack budget, and the strongest attacks.

Each function draws what the chapter computed (with :mod:`robustvae.certify` and
:mod:`robustvae.reports.certify`) and returns the :class:`matplotlib.figure.Figure`; models
are keyed by name, ``"standard"`` being the one without a certificate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from .. import certify
from ..plotting import FIGSIZE, show_images

__all__ = [
    "margin_vs_noise",
    "certified_vs_requested",
    "reconstructions",
    "margins_scatter",
    "damage_vs_budget",
    "strongest_attacks",
]


def margin_vs_noise(designs: pd.DataFrame, r: float, decoder_lipschitz: float, prob: float) -> Figure:
    """Returns the certified margin of each design (a row of
    :func:`robustvae.reports.certify.design_table`: ``a``, ``b``, ``c``, ``s_max``, indexed by the
    requested margin) against the encoder noise ``s`` up to ``s_cap``, in the paper's (solid) and
    the tight (dotted) variant, each design marked at ``(s_max, R*)``."""
    fig, ax = plt.subplots(figsize=FIGSIZE["wide"])
    s_cap = certify.std_cap(r, decoder_lipschitz, prob)
    s_grid = np.linspace(0, s_cap, 200)
    for i, (R, row) in enumerate(designs.iterrows()):
        for variant, ls in (("paper", "-"), ("tight", ":")):
            ax.plot(
                s_grid,
                certify.certified_margin(s_grid, r, row["a"], row["b"], row["c"], prob, variant),
                ls=ls,
                color=f"C{i}",
                label=f"R* = {R:g} ({variant})",
            )
        ax.plot([row["s_max"]], [R], "o", color=f"C{i}")
    ax.axvline(s_cap, color="grey", lw=1)
    ax.text(s_cap, ax.get_ylim()[1], "s_cap ", color="grey", ha="right", va="top")
    ax.set(
        xlabel="encoder noise s = ||sigma(x)||_2",
        ylabel="certified margin R (L2, pixels)",
        title=f"Certified margin vs encoder noise (r = {r:g}, p = {prob:g}); dots: the "
              "designs (s_max, R*)",
    )
    ax.legend(ncol=3, fontsize=9, loc="lower left")
    fig.tight_layout()
    return fig


def certified_vs_requested(cert: Mapping[str, torch.Tensor], requested: Mapping[str, float],
                           summary: pd.DataFrame) -> Figure:
    """Returns two panels: each Lipschitz VAE's per-input certified margins (``cert[name]``)
    against its requested margin (``requested[name]``), with the diagonal; and the test ELBO of
    ``summary`` against the requested margin, beside the standard VAE's."""
    fig, ax = plt.subplots(1, 2, figsize=FIGSIZE["wide"])
    names = list(requested)
    req = np.array([requested[n] for n in names])
    for i, n in enumerate(names):
        ax[0].scatter(np.full(len(cert[n]), req[i]), cert[n].numpy(), color=f"C{i + 1}", s=25,
                      label=n, zorder=3)
    ax[0].plot([0, req.max() * 1.1], [0, req.max() * 1.1], color="grey", lw=1,
               label="certified = requested")
    ax[0].set(xlabel="requested margin R* (L2)", ylabel="certified margin R(x) (L2)",
              title=f"Certified vs requested ({len(cert[names[0]])} test images)")
    ax[0].legend(fontsize=9)
    ax[1].plot(req, summary.loc[names, "test ELBO"], marker="o", label="Lipschitz VAEs")
    ax[1].axhline(summary.loc["standard", "test ELBO"], color="k", ls="--",
                  label="standard VAE (no certificate)")
    ax[1].set(xlabel="requested margin R* (L2)", ylabel="test ELBO (nats per image)",
              title="The price: ELBO")
    ax[1].legend(fontsize=9)
    fig.tight_layout()
    return fig


def reconstructions(models: Mapping[str, Any], x: torch.Tensor, y: torch.Tensor) -> Figure:
    """Returns the first image of each class 0-9 in ``x`` (labels ``y``) and each model's
    deterministic reconstruction of it, one row per model."""
    idx = torch.cat([torch.nonzero(y == c)[0] for c in range(10)])
    device = next(next(iter(models.values())).parameters()).device
    x_show = x[idx].to(device)
    with torch.no_grad():
        rows = {
            "input": x_show,
            **{n: vae.reconstruct(x_show, sample=False) for n, vae in models.items()},
        }
    return show_images(rows)


def margins_scatter(emp: Mapping[str, torch.Tensor], cert: Mapping[str, torch.Tensor],
                    eps_grid: Sequence[float], r: float, seed: int) -> Figure:
    """Returns each model's per-input empirical margins (``emp[name]``, jittered with a generator
    seeded with ``seed``; never broken: drawn 15 % above the grid's largest radius) and, for the
    models in ``cert``, their certified margins as black bars."""
    fig, ax = plt.subplots(figsize=FIGSIZE["wide"])
    rng = np.random.default_rng(seed)
    finite_max = max(eps_grid)
    for i, n in enumerate(emp):
        e = emp[n].numpy().copy()
        e[np.isinf(e)] = finite_max * 1.15
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(e)), e, s=12, alpha=0.7, color=f"C{i}",
                   label="empirical (attack)" if i == 0 else None)
        if n in cert:
            ax.hlines(cert[n].numpy(), i - 0.3, i + 0.3, color="k", lw=2,
                      label="certified" if i == 1 else None)
    ax.axhline(finite_max * 1.15, color="grey", lw=0.5, ls=":")
    ax.text(len(emp) - 0.5, finite_max * 1.15, "never broken", color="grey", va="bottom",
            ha="right", fontsize=9)
    ax.set_xticks(range(len(emp)), list(emp))
    n_images = len(next(iter(emp.values())))
    ax.set(
        ylabel="margin ||delta||_2 (pixels)",
        title=f"Per-input margins at r = {r:g}: certified vs attacked ({n_images} test images)",
    )
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    return fig


def damage_vs_budget(searches: Mapping[str, Mapping[str, Any]], eps_grid: Sequence[float],
                     r: float) -> Figure:
    """Returns each model's damage ``||g(mu(x_adv)) - g(mu(x))||`` under the maximum-damage
    attack (``searches[name]["damage"]``, radii by inputs) against the budget: the mean, with a
    band from the smallest to the largest, and ``r`` dashed."""
    fig, ax = plt.subplots(figsize=FIGSIZE["wide"])
    for i, n in enumerate(searches):
        dmg = searches[n]["damage"]
        ax.plot(eps_grid, dmg.mean(1), marker="o", color=f"C{i}", label=n)
        ax.fill_between(eps_grid, dmg.min(1).values, dmg.max(1).values, color=f"C{i}", alpha=0.12)
    ax.axhline(r, color="grey", ls="--", lw=1)
    ax.text(eps_grid[0], r, " r", color="grey", va="bottom")
    ax.set(
        xlabel="attack budget ||delta||_2 (pixels)",
        ylabel="||g(mu(x_adv)) - g(mu(x))||_2",
        title="Maximum-damage attack: reconstruction change vs budget\n(mean; band: min to max)",
    )
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def strongest_attacks(models: Mapping[str, Any], searches: Mapping[str, Mapping[str, Any]],
                      x: torch.Tensor, i_eps: int, name: str, n_show: int = 5) -> Figure:
    """Returns, for the ``n_show`` inputs ``x`` the standard VAE's maximum-damage attack moved
    most at the ``i_eps``-th radius, the input, and for the standard VAE and the model ``name``
    the reconstruction, the attacked image and the reconstruction of the attacked image."""
    show = searches["standard"]["damage"][i_eps].argsort(descending=True)[:n_show]
    rows = {"input": x[show]}
    with torch.no_grad():
        for n in ("standard", name):
            adv = searches[n]["x_adv"][i_eps][show].to(x.device)
            rows[f"{n}: recon"] = models[n].reconstruct(x[show], sample=False)
            rows[f"{n}: attacked"] = adv
            rows[f"{n}: recon of attacked"] = models[n].reconstruct(adv, sample=False)
    return show_images(rows, scale=1.0)

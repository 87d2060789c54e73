"""Chapter 4's figures: robust accuracy against the radius, attacked images and their purifications,
and the main attacks' convergence curves.

Each function draws what the chapter computed (a :class:`robustvae.reports.purify.Evaluation`, or
images and purifiers) and returns the :class:`matplotlib.figure.Figure`; the chapter shows it with
``plt.show()``.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..plotting import COLUMN_WIDTH, FIGSIZE
from ..reports.purify import Evaluation
from ..utils import seed_everything

__all__ = ["robust_accuracy", "attacked_images", "convergence_curves"]


def robust_accuracy(ev: Evaluation) -> Figure:
    """Returns the robust accuracy against the radius, one panel per norm: the undefended
    classifier (black), each purifier under the oblivious attack (dashed) and the worst case of
    its portfolio (solid, with its Wilson 95% band)."""
    fig, axes = plt.subplots(1, 2, figsize=FIGSIZE["panel"], sharey=True)
    for ax, norm in zip(axes, ("linf", "l2")):
        bs = [b for b in ev.budgets if b[0] == norm]
        radii = [e for (_, e) in bs]
        ax.plot(radii, [ev.acc("undefended", "oblivious", b) for b in bs], "k-o", label="undefended")
        for i, name in enumerate(ev.purifiers):
            ax.plot(radii, [ev.acc(name, "oblivious", b) for b in bs], "--o", color=f"C{i}", alpha=0.7)
            worst = [ev.acc(name, "worst case", b) for b in bs]
            lo_hi = np.array([ev.wilson(name, "worst case", b) for b in bs])
            ax.plot(radii, worst, "-o", color=f"C{i}", label=name)
            ax.fill_between(radii, lo_hi[:, 0], lo_hi[:, 1], color=f"C{i}", alpha=0.12)
        ax.set(
            xlabel=f"{'L-inf' if norm == 'linf' else 'L2'} radius eps",
            title=f"PGD, {'L-inf' if norm == 'linf' else 'L2'}",
        )
        ax.set_xticks(radii)
    axes[0].set_ylabel("robust accuracy")
    fig.suptitle("Robust accuracy: oblivious attack (dashed), worst case of the portfolio (solid, 95% band)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=10, frameon=False)
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    return fig


def attacked_images(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, x_obl: torch.Tensor,
                    x_wb: torch.Tensor, purifiers: Mapping[str, nn.Module], *, wb_on: str, radius: str,
                    seed: int = 0) -> Figure:
    """Returns a grid of images, one column per image of ``x`` (labels ``y``), with the class
    ``classifier`` predicts above each (red when wrong).

    Rows: the clean images; the oblivious adversarial images ``x_obl``; what each purifier of
    ``purifiers`` (row label ``"NAME of it"``) makes of them; the white-box adversarial images
    ``x_wb`` on purifier ``wb_on`` and that purifier's output on them. The purifiers run, in
    that order, after :func:`robustvae.utils.seed_everything` (``seed``). ``radius`` names the
    attacks' radius in the title.
    """
    seed_everything(seed)
    k = len(x)
    with torch.no_grad():
        panel = [("clean", x, classifier), ("oblivious\nadversarial", x_obl, classifier)]
        panel += [(f"{name} of it", p(x_obl), classifier) for name, p in purifiers.items()]
        panel += [(f"white-box\non {wb_on}", x_wb, classifier), (f"{wb_on} of it", purifiers[wb_on](x_wb), classifier)]
        fig, axes = plt.subplots(len(panel), k, figsize=(0.95 * k, 1.05 * len(panel)), squeeze=False)
        for r, (row_label, imgs, model) in enumerate(panel):
            pred = model(imgs).argmax(1)
            for c in range(k):
                ax = axes[r, c]
                ax.imshow(imgs[c, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                ok = bool(pred[c] == y[c])
                ax.set_title(str(int(pred[c])), fontsize=9, color="black" if ok else "red", pad=2)
                if c == 0:
                    ax.set_ylabel(row_label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"{radius}: predicted class above each image (red: wrong)", fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.35, top=0.9)
    return fig


def convergence_curves(ev: Evaluation, curve_restarts: int) -> Figure:
    """Returns, one panel per purifier, the fraction of images its main attack had not yet broken
    after each step (the attacker's view, restarts one after the other), one curve per radius;
    dotted: ``ev.steps`` steps, grey: the start of each further restart."""
    fig, axes = plt.subplots(2, 2, figsize=(COLUMN_WIDTH, 6.4), sharey=True, sharex=True)
    main_attack = ev.main_attack
    for ax, name in zip(axes.flat, ev.purifiers):
        for i, b in enumerate(ev.budgets):
            curve = 1 - ev.ascents[name, b].broken_after().flatten().numpy()
            ax.plot(np.arange(len(curve)), curve, "-", color=f"C{i}", label=ev.label[b])
        ax.axvline(ev.steps, ls=":", color="black")
        per_restart = ev.ascents[name, ev.budgets[0]].success_trace.shape[1]
        for k in range(1, curve_restarts):
            ax.axvline(k * per_restart, ls="-", lw=0.5, color="grey")
        ax.set(title=f"{name}: {main_attack[name]}", ylim=(-0.02, 1.02))
    for ax in axes[1]:
        ax.set_xlabel(f"PGD steps, {curve_restarts} restarts one after the other")
    for ax in axes[:, 0]:
        ax.set_ylabel("not yet broken")
    axes[0, 0].legend(fontsize=8, loc="upper right", ncol=2)
    fig.suptitle("Main attack of each purifier: converged?")
    fig.tight_layout()
    return fig

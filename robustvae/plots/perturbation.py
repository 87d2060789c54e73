"""Chapter 8's figures: what the learned perturbation set contains, its two criteria against the
radius, and the classifiers' worst case over grids of true RTS transformations.

Each function draws what the chapter computed (with :mod:`robustvae.perturbation` and
:mod:`robustvae.reports.perturbation`) and returns the :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from .. import stats
from ..plotting import FIGSIZE, show_images

__all__ = ["set_examples", "approximation_and_quality", "grid_worst_case"]


def set_examples(
    x: torch.Tensor, true: Sequence[torch.Tensor], samples: Sequence[tuple[float, Sequence[torch.Tensor]]]
) -> Figure:
    """Returns a grid with one row per digit of ``x``: the digit, its true perturbations, then the set's points.

    ``true`` is a list of perturbed copies of ``x`` (one column each); ``samples`` is a list of
    ``(eps, points)``: a radius and points of the set at it (each ``(N, 1, 28, 28)``, one column
    each), whose first column is titled with the radius.
    """
    cells = [x, *true]
    titles = ["input"] + ["true"] * len(true)
    for eps, points in samples:
        cells += list(points)
        titles += [f"eps={eps:.2f}"] + [""] * (len(points) - 1)
    rows = {f"digit {i + 1}": torch.stack([c[i] for c in cells]) for i in range(len(x))}
    return show_images(rows, titles=titles)


def approximation_and_quality(quality: pd.DataFrame, ref: Mapping[str, float]) -> Figure:
    """Returns the two-panel figure of the approximation error and the sample quality against the radius.

    ``quality`` and ``ref`` are :func:`robustvae.reports.perturbation.approximation_and_quality`'s:
    left, the error per family with the pairs' sizes as dashed lines; right, the samples'
    distance to the closest true RTS perturbation with the grid's floor.
    """
    fig, ax = plt.subplots(1, 2, figsize=FIGSIZE["wide"])
    e = quality["eps"].to_numpy()
    for col, c, lab in (("approx. error RTS", "C0", "RTS"), ("approx. error elastic", "C1", "elastic")):
        ax[0].plot(e, quality[col], marker="o", color=c, label=f"{lab}: best point of S(x)")
    ax[0].axhline(ref["||x~ - x|| RTS"], color="C0", ls="--", lw=1, label="RTS: ||x~ - x||")
    ax[0].axhline(ref["||x~ - x|| elastic"], color="C1", ls="--", lw=1, label="elastic: ||x~ - x||")
    ax[0].set(xlabel="latent radius eps", ylabel="L2 distance to x~ (pixels)",
              title="Approximation error (held-out pairs)")
    ax[0].legend(fontsize=9)
    ax[1].plot(e, quality["sample dist. to RTS"], marker="o", color="C2", label="samples of S(x)")
    ax[1].axhline(ref["true RTS to grid (floor)"], color="grey", ls="--", lw=1, label="true RTS (grid floor)")
    ax[1].set(xlabel="latent radius eps", ylabel="L2 distance to closest true RTS", title="Sample quality")
    ax[1].legend(fontsize=9)
    fig.tight_layout()
    return fig


def grid_worst_case(correct: Mapping[tuple[str, str], torch.Tensor], grid_magnitudes: Sequence[float]) -> Figure:
    """Returns the worst-case accuracy over the true RTS grids against their magnitude, one line per training.

    ``correct`` is :func:`robustvae.reports.perturbation.true_correctness`'s; its grid tests (those
    named ``"worst case..."``, in order) are plotted at ``grid_magnitudes``, with 95% Wilson bands.
    """
    trainings = list(dict.fromkeys(m for m, _ in correct))
    grid_tests = [t for t in dict.fromkeys(t for _, t in correct) if t.startswith("worst case")]
    fig, ax = plt.subplots(figsize=FIGSIZE["wide"])
    for m in trainings:
        acc = [correct[m, t].float().mean().item() for t in grid_tests]
        lo_hi = np.array([stats.wilson_interval(int(correct[m, t].sum()), len(correct[m, t])) for t in grid_tests])
        ax.plot(grid_magnitudes, acc, marker="o", label=m)
        ax.fill_between(grid_magnitudes, lo_hi[:, 0], lo_hi[:, 1], alpha=0.2)
    n = len(correct[trainings[0], grid_tests[0]])
    ax.set(xlabel="grid magnitude (fraction of the RTS ranges)", ylabel=f"worst-case accuracy ({n} digits)",
           title="Worst case over a grid of true RTS transformations (95% Wilson bands)",
           xticks=list(grid_magnitudes), ylim=(0, 1))
    ax.legend(title="training", frameon=False)
    fig.tight_layout()
    return fig

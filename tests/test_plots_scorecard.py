"""Chapter 9's figures (robustvae.plots.scorecard) draw the scorecard they are given."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from robustvae import scorecard as sc  # noqa: E402
from robustvae.plots import scorecard as plots  # noqa: E402
from robustvae.reports import scorecard as report  # noqa: E402

NAMES = ["A", "B", "L"]
VALUES = {  # per model: elbo, mse, detection, margin, certified (NaN: none)
    "A": (-90.0, 0.01, 0.9, 1.0, np.nan),
    "B": (-100.0, 0.02, 0.8, 2.0, np.nan),
    "L": (-120.0, 0.04, 0.6, 5.0, 1.5),
}


@pytest.fixture(scope="module")
def card():
    rows = {}
    for n, (elbo, mse, det, margin, cert) in VALUES.items():
        rows[n] = {"elbo": sc.Estimate(elbo, elbo - 1, elbo + 1),
                   "mse": sc.Estimate(mse, mse - 0.001, mse + 0.002),
                   "detection_auroc": sc.Estimate(det, det - 0.05, det + 0.05),
                   "margin": sc.Estimate(margin, margin - 0.5, margin + 0.25),
                   "certified": sc.Estimate(cert, cert, cert)}
    return sc.table(rows, columns=["elbo", "mse", "detection_auroc", "margin", "certified"])


def test_heatmap_draws_the_normalised_columns_with_raw_numbers(card):
    fig = plots.heatmap(card)
    ax = fig.axes[0]
    assert ax.get_title().startswith("Robustness scorecard, normalised per column")
    columns = ("elbo", "mse", "detection_auroc", "margin", "certified")
    assert [t.get_text() for t in ax.get_xticklabels()] == [report.SHORT[c] for c in columns]
    assert [t.get_text() for t in ax.get_yticklabels()] == NAMES
    mesh = ax.collections[0].get_array()
    # rows A, B, L; elbo: A best (1), L worst (0), B in between; mse: lower is better
    grid = np.ma.filled(np.asarray(mesh, dtype=float).reshape(3, 5) if np.ndim(mesh) == 1 else mesh, np.nan)
    np.testing.assert_allclose(grid[:, 0], [1.0, 2 / 3, 0.0])
    np.testing.assert_allclose(grid[:, 1], [1.0, 2 / 3, 0.0])
    np.testing.assert_allclose(grid[:, 3], [0.0, 0.25, 1.0])
    assert np.isnan(grid[0, 4]) and grid[2, 4] == 1.0
    texts = [t.get_text() for t in ax.texts]
    assert "-90.0" in texts and "0.010" in texts and "5.00" in texts and "1.500" in texts
    plt.close(fig)


def test_trade_off_plots_each_model_with_its_intervals(card):
    fig = plots.trade_off(card, r=4.0, certified=["L"])
    left, right = fig.axes[:2]
    assert left.get_title().startswith("Robustness costs reconstruction")
    assert right.get_title() == "Robust VAEs are\nworse witnesses"
    assert left.get_xlabel() == "test pixel MSE (reconstruction error)"
    assert left.get_ylabel() == "median emp. margin ||delta||_2 (r = 4)" == right.get_xlabel()
    # one marker per model in each panel, at its (x, y); plus L's certified dash in the left panel
    pts_left = [tuple(line.get_xydata()[0]) for line in left.lines if line.get_marker() in ("o", "s")]
    assert pts_left == [(0.01, 1.0), (0.02, 2.0), (0.04, 5.0)]
    pts_right = [tuple(line.get_xydata()[0]) for line in right.lines if line.get_marker() in ("o", "s")]
    assert pts_right == [(1.0, 0.9), (2.0, 0.8), (5.0, 0.6)]
    assert [line.get_marker() for line in left.lines if line.get_marker() in ("o", "s")] == ["o", "o", "s"]
    dash = [tuple(line.get_xydata()[0]) for line in left.lines
            if line.get_marker() == "_" and line.get_markersize() == 14]  # not the error bars' caps
    assert dash == [(0.04, 1.5)]
    # the margin's error bar of model B runs from lo to hi
    segs = [c.get_segments() for c in left.collections]
    assert any(np.allclose(s[0], [[0.02, 1.5], [0.02, 2.25]]) for s in segs if len(s) == 1)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == NAMES
    plt.close(fig)

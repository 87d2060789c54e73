"""Tests of robustvae.plots.calibration: each figure draws the data it is given, with its titles
and labels."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from robustvae import calibration as cal  # noqa: E402
from robustvae.fingerprint import figure_fingerprint  # noqa: E402
from robustvae.plots import calibration as figs  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def frame(conf, correct, mse):
    return pd.DataFrame({"confidence": conf, "correct": np.asarray(correct, float),
                         "mse": np.asarray(mse, float), "neg_elbo": np.asarray(mse, float)})


class InvertingVAE(torch.nn.Module):
    """A stand-in VAE whose mean reconstruction is the negative image."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def reconstruct(self, x, sample=True):
        assert sample is False
        return 1 - x


def test_reconstructions_rows_show_one_digit_per_class_and_its_reconstruction():
    y = torch.arange(20) % 10
    x = (torch.arange(20, dtype=torch.float32) / 20).view(20, 1, 1, 1).expand(20, 1, 4, 4).clone()
    foreign = torch.full((12, 1, 4, 4), 0.9)
    fig = figs.reconstructions({"clean": (x, y), "foreign": (foreign, None)}, y, InvertingVAE())
    grid = np.array(fig.axes).reshape(4, 10)
    assert [grid[r, 0].get_ylabel() for r in range(4)] == ["clean", "clean: VAE", "foreign", "foreign: VAE"]
    # first image of each class c is image c (value c / 20); its reconstruction is 1 - c / 20
    firsts = [float(grid[0, c].images[0].get_array()[0, 0]) for c in range(10)]
    assert firsts == pytest.approx(np.arange(10) / 20)
    assert float(grid[1, 3].images[0].get_array()[0, 0]) == pytest.approx(1 - 3 / 20)
    assert float(grid[3, 9].images[0].get_array()[0, 0]) == pytest.approx(0.1)


def test_confidence_bins_plots_means_and_counts():
    clean = cal.confidence_bins([0.1, 0.3, 0.35, 0.9, 0.9, 0.95, 0.99, 1.0],
                                [0.5, 0.3, 0.1, 0.01, 0.02, 0.03, 0.04, 0.05], n_bins=4)
    rotated = cal.confidence_bins([0.2, 0.6, 0.65, 0.7, 0.8, 0.9], [0.4, 0.3, 0.3, 0.2, 0.1, 0.1],
                                  n_bins=4)
    fig = figs.confidence_bins({"clean": clean, "rotated": rotated})
    ax, ax_n = fig.axes
    assert ax.get_title().endswith("(4 bins, 95% t-intervals)")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["clean test images", "rotated test images"]
    means = np.asarray(ax.lines[0].get_ydata(), float)
    np.testing.assert_allclose(means, [0.5, 0.2, 0.03])  # the populated bins' means
    heights = sorted(p.get_height() for p in ax_n.patches)
    assert heights == sorted([1, 2, 5, 1, 3, 2])
    assert ax_n.get_yscale() == "log" and ax_n.get_ylabel() == "images per bin"


def test_reconstruction_error_histograms_and_boxes():
    scores = {"clean": frame([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 0], [0.01, 0.02, 0.1, 0.2]),
              "foreign": frame([0.9, 0.8], [0, 0], [0.3, 0.5])}
    fig = figs.reconstruction_error(scores)
    ax_h, ax_b = fig.axes
    assert ax_h.get_title() == "Reconstruction error by input set" and ax_h.get_xscale() == "log"
    assert [t.get_text() for t in ax_h.get_legend().get_texts()] == ["clean", "foreign"]
    # one box (correct, wrong) per labelled set, from the lower to the upper quartile
    assert [t.get_text() for t in ax_b.get_xticklabels()] == ["clean"]
    boxes = [p.get_path().vertices[:, 1] for p in ax_b.patches]
    assert [(b.min(), b.max()) for b in boxes] == [pytest.approx((0.0125, 0.0175)),
                                                   pytest.approx((0.125, 0.175))]
    assert [matplotlib.colors.to_hex(p.get_facecolor()) for p in ax_b.patches] == [
        matplotlib.colors.to_hex("C2"), matplotlib.colors.to_hex("C3")]
    assert "Correct (green) vs wrong (red)" in ax_b.get_title()


def test_reliability_draws_every_map_on_every_set():
    p = np.array([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])
    y = np.array([0, 1, 1, 1])
    ev = {n: {"y": y} for n in ("clean", "rotated", "noisy")}
    probs = {("clean", m, n): p for m in figs.RELIABILITY_STYLES for n in ev}
    fig = figs.reliability(probs, ev, n_bins=5)
    assert [a.get_title() for a in fig.axes] == [f"{n}\n(evaluation half)" for n in ev]
    assert fig._suptitle.get_text().startswith("Reliability diagrams, maps fitted on the clean")
    ax = fig.axes[0]
    t = cal.reliability_table(p.max(1), (p.argmax(1) == y).astype(float), 5)
    t = t[t["count"] > 0]
    curve = ax.lines[1]  # after the diagonal
    np.testing.assert_allclose(curve.get_xdata(), t["confidence"])
    np.testing.assert_allclose(curve.get_ydata(), t["accuracy"])
    assert [x.get_text() for x in fig.axes[1].get_legend().get_texts()] == list(figs.RELIABILITY_STYLES)


def test_risk_coverage_panels_and_aurc_labels():
    correct = np.array([1.0, 0.0, 1.0, 0.0])
    sc = {"confidence": np.array([4.0, 3.0, 2.0, 1.0]), "oracle": correct}
    fig = figs.risk_coverage({"pool": (sc, correct), "rotated": (sc, correct)})
    assert [a.get_title() for a in fig.axes] == ["Pool: clean + rotated\n+ noisy + foreign",
                                                 "Rotated digits only"]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    # by confidence: risks 0, 1/2, 1/3, 1/2 -> AURC 0.333; oracle: 0, 0, 1/3, 1/2 -> 0.208
    assert labels == ["confidence (AURC 0.333)", "oracle (AURC 0.208)"]
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [0, 1 / 2, 1 / 3, 1 / 2])
    assert fig.axes[0].lines[1].get_linestyle() == ":"
    assert "'Rotated digits only'" in figure_fingerprint(fig)

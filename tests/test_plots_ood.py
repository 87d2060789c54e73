"""Tests of robustvae.plots.ood: each of chapter 2's figures draws the scores it is given, with
its titles and labels (tiny synthetic scores, no model)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from robustvae.plots import ood as figures  # noqa: E402
from robustvae.reports import ood as report  # noqa: E402

N_IN, N_OUT = 5, 3
NAMES = [*report.LATENT, *figures.CURVES]


def _scores(label: str) -> dict:
    """Every score separates perfectly: in-distribution 1..5, the OOD sets 11..13 (AUROC 1)."""
    s_in, s_out = torch.arange(1.0, N_IN + 1), torch.arange(11.0, 11 + N_OUT)
    return {n: {"in-distribution": s_in, label: s_out, "uniform noise": s_out} for n in NAMES}


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_sample_images_shows_ten_of_each_set_and_two_of_direction_2():
    sets1 = {"in-distribution": torch.zeros(12, 1, 28, 28), "other": torch.ones(12, 1, 28, 28)}
    sets2 = {"in-distribution": torch.ones(12, 1, 28, 28), "inverted": torch.zeros(12, 1, 28, 28)}
    fig = figures.sample_images(sets1, sets2)
    assert fig._suptitle.get_text().startswith("Ten images of each test set")
    assert len(fig.axes) == 4 * 10  # one row of ten images per set
    labels = [ax.get_ylabel() for ax in fig.axes[::10]]
    assert labels == ["in-distribution", "other", "Fashion-MNIST (dir. 2 in)", "inverted (dir. 2)"]
    means = [float(ax.images[0].get_array().mean()) for ax in fig.axes]
    assert means == [0.0] * 10 + [1.0] * 20 + [0.0] * 10


def test_latent_histograms_have_eight_panels_with_the_auroc_in_their_titles():
    fig = figures.latent_histograms(_scores("Fashion-MNIST"), _scores("MNIST"), "mnist", "Fashion-MNIST")
    assert len(fig.axes) == 8
    assert fig.axes[0].get_title() == "VAE trained on mnist\nAUROC vs Fashion-MNIST: 1.00"
    assert fig.axes[1].get_title() == "VAE trained on fashion-mnist\nAUROC vs MNIST: 1.00"
    assert fig.axes[0].get_xlabel() == "log10 KL (nats)" and fig.axes[-1].get_xlabel() == "log10 squared Mahalanobis distance"
    # three overlaid histograms of 39 bins each, densities integrating to 1
    bars = fig.axes[0].patches
    assert len(bars) == 3 * 39
    assert sum(b.get_width() * b.get_height() for b in bars[:39]) == pytest.approx(1.0)


def test_likelihood_ceiling_plots_every_image_below_its_ceiling():
    # binary images: ceiling 0; log p(x) = -score
    scores2 = _scores("MNIST")
    sets2 = {"in-distribution": torch.ones(N_IN, 1, 28, 28), "MNIST": torch.zeros(N_OUT, 1, 28, 28)}
    fig = figures.likelihood_ceiling(scores2, sets2)
    left, right = fig.axes
    assert left.get_title() == "Fashion-MNIST VAE: MNIST looks more likely"
    assert right.get_title() == "The likelihood follows its ceiling"
    points = np.concatenate([c.get_offsets() for c in right.collections])
    assert len(points) == N_IN + N_OUT
    bits = 1 / (784 * np.log(2))
    assert np.allclose(points[:N_IN, 0], 0) and np.allclose(points[:N_IN, 1], -np.arange(1, N_IN + 1) * bits)


def test_corrections_titles_give_the_auroc_against_mnist():
    auroc2 = pd.DataFrame({"MNIST": [0.123, 0.987]}, index=[report.IC, report.CEIL])
    fig = figures.corrections(_scores("MNIST"), auroc2)
    assert [ax.get_title() for ax in fig.axes] == [f"{report.IC}: AUROC vs MNIST 0.123",
                                                  f"{report.CEIL}: AUROC vs MNIST 0.987"]
    assert len(fig.axes[0].patches) == 3 * 59


def test_roc_curves_draw_one_curve_per_score_and_the_diagonal():
    fig = figures.roc_curves(_scores("Fashion-MNIST"), _scores("MNIST"), "mnist", "Fashion-MNIST")
    top, bottom = fig.axes
    assert top.get_title() == "Direction 1: mnist (in) vs Fashion-MNIST"
    assert bottom.get_title() == "Direction 2: Fashion-MNIST (in) vs MNIST"
    assert len(top.lines) == len(figures.CURVES) + 1
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert labels == [f"{s} (1.000)" for s in figures.CURVES]
    fpr, tpr = top.lines[0].get_data()
    assert tpr[np.flatnonzero(fpr == 0)].max() == 1.0  # perfect separation: the curve reaches (0, 1)
    assert top.lines[-2].get_linestyle() == "--" and top.lines[0].get_linestyle() == "-"

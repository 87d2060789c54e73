"""Chapter 7's figures (robustvae.plots.certify) draw the data they are given, with their titles
and labels: hand-made margins, damages and tiny fake models; no training, no data set."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from robustvae import certify  # noqa: E402
from robustvae.plotting import FIGSIZE  # noqa: E402
from robustvae.plots import certify as plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


class Shift:
    """A model whose deterministic reconstruction is its input plus ``shift``."""

    def __init__(self, shift):
        self.shift = shift

    def parameters(self):
        return iter([torch.zeros(1)])

    def reconstruct(self, x, sample=False):
        return x + self.shift


def test_margin_vs_noise_draws_both_variants_of_each_design():
    designs = pd.DataFrame({"a": [4.0], "b": [2.0], "c": [0.5], "s_max": [0.1]},
                           index=pd.Index([0.5], name="requested R*"))
    fig = plots.margin_vs_noise(designs, r=4.0, decoder_lipschitz=4.0, prob=0.5)
    ax = fig.axes[0]
    assert tuple(fig.get_size_inches()) == FIGSIZE["wide"]
    paper, tight, dot, cap = ax.lines
    s_cap = certify.std_cap(4.0, 4.0, 0.5)
    assert paper.get_xdata()[-1] == pytest.approx(s_cap) and len(paper.get_xdata()) == 200
    s = np.asarray(paper.get_xdata())
    np.testing.assert_allclose(paper.get_ydata(), certify.certified_margin(s, 4.0, 4.0, 2.0, 0.5, 0.5, "paper"))
    np.testing.assert_allclose(tight.get_ydata(), certify.certified_margin(s, 4.0, 4.0, 2.0, 0.5, 0.5, "tight"))
    assert (list(dot.get_xdata()), list(dot.get_ydata())) == ([0.1], [0.5])
    assert list(cap.get_xdata()) == [s_cap, s_cap]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["R* = 0.5 (paper)", "R* = 0.5 (tight)"]
    assert ax.get_title().startswith("Certified margin vs encoder noise (r = 4, p = 0.5)")
    assert ax.get_xlabel() == "encoder noise s = ||sigma(x)||_2"


def test_certified_vs_requested_scatters_each_models_margins_at_its_request():
    cert = {"R*=0.5": torch.tensor([0.6, 0.7, 0.8]), "R*=1": torch.tensor([1.1, 1.2, 1.3])}
    summary = pd.DataFrame({"test ELBO": [-90.0, -120.0, -150.0]}, index=["standard", "R*=0.5", "R*=1"])
    fig = plots.certified_vs_requested(cert, {"R*=0.5": 0.5, "R*=1": 1.0}, summary)
    left, right = fig.axes
    offsets = [c.get_offsets() for c in left.collections]
    np.testing.assert_allclose(offsets[0], [[0.5, 0.6], [0.5, 0.7], [0.5, 0.8]])
    np.testing.assert_allclose(offsets[1], [[1.0, 1.1], [1.0, 1.2], [1.0, 1.3]])
    assert list(left.lines[0].get_xdata()) == [0, 1.1]
    assert left.get_title() == "Certified vs requested (3 test images)"
    elbo, std = right.lines
    assert (list(elbo.get_xdata()), list(elbo.get_ydata())) == ([0.5, 1.0], [-120.0, -150.0])
    assert list(std.get_ydata()) == [-90.0, -90.0]
    assert right.get_title() == "The price: ELBO" and right.get_ylabel() == "test ELBO (nats per image)"


def test_reconstructions_shows_one_image_per_class_and_a_row_per_model():
    x = torch.zeros(12, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    x[10] = 1.0                                                   # a second 0: not shown
    x[1] = 0.5
    fig = plots.reconstructions({"standard": Shift(0.0), "lip": Shift(0.25)}, x, y)
    assert len(fig.axes) == 3 * 10
    assert [fig.axes[10 * r].get_ylabel() for r in range(3)] == ["input", "standard", "lip"]
    assert [float(ax.images[0].get_array().mean()) for ax in fig.axes[:2]] == [0.0, 0.5]
    assert float(fig.axes[20 + 1].images[0].get_array().mean()) == 0.75


def test_margins_scatter_draws_unbroken_inputs_above_the_grid_and_certificates_as_bars():
    emp = {"standard": torch.tensor([1.0, math.inf], dtype=torch.float64),
           "lip": torch.tensor([3.0, 4.0], dtype=torch.float64)}
    cert = {"lip": torch.tensor([0.5, 0.6])}
    fig = plots.margins_scatter(emp, cert, eps_grid=(1.0, 2.0, 4.0), r=4.0, seed=0)
    ax = fig.axes[0]
    pts_std, pts_lip, bars = ax.collections
    assert list(pts_std.get_offsets()[:, 1]) == [1.0, 4.0 * 1.15]
    assert np.all(np.abs(pts_lip.get_offsets()[:, 0] - 1) <= 0.15)
    np.testing.assert_allclose([seg[:, 1] for seg in bars.get_segments()], [[0.5, 0.5], [0.6, 0.6]])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["standard", "lip"]
    assert ax.get_title() == "Per-input margins at r = 4: certified vs attacked (2 test images)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["empirical (attack)", "certified"]


def test_damage_vs_budget_plots_the_mean_damage_with_r():
    searches = {"standard": {"damage": torch.tensor([[1.0, 3.0], [4.0, 6.0]])},
                "lip": {"damage": torch.tensor([[0.5, 0.5], [1.0, 2.0]])}}
    fig = plots.damage_vs_budget(searches, eps_grid=(1.0, 2.0), r=4.0)
    ax = fig.axes[0]
    std, lip, r_line = ax.lines
    assert (list(std.get_xdata()), list(std.get_ydata())) == ([1.0, 2.0], [2.0, 5.0])
    assert list(lip.get_ydata()) == [0.5, 1.5] and list(r_line.get_ydata()) == [4.0, 4.0]
    assert len(ax.collections) == 2                               # the min-max bands
    assert ax.get_xlabel() == "attack budget ||delta||_2 (pixels)"
    assert ax.get_title().startswith("Maximum-damage attack: reconstruction change vs budget")


def test_strongest_attacks_shows_the_inputs_the_standard_attack_moved_most():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 28, 28) / 10
    damage = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 5.0, 3.0, 2.0]])   # radius 1: inputs 1, 2
    x_adv = torch.full((2, 4, 1, 28, 28), 0.9)
    searches = {"standard": {"damage": damage, "x_adv": x_adv}, "lip": {"damage": damage, "x_adv": x_adv}}
    models = {"standard": Shift(0.0), "lip": Shift(0.05)}
    fig = plots.strongest_attacks(models, searches, x, i_eps=1, name="lip", n_show=2)
    assert len(fig.axes) == 7 * 2
    labels = [fig.axes[2 * r].get_ylabel() for r in range(7)]
    assert labels == ["input", "standard: recon", "standard: attacked", "standard: recon of attacked",
                      "lip: recon", "lip: attacked", "lip: recon of attacked"]
    means = [float(ax.images[0].get_array().mean()) for ax in fig.axes]
    assert means[:2] == pytest.approx([0.1, 0.2])                 # inputs 1 and 2, most moved first
    assert means[12:14] == pytest.approx([0.95, 0.95])            # lip's recon of the attacked

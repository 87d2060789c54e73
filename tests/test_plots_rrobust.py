"""Chapter 6's figures (robustvae.plots.rrobust) draw the data they are given, with their titles."""

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from robustvae import rrobust as rr  # noqa: E402
from robustvae.fingerprint import figure_fingerprint  # noqa: E402
from robustvae.plots import rrobust as figures  # noqa: E402

NAMES = ["VAE (beta=1)", "beta-VAE (beta=4)", "beta-VAE (beta=8)", "beta-TCVAE (beta=8)"]


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def model(k):
    """Model ``k`` of four: margins and theory that grow with ``k``, two inputs."""
    # max-damage distances (2 radii, 2 inputs, 4 pairs): all 0 at the first radius, all 10 at the second
    distances = torch.stack([torch.zeros(2, 4), torch.full((2, 4), 10.0)])
    md = SimpleNamespace(distances=distances, margin=t(0.5 + k, 2.0), perturbation=torch.full((2, 1, 2, 2), 0.25))
    return dict(
        empirical=t(1.0 + k, 20.0),
        theory={"paper": t(0.5, 1.0 + k), "whitened": t(2.0, 3.0), "sigma_min": t(0.1 * (k + 1), 1.0),
                "jac_fro": t(5.0, 5.0)},
        theory_lower=t(1.0, 2.0),
        latent=SimpleNamespace(margin=t(3.0 + k, 30.0)),
        dec_spec=t(4.0, 4.0),
        p0=SimpleNamespace(p=t(0.9, 0.9)),
        searches={"max-damage": md},
    )


@pytest.fixture
def results():
    return {name: model(k) for k, name in enumerate(NAMES)}


def test_probability_curves_plot_the_mean_probability_per_r(results):
    fig = figures.probability_curves(results, np.array([0.5, 1.0]), [1.0, 20.0])
    assert [ax.get_title() for ax in fig.axes] == NAMES
    ax = fig.axes[0]
    # r = 1: within r at the first radius (distance 0), not at the second (distance 10); r = 20: always
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1.0, 0.0])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [1.0, 1.0])
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [0.5, 1.0])
    assert ax.lines[2].get_ydata()[0] == 0.5  # the r-robustness threshold
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["r = 1", "r = 20"]
    assert fig.axes[2].get_xlabel() == "max-damage budget ||delta||_2"
    assert "max-damage attack" in fig._suptitle.get_text()


def test_breaking_examples_show_input_perturbed_input_and_reconstructions(results):
    class Pixels(rr.LinearGaussianVAE):  # mu(x) = x, sigma = 1e-4, g(z) = z as a 2x2 image
        def mean_image(self, logits):
            return logits.view(-1, 1, 2, 2)

    vae = Pixels(torch.eye(4), s=1e-4, shape=(1, 2, 2))
    x = torch.full((2, 1, 2, 2), 0.5)
    fig = figures.breaking_examples(dict.fromkeys(NAMES, vae), results, x, index=0, seed=0)
    assert len(fig.axes) == 4 * 6
    rows = [fig.axes[6 * k] for k in range(4)]
    assert [ax.get_ylabel() for ax in rows] == [f"{n}\n||delta|| = {0.5 + k:.2f}" for k, n in enumerate(NAMES)]
    assert [ax.get_title() for ax in fig.axes[:6]] == ["input x", "x + delta", "f(x)", "f(x)", "f(x + delta)",
                                                        "f(x + delta)"]
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), 0.5)
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), 0.75)  # x + delta
    for col, expected in ((2, 0.5), (3, 0.5), (4, 0.75), (5, 0.75)):  # f(x) twice, f(x + delta) twice
        np.testing.assert_allclose(fig.axes[col].images[0].get_array(), expected, atol=1e-3)


def test_theory_vs_attacks_scatter_theory_against_the_clamped_margin(results):
    fig = figures.theory_vs_attacks(results, max_radius=8.0)
    assert [ax.get_title() for ax in fig.axes] == NAMES
    paper, white = fig.axes[1].collections
    np.testing.assert_allclose(paper.get_offsets(), [[0.5, 2.0], [2.0, 8.0]])  # 20 clamped at 8
    np.testing.assert_allclose(white.get_offsets(), [[2.0, 2.0], [3.0, 8.0]])
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xydata(), [[0.01, 0.01], [16.0, 16.0]])
    assert fig.axes[2].get_xlabel() == "theoretical margin"
    assert fig.axes[0].get_ylabel() == "empirical margin ||delta||_2"


def test_latent_margins_plot_the_bound_against_the_latent_margin(results):
    fig = figures.latent_margins(results)
    (ax,) = fig.axes
    assert ax.get_title() == "Latent-space margin: the strict step"
    assert len(ax.collections) == 4
    np.testing.assert_allclose(ax.collections[3].get_offsets(), [[1.0, 6.0], [2.0, 12.0]])  # 30 clamped at 12
    assert [t.get_text() for t in ax.get_legend().get_texts()] == NAMES
    assert "lines n=4 sum=24 sumsq=288" in figure_fingerprint(fig)  # the diagonal (0, 0)-(12, 12)


def test_margins_by_beta_plot_medians_and_the_price(results):
    fig = figures.margins_by_beta(results, [0.01, 0.02, 0.03, 0.04], r=4.0)
    top, ingredients, price = fig.axes
    assert top.get_title() == "Margins at r = 4"
    # torch's median of two values is the lower one
    np.testing.assert_allclose(top.lines[0].get_ydata(), [1.0, 2.0, 3.0, 4.0])  # empirical
    np.testing.assert_allclose(top.lines[1].get_ydata(), [0.5, 0.5, 0.5, 0.5])  # paper
    np.testing.assert_allclose(ingredients.lines[0].get_ydata(), [0.1, 0.2, 0.3, 0.4], rtol=1e-6)  # sigma_min
    np.testing.assert_allclose(ingredients.lines[2].get_ydata(), 4.0)  # decoder norm
    np.testing.assert_allclose([p.get_height() for p in price.patches], [0.01, 0.02, 0.03, 0.04])
    assert price.get_title() == "The price: reconstruction error"
    assert [t.get_text() for t in price.get_xticklabels()] == [n.replace(" (", "\n(") for n in NAMES]

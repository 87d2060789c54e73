"""Chapter 3's figures (robustvae.plots.consistency) draw the data they are given, with their titles."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from robustvae.fingerprint import figure_fingerprint  # noqa: E402
from robustvae.plots import consistency as plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


class _HalfVAE(nn.Module):
    def reconstruct(self, x, sample=True):
        return x / 2


def _images(n, value):
    return torch.full((n, 1, 28, 28), float(value))


def test_attacked_digits_shows_one_digit_per_class_under_every_attack():
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    x = torch.arange(12, dtype=torch.float).view(-1, 1, 1, 1).expand(-1, 1, 28, 28) / 12
    adv = {"FGSM 0.1": x + 1, "L-BFGS": x[:10] + 2}
    fig = plots.attacked_digits(x, y, adv)
    assert fig._suptitle.get_text() == "The same digits under each attack"
    axes = fig.axes
    assert len(axes) == 3 * 8
    assert [axes[c].get_title() for c in range(8)] == [f"digit {c}" for c in range(8)]
    assert [axes[8 * r].get_ylabel() for r in range(3)] == ["clean", "FGSM 0.1", "L-BFGS"]
    # the first column is digit 0 (image 0), under L-BFGS: 0 + 2 everywhere
    assert axes[16].get_images()[0].get_array().mean() == pytest.approx(2.0)


def test_distinct_label_bars_share_per_bin():
    one, two, four = [[1, 1, 1, 1]], [[1, 2, 1, 1]], [[1, 2, 3, 4]]
    by_kind = {"clean": torch.tensor(one + one), "PGD 0.3": torch.tensor(two + four)}
    labels = {"A": by_kind, "B": by_kind}
    keep = {"clean": torch.tensor([True, True]), "PGD 0.3": torch.tensor([True, True])}
    fig = plots.distinct_label_bars(labels, keep, 4)
    ax = fig.axes[0]
    assert ax.get_title() == "VAE A" and fig.axes[1].get_title() == "VAE B"
    heights = [[p.get_height() for p in c.patches] for c in ax.containers]   # one container per bin
    assert heights == [[1.0, 0.0], [0.0, 0.5], [0.0, 0.0], [0.0, 0.5]]
    assert "over 4 stochastic" in fig._suptitle.get_text()


def test_seed_experiment_counts_distinct_labels():
    labels = {"clean": torch.tensor([[1, 1, 1], [1, 1, 1]]), "L-BFGS": torch.tensor([[1, 2, 3], [1, 1, 2]])}
    fig = plots.seed_experiment(labels, ["clean", "L-BFGS"], 3, "beta=1")
    ax = fig.axes[0]
    assert ax.get_title() == "Seed experiment A, our models (VAE beta=1, every attacked input)"
    assert [[p.get_height() for p in c.patches] for c in ax.containers] == [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["clean (2 inputs)", "L-BFGS (2 inputs)"]


def test_latent_statistics_one_panel_per_statistic():
    s = {"kl": np.array([1.0, 2.0]), "mu_norm": np.array([0.0, 1.0]), "enc_var": np.array([0.1, 0.1]),
         "rec_mse": np.array([0.0, 0.0])}
    fig = plots.latent_statistics({"clean": s, "PGD 0.3": s})
    assert [ax.get_title() for ax in fig.axes] == ["KL to prior (nats)", "||mu(x)||", "mean encoder variance",
                                                  "reconstruction MSE"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["clean", "PGD 0.3"]


def test_lda_plane_plots_the_successful_inputs():
    rng = np.random.default_rng(0)
    y_test = torch.arange(10).repeat(5)
    mu_test = rng.normal(size=(50, 3)) + 3 * np.eye(10, 3)[y_test.numpy()]
    mu_adv = {"L-BFGS": mu_test[:2], "PGD 0.3": mu_test[:3]}
    success = {"L-BFGS": torch.tensor([True, False, True]), "PGD 0.3": torch.tensor([True, True, True])}
    y = torch.tensor([4, 5, 6])
    fig = plots.lda_plane(mu_test, y_test, mu_adv, y, success, ["L-BFGS", "PGD 0.3"])
    ax = fig.axes[0]
    assert ax.get_title() == "L-BFGS" and fig.axes[1].get_title() == "PGD 0.3"
    test_pts, adv_pts = ax.collections
    assert len(test_pts.get_offsets()) == 50 and len(adv_pts.get_offsets()) == 2
    assert adv_pts.get_array().tolist() == [4, 6]     # coloured by the true classes of the kept inputs


def test_targeted_attacks_plots_the_first_three_columns():
    t = pd.DataFrame({"a": [0.0, 1.0], "b": [1.0, 0.5], "c": [0.5, 1.0], "d": [9.0, 9.0]},
                     index=pd.Index([1.0, 2.0], name="L2 radius"))
    fig = plots.targeted_attacks(t, 20)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b", "c"]
    assert ax.get_lines()[1].get_ydata().tolist() == [1.0, 0.5]
    assert ax.get_title() == "Targeted attacks on 20 images: the VAE's encoder vs the classifier"
    assert ax.get_xlabel() == "L2 radius of the perturbation"


def test_latent_attack_images_at_the_half_and_the_largest_radius():
    x_src, x_tgt = _images(3, 0.2), _images(3, 0.8)
    latent_adv = {1.0: _images(3, 0.1), 2.0: _images(3, 0.4), 3.0: _images(3, 0.6)}
    table = pd.DataFrame({"reconstruction as target": [0.0, 0.5, 1.0]}, index=[1.0, 2.0, 3.0])
    fig = plots.latent_attack_images(_HalfVAE(), x_src, x_tgt, latent_adv, table)
    labels = [fig.axes[3 * r].get_ylabel() for r in range(6)]
    assert labels == ["source", "target", "x' (eps 2)", "g(x') (eps 2)", "x' (eps 3)", "g(x') (eps 3)"]
    assert fig.axes[3 * 3].get_images()[0].get_array().mean() == pytest.approx(0.2)   # g = x / 2
    assert "Latent attack" in fig._suptitle.get_text()


def test_damage_images_rows():
    fig = plots.damage_images(_HalfVAE(), _images(2, 0.6), _images(2, 1.0), 3.0)
    assert [fig.axes[2 * r].get_ylabel() for r in range(4)] == ["x", "g(x)", "x + delta (eps 3)", "g(x + delta)"]
    assert fig.axes[6].get_images()[0].get_array().mean() == pytest.approx(0.5)
    assert "images" in figure_fingerprint(fig)

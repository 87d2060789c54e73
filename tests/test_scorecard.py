"""The scorecard's columns: each must equal the chapter function it wraps, with a valid interval.

Tiny untrained models on the CPU; the r-robustness margin is checked on the linear-Gaussian VAE,
where it is known in closed form.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

import robustvae as rv
from robustvae import calibration, certify, consistency, ood
from robustvae import rrobust as rr
from robustvae import scorecard as sc
from robustvae.lipschitz import LipschitzVAE
from robustvae.models import Classifier


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    vae = rv.VAE(latent_dim=4, width=8, hidden=32).eval()
    clf = Classifier(width=8).eval()
    lip = LipschitzVAE(latent_dim=4, hidden=32, decoder_lipschitz=2.0, mean_lipschitz=0.5, std_lipschitz=0.1,
                       std_max=0.3, std_hidden=16).eval()
    return vae, clf, lip


@pytest.fixture(scope="module")
def images():
    x = torch.rand(24, 1, 28, 28, generator=gen(1))
    y = torch.arange(24) % 10
    return x, y


def test_bootstrap_interval_contains_the_estimate_and_is_seeded():
    v = np.random.default_rng(0).normal(size=200)
    e = sc.bootstrap(v, np.mean, n_boot=300, seed=3)
    assert e.value == pytest.approx(v.mean())
    assert e.lo <= e.value <= e.hi
    assert (e.lo, e.hi) == (sc.bootstrap(v, np.mean, n_boot=300, seed=3).lo, sc.bootstrap(v, np.mean, n_boot=300, seed=3).hi)
    # the interval is about +-1.96 standard errors of the mean
    assert e.hi - e.lo == pytest.approx(2 * 1.96 * v.std() / np.sqrt(len(v)), rel=0.25)
    med = sc.bootstrap([1.0, 2.0, np.inf], np.median, n_boot=50)
    assert med.value == 2.0 and med.hi == np.inf
    with pytest.raises(ValueError):
        sc.bootstrap([], np.mean)


def test_two_sample_auroc_is_the_detection_auroc():
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(size=80), rng.normal(0.7, size=60)
    e = sc.two_sample_auroc(neg, pos, n_boot=200, seed=1)
    auc = roc_auc_score(np.r_[np.zeros(80), np.ones(60)], np.r_[neg, pos])          # scikit-learn
    assert e.value == pytest.approx(auc)
    # a score and its negation: AUROC a and 1 - a
    assert sc.two_sample_auroc(-neg, -pos, n_boot=0).value == pytest.approx(1 - auc)
    assert e.lo <= e.value <= e.hi
    assert sc.two_sample_auroc(np.zeros(5), np.ones(5), n_boot=20).value == 1.0


def test_likelihood_columns_match_the_chapter_quantities(models, images):
    vae, _, _ = models
    x, _ = images
    cols = sc.likelihood_columns(vae, x, n_boot=50, seed=0)
    with torch.no_grad():
        mse = (vae.reconstruct(x, sample=False) - x).pow(2).mean().item()        # by hand
    assert cols["mse"].value == pytest.approx(mse, rel=1e-5)
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = vae.elbo(x)["elbo"]
    assert cols["elbo"].value == pytest.approx(elbo.mean().item(), rel=1e-5)
    for e in cols.values():
        assert e.lo <= e.value <= e.hi


def test_likelihood_columns_leave_the_global_random_state_alone(models, images):
    vae, _, _ = models
    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    sc.likelihood_columns(vae, images[0], n_boot=10)
    assert torch.equal(torch.rand(3), a)


def test_ood_column_picks_the_best_vae_score(models, images):
    vae, _, _ = models
    x_in = images[0][:12]
    x_out = ood.constant_images(12, seed=0)
    e = sc.ood_column(vae, x_in, x_out, images[0], k=2, n_boot=50, seed=0)
    by_score = e.per_input["auroc_by_score"]
    assert set(by_score) == set(ood.vae_detectors(vae, k=2))
    assert e.note == max(by_score, key=by_score.get)
    assert e.value == pytest.approx(max(by_score.values()))
    s_in, s_out = e.per_input["in"], e.per_input["out"]
    assert e.value == pytest.approx(roc_auc_score(np.r_[np.zeros(len(s_in)), np.ones(len(s_out))], np.r_[s_in, s_out]))
    assert e.lo <= e.value <= e.hi


def test_detection_column_is_chapter_3s_agreement_score(models, images):
    vae, clf, _ = models
    x, _ = images
    x_adv = (x[:10] + 0.3 * torch.randn(10, 1, 28, 28, generator=gen(2))).clamp(0, 1)
    e = sc.detection_column(vae, clf, x, x_adv, n_samples=5, n_boot=50, seed=0)
    assert 0 <= e.value <= 1 and e.lo <= e.value <= e.hi
    s_c, s_a = e.per_input["clean"], e.per_input["adversarial"]
    assert e.value == pytest.approx(roc_auc_score(np.r_[np.zeros(len(s_c)), np.ones(len(s_a))], np.r_[s_c, s_a]))
    assert len(e.per_input["clean"]) == len(x) and len(e.per_input["adversarial"]) == 10
    again = sc.detection_column(vae, clf, x, x_adv, n_samples=5, n_boot=50, seed=0)
    assert again.value == e.value                      # seeded: the same labels every time


def test_purified_column_counts_an_image_only_if_every_attack_fails(models, images):
    vae, clf, _ = models
    x, y = images
    e = sc.purified_column(vae, clf, x, y, eps=0.2, steps=3, n_boot=50, seed=0)
    robust, wb, bpda = e.per_input["values"], e.per_input["white-box"], e.per_input["BPDA"]
    assert (robust <= wb).all() and (robust <= bpda).all()
    assert e.value == pytest.approx(robust.mean())
    # with no budget the attacks cannot change anything: robust = clean accuracy of the pipeline
    e0 = sc.purified_column(vae, clf, x, y, eps=0.0, steps=3, n_boot=10)
    assert np.array_equal(e0.per_input["values"], e0.per_input["clean"])


def test_spearman_column_matches_the_calibration_chapter(models, images):
    vae, clf, _ = models
    x, y = images
    e = sc.spearman_column(vae, clf, x, y, n_boot=100, seed=0)
    assert e.value == pytest.approx(spearmanr(e.per_input["mse"], e.per_input["confidence"]).statistic)   # scipy
    with torch.no_grad():
        mse = (vae.reconstruct(x, sample=False) - x).pow(2).flatten(1).mean(1).numpy()          # by hand
        conf = torch.softmax(clf(x), 1).max(1).values.numpy()
    assert np.allclose(e.per_input["mse"], mse, rtol=1e-5) and np.allclose(e.per_input["confidence"], conf, rtol=1e-5)
    assert -1 <= e.lo <= e.value <= e.hi <= 1


def test_margin_column_finds_the_exact_margin_of_the_linear_model():
    g = gen(1)
    u = torch.randn(16, generator=g)
    u = u / u.norm()
    v = torch.randn(16, generator=g)
    v = v - (v @ u) * u
    A = torch.stack([3 * u, v / v.norm()])
    lin = rr.LinearGaussianVAE(A, s=0.5, c=1.0, shape=(1, 4, 4))
    x = torch.full((4, 1, 4, 4), 0.5)
    r = 1.517
    e = sc.margin_column(lin, x, r, np.geomspace(0.05, 1.0, 12), ("max-damage", "encoder KL"), steps=20,
                         n_mc=2000, refine_steps=6, n_boot=50, seed=0)
    exact = lin.margin(r)
    assert np.all(np.abs(e.per_input["values"] - exact) < 0.06 * exact), (e.per_input, exact)
    assert np.array_equal(e.per_input["values"],
                          np.minimum(e.per_input["max-damage"], e.per_input["encoder KL"]))
    assert e.value == pytest.approx(np.median(e.per_input["values"]))
    # unbreakable within the grid: the margin is inf
    none = sc.margin_column(lin, x, r, [0.01, 0.02], ("max-damage",), steps=3, n_mc=200, n_boot=10)
    assert np.isinf(none.value)


def test_certified_column(models, images):
    vae, _, lip = models
    x, _ = images
    assert np.isnan(sc.certified_column(vae, x, r=4.0).value)
    e = sc.certified_column(lip, x, r=4.0, n_boot=20)
    # by hand: the positive root of (b^2 + c^2) R^2 + 4 c s R + 4 s^2 = r^2 / (2 a^2) at s = ||sigma(x)||
    k = lip.lipschitz_constants()
    with torch.no_grad():
        s = (0.5 * lip.encode(x)[1]).exp().flatten(1).norm(dim=1).double().numpy()
    A, B, C = k["b"] ** 2 + k["c"] ** 2, 4 * k["c"] * s, 4 * s**2 - 16.0 / (2 * k["a"] ** 2)
    m = (-B + np.sqrt(B**2 - 4 * A * C)) / (2 * A)
    assert (C < 0).all() and (m > 0).all()
    assert e.value == pytest.approx(np.median(m), rel=1e-5)


def test_tables_best_and_normalisation():
    rows = {
        "a": {"elbo": sc.Estimate(-100, -101, -99), "mse": sc.Estimate(0.01, 0.009, 0.011),
              "margin": sc.Estimate(1.0, 0.9, 1.1), "spearman": sc.Estimate(-0.3, -0.4, -0.2)},
        "b": {"elbo": sc.Estimate(-150, -151, -149), "mse": sc.Estimate(0.04, 0.039, 0.041),
              "margin": sc.Estimate(np.inf, 3.0, np.inf), "certified": sc.Estimate(0.5, 0.5, 0.5),
              "spearman": sc.Estimate(-0.1, -0.2, 0.0)},
        "c": {"elbo": sc.Estimate(-120, -121, -119), "mse": sc.Estimate(0.02, 0.019, 0.021),
              "margin": sc.Estimate(2.0, 1.8, 2.2), "spearman": sc.Estimate(-0.2, -0.3, -0.1)},
    }
    t = sc.table(rows, ["elbo", "mse", "margin", "certified", "spearman"])
    assert t.shape == (3, 15) and np.isnan(t.loc["a", ("certified", "value")])
    values = t.xs("value", axis=1, level="stat")
    best = sc.best_per_column(values)
    assert best["elbo"] == "a" and best["mse"] == "a" and best["spearman"] == "a"
    assert best["margin"] == "c"          # inf (never broken within the grid) is not ranked
    assert best["certified"] == "b"
    norm = sc.normalise_columns(values)
    assert norm.loc["a", "elbo"] == 1 and norm.loc["b", "elbo"] == 0
    assert norm.loc["a", "mse"] == 1 and norm.loc["b", "mse"] == 0        # smaller is better
    assert norm.loc["c", "elbo"] == pytest.approx(0.6)
    assert norm.loc["b", "margin"] == 1 and norm.loc["a", "margin"] == 0  # inf clipped to the best finite
    assert np.isnan(norm.loc["a", "certified"]) and norm.loc["b", "certified"] == 1
    assert norm.loc["a", "spearman"] == 1                                 # most negative is best
    with pytest.raises(ValueError, match="Unknown column"):
        sc.table(rows, ["nope"])
    with pytest.raises(ValueError, match="Unknown column"):
        sc.normalise_columns(pd.DataFrame({"nope": [1.0]}))


def test_bad_margin_arguments_raise(models, images):
    vae, _, _ = models
    x = images[0][:2]
    with pytest.raises(ValueError, match="directions"):
        sc.margin_column(vae, x, 4.0, [1.0], ("random",))
    with pytest.raises(ValueError, match="x_target"):
        sc.margin_column(vae, x, 4.0, [1.0], ("latent (targeted)",))


def test_margin_column_portfolio_with_lbfgs_and_its_summary():
    g = gen(1)
    u = torch.randn(16, generator=g)
    u = u / u.norm()
    v = torch.randn(16, generator=g)
    v = v - (v @ u) * u
    lin = rr.LinearGaussianVAE(torch.stack([3 * u, v / v.norm()]), s=0.5, c=1.0, shape=(1, 4, 4))
    x = torch.full((4, 1, 4, 4), 0.5)
    r = 1.517
    radii = np.geomspace(0.05, 1.0, 12)
    e = sc.margin_column(lin, x, r, radii, ("max-damage", "L-BFGS-B"), steps=10, n_mc=1000, refine_steps=6,
                         n_boot=20, seed=0, lbfgs_starts=2, lbfgs_iter=5, lbfgs_radii=radii[::2])
    exact = lin.margin(r)
    both = np.stack([e.per_input["max-damage"], e.per_input["L-BFGS-B"]])
    assert np.array_equal(e.per_input["values"], both.min(0))
    assert np.all(np.abs(e.per_input["values"] - exact) < 0.08 * exact), (e.per_input, exact)
    for i, a in enumerate(e.per_input["best_attack"]):
        assert e.per_input[a][i] == e.per_input["values"][i]
    t = sc.margin_summary(e)
    assert list(t.index) == ["max-damage", "L-BFGS-B"] and t["best"].sum() == len(x)
    assert t.loc["L-BFGS-B", "budget"] == "L-BFGS-B, 5 iterations, 2 starts"
    assert t.loc["max-damage", "budget"] == "PGD, 10 steps, 1 restart"

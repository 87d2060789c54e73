"""Chapter 6's tables and numbers (robustvae.reports.rrobust) on tiny inputs with known answers."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as scipy_stats

from robustvae import rrobust as rr
from robustvae import stats
from robustvae.reports import rrobust as report

INF = float("inf")
NAN = float("nan")
PARAMS = dict(vae_epochs=1, extra_epochs=1, latent_dim=2, n_inputs=10, n_mc=10, n_mc_p0=10, n_radii=3,
              attack_steps=1, lbfgs_starts=1, lbfgs_iter=1, lbfgs_stride=1, refine_steps=0, r=1.0,
              tc_beta=2.0, min_radius=0.5, max_radius=2.0, betas=(2.0,), r_curves=(1.0,),
              r_quantile=0.9, likelihood="bernoulli")


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def search(margin, upper=None):
    """A stand-in for a MarginSearch with the fields the reports read."""
    margin = t(*margin)
    return SimpleNamespace(margin=margin, found=torch.isfinite(margin),
                           upper_at_margin=t(*(upper or [NAN] * len(margin))),
                           perturbation=torch.zeros(len(margin), 1, 2, 2))


def model(empirical, paper, whitened=None, random=None, p=None, sigma_min=None, jac=None):
    """One model's results dictionary with the entries the reports read."""
    n = len(empirical)
    margins = {"max-damage": t(*empirical), "L-BFGS-B": t(*[INF] * n)}
    searches = {a: search(m.tolist()) for a, m in margins.items()}
    return dict(
        empirical=t(*empirical),
        theory={"paper": t(*paper), "whitened": t(*(whitened or paper)),
                "sigma_min": t(*(sigma_min or [1.0] * n)), "jac_fro": t(*(jac or [1.0] * n))},
        p0=SimpleNamespace(p=t(*(p or [0.9] * n))),
        searches={**searches, "random": search(random or [INF] * n)},
        portfolio=rr.PortfolioMargin.from_margins(margins, searches=searches),
    )


def test_check_parameters_accepts_good_values_and_names_the_bad_one():
    report.check_parameters(PARAMS)
    for bad, match in ((dict(min_radius=3.0), "min_radius"), (dict(n_inputs=9), "n_inputs"),
                       (dict(likelihood="poisson"), "likelihood"), (dict(refine_steps=-1), "refine_steps"),
                       (dict(betas=(0.0,)), "betas"), (dict(r_quantile=1.0), "r_quantile"),
                       (dict(r_quantile=0.5), "r_quantile")):
        with pytest.raises(ValueError, match=match):
            report.check_parameters({**PARAMS, **bad})


def test_search_grids_thin_the_geometric_grid_and_keep_the_largest_radius():
    radii, lbfgs, random = report.search_grids(1.0, 16.0, 5, lbfgs_stride=3)
    np.testing.assert_allclose(radii, [1, 2, 4, 8, 16])
    np.testing.assert_allclose(lbfgs, [1, 8, 16])
    np.testing.assert_allclose(random, [1, 4, 16])


def test_attack_budgets_state_each_budget():
    b = report.attack_budgets(7, 3, 2)
    assert list(b) == ["max-damage", "latent (targeted)", "encoder KL", "L-BFGS-B"]
    assert b["max-damage"] == "PGD, 7 steps, 1 restart"
    assert b["L-BFGS-B"] == "L-BFGS-B, 2 iterations, 3 starts"


@pytest.fixture(scope="module")
def lin():
    A = torch.zeros(2, 4)
    A[0, 0], A[1, 1] = 3.0, 1.0
    return rr.LinearGaussianVAE(A, s=0.5, c=2.0, shape=(1, 2, 2))


def test_linear_error_and_table(lin):
    exact = lin.margin(3.0)  # p0 = 1 - exp(-2.25) > 1/2, so the margin is positive
    found = SimpleNamespace(margin=t(exact, 1.1 * exact, 0.95 * exact))
    assert report.linear_error(lin, 3.0, found) == pytest.approx(0.1, rel=1e-5)
    p0 = SimpleNamespace(p=t(0.2, 0.4))
    table = report.linear_table(lin, 3.0, p0, found, {"paper": t(1.0, 3.0), "whitened": t(2.0, 2.0)})
    assert table.loc["P(||Delta|| <= r) at delta = 0", "exact"] == pytest.approx(1 - math.exp(-2.25))
    assert table.loc["P(||Delta|| <= r) at delta = 0", "Monte Carlo / attacks (mean)"] == pytest.approx(0.3)
    assert table.loc["margin R^r", "Monte Carlo / attacks (mean)"] == pytest.approx(exact * 3.05 / 3, rel=1e-5)
    assert table.loc["paper margin", "theory (mean)"] == pytest.approx(2.0)
    assert table.loc["whitened margin", "theory (mean)"] == pytest.approx(2.0)
    assert np.isnan(table.loc["paper margin", "exact"])


def test_price_table_counts_active_dimensions(monkeypatch):
    class Stub(torch.nn.Module):
        def encode(self, x):  # sigma = 0.1, 0.9, 0.2 for every input
            log_var = 2 * torch.log(t(0.1, 0.9, 0.2)).expand(len(x), 3)
            return torch.zeros_like(log_var), log_var

    monkeypatch.setattr(report, "vae_metrics", lambda vae, x: {"elbo": -90.0, "kl": 12.0, "mse": 0.02, "rec": 0})
    price = report.price_table({"a": Stub()}, torch.zeros(5, 1, 2, 2))
    assert list(price.columns) == ["test ELBO (nats)", "KL (nats)", "pixel MSE", "active dims"]
    assert price.loc["a"].tolist() == [-90.0, 12.0, 0.02, 2]


def test_target_indices_point_to_the_next_other_label():
    assert report.target_indices([0, 0, 1, 1]) == [2, 2, 0, 0]
    assert report.target_indices(torch.tensor([3, 5, 3])) == [1, 2, 1]
    with pytest.raises(ValueError):
        report.target_indices([1, 1])


def test_wilson_half_width_and_probit_cap():
    z = 1.959964
    expected = z * math.sqrt(0.25 / 100 + z**2 / (4 * 100**2)) / (1 + z**2 / 100)  # Wilson at p = 1/2
    assert report.wilson_half_width(100) == pytest.approx(expected, rel=1e-4)
    assert report.probit_cap(2) == pytest.approx(0.6744898)  # Phi^-1(3/4)


def test_model_results_adds_sigma_and_the_decoder_norm(lin):
    margins = {"max-damage": t(1.0, INF), "L-BFGS-B": t(2.0, 0.5)}
    searches = {a: search(m.tolist()) for a, m in margins.items()}
    portfolio = rr.PortfolioMargin.from_margins(margins, searches=searches)
    random, latent = search([3.0, INF]), search([1.0, 1.0])
    res = report.model_results(lin, torch.rand(2, 1, 2, 2), "p0", "theory", "lower", portfolio, random, latent)
    assert list(res["searches"]) == ["max-damage", "L-BFGS-B", "random"]
    assert res["searches"]["random"] is random and res["latent"] is latent
    torch.testing.assert_close(res["empirical"], t(1.0, 0.5))
    torch.testing.assert_close(res["sigma"], torch.full((2, 2), 0.5))
    torch.testing.assert_close(res["dec_spec"], t(2.0, 2.0))  # g(z) = 2 z


def test_margin_table_medians_and_unbroken_random():
    results = {"m": model([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], random=[5.0, INF, INF])}
    table = report.margin_table(results, ("max-damage", "L-BFGS-B", "random"))
    assert table.loc["m", "max-damage"] == 2.0
    assert table.loc["m", "L-BFGS-B"] == INF
    assert table.loc["m", "random"] == INF
    assert table.loc["m", "empirical (portfolio)"] == 2.0
    assert table.loc["m", "random: not broken"] == 2


def test_attack_additions_and_lbfgs_gains():
    margins = {"max-damage": t(1.0, INF, 2.0), "L-BFGS-B": t(0.5, 1.0, 3.0)}
    results = {"m": {"portfolio": rr.PortfolioMargin.from_margins(margins, {"L-BFGS-B": "5 starts"})}}
    adds = report.attack_additions(results)
    assert list(adds.columns) == ["budget", "broken", "best", "lowered", "newly broken", "median drop"]
    row = adds.loc[("m", "L-BFGS-B")]
    assert (row["budget"], row["broken"], row["best"], row["lowered"], row["newly broken"]) == ("5 starts", 3, 2, 2, 1)
    assert row["median drop"] == pytest.approx(0.5)
    assert report.lbfgs_gains(adds) == {"lbfgs_lowered": 2, "lbfgs_new": 1}


def test_theory_table_ratios_counts_and_spearman():
    results = {"m": model([2.0, 4.0, 6.0, 8.0], [1.0, 2.0, 3.0, 4.0], whitened=[4.0, 4.0, 4.0, 4.0])}
    table = report.theory_table(results, seed=0)
    row = table.loc["m"]
    assert row["median paper margin"] == 2.0  # torch's median: the lower of the two middle values
    assert row["median emp. / paper"] == 2.0
    assert row["worst emp. / whitened"] == 0.5
    assert (row["below paper"], row["below whitened"]) == (0, 1)
    assert row["Spearman [95%]"] == "1.00 [1.00,\u00a01.00]"
    assert report.within_model_spearman(results)["m"] == pytest.approx(1.0)


def test_mean_spearman_averages_over_models():
    results = {"up": model([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]),
               "down": model([14.0, 13.0, 12.0, 11.0], [1.0, 2.0, 3.0, 4.0])}  # pooled rho is not 0
    rho = report.mean_spearman(results, seed=0)
    assert list(rho) == ["rho_mean", "rho_lo", "rho_hi"]
    assert list(rho.values()) == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)


def test_r_sweep_table_and_numbers(lin):
    models = {"vae": lin, "other": lin}
    table = report.r_sweep_table(models, torch.rand(3, 1, 2, 2), [1e-3, 100.0], n_samples=20, seed=0)
    assert table.index.names == ["model", "r"]
    assert table.loc[("vae", "r = 0.001")].tolist() == [0.0, 0, 3]
    assert table.loc[("vae", "r = 100")].tolist() == [1.0, 3, 0]
    numbers = report.r_sweep_numbers(table, 100.0, 1e-3, n_inputs=3)
    assert numbers == {"vae_clipped": 3, "r_low": 1e-3, "vae_clipped_low": 0, "others_unrobust_low": 3,
                       "others_total": 3}


def test_latent_table_counts_violations():
    lat = search([1.0, 0.5, INF], upper=[0.6, 0.4, NAN])
    table = report.latent_table({"m": {"latent": lat, "theory_lower": t(0.8, 0.8, 0.8)}})
    row = table.loc["m"]
    assert row["median latent margin (attack)"] == 1.0
    assert row["median ratio"] == 1.25
    assert (row["inputs below the bound"], row["significant violations"], row["not broken by max shift"]) == (1, 1, 1)


def test_summary_numbers_and_table():
    results = {
        "VAE": model([1.0, 1.0, 1.0], [0.5, 0.5, 2.0], random=[2.0, INF, 4.0], p=[0.8, 0.9, 1.0]),
        "top": model([2.0, 3.0, 4.0], [1.0, 1.0, 1.0], random=[8.0, 8.0, 8.0]),
        "tc": model([1.5, 1.5, 1.5], [1.0, 1.0, 1.0], random=[INF, INF, INF]),
    }
    price = pd.DataFrame({"pixel MSE": [0.01, 0.03, 0.02]}, index=list(results))
    latent = pd.DataFrame({"significant violations": [0, 1, 0], "inputs below the bound": [1, 2, 0],
                           "median ratio": [2.0, 3.0, 5.0]})
    margins = pd.DataFrame({"random: not broken": [1, 0, 3]})
    rho = pd.Series([0.2, 0.4, 0.9])
    f = report.summary_numbers(results, price, latent, margins, rho, "top", max_radius=4.0, seed=0)
    assert (f["med_vae"], f["med_top"], f["med_tc"]) == (1.0, 3.0, 1.5)
    assert f["diff_lo"] > 0 and f["diff_hi"] <= 3.0
    assert (f["n_total"], f["below_paper"], f["below_white"]) == (9, 1, 1)
    # the share below the paper margin judged on its Wilson interval: 1 of 9 pairs, or by input
    # (the models share three inputs; only the VAE's third falls below) 1 of 3
    assert f["below_paper_hi"] == pytest.approx(stats.wilson_interval(1, 9)[1])
    assert (f["below_paper_inputs"], f["n_pair_inputs"]) == (1, 3)
    assert f["below_paper_inputs_hi"] == pytest.approx(stats.wilson_interval(1, 3)[1])
    assert f["ratio_paper_min"] == 0.5 and f["ratio_paper_med"] == 2.0  # ratios 0.5, 1.5 x3, 2 x3, 3, 4
    assert (f["latent_sig"], f["latent_below"], f["latent_ratio_min"], f["latent_ratio_med"]) == (1, 3, 2.0, 3.0)
    assert (f["mse_vae"], f["mse_top"], f["mse_tc"]) == (0.01, 0.03, 0.02)
    assert f["rand_not_found"] == 4 and f["rho_within"] == 0.4
    # random / empirical, clamped at 4: VAE median 4, top median 4/3, tc 4/1.5
    assert f["rand_over_emp"] == pytest.approx(4 / 1.5)
    table = report.summary_table(results, price)
    assert table.loc["VAE", "median p"] == pytest.approx(0.9)
    assert table.loc["top", "median empirical / paper"] == 3.0
    assert table["pixel MSE"].tolist() == [0.01, 0.03, 0.02]


def test_noise_scale_margins_search_each_model_at_its_own_r():
    """Two linear-Gaussian VAEs whose noise differs by 2x: each model's r is its closed-form
    quantile, its p is about the quantile, and, since r scales with the noise, the exact margin
    doubles too: the search must find both (a search at one shared r would not)."""
    A = torch.zeros(2, 4)
    A[0, 0], A[1, 1] = 3.0, 1.0
    models = {f"s={s}": rr.LinearGaussianVAE(A, s=s, c=2.0, shape=(1, 2, 2)) for s in (0.1, 0.2)}
    x = torch.full((3, 1, 2, 2), 0.5)
    radii = np.geomspace(0.01, 1.0, 12)
    scaled = report.noise_scale_margins(models, x, x.flip(0), 0.9, radii, radii[::3], report.attack_budgets(10, 2, 5),
                                        n_mc=2000, n_mc_p0=4000, attack_steps=10, lbfgs_starts=2, lbfgs_iter=5,
                                        refine_steps=6, seed=0)
    for name, vae in models.items():
        res = scaled[name]
        assert res["r"] == pytest.approx(2.0 * vae.s * math.sqrt(2 * scipy_stats.chi2.ppf(0.9, 2)), rel=0.03)
        assert res["p0"].p.median().item() == pytest.approx(0.9, abs=0.03)
        np.testing.assert_allclose(res["empirical"], vae.margin(res["r"]), rtol=0.12)
        assert set(res) == {"r", "p0", "theory", "portfolio", "empirical"}
    ratio = scaled["s=0.2"]["empirical"].median() / scaled["s=0.1"]["empirical"].median()
    assert ratio.item() == pytest.approx(2.0, rel=0.15)


def test_noise_scale_table_and_numbers():
    vae = {**model([1.0, 2.0, 3.0], [0.5, 1.0, 1.5], p=[1.0, 0.9, 0.4]), "r": 2.0}
    top = {**model([2.0, 4.0, 5.0], [1.5, 1.0, 0.5], p=[0.8, 0.9, 0.95]), "r": 3.5}
    scaled = {"VAE": vae, "top": top}
    fixed = {"VAE": model([7.0, 8.0, 9.0], [1, 1, 1]), "top": model([1.0, 1.0, 1.0], [1, 1, 1])}
    table = report.noise_scale_table(scaled, fixed, 4.0)
    assert table.loc["VAE", "own r"] == 2.0 and table.loc["top", "own r"] == 3.5
    assert table.loc["VAE", "median p"] == pytest.approx(0.9)
    assert table.loc["VAE", "inputs at p = 1 (clipped)"] == 1 and table.loc["VAE", "inputs at p <= 1/2"] == 1
    assert table.loc["top", "median empirical margin"] == 4.0 and table.loc["top", "median paper margin"] == 1.0
    assert table.loc["VAE", "median empirical margin at r = 4"] == 8.0
    assert table.loc["top", "median empirical margin at r = 4"] == 1.0
    assert table.loc["VAE", "Spearman [95%]"].startswith("1.00")   # perfectly ranked
    assert table.loc["top", "Spearman [95%]"].startswith("-1.00")  # reversed
    n = report.noise_scale_numbers(scaled, "top", seed=0)
    assert (n["own_med_vae"], n["own_med_top"], n["own_r_vae"], n["own_r_top"]) == (2.0, 4.0, 2.0, 3.5)
    assert n["own_diff_lo"] <= 2.0 <= n["own_diff_hi"] and n["own_diff_lo"] > 0
    assert n["own_rho_mean"] == pytest.approx(0.0)          # +1 and -1 averaged
    assert n["own_rho_vae"] == pytest.approx(1.0) and n["own_rho_vae_lo"] <= 1.0 <= n["own_rho_vae_hi"]
    assert (n["own_clipped"], n["own_unrobust"]) == (1, 1)


def test_share_below_the_paper_margin_is_judged_on_its_wilson_bound():
    """"At most 10% of pairs fall below the paper margin" needs the Wilson upper end at most 0.1:
    it fails with no pair below on too few pairs, and with 5% below on many."""
    def numbers(emp, paper):
        ramp = np.linspace(0.0, 0.01, len(emp))   # no ties: every rank correlation is defined
        emp, paper = (np.asarray(emp) + ramp).tolist(), (np.asarray(paper) + ramp).tolist()
        results = {"VAE": model(emp, paper), "top": model(emp, paper)}
        price = pd.DataFrame({"pixel MSE": [0.01, 0.03]}, index=list(results))
        latent = pd.DataFrame({"significant violations": [0, 0], "inputs below the bound": [0, 0],
                               "median ratio": [2.0, 2.0]})
        return report.summary_numbers(results, price, latent, pd.DataFrame({"random: not broken": [0, 0]}),
                                      pd.Series([0.5, 0.5]), "top", max_radius=4.0, seed=0)

    few = numbers([2.0] * 10, [1.0] * 10)                                # 0 of 20 pairs
    assert few["below_paper"] == 0 and few["below_paper_hi"] > 0.1
    many = numbers([2.0] * 100, [1.0] * 100)                             # 0 of 200 pairs
    assert many["below_paper_hi"] <= 0.1 and many["below_paper_inputs_hi"] > many["below_paper_hi"]
    some = numbers([0.5] * 5 + [2.0] * 95, [1.0] * 100)                  # 10 of 200 pairs (5%)
    assert some["below_paper"] == 10 and some["below_paper_hi"] > 0.05
    assert numbers([0.5] * 8 + [2.0] * 92, [1.0] * 100)["below_paper_hi"] > 0.1  # 8%: the bound reaches 0.13

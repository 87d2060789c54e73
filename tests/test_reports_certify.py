"""Chapter 7's tables and numbers (robustvae.reports.certify) on hand-made models and margins.

The models are tiny fakes (linear maps, fixed constants) whose every quantity is known by hand:
no training, no data set.
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from robustvae import certify
from robustvae.reports import certify as report
from robustvae.tables import DASH, interval


class Linear(nn.Module):
    """A "VAE" whose every map is linear and bias-free: encoder mean ``x -> W_b x``, standard
    deviation ``x -> W_c x``, decoder mean image ``z -> W_a z``, with spectral norms 2, 3, 0.5."""

    def __init__(self, constants=None):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.mean = nn.Linear(784, 2, bias=False)
        self.s = nn.Linear(784, 2, bias=False)
        self.dec = nn.Linear(2, 784, bias=False)
        with torch.no_grad():
            for w, value in ((self.encoder.mean.weight, 3.0), (self.s.weight, 0.5), (self.dec.weight, 2.0)):
                w.zero_()
                w[0, 0] = value
                w[1, 1] = value / 10
        self.constants = constants or {"a": 10.0, "b": 20.0, "c": 30.0, "s_max": 1.0}

    def std(self, x):
        return self.s(x.flatten(1))

    def decode(self, z):
        return self.dec(z)

    def mean_image(self, logits):
        return logits

    def lipschitz_constants(self):
        return dict(self.constants)


class FixedStd:
    """A model with given ``||sigma(x)||`` per input (as a one-dimensional sigma) and constants."""

    def __init__(self, norms, constants):
        self.norms, self.constants = torch.as_tensor(norms, dtype=torch.float32), constants

    def std(self, x):
        return self.norms[: len(x), None]

    def lipschitz_constants(self):
        return dict(self.constants)


class Identity:
    """A model whose deterministic reconstruction is its input (``encode``: mean = the pixels
    of a 1x1 image, variance e^-40)."""

    def encode(self, x):
        mu = x.flatten(1)
        return mu, torch.full_like(mu, -40.0)

    def decode(self, z):
        return z

    def mean_image(self, logits):
        return logits

    def reconstruct(self, x, sample=False):
        return x

    def lipschitz_constants(self):
        return {"a": 2.0, "b": 3.0, "c": 0.0, "s_max": 1.0}


# --- parameters and designs --------------------------------------------------------------
def test_check_parameters_sorts_the_margins_and_names_each_bad_value():
    assert report.check_parameters(0.5, (1, 0.25, 0.5), (1.0, 2.0), 2.0) == (0.25, 0.5, 1.0)
    for args, word in [((1.0, (1,), (1.0,), 1.0), "prob"), ((0.5, (), (1.0,), 1.0), "margins"),
                       ((0.5, (0.0,), (1.0,), 1.0), "margins"), ((0.5, (1,), (2.0, 1.0), 1.0), "eps_grid"),
                       ((0.5, (1,), (1.0, 2.0), 3.0), "eps_compare")]:
        with pytest.raises(ValueError, match=word):
            report.check_parameters(*args)


class Design:
    def __init__(self, **d):
        self.d = d

    def design(self):
        return dict(self.d)


def test_design_table_multiplies_a_and_b_and_adds_the_noise_cap():
    configs = {0.5: Design(a=4.0, b=2.0, c=0.5, s_max=0.1), 1.0: Design(a=4.0, b=1.0, c=0.25, s_max=0.1)}
    t = report.design_table(configs, r=4.0, decoder_lipschitz=4.0, prob=0.5)
    assert list(t.index) == [0.5, 1.0] and t.index.name == "requested R*"
    assert list(t["a b"]) == [8.0, 4.0]
    # s_cap = r sqrt(1 - p) / (2 a) = 4 * sqrt(0.5) / 8
    assert t["s_cap"].tolist() == pytest.approx([math.sqrt(0.5) / 2] * 2)


def test_model_summary_certifies_only_the_requested_models(monkeypatch):
    metrics = {"std": {"elbo": -90.0, "kl": 20.0, "mse": 0.01}, "lip": {"elbo": -150.0, "kl": 30.0, "mse": 0.05}}
    monkeypatch.setattr(report, "vae_metrics", lambda vae, x: metrics[vae.name])
    monkeypatch.setattr(report.certify, "certified_margins", lambda vae, x, r, prob: torch.tensor([0.6, 0.4, 0.9]))
    std, lip = FixedStd([1.0], {}), FixedStd([1.0], {"a": 4.0, "b": 2.0, "c": 0.5, "s_max": 0.2, "x": 9.0})
    std.name, lip.name = "std", "lip"
    summary, cert = report.model_summary({"standard": std, "R*=0.25": lip}, {"R*=0.25": 0.25},
                                         torch.zeros(2), torch.zeros(3), 4.0, 0.5)
    assert list(cert) == ["R*=0.25"]
    row = summary.loc["R*=0.25"]
    assert (row["requested R*"], row["certified min"], row["certified median"]) == (0.25, pytest.approx(0.4), pytest.approx(0.6))
    assert (row["a"], row["b"], row["c"], row["s_max"]) == (4.0, 2.0, 0.5, 0.2) and "x" not in summary
    assert summary.loc["standard", ["requested R*", "certified min", "a"]].isna().all()
    assert summary.loc["standard", "test ELBO"] == -90.0 and summary.loc["R*=0.25", "KL"] == 30.0
    assert summary.loc["R*=0.25", "pixel MSE"] == 0.05


def test_kl_cap_is_the_kl_of_equal_standard_deviations():
    assert report.kl_cap(2.0, 4) == pytest.approx(0.0)          # sigma = 1 in every dimension
    # sigma = 0.5 in every dimension: 4/2 (0.25 - log 0.25 - 1)
    assert report.kl_cap(1.0, 4) == pytest.approx(2 * (0.25 - math.log(0.25) - 1))
    # a cap above sigma = 1 forces nothing: sigma = 1 is allowed (the old formula, at sigma = 2,
    # charged 2 (4 - log 4 - 1) nats for noise the encoder need not have)
    assert report.kl_cap(4.0, 4) == 0.0


def test_fraction_at_cap_counts_inputs_within_a_thousandth_of_the_cap():
    m = FixedStd([1.0, 0.9995, 0.99, 0.5], {"s_max": 1.0})
    assert report.fraction_at_cap({"lip": m, "other": m}, ["lip"], torch.zeros(4)) == {"lip": 0.5}


# --- Lipschitz bounds, attacks inside the radius -----------------------------------------
def test_lipschitz_bounds_of_linear_maps_are_their_spectral_norms():
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    models = {"standard": None, "lin": Linear()}
    t = report.lipschitz_bounds(models, ["lin"], x, latent_dim=2, seed=0)
    assert list(t.columns) == ["a lower", "a upper", "b lower", "b upper", "c lower", "c upper"]
    assert list(t.index) == ["lin"]
    assert t.loc["lin", ["a lower", "b lower", "c lower"]].tolist() == pytest.approx([2.0, 3.0, 0.5], rel=1e-6)
    assert t.loc["lin", ["a upper", "b upper", "c upper"]].tolist() == [10.0, 20.0, 30.0]
    assert models["lin"].encoder.mean.weight.dtype == torch.float32  # probed on a copy


def test_next_class_targets_picks_the_first_image_of_the_next_class():
    x = torch.arange(11.0)[:, None]
    y = torch.tensor([3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 4])            # class 4 twice: the first counts
    assert report.next_class_targets(x, y)[:, 0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 2]


def test_inside_row_reports_the_worst_case_of_an_attack():
    vae = Identity()
    x = torch.zeros(3, 1, 1, 2)
    # moves of 3, 5 and 1: deterministic reconstructions move by as much (r = 4)
    x_adv = torch.tensor([[3.0, 0.0], [3.0, 4.0], [0.0, 1.0]]).view(3, 1, 1, 2)
    fail, row = report.inside_row(vae, x, x_adv, eps=5.0, r=4.0, prob=0.5, n_samples=8,
                                  generator=torch.Generator().manual_seed(0))
    assert fail.tolist() == [0.0, 1.0, 0.0]
    assert row["eps"] == 5.0 and row["max ||delta||"] == pytest.approx(5.0)
    assert row["max P(change > r)"] == 1.0 and row["broken (P >= 1-p)"] == pytest.approx(1 / 3)
    # Markov: a^2 E||z' - z||^2 / r^2 = 4 * 25 / 16 at the largest move
    assert row["max Markov bound"] == pytest.approx(4 * 25 / 16)
    assert row["certified bound"] == 0.5 and row["max damage / r"] == pytest.approx(5 / 4)


# --- certified vs empirical margins ------------------------------------------------------
class Portfolio:
    def __init__(self, margins, summary=None):
        self.margins, self._summary = margins, summary

    def summary(self):
        return self._summary


def test_margins_table_puts_measured_constants_only_in_the_last_column():
    inf = math.inf
    emp = {"standard": torch.tensor([1.0, 2.0, 3.0, inf], dtype=torch.float64),
           "lip": torch.tensor([4.0, inf, inf, 5.0], dtype=torch.float64)}
    ports = {"standard": Portfolio({"max-damage": torch.tensor([1.0, 2.0, 4.0, inf]),
                                    "L-BFGS-B": torch.tensor([2.0, 2.0, 3.0, inf])}),
             "lip": Portfolio({"max-damage": torch.tensor([4.0, inf, inf, 6.0]),
                               "L-BFGS-B": torch.tensor([6.0, inf, inf, 5.0])})}
    up = {"a": 4.0, "b": 2.0, "c": 0.5, "s_max": 0.2}
    models = {"standard": None, "lip": FixedStd([0.1, 0.2, 0.1, 0.1], up)}
    bounds = pd.DataFrame({"a lower": [2.0], "b lower": [1.0], "c lower": [0.01]}, index=["lip"])
    cert = {"lip": torch.tensor([0.3, 0.25, 0.3, 0.3])}
    t = report.margins_table(models, ports, emp, cert, bounds, torch.zeros(4), r=4.0, prob=0.5)
    assert t.loc["standard", "empirical median"] == 2.0            # torch's lower median
    assert t.loc["standard", "max-damage median"] == 2.0 and t.loc["lip", "L-BFGS-B median"] == 6.0
    assert t.loc["lip", "empirical min"] == 4.0 and t.loc["lip", "never broken"] == 0.5
    assert t.loc["standard", "never broken"] == 0.25
    assert np.isnan(t.loc["standard", "certified (paper)"])
    assert t.loc["lip", "certified (paper)"] == pytest.approx(0.25)
    s = torch.tensor([0.2])                                        # the noisiest input
    assert t.loc["lip", "certified (tight)"] == pytest.approx(
        certify.certified_margin(s, 4.0, 4.0, 2.0, 0.5, 0.5, "tight").item())
    assert t.loc["lip", "tight, measured constants"] == pytest.approx(
        certify.certified_margin(s, 4.0, 2.0, 1.0, 0.01, 0.5, "tight").item())
    assert t.loc["lip", "tight, measured constants"] > t.loc["lip", "certified (tight)"]


def test_attack_additions_stacks_the_portfolios_and_keeps_the_shown_columns():
    summ = pd.DataFrame({c: [1, 2] for c in report.ADDITION_COLUMNS + ["extra"]},
                        index=pd.Index(["max-damage", "L-BFGS-B"], name="attack"))
    adds = report.attack_additions({"standard": Portfolio({}, summ), "lip": Portfolio({}, summ * 10)})
    assert list(adds.columns) == report.ADDITION_COLUMNS
    assert adds.index.names == ["model", "attack"]
    assert adds.loc[("lip", "L-BFGS-B"), "lowered"] == 20
    assert int(adds.xs("L-BFGS-B", level="attack")["lowered"].sum()) == 22


# --- equal budget ------------------------------------------------------------------------
def test_reconstruction_spread_averages_distances_between_classes_only():
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    spread = report.reconstruction_spread({"m": Identity()}, x, y)
    assert spread["m"] == pytest.approx((3.0 + math.sqrt(10.0)) / 2)


def test_budget_table_damage_spread_bound_and_paired_intervals():
    models = {"standard": Identity(), "lip": Identity()}
    damage = {"standard": torch.tensor([2.0, 2.0, 2.0, 2.0]), "lip": torch.tensor([1.0, 1.0, 1.0, 3.0])}
    spread = {"standard": 2.0, "lip": 1.0}
    t, gaps = report.budget_table(models, damage, spread, eps=2.0, lip_names=["lip"], seed=0)
    assert t.loc["lip", "mean damage"] == 1.5 and t.loc["lip", "max damage"] == 3.0
    assert t.loc["standard", "mean damage / spread"] == 1.0 and t.loc["lip", "mean damage / spread"] == 1.5
    assert np.isnan(t.loc["standard", "bound a b eps"]) and t.loc["lip", "bound a b eps"] == 2.0 * 3.0 * 2.0
    assert gaps["lip"]["abs"][0] == pytest.approx(0.5) and gaps["lip"]["rel"][0] == pytest.approx(-0.5)
    lo, hi = gaps["lip"]["abs"][1:]
    assert -1.0 <= lo <= 0.5 <= hi <= 1.0                          # differences are 1, 1, 1, -1
    assert t.loc["lip", "standard minus this [95%]"] == interval(*gaps["lip"]["abs"])
    assert t.loc["lip", "same, / spread [95%]"] == interval(*gaps["lip"]["rel"])
    assert t.loc["standard", "standard minus this [95%]"] == DASH


def test_findings_gathers_the_quoted_numbers():
    names = ["R*=0.5", "R*=1"]
    cert = {"R*=0.5": torch.tensor([0.6, 0.5]), "R*=1": torch.tensor([1.2, 1.1])}
    inside = {("R*=0.5", "a"): torch.tensor([0.1, 0.0]), ("R*=1", "b"): torch.tensor([0.0, 0.3])}
    inside_df = pd.DataFrame({"max Markov bound": [0.2, 0.4]})
    summary = pd.DataFrame({"test ELBO": [-90.0, -120.0, -150.0], "pixel MSE": [0.01, 0.02, 0.03]},
                           index=["standard"] + names)
    margins_df = pd.DataFrame({"empirical median": [1.5, 4.0, 6.0], "tight, measured constants": [np.nan, 2.0, 3.0]},
                              index=["standard"] + names)
    budget_df = pd.DataFrame({"mean damage": [5.0, 2.0, 1.0], "mean damage / spread": [0.5, 0.4, 0.3]},
                             index=["standard"] + names)
    f = report.findings((0.5, 1.0), names, cert, inside, inside_df, summary, margins_df, budget_df)
    assert f["max_fail_inside"] == pytest.approx(0.3) and f["max_markov_inside"] == 0.4
    assert (f["req_1"], f["cert_0"], f["cert_1"]) == (1.0, 0.5, pytest.approx(1.1))
    assert (f["elbo_std"], f["elbo_1"], f["mse_0"]) == (-90.0, -150.0, 0.02)
    assert (f["emp_std"], f["emp_0"], f["meas_1"]) == (1.5, 4.0, 3.0)
    assert (f["dmg_std"], f["dmg_1"], f["rel_std"], f["rel_0"]) == (5.0, 1.0, 0.5, 0.4)
    assert f["ratio_0"] == pytest.approx(4.0 / 0.5)
    assert len(f) == 4 + 8 * 2 + 4


def test_noise_table_reads_each_certificate_backwards_and_the_kl_it_forces():
    from robustvae import certify
    r, a, prob, d = 4.0, 4.0, 0.5, 16
    designs = pd.DataFrame([{"requested R*": R, **certify.lipschitz_for_margin(R, r, a, prob)}
                            for R in (0.25, 1.0)]).set_index("requested R*")
    table = report.noise_table(designs, d, r, a, prob)
    g = table["noise per dimension"]
    # the chapter's design: s_max = r / (2 sqrt(8) a) over 16 dimensions
    assert g.iloc[0] == pytest.approx(r / (2 * math.sqrt(8) * a) / 4)
    assert table["forced KL (nats)"].iloc[0] == pytest.approx(41.9, abs=0.05)
    assert list(g.iloc[1:]) == sorted(g.iloc[1:])        # paper < tight < exact
    b = designs["b"].iloc[0]
    assert certify.certified_margin_fixed_std(g.iloc[-1], d, r, a, b, prob) == pytest.approx(0.25, rel=1e-6)
    assert table["||sigma||_2"].iloc[-1] == pytest.approx(4 * g.iloc[-1])
    n = report.noise_numbers(table)
    assert n["kl_chi2"] < n["kl_markov"] < n["kl_design"]
    assert n["chi2_over_design"] == pytest.approx(g.iloc[-1] / g.iloc[0])
    # designs that do not share b R* are not collapsed into one row
    designs.loc[1.0, "b"] *= 0.5
    with pytest.raises(ValueError, match="differs between designs"):
        report.noise_table(designs, d, r, a, prob)


# --- the paper-layers profile and the table beside Barrett et al. ---

def test_check_profile_accepts_the_off_state_and_names_each_bad_value():
    assert report.check_profile(None, (), (0.25, 0.5)) == ()
    assert report.check_profile(0.5, [2, 4], (0.25, 0.5)) == (2, 4)
    with pytest.raises(ValueError, match="bjorck_margin"):
        report.check_profile(0.3, (), (0.25, 0.5))   # not one of the chapter's designs
    with pytest.raises(ValueError, match="matched_latent_dims"):
        report.check_profile(None, (2, 0), (0.5,))
    with pytest.raises(ValueError, match="matched_latent_dims"):
        report.check_profile(None, 2, (0.5,))


def test_closest_in_mse_picks_the_nearest_reconstruction_error_either_side():
    mse = {"standard": 0.013, "d=2": 0.050, "d=3": 0.038, "d=4": 0.030}
    assert report.closest_in_mse(mse, 0.043) == "d=3"
    assert report.closest_in_mse(mse, 0.047) == "d=2"
    assert report.closest_in_mse(mse, 0.001) == "standard"
    with pytest.raises(ValueError):
        report.closest_in_mse({}, 0.1)


def test_pair_comparison_is_paired_and_signed_model_minus_reference():
    n = 40
    base = torch.linspace(-200, -100, n)
    metrics = {"a": {"elbo": base + 5.0, "mse": torch.full((n,), 0.02)},
               "b": {"elbo": base, "mse": torch.full((n,), 0.04)}}
    # the margins differ by exactly 1 on every input, on top of a large spread between inputs:
    # a paired interval is the single point 1, an unpaired one would be wide
    spread = torch.arange(n, dtype=torch.float64)
    emp = {"a": spread + 1.0, "b": spread}
    table, gaps = report.pair_comparison([("a", "b")], metrics, emp, seed=0)
    assert gaps[("a", "b")]["elbo"] == pytest.approx((5.0, 5.0, 5.0))
    assert gaps[("a", "b")]["margin"] == pytest.approx((1.0, 1.0, 1.0))
    row = table.loc[("a", "b")]
    assert row["pixel MSE"] == pytest.approx(0.02) and row["reference MSE"] == pytest.approx(0.04)
    assert row["empirical median"] == pytest.approx(spread.median().item() + 1)
    back, gaps2 = report.pair_comparison([("b", "a")], metrics, emp, seed=0)
    assert gaps2[("b", "a")]["elbo"][0] == pytest.approx(-5.0) and gaps2[("b", "a")]["margin"][2] < 0
    nums = report.pair_numbers(table, gaps, {"a": torch.tensor([0.7, 0.5])}, {"b": 0.04})
    assert nums["pl_n"] == 1 and nums["pl0_model"] == "a" and nums["pl0_ref"] == "b"
    assert nums["pl0_cert"] == pytest.approx(0.5) and nums["pl0_margin_lo"] == pytest.approx(1.0)
    assert nums["pl_standards"] == "b: 0.0400"
    assert math.isnan(report.pair_numbers(back, gaps2, {"a": torch.tensor([0.7])}, {})["pl0_cert"])


def test_per_image_metrics_are_the_per_image_form_of_vae_metrics():
    from robustvae.models import VAE
    from robustvae.training import vae_metrics

    torch.manual_seed(0)
    vae = VAE(latent_dim=3).eval()
    x = torch.rand(12, 1, 28, 28)
    torch.manual_seed(1)
    per = report.per_image_metrics(vae, x, batch_size=5)
    torch.manual_seed(1)
    mean = vae_metrics(vae, x, batch_size=5)
    assert per["elbo"].shape == (12,) and per["mse"].mean().item() == pytest.approx(mean["mse"], rel=1e-5)
    assert per["elbo"].mean().item() == pytest.approx(mean["elbo"], rel=1e-5)


def test_paper_table_sets_the_published_numbers_beside_medians_with_intervals():
    emp = {"standard": torch.full((20,), 1.5, dtype=torch.float64),
           "R*=0.5": torch.full((20,), 5.0, dtype=torch.float64)}
    models = {"R*=0.5": Linear()}

    class Config:
        dataset, likelihood = "mnist-5k", "bernoulli"

        def training_data(self):
            return torch.zeros(4000, 1, 28, 28), torch.zeros(4000)

    t, numbers = report.paper_table(models, emp, ["R*=0.5"], {"R*=0.5": 0.5}, Config())
    assert numbers == {"n_train": 4000}
    assert list(t.columns) == ["Barrett et al. 2022", "this book [95%]"]
    assert t.loc["empirical margin, standard VAE", "this book [95%]"] == "1.5 [1.5, 1.5]"
    k = models["R*=0.5"].lipschitz_constants()
    assert t.loc["empirical margin, Lipschitz VAE", "this book [95%]"] == \
        f"R*=0.5 (ab={k['a'] * k['b']:.1f}): 5.0 [5.0, 5.0]"
    assert t.loc["training images", "this book [95%]"] == "mnist-5k, 4,000"
    assert t.loc["decoder likelihood", "this book [95%]"] == "bernoulli"
    assert t.loc["empirical margin, standard VAE", "Barrett et al. 2022"] == report.PUBLISHED[
        "empirical margin, standard VAE"]


class _Claims:
    def __init__(self):
        self.rows = []

    def check(self, text, ok, numbers, kind, tuned=False):
        self.rows.append((text, bool(ok), kind))


def test_paper_layer_claims_fail_when_the_intervals_say_so_and_skip_an_off_profile():
    claims = _Claims()
    report.paper_layer_claims(claims, None, None, ["R*=0.5"])
    assert claims.rows == []
    gaps = {("Björck R*=0.5", "R*=0.5"): {"elbo": (50.0, 48.0, 52.0), "margin": (-2.5, -2.5, -2.5)},
            ("R*=0.5", "standard d=2"): {"elbo": (-40.0, -42.0, -38.0), "margin": (3.5, 3.5, 3.5)},
            ("R*=1", "standard d=2"): {"elbo": (-70.0, -72.0, -68.0), "margin": (0.5, 0.0, 1.0)}}
    result = report.PaperLayers(pd.DataFrame(), gaps, {}, {"Björck R*=0.5": torch.tensor([0.4999, 0.6])},
                                "Björck R*=0.5", "R*=0.5")
    report.paper_layer_claims(claims, result, 0.5, ["R*=0.5", "R*=1"])
    verdicts = {text.split(" ")[0] + text.split(" ")[3]: ok for text, ok, _ in claims.rows}
    assert [ok for _, ok, _ in claims.rows] == [False, True, False]   # 0.4999 < 0.5; ELBO above 0; R*=1's lower bound 0
    assert [k for _, _, k in claims.rows] == ["check", "finding", "finding"]
    assert len(verdicts) == 3

"""Chapter 9's tables, numbers and claims (robustvae.reports.scorecard) on a hand-made scorecard.

Six models with per-input numbers chosen so that every value, table cell and claim is known
by hand; no model, no data set. The purified pipelines are scored on ten images (each model's
pattern of five hits, twice), all of which the undefended classifier (``UNDEFENDED``) keeps.
"""

import numpy as np
import pytest
import torch

from robustvae import consistency as cons
from robustvae import scorecard as sc
from robustvae.claims import Claims
from robustvae.reports import scorecard as report
from robustvae.tables import DASH, NBSP

VAE, SMALL, TOP, TC, LIP_A, LIP_B = ("VAE (beta=1)", "VAE (beta=0.5)", "beta-VAE (beta=8)", "beta-TCVAE (beta=8)",
                                     "Lipschitz VAE (R*=1)", "Lipschitz VAE (R*=2)")
NAMES = [VAE, SMALL, TOP, TC, LIP_A, LIP_B]
LIPS = [LIP_A, LIP_B]
ROLES = {"vae": VAE, "small": SMALL, "top": TOP, "tc": TC, "lip0": LIP_A, "lipmax": LIP_B}
REQUESTED = {LIP_A: 1.0, LIP_B: 2.0}
# per model: elbo, mse, ood, detection, margin (all five inputs), purified white-box hits (of 5)
SPEC = {
    VAE: (-90.0, 0.010, 0.99, 0.90, 1.0, 1),
    SMALL: (-88.0, 0.009, 0.98, 0.92, 0.9, 2),
    TOP: (-120.0, 0.030, 0.97, 0.70, 2.0, 0),
    TC: (-110.0, 0.020, 0.96, 0.75, 2.5, 1),
    LIP_A: (-130.0, 0.022, 0.95, 0.60, 4.0, 0),
    LIP_B: (-140.0, 0.040, 0.94, 0.55, 6.0, 1),
}
CERTIFIED = {LIP_A: 1.0, LIP_B: 2.0}
# the per-image MSE around each model's mean, the same pattern for every model
MSE_NOISE = np.array([-0.0005, 0.0, 0.0005, 0.0, -0.0002, 0.0002])
UNDEFENDED = sc.Estimate(1.0, 1.0, 1.0, {"values": np.ones(10)})
RHOS = {"rho_trade": 0.8, "rho_trade_lo": 0.5, "rho_trade_hi": 0.9,
        "rho_witness": -0.9, "rho_witness_lo": -1.0, "rho_witness_hi": -0.6}


def est(value, lo=None, hi=None, **per_input):
    return sc.Estimate(value, value - 0.1 if lo is None else lo, value + 0.1 if hi is None else hi, per_input)


def make_rows(names=NAMES):
    rows = {}
    for n in names:
        elbo, mse, ood, det, margin, hits = SPEC[n]
        wb = np.tile([1.0] * hits + [0.0] * (5 - hits), 2)
        # the L-BFGS-B attack finds the margin on the first two inputs, max-damage on the rest
        md = np.array([margin + 1, margin + 1, margin, margin, margin])
        lb = np.array([margin, margin, margin + 2, margin + 2, np.inf])
        row = {
            "elbo": est(elbo, elbo - 2, elbo + 1),
            "mse": est(mse, mse - 0.001, mse + 0.001, values=mse + MSE_NOISE),
            "ood_auroc": sc.Estimate(ood, ood - 0.01, min(ood + 0.01, 1.0),
                                     {"auroc_by_score": {"-ELBO": ood - 0.1, "IWAE": ood}}, "IWAE"),
            "detection_auroc": est(det, det - 0.05, det + 0.05,
                                   single_label_clean=np.array([True, True, False, True])),
            "purified_acc": est(hits / 5, 0.0, 0.6, **{"values": wb, "white-box": wb, "BPDA": np.ones(10),
                                                        "clean": np.array([1.0, 1, 1, 0])}),
            "spearman": est(-0.3, -0.4, -0.2),
            "margin": est(margin, margin - 0.5, margin + 0.5, values=np.full(5, margin),
                          **{"max-damage": md, "L-BFGS-B": lb}),
            "certified": (est(CERTIFIED[n], values=np.full(5, CERTIFIED[n])) if n in CERTIFIED
                          else sc.Estimate.missing("no certificate")),
        }
        row["margin"].note = "max-damage: PGD, 20 steps, 1 restart; L-BFGS-B: L-BFGS-B, 5 iterations, 5 starts"
        rows[n] = row
    return rows


@pytest.fixture(scope="module")
def rows():
    return make_rows()


@pytest.fixture(scope="module")
def card(rows):
    return sc.table(rows)


PAIRS = {"top": (TOP, VAE), "lip_tc": (LIP_A, TC), LIP_A: (LIP_A, VAE), LIP_B: (LIP_B, VAE)}


def good_parameters(**change):
    p = dict(clf_epochs=1, vae_epochs=1, latent_dim=2, extra_epochs=1, lip_epochs=1, n_eval=10, n_ood=10,
             iwae_k=2, n_detect=10, detect_steps=1, n_samples=2, n_purify=5, purify_steps=1, n_margin=10,
             n_radii=3, margin_steps=1, lbfgs_starts=1, lbfgs_iter=1, lbfgs_stride=1, n_mc=2, n_boot=10,
             refine_steps=0, beta_small=0.5, tc_beta=8.0, decoder_lipschitz=4.0, lip_lr=1e-3, r=4.0,
             detect_eps=0.3, purify_eps=0.1, min_radius=0.25, max_radius=8.0, betas=(4.0,),
             lip_margins=(0.5, 1.0), likelihood="bernoulli", margin_attacks=("max-damage",), prob=0.5)
    p.update(change)
    return p


def test_check_parameters_accepts_the_book_and_names_each_bad_parameter():
    report.check_parameters(good_parameters())
    bad = {
        "n_eval": dict(n_eval=0),
        "refine_steps": dict(refine_steps=-1),
        "purify_eps": dict(purify_eps=-0.1),
        "betas": dict(betas=()),
        "lip_margins": dict(lip_margins=(1.0, -1.0)),
        "likelihood": dict(likelihood="poisson"),
        "margin_attacks": dict(margin_attacks=("max-damage", "nope")),
        "prob": dict(prob=1.0),
        "min_radius": dict(min_radius=8.0),
        "n_purify": dict(n_purify=11),
        "n_margin": dict(n_margin=9),
    }
    for name, change in bad.items():
        with pytest.raises(ValueError, match=name):
            report.check_parameters(good_parameters(**change))


def test_other_class_targets_picks_the_next_input_of_another_class():
    assert report.other_class_targets(torch.tensor([0, 0, 1, 2, 1])) == [2, 2, 3, 4, 0]
    assert report.other_class_targets([3, 3, 3, 7]) == [3, 3, 3, 0]


def test_scorecard_table_writes_intervals_and_stars_the_best(card):
    t = report.scorecard_table(card)
    assert list(t.index) == NAMES and t.index.name == "model"
    assert list(t.columns) == [report.SHORT[c] for c in sc.COLUMNS]
    # the best ELBO is SMALL's (-88.0), the best margin LIP_B's, the lowest MSE SMALL's
    assert t.loc[SMALL, "ELBO (nats)"] == f"-88.0{NBSP}★ [-90.0,{NBSP}-87.0]"
    assert t.loc[VAE, "ELBO (nats)"] == f"-90.0 [-92.0,{NBSP}-89.0]"
    assert t.loc[LIP_B, "emp. margin"].startswith(f"6.00{NBSP}★")
    assert t.loc[SMALL, "pixel MSE"].startswith(f"0.0090{NBSP}★")
    assert t.loc[VAE, "cert. margin"] == DASH
    # a given `best` and a subset of rows are respected
    sub = report.scorecard_table(card, best=sc.best_per_column(card.xs("value", axis=1, level="stat")),
                                 names=[TOP, VAE])
    assert list(sub.index) == [TOP, VAE] and "★" not in "".join(sub["ELBO (nats)"])


def test_details_table_and_its_display(rows):
    d = report.details_table(rows)
    assert list(d.index) == NAMES
    assert d.loc[VAE, "best OOD score"] == "IWAE"
    assert d.loc[VAE, "AUROC of -ELBO"] == pytest.approx(0.89)
    assert d.loc[TOP, "clean single-label share"] == pytest.approx(0.75)
    assert d.loc[TOP, "purified clean acc."] == pytest.approx(0.75)
    assert d.loc[SMALL, "purified acc., white-box only"] == pytest.approx(0.4)
    assert d.loc[SMALL, "purified acc., BPDA only"] == 1.0
    assert d.loc[VAE, "margin: inputs never broken"] == 0
    shown = report.details_display(d)
    assert list(shown.columns) == ["best OOD score", "AUROC -ELBO", "clean 1-label share", "purified, clean",
                                   "purified, white-box", "purified, BPDA", "never broken"]
    assert shown.loc[VAE, "AUROC -ELBO"] == "0.890" and shown.loc[TOP, "clean 1-label share"] == "0.75"
    assert shown.loc[VAE, "never broken"] == "0"


def test_attack_additions_counts_what_each_attack_adds(rows):
    adds = report.attack_additions({VAE: rows[VAE], TOP: rows[TOP]}, ["max-damage", "L-BFGS-B"])
    assert list(adds.index) == [(m, a) for m in (VAE, TOP) for a in ("max-damage", "L-BFGS-B")]
    assert list(adds.columns) == ["budget", "broken", "best", "lowered", "newly broken", "median drop"]
    md, lb = adds.loc[(VAE, "max-damage")], adds.loc[(VAE, "L-BFGS-B")]
    assert md["budget"] == "PGD, 20 steps, 1 restart"
    assert (md["broken"], md["best"], md["lowered"], md["newly broken"]) == ("5", "3", "3", "1")
    assert (lb["broken"], lb["best"], lb["lowered"], lb["median drop"]) == ("4", "2", "2", "1")


def test_trade_offs_are_spearman_over_models_without_infinite_margins(card):
    values = card.xs("value", axis=1, level="stat").copy()
    rho = report.trade_offs(values)
    # MSE ranks (SMALL, VAE, TC, LIP_A, TOP, LIP_B) vs margin ranks (SMALL, VAE, TOP, TC, LIP_A, LIP_B)
    assert rho["rho_trade"] == pytest.approx(1 - 6 * (0 + 0 + 2 ** 2 + 1 + 1 + 0) / (6 * 35))
    values.loc[SMALL, "margin"] = np.inf  # left out, not ranked first
    values.loc[SMALL, "detection_auroc"] = 0.0
    values.loc[TC, "detection_auroc"] = 0.65
    rho = report.trade_offs(values)
    # without SMALL, detection falls strictly as the margin rises
    assert rho["rho_witness"] == pytest.approx(-1.0)


def test_trade_off_intervals_match_the_point_values_and_resample_the_inputs(rows, card):
    values = card.xs("value", axis=1, level="stat")
    rows = {n: dict(r) for n, r in rows.items()}
    # detection scores whose AUROC (1 - k/12) falls as the margin rises: more clean scores tie the
    # attacked ones
    for k, n in enumerate([SMALL, VAE, TOP, TC, LIP_A, LIP_B]):
        rows[n]["detection_auroc"] = est(0.5, clean=np.r_[np.zeros(6 - k), np.ones(k)], adversarial=np.ones(4))
    rho = report.trade_off_intervals(rows, n_boot=50, seed=0)
    assert rho["rho_trade"] == pytest.approx(report.trade_offs(values)["rho_trade"])
    assert rho["rho_trade_lo"] <= rho["rho_trade"] <= rho["rho_trade_hi"]
    # margins are constant per model and MSE noise is shared: every resample ranks the models alike
    assert rho["rho_trade_lo"] == pytest.approx(rho["rho_trade"])
    assert rho["rho_witness"] == pytest.approx(-1.0) and rho["rho_witness_hi"] < 0


def test_trade_off_intervals_contain_0_when_the_ranking_is_noise():
    """Eight models whose margins are draws of one distribution: the point correlation with the
    MSE can be far from 0, but the interval over resampled inputs contains 0, so the claim fails."""
    rng = np.random.default_rng(3)
    rows = {f"m{k}": {"mse": est(0.0, values=0.01 * k + rng.normal(0, 0.001, 30)),
                      "margin": est(0.0, values=rng.exponential(1.0, 9)),
                      "detection_auroc": est(0.5, clean=rng.random(12), adversarial=rng.random(12))}
            for k in range(8)}
    rho = report.trade_off_intervals(rows, n_boot=200, seed=0)
    assert rho["rho_trade_lo"] <= 0 <= rho["rho_trade_hi"]
    assert rho["rho_witness_lo"] <= 0 <= rho["rho_witness_hi"]


def test_the_fast_auroc_is_the_consistency_chapter_s():
    rng = np.random.default_rng(0)
    neg, pos = rng.integers(0, 5, 40) / 4, rng.integers(1, 6, 30) / 4   # many ties
    assert report._auroc(neg, pos) == pytest.approx(cons.detection_auroc(neg, pos))


def test_purification_tests_pair_the_images():
    robust = np.array([1.0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    rows = {"a": {"purified_acc": est(0.2, values=robust)}}
    t = report.purification_tests(rows, UNDEFENDED)
    assert t.loc["a", "purified acc."] == pytest.approx(0.2)
    assert (t.loc["a", "lost"], t.loc["a", "gained"]) == (8, 0)
    assert t.loc["a", "McNemar p"] == pytest.approx(0.5 ** 8)
    # accuracies 1.0 against 0.6 on ten images: four discordant images are too few (p = 1/16)
    rows = {"b": {"purified_acc": est(0.6, values=np.r_[np.ones(6), np.zeros(4)])}}
    assert report.purification_tests(rows, UNDEFENDED).loc["b", "McNemar p"] == pytest.approx(1 / 16)
    # the same accuracies, other images: what counts is the pairing, not the two rates
    undef = sc.Estimate(0.6, 0.3, 0.9, {"values": np.r_[np.zeros(4), np.ones(6)]})
    rows = {"c": {"purified_acc": est(0.6, values=np.r_[np.ones(6), np.zeros(4)])}}
    assert tuple(report.purification_tests(rows, undef).loc["c", ["lost", "gained"]]) == (4, 4)
    shown = report.purification_display(report.purification_tests(rows, undef))
    assert list(shown.loc["c"]) == ["0.60", "4", "4", "0.64"]


def test_margin_pairs_compare_every_other_model_with_both_smallest():
    pairs = report.margin_pairs(NAMES, ROLES, LIPS)
    assert {k: pairs[k] for k in PAIRS} == PAIRS
    assert pairs[f"{TC} - {SMALL}"] == (TC, SMALL) and f"{SMALL} - {VAE}" not in pairs
    assert len(pairs) == len(PAIRS) + 2 * (len(NAMES) - 2)


def test_margin_differences_are_paired_median_differences(rows):
    d = report.margin_differences(rows, PAIRS, seed=0, n_boot=200)
    assert set(d) == set(PAIRS)
    assert d["top"] == pytest.approx((1.0, 1.0, 1.0))  # constant margins: no spread
    assert d["lip_tc"][0] == pytest.approx(1.5) and d[LIP_B][0] == pytest.approx(5.0)


def test_mse_difference_is_paired(rows):
    assert report.mse_difference(rows, LIP_A, TC) == pytest.approx((0.002, 0.002, 0.002))  # shared noise


def findings_on(rows):
    details = report.details_table(rows)
    diffs = report.margin_differences(rows, report.margin_pairs(NAMES, ROLES, LIPS), n_boot=100)
    return report.findings(rows, details, ROLES, LIPS, diffs, UNDEFENDED)


def test_findings_quotes_the_right_models_and_numbers(rows):
    out = findings_on(rows)
    assert out["elbo_vae"] == -90.0 and out["mse_top"] == 0.03 and out["margin_tc"] == 2.5
    assert out["margin_vae_lo"] == 0.5 and out["margin_top_hi"] == 2.5 and out["rho_vae_hi"] == -0.2
    assert out["pur_lipmax"] == pytest.approx(0.2) and out["pur_top"] == 0.0
    assert out["pur_clean_vae"] == pytest.approx(0.75) and out["single_top"] == pytest.approx(0.75)
    assert (out["ood_min"], out["ood_min_name"]) == (0.94, LIP_B)
    assert (out["det_min"], out["det_min_name"]) == (0.55, LIP_B)
    assert (out["pur_max"], out["pur_max_name"]) == (pytest.approx(0.4), SMALL)
    assert out["best_margin_name"] == LIP_B and out["best_mse_name"] == SMALL
    assert (out["lip_margin_min"], out["lip_margin_max"]) == (4.0, 6.0)
    assert (out["lip_mse_min"], out["lip_mse_max"], out["lip_elbo_max"]) == (0.022, 0.04, -130.0)
    assert (out["cert_ratio_min"], out["cert_ratio_max"]) == (3.0, 4.0)
    assert out["emp_over_cert"] == 3.0
    assert out["diff_top_lo"] == pytest.approx(1.0) and out["diff_lip_lo_min"] == pytest.approx(3.0)
    assert out["diff_lip_tc_hi"] == pytest.approx(1.5)
    # the smallest gap above the two easiest models: TOP (2.0) over VAE (1.0)
    assert out["diff_two_lo"] == pytest.approx(1.0) and out["n_two_pairs"] == 8
    assert out["ood_vae_lo"] == pytest.approx(0.98) and out["mse_lip_tc_hi"] == pytest.approx(0.002)
    # SMALL keeps 4 of 10 images, all kept by the undefended classifier: lost 6, p = 1/64
    assert (out["pur_p_max_name"], out["pur_lost"], out["pur_gained"]) == (SMALL, 6, 0)
    assert out["pur_p_max"] == pytest.approx(1 / 64) and out["pur_sig"] == 6
    assert all(isinstance(k, str) and k.isidentifier() for k in out)


def claims_on(rows, undefended=UNDEFENDED, rhos=None):
    claims = Claims("mnist-5k", strict=False)
    details = report.details_table(rows)
    diffs = report.margin_differences(rows, report.margin_pairs(NAMES, ROLES, LIPS), n_boot=100)
    return report.check_claims(claims, rows, details, ROLES, REQUESTED, diffs, undefended, rhos or RHOS)


def failing(claims) -> set[int]:
    """The 1-based numbers of the claims that fail."""
    return {i for i, c in enumerate(claims.claims, 1) if c.claimed and not c.holds}


# the claims' numbers after the 3 * 2 Lipschitz checks
TWO_SMALLEST, SIMILAR_MSE, OOD, PURIFIED, TRADE, WITNESS = 10, 11, 12, 15, 17, 18


def test_check_claims_all_hold_on_a_scorecard_built_to_pass(rows):
    claims = claims_on(rows)
    assert len(claims.claims) == 3 * len(LIPS) + 12
    assert claims.failed == []
    assert claims.counts("check") == (3 * len(LIPS) + 2, 0)
    texts = [c.text for c in claims.claims]
    assert texts[0] == f"{LIP_A}: meets its requested certificate"
    assert texts[TWO_SMALLEST - 1].startswith("every other model's median margin is above those of the VAEs")
    assert "(all 8 paired bootstrap 95% intervals" in texts[TWO_SMALLEST - 1]
    assert "McNemar" in texts[PURIFIED - 1] and "interval" in texts[OOD - 1]
    assert texts[-1].startswith("margin and detection AUROC trade off across the models")


def test_check_claims_fail_where_the_numbers_say_so():
    rows = make_rows()
    # no image the undefended classifier keeps: nothing to lose; intervals that reach 0
    claims = claims_on(rows, undefended=sc.Estimate(0.0, 0.0, 0.1, {"values": np.zeros(10)}),
                       rhos={**RHOS, "rho_trade_lo": -0.1, "rho_witness_hi": 0.05})
    assert failing(claims) == {PURIFIED, TRADE, WITNESS}
    # a certificate above the empirical margin on one input: an attack broke it below the certificate
    rows[LIP_A]["certified"].per_input["values"] = np.array([1.0, 1.0, 5.0, 1.0, 1.0])
    failing_texts = {c.text for c in claims_on(rows).failed}
    assert failing_texts == {f"{LIP_A}: no attack breaks r-robustness below the certificate"}
    # a certificate below the requested margin
    rows[LIP_B]["certified"].per_input["values"] = np.array([1.5, 2.0, 2.0, 2.0, 2.0])
    assert f"{LIP_B}: meets its requested certificate" in {c.text for c in claims_on(rows).failed}


def test_findings_on_points_fail_when_the_interval_or_test_does_not_support_them():
    """Each criterion fails where the point estimate still says yes but the interval or the test
    does not (an effect too small for the inputs)."""
    # the beta-TCVAE's median margin above the VAE's (by 0.1), but its inputs scatter around it
    rows = make_rows()
    rows[TC]["margin"].per_input["values"] = 1.0 + np.array([-0.5, 0.5, -0.3, 0.4, 0.1])
    assert TWO_SMALLEST in failing(claims_on(rows))
    # the point MSE difference within 0.005 (0.004), its interval not
    rows = make_rows()
    rows[LIP_A]["mse"].per_input["values"] = 0.024 + np.array([-0.003, 0.003, -0.002, 0.002, 0.0, 0.0])
    rows[TC]["mse"].per_input["values"] = np.full(6, 0.020)
    assert failing(claims_on(rows)) == {SIMILAR_MSE}
    # the best OOD AUROC 0.96 >= 0.95, but its interval starts at 0.93
    rows = make_rows()
    rows[VAE]["ood_auroc"] = sc.Estimate(0.96, 0.93, 0.98, {"auroc_by_score": {"-ELBO": 0.9, "IWAE": 0.96}}, "IWAE")
    assert failing(claims_on(rows)) == {OOD}
    # SMALL below the undefended classifier (0.6 against 1.0 on the same ten images), but its four
    # discordant images are too few for the test (p = 1/16); with eight (0.2) they are not
    for robust, fails in ((np.r_[np.ones(6), np.zeros(4)], True), (np.r_[np.ones(2), np.zeros(8)], False)):
        rows = make_rows()
        pur = rows[SMALL]["purified_acc"]
        pur.value, pur.per_input["values"], pur.per_input["white-box"] = robust.mean(), robust, robust
        assert failing(claims_on(rows)) == ({PURIFIED} if fails else set())

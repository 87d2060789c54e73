"""Tests of robustvae.reports.calibration: chapter 5's tables and numbers on tiny inputs whose
right answers are known by hand."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from robustvae import calibration as cal
from robustvae.reports import calibration as rep


def frame(conf, correct, mse, neg_elbo=None):
    conf = np.asarray(conf, float)
    return pd.DataFrame({"confidence": conf, "prediction": np.zeros(len(conf), int),
                         "correct": np.asarray(correct, float), "mse": np.asarray(mse, float),
                         "neg_elbo": np.asarray(mse if neg_elbo is None else neg_elbo, float)})


def test_summary_table_means_and_no_accuracy_for_foreign_items():
    scores = {"clean": frame([0.9, 0.7], [1, 0], [0.1, 0.3], [10, 20]),
              "foreign": frame([0.6, 0.8, 1.0], [0, 0, 0], [1, 2, 3])}
    t = rep.summary_table(scores)
    assert list(t.index) == ["clean", "foreign"]
    assert t.loc["clean", "images"] == 2 and t.loc["foreign", "images"] == 3
    assert t.loc["clean", "accuracy"] == 0.5 and math.isnan(t.loc["foreign", "accuracy"])
    assert t.loc["clean", "mean confidence"] == pytest.approx(0.8)
    assert t.loc["foreign", "mean recon. MSE"] == pytest.approx(2.0)
    assert t.loc["clean", "mean -ELBO (nats)"] == pytest.approx(15.0)


def test_seed_plot_top_lowest_and_pooled_bins():
    # 4 bins of width 0.25: one image in (0, .25], two in (.25, .5], five in (.75, 1]
    conf = [0.1, 0.3, 0.35, 0.9, 0.9, 0.95, 0.99, 1.0]
    mse = [0.5, 0.3, 0.1, 0.01, 0.02, 0.03, 0.04, 0.05]
    bins = cal.confidence_bins(conf, mse, n_bins=4)
    table, num = rep.seed_plot(bins, frame(conf, [1] * 8, mse), min_low_count=3)
    assert num["top_bin_n"] == 5 and num["top_bin_mse"] == pytest.approx(0.03)
    assert num["top_bin_frac"] == pytest.approx(5 / 8)
    assert num["low_bin_n"] == 1 and num["low_bin_mse"] == pytest.approx(0.5)
    # pooled until >= 3 images: the first two populated bins, confidence up to 0.5
    assert num["low_pool_n"] == 3 and num["low_pool_hi"] == 0.5
    assert num["low_pool_mse"] == pytest.approx(0.3)
    assert list(table["confidence"]) == ["(0.75, 1.00]", "(0.00, 0.25]", "(0.00, 0.50]"]
    assert list(table["images"]) == [5, 1, 3]
    assert table.index[2] == "lowest bins pooled (>= 3 images)"
    lo, hi = table.loc["lowest bins pooled (>= 3 images)", ["95% CI low", "95% CI high"]]
    assert lo < 0.3 < hi and math.isnan(table.loc["lowest populated bin", "95% CI low"])
    # the pooled bins' mean minus the top bin's, with each group's values resampled separately
    assert num["low_top_diff"] == pytest.approx(0.27)
    assert 0 < num["low_top_diff_lo"] <= 0.27 <= num["low_top_diff_hi"]


def test_seed_plot_difference_interval_contains_0_without_a_trend():
    """The claim "the top bin has a lower mean MSE than the pooled lowest bins" is judged on the
    interval's lower end: with a point difference above 0 but few, scattered images it fails."""
    rng = np.random.default_rng(0)
    conf = np.r_[np.full(4, 0.3), np.full(40, 0.9)]
    mse = np.r_[[0.01, 0.09, 0.02, 0.06], rng.uniform(0.0, 0.08, 40)]   # same spread in both groups
    bins = cal.confidence_bins(conf, mse, n_bins=4)
    _, num = rep.seed_plot(bins, frame(conf, np.ones(44), mse), min_low_count=3, n_boot=300)
    assert num["low_pool_n"] == 4 and num["top_bin_n"] == 40
    assert num["low_top_diff"] > 0 and num["low_top_diff_lo"] < 0 < num["low_top_diff_hi"]


def test_signal_table_rank_correlations_and_aurocs():
    # MSE falls exactly as confidence rises; the two errors have confidence 0.6 and 0.4
    s = frame([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 1, 1, 0, 1, 0], [1, 2, 3, 4, 5, 6])
    labels = {"clean": torch.tensor([0, 0, 0, 1, 1, 1]), "foreign": None}
    t = rep.signal_table({"clean": s, "foreign": s}, labels)
    assert t.loc["clean", "rho(MSE, conf.)"] == pytest.approx(-1.0)
    assert t.loc["clean", "rho(MSE, conf.) within class"] == pytest.approx(-1.0)
    # errors ranked above correct predictions in 7 of 8 pairs, by either score
    assert t.loc["clean", "AUROC errors: conf."] == pytest.approx(7 / 8)
    assert t.loc["clean", "AUROC errors: MSE"] == pytest.approx(7 / 8)
    assert t.loc["clean", "rho(MSE, correct)"] < 0
    assert t.loc["foreign", "rho(-ELBO, conf.)"] == pytest.approx(-1.0)
    assert math.isnan(t.loc["foreign", "AUROC errors: MSE"])
    num = rep.signal_numbers({"clean": s}, t.rename(index={"foreign": "rotated"}))
    assert num["rho_conf"] == pytest.approx(-1.0) and num["p_conf"] < 0.01
    assert num["auroc_conf"] == pytest.approx(7 / 8) and math.isnan(num["auroc_mse_rot"])


def sets_fixture():
    rng = np.random.default_rng(0)
    names = ("clean", "rotated", "noisy", "foreign")
    logits = {n: rng.normal(size=(6, 3)) * 3 for n in names}
    scores = {n: frame(np.full(6, 0.5), [1, 0] * 3, np.arange(1, 7) * (i + 1))
              for i, n in enumerate(names)}
    labels = {n: (None if n == "foreign" else torch.tensor([0, 1, 2, 0, 1, 2])) for n in names}
    return logits, scores, labels


def test_fitting_and_evaluation_sets_stack_halves_in_order():
    logits, scores, labels = sets_fixture()
    idx_cal, idx_eval = np.array([0, 2, 4]), np.array([1, 3, 5])
    fit = rep.calibration_sets(logits, scores, labels, idx_cal)
    assert len(fit["clean"]["y"]) == 3 and len(fit["clean + shifts"]["y"]) == 9
    np.testing.assert_array_equal(fit["clean + shifts"]["logits"][3:6], logits["rotated"][idx_cal])
    np.testing.assert_allclose(fit["clean + shifts"]["log_mse"][6:], np.log([3, 9, 15]))
    ev = rep.evaluation_sets(logits, scores, labels, idx_eval)
    np.testing.assert_array_equal(ev["clean"]["y"], [1, 0, 2])
    assert ev["foreign"]["y"] is None and len(ev["foreign"]["logits"]) == 6  # every foreign item
    np.testing.assert_allclose(ev["noisy"]["log_mse"], np.log([6, 12, 18]))


def softmax(lg):
    e = np.exp(lg - lg.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def maps_fixture():
    platt = cal.ConfidenceLogistic((0.0, 1.0), (), ())          # sigmoid(logit of conf) = conf
    platt_vae = cal.ConfidenceLogistic((0.0, 1.0, 0.0), (0.0,), (1.0,))
    return {s: {"none": None, "temperature": cal.TemperatureScaling(2.0),
                "VAE temperature": cal.ScoreTemperatureScaling(math.log(2.0) * k, 0.0, 0.0, 1.0),
                "Platt": platt, "Platt + VAE": platt_vae}
            for s, k in (("clean", 1), ("clean + shifts", 0))}


def test_recalibrated_probs_apply_each_map():
    logits, scores, labels = sets_fixture()
    ev = rep.evaluation_sets(logits, scores, labels, np.array([1, 3, 5]))
    probs = rep.recalibrated_probs(maps_fixture(), ev)
    assert ("clean", "none", "clean") in probs and ("clean + shifts", "none", "clean") not in probs
    assert len(probs) == 5 * 4 + 4 * 4
    lg = ev["rotated"]["logits"]
    np.testing.assert_allclose(probs[("clean", "none", "rotated")], softmax(lg))
    np.testing.assert_allclose(probs[("clean", "temperature", "rotated")], softmax(lg / 2))
    np.testing.assert_allclose(probs[("clean", "VAE temperature", "rotated")], softmax(lg / 2))
    np.testing.assert_allclose(probs[("clean + shifts", "VAE temperature", "rotated")], softmax(lg))
    # these Platt maps give back the softmax confidence unchanged
    np.testing.assert_allclose(probs[("clean", "Platt + VAE", "foreign")], softmax(ev["foreign"]["logits"]))


def test_fitted_table_and_numbers():
    fit_sets = {"clean": {"y": np.zeros(4)}, "clean + shifts": {"y": np.zeros(10)}}
    maps = maps_fixture()
    maps["clean + shifts"]["Platt + VAE"] = cal.ConfidenceLogistic((0.1, 0.2, -0.3), (0.0,), (1.0,))
    t = rep.fitted_table(maps, fit_sets)
    assert list(t.index) == ["clean", "clean + shifts"] and list(t["images"]) == [4, 10]
    assert t.loc["clean", "T"] == 2.0 and t.loc["clean", "VAE temp. a"] == pytest.approx(math.log(2))
    num = rep.fitted_numbers(t)
    assert num == {"T_clean": 2.0, "b_clean": 0.0, "w2_clean": 0.0,
                   "T_shift": 2.0, "b_shift": 0.0, "w2_shift": -0.3}


def test_conf_correct_and_ece_table():
    p = np.array([[0.8, 0.2], [0.6, 0.4]])
    conf, corr = rep.conf_correct(p, np.array([0, 1]))
    np.testing.assert_array_equal(conf, [0.8, 0.6])
    np.testing.assert_array_equal(corr, [1, 0])
    np.testing.assert_array_equal(rep.conf_correct(p, None)[1], [0, 0])
    ev = {"clean": {"y": np.array([0, 1])}, "foreign": {"y": None}}
    probs = {("clean", m, n): p for m in ("none", "temperature") for n in ev}
    t = rep.ece_table(probs, ev, n_bins=15)
    assert list(t.index) == [("-", "none"), ("clean", "temperature")]
    assert list(t.columns) == ["ECE clean", "foreign: mean conf."]
    # |1 - 0.8| / 2 + |0 - 0.6| / 2, and the foreign "ECE" is the mean confidence
    assert t.loc[("-", "none"), "ECE clean"] == pytest.approx(0.4)
    assert t.loc[("clean", "temperature"), "foreign: mean conf."] == pytest.approx(0.7)


def full_tables(n_boot=20):
    logits, scores, labels = sets_fixture()
    ev = rep.evaluation_sets(logits, scores, labels, np.array([1, 3, 5]))
    maps = maps_fixture()
    probs = rep.recalibrated_probs(maps, ev)
    ece = rep.ece_table(probs, ev)
    variants = rep.variants_table(probs, ev, methods=list(maps["clean"]))
    diffs = rep.ece_differences(probs, ev, n_boot=n_boot)
    return scores, probs, ev, ece, variants, diffs


def test_variants_and_ece_differences():
    scores, probs, ev, ece, variants, diffs = full_tables()
    assert list(variants.index)[:2] == [("clean", "none"), ("clean", "temperature")]
    assert variants.loc[("rotated", "none"), "ECE"] == pytest.approx(ece.loc[("-", "none"), "ECE rotated"])
    assert len(diffs) == len(rep.COMPARISONS) * 4
    # "VAE temperature" with T = 2 is temperature scaling with T = 2: difference exactly 0
    row = diffs.loc[("clean", "VAE temperature - temperature", "noisy")]
    assert tuple(row) == (0.0, 0.0, 0.0)
    row = diffs.loc[("clean", "temperature - none", "clean")]
    expected = ece.loc[("clean", "temperature"), "ECE clean"] - ece.loc[("-", "none"), "ECE clean"]
    assert row["ECE difference"] == pytest.approx(expected)
    assert row["95% CI low"] <= row["95% CI high"]
    # "none" always comes from the maps fitted on clean data
    shifted = diffs.loc[("clean + shifts", "Platt + VAE - Platt", "clean")]
    assert shifted["ECE difference"] == pytest.approx(0.0)
    text = rep.fmt_differences(diffs.iloc[:1].assign(**{"ECE difference": -0.0041, "95% CI low": -0.01,
                                                          "95% CI high": 0.002}))
    assert list(text.columns) == ["ECE difference [95% CI]"]
    assert text.iloc[0, 0].startswith("-0.004 [") and "0.002]" in text.iloc[0, 0]


def test_calibration_numbers_and_verdicts():
    scores, probs, ev, ece, variants, diffs = full_tables()
    num = rep.calibration_numbers(ece, variants, diffs, scores["clean"], np.array([1, 3, 5]))
    assert num["n_eval"] == 3 and num["n_eval_errors"] == 3  # rows 1, 3, 5 are all wrong
    assert num["ece_ts_rot"] == ece.loc[("clean", "temperature"), "ECE rotated"]
    assert num["aece_ts"] == variants.loc[("clean", "temperature"), "adaptive ECE"]
    assert num["d_vts_noisy_shift_hi"] == diffs.loc[
        ("clean + shifts", "VAE temperature - temperature", "noisy"), "95% CI high"]
    assert len([k for k in num if k.startswith("d_")]) == 24
    assert num["vae_clean_verdict"].startswith("both contain 0")
    d = diffs.copy()
    d.loc[("clean", "VAE temperature - temperature", "clean"), ["95% CI low", "95% CI high"]] = [-0.2, -0.1]
    d.loc[("clean", "Platt + VAE - temperature", "clean"), ["95% CI low", "95% CI high"]] = [0.1, 0.2]
    d.loc[("clean", "temperature - none", "clean"), ["95% CI low", "95% CI high"]] = [0.01, 0.2]
    num = rep.calibration_numbers(ece, variants, d, scores["clean"], np.array([1, 3, 5]))
    assert num["vae_clean_verdict"] == ("VAE temperature is measurably better (interval below 0); "
                                        "Platt + VAE is measurably worse (interval above 0)")
    assert num["ts_clean_verdict"] == "excludes 0"
    assert set(rep.vae_vs_temperature(d)) == {"VAE temperature", "Platt + VAE"}
    assert rep.vae_vs_temperature(d)["VAE temperature"]["95% CI high"] == -0.1


def test_selection_scores_pool_and_aurcs():
    lg = np.array([[3.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    scores = {"clean": frame([0.95, 0.73, 0.88], [1, 0, 1], [0.1, 0.2, 0.3], [5, 6, 7]),
              "foreign": frame([0.95, 0.73, 0.88], [0, 0, 0], [0.5, 0.6, 0.7])}
    combo = cal.ConfidenceLogistic((0.0, 1.0, 0.0), (0.0,), (1.0,))
    parts = rep.selection_scores(scores, {"clean": lg, "foreign": lg}, np.array([0, 1]), combo)
    assert list(parts) == ["clean", "foreign", "pool"]
    sc, correct = parts["clean"]
    np.testing.assert_array_equal(correct, [1, 0])          # the evaluation rows only
    np.testing.assert_allclose(sc["low recon. MSE"], [-0.1, -0.2])
    np.testing.assert_allclose(sc["confidence + VAE (fitted)"], softmax(lg[:2]).max(1))
    assert len(parts["foreign"][1]) == 3                     # every foreign item
    pool_sc, pool_correct = parts["pool"]
    np.testing.assert_array_equal(pool_correct, [1, 0, 0, 0, 0])
    np.testing.assert_allclose(pool_sc["high ELBO"][:2], [-5, -6])
    aurcs = rep.aurc_table(parts)
    assert list(aurcs.columns) == ["clean", "pool"]
    # clean: the oracle accepts the correct one first: risks 0, 1/2
    assert aurcs.loc["oracle", "clean"] == pytest.approx(0.25)
    # pool, by low MSE: correct first, then 4 errors: risks 0, 1/2, 2/3, 3/4, 4/5
    assert aurcs.loc["low recon. MSE", "pool"] == pytest.approx((0 + 1 / 2 + 2 / 3 + 3 / 4 + 4 / 5) / 5)
    aurcs.loc[:, "rotated"] = aurcs["clean"]
    num = rep.aurc_numbers(aurcs)
    assert num["aurc_mse_pool"] == aurcs.loc["low recon. MSE", "pool"]
    assert num["aurc_conf_rot"] == aurcs.loc["confidence", "clean"] and len(num) == 7


def test_aurc_difference_is_paired_and_contains_0_when_the_rankings_tie():
    """The selective-prediction claim is judged on the paired interval of the AURC difference: it
    lies above 0 where confidence ranks the errors clearly better, and contains 0 where the two
    rankings differ by chance."""
    rng = np.random.default_rng(1)
    correct = (rng.random(300) < 0.7).astype(float)
    good = correct + rng.normal(0, 0.3, 300)              # ranks most errors last
    noise_a, noise_b = rng.normal(size=300), rng.normal(size=300)
    parts = {"pool": ({"confidence": good, "low recon. MSE": noise_a, "other": noise_b}, correct)}
    d = rep.aurc_difference(parts, "low recon. MSE", "confidence", n_boot=200)
    assert d["aurc_diff"] == pytest.approx(cal.aurc(noise_a, correct) - cal.aurc(good, correct))
    assert d["aurc_diff_lo"] > 0
    d = rep.aurc_difference(parts, "low recon. MSE", "other", n_boot=200)
    assert d["aurc_diff_lo"] < 0 < d["aurc_diff_hi"]

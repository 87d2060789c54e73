import math

import numpy as np
import pytest
import torch

from robustvae import calibration as cal


# --- binning ---------------------------------------------------------------------------
def test_bin_indices_follow_guo_convention():
    # bins ((m-1)/M, m/M]: right edges belong to the lower bin, 0 goes to the first bin
    conf = np.array([0.0, 0.1, 0.2, 0.2000001, 0.6, 0.61, 1.0])
    assert cal.bin_indices(conf, 5).tolist() == [0, 0, 0, 1, 2, 3, 4]
    assert cal.bin_indices([0.5, 0.5000001], 2).tolist() == [0, 1]
    with pytest.raises(ValueError, match="n_bins"):
        cal.bin_indices(conf, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cal.bin_indices([1.5], 3)


def test_confidence_bins_by_hand():
    t = cal.confidence_bins([0.1, 0.15, 0.9], [1.0, 3.0, 5.0], n_bins=2)
    assert t["count"].tolist() == [2, 1]
    assert t["mean"].tolist() == [2.0, 5.0]
    # t interval, n = 2: 2 +- t_{0.975, 1} * sqrt(2) / sqrt(2) = 2 +- 12.706
    assert t.loc[0, "ci_low"] == pytest.approx(2 - 12.7062, abs=1e-3)
    assert t.loc[0, "ci_high"] == pytest.approx(2 + 12.7062, abs=1e-3)
    assert math.isnan(t.loc[1, "ci_low"]) and math.isnan(t.loc[1, "ci_high"])
    empty = cal.confidence_bins([0.9], [1.0], n_bins=4)
    assert empty["count"].tolist() == [0, 0, 0, 1] and empty["mean"].isna().sum() == 3


def test_mean_ci_methods():
    v = np.random.default_rng(0).normal(1.0, 1.0, 400)
    m, lo, hi = cal.mean_ci(v, method="t")
    mb, lob, hib = cal.mean_ci(v, method="bootstrap", n_boot=2000)
    assert m == mb and lo < m < hi and lob < m < hib
    assert (hi - lo) == pytest.approx(hib - lob, rel=0.2)  # both ~ 2 * 1.96 / sqrt(400)
    assert (hi - lo) == pytest.approx(2 * 1.966 * v.std(ddof=1) / 20, rel=1e-3)
    with pytest.raises(ValueError, match="Valid methods"):
        cal.mean_ci(v, method="normal")


# --- calibration errors ------------------------------------------------------------------
CONF = np.array([0.1, 0.3, 0.35, 0.9, 0.95])
CORRECT = np.array([0, 1, 0, 1, 1])


def test_ece_and_mce_by_hand():
    # bin (0, .5]: conf .25, acc 1/3, gap 1/12; bin (.5, 1]: conf .925, acc 1, gap .075
    assert cal.ece(CONF, CORRECT, n_bins=2) == pytest.approx(3 / 5 / 12 + 2 / 5 * 0.075)
    assert cal.ece(CONF, CORRECT, n_bins=2) == pytest.approx(0.08)
    assert cal.mce(CONF, CORRECT, n_bins=2) == pytest.approx(1 / 12)
    t = cal.reliability_table(CONF, CORRECT, n_bins=2)
    assert t["count"].tolist() == [3, 2]
    assert t["accuracy"].tolist() == pytest.approx([1 / 3, 1.0])


def test_ece_zero_when_accuracy_matches_confidence():
    conf = np.array([0.75] * 4 + [0.25] * 4)
    correct = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    assert cal.ece(conf, correct, n_bins=15) == pytest.approx(0.0)
    assert cal.ece(np.ones(3), np.zeros(3)) == pytest.approx(1.0)


def test_adaptive_ece_uses_equal_mass_bins():
    conf, correct = np.array([0.6, 0.7, 0.8, 0.9]), np.array([1, 0, 1, 1])
    assert cal.ece(conf, correct, n_bins=2) == pytest.approx(0.0)           # one bin, .75 vs .75
    assert cal.adaptive_ece(conf, correct, n_bins=2) == pytest.approx(0.15)  # |.5-.65|, |1-.85|


def test_classwise_ece_by_hand():
    probs = np.array([[0.8, 0.2], [0.4, 0.6]])
    # class 0: p = (.8, .4), y = (1, 1): gaps .2 and .6; class 1: p = (.2, .6), y = (0, 0): .2 and .6
    assert cal.classwise_ece(probs, [0, 0], n_bins=2) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="probability vector"):
        cal.classwise_ece(np.array([[2.0, -1.0]]), [0])


def test_debiased_l2_ce_by_hand():
    # one bin, acc .25, conf .9: plug-in .65^2 = .4225, minus .25 * .75 / 3 = .0625 -> sqrt(.36)
    assert cal.debiased_l2_ce([0.9] * 4, [1, 0, 0, 0], n_bins=1) == pytest.approx(0.6)
    # calibrated within noise: the estimate of the squared error is negative and clipped to 0
    assert cal.debiased_l2_ce([0.5] * 4, [1, 1, 0, 0], n_bins=1) == 0.0


def test_debiased_estimate_is_smaller_on_calibrated_data():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 300)
    correct = (rng.uniform(size=300) < conf).astype(float)
    t = cal.reliability_table(conf, correct, 15)
    t = t[t["count"] > 0]
    plugin = math.sqrt((t["count"] * t["gap"] ** 2).sum() / t["count"].sum())
    assert cal.debiased_l2_ce(conf, correct) < plugin


def test_calibration_report_and_input_checks():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    r = cal.calibration_report(probs, [0, 1, 1], n_bins=10)
    assert r["accuracy"] == pytest.approx(2 / 3)
    assert r["NLL"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3)
    assert r["Brier"] == pytest.approx((0.02 + 0.08 + 0.72) / 3)
    with pytest.raises(ValueError, match="not logits"):
        cal.ece([3.2, -1.0], [1, 0])
    with pytest.raises(ValueError, match="0/1"):
        cal.ece([0.2, 0.3], [2, 0])
    with pytest.raises(ValueError, match="same length"):
        cal.ece([0.2, 0.3], [1])


# --- recalibration ------------------------------------------------------------------------
def _synthetic(n=10000, k=10, temperature=2.0, seed=0):
    """Logits z whose labels are drawn from softmax(z / temperature): the true T is known."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    y = torch.multinomial((z / temperature).softmax(1), 1, generator=g).squeeze(1)
    return z, y


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_temperature_scaling_recovers_a_known_temperature(true_t):
    z, y = _synthetic(temperature=true_t)
    ts = cal.fit_temperature(z, y)
    assert ts.temperature == pytest.approx(true_t, rel=0.05)
    probs = ts.probs(z)
    assert np.allclose(probs.sum(1), 1) and (probs.argmax(1) == z.argmax(1).numpy()).all()
    raw = cal.ece(*_conf_correct(z.softmax(1).numpy(), y))
    fitted = cal.ece(*_conf_correct(probs, y))
    assert fitted < raw


def _conf_correct(probs, y):
    return probs.max(1), (probs.argmax(1) == np.asarray(y)).astype(float)


def test_score_temperature_recovers_a_score_dependent_temperature():
    g = torch.Generator().manual_seed(1)
    n = 20000
    z = torch.randn(n, 10, generator=g, dtype=torch.float64) * 3
    score = torch.randn(n, generator=g, dtype=torch.float64)
    t_true = (0.3 + 0.6 * (score - score.mean()) / score.std(unbiased=False)).exp()
    y = torch.multinomial((z / t_true[:, None]).softmax(1), 1, generator=g).squeeze(1)
    m = cal.fit_score_temperature(z, y, score)
    assert m.a == pytest.approx(0.3, abs=0.05) and m.b == pytest.approx(0.6, abs=0.05)
    assert m.temperature(score).shape == (n,)
    # with an uninformative score it reduces to temperature scaling
    z2, y2 = _synthetic(temperature=2.0)
    noise = torch.randn(len(y2), generator=g, dtype=torch.float64)
    m2 = cal.fit_score_temperature(z2, y2, noise)
    assert abs(m2.b) < 0.05 and math.exp(m2.a) == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError, match="constant"):
        cal.fit_score_temperature(z2, y2, np.ones(len(y2)))


def test_confidence_logistic_learns_the_extra_score():
    g = torch.Generator().manual_seed(2)
    n, k = 20000, 10
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * 2
    s = torch.randn(n, generator=g, dtype=torch.float64)
    u = torch.as_tensor(cal.confidence_logit(z))
    p_correct = torch.sigmoid(-1.0 + 0.5 * u + 1.5 * (s - s.mean()) / s.std(unbiased=False))
    correct = torch.rand(n, generator=g, dtype=torch.float64) < p_correct
    pred = z.argmax(1)
    y = torch.where(correct, pred, (pred + 1) % k)
    m = cal.fit_confidence_logistic(z, y, [s.numpy()], l2=0.0)
    assert m.weights == pytest.approx((-1.0, 0.5, 1.5), abs=0.1)
    c = m.confidence(z, [s.numpy()])
    assert c.min() > 0 and c.max() < 1
    probs = m.probs(z, [s.numpy()])
    assert np.allclose(probs.sum(1), 1) and np.allclose(probs.max(1), np.maximum(c, probs.max(1)))
    with pytest.raises(ValueError, match="extra score"):
        m.confidence(z)


def test_replace_top_label_and_confidence_logit():
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    q = cal.replace_top_label(p, np.array([0.9, 0.5]))
    assert q == pytest.approx(np.array([[0.9, 0.06, 0.04], [0.25, 0.25, 0.5]]))
    lg = np.array([[2.0, 0.0, -1.0], [100.0, 0.0, 0.0]])
    pm = torch.as_tensor(lg).softmax(1).max(1).values.numpy()
    u = cal.confidence_logit(lg)
    assert u[0] == pytest.approx(math.log(pm[0] / (1 - pm[0])))
    assert u[1] == pytest.approx(100 - math.log(2))  # finite where p_max rounds to 1.0


# --- selective prediction ------------------------------------------------------------------
def test_risk_coverage_and_aurc_by_hand():
    cov, risk = cal.risk_coverage([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 1])
    assert cov.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk == pytest.approx([0.0, 0.5, 1 / 3, 0.25])
    assert cal.aurc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 1]) == pytest.approx((0.5 + 1 / 3 + 0.25) / 4)
    # ties are averaged, so the order of tied inputs does not matter
    _, r = cal.risk_coverage([1.0, 1.0, 0.0], [1, 0, 1])
    assert r == pytest.approx([0.5, 0.5, 1 / 3])
    _, r2 = cal.risk_coverage([1.0, 1.0, 0.0], [0, 1, 1])
    assert r2 == pytest.approx(r)
    _, flat = cal.risk_coverage(np.zeros(8), [1, 1, 0, 1, 1, 0, 1, 1])
    assert flat == pytest.approx(np.full(8, 0.25))
    with pytest.raises(ValueError, match="NaN"):
        cal.aurc([np.nan, 1.0], [1, 0])


# --- splits, shifts, statistics ------------------------------------------------------------
def test_stratified_halves():
    y = np.repeat(np.arange(3), [4, 5, 6])
    a, b = cal.stratified_halves(y, seed=0)
    assert len(np.intersect1d(a, b)) == 0 and sorted(np.r_[a, b]) == list(range(len(y)))
    assert np.bincount(y[a]).tolist() == [2, 3, 3] and np.bincount(y[b]).tolist() == [2, 2, 3]
    a2, _ = cal.stratified_halves(y, seed=0)
    assert (a == a2).all()


def test_rotate_and_noise():
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(cal.rotate(x, 0.0), x, atol=1e-5)
    # +90 degrees turns the picture counter-clockwise, like torch.rot90(k=1)
    assert torch.allclose(cal.rotate(x, 90.0), torch.rot90(x, 1, (2, 3)), atol=1e-5)
    per_image = cal.rotate(x, torch.tensor([0.0, 90.0, -90.0]))
    assert torch.allclose(per_image[2], torch.rot90(x[2], -1, (1, 2)), atol=1e-5)
    xn = cal.add_gaussian_noise(x, 0.3, torch.Generator().manual_seed(0))
    assert xn.min() >= 0 and xn.max() <= 1 and not torch.equal(xn, x)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(xn, (x + 0.3 * noise).clamp(0.0, 1.0))
    assert torch.equal(cal.add_gaussian_noise(x, 0.0), x)
    assert cal.gaussian_noise is cal.add_gaussian_noise  # the chapters' name
    with pytest.raises(ValueError):
        cal.add_gaussian_noise(x, -1.0)


def test_spearman_and_bootstrap():
    a = np.arange(10.0)
    assert cal.spearman(a, a ** 3)[0] == pytest.approx(1.0)
    assert cal.spearman(a, -a)[0] == pytest.approx(-1.0)
    est, lo, hi = cal.bootstrap_ci(lambda c, k: cal.ece(c, k, n_bins=2), CONF, CORRECT, n_boot=200)
    assert est == pytest.approx(0.08) and lo <= est <= hi
    # a statistic that can be infinite (a margin never broken) keeps finite, ordered bounds, no NaN
    est, lo, hi = cal.bootstrap_ci(np.median, np.array([1.0, 2.0, 3.0, np.inf, np.inf]), n_boot=200)
    assert est == 3.0 and 1.0 <= lo <= 3.0 and hi == np.inf and not np.isnan([lo, hi]).any()


def test_score_inputs_on_tiny_models(tiny_images):
    from robustvae.models import VAE, Classifier

    torch.manual_seed(0)
    clf, vae = Classifier().eval(), VAE(latent_dim=4).eval()
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    logits, df = cal.score_inputs(clf, vae, tiny_images, y)
    assert logits.shape == (6, 10) and list(df.columns) == ["confidence", "prediction", "correct", "mse", "neg_elbo"]
    assert np.allclose(df["confidence"], torch.as_tensor(logits).softmax(1).max(1).values.numpy())
    assert (df["correct"] == (df["prediction"] == y.numpy())).all()
    with torch.no_grad():
        mse = (vae.reconstruct(tiny_images, sample=False) - tiny_images).pow(2).mean((1, 2, 3))
    assert np.allclose(df["mse"], mse.numpy(), rtol=1e-5) and (df["neg_elbo"] > 0).all()
    _, df_ood = cal.score_inputs(clf, vae, tiny_images)
    assert (df_ood["correct"] == 0).all()


# --- tests added for the mutation run of session 35 (tests/MUTANTS.md) ------------------
def test_mean_ci_bootstrap_is_the_percentile_bootstrap_of_the_mean_with_its_defaults():
    """``mean_ci(method="bootstrap")`` is the percentile bootstrap of the mean: the same interval as the
    general :func:`robustvae.stats.bootstrap_ci` (one loop over the draws, ``fn`` called per resample) at
    the same defaults (1000 resamples, seed 0), and at other settings. Continuous data, so that another
    number of resamples or another seed moves the ends."""
    from robustvae import stats as rstats

    v = np.random.default_rng(5).exponential(1.0, 60)
    assert cal.mean_ci(v, method="bootstrap") == pytest.approx(rstats.bootstrap_ci(np.mean, v), rel=1e-12)
    assert cal.mean_ci(v, 0.8, "bootstrap", n_boot=300, seed=7) == pytest.approx(
        rstats.bootstrap_ci(np.mean, v, n_boot=300, level=0.8, seed=7), rel=1e-12)
    assert cal.mean_ci(v, method="bootstrap") != cal.mean_ci(v, method="bootstrap", n_boot=1001)
    assert cal.mean_ci(v, method="bootstrap") != cal.mean_ci(v, method="bootstrap", seed=1)


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.1])
def test_mean_ci_refuses_a_level_outside_zero_one(level):
    """A level of 1 would be an unbounded interval, 0 an empty one: both ends are refused."""
    with pytest.raises(ValueError, match="level"):
        cal.mean_ci([1.0, 2.0, 3.0], level)


def _binned_by_hand(conf, corr, n_bins):
    """Per non-empty bin ``((m-1)/M, m/M]`` (0 in the first): count, accuracy, mean confidence, one bin at a time."""
    out = []
    for m in range(1, n_bins + 1):
        lo, hi = (m - 1) / n_bins, m / n_bins
        idx = [i for i, c in enumerate(conf) if lo < c <= hi or (m == 1 and c == 0.0)]
        if idx:
            out.append((len(idx), np.mean([corr[i] for i in idx]), np.mean([conf[i] for i in idx])))
    return out


def test_binned_errors_default_to_the_15_bins_of_guo_et_al():
    """ECE, MCE and the debiased l2 error default to 15 equal-width bins (Guo et al., ICML 2017), computed
    here one bin at a time; 16 bins give other values on these data."""
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.3, 1.0, 200)
    corr = (rng.uniform(size=200) < 0.65).astype(float)  # over- and underconfident bins: the binning matters
    bins = _binned_by_hand(conf, corr, 15)
    ece15 = sum(n * abs(a - c) for n, a, c in bins) / 200
    mce15 = max(abs(a - c) for n, a, c in bins)
    l2 = sum(n * ((a - c) ** 2 - (a * (1 - a) / (n - 1) if n > 1 else 0.0)) for n, a, c in bins) / 200
    assert cal.ece(conf, corr) == pytest.approx(ece15, rel=1e-12)
    assert cal.mce(conf, corr) == pytest.approx(mce15, rel=1e-12)
    assert cal.debiased_l2_ce(conf, corr) == pytest.approx(math.sqrt(l2), rel=1e-12)
    assert cal.ece(conf, corr, 16) != pytest.approx(ece15, rel=1e-6)
    assert cal.mce(conf, corr, 16) != pytest.approx(mce15, rel=1e-6)
    assert cal.debiased_l2_ce(conf, corr, 16) != pytest.approx(math.sqrt(l2), rel=1e-6)


def test_debiased_l2_ce_is_unbiased_for_the_squared_error_in_expectation():
    """Kumar et al. (2019): the squared estimate is unbiased for ``sum_m |B_m|/n (acc*_m - conf_m)^2`` (acc*
    the bin's true accuracy), because ``acc (1 - acc) / (|B| - 1)`` is unbiased for the binomial variance of
    ``acc``. Checked exactly by summing over all 2^5 outcomes: two examples at confidence 0 and three at
    confidence 1, correct with probabilities 0.3 and 0.6 (at confidences 0 and 1 every outcome's estimate is
    >= 0, so the returned root squared is the estimate itself). Bins of two are where the ``|B| - 1`` matters."""
    import itertools

    conf = np.array([0.0, 0.0, 1.0, 1.0, 1.0])
    q = np.array([0.3, 0.3, 0.6, 0.6, 0.6])
    expected = (2 * (0.3 - 0.0) ** 2 + 3 * (0.6 - 1.0) ** 2) / 5
    mean = 0.0
    for outcome in itertools.product([0.0, 1.0], repeat=5):
        y = np.array(outcome)
        weight = np.prod(np.where(y == 1, q, 1 - q))
        mean += weight * cal.debiased_l2_ce(conf, y, n_bins=15) ** 2
    assert mean == pytest.approx(expected, rel=1e-12)
    # a bin of one example gets no correction: its estimate is the plug-in squared gap
    assert cal.debiased_l2_ce([0.9], [0], n_bins=1) == pytest.approx(0.9)
    assert cal.debiased_l2_ce([0.1, 0.9], [1, 1], n_bins=2) == pytest.approx(math.sqrt((0.81 + 0.01) / 2))

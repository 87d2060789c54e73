"""Property tests (Hypothesis) for invariants of the science code that must hold for every input:
projections stay in the ball and the box, calibration errors vanish on perfectly calibrated
predictors and match a brute-force computation, bootstrap intervals contain their estimate.
(The certificate's property, certified <= exact on a linear-Gaussian VAE, is in test_certify.py.)"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from robustvae import attacks, calibration
from robustvae import scorecard as sc

SETTINGS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
unit = st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False)


def _images(draw, n, size):
    vals = draw(arrays(np.float32, (n, size), elements=st.floats(-3.0, 3.0, width=32)))
    return torch.from_numpy(vals)


@SETTINGS
@given(data=st.data(), n=st.integers(1, 4), size=st.integers(1, 30), norm=st.sampled_from(attacks.NORMS),
       eps=st.floats(0.0, 5.0))
def test_projection_lands_in_the_ball_and_the_box_and_is_idempotent(data, n, size, norm, eps):
    x = _images(data.draw, n, size).clamp(0, 1).view(n, 1, 1, size)
    x_adv = _images(data.draw, n, size).view(n, 1, 1, size)
    p = attacks.project(x_adv, x, eps, norm)
    assert p.min() >= 0 and p.max() <= 1
    assert (attacks.perturbation_norm(p, x, norm) <= eps * (1 + 1e-5) + 1e-6).all()
    assert torch.allclose(attacks.project(p, x, eps, norm), p, atol=1e-5)
    # a point already inside both is left where it is
    inside = attacks.project((x + 0.5 * (p - x)), x, eps, norm)
    assert torch.allclose(inside, x + 0.5 * (p - x), atol=1e-5)


@SETTINGS
@given(data=st.data(), n=st.integers(1, 4), norm=st.sampled_from(attacks.NORMS), eps=st.floats(0.0, 3.0))
def test_pgd_and_fgsm_stay_in_the_ball_and_the_box(data, n, norm, eps):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = _images(data.draw, n, 16).clamp(0, 1).view(n, 1, 4, 4)
    y = torch.tensor(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    x_adv = attacks.pgd(model, x, y, eps, norm=norm, steps=3, restarts=2, generator=torch.Generator().manual_seed(0))
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (attacks.perturbation_norm(x_adv, x, norm) <= eps * (1 + 1e-5) + 1e-6).all()
    if norm == "linf":
        x_f = attacks.fgsm(model, x, y, eps)
        assert x_f.min() >= 0 and x_f.max() <= 1 and (x_f - x).abs().max() <= eps + 1e-6


@st.composite
def calibrated_groups(draw):
    """Groups of predictions with one confidence ``k / n`` each, exactly ``k`` of the ``n`` correct:
    a perfectly calibrated predictor on every subset of groups, hence in every bin."""
    groups = draw(st.lists(st.tuples(st.integers(1, 8), st.integers(0, 8)), min_size=1, max_size=12))
    conf, corr = [], []
    for n, k in groups:
        k = min(k, n)
        conf += [k / n] * n
        corr += [1.0] * k + [0.0] * (n - k)
    return np.array(conf), np.array(corr)


@SETTINGS
@given(cc=calibrated_groups(), n_bins=st.integers(1, 20))
def test_calibration_errors_are_zero_for_a_perfectly_calibrated_predictor(cc, n_bins):
    conf, corr = cc
    assert calibration.ece(conf, corr, n_bins) == pytest.approx(0.0, abs=1e-12)
    assert calibration.mce(conf, corr, n_bins) == pytest.approx(0.0, abs=1e-12)
    assert calibration.debiased_l2_ce(conf, corr, n_bins) == pytest.approx(0.0, abs=1e-6)
    gap = calibration.reliability_table(conf, corr, n_bins)["gap"].dropna()
    assert np.allclose(gap, 0.0, atol=1e-12)


def _ece_brute_force(conf, corr, n_bins):
    """Guo et al. (2017), Eq. 3, with bins ((m-1)/M, m/M] (0 in the first), one bin at a time."""
    total = 0.0
    for m in range(1, n_bins + 1):
        lo, hi = (m - 1) / n_bins, m / n_bins
        in_bin = [i for i, c in enumerate(conf) if (lo < c <= hi) or (m == 1 and c == 0.0)]
        if in_bin:
            acc = sum(corr[i] for i in in_bin) / len(in_bin)
            mean_c = sum(conf[i] for i in in_bin) / len(in_bin)
            total += len(in_bin) * abs(acc - mean_c)
    return total / len(conf)


@SETTINGS
@given(pairs=st.lists(st.tuples(unit, st.booleans()), min_size=1, max_size=40), n_bins=st.integers(1, 15))
def test_ece_and_mce_match_a_brute_force_computation(pairs, n_bins):
    conf = np.array([p for p, _ in pairs])
    corr = np.array([float(c) for _, c in pairs])
    # confidences on a bin edge are where searchsorted and the inequality could disagree through rounding
    assume(all(abs(c * n_bins - round(c * n_bins)) > 1e-9 or c in (0.0, 1.0) for c in conf))
    assert calibration.ece(conf, corr, n_bins) == pytest.approx(_ece_brute_force(conf, corr, n_bins), abs=1e-12)
    table = calibration.reliability_table(conf, corr, n_bins)
    assert table["count"].sum() == len(conf)
    assert calibration.mce(conf, corr, n_bins) == pytest.approx(np.nanmax(np.abs(table["gap"])), abs=1e-12)
    assert calibration.ece(conf, corr, n_bins) <= calibration.mce(conf, corr, n_bins) + 1e-12


values = st.lists(st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False), min_size=2, max_size=30)


@SETTINGS
@given(v=values, seed=st.integers(0, 2**16), level=st.sampled_from([0.8, 0.9, 0.95]))
def test_bootstrap_intervals_of_the_mean_contain_the_estimate(v, seed, level):
    v = np.array(v)
    tol = 1e-9 * (1 + np.abs(v).max())
    est, lo, hi = calibration.bootstrap_ci(np.mean, v, n_boot=400, level=level, seed=seed)
    assert est == pytest.approx(v.mean())
    assert lo - tol <= est <= hi + tol
    m, lo, hi = calibration.mean_ci(v, level, method="bootstrap", n_boot=400, seed=seed)
    assert lo - tol <= m <= hi + tol
    e = sc.bootstrap(v, np.mean, n_boot=400, seed=seed)
    assert e.lo - tol <= e.value <= e.hi + tol


@SETTINGS
@given(v=values, level=st.floats(0.5, 0.99))
def test_t_interval_matches_scipy(v, level):
    from scipy import stats

    v = np.array(v)
    assume(v.std() > 1e-6)
    m, lo, hi = calibration.mean_ci(v, level, method="t")
    ref = stats.t.interval(level, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert (lo, hi) == pytest.approx(ref, rel=1e-9, abs=1e-9)

"""robustvae.stats against independent truth."""

import doctest

import numpy as np
import pytest

from robustvae import stats


def test_doctest():
    assert doctest.testmod(stats).failed == 0


def test_mcnemar_counts_discordant_pairs_and_matches_the_binomial_tail():
    before = np.array([1] * 10 + [0] * 5, dtype=bool)
    after = before.copy()
    after[:6] = False  # 6 lost
    after[10:11] = True  # 1 gained
    lost, gained, p = stats.mcnemar_exact(before, after)
    assert (lost, gained) == (6, 1)
    # P(X >= 6), X ~ Binomial(7, 1/2) = (C(7,6) + C(7,7)) / 2^7 = 8/128
    assert p == pytest.approx(8 / 128)
    _, _, p2 = stats.mcnemar_exact(before, after, alternative="two-sided")
    assert p2 == pytest.approx(16 / 128)


def test_mcnemar_concordant_only_is_no_evidence_and_bad_input_is_refused():
    x = np.array([1, 0, 1], dtype=bool)
    assert stats.mcnemar_exact(x, x) == (0, 0, 1.0)
    with pytest.raises(ValueError, match="pair the same items"):
        stats.mcnemar_exact(x, x[:2])
    with pytest.raises(ValueError, match="alternative"):
        stats.mcnemar_exact(x, x, alternative="less")


def test_wilson_interval_matches_rrobust_and_covers_at_its_level():
    """The same numbers as the Monte-Carlo module's Wilson interval, and coverage close to 95%
    on simulated binomials (a wrong z or centre misses by far more than the 0.02 allowed)."""
    import torch

    from robustvae import rrobust

    for k, n in ((0, 100), (3, 30), (50, 100), (199, 200)):
        lo, hi = stats.wilson_interval(k, n)
        lo2, hi2 = rrobust.binomial_interval(torch.tensor(float(k)), n)
        assert abs(lo - lo2.item()) < 1e-7 and abs(hi - hi2.item()) < 1e-7
        assert lo - 1e-12 <= k / n <= hi + 1e-12
    rng = np.random.default_rng(0)
    p, n = 0.3, 60
    hits = [lo <= p <= hi for lo, hi in (stats.wilson_interval(k, n) for k in rng.binomial(n, p, 4000))]
    assert abs(np.mean(hits) - 0.95) < 0.02
    with pytest.raises(ValueError):
        stats.wilson_interval(5, 3)


def test_bootstrap_draws_are_seeded_resamples_in_the_order_of_one_generator():
    draws = list(stats.bootstrap_draws(7, 5, seed=3))
    assert len(draws) == 5 and all(d.shape == (7,) and d.min() >= 0 and d.max() < 7 for d in draws)
    # one sample: the b-th draw of one generator, i.e. the rows of a single (n_boot, n) draw
    assert np.array_equal(np.stack(draws), np.random.default_rng(3).integers(0, 7, size=(5, 7)))
    assert all(np.array_equal(a, b) for a, b in zip(draws, stats.bootstrap_draws(7, 5, seed=3)))
    # several samples: one tuple per resample, drawn in the order of the sizes
    rng = np.random.default_rng(1)
    for i_a, i_b in stats.bootstrap_draws((4, 9), 3, seed=1):
        assert np.array_equal(i_a, rng.integers(0, 4, 4)) and np.array_equal(i_b, rng.integers(0, 9, 9))
    assert list(stats.bootstrap_draws(4, 0)) == []


def test_bootstrap_ci_is_paired_percentile_and_keeps_infinities():
    v = np.random.default_rng(0).normal(size=50)
    est, lo, hi = stats.bootstrap_ci(np.mean, v, n_boot=300, seed=2)
    means = [v[i].mean() for i in stats.bootstrap_draws(50, 300, seed=2)]
    assert est == v.mean() and (lo, hi) == tuple(np.quantile(means, [0.025, 0.975]))
    # paired: a statistic of (v, v) sees the same indices in both arrays
    assert stats.bootstrap_ci(lambda a, b: float(np.abs(a - b).max()), v, v, n_boot=50)[1:] == (0.0, 0.0)
    _, lo, hi = stats.bootstrap_ci(np.median, np.array([1.0, 2.0, np.inf, np.inf, np.inf]), n_boot=100)
    assert hi == np.inf and not np.isnan(lo)
    with pytest.raises(ValueError, match="one length"):
        stats.bootstrap_ci(np.mean, v, v[:3])
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ci(np.mean, v, level=1.0)


def test_the_modules_bootstraps_draw_from_stats():
    from robustvae import calibration
    assert calibration.bootstrap_ci is stats.bootstrap_ci
    v = np.random.default_rng(4).normal(size=30)
    idx = np.random.default_rng(9).integers(0, 30, size=(200, 30))  # the one-call draw mean_ci made before
    m, lo, hi = calibration.mean_ci(v, method="bootstrap", n_boot=200, seed=9)
    assert (lo, hi) == tuple(float(q) for q in np.quantile(v[idx].mean(1), [0.025, 0.975]))


def test_median_difference_keeps_the_pairing_of_inputs():
    rng = np.random.default_rng(0)
    b = rng.normal(0, 5, 40)          # inputs differ a lot from one another...
    a = b + 0.1                       # ...but model a is 0.1 above model b on every one
    d, lo, hi = stats.median_difference(a, b, n_boot=500)
    assert d == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    # resampled apart, the same shift would be lost in the spread: the pairing is what shows it
    d2, lo2, hi2 = stats.median_difference(a, rng.permutation(b), n_boot=500)
    assert lo2 < 0 < hi2
    # no difference: the interval holds 0; margins never broken (inf) are allowed
    d3, lo3, hi3 = stats.median_difference(b, b[::-1], n_boot=500)
    assert lo3 <= 0 <= hi3
    big = np.r_[b[:30] + 3, np.full(10, np.inf)]
    assert stats.median_difference(big, b, n_boot=200)[1] > 0


def _wilson_by_hand(k, n, z=1.959963984540054):
    """The Wilson interval from its textbook formula (Wilson 1927), written independently."""
    p = k / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(1, 10), (3, 7), (9, 10), (50, 200)])
def test_wilson_interval_matches_the_textbook_formula(k, n):
    lo, hi = stats.wilson_interval(k, n)
    assert (lo, hi) == pytest.approx(_wilson_by_hand(k, n), abs=1e-12)
    assert 0 < lo < k / n < hi < 1


def test_wilson_interval_at_the_ends_and_bad_input():
    assert stats.wilson_interval(1, 1)[1] == 1.0 and stats.wilson_interval(5, 5)[1] == 1.0
    assert stats.wilson_interval(0, 1)[0] == 0.0
    assert stats.wilson_interval(5, 5)[0] == pytest.approx(_wilson_by_hand(5, 5)[0], abs=1e-12)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="confidence"):
            stats.wilson_interval(1, 2, confidence=bad)
    for k, n in ((0, 0), (3, 2), (-1, 5)):
        with pytest.raises(ValueError, match="need 0 <= k <= n"):
            stats.wilson_interval(k, n)


def test_mcnemar_with_as_many_lost_as_gained_is_the_binomial_test():
    from scipy.stats import binomtest

    before = [1, 1, 1, 0, 0, 0, 1]
    after = [0, 0, 0, 1, 1, 1, 1]
    lost, gained, p = stats.mcnemar_exact(before, after)
    assert (lost, gained) == (3, 3) and p == pytest.approx(binomtest(3, 6, 0.5, alternative="greater").pvalue)
    assert p < 1


def test_the_defaults_are_the_documented_ones():
    """A default decides stored numbers (resamples, seed): changing one must be deliberate."""
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=40), rng.normal(size=40)  # continuous: any other resampling moves the ends
    draws = [d.tolist() for d in stats.bootstrap_draws(5, 3)]
    assert draws == [d.tolist() for d in stats.bootstrap_draws(5, 3, seed=0)]
    assert stats.bootstrap_ci(np.mean, x) == stats.bootstrap_ci(np.mean, x, n_boot=1000, seed=0)
    assert stats.median_difference(x, y) == stats.median_difference(x, y, n_boot=2000, seed=0)


def test_bootstrap_ci_takes_tensors_and_refuses_bad_input():
    import torch

    t = torch.arange(10.0, requires_grad=True)
    assert stats.bootstrap_ci(np.mean, t, n_boot=50) == stats.bootstrap_ci(np.mean, np.arange(10.0), n_boot=50)
    assert stats.bootstrap_ci(np.mean, np.array([2.0]), n_boot=20) == (2.0, 2.0, 2.0)  # one input is a sample
    with pytest.raises(ValueError, match="non-empty arrays of one length"):
        stats.bootstrap_ci(np.mean, np.array([]))
    with pytest.raises(ValueError, match="non-empty arrays of one length"):
        stats.bootstrap_ci(np.mean, np.arange(3.0), np.arange(4.0))
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="level"):
            stats.bootstrap_ci(np.mean, np.arange(3.0), level=bad)


def test_infinite_inputs_give_interval_ends_that_the_statistic_took():
    """With an infinite value in the data the quantiles are taken without interpolation, so each
    end of the interval is one of the resampled statistics (interpolating could give inf - inf)."""
    x = np.r_[np.arange(15.0), np.inf]
    n_boot = 101
    vals = np.array([np.median(x[i]) for i in stats.bootstrap_draws(len(x), n_boot, seed=0)])
    assert np.isfinite(vals).all()
    _, lo, hi = stats.bootstrap_ci(np.median, x, n_boot=n_boot)
    assert lo in vals and hi in vals

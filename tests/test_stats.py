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

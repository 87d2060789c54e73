"""Statistics shared by the chapters: tests and intervals that a finding or a check is judged on.

Today: the exact McNemar test for paired binary outcomes (the same images under two attacks, two
defences, two step counts) and the Wilson interval of a proportion. Intervals and bootstraps still live in :mod:`robustvae.calibration`
(``bootstrap_ci``, ``mean_ci``) and :mod:`robustvae.ood`; they are to move here.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest, norm

__all__ = ["mcnemar_exact", "wilson_interval"]


def mcnemar_exact(before, after, alternative: str = "greater") -> tuple[int, int, float]:
    """Exact McNemar test on paired binary outcomes (McNemar 1947; the exact binomial form).

    ``before`` and ``after`` are boolean arrays over the same items (e.g. "this image is still
    classified correctly" after a 15-step and after a 30-step attack). Only the discordant items
    count: ``lost`` = true before and false after, ``gained`` = false before and true after. Under
    the null hypothesis that the two conditions have the same success rate, ``lost`` is
    Binomial(``lost + gained``, 1/2).

    ``alternative="greater"`` (default) tests whether ``after`` loses more items than it gains
    (one-sided), ``"two-sided"`` whether they differ at all. Returns ``(lost, gained, p_value)``;
    ``p_value`` is 1.0 when there is no discordant item.

    >>> mcnemar_exact([1, 1, 1, 1, 0], [0, 0, 0, 1, 0])
    (3, 0, 0.125)
    """
    b = np.asarray(before, dtype=bool).ravel()
    a = np.asarray(after, dtype=bool).ravel()
    if b.shape != a.shape:
        raise ValueError(f"before and after must pair the same items, got {b.size} and {a.size}.")
    if alternative not in ("greater", "two-sided"):
        raise ValueError(f"alternative must be 'greater' or 'two-sided', got {alternative!r}.")
    lost, gained = int((b & ~a).sum()), int((~b & a).sum())
    if lost + gained == 0:
        return lost, gained, 1.0
    p = binomtest(lost, lost + gained, 0.5, alternative=alternative).pvalue
    return lost, gained, float(p)


def wilson_interval(k, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k / n`` (Wilson 1927): ``(lower, upper)``.

    Accurate near 0 and 1, where the normal interval fails (a robust accuracy of 0 on 100 images
    gives ``(0, 0.037)``, not ``(0, 0)``).

    >>> tuple(round(v, 3) for v in wilson_interval(0, 100))
    (0.0, 0.037)
    """
    k, n = float(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * float(np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)))
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi

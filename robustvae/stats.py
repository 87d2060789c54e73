"""Statistics shared by the chapters: tests and intervals that a finding or a check is judged on.

The exact McNemar test for paired binary outcomes (the same images under two attacks, two
defences, two step counts), the Wilson interval of a proportion, and the library's one bootstrap:
:func:`bootstrap_draws` (seeded resampling indices, one or several independent samples) and
:func:`bootstrap_ci` (a paired percentile-bootstrap interval for any statistic). The bootstraps
of :mod:`robustvae.calibration` (``mean_ci``, ``bootstrap_ci``), :func:`robustvae.ood.ood_metrics`,
:func:`robustvae.scorecard.bootstrap` and :func:`robustvae.consistency.auroc_bootstrap` draw
their indices here.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
from scipy.stats import binomtest, norm

__all__ = ["mcnemar_exact", "wilson_interval", "bootstrap_draws", "bootstrap_ci", "median_difference"]


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


def bootstrap_draws(sizes: int | Sequence[int], n_boot: int, seed: int = 0) -> Iterator:
    """Indices of ``n_boot`` bootstrap resamples, drawn with ``numpy.random.default_rng(seed)``.

    Parameters
    ----------
    sizes : ``n``, the size of one sample, or ``(n_1, n_2, ...)`` for independent samples
        resampled separately (in- and out-of-distribution scores).
    n_boot : number of resamples.
    seed : seed of the generator; the same seed gives the same draws.

    Yields
    ------
    For one sample, an ``(n,)`` integer array of indices drawn with replacement
    (``rng.integers(0, n, n)``); for several, a tuple of such arrays, one per sample, drawn in
    the order given. Apply one array to several paired arrays to keep their pairing.

    Notes
    -----
    Resample ``b`` is the ``b``-th draw of one generator, so stacking the first ``n_boot`` draws
    of one sample gives the same matrix as ``rng.integers(0, n, size=(n_boot, n))``.

    >>> [i.tolist() for i in bootstrap_draws(3, 2, seed=0)]
    [[2, 1, 1], [0, 0, 0]]
    """
    one = np.ndim(sizes) == 0
    ns = (int(sizes),) if one else tuple(int(m) for m in sizes)
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        draw = tuple(rng.integers(0, m, m) for m in ns)
        yield draw[0] if one else draw


def _float_array(a) -> np.ndarray:
    """``a`` as a float64 NumPy array; torch tensors are detached and moved to the CPU."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def bootstrap_ci(fn: Callable[..., float], *arrays, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """``(fn(*arrays), low, high)``: a paired percentile-bootstrap interval for any statistic.

    The same resampled indices (:func:`bootstrap_draws`) are applied to every array, so
    differences between two methods evaluated on the same examples keep their pairing. Infinite
    values, in the arrays or in the statistic (a margin never broken within an attack's search
    grid), get quantiles without interpolation, which would turn ``inf - inf`` into NaN.

    Parameters
    ----------
    fn : the statistic, called as ``fn(*resampled_arrays)``.
    *arrays : NumPy arrays or torch tensors of one length (converted to float64).
    n_boot, level, seed : number of resamples, confidence level in (0, 1), seed of the draws.
    """
    arrs = [_float_array(a) for a in arrays]
    n = len(arrs[0])
    if any(len(a) != n for a in arrs) or n == 0:
        raise ValueError("bootstrap_ci needs non-empty arrays of one length.")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}.")
    vals = [fn(*[a[i] for a in arrs]) for i in bootstrap_draws(n, n_boot, seed)]
    finite = np.isfinite(vals).all() and all(np.isfinite(a.astype(np.float64)).all() for a in arrs)
    method = "linear" if finite else "inverted_cdf"
    lo, hi = np.quantile(vals, [0.5 - level / 2, 0.5 + level / 2], method=method)
    return float(fn(*arrs)), float(lo), float(hi)


def median_difference(a, b, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``(median(a) - median(b), low, high)`` for two measurements of the same inputs (the
    margins of two models on the same images), with a paired percentile-bootstrap interval
    (:func:`bootstrap_ci`: each resample draws inputs, keeping both of an input's values).

    A difference is significant at ``level`` when the interval excludes 0. Infinite values (a
    margin no attack reached) are allowed; two infinite medians give NaN.
    """
    return bootstrap_ci(lambda x, y: float(np.median(x) - np.median(y)), a, b, n_boot=n_boot, level=level,
                        seed=seed)

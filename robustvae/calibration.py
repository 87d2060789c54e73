"""Calibration, recalibration and selective prediction: does the VAE know when the classifier is right?

The chapter "The VAE as a judge of classifier confidence" uses everything here. Arrays may be
NumPy arrays or torch tensors; results are NumPy arrays, floats or pandas DataFrames.

Contents
--------
Per-example quantities
    :func:`softmax_confidence`, :func:`confidence_logit`, :func:`reconstruction_mse`,
    :func:`score_inputs` (all of them for one input set).
Binning
    :func:`bin_indices` (equal-width bins ``((m-1)/M, m/M]``), :func:`mean_ci`,
    :func:`confidence_bins` (per-bin count, mean of any quantity and a 95% interval: the seed
    study's plot), :func:`reliability_table`.
Calibration errors
    :func:`ece` (Naeini et al., AAAI 2015; Guo et al., ICML 2017, Eq. 3), :func:`mce`,
    :func:`adaptive_ece` (equal-mass bins, Nixon et al., CVPR-W 2019), :func:`classwise_ece`
    (Kull et al., NeurIPS 2019), :func:`debiased_l2_ce` (Kumar, Liang & Ma, NeurIPS 2019),
    :func:`nll`, :func:`brier`, and :func:`calibration_report` (all of them in one row).
Recalibration (fitted on a held-out split)
    :func:`fit_temperature` (temperature scaling, Guo et al. 2017, Sec. 4.2),
    :func:`fit_score_temperature` (a temperature that depends on a per-example score, here the
    VAE's reconstruction loss), :func:`fit_confidence_logistic` (Platt-style logistic model of
    correctness on the logit of the confidence and optional extra scores),
    :func:`replace_top_label`.
Selective prediction
    :func:`risk_coverage` and :func:`aurc` (Geifman & El-Yaniv, NeurIPS 2017; Geifman et al.,
    ICLR 2019).
Distribution shift and statistics
    :func:`stratified_halves`, :func:`rotate`, :func:`add_gaussian_noise` (alias ``gaussian_noise``), :func:`spearman`,
    :func:`bootstrap_ci` (:func:`robustvae.stats.bootstrap_ci`, re-exported).
Plots
    :func:`plot_confidence_bins`, :func:`plot_reliability`, :func:`plot_risk_coverage`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats

from . import stats as rstats

__all__ = [
    "softmax_confidence", "confidence_logit", "reconstruction_mse", "score_inputs",
    "bin_indices", "mean_ci", "confidence_bins", "reliability_table",
    "ece", "mce", "adaptive_ece", "classwise_ece", "debiased_l2_ce", "nll", "brier",
    "calibration_report",
    "TemperatureScaling", "fit_temperature", "ScoreTemperatureScaling", "fit_score_temperature",
    "ConfidenceLogistic", "fit_confidence_logistic", "replace_top_label",
    "risk_coverage", "aurc",
    "stratified_halves", "rotate", "add_gaussian_noise", "gaussian_noise", "spearman", "bootstrap_ci",
    "plot_confidence_bins", "plot_reliability", "plot_risk_coverage",
]

CI_METHODS = ("t", "bootstrap")


# ---------------------------------------------------------------------------------------
# helpers
def _np(a, dtype=np.float64) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def _check_bins(n_bins: int) -> None:
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}.")


def _check_conf_correct(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    conf, corr = _np(confidence), _np(correct)
    if conf.ndim != 1 or corr.shape != conf.shape:
        raise ValueError(
            f"confidence and correct must be 1-D arrays of the same length, got shapes "
            f"{conf.shape} and {corr.shape}."
        )
    if len(conf) == 0:
        raise ValueError("confidence is empty: calibration needs at least one example.")
    if np.any(conf < 0) or np.any(conf > 1) or not np.all(np.isfinite(conf)):
        raise ValueError("confidence values must lie in [0, 1] (pass probabilities, not logits).")
    if not np.all((corr == 0) | (corr == 1)):
        raise ValueError("correct must hold 0/1 (or False/True) values.")
    return conf, corr


def _check_probs_labels(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p, y = _np(probs), _np(labels, np.int64)
    if p.ndim != 2 or y.shape != (len(p),):
        raise ValueError(f"probs must be (N, K) and labels (N,), got {p.shape} and {y.shape}.")
    if np.any(p < -1e-9) or not np.allclose(p.sum(1), 1.0, atol=1e-5):
        raise ValueError("each row of probs must be a probability vector (non-negative, summing to 1); "
                         "pass softmax(logits), not logits.")
    if np.any(y < 0) or np.any(y >= p.shape[1]):
        raise ValueError(f"labels must lie in [0, {p.shape[1] - 1}].")
    return p, y


# ---------------------------------------------------------------------------------------
# per-example quantities
def softmax_confidence(logits) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, prediction)``: the top softmax probability (float64) and its class."""
    lg = torch.as_tensor(_np(logits))
    if lg.dim() != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(lg.shape)}.")
    p = lg.softmax(1)
    conf, pred = p.max(1)
    return conf.numpy(), pred.numpy()


def confidence_logit(logits) -> np.ndarray:
    """``log p_max - log(1 - p_max)`` computed without rounding to infinity.

    Equals ``-logsumexp_{j != argmax}(l_j - l_max)``. A monotone transform of the softmax
    confidence that does not saturate at 1.0, so confident predictions stay ranked (used as the
    feature of :func:`fit_confidence_logistic` and for selective prediction).
    """
    lg = torch.as_tensor(_np(logits))
    if lg.dim() != 2 or lg.shape[1] < 2:
        raise ValueError(f"logits must be (N, K) with K >= 2, got shape {tuple(lg.shape)}.")
    top, idx = lg.max(1, keepdim=True)
    rest = (lg - top).scatter(1, idx, -math.inf)
    return (-torch.logsumexp(rest, dim=1)).numpy()


@torch.no_grad()
def score_inputs(classifier, vae, x: torch.Tensor, y: torch.Tensor | None = None,
                 batch_size: int = 500) -> tuple[np.ndarray, pd.DataFrame]:
    """Everything the chapter measures on one input set, one row per image.

    Returns the classifier's logits (``(N, K)`` float64) and a DataFrame with ``confidence``
    (top softmax probability), ``prediction``, ``correct`` (1/0), ``mse`` (see
    :func:`reconstruction_mse`) and ``neg_elbo`` (the negative ELBO in nats, one sample of
    ``z``: seed the generators first for repeatable numbers). ``y=None`` marks inputs from
    outside the classifier's label set (e.g. Fashion-MNIST items for a digit classifier):
    every prediction counts as wrong.
    """
    from .training import batched, predict_logits

    logits = predict_logits(classifier, x, batch_size).double().numpy()
    conf, pred = softmax_confidence(logits)
    if y is None:
        correct = np.zeros(len(x))
    else:
        yy = _np(y, np.int64)
        if yy.shape != (len(x),):
            raise ValueError(f"y must have shape ({len(x)},), got {yy.shape}.")
        correct = (pred == yy).astype(float)
    dev = next(vae.parameters()).device
    neg_elbo = -batched(lambda xb: vae.elbo(xb)["elbo"], x, batch_size, dev).double().numpy()
    df = pd.DataFrame({"confidence": conf, "prediction": pred, "correct": correct,
                       "mse": reconstruction_mse(vae, x, batch_size), "neg_elbo": neg_elbo})
    return logits, df


@torch.no_grad()
def reconstruction_mse(vae, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Per-image pixel MSE between ``x`` and the VAE's mean reconstruction ``E[x | z = mu(x)]``.

    The seed study's reconstruction loss (deterministic: the posterior mean is decoded).
    """
    from .training import batched

    dev = next(vae.parameters()).device
    fn = lambda xb: (vae.reconstruct(xb, sample=False) - xb).pow(2).flatten(1).mean(1)  # noqa: E731
    return batched(fn, x, batch_size, dev).double().numpy()


# ---------------------------------------------------------------------------------------
# binning
def bin_indices(confidence, n_bins: int) -> np.ndarray:
    """Equal-width bin of each confidence: bin ``m`` (0-based) holds ``(m/M, (m+1)/M]``.

    The convention of Guo et al. (ICML 2017, Sec. 2: ``B_m = {i : p_i in ((m-1)/M, m/M]}``);
    a confidence of exactly 0 goes to the first bin.
    """
    _check_bins(n_bins)
    conf = _np(confidence)
    if np.any(conf < 0) or np.any(conf > 1):
        raise ValueError("confidence values must lie in [0, 1].")
    inner = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.searchsorted(inner, conf, side="left")


def mean_ci(values, level: float = 0.95, method: str = "t", n_boot: int = 1000,
            seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: the sample mean and a ``level`` confidence interval for it.

    ``method="t"``: Student's t interval ``mean +- t_{(1+level)/2, n-1} s / sqrt(n)``;
    ``"bootstrap"``: percentile bootstrap with ``n_boot`` resamples
    (:func:`robustvae.stats.bootstrap_draws`, seeded with ``seed``). With fewer than two values
    the interval is ``(nan, nan)``; an empty input gives three NaNs.
    """
    if method not in CI_METHODS:
        raise ValueError(f"Unknown method {method!r}. Valid methods: {', '.join(CI_METHODS)}.")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}.")
    v = _np(values).ravel()
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if n < 2:
        return m, math.nan, math.nan
    if method == "t":
        half = stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n)
        return m, m - half, m + half
    idx = np.array(list(rstats.bootstrap_draws(n, n_boot, seed)), dtype=np.int64).reshape(n_boot, n)
    means = v[idx].mean(1)  # row b: the b-th resample, as one rng.integers(0, n, (n_boot, n)) call
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return m, float(lo), float(hi)


def confidence_bins(confidence, values, n_bins: int = 20, level: float = 0.95,
                    method: str = "t", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean of ``values`` per equal-width confidence bin, with a confidence interval and the count.

    The seed study's experiment B: bin test images by the classifier's top softmax probability
    and average the VAE's reconstruction loss in each bin. Returns one row per bin (empty bins
    included, with NaN means): ``lo``, ``hi`` (bin edges), ``count``, ``mean``, ``ci_low``,
    ``ci_high`` (see :func:`mean_ci`; NaN for bins with fewer than two examples).
    """
    conf = _np(confidence)
    vals = _np(values)
    if conf.shape != vals.shape or conf.ndim != 1:
        raise ValueError(f"confidence and values must be 1-D of the same length, got {conf.shape} and {vals.shape}.")
    idx = bin_indices(conf, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    rows = []
    for b in range(n_bins):
        v = vals[idx == b]
        m, lo, hi = mean_ci(v, level, method, n_boot, seed + b)
        rows.append({"lo": edges[b], "hi": edges[b + 1], "count": len(v), "mean": m, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows).rename_axis("bin")


def _bin_stats(conf: np.ndarray, corr: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: count, mean confidence, accuracy (NaN for empty bins)."""
    idx = bin_indices(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, n_bins) / count
        acc = np.bincount(idx, corr, n_bins) / count
    return count, mean_conf, acc


def reliability_table(confidence, correct, n_bins: int = 15) -> pd.DataFrame:
    """Reliability-diagram data (Guo et al. 2017, Fig. 1): per equal-width bin, the count, the mean
    confidence ``conf(B_m)``, the accuracy ``acc(B_m)`` and the gap ``acc - conf`` (NaN if empty)."""
    conf, corr = _check_conf_correct(confidence, correct)
    count, mean_conf, acc = _bin_stats(conf, corr, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "count": count, "confidence": mean_conf,
                         "accuracy": acc, "gap": acc - mean_conf}).rename_axis("bin")


# ---------------------------------------------------------------------------------------
# calibration errors
def ece(confidence, correct, n_bins: int = 15) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins (15 in Guo et al., ICML 2017).

    ``ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|`` (Naeini, Cooper & Hauskrecht, AAAI 2015;
    Guo et al. 2017, Eq. 3), with bins ``((m-1)/M, m/M]`` over the top-label confidence.
    """
    count, mean_conf, acc = _bin_stats(*_check_conf_correct(confidence, correct), n_bins)
    full = count > 0
    return float((count[full] * np.abs(acc[full] - mean_conf[full])).sum() / count.sum())


def mce(confidence, correct, n_bins: int = 15) -> float:
    """Maximum calibration error: ``max_m |acc(B_m) - conf(B_m)|`` over non-empty bins (Guo et al. 2017, Eq. 5)."""
    count, mean_conf, acc = _bin_stats(*_check_conf_correct(confidence, correct), n_bins)
    full = count > 0
    return float(np.abs(acc[full] - mean_conf[full]).max())


def adaptive_ece(confidence, correct, n_bins: int = 15) -> float:
    """ECE with equal-mass bins: sort by confidence and cut into ``n_bins`` groups of (nearly)
    equal size (the adaptive calibration error of Nixon et al., "Measuring calibration in deep
    learning", CVPR Workshops 2019, with the top label only)."""
    conf, corr = _check_conf_correct(confidence, correct)
    _check_bins(n_bins)
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for group in np.array_split(order, min(n_bins, len(conf))):
        total += len(group) * abs(corr[group].mean() - conf[group].mean())
    return float(total / len(conf))


def classwise_ece(probs, labels, n_bins: int = 15) -> float:
    """Class-wise ECE (Kull et al., "Beyond temperature scaling", NeurIPS 2019, Sec. 3):
    the mean over classes ``k`` of the equal-width-binned ECE of ``p_k(x)`` against ``1[y = k]``."""
    p, y = _check_probs_labels(probs, labels)
    _check_bins(n_bins)
    errs = []
    for k in range(p.shape[1]):
        pk = np.clip(p[:, k], 0.0, 1.0)
        errs.append(ece(pk, (y == k).astype(float), n_bins))
    return float(np.mean(errs))


def debiased_l2_ce(confidence, correct, n_bins: int = 15) -> float:
    """Debiased estimate of the binned l2 calibration error (Kumar, Liang & Ma, NeurIPS 2019, Sec. 5,
    after Broecker 2012 and Ferro & Fricker 2012).

    The plug-in ``sum_m |B_m|/n (acc_m - conf_m)^2`` is biased upwards by the binomial noise of
    ``acc_m``; the estimator subtracts ``acc_m (1 - acc_m) / (|B_m| - 1)`` inside each bin (bins of
    one example get no correction) and returns ``sqrt(max(estimate, 0))``.
    """
    count, mean_conf, acc = _bin_stats(*_check_conf_correct(confidence, correct), n_bins)
    full = count > 0
    n, acc, gap = count[full].astype(float), acc[full], acc[full] - mean_conf[full]
    corr = np.where(n > 1, acc * (1 - acc) / np.maximum(n - 1, 1), 0.0)
    est = float((n * (gap ** 2 - corr)).sum() / n.sum())
    return math.sqrt(max(est, 0.0))


def nll(probs, labels, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood ``-log p_y(x)`` (nats)."""
    p, y = _check_probs_labels(probs, labels)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0)).mean())


def brier(probs, labels) -> float:
    """Mean multiclass Brier score ``sum_k (p_k - 1[y = k])^2`` (Brier 1950)."""
    p, y = _check_probs_labels(probs, labels)
    onehot = np.eye(p.shape[1])[y]
    return float(((p - onehot) ** 2).sum(1).mean())


def calibration_report(probs, labels, n_bins: int = 15) -> dict[str, float]:
    """All calibration measures of ``probs`` (N, K) against ``labels`` in one dict:
    accuracy, ECE, adaptive ECE, MCE, class-wise ECE, debiased l2-CE, NLL and Brier score."""
    p, y = _check_probs_labels(probs, labels)
    conf, pred = p.max(1), p.argmax(1)
    corr = (pred == y).astype(float)
    return {
        "accuracy": float(corr.mean()),
        "ECE": ece(conf, corr, n_bins),
        "adaptive ECE": adaptive_ece(conf, corr, n_bins),
        "MCE": mce(conf, corr, n_bins),
        "classwise ECE": classwise_ece(p, y, n_bins),
        "debiased l2-CE": debiased_l2_ce(conf, corr, n_bins),
        "NLL": nll(p, y),
        "Brier": brier(p, y),
    }


# ---------------------------------------------------------------------------------------
# recalibration
def _lbfgs(params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], max_iter: int) -> None:
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def _logits_labels(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    lg = torch.as_tensor(_np(logits))
    y = torch.as_tensor(_np(labels, np.int64))
    if lg.dim() != 2 or y.shape != (lg.shape[0],):
        raise ValueError(f"logits must be (N, K) and labels (N,), got {tuple(lg.shape)} and {tuple(y.shape)}.")
    if len(y) == 0:
        raise ValueError("cannot fit a calibration map on zero examples.")
    if (y < 0).any() or (y >= lg.shape[1]).any():
        raise ValueError(f"labels must lie in [0, {lg.shape[1] - 1}].")
    return lg, y


@dataclass(frozen=True)
class TemperatureScaling:
    """``softmax(logits / T)``: one temperature for every input (Guo et al., ICML 2017, Sec. 4.2)."""

    temperature: float

    def logits(self, logits) -> np.ndarray:
        return _np(logits) / self.temperature

    def probs(self, logits) -> np.ndarray:
        return torch.as_tensor(self.logits(logits)).softmax(1).numpy()


def fit_temperature(logits, labels, max_iter: int = 200) -> TemperatureScaling:
    """Fit the temperature by minimising the NLL on a held-out split (Guo et al. 2017, Sec. 4.2).

    Optimises ``log T`` (so ``T > 0``) with L-BFGS from ``T = 1``. Temperature scaling keeps
    every prediction (the argmax) and changes only the confidence.
    """
    lg, y = _logits_labels(logits, labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    _lbfgs([log_t], lambda: F.cross_entropy(lg / log_t.exp(), y), max_iter)
    return TemperatureScaling(float(log_t.detach().exp()))


def _standardise_score(score, center: float, scale: float) -> torch.Tensor:
    return (torch.as_tensor(_np(score)) - center) / scale


@dataclass(frozen=True)
class ScoreTemperatureScaling:
    """A temperature that depends on a per-example score ``s(x)`` (here the VAE's log reconstruction
    loss): ``T(x) = exp(a + b (s(x) - center) / scale)``, probabilities ``softmax(logits / T(x))``.

    ``b = 0`` is temperature scaling; ``b > 0`` lowers the confidence of inputs the VAE
    reconstructs badly. Like temperature scaling it never changes a prediction.
    """

    a: float
    b: float
    center: float
    scale: float

    def temperature(self, score) -> np.ndarray:
        return (self.a + self.b * _standardise_score(score, self.center, self.scale)).exp().numpy()

    def logits(self, logits, score) -> np.ndarray:
        t = self.temperature(score)
        lg = _np(logits)
        if t.shape != (len(lg),):
            raise ValueError(f"score must have one value per row of logits, got {t.shape} for {lg.shape}.")
        return lg / t[:, None]

    def probs(self, logits, score) -> np.ndarray:
        return torch.as_tensor(self.logits(logits, score)).softmax(1).numpy()


def fit_score_temperature(logits, labels, score, max_iter: int = 200) -> ScoreTemperatureScaling:
    """Fit ``T(x) = exp(a + b * standardised score)`` by minimising the NLL on a held-out split.

    An input-dependent extension of temperature scaling (Guo et al. 2017): the score is
    standardised with its mean and standard deviation on the fitting split, and ``(a, b)`` are
    found by L-BFGS from ``(0, 0)``.
    """
    lg, y = _logits_labels(logits, labels)
    s = _np(score)
    if s.shape != (len(y),):
        raise ValueError(f"score must have shape ({len(y)},), got {s.shape}.")
    center, scale = float(s.mean()), float(s.std())
    if not scale > 0:
        raise ValueError("score is constant on the fitting split; it cannot change the temperature.")
    z = _standardise_score(s, center, scale)
    ab = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    _lbfgs([ab], lambda: F.cross_entropy(lg / (ab[0] + ab[1] * z).exp()[:, None], y), max_iter)
    ab = ab.detach()
    return ScoreTemperatureScaling(float(ab[0]), float(ab[1]), center, scale)


@dataclass(frozen=True)
class ConfidenceLogistic:
    """``P(correct | x) = sigmoid(w0 + w1 u(x) + sum_j w_{j+1} s_j(x))``, ``u`` = :func:`confidence_logit`.

    A Platt-style (Platt 1999) top-label recalibration: with no extra scores it rescales the
    confidence alone; extra scores (standardised by ``centers``/``scales``) let the VAE's
    reconstruction loss raise or lower it. The prediction (argmax) is untouched.
    """

    weights: tuple[float, ...]
    centers: tuple[float, ...]
    scales: tuple[float, ...]

    def _features(self, logits, extra) -> torch.Tensor:
        u = torch.as_tensor(confidence_logit(logits))
        cols = [torch.ones_like(u), u]
        extra = [] if extra is None else list(extra)
        if len(extra) != len(self.centers):
            raise ValueError(f"this model was fitted with {len(self.centers)} extra score(s), got {len(extra)}.")
        for s, c, sc in zip(extra, self.centers, self.scales):
            cols.append(_standardise_score(s, c, sc))
        return torch.stack(cols, 1)

    def confidence(self, logits, extra: Sequence | None = None) -> np.ndarray:
        """The recalibrated probability that the classifier's prediction is correct."""
        w = torch.tensor(self.weights, dtype=torch.float64)
        return torch.sigmoid(self._features(logits, extra) @ w).numpy()

    def probs(self, logits, extra: Sequence | None = None) -> np.ndarray:
        """Full probability vectors: the top class gets :meth:`confidence`, see :func:`replace_top_label`."""
        p = torch.as_tensor(_np(logits)).softmax(1).numpy()
        return replace_top_label(p, self.confidence(logits, extra))


def fit_confidence_logistic(logits, labels, extra: Sequence | None = None, l2: float = 1e-4,
                            max_iter: int = 200) -> ConfidenceLogistic:
    """Fit :class:`ConfidenceLogistic` by minimising the binary cross-entropy of correctness on a held-out split.

    ``extra``: optional list of per-example scores (e.g. the log reconstruction MSE), each
    standardised on the fitting split. A small ridge ``l2 * ||w[1:]||^2`` keeps the weights
    finite when correct and wrong predictions are separable.
    """
    lg, y = _logits_labels(logits, labels)
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}.")
    correct = torch.as_tensor((lg.argmax(1) == y).double())
    extra = [] if extra is None else [_np(s) for s in extra]
    for s in extra:
        if s.shape != (len(y),):
            raise ValueError(f"every extra score must have shape ({len(y)},), got {s.shape}.")
    centers = tuple(float(s.mean()) for s in extra)
    scales = tuple(float(s.std()) if s.std() > 0 else 1.0 for s in extra)
    model = ConfidenceLogistic((0.0,) * (2 + len(extra)), centers, scales)
    feats = model._features(lg, extra)
    w = torch.zeros(feats.shape[1], dtype=torch.float64, requires_grad=True)
    _lbfgs([w], lambda: F.binary_cross_entropy_with_logits(feats @ w, correct) + l2 * w[1:].pow(2).sum(),
           max_iter)
    return ConfidenceLogistic(tuple(float(v) for v in w.detach()), centers, scales)


def replace_top_label(probs, confidence) -> np.ndarray:
    """Probability vectors whose top class has probability ``confidence``; the other classes share
    ``1 - confidence`` in proportion to their original probabilities (argmax kept when
    ``confidence >= 1/K``)."""
    p = _np(probs).copy()
    c = _np(confidence)
    if p.ndim != 2 or c.shape != (len(p),):
        raise ValueError(f"probs must be (N, K) and confidence (N,), got {p.shape} and {c.shape}.")
    top = p.argmax(1)
    rows = np.arange(len(p))
    rest = 1.0 - p[rows, top]
    p[rows, top] = 0.0
    share = np.where(rest[:, None] > 0, p / np.where(rest > 0, rest, 1.0)[:, None], 1.0 / (p.shape[1] - 1))
    share[rows, top] = 0.0
    out = share * (1.0 - c)[:, None]
    out[rows, top] = c
    return out


# ---------------------------------------------------------------------------------------
# selective prediction
def risk_coverage(score, correct) -> tuple[np.ndarray, np.ndarray]:
    """Risk-coverage curve of selective prediction (Geifman & El-Yaniv, NeurIPS 2017).

    Inputs are accepted in decreasing order of ``score`` (higher = more trusted). Returns
    ``coverage = k / n`` and ``risk`` = error rate among the ``k`` accepted, for ``k = 1..n``.
    Tied scores are accepted together: inside a tie group the curve uses the expected number of
    errors under a random order, so the result does not depend on how ties are broken.
    """
    s, corr = _np(score), _np(correct)
    if s.ndim != 1 or s.shape != corr.shape or len(s) == 0:
        raise ValueError(f"score and correct must be non-empty 1-D arrays of one length, got {s.shape} and {corr.shape}.")
    if not np.all(np.isfinite(s)):
        raise ValueError("score has NaN or infinite values.")
    if not np.all((corr == 0) | (corr == 1)):
        raise ValueError("correct must hold 0/1 (or False/True) values.")
    order = np.argsort(-s, kind="stable")
    s, err = s[order], 1.0 - corr[order]
    n = len(s)
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])   # last index of each tie group
    k = np.arange(1, n + 1)
    cum_err = np.interp(k, np.r_[0, ends + 1], np.r_[0.0, np.cumsum(err)[ends]])
    return k / n, cum_err / k


def aurc(score, correct) -> float:
    """Area under the risk-coverage curve: the mean selective risk over coverages ``k/n``
    (Geifman, Uziel & El-Yaniv, ICLR 2019). Lower is better; the best possible score ranks every
    correct prediction first."""
    _, risk = risk_coverage(score, correct)
    return float(risk.mean())


# ---------------------------------------------------------------------------------------
# data splits, shifts, statistics
def stratified_halves(labels, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into two disjoint halves with (nearly) the same class counts.

    Within each class a seeded permutation sends the first ``ceil(n_c / 2)`` indices to the first
    half and the rest to the second; both halves are returned sorted.
    """
    y = _np(labels, np.int64)
    rng = np.random.default_rng(seed)
    a, b = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        h = (len(idx) + 1) // 2
        a.append(idx[:h])
        b.append(idx[h:])
    return np.sort(np.concatenate(a)), np.sort(np.concatenate(b))


def rotate(x: torch.Tensor, degrees) -> torch.Tensor:
    """Rotate each image of ``x`` (B, C, H, W) counter-clockwise by ``degrees`` (a number or one per
    image) about its centre: bilinear interpolation, zeros (black) outside the original image."""
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}.")
    deg = torch.as_tensor(degrees, dtype=x.dtype, device=x.device).expand(x.shape[0])
    th = deg * (math.pi / 180.0)
    c, s, zero = torch.cos(th), torch.sin(th), torch.zeros_like(th)
    # affine_grid maps each output pixel (x right, y down) to the input point it samples
    theta = torch.stack([torch.stack([c, -s, zero], 1), torch.stack([s, c, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def add_gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``clip_[0,1](x + std * N(0, I))``: additive Gaussian pixel noise (noise drawn on the CPU).

    A shift of the images ``x``; not to be confused with :func:`robustvae.ood.gaussian_noise`,
    which makes new images of pure noise.
    """
    if not std >= 0:
        raise ValueError(f"std must be >= 0, got {std}.")
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return (x + std * noise).clamp(0.0, 1.0)


#: The former name of :func:`add_gaussian_noise`, kept for the chapters that call it.
gaussian_noise = add_gaussian_noise


def spearman(a, b) -> tuple[float, float]:
    """Spearman's rank correlation of ``a`` and ``b`` and its two-sided p-value (scipy.stats.spearmanr)."""
    a, b = _np(a), _np(b)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 3:
        raise ValueError(f"a and b must be 1-D arrays of one length >= 3, got {a.shape} and {b.shape}.")
    res = stats.spearmanr(a, b)
    return float(res.statistic), float(res.pvalue)


#: The paired percentile bootstrap of any statistic; it lives in :mod:`robustvae.stats`.
bootstrap_ci = rstats.bootstrap_ci


# ---------------------------------------------------------------------------------------
# plots
def plot_confidence_bins(table: pd.DataFrame, ax_mean, ax_count=None, label: str | None = None,
                         color=None, ylabel: str = "mean reconstruction MSE"):
    """The seed study's plot from a :func:`confidence_bins` table: per-bin mean with its interval
    (error bars) on ``ax_mean`` and the count per bin (bars, log scale) on ``ax_count``."""
    t = table[table["count"] > 0]
    mid = (t["lo"] + t["hi"]) / 2
    err = np.vstack([t["mean"] - t["ci_low"], t["ci_high"] - t["mean"]])
    ax_mean.errorbar(mid, t["mean"], yerr=np.nan_to_num(err), fmt="o-", capsize=3, label=label, color=color, ms=4)
    ax_mean.set(xlabel="classifier confidence (max softmax)", ylabel=ylabel, xlim=(0, 1))
    if ax_count is not None:
        width = float((table["hi"] - table["lo"]).iloc[0])
        ax_count.bar(mid, t["count"], width=width * 0.9, color=color if color else "C7", alpha=0.7)
        ax_count.set(yscale="log", xlabel="classifier confidence (max softmax)", ylabel="images per bin", xlim=(0, 1))
    return ax_mean


def plot_reliability(ax, confidence, correct, n_bins: int = 15, label: str | None = None, color=None,
                     marker: str = "o"):
    """Reliability diagram (Guo et al. 2017, Fig. 1) as a line: accuracy against mean confidence of
    each non-empty equal-width bin, marker area growing with the bin's count; the diagonal is
    perfect calibration."""
    t = reliability_table(confidence, correct, n_bins)
    t = t[t["count"] > 0]
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    line, = ax.plot(t["confidence"], t["accuracy"], "-", color=color, label=label, lw=1.2)
    ax.scatter(t["confidence"], t["accuracy"], s=8 + 60 * np.sqrt(t["count"] / t["count"].max()),
               color=line.get_color(), marker=marker, zorder=3)
    ax.set(xlabel="mean confidence in bin", ylabel="accuracy in bin", xlim=(0, 1.02), ylim=(0, 1.02))
    return ax


def plot_risk_coverage(ax, score, correct, label: str | None = None, color=None, ls: str = "-"):
    """Risk-coverage curve of :func:`risk_coverage`; the label gets the AURC appended."""
    cov, risk = risk_coverage(score, correct)
    ax.plot(cov, risk, ls=ls, color=color, label=f"{label} (AURC {risk.mean():.3f})" if label else None)
    ax.set(xlabel="coverage (fraction of inputs accepted)", ylabel="selective risk (error rate of accepted)",
           xlim=(0, 1))
    return ax

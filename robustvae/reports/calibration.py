"""Chapter 5's tables and summary numbers: the VAE as a judge of classifier confidence.

The chapter ("The VAE as a judge of classifier confidence") computes per-image scores with
:func:`robustvae.calibration.score_inputs` and fits the recalibration maps of
:mod:`robustvae.calibration`; the functions here only assemble what it computed: the summary of
the input sets, the seed study's per-bin comparison, the rank correlations and AUROCs, the
calibration-error tables with their paired bootstrap intervals, the selective-prediction AURCs,
and the dictionaries of numbers its prose quotes (for :func:`robustvae.record`).

Conventions: ``scores[name]`` is the DataFrame of :func:`~robustvae.calibration.score_inputs`
for input set ``name``, ``logits[name]`` its ``(N, K)`` logits and ``labels[name]`` its true
labels (``None`` for the foreign items, whose every prediction is wrong). A *map* is one of
the fitted recalibrations (``None`` for "no recalibration"); ``probs[(setting, method, name)]``
are the probabilities of the map ``method`` fitted on ``setting``, evaluated on set ``name``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from .. import calibration as cal
from .. import stats, tables

__all__ = [
    "COMPARISONS", "summary_table", "seed_plot", "signal_table", "signal_numbers",
    "calibration_sets", "evaluation_sets", "recalibrated_probs", "fitted_table",
    "fitted_numbers", "conf_correct", "ece_table", "variants_table", "ece_differences",
    "fmt_differences", "vae_vs_temperature", "calibration_numbers", "selection_scores",
    "aurc_table", "aurc_numbers", "aurc_difference",
]

#: The paired ECE comparisons ``(fitted on, first map, second map)``: temperature scaling against
#: no recalibration, and each VAE-aware map against its VAE-free counterpart.
COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("clean", "temperature", "none"),
    ("clean", "VAE temperature", "temperature"),
    ("clean", "Platt + VAE", "Platt"),
    ("clean", "Platt + VAE", "temperature"),
    ("clean + shifts", "VAE temperature", "temperature"),
    ("clean + shifts", "Platt + VAE", "Platt"),
)

Sets = Mapping[str, Mapping[str, Any]]


def summary_table(scores: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per input set: images, accuracy (NaN for the foreign items), mean confidence, mean
    reconstruction MSE and mean negative ELBO."""
    return pd.DataFrame(
        {
            name: {
                "images": len(s),
                "accuracy": s["correct"].mean() if name != "foreign" else np.nan,
                "mean confidence": s["confidence"].mean(),
                "mean recon. MSE": s["mse"].mean(),
                "mean -ELBO (nats)": s["neg_elbo"].mean(),
            }
            for name, s in scores.items()
        }
    ).T


def seed_plot(bins: pd.DataFrame, scores: pd.DataFrame, min_low_count: int, n_boot: int = 500,
              seed: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The seed study's comparison and its numbers: the top populated confidence bin, the lowest
    populated one and the lowest bins pooled until they hold ``min_low_count`` images.

    ``bins`` is the :func:`~robustvae.calibration.confidence_bins` table of the reconstruction
    MSE of ``scores`` (one input set). Returns the table (confidence range, images, mean MSE and
    its 95% t-interval per row) and the numbers ``top_bin_mse``, ``top_bin_n``,
    ``top_bin_frac``, ``low_bin_mse``, ``low_bin_n``, ``low_pool_mse``, ``low_pool_n`` and
    ``low_pool_hi`` (the pooled bins' upper confidence edge), and the difference of the pooled
    bins' mean MSE minus the top bin's, ``low_top_diff``, with a 95% percentile-bootstrap
    interval (``low_top_diff_lo``, ``low_top_diff_hi``) that resamples the two groups of images
    separately (``n_boot`` resamples, :func:`robustvae.stats.bootstrap_draws` seeded ``seed``):
    above 0, the top bin's images are reconstructed measurably better.
    """
    full = bins[bins["count"] > 0]
    top, low = full.iloc[-1], full.iloc[0]
    n_pool = int(np.searchsorted(full["count"].cumsum().to_numpy(), min_low_count) + 1)
    pooled = full.iloc[:n_pool]
    conf, mse = scores["confidence"].to_numpy(), scores["mse"].to_numpy()
    in_pool = conf <= pooled["hi"].iloc[-1]
    in_top = cal.bin_indices(conf, len(bins)) == full.index[-1]
    pool_mean, pool_lo, pool_hi = cal.mean_ci(mse[in_pool])
    diff, diff_lo, diff_hi = _mean_difference(mse[in_pool], mse[in_top], n_boot, seed)
    table = pd.DataFrame(
        [
            [f"({top.lo:.2f}, {top.hi:.2f}]", top["count"], top["mean"], top.ci_low, top.ci_high],
            [f"({low.lo:.2f}, {low.hi:.2f}]", low["count"], low["mean"], low.ci_low, low.ci_high],
            [f"({pooled.lo.iloc[0]:.2f}, {pooled.hi.iloc[-1]:.2f}]", in_pool.sum(), pool_mean,
             pool_lo, pool_hi],
        ],
        index=["top bin", "lowest populated bin", f"lowest bins pooled (>= {min_low_count} images)"],
        columns=["confidence", "images", "mean MSE", "95% CI low", "95% CI high"],
    )
    numbers = {
        "top_bin_mse": top["mean"],
        "top_bin_n": int(top["count"]),
        "top_bin_frac": top["count"] / len(conf),
        "low_bin_mse": low["mean"],
        "low_bin_n": int(low["count"]),
        "low_pool_mse": pool_mean,
        "low_pool_n": int(in_pool.sum()),
        "low_pool_hi": pooled["hi"].iloc[-1],
        "low_top_diff": diff,
        "low_top_diff_lo": diff_lo,
        "low_top_diff_hi": diff_hi,
    }
    return table, numbers


def _mean_difference(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int,
                     level: float = 0.95) -> tuple[float, float, float]:
    """``(mean(a) - mean(b), low, high)`` for two independent groups: a percentile-bootstrap
    interval with each group resampled separately (:func:`robustvae.stats.bootstrap_draws`)."""
    draws = [a[i].mean() - b[j].mean() for i, j in stats.bootstrap_draws((len(a), len(b)), n_boot, seed)]
    lo, hi = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2])
    return float(a.mean() - b.mean()), float(lo), float(hi)


def _signal_row(s: pd.DataFrame, y) -> dict[str, float]:
    row = {"rho(MSE, conf.)": cal.spearman(s["mse"], s["confidence"])[0],
           "rho(-ELBO, conf.)": cal.spearman(s["neg_elbo"], s["confidence"])[0]}
    if y is None:
        return row
    yy = np.asarray(y)
    row["rho(MSE, conf.) within class"] = np.mean(
        [cal.spearman(s["mse"][yy == c], s["confidence"][yy == c])[0] for c in np.unique(yy)]
    )
    row["rho(MSE, correct)"] = cal.spearman(s["mse"], s["correct"])[0]
    row["rho(-ELBO, correct)"] = cal.spearman(s["neg_elbo"], s["correct"])[0]
    wrong = 1 - s["correct"]
    row["AUROC errors: conf."] = roc_auc_score(wrong, -s["confidence"])
    row["AUROC errors: MSE"] = roc_auc_score(wrong, s["mse"])
    return row


def signal_table(scores: Mapping[str, pd.DataFrame], labels: Mapping[str, Any]) -> pd.DataFrame:
    """One row per input set: Spearman's rho of the VAE losses with confidence and correctness,
    rho(MSE, confidence) averaged within true classes, and the AUROC of confidence and of the
    reconstruction MSE for telling the classifier's errors from its correct predictions.

    The columns that need labels are NaN for a set whose ``labels[name]`` is ``None``.
    """
    return pd.DataFrame({name: _signal_row(scores[name], labels[name]) for name in labels}).T


def signal_numbers(scores: Mapping[str, pd.DataFrame], signal: pd.DataFrame) -> dict[str, Any]:
    """The prose's numbers on the signal: ``rho_conf`` and ``p_conf`` (Spearman of MSE and
    confidence on the clean set, with its p-value), ``rho_corr`` (MSE and correctness),
    ``rho_within`` and the AUROCs ``auroc_conf``/``auroc_mse`` (clean) and
    ``auroc_conf_rot``/``auroc_mse_rot`` (rotated), read from :func:`signal_table`."""
    rho_conf, p_conf = cal.spearman(scores["clean"]["mse"], scores["clean"]["confidence"])
    rho_corr, _ = cal.spearman(scores["clean"]["mse"], scores["clean"]["correct"])
    return {
        "rho_conf": rho_conf,
        "p_conf": p_conf,
        "rho_corr": rho_corr,
        "rho_within": signal.loc["clean", "rho(MSE, conf.) within class"],
        "auroc_conf": signal.loc["clean", "AUROC errors: conf."],
        "auroc_mse": signal.loc["clean", "AUROC errors: MSE"],
        "auroc_conf_rot": signal.loc["rotated", "AUROC errors: conf."],
        "auroc_mse_rot": signal.loc["rotated", "AUROC errors: MSE"],
    }


def _subset(logits, scores: pd.DataFrame, labels, idx) -> dict[str, Any]:
    """Logits, labels (``None`` stays ``None``) and log reconstruction MSE of the rows ``idx``
    (all rows when ``idx`` is ``None``)."""
    mse = scores["mse"].to_numpy()
    if idx is None:
        return {"logits": logits, "y": None if labels is None else np.asarray(labels),
                "log_mse": np.log(mse)}
    return {"logits": logits[idx], "y": None if labels is None else np.asarray(labels)[idx],
            "log_mse": np.log(mse[idx])}


def _stack(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def calibration_sets(logits: Mapping[str, np.ndarray], scores: Mapping[str, pd.DataFrame],
                     labels: Mapping[str, Any], idx_cal) -> dict[str, dict[str, np.ndarray]]:
    """The two fitting sets of the recalibration maps, each a dict of ``logits``, ``y`` and
    ``log_mse``: ``"clean"`` (the clean calibration half) and ``"clean + shifts"`` (the
    calibration halves of the clean, rotated and noisy sets, stacked in that order)."""
    def half(name: str) -> dict[str, Any]:
        return _subset(logits[name], scores[name], labels[name], idx_cal)

    return {"clean": _stack([half("clean")]),
            "clean + shifts": _stack([half(n) for n in ("clean", "rotated", "noisy")])}


def evaluation_sets(logits: Mapping[str, np.ndarray], scores: Mapping[str, pd.DataFrame],
                    labels: Mapping[str, Any], idx_eval) -> dict[str, dict[str, Any]]:
    """Per input set, its evaluation rows as a dict of ``logits``, ``y`` and ``log_mse``: the
    evaluation half of every labelled set, and every item of a set without labels."""
    return {name: _subset(logits[name], scores[name], labels[name],
                          None if labels[name] is None else idx_eval)
            for name in labels}


def _apply(m, logits, log_mse) -> np.ndarray:
    """The probabilities of one fitted map (``None``: the plain softmax)."""
    if m is None:
        return torch.as_tensor(logits).softmax(1).numpy()
    if isinstance(m, cal.TemperatureScaling):
        return m.probs(logits)
    if isinstance(m, cal.ScoreTemperatureScaling):
        return m.probs(logits, log_mse)
    if isinstance(m, cal.ConfidenceLogistic):
        return m.probs(logits, [log_mse] if m.centers else None)
    raise TypeError(f"Unknown recalibration map {m!r}.")


def recalibrated_probs(maps: Mapping[str, Mapping[str, Any]],
                       eval_sets: Sets) -> dict[tuple[str, str, str], np.ndarray]:
    """The probabilities of every fitted map on every evaluation set, keyed
    ``(fitted on, method, set)``; "none" (no recalibration) only under the first setting.

    ``maps[setting][method]`` is ``None`` (plain softmax), a
    :class:`~robustvae.calibration.TemperatureScaling`, a
    :class:`~robustvae.calibration.ScoreTemperatureScaling` (score: the log MSE) or a
    :class:`~robustvae.calibration.ConfidenceLogistic` (extra score: the log MSE, if fitted with one).
    """
    first = next(iter(maps))
    return {
        (setting, method, name): _apply(m, d["logits"], d["log_mse"])
        for setting, methods in maps.items()
        for method, m in methods.items()
        for name, d in eval_sets.items()
        if not (setting != first and method == "none")
    }


def fitted_table(maps: Mapping[str, Mapping[str, Any]], fit_sets: Sets) -> pd.DataFrame:
    """One row per fitting set: its images and the fitted parameters (``T``, the VAE
    temperature's ``a`` and ``b``, the Platt weight ``w1`` and the Platt + VAE weights ``w1`` and
    ``w2``)."""
    rows = []
    for setting, m in maps.items():
        rows.append({
            "fitted on": setting,
            "images": len(fit_sets[setting]["y"]),
            "T": m["temperature"].temperature,
            "VAE temp. a": m["VAE temperature"].a,
            "VAE temp. b": m["VAE temperature"].b,
            "Platt w1": m["Platt"].weights[1],
            "Platt+VAE w1": m["Platt + VAE"].weights[1],
            "Platt+VAE w2 (MSE)": m["Platt + VAE"].weights[2],
        })
    return pd.DataFrame(rows).set_index("fitted on")


def fitted_numbers(fitted: pd.DataFrame) -> dict[str, Any]:
    """The prose's fitted parameters: ``T``, ``b`` and ``w2`` of the maps fitted on the clean
    set (``*_clean``) and on the clean and shifted sets (``*_shift``), from :func:`fitted_table`."""
    out = {}
    for suffix, setting in (("clean", "clean"), ("shift", "clean + shifts")):
        out[f"T_{suffix}"] = fitted.loc[setting, "T"]
        out[f"b_{suffix}"] = fitted.loc[setting, "VAE temp. b"]
        out[f"w2_{suffix}"] = fitted.loc[setting, "Platt+VAE w2 (MSE)"]
    return out


def conf_correct(probs, y) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, correct)`` of probability vectors against labels ``y``: the top probability
    and 1/0 for a right/wrong argmax (all 0 when ``y`` is ``None``)."""
    return probs.max(1), (np.zeros(len(probs)) if y is None else (probs.argmax(1) == y).astype(float))


def ece_table(probs: Mapping[tuple[str, str, str], np.ndarray], eval_sets: Sets,
              n_bins: int = 15) -> pd.DataFrame:
    """The ECE of every map (rows ``(fitted on, recalibration)``, "-" for none) on every
    evaluation set (columns ``ECE <set>``); on the unlabelled set the ECE is the mean confidence
    (column ``foreign: mean conf.``)."""
    table = pd.DataFrame(
        {
            (setting if method != "none" else "-", method): {
                name: cal.ece(*conf_correct(probs[(setting, method, name)], d["y"]), n_bins=n_bins)
                for name, d in eval_sets.items()
            }
            for (setting, method, _n) in probs
            if _n == "clean"
        }
    ).T
    table.index.names = ["fitted on", "recalibration"]
    table.columns = [f"ECE {n}" if n != "foreign" else "foreign: mean conf." for n in table.columns]
    return table


def variants_table(probs: Mapping[tuple[str, str, str], np.ndarray], eval_sets: Sets,
                   methods: Sequence[str], sets: Sequence[str] = ("clean", "rotated"),
                   setting: str = "clean", n_bins: int = 15) -> pd.DataFrame:
    """Every calibration measure of :func:`~robustvae.calibration.calibration_report`, per
    ``(set, recalibration)`` for the maps fitted on ``setting``."""
    table = pd.DataFrame(
        {
            (name, method): cal.calibration_report(
                probs[(setting, method, name)], eval_sets[name]["y"], n_bins=n_bins
            )
            for name in sets
            for method in methods
        }
    ).T
    table.index.names = ["set", "recalibration"]
    return table


def ece_differences(probs: Mapping[tuple[str, str, str], np.ndarray], eval_sets: Sets,
                    comparisons: Sequence[tuple[str, str, str]] = COMPARISONS, n_bins: int = 15,
                    n_boot: int = 500, seed: int = 0) -> pd.DataFrame:
    """The ECE difference of each comparison ``(fitted on, first, second)`` on every evaluation
    set, with its paired percentile-bootstrap 95% interval (same resampled images for both maps).

    Rows ``(fitted on, "first - second", evaluated on)``; columns ``ECE difference``,
    ``95% CI low``, ``95% CI high``. A negative difference: the first map is better calibrated.
    "none" is always taken from the maps fitted on ``"clean"``.
    """
    def ece_diff(p1, p2, y):
        c1, k1 = conf_correct(p1, y)
        c2, k2 = conf_correct(p2, y)
        return cal.bootstrap_ci(lambda a, b, c, d: cal.ece(a, b, n_bins) - cal.ece(c, d, n_bins),
                                c1, k1, c2, k2, n_boot=n_boot, seed=seed)

    rows = {}
    for setting, m1, m2 in comparisons:
        for name, d in eval_sets.items():
            p2 = probs[("clean" if m2 == "none" else setting, m2, name)]
            est, lo, hi = ece_diff(probs[(setting, m1, name)], p2, d["y"])
            rows[(setting, f"{m1} - {m2}", name)] = {"ECE difference": est, "95% CI low": lo,
                                                      "95% CI high": hi}
    diffs = pd.DataFrame(rows).T
    diffs.index.names = ["fitted on", "comparison", "evaluated on"]
    return diffs


def fmt_differences(diffs: pd.DataFrame) -> pd.DataFrame:
    """:func:`ece_differences` for reading: one column ``ECE difference [95% CI]``, as
    ``"-0.004 [-0.010, 0.002]"``."""
    return diffs.apply(
        lambda d: tables.interval(d["ECE difference"], d["95% CI low"], d["95% CI high"], precision=3),
        axis=1,
    ).to_frame("ECE difference [95% CI]")


def vae_vs_temperature(diffs: pd.DataFrame) -> dict[str, pd.Series]:
    """Each VAE-aware map minus temperature scaling, both fitted and evaluated on clean data: the
    row of :func:`ece_differences` for ``"VAE temperature"`` and for ``"Platt + VAE"``."""
    return {m: diffs.loc[("clean", f"{m} - temperature", "clean")]
            for m in ("VAE temperature", "Platt + VAE")}


#: The glued ECE differences of the prose: name -> row of :func:`ece_differences`.
_DIFFERENCES = {
    "d_ts": ("clean", "temperature - none", "clean"),
    "d_vts_clean": ("clean", "VAE temperature - temperature", "clean"),
    "d_pvae_ts_clean": ("clean", "Platt + VAE - temperature", "clean"),
    "d_vts_rot": ("clean", "VAE temperature - temperature", "rotated"),
    "d_vts_foreign": ("clean", "VAE temperature - temperature", "foreign"),
    "d_vts_noisy_shift": ("clean + shifts", "VAE temperature - temperature", "noisy"),
    "d_vts_clean_shift": ("clean + shifts", "VAE temperature - temperature", "clean"),
    "d_vts_foreign_shift": ("clean + shifts", "VAE temperature - temperature", "foreign"),
}


def calibration_numbers(ece: pd.DataFrame, variants: pd.DataFrame, diffs: pd.DataFrame,
                        scores: pd.DataFrame, idx_eval) -> dict[str, Any]:
    """The prose's calibration numbers: ECEs of :func:`ece_table` (``ece_*``, ``conf_foreign``),
    adaptive ECEs of :func:`variants_table` (``aece_none``, ``aece_ts``), the evaluation half's
    size and errors (``n_eval``, ``n_eval_errors``, from the clean ``scores``), the ECE
    differences of :func:`ece_differences` with their intervals (``d_*``, ``d_*_lo``,
    ``d_*_hi``) and two verdicts in words: ``vae_clean_verdict`` (is a VAE-aware map measurably
    better or worse than temperature scaling on clean data?) and ``ts_clean_verdict`` (does the
    interval of temperature scaling minus none contain 0?)."""
    out = {
        "ece_none": ece.loc[("-", "none"), "ECE clean"],
        "ece_ts": ece.loc[("clean", "temperature"), "ECE clean"],
        "ece_vts": ece.loc[("clean", "VAE temperature"), "ECE clean"],
        "ece_pvae": ece.loc[("clean", "Platt + VAE"), "ECE clean"],
        "ece_none_rot": ece.loc[("-", "none"), "ECE rotated"],
        "ece_ts_rot": ece.loc[("clean", "temperature"), "ECE rotated"],
        "ece_vts_rot": ece.loc[("clean", "VAE temperature"), "ECE rotated"],
        "ece_ts_rot_shift": ece.loc[("clean + shifts", "temperature"), "ECE rotated"],
        "ece_ts_clean_shift": ece.loc[("clean + shifts", "temperature"), "ECE clean"],
        "conf_foreign": ece.loc[("-", "none"), "foreign: mean conf."],
        "n_eval": len(idx_eval),
        "n_eval_errors": int((1 - scores["correct"].to_numpy()[idx_eval]).sum()),
        "ece_platt": ece.loc[("clean", "Platt"), "ECE clean"],
        "aece_none": variants.loc[("clean", "none"), "adaptive ECE"],
        "aece_ts": variants.loc[("clean", "temperature"), "adaptive ECE"],
    }
    for key, idx in _DIFFERENCES.items():
        for col, suffix in (("ECE difference", ""), ("95% CI low", "_lo"), ("95% CI high", "_hi")):
            out[key + suffix] = diffs.loc[idx, col]
    vae_vs_ts = vae_vs_temperature(diffs)
    beats = [m for m, d in vae_vs_ts.items() if d["95% CI high"] < 0]
    loses = [m for m, d in vae_vs_ts.items() if d["95% CI low"] > 0]
    if not beats and not loses:
        out["vae_clean_verdict"] = ("both contain 0: neither VAE-aware map is measurably better or "
                                    "worse calibrated than temperature scaling")
    else:
        out["vae_clean_verdict"] = "; ".join(
            [f"{m} is measurably better (interval below 0)" for m in beats]
            + [f"{m} is measurably worse (interval above 0)" for m in loses])
    ts = diffs.loc[("clean", "temperature - none", "clean")]
    out["ts_clean_verdict"] = ("contains 0: no measurable change"
                               if ts["95% CI low"] <= 0 <= ts["95% CI high"] else "excludes 0")
    return out


def selection_scores(scores: Mapping[str, pd.DataFrame], logits: Mapping[str, np.ndarray],
                     idx_eval, combo: cal.ConfidenceLogistic,
                     unlabelled: Sequence[str] = ("foreign",)
                     ) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    """Per input set, ``(ranking scores, correct)`` for selective prediction: higher = accepted
    first, by ``confidence`` (its logit), ``low recon. MSE``, ``high ELBO``, the fitted
    ``confidence + VAE (fitted)`` (``combo``, with the log MSE as its extra score) and the
    ``oracle`` (correctness itself).

    Labelled sets use their evaluation half ``idx_eval``, the ``unlabelled`` ones every item;
    ``"pool"`` concatenates all the sets in the order of ``scores``.
    """
    def one(name, idx):
        s = scores[name] if idx is None else scores[name].iloc[idx]
        lg = logits[name] if idx is None else logits[name][idx]
        return {
            "confidence": cal.confidence_logit(lg),
            "low recon. MSE": -s["mse"].to_numpy(),
            "high ELBO": -s["neg_elbo"].to_numpy(),
            "confidence + VAE (fitted)": combo.confidence(lg, [np.log(s["mse"].to_numpy())]),
            "oracle": s["correct"].to_numpy(),
        }, s["correct"].to_numpy()

    parts = {name: one(name, None if name in unlabelled else idx_eval) for name in scores}
    first = next(iter(parts))
    parts["pool"] = (
        {k: np.concatenate([parts[n][0][k] for n in scores]) for k in parts[first][0]},
        np.concatenate([parts[n][1] for n in scores]),
    )
    return parts


def aurc_table(parts: Mapping[str, tuple[Mapping[str, np.ndarray], np.ndarray]],
               unlabelled: Sequence[str] = ("foreign",)) -> pd.DataFrame:
    """The AURC (lower is better) of every ranking (rows) on every set of
    :func:`selection_scores` but the ``unlabelled`` ones (columns)."""
    aurcs = pd.DataFrame({name: {k: cal.aurc(v, correct) for k, v in sc.items()}
                          for name, (sc, correct) in parts.items() if name not in unlabelled})
    aurcs.index.name = "reject first the inputs with the lowest"
    return aurcs


def aurc_numbers(aurcs: pd.DataFrame) -> dict[str, Any]:
    """The prose's AURCs: rejecting by confidence, by reconstruction MSE and by the fitted
    combination on the pool (``aurc_*_pool``), and by confidence and MSE on the rotated
    (``*_rot``) and clean (``*_clean``) sets."""
    return {
        "aurc_conf_pool": aurcs.loc["confidence", "pool"],
        "aurc_mse_pool": aurcs.loc["low recon. MSE", "pool"],
        "aurc_combo_pool": aurcs.loc["confidence + VAE (fitted)", "pool"],
        "aurc_conf_rot": aurcs.loc["confidence", "rotated"],
        "aurc_mse_rot": aurcs.loc["low recon. MSE", "rotated"],
        "aurc_conf_clean": aurcs.loc["confidence", "clean"],
        "aurc_mse_clean": aurcs.loc["low recon. MSE", "clean"],
    }


def aurc_difference(parts: Mapping[str, tuple[Mapping[str, np.ndarray], np.ndarray]], first: str, second: str,
                    name: str = "pool", n_boot: int = 500, seed: int = 0) -> dict[str, float]:
    """The AURC of ranking ``first`` minus that of ranking ``second`` on the set ``name`` of
    :func:`selection_scores`, with a paired percentile-bootstrap 95% interval (the same resampled
    inputs for both rankings, :func:`robustvae.stats.bootstrap_ci`): ``aurc_diff``,
    ``aurc_diff_lo``, ``aurc_diff_hi``. Above 0: ``second`` ranks the errors measurably better
    (a lower AURC)."""
    scores, correct = parts[name]
    d, lo, hi = stats.bootstrap_ci(lambda s1, s2, k: cal.aurc(s1, k) - cal.aurc(s2, k), scores[first],
                                   scores[second], correct, n_boot=n_boot, seed=seed)
    return {"aurc_diff": d, "aurc_diff_lo": lo, "aurc_diff_hi": hi}

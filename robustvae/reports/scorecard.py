"""Chapter 9's tables, summary numbers and claims: the scorecard as the book shows it.

:mod:`robustvae.scorecard` scores each model on each column (an :class:`~robustvae.scorecard.Estimate`
per model and column); the functions here check the chapter's parameters, assemble its tables
(the scorecard with intervals and stars, the details, what each margin attack adds), the
numbers its prose quotes (:func:`findings`), and check its claims (:func:`check_claims`). The
columns' decimals and short headers are :data:`robustvae.score_report.DIGITS` and
:data:`~robustvae.score_report.SHORT`, shared with ``python -m robustvae.score``'s report.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from .. import scorecard as sc
from .. import stats, tables
from ..models import LIKELIHOODS
from ..score_report import DIGITS, SHORT
from ..utils import check_choice, check_positive

__all__ = [
    "check_parameters",
    "other_class_targets",
    "scorecard_table",
    "details_table",
    "details_display",
    "attack_additions",
    "trade_offs",
    "trade_off_intervals",
    "purification_tests",
    "purification_display",
    "margin_pairs",
    "margin_differences",
    "mse_difference",
    "findings",
    "check_claims",
]

_COUNTS = ("clf_epochs", "vae_epochs", "latent_dim", "extra_epochs", "lip_epochs", "n_eval", "n_ood",
           "iwae_k", "n_detect", "detect_steps", "n_samples", "n_purify", "purify_steps", "n_margin",
           "n_radii", "margin_steps", "lbfgs_starts", "lbfgs_iter", "lbfgs_stride", "n_mc", "n_boot")
_POSITIVE = ("beta_small", "tc_beta", "decoder_lipschitz", "lip_lr", "r", "detect_eps", "purify_eps",
             "min_radius", "max_radius")

#: The details table's columns as the page shows them (short headers) and their decimals.
_DETAIL_HEADERS = {
    "clean single-label share": "clean 1-label share",
    "purified clean acc.": "purified, clean",
    "purified acc., white-box only": "purified, white-box",
    "purified acc., BPDA only": "purified, BPDA",
    "margin: inputs never broken": "never broken",
    "AUROC of -ELBO": "AUROC -ELBO",
}
_DETAIL_DIGITS = {"AUROC -ELBO": 3, "clean 1-label share": 2, "purified, clean": 2, "purified, white-box": 2,
                  "purified, BPDA": 2}


def check_parameters(params: Mapping[str, Any]) -> None:
    """Return None if chapter 9's parameters are valid, else raise a ``ValueError`` naming the
    first bad one and what it must be.

    ``params`` maps each parameter's name to its value (the notebook's ``globals()``): counts
    must be positive integers (``refine_steps`` may be 0), sizes and radii positive numbers,
    ``betas`` and ``lip_margins`` non-empty tuples of positive numbers, ``prob`` in (0, 1),
    ``min_radius < max_radius``, ``n_purify <= n_detect`` and ``n_margin >= 10``.
    """
    p = params
    for name in _COUNTS:
        check_positive(name, p[name])
    check_positive("refine_steps", p["refine_steps"], allow_zero=True)
    for name in _POSITIVE:
        check_positive(name, p[name], integer=False)
    for name in ("betas", "lip_margins"):
        if not isinstance(p[name], (tuple, list)) or not p[name]:
            raise ValueError(f"Parameter {name!r} must be a non-empty tuple, got {p[name]!r}.")
        for v in p[name]:
            check_positive(name, v, integer=False)
    check_choice("likelihood", p["likelihood"], LIKELIHOODS)
    for a in p["margin_attacks"]:
        check_choice("margin_attacks", a, sc.MARGIN_ATTACKS)
    if not 0 < p["prob"] < 1:
        raise ValueError(f"prob must lie in (0, 1), got {p['prob']!r}.")
    if not p["min_radius"] < p["max_radius"]:
        raise ValueError(f"min_radius ({p['min_radius']}) must be below max_radius ({p['max_radius']}).")
    if p["n_purify"] > p["n_detect"]:
        raise ValueError(f"n_purify ({p['n_purify']}) must not exceed n_detect ({p['n_detect']}).")
    if p["n_margin"] < 10:
        raise ValueError(f"n_margin must be at least 10 (one image per class), got {p['n_margin']}.")


def other_class_targets(y: torch.Tensor | Sequence[int]) -> list[int]:
    """The index of each input's target image: the next input (cyclically) of another class.

    For the targeted latent margin attack: ``x_target = x[other_class_targets(y)]``. ``y`` must
    hold at least two classes.
    """
    n = len(y)
    return [next(j % n for j in range(i + 1, i + n) if y[j % n] != y[i]) for i in range(n)]


def _cell(card: pd.DataFrame, best: pd.Series, name: str, col: str) -> str:
    v, lo, hi = (card.loc[name, (col, s)] for s in ("value", "lo", "hi"))
    text = tables.interval(v, lo, hi, precision=DIGITS[col], keep_together=True)
    # a no-break space joins the star to its number: no lone star when a cell wraps
    if best.get(col) != name or np.isnan(v):
        return text
    point, _, bounds = text.partition(" [")
    return f"{point}{tables.NBSP}★" + (f" [{bounds}" if bounds else "")


def scorecard_table(card: pd.DataFrame, best: pd.Series | None = None,
                    names: Sequence[str] | None = None) -> pd.DataFrame:
    """The scorecard as text: one row per model (``names``, default all of ``card``), one column
    per :data:`~robustvae.scorecard.COLUMNS` entry (short headers), each cell the estimate and
    its interval, with ★ after the best model's estimate of each column.

    ``card`` is :func:`robustvae.scorecard.table`'s output; ``best`` the best model of each
    column (default :func:`~robustvae.scorecard.best_per_column` of its values).
    """
    names = list(card.index) if names is None else list(names)
    if best is None:
        best = sc.best_per_column(card.xs("value", axis=1, level="stat"))
    out = pd.DataFrame({SHORT[c]: [_cell(card, best, n, c) for n in names] for c in sc.COLUMNS}, index=names)
    out.index.name = "model"
    return out


def details_table(rows: Mapping[str, Mapping[str, sc.Estimate]]) -> pd.DataFrame:
    """What stands behind the columns, one row per model (numbers): the best OOD score and the
    AUROC of -ELBO, the share of clean inputs whose reconstructions all get one label, the
    purified accuracy on clean inputs and under each attack alone, and how many inputs no
    margin attack broke."""
    def per(col: str, fn) -> dict[str, Any]:
        return {n: fn(r[col]) for n, r in rows.items()}

    return pd.DataFrame({
        "best OOD score": per("ood_auroc", lambda e: e.note),
        "AUROC of -ELBO": per("ood_auroc", lambda e: e.per_input["auroc_by_score"]["-ELBO"]),
        "clean single-label share": per("detection_auroc", lambda e: e.per_input["single_label_clean"].mean()),
        "purified clean acc.": per("purified_acc", lambda e: e.per_input["clean"].mean()),
        "purified acc., white-box only": per("purified_acc", lambda e: e.per_input["white-box"].mean()),
        "purified acc., BPDA only": per("purified_acc", lambda e: e.per_input["BPDA"].mean()),
        "margin: inputs never broken": per("margin", lambda e: int(np.isinf(e.per_input["values"]).sum())),
    })


def details_display(details: pd.DataFrame) -> pd.DataFrame:
    """:func:`details_table` formatted for the page: short headers, one precision per column,
    the count of inputs never broken as an integer."""
    return tables.fmt_table(details.rename(columns=_DETAIL_HEADERS), precision=_DETAIL_DIGITS,
                            ints=["never broken"])


def attack_additions(rows: Mapping[str, Mapping[str, sc.Estimate]],
                     directions: Sequence[str] | None = None) -> pd.DataFrame:
    """What each margin attack adds, per model and attack (formatted): its budget, inputs broken,
    inputs where it found the portfolio's margin ("best"), where it beat every other attack
    ("lowered", "newly broken") and the median drop there
    (:func:`robustvae.scorecard.margin_summary`)."""
    adds = pd.concat({n: sc.margin_summary(r["margin"], directions) for n, r in rows.items()},
                     names=["model", "attack"])
    return tables.fmt_table(adds[["budget", "broken", "best", "lowered", "newly broken", "median drop"]])


def trade_offs(values: pd.DataFrame) -> dict[str, float]:
    """``{"rho_trade", "rho_witness"}``: Spearman's rho over the models of pixel MSE with the
    median margin, and of the margin with the detection AUROC (infinite margins left out)."""
    finite = values["margin"].replace(np.inf, np.nan)
    rho_trade = float(spearmanr(values["mse"], finite, nan_policy="omit").statistic)
    rho_witness = float(spearmanr(finite, values["detection_auroc"], nan_policy="omit").statistic)
    return {"rho_trade": rho_trade, "rho_witness": rho_witness}


def _auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    """AUROC of a score higher on ``pos``: the Mann-Whitney statistic, ties counted one half
    (the value of :func:`robustvae.consistency.detection_auroc`, without sklearn's overhead)."""
    neg = np.sort(neg)
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(neg) * len(pos)))


def _rho(a, b) -> float:
    """Spearman's rho with NaN (infinite margins) left out; 0 where no ranking is left (all
    values tied), the value that supports neither direction."""
    rho = spearmanr(a, b, nan_policy="omit").statistic
    return 0.0 if np.isnan(rho) else float(rho)


def trade_off_intervals(rows: Mapping[str, Mapping[str, sc.Estimate]], n_boot: int = 500, seed: int = 0,
                        level: float = 0.95) -> dict[str, float]:
    """:func:`trade_offs` with percentile-bootstrap intervals over the test inputs:
    ``rho_trade``, ``rho_trade_lo``, ``rho_trade_hi``, ``rho_witness``, ``rho_witness_lo``,
    ``rho_witness_hi``.

    Each resample draws the inputs once and uses the same indices for every model (the models
    were scored on the same inputs): the MSE images, the margin images, and the clean and the
    attacked images of the detection AUROC (those two resampled separately, as the column's own
    interval does); then recomputes each model's mean MSE, median margin (infinite: left out)
    and detection AUROC from the per-input numbers of the :class:`~robustvae.scorecard.Estimate`,
    and the two rank correlations across the models.

    The interval covers the choice of test inputs only. The models are not a random sample of
    VAEs, nor independent of each other (same data, classifier and architecture families), and
    each was trained once: an interval above 0 says that the ranking of these models is no
    accident of the inputs, not that the correlation holds for VAEs in general (the seed sweep
    re-checks it on retrained models).
    """
    names = list(rows)
    mse = np.stack([rows[n]["mse"].per_input["values"] for n in names])
    margin = np.stack([rows[n]["margin"].per_input["values"] for n in names])
    clean = np.stack([rows[n]["detection_auroc"].per_input["clean"] for n in names])
    adv = np.stack([rows[n]["detection_auroc"].per_input["adversarial"] for n in names])

    def both(i_mse, i_margin, i_clean, i_adv) -> tuple[float, float]:
        med = np.median(margin[:, i_margin], axis=1)
        med[np.isinf(med)] = np.nan
        det = [_auroc(clean[k, i_clean], adv[k, i_adv]) for k in range(len(names))]
        return _rho(mse[:, i_mse].mean(1), med), _rho(med, det)

    point = both(*(slice(None),) * 4)
    draws = np.array([both(*ix) for ix in stats.bootstrap_draws(
        (mse.shape[1], margin.shape[1], clean.shape[1], adv.shape[1]), n_boot, seed)])
    lo, hi = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2], axis=0)
    return {"rho_trade": point[0], "rho_trade_lo": float(lo[0]), "rho_trade_hi": float(hi[0]),
            "rho_witness": point[1], "rho_witness_lo": float(lo[1]), "rho_witness_hi": float(hi[1])}


def purification_tests(rows: Mapping[str, Mapping[str, sc.Estimate]], undefended: sc.Estimate) -> pd.DataFrame:
    """Each purified pipeline against no purifier, image by image: one row per model with its
    robust accuracy under the adaptive attack, the images the undefended classifier keeps and
    the pipeline loses (``lost``) or the reverse (``gained``), and the one-sided exact McNemar
    p-value of "the pipeline keeps fewer images" (:func:`robustvae.stats.mcnemar_exact`).

    ``undefended`` is the undefended classifier's accuracy under PGD on the same images, as a
    :class:`~robustvae.scorecard.Estimate` whose ``per_input["values"]`` is 1 for an image it
    keeps (the order of the purification column's images).
    """
    kept = np.asarray(undefended.per_input["values"]).astype(bool)
    out = {}
    for n, r in rows.items():
        robust = np.asarray(r["purified_acc"].per_input["values"]).astype(bool)
        lost, gained, p = stats.mcnemar_exact(kept, robust)
        out[n] = {"purified acc.": robust.mean(), "lost": lost, "gained": gained, "McNemar p": p}
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "model"
    return table


def purification_display(tests: pd.DataFrame) -> pd.DataFrame:
    """:func:`purification_tests` for the page: accuracies to 2 decimals, counts as integers,
    p-values to 2 significant digits."""
    shown = tables.fmt_table(tests.drop(columns="McNemar p"), precision={"purified acc.": 2},
                             ints=["lost", "gained"])
    shown["McNemar p"] = [f"{p:.2g}" for p in tests["McNemar p"]]
    return shown


def margin_pairs(names: Sequence[str], roles: Mapping[str, str],
                 lip_names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """The pairs of models whose median margins the chapter compares (for
    :func:`margin_differences`): ``"top"`` (the largest beta against the VAE), ``"lip_tc"`` (the
    least constrained Lipschitz VAE against the beta-TCVAE), each Lipschitz VAE's name (it
    against the VAE), and ``"<model> - <base>"`` for every model other than the VAEs of chapters
    1 and 3 (``roles["vae"]``, ``roles["small"]``) against each of them."""
    vae, small = roles["vae"], roles["small"]
    pairs = {"top": (roles["top"], vae), "lip_tc": (lip_names[0], roles["tc"])}
    pairs.update({n: (n, vae) for n in lip_names})
    pairs.update({f"{n} - {b}": (n, b) for n in names if n not in (vae, small) for b in (vae, small)})
    return pairs


def _above_smallest(diffs: Mapping[str, tuple[float, float, float]], names: Sequence[str],
                    roles: Mapping[str, str]) -> tuple[float, str]:
    """The lowest lower bound of the intervals "every other model minus the VAE of chapter 1 or
    3" (of :func:`margin_pairs`) and the pair it belongs to."""
    keys = [f"{n} - {b}" for n in names if n not in (roles["vae"], roles["small"])
            for b in (roles["vae"], roles["small"])]
    key = min(keys, key=lambda k: diffs[k][1])
    return float(diffs[key][1]), key


def mse_difference(rows: Mapping[str, Mapping[str, sc.Estimate]], a: str, b: str, n_boot: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """``(mean MSE of a - mean MSE of b, lo, hi)`` on the same images, with a paired percentile
    bootstrap 95% interval (:func:`robustvae.stats.bootstrap_ci`)."""
    return stats.bootstrap_ci(lambda x, y: float(x.mean() - y.mean()), rows[a]["mse"].per_input["values"],
                              rows[b]["mse"].per_input["values"], n_boot=n_boot, seed=seed)


#: Two models have "a similar MSE" when the paired 95% interval of their MSE difference lies
#: within +- this much (an equivalence margin; the threshold the claim used on the point values).
SIMILAR_MSE = 0.005

#: The level of every test of the chapter's findings.
ALPHA = 0.05


def margin_differences(rows: Mapping[str, Mapping[str, sc.Estimate]], pairs: Mapping[str, tuple[str, str]],
                       seed: int = 0, n_boot: int = 2000) -> dict[str, tuple[float, float, float]]:
    """Per named pair ``(a, b)`` of models: ``(median margin of a - median margin of b, lo, hi)``
    with a paired bootstrap 95% interval on the same inputs, ``n_boot`` resamples
    (:func:`robustvae.stats.median_difference`)."""
    m = {n: rows[n]["margin"].per_input["values"] for pair in pairs.values() for n in pair}
    return {k: stats.median_difference(m[a], m[b], n_boot=n_boot, seed=seed) for k, (a, b) in pairs.items()}


#: The glued numbers that are one model's estimate: name -> (role, column); see :func:`findings`.
_VALUES = {
    "elbo_vae": ("vae", "elbo"), "mse_vae": ("vae", "mse"), "mse_top": ("top", "mse"),
    "margin_vae": ("vae", "margin"), "margin_top": ("top", "margin"), "margin_small": ("small", "margin"),
    "margin_tc": ("tc", "margin"), "elbo_small": ("small", "elbo"), "mse_small": ("small", "mse"),
    "mse_tc": ("tc", "mse"), "elbo_tc": ("tc", "elbo"), "mse_lip0": ("lip0", "mse"),
    "margin_lip0": ("lip0", "margin"), "elbo_lip0": ("lip0", "elbo"), "ood_vae": ("vae", "ood_auroc"),
    "det_vae": ("vae", "detection_auroc"), "det_small": ("small", "detection_auroc"),
    "det_top": ("top", "detection_auroc"), "pur_vae": ("vae", "purified_acc"),
    "pur_top": ("top", "purified_acc"), "rho_vae": ("vae", "spearman"),
}


def findings(rows: Mapping[str, Mapping[str, sc.Estimate]], details: pd.DataFrame, roles: Mapping[str, str],
             lip_names: Sequence[str], diffs: Mapping[str, tuple[float, float, float]],
             undefended: sc.Estimate) -> dict[str, Any]:
    """The numbers chapter 9's "What we found" quotes, by glue name (for ``rv.record``).

    ``roles`` names the models the prose singles out: ``"vae"`` (chapter 1's), ``"small"``
    (chapter 3's small beta), ``"top"`` (the largest beta), ``"tc"`` (the beta-TCVAE),
    ``"lip0"`` and ``"lipmax"`` (the least and the most constrained Lipschitz VAE, of
    ``lip_names``). ``diffs`` holds :func:`margin_differences` of the pairs of
    :func:`margin_pairs`; ``undefended`` the undefended classifier's per-image accuracy (as in
    :func:`purification_tests`). The numbers: each role's estimates (``elbo_vae``,
    ``margin_top``, ...), intervals (``margin_vae_lo``, ``ood_vae_lo``, ...), the details behind
    them, the worst and best models of some columns and the best of margin and MSE, the
    Lipschitz VAEs' ranges, ratios of empirical to certified margins, the paired differences'
    intervals (``diff_*``; ``diff_two_lo``: the lowest bound of the ``n_two_pairs`` differences
    of every other model's margin minus each of the two smallest), the paired MSE difference of
    the least constrained Lipschitz VAE and the beta-TCVAE (``mse_lip_tc``, ``_lo``, ``_hi``;
    ``similar_mse``: the margin its interval must lie within), and the McNemar tests of the
    purified pipelines against no purifier (``pur_p_max``, the largest p-value, and its model
    ``pur_p_max_name``; ``pur_sig``, how many have p < :data:`ALPHA`; ``pur_lost`` and
    ``pur_gained`` of that model).
    """
    card = sc.table(rows)
    values = card.xs("value", axis=1, level="stat")
    best = sc.best_per_column(values)
    lip = list(lip_names)
    vae, top, lipmax = roles["vae"], roles["top"], roles["lipmax"]

    def v(n: str, c: str) -> float:
        return float(values.loc[n, c])

    out: dict[str, Any] = {key: v(roles[role], c) for key, (role, c) in _VALUES.items()}
    out.update(
        margin_vae_lo=float(card.loc[vae, ("margin", "lo")]), margin_vae_hi=float(card.loc[vae, ("margin", "hi")]),
        margin_top_lo=float(card.loc[top, ("margin", "lo")]), margin_top_hi=float(card.loc[top, ("margin", "hi")]),
        rho_vae_hi=float(card.loc[vae, ("spearman", "hi")]),
        rho_top=v(top, "spearman"), rho_lipmax=v(lipmax, "spearman"), pur_lipmax=v(lipmax, "purified_acc"),
        pur_clean_lipmax=float(details.loc[lipmax, "purified clean acc."]),
        pur_clean_vae=float(details.loc[vae, "purified clean acc."]),
        single_top=float(details.loc[top, "clean single-label share"]),
        single_vae=float(details.loc[vae, "clean single-label share"]),
    )
    for col, key, pick in (("ood_auroc", "ood_min", "min"), ("detection_auroc", "det_min", "min"),
                           ("purified_acc", "pur_max", "max")):
        out[key] = float(getattr(values[col], pick)())
        out[key + "_name"] = getattr(values[col], "idx" + pick)()
    out.update(best_margin_name=best["margin"], best_mse_name=best["mse"])
    lip_margin = values.loc[lip, "margin"]
    out.update(lip_margin_min=float(lip_margin.min()), lip_margin_max=float(lip_margin.max()),
               lip_mse_min=float(values.loc[lip, "mse"].min()), lip_mse_max=float(values.loc[lip, "mse"].max()),
               lip_elbo_max=float(values.loc[lip, "elbo"].max()))
    ratio = lip_margin / values.loc[lip, "certified"]
    out.update(cert_ratio_min=float(ratio.min()), cert_ratio_max=float(ratio.max()))
    out["emp_over_cert"] = min(
        float((rows[n]["margin"].per_input["values"] / rows[n]["certified"].per_input["values"]).min())
        for n in lip)
    out.update(diff_top_lo=diffs["top"][1], diff_top_hi=diffs["top"][2],
               diff_lip_lo_min=min(diffs[n][1] for n in lip),
               diff_lip_tc_lo=diffs["lip_tc"][1], diff_lip_tc_hi=diffs["lip_tc"][2],
               diff_two_lo=_above_smallest(diffs, list(rows), roles)[0], n_two_pairs=2 * (len(rows) - 2),
               similar_mse=SIMILAR_MSE,
               ood_vae_lo=float(card.loc[vae, ("ood_auroc", "lo")]))
    out.update(zip(("mse_lip_tc", "mse_lip_tc_lo", "mse_lip_tc_hi"), mse_difference(rows, roles["lip0"], roles["tc"])))
    pur = purification_tests(rows, undefended)
    worst = pur["McNemar p"].idxmax()
    out.update(pur_p_max=float(pur.loc[worst, "McNemar p"]), pur_p_max_name=worst,
               pur_sig=int((pur["McNemar p"] < ALPHA).sum()), pur_lost=int(pur.loc[worst, "lost"]),
               pur_gained=int(pur.loc[worst, "gained"]))
    return out


def check_claims(claims, rows: Mapping[str, Mapping[str, sc.Estimate]], details: pd.DataFrame,
                 roles: Mapping[str, str], requested: Mapping[str, float],
                 diffs: Mapping[str, tuple[float, float, float]], undefended: sc.Estimate,
                 rhos: Mapping[str, float]):
    """Return ``claims`` (a :class:`robustvae.Claims`) after checking chapter 9's claims on it, in
    this order (kind in brackets; all but the chapter-7 checks ``tuned``). Every finding is
    judged on a 95% interval or a test at level :data:`ALPHA`; a finding about several models
    ("every", "both") holds only if each of its intervals or tests does (an intersection-union
    test: Berger, Technometrics 1982; no correction for the number of models is needed).

    1. per Lipschitz VAE (``requested``: name -> requested margin R*), chapter 7: it meets its
       requested certificate (check); no attack breaks r-robustness below the certificate, input
       by input (check); its ELBO is below the standard VAE's (check);
    2. chapter 6: the largest-beta VAE (``roles["top"]``) has a larger median margin than the VAE,
       paired bootstrap interval of the difference above 0 (finding); and reconstructs worse,
       higher MSE (check);
    3. chapter 7: every Lipschitz VAE's median margin is above the VAE's, all paired intervals
       above 0 (finding);
    4. every model's median margin is above both of the VAEs of chapters 1 and 3, all paired
       intervals of the differences above 0 (finding);
    5. at a similar MSE (the paired interval of the MSE difference within
       +-:data:`SIMILAR_MSE`) the least constrained Lipschitz VAE has a larger median margin than
       the beta-TCVAE, paired interval above 0 (finding);
    6. chapter 2: the lower end of the interval of the VAE's best OOD AUROC is >= 0.95 (finding);
    7. chapter 3: consistency detects PGD inputs better than chance, the VAE's interval above
       0.5 (finding);
    8. chapter 4: BPDA never beats the white-box attack (check); under the adaptive attack every
       purified pipeline keeps significantly fewer images than the ``undefended`` classifier
       (:func:`purification_tests`: one-sided exact McNemar, p < :data:`ALPHA` for each; finding);
    9. chapter 5: the VAE's Spearman(MSE, confidence) interval lies below 0 (finding);
    10. across the models (``rhos``, :func:`trade_off_intervals`): MSE and margin rise together,
        interval of ``rho_trade`` above 0, and margin and detection AUROC trade off, interval of
        ``rho_witness`` below 0 (findings).

    ``roles``, ``diffs`` and ``undefended`` are as in :func:`findings`; ``details`` is
    :func:`details_table`.
    """
    card = sc.table(rows)
    values = card.xs("value", axis=1, level="stat")
    names = list(rows)
    lip_names = list(requested)
    vae_name, small_name, top_name, tc_name = roles["vae"], roles["small"], roles["top"], roles["tc"]

    def v(n: str, c: str) -> float:
        return float(values.loc[n, c])

    # chapter 7: every Lipschitz VAE meets its certificate, and no attack breaks r-robustness below it
    for n in lip_names:
        cert_n, emp_n = rows[n]["certified"].per_input["values"], rows[n]["margin"].per_input["values"]
        claims.check(f"{n}: meets its requested certificate", cert_n.min() >= requested[n],
                     f"certified {cert_n.min():.4f}, requested {requested[n]:g}", kind="check")
        claims.check(f"{n}: no attack breaks r-robustness below the certificate", (emp_n >= cert_n).all(),
                     f"smallest empirical margin {emp_n.min():.3f}, certified {cert_n.min():.3f}", kind="check")
        claims.check(f"{n}: its ELBO is below the standard VAE's", v(n, "elbo") < v(vae_name, "elbo"),
                     f"{v(n, 'elbo'):.1f} vs {v(vae_name, 'elbo'):.1f}", kind="check")
    T = dict(tuned=True)
    # chapter 6: the largest-beta VAE has a larger median margin than the VAE, and pays in reconstruction
    d = diffs["top"]
    claims.check(
        f"{top_name} has a larger median margin than the VAE (paired bootstrap 95% interval of "
        "the difference above 0)", d[1] > 0,
        f"{v(top_name, 'margin'):.3f} vs {v(vae_name, 'margin'):.3f}, difference in [{d[1]:.3f}, {d[2]:.3f}]",
        kind="finding", **T)
    claims.check(f"{top_name} reconstructs worse than the VAE", v(top_name, "mse") > v(vae_name, "mse"),
                 f"MSE {v(top_name, 'mse'):.4f} vs {v(vae_name, 'mse'):.4f}", kind="check", **T)
    # chapter 7: even the least robust Lipschitz VAE resists attacks beyond the standard VAE's breaking point
    lowest = min(diffs[n][1] for n in lip_names)
    claims.check(
        "every Lipschitz VAE's median margin is above the VAE's (paired bootstrap 95% intervals "
        "of the differences above 0)", lowest > 0,
        f"smallest {values.loc[lip_names, 'margin'].min():.3f} vs {v(vae_name, 'margin'):.3f}; lowest interval "
        f"bound {lowest:.3f}", kind="finding", **T)
    # this chapter: the two best-fitting VAEs are the easiest to push, every other model above both
    lowest, pair = _above_smallest(diffs, names, roles)
    n_pairs = 2 * (len(names) - 2)
    claims.check(
        "every other model's median margin is above those of the VAEs of chapters 1 and 3 (all "
        f"{n_pairs} paired bootstrap 95% intervals of the differences above 0)", lowest > 0,
        f"lowest interval bound {lowest:.3f} ({pair})", kind="finding", **T)
    # this chapter: at a similar MSE the least constrained Lipschitz VAE has the larger margin
    lip0, d = lip_names[0], diffs["lip_tc"]
    dm = mse_difference(rows, lip0, tc_name)
    claims.check(
        f"at a similar MSE, {lip0} has a larger median margin than {tc_name} (paired bootstrap "
        f"95% intervals: of the margin difference above 0, of the MSE difference within +-{SIMILAR_MSE:g})",
        d[1] > 0 and -SIMILAR_MSE < dm[1] and dm[2] < SIMILAR_MSE,
        f"margins {v(lip0, 'margin'):.3f} vs {v(tc_name, 'margin'):.3f}, difference in "
        f"[{d[1]:.3f}, {d[2]:.3f}]; MSE {v(lip0, 'mse'):.4f} vs {v(tc_name, 'mse'):.4f}, difference in "
        f"[{dm[1]:.4f}, {dm[2]:.4f}]", kind="finding", **T)
    # chapter 2: the VAE's best score separates Fashion-MNIST (whole interval at or above 0.95)
    lo = card.loc[vae_name, ("ood_auroc", "lo")]
    claims.check("the VAE's best OOD score reaches AUROC >= 0.95 (lower end of its 95% interval)", lo >= 0.95,
                 f"{v(vae_name, 'ood_auroc'):.3f}, interval from {lo:.3f}", kind="finding", **T)
    # chapter 3: consistency detects PGD inputs better than chance (whole interval above 0.5)
    lo = card.loc[vae_name, ("detection_auroc", "lo")]
    claims.check("consistency detects PGD inputs better than chance (interval above 0.5)", lo > 0.5,
                 f"interval from {lo:.3f}", kind="finding", **T)
    # chapter 4: against the adaptive attack every purified pipeline is worse than no purifier
    same = [n for n in names if details.loc[n, "purified acc., white-box only"] == v(n, "purified_acc")]
    claims.check("BPDA never beats the white-box attack (as the prose says)", len(same) == len(names),
                 f"{len(same)} of {len(names)} models", kind="check", **T)
    pur = purification_tests(rows, undefended)
    worst = pur["McNemar p"].idxmax()
    claims.check(
        "under the adaptive attack every purified pipeline keeps significantly fewer images than no "
        f"purifier (exact McNemar on the same images, one-sided, p < {ALPHA:g} for each)",
        bool((pur["McNemar p"] < ALPHA).all()),
        f"{int((pur['McNemar p'] < ALPHA).sum())} of {len(pur)} significant; largest p = "
        f"{pur.loc[worst, 'McNemar p']:.2g} ({worst}: {pur.loc[worst, 'purified acc.']:.2f} vs undefended "
        f"{undefended.value:.2f}, lost {pur.loc[worst, 'lost']}, gained {pur.loc[worst, 'gained']})",
        kind="finding", **T)
    # chapter 5: reconstruction error falls as confidence rises (whole interval below 0)
    hi = card.loc[vae_name, ("spearman", "hi")]
    claims.check("the VAE's Spearman(MSE, confidence) is clearly negative (interval below 0)", hi < 0,
                 f"interval up to {hi:.3f}", kind="finding", **T)
    # this chapter: robustness costs reconstruction and detection, across the models (one seed each,
    # not independent: the interval resamples the test inputs only)
    claims.check(
        "MSE and margin rise together across the models (Spearman's rho over the models, 95% "
        "bootstrap interval over the test inputs above 0)", rhos["rho_trade_lo"] > 0,
        f"{rhos['rho_trade']:.2f} [{rhos['rho_trade_lo']:.2f}, {rhos['rho_trade_hi']:.2f}]", kind="finding", **T)
    claims.check(
        "margin and detection AUROC trade off across the models (Spearman's rho over the models, 95% "
        "bootstrap interval over the test inputs below 0)", rhos["rho_witness_hi"] < 0,
        f"{rhos['rho_witness']:.2f} [{rhos['rho_witness_lo']:.2f}, {rhos['rho_witness_hi']:.2f}]",
        kind="finding", **T)
    return claims

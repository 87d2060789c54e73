"""Chapter 2's test sets, tables and summary numbers: OOD detection in two directions.

The chapter (``book/02_ood.md``) scores every test set with :func:`robustvae.ood.score_sets` and
tabulates the scores with :func:`robustvae.ood.metrics_table`; the functions here build its test
sets (:func:`ood_sets`), check its parameters, and turn those tables into what it shows: the
models' table, the AUROC matrices, the headline pairs with bootstrap intervals, the comparison
with the published numbers, and the numbers its prose and claims quote. The figures are in
:mod:`robustvae.plots.ood`. With ``background_rate > 0`` (the ``background`` rerun profile) the
chapter also scores the headline pair with Ren et al.'s likelihood ratio (:func:`background_ratio`); with
``ic_decoders`` set (the ``decoders`` rerun profile) it trains the chapter's Fashion-MNIST VAE with other
decoder likelihoods (:func:`decoder_vae`) and compares the raw likelihood and input complexity across
decoders (:func:`decoder_scores`, :func:`decoder_metrics`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import discrete, ood
from ..data import load_dataset, stratified_subset
from ..models import LIKELIHOODS
from ..stats import bootstrap_draws
from ..tables import DASH, fmt_number, fmt_table, interval
from ..utils import check_fields

__all__ = [
    "LIKE", "IC", "CEIL", "MSP", "ENERGY", "LATENT", "SHORT", "PUBLISHED", "BACKGROUND", "BACKGROUND_ALONE",
    "check_parameters", "fixed_subset", "ood_sets", "models_table", "auroc_matrix", "auroc_table",
    "direction1_numbers", "direction2_numbers", "finding_intervals", "pair_metrics", "regret_numbers", "background_ratio",
    "background_numbers", "background_interval", "paper_table", "background_table", "headline_table",
    "full_table", "pairs_auroc_table", "DECODERS", "DECODER_SETS", "decoder_vae", "decoder_scores",
    "decoder_metrics", "decoder_numbers", "decoder_table", "auroc_interval", "decoder_claims",
]

#: The scores' names (as :func:`robustvae.ood.vae_detectors` and
#: :func:`robustvae.ood.classifier_detectors` give them) that the chapter quotes.
LIKE = "-log p(x) (IWAE)"
IC = "input complexity S(x)"
CEIL = "-log p(x) - sum H_b(x)"
MSP = "max softmax (classifier)"
ENERGY = "energy (classifier)"
#: The encoder's latent signals.
LATENT = ["KL(q(z|x) || p(z))", "||mu(x)||", "mean sigma^2(x)", "Mahalanobis(mu)"]
#: Short OOD-set names for the tables' headers.
SHORT = {
    "Fashion-MNIST": "Fashion",
    "uniform noise": "uniform",
    "Gaussian noise": "Gaussian",
    "rotated/flipped": "rot./flip.",
    "sklearn 8x8 digits": "8x8 digits",
}
#: The likelihood ratio's row in :data:`PUBLISHED` and :func:`background_ratio`'s results.
BACKGROUND = "likelihood ratio, background model"
#: The background model's own likelihood as a score, in :func:`background_ratio`'s results.
BACKGROUND_ALONE = "-log p(x), background model alone"
#: Published AUROCs on Fashion-MNIST (in) vs MNIST (out), from the papers
#: (``shared/REFERENCES.md``), and the model this book runs for each (``{steps}``: the posterior
#: fit's Adam steps; ``{rate}``: the background model's mutation rate); None where a paper gives
#: no number for this pair, or the book runs none.
PUBLISHED = {
    "-log p(x)": ("0.09 (PixelCNN++, Ren et al. 2019)", "VAE, Bernoulli decoder, IWAE"),
    BACKGROUND: ("0.99 (Ren et al. 2019)", "VAE vs the same VAE trained on {rate}-mutated images"),
    "Likelihood Regret": ("0.99 (Xiao et al. 2020)", "VAE, posterior fit, {steps} steps"),
    "hierarchical VAE, LLR>k": ("0.98 (Havtorn et al. 2021)", None),
    "input complexity": (None, "VAE, Bernoulli likelihood vs PNG"),
    "Bernoulli-ceiling distance": (None, "this book's own"),
}
#: The decoder likelihoods chapter 2 can compare (``ic_decoders``: every one but the chapter's
#: Bernoulli), with their names for tables, and the short names of their glued numbers.
DECODERS = {
    "bernoulli": ("Bernoulli", "bern"),
    "continuous-bernoulli": ("continuous Bernoulli", "cb"),
    discrete.DISCRETIZED: ("discretized logistic", "dl"),
    "gaussian": ("Gaussian (fixed sigma)", "gauss"),
}
#: The test sets of direction 2 the decoders are compared on, with the short names of their glued numbers.
DECODER_SETS = {"MNIST": "mnist", "uniform noise": "noise"}
_COUNTS = ("clf_epochs", "vae_epochs", "latent_dim", "fashion_n_train", "fashion_vae_epochs",
           "fashion_clf_epochs", "n_test", "n_synthetic", "iwae_k", "regret_steps", "n_boot")


def check_parameters(params: Mapping[str, Any]) -> None:
    """Return None if the chapter's parameters are valid; raise a ``ValueError`` naming the first bad one.

    ``params`` maps the parameters' names to their values (the chapter passes ``globals()``):
    ``likelihood`` one of :data:`robustvae.models.LIKELIHOODS`; the epochs, sizes and counts
    positive integers; ``beta`` a number >= 0; ``n_synthetic`` at most ``n_test`` (the transformed
    sets are built from the in-distribution test images); ``background_rate`` a number in [0, 1)
    (0: the likelihood ratio is not run); ``ic_decoders`` a tuple of distinct names of :data:`DECODERS`
    other than ``"bernoulli"`` (empty: the decoders are not compared).
    """
    p = SimpleNamespace(**{k: params[k] for k in ("likelihood", "beta", "background_rate", "ic_decoders",
                                                  *_COUNTS)})
    check_fields(p, choices={"likelihood": LIKELIHOODS}, counts=_COUNTS, non_negative=("beta",))
    if p.n_synthetic > p.n_test:
        raise ValueError(f"n_synthetic ({p.n_synthetic}) must not exceed n_test ({p.n_test}): "
                         "transformed sets are built from the in-distribution test images.")
    r = p.background_rate
    if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)) or not 0 <= r < 1:
        raise ValueError(f"Parameter 'background_rate' must be a number in [0, 1): the fraction of pixels "
                         f"mutated in the background model's training images (0: not run; Ren et al. "
                         f"use 0.1 to 0.3), got {r!r}.")
    extra = [d for d in DECODERS if d != "bernoulli"]
    dec = p.ic_decoders
    if (not isinstance(dec, (tuple, list)) or any(d not in extra for d in dec) or len(set(dec)) != len(dec)):
        raise ValueError(f"Parameter 'ic_decoders' must be a tuple of distinct decoder likelihoods from "
                         f"{', '.join(map(repr, extra))} (the chapter's own VAE is the Bernoulli one; () compares "
                         f"none), got {dec!r}.")


def fixed_subset(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """Return a fixed class-balanced subset of ``n`` images of a test split, in a seeded random order."""
    x, y = load_dataset(name, "test")
    x = stratified_subset(x, y, n, seed=seed)[0]
    return x[torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))]


def ood_sets(in_name: str, other_name: str, other_label: str, n_test: int, n_synthetic: int,
             seed: int = 0) -> dict[str, torch.Tensor]:
    """Return one direction's test sets: the in-distribution test images first, then every OOD set.

    ``n_test`` images of ``in_name``'s and of ``other_name``'s test split (:func:`fixed_subset`,
    the latter under ``other_label``), then ``n_synthetic`` of each of uniform noise, Gaussian
    noise, constant images, negatives and rotated or flipped copies of the first
    in-distribution images, and scikit-learn's 8x8 digits (:mod:`robustvae.ood`), all seeded.
    """
    x_in, k = fixed_subset(in_name, n_test, seed), n_synthetic
    return {
        "in-distribution": x_in,
        other_label: fixed_subset(other_name, n_test, seed),
        "uniform noise": ood.uniform_noise(k, seed=seed),
        "Gaussian noise": ood.gaussian_noise(k, seed=seed),
        "constant": ood.constant_images(k, seed=seed),
        "inverted": ood.invert(x_in[:k]),
        "rotated/flipped": ood.rotate_flip(x_in[:k], seed=seed),
        "sklearn 8x8 digits": ood.sklearn_digits(k, seed=seed)[0],
    }


def models_table(dataset: str, classifier1, vae1, classifier2, vae2, x_in1: torch.Tensor) -> pd.DataFrame:
    """Return the two directions' models: classifier test accuracy and VAE test ELBO (nats), rounded to 3.

    Direction 1's classifier is tested on ``dataset``'s whole test split and its VAE on ``x_in1``
    (the direction's in-distribution test images); direction 2's on Fashion-MNIST's whole test split.
    """
    from ..training import accuracy, vae_metrics

    x_fashion_test, y_fashion_test = load_dataset("fashion-mnist", "test")
    acc = {"direction 1": accuracy(classifier1, *load_dataset(dataset, "test")),
           "direction 2": accuracy(classifier2, x_fashion_test, y_fashion_test)}
    elbo = {"direction 1": vae_metrics(vae1, x_in1)["elbo"],
            "direction 2": vae_metrics(vae2, x_fashion_test)["elbo"]}
    return pd.DataFrame({"in-distribution": [dataset, "fashion-mnist"],
                         "classifier test accuracy": list(acc.values()),
                         "VAE test ELBO (nats)": list(elbo.values())}, index=list(acc)).round(3)


def auroc_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Return the AUROC of every score (rows) against every OOD set (columns), in the order of ``table``.

    ``table`` is a :func:`robustvae.ood.metrics_table`, indexed by ``("score", "OOD set")``.
    """
    scores = list(table.index.get_level_values("score").unique())
    sets = list(table.index.get_level_values("OOD set").unique())
    return table["auroc"].unstack()[sets].loc[scores]


def auroc_table(auroc: pd.DataFrame) -> pd.DataFrame:
    """Return an :func:`auroc_matrix` formatted for reading, with the OOD sets' short names (:data:`SHORT`)."""
    return fmt_table(auroc.rename(columns=SHORT))


def direction1_numbers(auroc1: pd.DataFrame, label1: str) -> dict[str, Any]:
    """Return the numbers the prose quotes on direction 1, by glue name.

    ``best1_name`` and ``best1_auroc``: the best VAE score (not a classifier's) against
    ``label1``; ``like1_auroc``, ``msp1_auroc``: the IWAE likelihood's and the maximum softmax's
    AUROC there; ``latent1_max``: the best latent signal's; ``kl1_noise``: the KL score's
    against uniform noise; ``var1_below``: on how many OOD sets the encoder variance is below chance.
    """
    best1 = auroc1[label1].drop([MSP, ENERGY]).idxmax()
    return {
        "best1_name": best1,
        "best1_auroc": auroc1.loc[best1, label1],
        "like1_auroc": auroc1.loc[LIKE, label1],
        "latent1_max": auroc1.loc[LATENT, label1].max(),
        "msp1_auroc": auroc1.loc[MSP, label1],
        "kl1_noise": auroc1.loc["KL(q(z|x) || p(z))", "uniform noise"],
        "var1_below": int((auroc1.loc["mean sigma^2(x)"] < 0.5).sum()),
    }


def direction2_numbers(auroc1: pd.DataFrame, auroc2: pd.DataFrame, label1: str,
                       sets2: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Return the numbers the prose quotes on the likelihood failure and its corrections, by glue name.

    AUROCs against MNIST in direction 2 (``like2_auroc``, ``elbo2_auroc``, ``ic2_auroc``,
    ``ceil2_auroc``, ``mse2_auroc``, ``msp2_auroc``, ``energy2_auroc``); ``ceiling_auroc``: the
    ceiling's height :func:`robustvae.ood.bernoulli_entropy` alone as a score on ``sets2``;
    ``ic_noise_auroc``: input complexity against uniform noise; ``ic1_auroc``: input complexity
    against ``label1`` in direction 1; ``ceil_min`` and ``ceil_min_set``: the Bernoulli-ceiling
    distance's lowest AUROC over both directions and the set it is on.
    """
    lo1, lo2 = auroc1.loc[CEIL].min(), auroc2.loc[CEIL].min()
    return {
        "like2_auroc": auroc2.loc[LIKE, "MNIST"],
        "ceiling_auroc": ood.ood_metrics(ood.bernoulli_entropy(sets2["in-distribution"]),
                                         ood.bernoulli_entropy(sets2["MNIST"]))["auroc"],
        "elbo2_auroc": auroc2.loc["-ELBO", "MNIST"],
        "ic2_auroc": auroc2.loc[IC, "MNIST"],
        "ceil2_auroc": auroc2.loc[CEIL, "MNIST"],
        "ic_noise_auroc": auroc2.loc[IC, "uniform noise"],
        "ic1_auroc": auroc1.loc[IC, label1],
        "ceil_min": min(lo1, lo2),
        "ceil_min_set": auroc1.loc[CEIL].idxmin() if lo1 < lo2 else auroc2.loc[CEIL].idxmin(),
        "mse2_auroc": auroc2.loc["reconstruction MSE", "MNIST"],
        "msp2_auroc": auroc2.loc[MSP, "MNIST"],
        "energy2_auroc": auroc2.loc[ENERGY, "MNIST"],
    }


def finding_intervals(scores1: Mapping[str, Mapping[str, torch.Tensor]],
                      scores2: Mapping[str, Mapping[str, torch.Tensor]], sets2: Mapping[str, torch.Tensor],
                      label1: str, best1: str, n_boot: int, seed: int = 0) -> dict[str, float]:
    """Return the 95% bootstrap intervals the chapter's findings are judged on, by glue name.

    Each AUROC is :func:`robustvae.ood.ood_metrics`'s, in- and out-of-distribution scores resampled
    separately (``n_boot`` resamples, ``seed``):

    - ``ceiling_lo``, ``ceiling_hi``: the ceiling's height alone, Fashion-MNIST against MNIST;
    - ``ic_noise_lo``, ``ic_noise_hi``: input complexity against uniform noise (direction 2);
    - ``best1_lo``, ``best1_hi``: the score ``best1`` against ``label1`` (direction 1);
    - ``latent1_gap_lo``: the smallest, over the latent signals (:data:`LATENT`), lower bound of the
      *paired* interval of ``AUROC(likelihood) - AUROC(latent signal)`` against ``label1``: both
      AUROCs are computed on the same resampled images, so the interval is that of the difference,
      not of two independent estimates. Above 0: the likelihood beats every latent signal.
    """
    def interval(s_in, s_out) -> tuple[float, float]:
        m = ood.ood_metrics(s_in, s_out, n_boot=n_boot, seed=seed)
        return m["auroc_lo"], m["auroc_hi"]

    ent = {s: ood.bernoulli_entropy(sets2[s]) for s in ("in-distribution", "MNIST")}
    ceiling = interval(ent["in-distribution"], ent["MNIST"])
    noise = interval(scores2[IC]["in-distribution"], scores2[IC]["uniform noise"])
    best = interval(scores1[best1]["in-distribution"], scores1[best1][label1])
    arr = {name: (np.asarray(scores1[name]["in-distribution"], dtype=np.float64),
                  np.asarray(scores1[name][label1], dtype=np.float64)) for name in [LIKE, *LATENT]}
    n_in, n_out = len(arr[LIKE][0]), len(arr[LIKE][1])
    gaps = {name: [] for name in LATENT}
    for i_in, i_out in bootstrap_draws((n_in, n_out), n_boot, seed):
        like = ood._fast_metrics(arr[LIKE][0][i_in], arr[LIKE][1][i_out])[0]
        for name in LATENT:
            gaps[name].append(like - ood._fast_metrics(arr[name][0][i_in], arr[name][1][i_out])[0])
    gap_lo = min(float(np.percentile(g, 2.5)) for g in gaps.values())
    return {"ceiling_lo": ceiling[0], "ceiling_hi": ceiling[1], "ic_noise_lo": noise[0],
            "ic_noise_hi": noise[1], "best1_lo": best[0], "best1_hi": best[1], "latent1_gap_lo": gap_lo}


def pair_metrics(scores2: Mapping[str, Mapping[str, torch.Tensor]], regret_scores: Mapping[str, torch.Tensor],
                 n_boot: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """Return :func:`robustvae.ood.ood_metrics` with bootstrap intervals of four scores on Fashion-MNIST vs MNIST.

    Keyed by the names of :data:`PUBLISHED`: the likelihood, Likelihood Regret (``regret_scores``,
    by set), input complexity and the Bernoulli-ceiling distance (from ``scores2``).
    """
    return {
        name: ood.ood_metrics(sc["in-distribution"], sc["MNIST"], n_boot=n_boot, seed=seed)
        for name, sc in [
            ("-log p(x)", scores2[LIKE]),
            ("Likelihood Regret", regret_scores),
            ("input complexity", scores2[IC]),
            ("Bernoulli-ceiling distance", scores2[CEIL]),
        ]
    }


def regret_numbers(pair: Mapping[str, Mapping[str, float]], regret_scores: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Return the numbers the prose quotes on Likelihood Regret, by glue name.

    Its AUROC and 95% interval (``regret_auroc``, ``regret_lo``, ``regret_hi``) from
    :func:`pair_metrics`, the likelihood's upper bound (``like2_hi``), and the median regret on
    the in-distribution and MNIST test images (``regret_in_median``, ``regret_out_median``).
    """
    regret_m, like_m = pair["Likelihood Regret"], pair["-log p(x)"]
    return {
        "regret_auroc": regret_m["auroc"], "regret_lo": regret_m["auroc_lo"],
        "regret_hi": regret_m["auroc_hi"], "like2_hi": like_m["auroc_hi"],
        "regret_in_median": float(regret_scores["in-distribution"].median()),
        "regret_out_median": float(regret_scores["MNIST"].median()),
    }


def background_ratio(vae, background, sets2: Mapping[str, torch.Tensor], k: int, n_boot: int,
                     seed: int = 0) -> dict[str, dict[str, float]]:
    """Return Ren et al.'s likelihood ratio on Fashion-MNIST vs MNIST, and its two terms, as
    :func:`robustvae.ood.ood_metrics` with bootstrap intervals.

    ``-[log p(x) - log p_0(x)]`` (:class:`robustvae.ood.LikelihoodRatio`) with both likelihoods
    the IWAE estimate with ``k`` samples: ``vae``'s (the chapter's Fashion-MNIST VAE) and
    ``background``'s (:func:`robustvae.ood.get_background_vae`). The in-distribution and MNIST
    sets of ``sets2`` are scored by :func:`robustvae.ood.score_sets` with ``seed``, as the chapter
    scores them, so the model term is the chapter's own ``-log p(x)`` estimate. Keyed by
    :data:`BACKGROUND`, ``"-log p(x)"`` (the model term) and :data:`BACKGROUND_ALONE`.
    """
    like, like0 = ood.NegIWAE(vae, k=k), ood.NegIWAE(background, k=k)
    dets = {"-log p(x)": like, BACKGROUND_ALONE: like0, BACKGROUND: ood.LikelihoodRatio(like, like0)}
    pair = {s: sets2[s] for s in ("in-distribution", "MNIST")}
    scores = ood.score_sets(dets, pair, seed=seed)
    return {name: ood.ood_metrics(sc["in-distribution"], sc["MNIST"], n_boot=n_boot, seed=seed)
            for name, sc in scores.items()}


def background_numbers(ratio: Mapping[str, Mapping[str, float]], rate: float) -> dict[str, float]:
    """Return the numbers the background profile records, by glue name, from :func:`background_ratio`.

    ``bg_rate`` (the mutation rate); the likelihood ratio's AUROC and 95% interval (``bg_auroc``,
    ``bg_lo``, ``bg_hi``); the raw likelihood's, scored beside it (``bg_raw_auroc``, ``bg_raw_lo``,
    ``bg_raw_hi``); the background model's own likelihood's AUROC (``bg_alone_auroc``).
    """
    lr, raw = ratio[BACKGROUND], ratio["-log p(x)"]
    return {"bg_rate": rate, "bg_auroc": lr["auroc"], "bg_lo": lr["auroc_lo"], "bg_hi": lr["auroc_hi"],
            "bg_raw_auroc": raw["auroc"], "bg_raw_lo": raw["auroc_lo"], "bg_raw_hi": raw["auroc_hi"],
            "bg_alone_auroc": ratio[BACKGROUND_ALONE]["auroc"]}


def background_interval(ratio: Mapping[str, Mapping[str, float]]) -> str:
    """Return the likelihood ratio's AUROC and interval beside the raw likelihood's, as a claim's numbers:
    ``"AUROC 0.900 [0.880, 0.920] vs -log p(x) 0.300 [0.280, 0.320]"`` (from :func:`background_ratio`)."""
    lr, raw = ratio[BACKGROUND], ratio["-log p(x)"]
    return (f"AUROC {interval(lr['auroc'], lr['auroc_lo'], lr['auroc_hi'], precision=3)} vs -log p(x) "
            f"{interval(raw['auroc'], raw['auroc_lo'], raw['auroc_hi'], precision=3)}")


def paper_table(pair: Mapping[str, Mapping[str, float]], regret_steps: int,
                background_rate: float = 0.0) -> pd.DataFrame:
    """Return the published AUROCs (:data:`PUBLISHED`) beside this book's on Fashion-MNIST vs MNIST, formatted.

    This book's column gives each :func:`pair_metrics` AUROC (and the likelihood ratio's, when
    ``pair`` holds :data:`BACKGROUND`) with its 95% interval, or "not run"; the model column
    names the model of each score that ran (``background_rate``: the background model's).
    """
    model = {k: v[1].format(steps=regret_steps, rate=background_rate) if v[1] and k in pair else DASH
             for k, v in PUBLISHED.items()}
    table = pd.DataFrame(
        {
            "published AUROC": {k: v[0] or DASH for k, v in PUBLISHED.items()},
            "this book: AUROC [95%]": {
                k: interval(m["auroc"], m["auroc_lo"], m["auroc_hi"], precision=3)
                if (m := pair.get(k)) else "not run"
                for k in PUBLISHED
            },
            "this book: model": model,
        }
    )
    table.index.name = "Fashion-MNIST vs MNIST"
    return fmt_table(table)


def background_table(ratio: Mapping[str, Mapping[str, float]], background_rate: float) -> pd.DataFrame:
    """Return the likelihood ratio and the raw likelihood beside their published AUROCs: the rows
    ``"-log p(x)"`` and :data:`BACKGROUND` of :func:`paper_table`, from :func:`background_ratio`."""
    pair = {k: ratio[k] for k in ("-log p(x)", BACKGROUND)}
    return paper_table(pair, regret_steps=0, background_rate=background_rate).loc[list(pair)]


def _headline(scores: Mapping[str, Mapping[str, torch.Tensor]], label: str, n_boot: int, seed: int) -> pd.DataFrame:
    """Every score's AUROC, AUPR and FPR95 of the in-distribution set against ``label``, each with its interval."""
    sub = {s: {"in-distribution": v["in-distribution"], label: v[label]} for s, v in scores.items()}
    t = ood.metrics_table(sub, "in-distribution", n_boot=n_boot, seed=seed).droplevel("OOD set")
    out = pd.DataFrame(index=t.index)
    for m in ("auroc", "aupr", "fpr95"):
        out[m.upper()] = t[m]
        out[f"{m.upper()} 95% CI"] = [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(t[f"{m}_lo"], t[f"{m}_hi"])]
    return out


def headline_table(scores1: Mapping[str, Mapping[str, torch.Tensor]], scores2: Mapping[str, Mapping[str, torch.Tensor]],
                   dataset: str, label1: str, n_boot: int, seed: int = 0) -> pd.DataFrame:
    """Return AUROC, AUPR and FPR95 of every score on the two headline pairs, as "0.414 [0.390, 0.438]".

    Rows ``(pair, score)``: ``dataset`` vs ``label1`` (``scores1``), then Fashion-MNIST vs MNIST
    (``scores2``); each interval a percentile bootstrap over ``n_boot`` resamples (``seed``).
    """
    head = pd.concat(
        {f"{dataset} vs {label1}": _headline(scores1, label1, n_boot, seed),
         "fashion-mnist vs MNIST": _headline(scores2, "MNIST", n_boot, seed)},
        names=["pair", "score"],
    )
    return pd.DataFrame(
        {m: [f"{fmt_number(v)} {ci}" for v, ci in zip(head[m], head[f"{m} 95% CI"])]
         for m in ("AUROC", "AUPR", "FPR95")},
        index=head.index,
    )


def full_table(table1: pd.DataFrame, table2: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Return both directions' :func:`robustvae.ood.metrics_table` in one formatted table, indexed by direction first."""
    full = pd.concat({f"1: {dataset} in": table1, "2: fashion-mnist in": table2}, names=["direction"])
    return fmt_table(full)


def pairs_auroc_table(auroc1: pd.DataFrame, auroc2: pd.DataFrame, dataset: str, label1: str) -> pd.DataFrame:
    """Return every score's AUROC on the two headline pairs (``dataset`` vs ``label1``, Fashion-MNIST vs MNIST), formatted."""
    return fmt_table(pd.DataFrame({f"{dataset} vs {label1}": auroc1[label1],
                                   "fashion-mnist vs MNIST": auroc2["MNIST"]}))


def decoder_vae(config, decoder: str, device="auto"):
    """Return ``(vae, history)``: the VAE of ``config`` (the chapter's Fashion-MNIST
    :class:`~robustvae.training.VAEConfig`) with the decoder likelihood ``decoder`` instead of its own,
    every other field kept, trained or loaded through the model cache. ``decoder`` is one of
    :data:`DECODERS`; the discretized logistic is :mod:`robustvae.discrete`'s VAE."""
    from ..training import get_vae

    if decoder not in DECODERS:
        raise ValueError(f"Unknown decoder {decoder!r}. Valid: {', '.join(DECODERS)}.")
    if decoder == discrete.DISCRETIZED:
        return discrete.get_discretized_vae(discrete.DiscretizedVAEConfig.of(config), device=device)
    return get_vae(dataclasses.replace(config, likelihood=decoder), device=device)


def decoder_scores(scores2: Mapping[str, Mapping[str, torch.Tensor]], vaes: Mapping[str, Any],
                   sets2: Mapping[str, torch.Tensor], k: int, seed: int = 0) -> dict[str, dict[str, dict[str, torch.Tensor]]]:
    """Return the raw likelihood's and input complexity's scores under each decoder, by decoder, score, set.

    ``"bernoulli"``: the chapter's own scores (``scores2``, its :data:`LIKE` and :data:`IC`); every VAE of
    ``vaes`` (by decoder, :func:`decoder_vae`) is scored on the in-distribution images and the sets of
    :data:`DECODER_SETS` by :func:`robustvae.ood.score_sets` with ``seed``, as the chapter scores its own:
    ``-log p(x)`` the IWAE estimate with ``k`` samples, input complexity
    :class:`robustvae.ood.InputComplexity` on it (PNG, bits per pixel). Under the discretized logistic
    both terms of input complexity are code lengths in bits of the same 8-bit image; under a density
    (continuous Bernoulli, Gaussian) ``-log2 p(x)`` differs from the 8-bit image's code length by about
    ``784 log2 255`` bits, a constant that changes no AUROC.
    """
    names = ("in-distribution", *DECODER_SETS)
    out = {"bernoulli": {LIKE: {s: scores2[LIKE][s] for s in names}, IC: {s: scores2[IC][s] for s in names}}}
    for decoder, vae in vaes.items():
        like = ood.NegIWAE(vae, k=k)
        out[decoder] = ood.score_sets({LIKE: like, IC: ood.InputComplexity(like)}, {s: sets2[s] for s in names},
                                      seed=seed)
    return out


def decoder_metrics(by_decoder: Mapping[str, Mapping[str, Mapping[str, torch.Tensor]]], n_boot: int,
                    seed: int = 0) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Return :func:`robustvae.ood.ood_metrics` with bootstrap intervals (``n_boot``, ``seed``) of every
    score of :func:`decoder_scores`, in-distribution against each set of :data:`DECODER_SETS`:
    ``metrics[decoder][score][set]``."""
    return {d: {name: {s: ood.ood_metrics(sc["in-distribution"], sc[s], n_boot=n_boot, seed=seed)
                       for s in DECODER_SETS}
                for name, sc in by_score.items()}
            for d, by_score in by_decoder.items()}


def decoder_numbers(metrics: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
                    by_decoder: Mapping[str, Mapping[str, Mapping[str, torch.Tensor]]],
                    sets2: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Return the numbers the ``decoders`` profile records, by glue name, from :func:`decoder_metrics`.

    For each decoder (short name ``d`` of :data:`DECODERS`), score (``like``: ``-log p(x)``; ``ic``: input
    complexity) and set (short name ``s`` of :data:`DECODER_SETS`): the AUROC ``dec_{d}_{score}_{s}`` and
    its 95% interval (``..._lo``, ``..._hi``). Then the mean code lengths in bits per pixel behind input
    complexity: ``dec_{d}_bpp_{set}``, the mean of ``-log2 p(x) / 784`` (IWAE) on each set (``in`` for the
    in-distribution images), and ``png_bpp_{set}``, the mean PNG length per pixel.
    """
    d_pix = sets2["in-distribution"][0].numel()
    short = {"in-distribution": "in", **DECODER_SETS}
    out: dict[str, float] = {}
    for decoder, by_score in metrics.items():
        d = DECODERS[decoder][1]
        for name, tag in ((LIKE, "like"), (IC, "ic")):
            for s, st in DECODER_SETS.items():
                m = by_score[name][s]
                key = f"dec_{d}_{tag}_{st}"
                out.update({key: m["auroc"], f"{key}_lo": m["auroc_lo"], f"{key}_hi": m["auroc_hi"]})
    for decoder, by_score in by_decoder.items():
        d = DECODERS[decoder][1]
        for s, st in short.items():
            out[f"dec_{d}_bpp_{st}"] = float(discrete.nats_to_bits(by_score[LIKE][s]).mean()) / d_pix
    for s, st in short.items():
        out[f"png_bpp_{st}"] = float(ood.compressed_bits(sets2[s]).mean()) / d_pix
    return out


def auroc_interval(m: Mapping[str, float]) -> str:
    """Return an :func:`robustvae.ood.ood_metrics` result's AUROC with its interval: ``"0.812 [0.790, 0.833]"``."""
    return interval(m["auroc"], m["auroc_lo"], m["auroc_hi"], precision=3)


def decoder_table(metrics: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]) -> pd.DataFrame:
    """Return the AUROC of the raw likelihood and of input complexity under each decoder (rows), on
    Fashion-MNIST against each set of :data:`DECODER_SETS` (columns), as "0.81 [0.76, 0.86]"."""
    rows = {}
    for decoder, by_score in metrics.items():
        rows[DECODERS[decoder][0]] = {
            f"{label}, {s}": auroc_interval(by_score[name][s])
            for s in DECODER_SETS for name, label in ((LIKE, "-log p(x)"), (IC, "S(x)"))
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "decoder (Fashion-MNIST in)"
    return table


def decoder_claims(claims, metrics: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
                   found: Mapping[str, float]) -> None:
    """Check the ``decoders`` profile's claims on the discretized-logistic VAE in ``claims`` (the chapter's
    :class:`robustvae.claims.Claims`), from :func:`decoder_metrics` and :func:`decoder_numbers`.

    Three findings, each judged on 95% intervals: the likelihood failure reproduces under a discrete
    likelihood (the raw likelihood's interval against MNIST below 0.5); input complexity, bits against bits,
    no longer calls uniform noise in-distribution (its interval against noise above 0.5); input complexity
    corrects the likelihood on the pair (its interval above the raw likelihood's). One check: the VAE
    codes its own test images in fewer than 8 bits per pixel (it learned something a raw byte does not).
    """
    dl = metrics[discrete.DISCRETIZED]
    like, ic_mnist, ic_noise = dl[LIKE]["MNIST"], dl[IC]["MNIST"], dl[IC]["uniform noise"]
    claims.check(
        "with a discretized-logistic decoder (a probability over the 256 levels) the likelihood failure "
        "still reproduces: the AUROC's 95% interval of -log p(x) against MNIST lies below 0.5",
        like["auroc_hi"] < 0.5, auroc_interval(like), kind="finding",
    )
    claims.check(
        "with the discretized-logistic decoder (bits against bits), input complexity no longer calls "
        "uniform noise in-distribution: its AUROC's 95% interval against uniform noise lies above 0.5",
        ic_noise["auroc_lo"] > 0.5, auroc_interval(ic_noise), kind="finding",
    )
    claims.check(
        "with the discretized-logistic decoder, input complexity corrects the likelihood on Fashion-MNIST "
        "vs MNIST: its AUROC's 95% interval lies above the raw likelihood's",
        ic_mnist["auroc_lo"] > like["auroc_hi"], f"{auroc_interval(ic_mnist)} vs {auroc_interval(like)}",
        kind="finding",
    )
    bits = found["dec_dl_bpp_in"]
    claims.check(
        "the discretized-logistic VAE compresses its own test images: its code length is below 8 bits per pixel",
        bits < 8, f"{bits:.2f} bits per pixel", kind="check",
    )

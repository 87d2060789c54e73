"""Chapter 6's tables and summary numbers: the r-robustness margins of each model, set against
the theory of Camuto et al. (AISTATS 2021), input by input and model by model.

The chapter computes with :mod:`robustvae.rrobust` (probabilities, margin searches, theoretical
margins); the functions here check its parameters, collect one model's results into the
dictionary the other functions read (:func:`model_results`), and turn those dictionaries into
the chapter's tables and the numbers its prose quotes. The figures are in
:mod:`robustvae.plots.rrobust`.

A chapter's ``results`` is ``{model name: model_results(...)}``, whose entries are:
``p0`` (:class:`~robustvae.rrobust.ProbabilityEstimate` at ``delta = 0``), ``theory``
(:func:`~robustvae.rrobust.theoretical_margins`), ``theory_lower`` (the latent margin
``Phi^-1(p)`` at the lower end of ``p``'s interval), ``searches`` (each attack's
:class:`~robustvae.rrobust.MarginSearch`, the random control included), ``latent`` (the
latent-space search), ``portfolio`` (:class:`~robustvae.rrobust.PortfolioMargin`),
``empirical`` (the portfolio's margins), ``sigma`` and ``dec_spec`` (the encoder's standard
deviations and the spectral norm of the decoder's Jacobian at the encoder mean).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm as scipy_norm
from scipy.stats import spearmanr

from .. import rrobust as rr
from .. import stats, tables
from ..models import LIKELIHOODS
from ..training import batched, vae_metrics
from ..utils import check_choice, check_positive

__all__ = [
    "check_parameters",
    "search_grids",
    "attack_budgets",
    "portfolio_attacks",
    "noise_scale_margins",
    "noise_scale_table",
    "noise_scale_numbers",
    "linear_table",
    "linear_error",
    "price_table",
    "target_indices",
    "wilson_half_width",
    "model_results",
    "margin_table",
    "attack_additions",
    "lbfgs_gains",
    "within_model_spearman",
    "theory_table",
    "mean_spearman",
    "probit_cap",
    "r_sweep_table",
    "r_sweep_numbers",
    "latent_table",
    "summary_numbers",
    "summary_table",
]

_POSITIVE_INTS = ("vae_epochs", "extra_epochs", "latent_dim", "n_inputs", "n_mc", "n_mc_p0", "n_radii",
                  "attack_steps", "lbfgs_starts", "lbfgs_iter", "lbfgs_stride")


def check_parameters(params: Mapping[str, Any]) -> None:
    """Nothing; raises a ``ValueError`` naming the parameter of the chapter that is out of range.

    ``params`` holds the chapter's parameters by name (the notebook's ``globals()``): positive
    integers for the sizes, epochs and budgets, ``refine_steps >= 0``, positive ``r``, ``tc_beta``,
    radii, ``betas`` and ``r_curves``, ``r_quantile`` in (1/2, 1), a known ``likelihood``,
    ``min_radius < max_radius`` and at least one input per class (``n_inputs >= 10``).
    """
    for name in _POSITIVE_INTS:
        check_positive(name, params[name])
    check_positive("refine_steps", params["refine_steps"], allow_zero=True)
    for name in ("r", "tc_beta", "min_radius", "max_radius"):
        check_positive(name, params[name], integer=False)
    for b in tuple(params["betas"]) + tuple(params["r_curves"]):
        check_positive("betas / r_curves entry", b, integer=False)
    check_choice("likelihood", params["likelihood"], LIKELIHOODS)
    if not params["min_radius"] < params["max_radius"]:
        raise ValueError(
            f"min_radius ({params['min_radius']}) must be below max_radius ({params['max_radius']})."
        )
    if not 0.5 < params["r_quantile"] < 1:
        raise ValueError(f"r_quantile must lie in (0.5, 1), got {params['r_quantile']}.")
    if params["n_inputs"] < 10:
        raise ValueError(f"n_inputs must be at least 10 (one per class), got {params['n_inputs']}.")


def search_grids(min_radius: float, max_radius: float, n_radii: int,
                 lbfgs_stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(radii, radii_lbfgs, radii_random)``: the margin searches' grids of ``||delta||_2``.

    ``radii`` is geometric from ``min_radius`` to ``max_radius`` (``n_radii`` values); L-BFGS-B
    searches every ``lbfgs_stride``-th of them and the random control every other one, both
    keeping the largest.
    """
    radii = np.geomspace(min_radius, max_radius, n_radii)
    radii_lbfgs = np.unique(np.r_[radii[::lbfgs_stride], radii[-1]])
    radii_random = np.unique(np.r_[radii[::2], radii[-1]])
    return radii, radii_lbfgs, radii_random


def attack_budgets(attack_steps: int, lbfgs_starts: int, lbfgs_iter: int) -> dict[str, str]:
    """Each attack of the portfolio's budget in words, by attack name (for the tables)."""
    return {
        "max-damage": f"PGD, {attack_steps} steps, 1 restart",
        "latent (targeted)": f"PGD, {attack_steps} steps, 1 start",
        "encoder KL": f"PGD, {attack_steps} steps, 1 start",
        "L-BFGS-B": f"L-BFGS-B, {lbfgs_iter} iterations, {lbfgs_starts} starts",
    }


def portfolio_attacks(x_target: torch.Tensor, attack_steps: int, lbfgs_starts: int, lbfgs_iter: int,
                      generator: torch.Generator) -> dict[str, rr.Attack]:
    """The chapter's portfolio of margin attacks, by name (the order of :func:`attack_budgets`):
    max-damage, the targeted latent attack towards ``x_target``, encoder KL and L-BFGS-B, all
    drawing their random starts from ``generator``."""
    return {
        "max-damage": rr.max_damage_attack(attack_steps, generator=generator),
        "latent (targeted)": rr.latent_target_attack(x_target, attack_steps, generator=generator),
        "encoder KL": rr.encoder_kl_attack(attack_steps, generator=generator),
        "L-BFGS-B": rr.lbfgs_damage_attack(lbfgs_starts, lbfgs_iter, generator=generator),
    }


def noise_scale_margins(models: Mapping[str, torch.nn.Module], x: torch.Tensor, x_target: torch.Tensor,
                        quantile: float, radii: np.ndarray, radii_lbfgs: np.ndarray,
                        budgets: Mapping[str, str], n_mc: int, n_mc_p0: int, attack_steps: int,
                        lbfgs_starts: int, lbfgs_iter: int, refine_steps: int,
                        seed: int = 0) -> dict[str, dict[str, Any]]:
    """The chapter's margins again, each model at its own ``r`` (:func:`~robustvae.rrobust.noise_scale_r`).

    Per model: ``r`` from ``n_mc_p0`` pairs per input (a generator seeded ``seed + 1``, so the
    ``r`` and the probabilities below come from different draws); then, as in the chapter's main
    search (generator seeded ``seed``), ``p0`` at that ``r``, the theoretical margins, and the
    portfolio of :func:`portfolio_attacks` over ``radii`` (L-BFGS-B over ``radii_lbfgs``), each
    attack stopping at its first breaking radius. Returns ``{model: {"r", "p0", "theory",
    "portfolio", "empirical"}}``, the keys :func:`mean_spearman` and :func:`noise_scale_table` read.
    """
    out = {}
    for name, vae in models.items():
        r_m = rr.noise_scale_r(vae, x, quantile, n_mc_p0, generator=torch.Generator().manual_seed(seed + 1))
        gen = torch.Generator().manual_seed(seed)
        p0 = rr.r_robust_probability(vae, x, None, r_m, n_samples=n_mc_p0, generator=gen)
        theory = rr.theoretical_margins(vae, x, p0.p, n_samples=n_mc_p0)
        ref = rr.stochastic_reconstructions(vae, x, n_mc, generator=gen)
        portfolio = rr.portfolio_margin(
            vae, x, r_m, radii, portfolio_attacks(x_target, attack_steps, lbfgs_starts, lbfgs_iter, gen),
            budgets=dict(budgets), n_samples=n_mc, refine_steps=refine_steps, reference=ref, generator=gen,
            stop_when_broken=True, options={"L-BFGS-B": {"radii": radii_lbfgs}},
        )
        out[name] = dict(r=r_m, p0=p0, theory=theory, portfolio=portfolio, empirical=portfolio.margin)
    return out


def noise_scale_table(scaled: Mapping[str, Mapping[str, Any]], fixed: Mapping[str, Mapping[str, Any]],
                      r_fixed: float, seed: int = 0) -> pd.DataFrame:
    """Each model at its own ``r`` (:func:`noise_scale_margins`) beside the chapter's fixed ``r``:
    the ``r``, the median ``p`` and the inputs at either end of it, the median empirical and paper
    margins, Spearman's rho of the two over the inputs with a 95% bootstrap interval, and the
    median empirical margin at ``r_fixed`` (from ``fixed``, the main search's results)."""
    rows = {}
    for name, res in scaled.items():
        p = res["p0"].p
        rows[name] = {
            "own r": res["r"],
            "median p": p.median().item(),
            "inputs at p = 1 (clipped)": int((p >= 1).sum()),
            "inputs at p <= 1/2": int((p <= 0.5).sum()),
            "median empirical margin": res["empirical"].median().item(),
            "median paper margin": res["theory"]["paper"].median().item(),
            "Spearman [95%]": tables.interval(*stats.bootstrap_ci(
                _spearman, res["theory"]["paper"], res["empirical"], n_boot=1000, seed=seed), keep_together=True),
            f"median empirical margin at r = {r_fixed:g}": fixed[name]["empirical"].median().item(),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def noise_scale_numbers(scaled: Mapping[str, Mapping[str, Any]], top_name: str,
                        seed: int = 0) -> dict[str, Any]:
    """The numbers the prose and the claims quote from :func:`noise_scale_margins` (the first
    model is the VAE): ``own_med_vae``, ``own_med_top`` and the paired bootstrap interval of
    their difference (``own_diff_lo``, ``own_diff_hi``); the mean within-model Spearman
    correlation with its interval (``own_rho_mean``, ``own_rho_lo``, ``own_rho_hi``); the
    VAE's own within-model correlation with its interval, as in :func:`noise_scale_table`
    (``own_rho_vae``, ``own_rho_vae_lo``, ``own_rho_vae_hi``); the ``r`` of the VAE and of
    ``top_name`` (``own_r_vae``, ``own_r_top``); how many inputs over all models sit at the
    Monte-Carlo clip (``own_clipped``) or at ``p <= 1/2`` (``own_unrobust``)."""
    vae_name = list(scaled)[0]
    top, vae = scaled[top_name], scaled[vae_name]
    _, lo, hi = stats.median_difference(top["empirical"], vae["empirical"], seed=seed)
    rho = mean_spearman(scaled, seed=seed)
    rho_vae = stats.bootstrap_ci(_spearman, vae["theory"]["paper"], vae["empirical"], n_boot=1000, seed=seed)
    return {
        "own_med_vae": vae["empirical"].median().item(),
        "own_med_top": top["empirical"].median().item(),
        "own_diff_lo": lo,
        "own_diff_hi": hi,
        "own_rho_mean": rho["rho_mean"],
        "own_rho_lo": rho["rho_lo"],
        "own_rho_hi": rho["rho_hi"],
        "own_rho_vae": rho_vae[0],
        "own_rho_vae_lo": rho_vae[1],
        "own_rho_vae_hi": rho_vae[2],
        "own_r_vae": vae["r"],
        "own_r_top": top["r"],
        "own_clipped": int(sum((res["p0"].p >= 1).sum() for res in scaled.values())),
        "own_unrobust": int(sum((res["p0"].p <= 0.5).sum() for res in scaled.values())),
    }


def linear_table(lin: rr.LinearGaussianVAE, r: float, p0: rr.ProbabilityEstimate,
                 search: rr.PortfolioMargin, theory: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """The linear-Gaussian check as a table: the exact probability and margin beside the
    Monte-Carlo / attack estimates and the two theoretical margins (means over the inputs)."""
    return pd.DataFrame(
        {
            "exact": [lin.p0(r), lin.margin(r), np.nan, np.nan],
            "Monte Carlo / attacks (mean)": [p0.p.mean().item(), search.margin.mean().item(), np.nan, np.nan],
            "theory (mean)": [np.nan, np.nan, theory["paper"].mean().item(), theory["whitened"].mean().item()],
        },
        index=["P(||Delta|| <= r) at delta = 0", "margin R^r", "paper margin", "whitened margin"],
    )


def linear_error(lin: rr.LinearGaussianVAE, r: float, search: rr.PortfolioMargin) -> float:
    """The largest relative error of the searched margins against the linear VAE's exact one."""
    return (search.margin - lin.margin(r)).abs().max().item() / lin.margin(r)


def price_table(models: Mapping[str, torch.nn.Module], x: torch.Tensor,
                device: torch.device | str | None = None) -> pd.DataFrame:
    """The price of robustness, one row per model: test ELBO, KL, pixel MSE and active dimensions.

    A dimension is active when its encoder standard deviation, averaged over ``x``, is below 0.5.
    The ELBO is a Monte-Carlo estimate: it draws from the global torch random state.
    """
    price = {}
    for name, vae in models.items():
        met = vae_metrics(vae, x)
        with torch.no_grad():
            sig = batched(lambda xb: (0.5 * vae.encode(xb)[1]).exp(), x, device=device)
        price[name] = {
            "test ELBO (nats)": met["elbo"],
            "KL (nats)": met["kl"],
            "pixel MSE": met["mse"],
            "active dims": int((sig.mean(0) < 0.5).sum()),
        }
    return pd.DataFrame.from_dict(price, orient="index")


def target_indices(y: Sequence[int] | torch.Tensor) -> list[int]:
    """For each input, the index of the next input (cyclically) with another label.

    Raises a ``ValueError`` when all labels are equal (no target exists).
    """
    n = len(y)
    if len({int(v) for v in y}) < 2:
        raise ValueError("target_indices needs at least two different labels.")
    return [next(j % n for j in range(i + 1, i + n) if y[j % n] != y[i]) for i in range(n)]


def wilson_half_width(n: int) -> float:
    """Half the width of the 95% binomial interval of an estimate at ``p = 1/2`` from ``n`` pairs."""
    lo, hi = rr.binomial_interval(torch.tensor([n // 2]), n)
    return (hi - lo).item() / 2


def model_results(vae: torch.nn.Module, x: torch.Tensor, p0: rr.ProbabilityEstimate,
                  theory: dict[str, torch.Tensor], theory_lower: torch.Tensor,
                  portfolio: rr.PortfolioMargin, control: rr.MarginSearch,
                  latent: rr.MarginSearch) -> dict[str, Any]:
    """One model's results as the dictionary the chapter's tables and figures read (see the
    module docstring): ``control`` (the random direction's search) joins the portfolio's searches
    as ``"random"``; adds the encoder's ``sigma(x)`` and the decoder's spectral norm at ``mu(x)``."""
    with torch.no_grad():
        mu, log_var = vae.encode(x)
    dec_jac = rr.decoder_jacobian(vae, mu).detach().cpu()
    return dict(
        p0=p0,
        theory=theory,
        theory_lower=theory_lower,
        searches={**portfolio.searches, "random": control},
        latent=latent,
        sigma=(0.5 * log_var).exp().cpu(),
        dec_spec=torch.linalg.matrix_norm(dec_jac, ord=2),
        portfolio=portfolio,
        empirical=portfolio.margin,
    )


def margin_table(results: Mapping[str, Mapping[str, Any]], attacks: Sequence[str]) -> pd.DataFrame:
    """Median margin along each attack's direction, the portfolio's, and how many inputs the
    random control did not break, one row per model."""
    return pd.DataFrame.from_dict({
        name: {**{a: res["searches"][a].margin.median().item() for a in attacks},
               "empirical (portfolio)": res["empirical"].median().item(),
               "random: not broken": int((~res["searches"]["random"].found).sum())}
        for name, res in results.items()}, orient="index")


def attack_additions(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """What each attack adds to the portfolio, rows (model, attack): budget, broken, best,
    lowered, newly broken and median drop (:meth:`~robustvae.rrobust.PortfolioMargin.summary`)."""
    adds = pd.concat({name: res["portfolio"].summary() for name, res in results.items()},
                     names=["model", "attack"])
    return adds[["budget", "broken", "best", "lowered", "newly broken", "median drop"]]


def lbfgs_gains(adds: pd.DataFrame) -> dict[str, int]:
    """``lbfgs_lowered`` and ``lbfgs_new``: on how many (model, input) pairs L-BFGS-B beat every
    other attack, and how many of those no other attack broke (from :func:`attack_additions`)."""
    lbfgs = adds.xs("L-BFGS-B", level="attack")
    return {"lbfgs_lowered": int(lbfgs["lowered"].sum()), "lbfgs_new": int(lbfgs["newly broken"].sum())}


def _spearman(a, b) -> float:
    """Spearman's rho; 0 for a resample with no variation (no ranking to correlate)."""
    rho = spearmanr(a, b).statistic
    return 0.0 if np.isnan(rho) else float(rho)


def _pairs(results: Mapping[str, Mapping[str, Any]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(res["theory"]["paper"], res["empirical"]) for res in results.values()]


def within_model_spearman(results: Mapping[str, Mapping[str, Any]]) -> pd.Series:
    """Spearman's rho of the paper margin and the empirical margin over each model's inputs,
    one value per model."""
    return pd.Series({name: spearmanr(res["theory"]["paper"], res["empirical"]).statistic
                      for name, res in results.items()}, name="Spearman (paper, emp.)")


def theory_table(results: Mapping[str, Mapping[str, Any]], seed: int = 0) -> pd.DataFrame:
    """Theory against attacks, one row per model: median margins, median and worst ratios of
    empirical to theoretical margin, inputs below each, and Spearman's rho of paper and
    empirical margins with a 95% bootstrap interval over the inputs (1000 resamples)."""
    rows = {}
    for name, res in results.items():
        emp, paper, white = res["empirical"], res["theory"]["paper"], res["theory"]["whitened"]
        rows[name] = {
            "median paper margin": paper.median().item(),
            "median whitened margin": white.median().item(),
            "median emp. / paper": (emp / paper).median().item(),
            "worst emp. / paper": (emp / paper).min().item(),
            "worst emp. / whitened": (emp / white).min().item(),
            "below paper": int((emp < paper).sum()),
            "below whitened": int((emp < white).sum()),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["Spearman [95%]"] = [
        tables.interval(*stats.bootstrap_ci(_spearman, a, b, n_boot=1000, seed=seed), keep_together=True)
        for a, b in _pairs(results)
    ]
    return table


def mean_spearman(results: Mapping[str, Mapping[str, Any]], seed: int = 0) -> dict[str, float]:
    """``rho_mean``, ``rho_lo``, ``rho_hi``: the within-model Spearman correlation averaged over
    the models, with a 95% bootstrap interval that resamples the same inputs for every model."""
    def mean_rho(*cols):
        return float(np.mean([_spearman(cols[i], cols[i + 1]) for i in range(0, len(cols), 2)]))

    rho_mean, rho_lo, rho_hi = stats.bootstrap_ci(mean_rho, *[t for pair in _pairs(results) for t in pair],
                                                  n_boot=1000, seed=seed)
    return {"rho_mean": rho_mean, "rho_lo": rho_lo, "rho_hi": rho_hi}


def probit_cap(n_samples: int) -> float:
    """The largest ``Phi^-1(p)`` an estimate from ``n_samples`` pairs reaches (``p`` clipped to
    ``1 - 1/(2n)``)."""
    return float(scipy_norm.ppf(1 - 1 / (2 * n_samples)))


def r_sweep_table(models: Mapping[str, torch.nn.Module], x: torch.Tensor, r_values: Sequence[float],
                  n_samples: int, seed: int = 0) -> pd.DataFrame:
    """Where the Monte-Carlo estimate sits, rows (model, r): the median ``p`` over the inputs and
    how many inputs are at ``p = 1`` (clipped) or at ``p <= 1/2``, from one draw of
    ``n_samples`` reconstruction pairs per input and model (a generator seeded by ``seed``)."""
    rows = {}
    for name, vae in models.items():
        d = rr.reconstruction_distances(vae, x, None, n_samples, generator=torch.Generator().manual_seed(seed))
        for r_s in r_values:
            p = rr.probability_from_distances(d, r_s).p
            rows[name, f"r = {r_s:g}"] = {
                "median p": p.median().item(),
                "inputs at p = 1 (clipped)": int((p >= 1).sum()),
                "inputs at p <= 1/2": int((p <= 0.5).sum()),
            }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["model", "r"]
    return table


def r_sweep_numbers(r_table: pd.DataFrame, r: float, r_low: float, n_inputs: int) -> dict[str, Any]:
    """The numbers the prose quotes from :func:`r_sweep_table` (the first model is the VAE):
    ``vae_clipped`` at ``r``; at ``r_low``, ``vae_clipped_low`` and ``others_unrobust_low`` (the
    other models' inputs at ``p <= 1/2``, of ``others_total``); and ``r_low`` itself."""
    names = list(dict.fromkeys(r_table.index.get_level_values("model")))
    first, others = names[0], names[1:]
    clipped = "inputs at p = 1 (clipped)"
    return {
        "vae_clipped": int(r_table.loc[(first, f"r = {r:g}"), clipped]),
        "r_low": r_low,
        "vae_clipped_low": int(r_table.loc[(first, f"r = {r_low:g}"), clipped]),
        "others_unrobust_low": int(sum(r_table.loc[(m, f"r = {r_low:g}"), "inputs at p <= 1/2"] for m in others)),
        "others_total": len(others) * n_inputs,
    }


def latent_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """The strict latent step checked, one row per model: median attack margin, median bound
    ``Phi^-1(p)`` (lower 95%), their median ratio, inputs below the bound, significant
    violations (the probability's whole 95% interval at or below 1/2 there) and inputs the
    largest shift did not break."""
    rows = {}
    for name, res in results.items():
        lat, bound = res["latent"], res["theory_lower"]
        below = lat.margin < bound
        rows[name] = {
            "median latent margin (attack)": lat.margin.median().item(),
            "median Phi^-1(p) (lower 95%)": bound.median().item(),
            "median ratio": (lat.margin / bound).median().item(),
            "inputs below the bound": int(below.sum()),
            "significant violations": int((below & (lat.upper_at_margin <= 0.5)).sum()),
            "not broken by max shift": int((~lat.found).sum()),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def summary_numbers(results: Mapping[str, Mapping[str, Any]], price: pd.DataFrame, latent: pd.DataFrame,
                    margins: pd.DataFrame, rho_points: pd.Series, top_name: str, max_radius: float,
                    seed: int = 0) -> dict[str, Any]:
    """The numbers of "What we found", by the names the prose quotes.

    The first model of ``results`` is the VAE, the last the beta-TCVAE, ``top_name`` the
    beta-VAE with the largest beta: their median margins (``med_vae``, ``med_top``, ``med_tc``),
    a paired bootstrap interval of ``med_top - med_vae`` (``diff_lo``, ``diff_hi``; 2000
    resamples) and their pixel MSEs; over all (model, input) pairs, how many empirical margins fell
    below the paper and the whitened margins and the ratios, with the upper end of the Wilson 95%
    interval of the share below the paper margin (``below_paper_hi``, the pairs counted as
    independent) and, since the models share their inputs, the same counted by input
    (``below_paper_inputs``: inputs that some model's empirical margin puts below its paper
    margin, of ``n_pair_inputs``; ``below_paper_inputs_hi``: its Wilson upper end, the conservative
    bound whatever the dependence between models); the latent check's totals; Spearman's
    rho pooled and within models; and how much larger the random control's margins are (an
    unbroken input counted at ``max_radius``).
    """
    names = list(results)
    vae_name = names[0]
    _, diff_lo, diff_hi = stats.median_difference(results[top_name]["empirical"], results[vae_name]["empirical"],
                                                  seed=seed)
    all_emp = torch.cat([results[n]["empirical"] for n in names])
    all_paper = torch.cat([results[n]["theory"]["paper"] for n in names])
    all_white = torch.cat([results[n]["theory"]["whitened"] for n in names])
    below_any = torch.stack([results[n]["empirical"] < results[n]["theory"]["paper"] for n in names]).any(0)
    below_paper = int((all_emp < all_paper).sum())
    rand_over_emp = [(results[n]["searches"]["random"].margin.clamp(max=max_radius) / results[n]["empirical"])
                     .median().item() for n in names]
    return {
        "med_vae": results[vae_name]["empirical"].median().item(),
        "med_top": results[top_name]["empirical"].median().item(),
        "diff_lo": diff_lo,
        "diff_hi": diff_hi,
        "n_total": len(all_emp),
        "below_paper": below_paper,
        "below_paper_hi": stats.wilson_interval(below_paper, len(all_emp))[1],
        "n_pair_inputs": len(below_any),
        "below_paper_inputs": int(below_any.sum()),
        "below_paper_inputs_hi": stats.wilson_interval(int(below_any.sum()), len(below_any))[1],
        "below_white": int((all_emp < all_white).sum()),
        "worst_white": (all_emp / all_white).min().item(),
        "ratio_paper_min": (all_emp / all_paper).min().item(),
        "ratio_paper_med": (all_emp / all_paper).median().item(),
        "latent_sig": int(latent["significant violations"].sum()),
        "latent_below": int(latent["inputs below the bound"].sum()),
        "latent_ratio_min": min(latent["median ratio"]),
        "mse_vae": price["pixel MSE"].iloc[0],
        "mse_top": price.loc[top_name, "pixel MSE"],
        "med_tc": results[names[-1]]["empirical"].median().item(),
        "mse_tc": price["pixel MSE"].iloc[-1],
        "latent_ratio_med": float(np.median(latent["median ratio"])),
        "rand_not_found": int(margins["random: not broken"].sum()),
        "rho_pooled": spearmanr(all_paper, all_emp).statistic,
        "rho_within": float(rho_points.median()),
        "rand_over_emp": float(np.median(rand_over_emp)),
    }


def summary_table(results: Mapping[str, Mapping[str, Any]], price: pd.DataFrame) -> pd.DataFrame:
    """The medians behind the findings, one row per model: empirical and paper margins, their
    ratio, ``p``, ``sigma_min``, ``||J_mu||_F`` and the pixel MSE."""
    names = list(results)

    def med(f):
        return [f(results[n]).median().item() for n in names]

    return pd.DataFrame(
        {
            "median empirical margin": med(lambda res: res["empirical"]),
            "median paper margin": med(lambda res: res["theory"]["paper"]),
            "median empirical / paper": med(lambda res: res["empirical"] / res["theory"]["paper"]),
            "median p": med(lambda res: res["p0"].p),
            "median sigma_min": med(lambda res: res["theory"]["sigma_min"]),
            "median ||J_mu||_F": med(lambda res: res["theory"]["jac_fro"]),
            "pixel MSE": price["pixel MSE"].values,
        },
        index=names,
    )

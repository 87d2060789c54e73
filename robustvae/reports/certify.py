"""Chapter 7's tables and summary numbers: the Lipschitz designs, the models' certificates and
price, the lower bounds on their Lipschitz constants, attacks inside the certified radius,
certified against empirical margins, and the equal-budget comparison.

The certificate and the attacks are in :mod:`robustvae.certify`, :mod:`robustvae.lipschitz`
and :mod:`robustvae.attacks`; the functions here run them over the chapter's models and
assemble what they return. Every table is numeric (format it with
:func:`robustvae.tables.fmt_table`); models are keyed by name, ``"standard"`` being the one
without a certificate.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import attacks, certify
from .. import rrobust as rr
from ..stats import bootstrap_ci, median_difference
from ..tables import DASH, interval
from ..training import get_vae, vae_metrics
from ..utils import check_positive, seed_everything

__all__ = [
    "ADDITION_COLUMNS",
    "check_parameters",
    "design_table",
    "model_summary",
    "kl_cap",
    "NOISE_LAWS",
    "noise_table",
    "noise_numbers",
    "fraction_at_cap",
    "lipschitz_bounds",
    "next_class_targets",
    "inside_row",
    "margins_table",
    "attack_additions",
    "reconstruction_spread",
    "budget_table",
    "findings",
    "check_profile",
    "PUBLISHED",
    "paper_table",
    "per_image_metrics",
    "closest_in_mse",
    "pair_comparison",
    "pair_numbers",
    "portfolio_search",
    "inside_attacks",
    "PaperLayers",
    "paper_layers",
    "paper_layer_claims",
]

#: The columns of :func:`attack_additions` (those of
#: :meth:`robustvae.rrobust.PortfolioMargin.summary` the chapter shows).
ADDITION_COLUMNS = ["budget", "broken", "best", "lowered", "newly broken", "median drop"]


def check_parameters(prob: float, margins: Sequence[float], eps_grid: Sequence[float],
                     eps_compare: float) -> tuple[float, ...]:
    """The requested margins as ascending floats, after checking the chapter's parameters that
    are not plain positive numbers (a :class:`ValueError` says which is wrong and why)."""
    if not 0 < prob < 1:
        raise ValueError(f"prob must lie in (0, 1), got {prob!r}.")
    if not margins or any(not (isinstance(m, (int, float)) and m > 0) for m in margins):
        raise ValueError(
            f"margins must be a non-empty tuple of positive numbers, got {margins!r}."
        )
    if not eps_grid or list(eps_grid) != sorted(eps_grid) or min(eps_grid) <= 0:
        raise ValueError(f"eps_grid must be ascending positive radii, got {eps_grid!r}.")
    if eps_compare not in eps_grid:
        raise ValueError(f"eps_compare={eps_compare} must be one of eps_grid {eps_grid}.")
    return tuple(sorted(float(m) for m in margins))


def check_profile(bjorck_margin: float | None, matched_latent_dims: Sequence[int],
                  margins: Sequence[float]) -> tuple[int, ...]:
    """Check the parameters of the ``paper-layers`` profile before any work; return the latent sizes
    as a tuple of ints. ``bjorck_margin`` must be ``None`` or one of ``margins`` (the design rebuilt
    with Björck layers), every latent size a positive integer."""
    if bjorck_margin is not None and (
            not isinstance(bjorck_margin, (int, float)) or float(bjorck_margin) not in margins):
        raise ValueError(f"bjorck_margin must be None or one of margins {tuple(margins)}, got {bjorck_margin!r}.")
    if isinstance(matched_latent_dims, (str, int)):
        raise ValueError(f"matched_latent_dims must be a tuple of latent sizes, got {matched_latent_dims!r}.")
    return tuple(check_positive("matched_latent_dims", d) for d in matched_latent_dims)


def design_table(configs: Mapping[float, Any], r: float, decoder_lipschitz: float,
                 prob: float) -> pd.DataFrame:
    """The design of each requested margin (index ``"requested R*"``): the constants ``a``,
    ``b``, ``c``, the noise cap ``s_max`` (``config.design()``), the product ``a b`` and the
    largest noise any design could have, ``s_cap`` (:func:`robustvae.certify.std_cap`)."""
    designs = pd.DataFrame(
        [{"requested R*": R, **cfg.design()} for R, cfg in configs.items()]
    ).set_index("requested R*")
    designs["a b"] = designs["a"] * designs["b"]
    designs["s_cap"] = certify.std_cap(r, decoder_lipschitz, prob)
    return designs


def model_summary(models: Mapping[str, Any], requested: Mapping[str, float], x_test: torch.Tensor,
                  x_att: torch.Tensor, r: float, prob: float) -> tuple[pd.DataFrame, dict[str, torch.Tensor]]:
    """``(summary, cert)``: one row per model (requested and certified margins on ``x_att``,
    the constants, test ELBO, KL and pixel MSE on ``x_test``; NaN where a model has no
    certificate) and the per-input certified margins (paper's variant) of the models named in
    ``requested``. The ELBO is a Monte-Carlo estimate: seed first for the same numbers."""
    rows, cert = [], {}
    for name, vae in models.items():
        met = vae_metrics(vae, x_test)
        row = {
            "model": name,
            "requested R*": np.nan,
            "certified min": np.nan,
            "certified median": np.nan,
        }
        if name in requested:
            k = vae.lipschitz_constants()
            cert[name] = certify.certified_margins(vae, x_att, r, prob)
            row.update(
                {
                    "requested R*": requested[name],
                    "certified min": cert[name].min().item(),
                    "certified median": cert[name].median().item(),
                    **{key: k[key] for key in ("a", "b", "c", "s_max")},
                }
            )
        row.update({"test ELBO": met["elbo"], "KL": met["kl"], "pixel MSE": met["mse"]})
        rows.append(row)
    return pd.DataFrame(rows).set_index("model"), cert


def kl_cap(s_max: float, latent_dim: int) -> float:
    """The smallest KL term (nats) a Gaussian encoder with ``||sigma(x)||_2 <= s_max`` can pay:
    ``d/2 (sigma^2 - log sigma^2 - 1)`` at ``sigma = s_max / sqrt(d)`` in every dimension."""
    return certify.kl_floor(s_max / latent_dim**0.5, latent_dim)


#: The certificates :func:`noise_table` compares, by row name: (law, Markov variant).
NOISE_LAWS = {
    "Markov, fixed noise (c = 0)": ("markov", "paper"),
    "Markov without its last step, fixed noise": ("markov", "tight"),
    "exact noncentral chi-square, fixed noise": ("chi2", "paper"),
}


def noise_table(designs: pd.DataFrame, latent_dim: int, r: float, a: float, prob: float) -> pd.DataFrame:
    """How much encoder noise each certificate allows for the same requested margin and the same
    constants ``a``, ``b`` (the rows of ``designs``, :func:`design_table`), and the KL that noise
    level forces (:func:`robustvae.certify.kl_floor`).

    First row: the chapter's design, an input-dependent noise with ``c = b / 4`` and
    ``||sigma(x)||_2 <= s_max`` (at best ``s_max / sqrt(d)`` per dimension); then a fixed,
    isotropic noise ``gamma`` (``c = 0``) under each law of :data:`NOISE_LAWS`
    (:func:`robustvae.certify.noise_for_margin`). The designs fix the product ``b R*``, so every
    requested margin gives the same row; that is checked, and one value per row is shown.
    """
    rows = {}
    per_design = {name: [] for name in ["this chapter: Markov, input-dependent noise (c = b/4)", *NOISE_LAWS]}
    for R, d in designs.iterrows():
        per_design["this chapter: Markov, input-dependent noise (c = b/4)"].append(d["s_max"] / latent_dim**0.5)
        for name, (law, variant) in NOISE_LAWS.items():
            per_design[name].append(certify.noise_for_margin(R, latent_dim, r, a, d["b"], prob, law, variant))
    for name, gammas in per_design.items():
        if not np.allclose(gammas, gammas[0], rtol=1e-6):
            raise ValueError(f"{name}: the noise differs between designs ({gammas}); show them one by one.")
        gamma = gammas[0]
        rows[name] = {"noise per dimension": gamma, "||sigma||_2": gamma * latent_dim**0.5,
                      "forced KL (nats)": certify.kl_floor(gamma, latent_dim)}
    return pd.DataFrame.from_dict(rows, orient="index")


def noise_numbers(table: pd.DataFrame) -> dict[str, float]:
    """The numbers the chapter quotes from :func:`noise_table`: the noise and forced KL of the
    chapter's design (``gamma_design``, ``kl_design``), of the fixed-noise Markov certificate
    (``gamma_markov``, ``kl_markov``) and of the exact law (``gamma_chi2``, ``kl_chi2``), and
    ``chi2_over_design``, the ratio of the exact law's noise to the design's."""
    design, markov, exact = table.index[0], table.index[1], table.index[-1]
    g, kl = table["noise per dimension"], table["forced KL (nats)"]
    return {"gamma_design": g[design], "kl_design": kl[design], "gamma_markov": g[markov],
            "kl_markov": kl[markov], "gamma_chi2": g[exact], "kl_chi2": kl[exact],
            "chi2_over_design": g[exact] / g[design]}


def fraction_at_cap(models: Mapping[str, Any], names: Sequence[str], x: torch.Tensor) -> dict[str, float]:
    """The fraction of the inputs ``x`` at which each named model's encoder noise
    ``||sigma(x)||_2`` is within 0.1 % of its cap ``s_max``."""
    return {
        n: (
            models[n].std(x).norm(dim=1)
            >= 0.999 * models[n].lipschitz_constants()["s_max"]
        )
        .float()
        .mean()
        .item()
        for n in names
    }


def lipschitz_bounds(models: Mapping[str, Any], names: Sequence[str], x: torch.Tensor,
                     latent_dim: int, seed: int) -> pd.DataFrame:
    """Measured lower bounds (``"a lower"``, ...) beside the certified upper bounds
    (``"a upper"``, ...) of each named model's constants ``a`` (decoder mean image), ``b``
    (encoder mean), ``c`` (encoder standard deviation).

    Each lower bound is the largest :func:`robustvae.certify.lipschitz_lower_bound` (float64
    copy of the model) over probes: for the encoder, the images ``x``, as many uniform-noise
    images and the midpoints of neighbouring images; for the decoder, their latent means and as
    many draws from the prior. The noise comes from a generator seeded with ``seed``.
    """
    gen = torch.Generator().manual_seed(seed)
    n_probe = len(x)
    x_flat = x.flatten(1).double()
    probe = torch.cat(
        [
            x_flat,
            torch.rand(n_probe, x_flat.shape[1], generator=gen, dtype=torch.float64),
            0.5 * (x_flat + x_flat.roll(1, 0)),
        ]
    )
    rows = []
    for n in names:
        k = models[n].lipschitz_constants()
        v64 = copy.deepcopy(models[n]).cpu().double()
        with torch.no_grad():
            z_probe = torch.cat(
                [
                    v64.encoder.mean(probe),
                    torch.randn(n_probe, latent_dim, generator=gen, dtype=torch.float64),
                ]
            )
        lower = {
            "b": certify.lipschitz_lower_bound(lambda u: v64.encoder.mean(u), probe).max().item(),
            "c": certify.lipschitz_lower_bound(lambda u: v64.std(u), probe).max().item(),
            "a": certify.lipschitz_lower_bound(
                lambda z: v64.mean_image(v64.decode(z)).flatten(1), z_probe
            )
            .max()
            .item(),
        }
        rows.append({"model": n, **{f"{key} lower": lower[key] for key in "abc"},
                     **{f"{key} upper": k[key] for key in "abc"}})
    return pd.DataFrame(rows).set_index("model")[
        [f"{k} {w}" for k in "abc" for w in ("lower", "upper")]
    ]


def next_class_targets(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The latent attack's target of each image: the first image of ``x`` whose label is the
    next class (``(y + 1) % 10``)."""
    return x[torch.stack([torch.nonzero(y == (c + 1) % 10)[0, 0] for c in y.tolist()])]


def inside_row(vae, x: torch.Tensor, x_adv: torch.Tensor, eps: float, r: float, prob: float,
               n_samples: int, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """``(fail, row)`` for one attack at radius ``eps``: ``fail`` the Monte-Carlo
    ``P(||g(z') - g(z)|| > r)`` per input (:func:`robustvae.certify.change_probability`,
    ``n_samples`` pairs drawn from ``generator``) and ``row`` its worst cases: the largest
    perturbation, probability, fraction broken (``P >= 1 - prob``), Markov bound
    ``a^2 E||z' - z||^2 / r^2`` (exact moment), the certified bound ``1 - prob`` and the largest
    deterministic damage ``||g(mu(x_adv)) - g(mu(x))||`` over ``r``."""

    fail = certify.change_probability(vae, x, x_adv, r, n_samples, generator)
    a = vae.lipschitz_constants()["a"]
    markov = (a**2 * certify.second_moment(vae, x, x_adv) / r**2).cpu()
    with torch.no_grad():
        damage = attacks.reconstruction_distance(vae, x, x_adv).cpu()
    return fail, {
        "eps": eps,
        "max ||delta||": (x_adv - x).flatten(1).norm(dim=1).max().item(),
        "max P(change > r)": fail.max().item(),
        "broken (P >= 1-p)": (fail >= 1 - prob).float().mean().item(),
        "max Markov bound": markov.max().item(),
        "certified bound": 1 - prob,
        "max damage / r": damage.max().item() / r,
    }


def margins_table(models: Mapping[str, Any], portfolios: Mapping[str, Any],
                  emp: Mapping[str, torch.Tensor], cert: Mapping[str, torch.Tensor],
                  bounds: pd.DataFrame, x: torch.Tensor, r: float, prob: float) -> pd.DataFrame:
    """Empirical against certified margins, one row per model: medians of the portfolio's
    margin ``emp`` and of each attack's, its minimum, the fraction never broken, and for the
    models in ``cert`` the smallest certified margin (paper's variant), the tight variant's,
    and the tight formula with the measured lower bounds of ``bounds`` in place of the
    constants (not a certificate)."""
    rows = []
    for n in models:
        row = {
            "model": n,
            "empirical median": emp[n].median().item(),
            "max-damage median": portfolios[n].margins["max-damage"].median().item(),
            "L-BFGS-B median": portfolios[n].margins["L-BFGS-B"].median().item(),
            "empirical min": emp[n].min().item(),
            "never broken": torch.isinf(emp[n]).float().mean().item(),
        }
        if n in cert:
            k = models[n].lipschitz_constants()
            low = bounds.loc[n]
            s_x = models[n].std(x).norm(dim=1).cpu()
            row.update(
                {
                    "certified (paper)": cert[n].min().item(),
                    "certified (tight)": certify.certified_margin(
                        s_x, r, k["a"], k["b"], k["c"], prob, "tight"
                    ).min().item(),
                    "tight, measured constants": certify.certified_margin(
                        s_x, r, low["a lower"], low["b lower"], low["c lower"], prob, "tight"
                    ).min().item(),
                }
            )
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def attack_additions(portfolios: Mapping[str, Any]) -> pd.DataFrame:
    """What each attack of each model's portfolio added (index ``(model, attack)``; columns
    :data:`ADDITION_COLUMNS` of :meth:`robustvae.rrobust.PortfolioMargin.summary`)."""
    adds = pd.concat(
        {n: p.summary() for n, p in portfolios.items()}, names=["model", "attack"]
    )
    return adds[ADDITION_COLUMNS]


def reconstruction_spread(models: Mapping[str, Any], x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Each model's spread: the mean L2 distance between its deterministic reconstructions
    ``g(mu(x))`` of images of different classes."""
    spread = {}
    with torch.no_grad():
        for n, vae in models.items():
            rec = vae.reconstruct(x, sample=False).flatten(1)
            d = torch.cdist(rec, rec)
            spread[n] = d[(y[:, None] != y[None]).to(x.device)].mean().item()
    return spread


def budget_table(models: Mapping[str, Any], damage: Mapping[str, torch.Tensor],
                 spread: Mapping[str, float], eps: float, lip_names: Sequence[str],
                 seed: int) -> tuple[pd.DataFrame, dict[str, dict[str, tuple[float, float, float]]]]:
    """``(table, gaps)`` at one attack budget ``eps``: per model the mean and largest damage
    (``damage[n]``, per input), the ``spread``, mean damage over spread and the bound
    ``a b eps`` (NaN for ``"standard"``); for each of ``lip_names`` the paired 95% bootstrap
    interval (:func:`robustvae.stats.bootstrap_ci`, ``seed``) of how much less it moves than
    the standard VAE, absolute (``gaps[n]["abs"]``) and over each model's spread
    (``gaps[n]["rel"]``), both also as text columns (a dash for the standard VAE)."""
    table = pd.DataFrame(
        [
            {
                "model": n,
                "mean damage": damage[n].mean().item(),
                "max damage": damage[n].max().item(),
                "spread": spread[n],
                "mean damage / spread": damage[n].mean().item() / spread[n],
                "bound a b eps": (
                    models[n].lipschitz_constants()["a"]
                    * models[n].lipschitz_constants()["b"]
                    * eps
                    if n != "standard"
                    else np.nan
                ),
            }
            for n in models
        ]
    ).set_index("model")
    gaps = {
        n: {
            "abs": bootstrap_ci(
                lambda a, b: float((a - b).mean()), damage["standard"], damage[n], seed=seed
            ),
            "rel": bootstrap_ci(
                lambda a, b, n=n: float((a / spread["standard"] - b / spread[n]).mean()),
                damage["standard"], damage[n], seed=seed,
            ),
        }
        for n in lip_names
    }
    for key, col in (("abs", "standard minus this [95%]"), ("rel", "same, / spread [95%]")):
        table[col] = [interval(*gaps[n][key]) if n in gaps else DASH for n in table.index]
    return table, gaps


def findings(margins: Sequence[float], lip_names: Sequence[str], cert: Mapping[str, torch.Tensor],
             inside: Mapping[Any, torch.Tensor], inside_df: pd.DataFrame, summary: pd.DataFrame,
             margins_df: pd.DataFrame, budget_df: pd.DataFrame) -> dict[str, Any]:
    """The numbers of the chapter's "What we found", by glue name: the largest change
    probability and Markov bound inside the certified radius (``max_fail_inside``,
    ``max_markov_inside``); per Lipschitz VAE ``i`` its request and certificate (``req_i``,
    ``cert_i``), test ELBO and MSE (``elbo_i``, ``mse_i``), empirical median margin
    (``emp_i``), tight margin with measured constants (``meas_i``), mean damage at the common
    budget, absolute and over the spread (``dmg_i``, ``rel_i``); the standard VAE's
    (``elbo_std``, ``mse_std``, ``emp_std``, ``dmg_std``, ``rel_std``); and ``ratio_0``, the
    sharpest model's empirical median over its certificate."""
    out: dict[str, Any] = {
        "max_fail_inside": max(v.max().item() for v in inside.values()),
        "max_markov_inside": inside_df["max Markov bound"].max(),
        "elbo_std": summary.loc["standard", "test ELBO"],
        "mse_std": summary.loc["standard", "pixel MSE"],
    }
    for i, n in enumerate(lip_names):
        out.update({
            f"req_{i}": margins[i],
            f"cert_{i}": cert[n].min().item(),
            f"elbo_{i}": summary.loc[n, "test ELBO"],
            f"mse_{i}": summary.loc[n, "pixel MSE"],
            f"emp_{i}": margins_df.loc[n, "empirical median"],
            f"dmg_{i}": budget_df.loc[n, "mean damage"],
            f"rel_{i}": budget_df.loc[n, "mean damage / spread"],
            f"meas_{i}": margins_df.loc[n, "tight, measured constants"],
        })
    out.update({
        "emp_std": margins_df.loc["standard", "empirical median"],
        "dmg_std": budget_df.loc["standard", "mean damage"],
        "rel_std": budget_df.loc["standard", "mean damage / spread"],
        "ratio_0": margins_df.loc[lip_names[0], "empirical median"] / cert[lip_names[0]].min().item(),
    })
    return out


#: Barrett et al. (AISTATS 2022) on MNIST, as the paper states its setting and reads off its figure of
#: empirical margins (``REFERENCES.md``): the published column of :func:`paper_table`.
PUBLISHED = {
    "layers": "Björck-orthonormal dense layers, GroupSort",
    "decoder likelihood": "continuous Bernoulli",
    "training images": "MNIST, 60,000",
    "certificate (Markov, p = 1/2)": "positive root of (b²+c²)R² + 4csR + 4s² = r²/(2a²)",
    "empirical margin, Lipschitz VAE": "about 6 (Lipschitz constant 5)",
    "empirical margin, standard VAE": "about 1 to 1.5",
}


def _median_interval(values: torch.Tensor, seed: int) -> str:
    return interval(*bootstrap_ci(np.median, values.double().cpu().numpy(), seed=seed), precision=1)


def paper_table(models: Mapping[str, Any], emp: Mapping[str, torch.Tensor], lip_names: Sequence[str],
                requested: Mapping[str, float], config: Any, seed: int = 0) -> tuple[pd.DataFrame, dict[str, int]]:
    """Return Barrett et al.'s setting and headline numbers (:data:`PUBLISHED`) beside this chapter's,
    and the numbers to record (``n_train``, the training images of ``config``, a Lipschitz VAE's).

    This book's column: the layers and likelihood the chapter's models use, the training set,
    and the median empirical margin of every Lipschitz VAE (its requested ``R*`` and the product
    ``ab`` of its exact constants, the most ``g(mu(x))`` can stretch a perturbation) and of
    ``"standard"``, each with a 95% bootstrap interval over the attacked inputs.
    """
    def ab(n):
        k = models[n].lipschitz_constants()
        return k["a"] * k["b"]

    n_train = len(config.training_data()[0])
    ours = {
        "layers": "spectrally normalised dense layers, GroupSort (Björck: the paper-layers profile)",
        "decoder likelihood": config.likelihood,
        "training images": f"{config.dataset}, {n_train:,}",
        "certificate (Markov, p = 1/2)": "the same quadratic (certify.certified_margin)",
        "empirical margin, Lipschitz VAE": "; ".join(
            f"R*={requested[n]:g} (ab={ab(n):.1f}): {_median_interval(emp[n], seed)}" for n in lip_names
        ),
        "empirical margin, standard VAE": _median_interval(emp["standard"], seed),
    }
    table = pd.DataFrame({"Barrett et al. 2022": PUBLISHED, "this book [95%]": ours})
    table.index.name = "MNIST"
    return table, {"n_train": n_train}


@torch.no_grad()
def per_image_metrics(vae, x: torch.Tensor, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Per-image ``elbo`` (one reparameterised sample; seed first) and pixel ``mse`` of the mean
    reconstruction, ``(N,)`` each, on CPU: the per-image form of :func:`robustvae.training.vae_metrics`."""
    dev = next(vae.parameters()).device
    elbo, mse = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(dev)
        elbo.append(vae.elbo(xb)["elbo"].cpu())
        mse.append((vae.reconstruct(xb, sample=False) - xb).pow(2).flatten(1).mean(1).cpu())
    return {"elbo": torch.cat(elbo), "mse": torch.cat(mse)}


def closest_in_mse(mse: Mapping[str, float], target: float) -> str:
    """The name in ``mse`` whose reconstruction error is closest to ``target`` (first on ties)."""
    if not mse:
        raise ValueError("closest_in_mse needs at least one model.")
    return min(mse, key=lambda n: abs(mse[n] - target))


def pair_comparison(pairs: Sequence[tuple[str, str]], metrics: Mapping[str, Mapping[str, torch.Tensor]],
                    emp: Mapping[str, torch.Tensor], seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Compare each pair ``(model, reference)`` on the same images: ``(table, gaps)``.

    ``metrics`` holds each model's :func:`per_image_metrics` on the test images, ``emp`` its
    empirical margins on the attacked ones. One row per pair: both models' pixel MSE and test ELBO,
    the mean ELBO difference with a paired 95% bootstrap interval, both median empirical margins
    and their difference with a paired 95% bootstrap interval (:func:`robustvae.stats.median_difference`).
    ``gaps[(model, reference)]`` holds the ``"elbo"`` and ``"margin"`` triples ``(point, lo, hi)``.
    """
    rows, gaps = [], {}
    for a, b in pairs:
        ma, mb = metrics[a], metrics[b]
        d_elbo = bootstrap_ci(np.mean, (ma["elbo"] - mb["elbo"]).double().numpy(), seed=seed)
        d_margin = median_difference(emp[a], emp[b], seed=seed)
        gaps[(a, b)] = {"elbo": d_elbo, "margin": d_margin}
        rows.append({
            "model": a, "reference": b,
            "pixel MSE": ma["mse"].mean().item(), "reference MSE": mb["mse"].mean().item(),
            "test ELBO": ma["elbo"].mean().item(), "reference ELBO": mb["elbo"].mean().item(),
            "ELBO difference [95%]": interval(*d_elbo, precision=1),
            "empirical median": emp[a].median().item(), "reference median": emp[b].median().item(),
            "margin difference [95%]": interval(*d_margin, precision=2),
        })
    return pd.DataFrame(rows).set_index(["model", "reference"]), gaps


def pair_numbers(table: pd.DataFrame, gaps: Mapping[tuple[str, str], Mapping[str, tuple[float, float, float]]],
                 cert: Mapping[str, torch.Tensor], std_mse: Mapping[str, float]) -> dict[str, Any]:
    """The numbers of :func:`pair_comparison` to record, row ``j`` as ``pl{j}_...``: the two names,
    their MSE, ELBO and median empirical margin, the ELBO and margin differences with their
    intervals, and the smallest certified margin of a model that has one (NaN otherwise); plus
    ``pl_n`` (rows) and ``pl_standards`` (each standard VAE's reconstruction error, as text)."""
    out: dict[str, Any] = {"pl_n": len(table),
                           "pl_standards": ", ".join(f"{n}: {v:.4f}" for n, v in std_mse.items())}
    for j, ((a, b), row) in enumerate(table.iterrows()):
        g = gaps[(a, b)]
        out.update({
            f"pl{j}_model": a, f"pl{j}_ref": b,
            f"pl{j}_mse": row["pixel MSE"], f"pl{j}_ref_mse": row["reference MSE"],
            f"pl{j}_elbo": row["test ELBO"], f"pl{j}_ref_elbo": row["reference ELBO"],
            f"pl{j}_elbo_diff": g["elbo"][0], f"pl{j}_elbo_lo": g["elbo"][1], f"pl{j}_elbo_hi": g["elbo"][2],
            f"pl{j}_emp": row["empirical median"], f"pl{j}_ref_emp": row["reference median"],
            f"pl{j}_margin_diff": g["margin"][0], f"pl{j}_margin_lo": g["margin"][1],
            f"pl{j}_margin_hi": g["margin"][2],
            f"pl{j}_cert": cert[a].min().item() if a in cert else float("nan"),
        })
    return out


def portfolio_search(x: torch.Tensor, r: float, eps_grid: Sequence[float], budgets: Mapping[str, str],
                     lbfgs_grid: Sequence[float], generator: torch.Generator, *, prob: float, n_mc: int,
                     steps: int, lbfgs_starts: int, lbfgs_iter: int):
    """The chapter's attack portfolio as a function of the model: ``search(vae)`` returns
    :func:`robustvae.certify.portfolio_attack_margins`'s ``(portfolio, found)`` for the projected
    maximum-damage attack on every radius of ``eps_grid`` and L-BFGS-B on ``lbfgs_grid``, drawing
    from ``generator`` (one search per model, in the order they are called)."""
    def search(vae):
        return certify.portfolio_attack_margins(
            vae, x, r, eps_grid,
            {"max-damage": None,
             "L-BFGS-B": rr.lbfgs_damage_attack(lbfgs_starts, lbfgs_iter, generator=generator)},
            prob=prob, n_samples=n_mc, steps=steps, generator=generator, budgets=budgets,
            grids={"L-BFGS-B": lbfgs_grid},
        )
    return search


@dataclass
class PaperLayers:
    """What :func:`paper_layers` computed: the :func:`pair_comparison` ``table`` and ``gaps``, the
    numbers to record, every model's certified margins (``cert``), and the Björck model's name and
    the design it rebuilds (``None`` when not run)."""
    table: pd.DataFrame
    gaps: dict
    numbers: dict
    cert: dict
    bjorck: str | None
    base: str | None


def paper_layers(models: Mapping[str, Any], configs: Mapping[float, Any], lip_names: Sequence[str], search,
                 x_test: torch.Tensor, x_att: torch.Tensor, r: float, prob: float,
                 emp: Mapping[str, torch.Tensor], cert: Mapping[str, torch.Tensor],
                 bjorck_margin: float | None, matched_latent_dims: Sequence[int], vae_kwargs: Mapping[str, Any],
                 device, seed: int = 0) -> PaperLayers | None:
    """The ``paper-layers`` profile of chapter 7, or ``None`` (with a message) when it is off.

    With ``bjorck_margin`` set, the design ``configs[bjorck_margin]`` is retrained with Björck layers
    (:class:`robustvae.bjorck.BjorckVAEConfig`, same constants) and compared with it; with latent
    sizes in ``matched_latent_dims``, standard VAEs (:func:`robustvae.training.get_vae` with
    ``vae_kwargs``) are trained and each Lipschitz VAE of ``lip_names`` is compared with the one,
    ``models["standard"]`` included, closest in pixel MSE (:func:`closest_in_mse`). Every extra model
    is attacked with ``search`` (:func:`portfolio_search`, the chapter's portfolio) on ``x_att``;
    ELBO and MSE per image come from ``x_test`` (seeded with ``seed`` first).
    """
    from .. import bjorck, lipschitz

    if bjorck_margin is None and not matched_latent_dims:
        print("not run in the book (bjorck_margin = None, matched_latent_dims = ()): "
              "see the paper-layers rerun profile in the appendix")
        return None
    seed_everything(seed)
    metrics = {n: per_image_metrics(vae, x_test) for n, vae in models.items()}
    extra, pairs, name, base = {}, [], None, None
    if bjorck_margin is not None:
        base = f"R*={bjorck_margin:g}"
        name = f"Björck {base}"
        extra[name], _ = lipschitz.get_lipschitz_vae(bjorck.BjorckVAEConfig.of(configs[bjorck_margin]), device=device)
        pairs.append((name, base))
    standards = {"standard": models["standard"]}
    for d in matched_latent_dims:
        standards[f"standard d={d}"], _ = get_vae(latent_dim=d, device=device, **vae_kwargs)
    metrics.update({n: per_image_metrics(vae, x_test) for n, vae in {**extra, **standards}.items()
                    if n not in metrics})
    std_mse = {n: metrics[n]["mse"].mean().item() for n in standards}
    for n in lip_names if matched_latent_dims else ():
        pairs.append((n, closest_in_mse(std_mse, metrics[n]["mse"].mean().item())))
    extra.update({b: standards[b] for _, b in pairs if b not in models})
    emp_all, cert_all = dict(emp), dict(cert)
    for n, vae in extra.items():  # the chapter's attack portfolio, same budgets
        emp_all[n] = search(vae)[0].margin.double()
    if name is not None:
        cert_all[name] = certify.certified_margins(extra[name], x_att, r, prob).cpu()
    table, gaps = pair_comparison(pairs, metrics, emp_all, seed)
    return PaperLayers(table, gaps, pair_numbers(table, gaps, cert_all, std_mse), cert_all, name, base)


def paper_layer_claims(claims, result: PaperLayers | None, bjorck_margin: float | None, lip_names: Sequence[str]) -> None:
    """Check the ``paper-layers`` profile's claims on ``claims`` (nothing when it did not run): the
    Björck model meets its certified margin (a check); Björck layers reach a higher test ELBO than
    spectral normalisation at equal constants, and every Lipschitz VAE breaks at a larger median radius
    than its MSE-matched standard VAE (findings, each on a paired 95% interval)."""
    if result is None:
        return
    if result.bjorck is not None:
        g, c = result.gaps[(result.bjorck, result.base)], result.cert[result.bjorck].min().item()
        claims.check("the Björck-layer VAE meets its requested certified margin", c >= bjorck_margin,
                     f"{c:.4f} >= {bjorck_margin:g}", kind="check", tuned=True)
        claims.check(
            "at equal Lipschitz constants, Björck layers reach a higher test ELBO than spectral "
            "normalisation (paired 95% interval of the mean difference above 0)",
            g["elbo"][1] > 0, f"difference {g['elbo'][0]:.1f} [{g['elbo'][1]:.1f}, {g['elbo'][2]:.1f}] nats",
            kind="finding", tuned=True,
        )
    matched = [(a, b) for a, b in result.gaps if a in lip_names]
    if matched:
        claims.check(
            "at matched reconstruction error every Lipschitz VAE still breaks at a larger median "
            "radius than its standard VAE (paired 95% interval of the median difference above 0)",
            all(result.gaps[p]["margin"][1] > 0 for p in matched),
            "; ".join(f"{a} vs {b}: [{result.gaps[(a, b)]['margin'][1]:.2f}, {result.gaps[(a, b)]['margin'][2]:.2f}]"
                      for a, b in matched),
            kind="finding", tuned=True,
        )


def inside_attacks(models: Mapping[str, Any], lip_names: Sequence[str], cert: Mapping[str, torch.Tensor],
                   x: torch.Tensor, x_target: torch.Tensor, r: float, prob: float, n_mc: int, steps: int,
                   lbfgs_starts: int, lbfgs_iter: int, generator: torch.Generator) -> tuple[pd.DataFrame, dict]:
    """Attack every Lipschitz VAE of ``lip_names`` at its smallest certified radius: ``(table, inside)``.

    Three attacks per model, in this order, drawing from ``generator``: the projected maximum-damage
    attack (:func:`robustvae.attacks.max_damage`, ``steps``), L-BFGS-B
    (:func:`robustvae.rrobust.lbfgs_damage_attack`) and the latent attack towards ``x_target``
    (:func:`robustvae.attacks.latent_attack`). Each row is :func:`inside_row` (``P(change > r)`` from
    ``n_mc`` pairs, the Markov bound from the exact moment, the damage); ``inside[(model, attack)]``
    holds its per-input values. The table's index is ``(model, attack)``.
    """
    rows, inside = [], {}
    for n in lip_names:
        vae, eps_in = models[n], cert[n].min().item()
        for attack in ("max-damage", "L-BFGS-B", "latent"):
            if attack == "max-damage":
                x_adv = attacks.max_damage(vae, x, eps_in, norm="l2", steps=steps, generator=generator)
            elif attack == "L-BFGS-B":
                x_adv = rr.lbfgs_damage_attack(lbfgs_starts, lbfgs_iter, generator=generator)(vae, x, eps_in)
            else:
                x_adv = attacks.latent_attack(vae, x, x_target, eps_in, norm="l2", steps=steps)
            inside[n, attack], row = inside_row(vae, x, x_adv, eps_in, r, prob, n_mc, generator)
            rows.append({"model": n, "attack": attack, **row})
    return pd.DataFrame(rows).set_index(["model", "attack"]), inside

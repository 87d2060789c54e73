"""One robustness scorecard for every VAE of the book: each column for one model.

Every column is computed by the function its chapter uses; this module only runs it on one
model, on a fixed input subset, and attaches a percentile-bootstrap 95% interval over the
inputs. Nothing here re-implements a chapter's method.

Columns (``COLUMNS`` lists them with the direction that counts as better):

==========================  ==================================================================
``elbo``, ``mse``           test ELBO (nats) and pixel MSE of the mean reconstruction
                            (:class:`~robustvae.ood.NegELBO`,
                            :func:`~robustvae.calibration.reconstruction_mse`; chapter 1)
``ood_auroc``               AUROC of the model's best VAE score, in-distribution test digits vs
                            Fashion-MNIST (:func:`~robustvae.ood.vae_detectors`,
                            :func:`~robustvae.ood.score_sets`, :func:`~robustvae.ood.ood_metrics`;
                            chapter 2, Nalisnick et al. 2019)
``detection_auroc``         reconstruction-consistency detection of adversarial inputs: one
                            minus the agreement of ``n_samples`` stochastic reconstructions'
                            labels with the input's label
                            (:mod:`~robustvae.consistency`; chapter 3)
``purified_acc``            accuracy of ``classifier(reconstruct(x))`` under the adaptive attack
                            (per image, the worse of white-box PGD and identity-BPDA PGD;
                            :mod:`~robustvae.purify`; chapter 4, Athalye et al. 2018)
``spearman``                Spearman correlation of reconstruction MSE with classifier
                            confidence (:func:`~robustvae.calibration.score_inputs`,
                            :func:`~robustvae.calibration.spearman`; chapter 5)
``margin``                  median empirical r-robustness margin, the smallest over a portfolio
                            of attacks per input, projected gradient and L-BFGS-B
                            (:func:`~robustvae.rrobust.portfolio_margin`; chapter 6,
                            Camuto et al. 2021)
``certified``               median certified margin of a Lipschitz VAE
                            (:func:`~robustvae.certify.certified_margins`; chapter 7, Barrett
                            et al. 2022); missing for models without a certificate
==========================  ==================================================================

Each column function returns an :class:`Estimate` (value and interval) and the per-input
numbers behind it, so a caller can check claims input by input.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import attacks, calibration, certify, ood, purify, stats
from . import consistency as cons
from . import rrobust as rr
from .memo import memoize

__all__ = [
    "evaluate",
    "COLUMNS",
    "Estimate",
    "bootstrap",
    "two_sample_auroc",
    "likelihood_columns",
    "ood_column",
    "detection_column",
    "purified_column",
    "spearman_column",
    "MARGIN_ATTACKS",
    "margin_column",
    "margin_budgets",
    "margin_summary",
    "certified_column",
    "table",
    "best_per_column",
    "normalise_columns",
]

#: Column name -> (label for tables, True if a larger value is better).
COLUMNS: dict[str, tuple[str, bool]] = {
    "elbo": ("test ELBO (nats)", True),
    "mse": ("pixel MSE", False),
    "ood_auroc": ("OOD AUROC (vs Fashion-MNIST)", True),
    "detection_auroc": ("adv. detection AUROC", True),
    "purified_acc": ("purified acc. (adaptive)", True),
    "spearman": ("Spearman(MSE, conf.)", False),
    "margin": ("median emp. margin", True),
    "certified": ("certified margin", True),
}


@dataclass
class Estimate:
    """A point estimate with a percentile-bootstrap interval ``[lo, hi]`` and per-input data."""

    value: float
    lo: float
    hi: float
    per_input: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    note: str = ""

    def __post_init__(self):
        self.value, self.lo, self.hi = float(self.value), float(self.lo), float(self.hi)

    @classmethod
    def missing(cls, note: str = "") -> "Estimate":
        """A column that does not apply to the model (NaN)."""
        nan = float("nan")
        return cls(nan, nan, nan, {}, note)


@contextmanager
def _seeded(seed: int):
    """Fork torch's random state and seed it, so a column does not depend on what ran before."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def bootstrap(values, statistic: Callable[[np.ndarray], float] = np.mean, n_boot: int = 200,
              seed: int = 0, level: float = 0.95) -> Estimate:
    """``statistic(values)`` with a percentile-bootstrap interval over the inputs
    (:func:`robustvae.stats.bootstrap_ci`, seeded)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if len(v) == 0:
        raise ValueError("bootstrap needs at least one value.")
    if np.isnan(v).any():
        raise ValueError("bootstrap got NaN values.")
    value, lo, hi = stats.bootstrap_ci(lambda a: float(statistic(a)), v, n_boot=n_boot, level=level,
                                       seed=seed)  # infinite margins: see bootstrap_ci
    return Estimate(value, lo, hi, {"values": v})


def two_sample_auroc(s_neg, s_pos, n_boot: int = 200, seed: int = 0) -> Estimate:
    """AUROC of a score that should be higher on the positive set, with the two sets resampled
    separately (:func:`robustvae.ood.ood_metrics`, the chapter-2 bootstrap)."""
    m = ood.ood_metrics(s_neg, s_pos, n_boot=n_boot, seed=seed)
    if n_boot:
        return Estimate(m["auroc"], m["auroc_lo"], m["auroc_hi"])
    return Estimate(m["auroc"], float("nan"), float("nan"))


# ---------------------------------------------------------------------------------------
# The columns, one model at a time
# ---------------------------------------------------------------------------------------
@memoize
def likelihood_columns(vae: nn.Module, x: torch.Tensor, n_boot: int = 200, seed: int = 0) -> dict[str, Estimate]:
    """Test ELBO (one sample of ``z`` per image, nats) and pixel MSE of the mean reconstruction,
    each the mean over ``x`` with a bootstrap interval (chapter 1's quantities, per image)."""
    with _seeded(seed):
        elbo = -ood.NegELBO(vae).score(x).numpy()
    mse = calibration.reconstruction_mse(vae, x)
    return {"elbo": bootstrap(elbo, np.mean, n_boot, seed), "mse": bootstrap(mse, np.mean, n_boot, seed)}


@memoize
def ood_column(vae: nn.Module, x_in: torch.Tensor, x_out: torch.Tensor, x_train: torch.Tensor,
               k: int = 16, n_boot: int = 200, seed: int = 0) -> Estimate:
    """AUROC of the model's best VAE score (of chapter 2's :func:`~robustvae.ood.vae_detectors`)
    for ``x_in`` (in-distribution) against ``x_out``, with a two-sample bootstrap interval.

    The best score is picked on the same images it is evaluated on, as in chapter 2, so the
    value is optimistic by the selection; ``note`` names the score.
    """
    dets = ood.vae_detectors(vae, k=k)
    with _seeded(seed):
        scores = ood.score_sets(dets, {"in": x_in, "out": x_out}, x_train=x_train, seed=seed)
    auroc = {name: ood.ood_metrics(s["in"], s["out"])["auroc"] for name, s in scores.items()}
    best = max(auroc, key=auroc.get)
    est = two_sample_auroc(scores[best]["in"], scores[best]["out"], n_boot, seed)
    est.note = best
    est.per_input = {"in": scores[best]["in"].numpy(), "out": scores[best]["out"].numpy(),
                     "auroc_by_score": auroc}
    return est


@memoize
def detection_column(vae: nn.Module, classifier: nn.Module, x_clean: torch.Tensor, x_adv: torch.Tensor,
                     n_samples: int = 10, n_boot: int = 200, seed: int = 0) -> Estimate:
    """Chapter 3's consistency detector: AUROC of ``1 - agreement`` (the share of ``n_samples``
    stochastic reconstructions whose label differs from the classifier's label of the input)
    for clean inputs against adversarial ones (pass only successful attacks)."""
    with _seeded(seed):
        with torch.no_grad():
            dev = next(classifier.parameters()).device
            own_c = classifier(x_clean.to(dev)).argmax(1).cpu()
            own_a = classifier(x_adv.to(dev)).argmax(1).cpu()
        lab_c = cons.reconstruction_labels(vae, classifier, x_clean, n_samples)
        lab_a = cons.reconstruction_labels(vae, classifier, x_adv, n_samples)
    s_c = (1 - cons.agreement(lab_c, own_c)).numpy()
    s_a = (1 - cons.agreement(lab_a, own_a)).numpy()
    est = two_sample_auroc(s_c, s_a, n_boot, seed)
    est.value = cons.detection_auroc(s_c, s_a)   # the chapter's statistic (identical to the above)
    est.per_input = {"clean": s_c, "adversarial": s_a,
                     "single_label_clean": (cons.n_distinct(lab_c) == 1).numpy()}
    return est


@memoize
def purified_column(vae: nn.Module, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                    norm: str = "linf", steps: int = 15, n_boot: int = 200, seed: int = 0) -> Estimate:
    """Robust accuracy of chapter 4's purifier (a), ``classifier(G(mu(x)))``, under the adaptive
    attack at radius ``eps``: an image counts as robust only if both white-box PGD through the
    VAE and identity-BPDA PGD (Athalye et al., ICML 2018) fail on it. ``x`` should be images the
    bare classifier gets right."""
    pur = purify.Reconstruct(vae)
    defended = purify.Defended(classifier, pur)
    attacked = {"white-box": defended, "BPDA": purify.Defended(classifier, purify.BPDA(pur))}
    ok = {}
    for name, model in attacked.items():
        x_adv = attacks.pgd(model, x, y, eps, norm=norm, steps=steps,
                            generator=torch.Generator().manual_seed(seed))
        ok[name] = purify.correct(defended, x_adv, y, seed=seed).numpy()
    robust = np.logical_and.reduce(list(ok.values())).astype(float)
    est = bootstrap(robust, np.mean, n_boot, seed)
    est.per_input.update({k: v.astype(float) for k, v in ok.items()})
    est.per_input["clean"] = purify.correct(defended, x, y, seed=seed).numpy().astype(float)
    return est


@memoize
def spearman_column(vae: nn.Module, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    n_boot: int = 200, seed: int = 0) -> Estimate:
    """Chapter 5's signal: Spearman's rho of the reconstruction MSE with the classifier's top
    softmax probability on ``x`` (negative: the VAE reconstructs worse where the classifier is
    less sure), with a paired bootstrap interval."""
    with _seeded(seed):
        _, df = calibration.score_inputs(classifier, vae, x, y)
    mse, conf = df["mse"].to_numpy(), df["confidence"].to_numpy()
    value, lo, hi = stats.bootstrap_ci(lambda a, b: calibration.spearman(a, b)[0], mse, conf,
                                       n_boot=n_boot, seed=seed)
    return Estimate(value, lo, hi, {"mse": mse, "confidence": conf})


#: The attack directions of the empirical margin's portfolio, by name: chapter 6's three
#: projected-gradient directions and the L-BFGS-B maximum-damage attack of Camuto et al. (2021).
MARGIN_ATTACKS = ("max-damage", "latent (targeted)", "encoder KL", "L-BFGS-B")


def margin_budgets(directions: Sequence[str] = MARGIN_ATTACKS, steps: int = 20, lbfgs_starts: int = 5,
                   lbfgs_iter: int = 10) -> dict[str, str]:
    """Each margin attack's budget in words, for table captions and columns."""
    words = {"max-damage": f"PGD, {steps} steps, 1 restart",
             "latent (targeted)": f"PGD, {steps} steps, 1 start",
             "encoder KL": f"PGD, {steps} steps, 1 start",
             "L-BFGS-B": f"L-BFGS-B, {lbfgs_iter} iterations, {lbfgs_starts} starts"}
    return {d: words[d] for d in directions}


@memoize
def margin_column(vae: nn.Module, x: torch.Tensor, r: float, radii: Sequence[float],
                  directions: Sequence[str] = MARGIN_ATTACKS, x_target: torch.Tensor | None = None,
                  steps: int = 20, n_mc: int = 100, refine_steps: int = 4, n_boot: int = 200,
                  seed: int = 0, lbfgs_starts: int = 5, lbfgs_iter: int = 10,
                  lbfgs_radii: Sequence[float] | None = None) -> Estimate:
    """Chapter 6's empirical r-robustness margin of each input: the smallest breaking
    perturbation found by a portfolio of attack ``directions`` (of :data:`MARGIN_ATTACKS`; the
    targeted latent attack needs ``x_target``) through :func:`~robustvae.rrobust.portfolio_margin`
    (Camuto et al., AISTATS 2021); the median over inputs with a bootstrap interval. A margin is
    ``inf`` where no attack broke the input up to ``radii[-1]``. Inputs already broken at a
    smaller radius are not attacked again (``stop_when_broken``). The projected-gradient
    attacks take ``steps`` steps; the L-BFGS-B attack ``lbfgs_starts`` random starts of at most
    ``lbfgs_iter`` iterations each, on the grid ``lbfgs_radii`` (default ``radii``).

    ``per_input`` holds ``"values"`` (the portfolio's margins), each attack's margins by name,
    and ``"best_attack"`` (which attack found each margin); :func:`margin_summary` turns it
    into the "what each attack adds" table."""
    directions = tuple(directions)
    if not directions or any(d not in MARGIN_ATTACKS for d in directions):
        raise ValueError(f"directions must be a non-empty subset of {MARGIN_ATTACKS}, got {directions!r}.")
    if "latent (targeted)" in directions and x_target is None:
        raise ValueError("The targeted latent attack needs x_target (one target image per input).")
    gen = torch.Generator().manual_seed(seed)
    x = x.detach()
    ref = rr.stochastic_reconstructions(vae, x, n_mc, generator=gen)
    make = {
        "max-damage": lambda: rr.max_damage_attack(steps, generator=gen),
        "latent (targeted)": lambda: rr.latent_target_attack(x_target, steps, generator=gen),
        "encoder KL": lambda: rr.encoder_kl_attack(steps, generator=gen),
        "L-BFGS-B": lambda: rr.lbfgs_damage_attack(lbfgs_starts, lbfgs_iter, generator=gen),
    }
    options = {"L-BFGS-B": {"radii": lbfgs_radii}} if lbfgs_radii is not None and "L-BFGS-B" in directions else None
    port = rr.portfolio_margin(vae, x, r, radii, {d: make[d]() for d in directions},
                               budgets=margin_budgets(directions, steps, lbfgs_starts, lbfgs_iter),
                               n_samples=n_mc, reference=ref, generator=gen, options=options,
                               refine_steps=refine_steps, stop_when_broken=True)
    est = bootstrap(port.margin.numpy().astype(np.float64), np.median, n_boot, seed)
    est.per_input.update({d: m.numpy().astype(np.float64) for d, m in port.margins.items()})
    est.per_input["best_attack"] = np.array(port.best_attack)
    est.note = "; ".join(f"{d}: {b}" for d, b in port.budgets.items())
    return est


def margin_summary(est: Estimate, directions: Sequence[str] | None = None) -> pd.DataFrame:
    """"What each attack adds" for a :func:`margin_column` estimate: one row per attack (its
    budget, inputs broken, median margin, inputs where it found the portfolio's margin, inputs
    where it beat every other attack and the median drop there; see
    :meth:`~robustvae.rrobust.PortfolioMargin.summary`)."""
    directions = [d for d in (directions or MARGIN_ATTACKS) if d in est.per_input]
    budgets = dict(part.split(": ", 1) for part in est.note.split("; ") if ": " in part)
    port = rr.PortfolioMargin.from_margins({d: torch.as_tensor(est.per_input[d]) for d in directions}, budgets)
    return port.summary()


def certified_column(vae: nn.Module, x: torch.Tensor, r: float, prob: float = 0.5, n_boot: int = 200,
                     seed: int = 0) -> Estimate:
    """Chapter 7's certified margin (Barrett et al., AISTATS 2022) of each input, median and
    bootstrap interval; :meth:`Estimate.missing` for a model without Lipschitz constants."""
    if not hasattr(vae, "lipschitz_constants"):
        return Estimate.missing("no certificate")
    m = certify.certified_margins(vae, x, r, prob).numpy()
    return bootstrap(m, np.median, n_boot, seed)


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------
def table(rows: dict[str, dict[str, Estimate]], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A DataFrame with, per column, ``value``, ``lo`` and ``hi`` (a two-level column index);
    one row per model."""
    columns = list(COLUMNS) if columns is None else list(columns)
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise ValueError(f"Unknown column(s) {unknown}; valid: {list(COLUMNS)}.")
    data = {}
    for model, cols in rows.items():
        rec = {}
        for c in columns:
            e = cols.get(c, Estimate.missing())
            rec[(c, "value")], rec[(c, "lo")], rec[(c, "hi")] = e.value, e.lo, e.hi
        data[model] = rec
    df = pd.DataFrame.from_dict(data, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns, names=["column", "stat"])
    return df


def best_per_column(values: pd.DataFrame) -> pd.Series:
    """The model (row) with the best value of each column of ``values`` (a models x columns
    DataFrame named as in :data:`COLUMNS`), larger or smaller as the column says; NaN ignored."""
    out = {}
    for c in values.columns:
        col = values[c].astype(float).replace([np.inf, -np.inf], np.nan).dropna()
        if c not in COLUMNS:
            raise ValueError(f"Unknown column {c!r}; valid: {list(COLUMNS)}.")
        if len(col):
            out[c] = col.idxmax() if COLUMNS[c][1] else col.idxmin()
    return pd.Series(out, dtype=object)


def normalise_columns(values: pd.DataFrame) -> pd.DataFrame:
    """Each column rescaled to [0, 1] with 1 = best model, 0 = worst (min-max over the rows,
    direction from :data:`COLUMNS`); a column where all models tie maps to 1; NaN stays NaN."""
    out = pd.DataFrame(index=values.index, columns=values.columns, dtype=float)
    for c in values.columns:
        if c not in COLUMNS:
            raise ValueError(f"Unknown column {c!r}; valid: {list(COLUMNS)}.")
        v = values[c].astype(float)
        lo, hi = np.nanmin(v.to_numpy()), np.nanmax(v.to_numpy())
        if not np.isfinite(lo) or not np.isfinite(hi):
            finite = v.replace([np.inf, -np.inf], np.nan)
            lo, hi = finite.min(), finite.max()
            v = v.clip(lo, hi)
        scaled = pd.Series(1.0, index=v.index) if hi == lo else (v - lo) / (hi - lo)
        out[c] = scaled if COLUMNS[c][1] else 1 - scaled
        out.loc[values[c].isna(), c] = np.nan
    return out


def evaluate(vae, *args, **kwargs):
    """Score any VAE (a model with ``encode`` and ``decode``) on every column of this module,
    with the chapter's sample sizes: :func:`robustvae.score.evaluate`, which holds the model
    protocol, the sizes and the report (imported on first use: it imports this module)."""
    from .score import evaluate as _evaluate

    return _evaluate(vae, *args, **kwargs)

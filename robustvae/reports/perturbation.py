"""Chapter 8's tables and summary numbers: the learned perturbation set's coverage, its samples' quality
and the three classifiers' accuracies against the set and against the true perturbations.

The science (the conditional VAE, latent PGD, the RTS grids) is in :mod:`robustvae.perturbation`;
these functions check the chapter's parameters, run the evaluation loops that only assemble its
results, and return its tables (:class:`pandas.DataFrame`) and the numbers its prose quotes (dicts
for :func:`robustvae.record`). The figures are in :mod:`robustvae.plots.perturbation`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import perturbation as P
from .. import stats
from ..tables import fmt_table
from ..training import accuracy, predict_logits
from ..utils import check_choice, check_positive

__all__ = [
    "PUBLISHED",
    "paper_table",
    "FAMILY_NAMES",
    "check_parameters",
    "pair_sizes",
    "training_table",
    "radius_table",
    "approximation_and_quality",
    "robust_accuracy",
    "grid_test",
    "true_correctness",
    "true_table",
    "true_numbers",
    "summary_numbers",
]

#: Display names of the perturbation families, indexed by the pairs' ``family`` code.
FAMILY_NAMES = np.array(["RTS", "elastic"])


def check_parameters(
    family: str,
    percentiles: Sequence[float],
    train_percentile: float,
    grid_shape: Sequence[int],
    grid_magnitudes: Sequence[float],
    **positive: int,
) -> None:
    """Returns nothing; raises a ``ValueError`` naming the first of chapter 8's parameters that is wrong.

    ``positive`` are the sizes that must be positive integers (``cvae_epochs=4, n_eval=200, ...``).
    """
    check_choice("family", family, P.SET_FAMILIES)
    for name, value in positive.items():
        check_positive(name, value)
    if len(grid_shape) != 3 or any(int(k) != k or k < 1 for k in grid_shape):
        raise ValueError(f"grid_shape must be three positive integers (angles, scales, shifts), got {grid_shape!r}.")
    if not grid_magnitudes or any(not 0 < m <= 1 for m in grid_magnitudes):
        raise ValueError(f"grid_magnitudes must be fractions in (0, 1], got {grid_magnitudes!r}.")
    if not percentiles or any(not 0 < p < 100 for p in percentiles) or list(percentiles) != sorted(percentiles):
        raise ValueError(f"percentiles must be ascending numbers in (0, 100), got {percentiles!r}.")
    check_choice("train_percentile", train_percentile, percentiles)


def _shift(pairs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return (pairs["x_tilde"] - pairs["x"]).flatten(1).norm(dim=1)


def pair_sizes(pairs: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Returns the formatted table of the pairs' sizes ``||x~ - x||_2``, described per family.

    ``pairs`` holds ``x``, ``x_tilde`` (``(N, 1, 28, 28)``) and ``family`` (0 = RTS, 1 = elastic).
    """
    frame = pd.DataFrame({"family": FAMILY_NAMES[pairs["family"].numpy()], "||x~ - x||_2": _shift(pairs).numpy()})
    return frame.groupby("family").describe().pipe(fmt_table)


def training_table(history: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Returns the formatted table of the conditional VAE's training history, one row per epoch."""
    frame = pd.DataFrame(
        {
            "epoch": history["epoch"],
            "train loss (-ELBO, warm-up beta)": history["train_loss"],
            "validation ELBO": history["val_elbo"],
        }
    )
    return frame.set_index("epoch").pipe(fmt_table, precision=1)


def radius_table(eps_grid: Mapping[float, float]) -> pd.DataFrame:
    """Returns the formatted table of the set's radii, one row per validation percentile."""
    frame = pd.DataFrame({"percentile": list(eps_grid), "radius eps": list(eps_grid.values())})
    return frame.set_index("percentile").pipe(fmt_table)


def approximation_and_quality(
    cvae: P.PerturbationCVAE,
    pairs: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    eps_grid: Mapping[float, float],
    n_eval: int,
    generator: torch.Generator,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Returns Wong and Kolter's two criteria per radius, and the reference distances beside them.

    The table has one row per radius (the centre, then ``p<percentile>`` for each of ``eps_grid``)
    with the mean approximation error (:func:`robustvae.perturbation.approximation_error`) on the
    first ``n_eval`` of ``pairs`` per family and overall, and the mean distance of 6 samples of
    the set (uniform in the ball) per image of ``x`` to the closest true RTS perturbation on
    :func:`robustvae.perturbation.rts_grid`. The dict gives the pairs' mean sizes per family and
    the grid's floor (the distance of 3 random true RTS perturbations per image to the grid).
    ``generator`` draws the true perturbations first, then the samples radius by radius.
    """
    ex, ex_t, ex_f = pairs["x"][:n_eval], pairs["x_tilde"][:n_eval], pairs["family"][:n_eval]
    radii = {"0 (centre)": 0.0, **{f"p{p}": e for p, e in eps_grid.items()}}
    grid = P.rts_grid()
    n = len(x)
    true_x, _ = P.perturb(x.repeat(3, 1, 1, 1), "rts", generator)
    floor, _ = P.distance_to_family(true_x.view(3, n, 1, 28, 28), x, grid)
    rows = []
    for name, eps in tqdm(radii.items(), desc="radii", leave=False):
        err = P.approximation_error(cvae, ex, ex_t, eps)
        samples, _ = P.sample_set(cvae, x, eps, n=6, mode="ball", generator=generator)
        dist, _ = P.distance_to_family(samples.cpu(), x, grid)
        rows.append(
            {
                "radius": name,
                "eps": eps,
                "approx. error RTS": err[ex_f == 0].mean().item(),
                "approx. error elastic": err[ex_f == 1].mean().item(),
                "approx. error all": err.mean().item(),
                "sample dist. to RTS": dist.mean().item(),
            }
        )
    shift = _shift(pairs)
    ref = {
        "||x~ - x|| RTS": shift[:n_eval][ex_f == 0].mean().item(),
        "||x~ - x|| elastic": shift[:n_eval][ex_f == 1].mean().item(),
        "true RTS to grid (floor)": floor.mean().item(),
    }
    return pd.DataFrame(rows).set_index("radius"), ref


def robust_accuracy(
    cvae: P.PerturbationCVAE,
    classifiers: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    x_true: torch.Tensor,
    eps: float,
    steps: int,
    generator: torch.Generator,
    device: torch.device | str,
    batch_size: int = 250,
) -> pd.DataFrame:
    """Returns each classifier's accuracy clean, on ``x_true`` and in the worst case in the learned set.

    One row per classifier (index ``training``); the worst case is latent PGD
    (:func:`robustvae.perturbation.latent_pgd`, ``steps`` steps, 2 restarts) at radius ``eps``,
    run on batches of ``batch_size`` with ``generator`` drawing the starts.
    """
    table = []
    for m, clf in tqdm(classifiers.items(), desc="evaluating", leave=False):
        worst = []
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            x_adv, _ = P.latent_pgd(cvae, clf, xb, yb, eps, steps, restarts=2, generator=generator)
            worst.append(x_adv.cpu())
        table.append(
            {
                "training": m,
                "clean": accuracy(clf, x, y),
                "random true perturbation": accuracy(clf, x_true, y),
                "worst case in learned set": accuracy(clf, torch.cat(worst), y),
            }
        )
    return pd.DataFrame(table).set_index("training")


def grid_test(magnitude: float) -> str:
    """Returns the name of the worst case over the RTS grid of this magnitude (a test of :func:`true_table`)."""
    return f"worst case, RTS grid x{magnitude:g}"


def true_correctness(
    classifiers: Mapping[str, nn.Module],
    x_true: torch.Tensor,
    y_true: torch.Tensor,
    x_grid: torch.Tensor,
    y_grid: torch.Tensor,
    grids: Mapping[float, torch.Tensor],
) -> dict[tuple[str, str], torch.Tensor]:
    """Returns ``(training, test) -> per-digit correctness`` against the true perturbations.

    The tests: ``"random true perturbation"`` (``x_true``), then for each magnitude of ``grids``
    the exact worst case over that RTS grid (:func:`robustvae.perturbation.grid_worst_case`) on
    ``x_grid``, named by :func:`grid_test`.
    """
    correct = {}
    for m, clf in tqdm(classifiers.items(), desc="true perturbations", leave=False):
        correct[m, "random true perturbation"] = predict_logits(clf, x_true).argmax(1) == y_true
        for mag, g in grids.items():
            correct[m, grid_test(mag)] = P.grid_worst_case(clf, x_grid, y_grid, g)
    return correct


def true_table(correct: Mapping[tuple[str, str], torch.Tensor], baseline: str = "standard") -> pd.DataFrame:
    """Returns accuracy with its Wilson 95% interval per (training, test), each paired against ``baseline``.

    ``correct`` is :func:`true_correctness`'s. Columns: ``digits``, ``accuracy``, ``95% CI``
    (text), ``vs standard`` (digits gained minus lost, and McNemar's exact two-sided p, as text;
    empty for the baseline) and ``p`` (NaN for the baseline).
    """
    trainings = list(dict.fromkeys(m for m, _ in correct))
    tests = list(dict.fromkeys(t for _, t in correct))
    rows = []
    for m in trainings:
        for test in tests:
            ok = correct[m, test]
            lo, hi = stats.wilson_interval(int(ok.sum()), len(ok))
            row = {"training": m, "test": test, "digits": len(ok), "accuracy": ok.float().mean().item(),
                   "95% CI": f"[{lo:.3f}, {hi:.3f}]", "vs standard": "", "p": np.nan}
            if m != baseline:  # paired: the baseline (before) vs this training (after), two-sided
                lost, gained, p = stats.mcnemar_exact(correct[baseline, test].numpy(), ok.numpy(),
                                                      alternative="two-sided")
                row["vs standard"] = f"{gained - lost:+d} digits, p = {p:.2g}"
                row["p"] = p
            rows.append(row)
    return pd.DataFrame(rows).set_index(["training", "test"])


def _verdict(table: pd.DataFrame, test: str) -> str:
    a = table.loc[("latent-adv", test)]
    b = table.loc[("standard", test)]
    if a["p"] >= 0.05:
        return "no better and no worse than standard training (the difference is not significant)"
    return "significantly " + ("better" if a["accuracy"] > b["accuracy"] else "worse") + " than standard training"


def true_numbers(table: pd.DataFrame, grid_magnitudes: Sequence[float]) -> dict[str, Any]:
    """Returns the numbers and verdicts the prose quotes about the true perturbations, by glue name.

    From :func:`true_table`'s ``table``: per training ``m`` (``-`` written ``_``) ``rtrue_m`` and
    ``rtrue_m_ci`` (random true perturbations), ``grid_m_range`` (the grid accuracies, smallest to
    largest magnitude); ``rtrue_latent_adv_p``; ``verdict_rtrue`` and ``verdict_grid`` (learned-set
    against standard training, significant at 5% or not); ``magnitudes_text``.
    """
    tests = list(dict.fromkeys(table.index.get_level_values("test")))
    grid_tests = [t for t in tests if t.startswith("worst case")]
    out: dict[str, Any] = {}
    for m in dict.fromkeys(table.index.get_level_values("training")):
        key = m.replace("-", "_")
        row = table.loc[(m, "random true perturbation")]
        out[f"rtrue_{key}"] = row["accuracy"]
        out[f"rtrue_{key}_ci"] = row["95% CI"]
        out[f"grid_{key}_range"] = " / ".join(f"{table.loc[(m, t), 'accuracy']:.2f}" for t in grid_tests)
    out["rtrue_latent_adv_p"] = table.loc[("latent-adv", "random true perturbation"), "p"]
    out["verdict_rtrue"] = _verdict(table, "random true perturbation")
    verdicts = [_verdict(table, t) for t in grid_tests]
    n_worse = sum(v.startswith("significantly worse") for v in verdicts)
    n_better = sum(v.startswith("significantly better") for v in verdicts)
    out["verdict_grid"] = (f"significantly better at {n_better}, significantly worse at {n_worse} and "
                           f"not significantly different at {len(grid_tests) - n_better - n_worse} of the "
                           f"{len(grid_tests)} magnitudes")
    out["magnitudes_text"] = ", ".join(f"{m:g}" for m in grid_magnitudes)
    return out


def summary_numbers(quality: pd.DataFrame, ref: Mapping[str, float], table: pd.DataFrame) -> dict[str, Any]:
    """Returns the numbers "What we found" quotes about the set and the learned-set accuracies, by glue name.

    From :func:`approximation_and_quality` (``quality``, ``ref``): ``err0`` and ``err_max`` (the
    error at the centre and the largest radius), ``err_rts_max``, ``err_el_max``, ``shift_rts``,
    ``shift_el``, ``ratio_rts``, ``ratio_el`` (largest-radius error over the pairs' size),
    ``q_0``, ``q_hi`` (sample distances at the centre and the largest radius) and ``q_floor``.
    From :func:`robust_accuracy`'s ``table``: ``clean_m``, ``true_m``, ``worst_m`` per training
    ``m`` (``-`` written ``_``).
    """
    out = {
        "err0": quality["approx. error all"].iloc[0],
        "err_max": quality["approx. error all"].iloc[-1],
        "err_rts_max": quality["approx. error RTS"].iloc[-1],
        "err_el_max": quality["approx. error elastic"].iloc[-1],
        "shift_rts": ref["||x~ - x|| RTS"],
        "shift_el": ref["||x~ - x|| elastic"],
        "q_0": quality["sample dist. to RTS"].iloc[0],
        "ratio_rts": quality["approx. error RTS"].iloc[-1] / ref["||x~ - x|| RTS"],
        "ratio_el": quality["approx. error elastic"].iloc[-1] / ref["||x~ - x|| elastic"],
        "q_hi": quality["sample dist. to RTS"].iloc[-1],
        "q_floor": ref["true RTS to grid (floor)"],
    }
    for m in table.index:
        for col, key in (("clean", "clean"), ("random true perturbation", "true"),
                         ("worst case in learned set", "worst")):
            out[f"{key}_{m.replace('-', '_')}"] = table.loc[m, col]
    return out


#: Wong & Kolter (ICLR 2021): their MNIST setting and what they report about the set and learned-set
#: training (qualitative: their robust-training tables are for CIFAR-10 common corruptions and
#: multi-illumination images, not MNIST): the published column of :func:`paper_table`.
PUBLISHED = {
    "training pairs, epochs": "MNIST, 60,000 digits, 100 epochs",
    "generator (RTS)": "spatial transformer",
    "approximation error": "small against the perturbation (the set's first property)",
    "learned-set adversarial training, real perturbations": "more robust than standard training "
                                                             "(CIFAR-10 corruptions)",
    "learned-set adversarial training, learned-set worst case": "the most robust",
    "data augmentation, real perturbations": "competitive",
}


def paper_table(numbers: Mapping[str, Any], n_pairs: int, epochs: int, generator: str) -> pd.DataFrame:
    """Return Wong & Kolter's setting and findings (:data:`PUBLISHED`) beside this chapter's.

    ``numbers`` holds what the chapter records: :func:`summary_numbers` (the largest-radius
    approximation error and the pairs' size for RTS, the accuracies) and :func:`true_numbers`
    (accuracies on random true perturbations with their Wilson intervals, the verdict against
    standard training); ``n_pairs``, ``epochs`` and ``generator`` describe the chapter's CVAE.
    """
    def acc(m: str) -> str:
        return f"{numbers[f'rtrue_{m}']:.3f} {numbers[f'rtrue_{m}_ci']}"

    ours = {
        "training pairs, epochs": f"{n_pairs:,} pairs, {epochs} epochs",
        "generator (RTS)": generator,
        "approximation error": f"RTS: {numbers['err_rts_max']:.2f} at the largest radius, "
                               f"{numbers['ratio_rts']:.2f} of the pairs' size {numbers['shift_rts']:.2f}",
        "learned-set adversarial training, real perturbations": f"{acc('latent_adv')} vs standard "
                                                                 f"{acc('standard')}: {numbers['verdict_rtrue']}",
        "learned-set adversarial training, learned-set worst case": f"{numbers['worst_latent_adv']:.3f} vs "
                                                                     f"standard {numbers['worst_standard']:.3f}, "
                                                                     f"augmentation {numbers['worst_augment']:.3f}",
        "data augmentation, real perturbations": acc("augment"),
    }
    table = pd.DataFrame({"Wong & Kolter 2021": PUBLISHED, "this book": ours})
    table.index.name = "MNIST, learned RTS (and elastic) set"
    return table

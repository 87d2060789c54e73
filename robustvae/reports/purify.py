"""Chapter 4's evaluation loops, tables, summary numbers and claim evidence (purification).

:func:`run_portfolio` runs the chapter's attacks, the oblivious PGD on the bare classifier and
each purifier's portfolio of adaptive attacks, over every radius, and returns an
:class:`Evaluation`: per-image correctness for every (pipeline, attack, radius), the adversarial
images, and the main attacks' records. The other functions only assemble what it holds into the
chapter's tables (:func:`robust_table`, :func:`worst_table`, :func:`portfolio_table`,
:func:`convergence`, :func:`record_table`), the numbers its prose quotes (:func:`findings`) and
the evidence its claims are judged on (:func:`claim_evidence`). The purifiers and the attacks
themselves are in :mod:`robustvae.purify` and :mod:`robustvae.attacks`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from .. import attacks, purify, stats
from ..models import LIKELIHOODS
from ..utils import check_choice, check_positive, seed_everything

__all__ = [
    "check_parameters",
    "class_blocks",
    "clean_cost",
    "Evaluation",
    "budget_label",
    "run_portfolio",
    "robust_table",
    "worst_table",
    "portfolio_table",
    "convergence",
    "quoted_radii",
    "findings",
    "record_table",
    "claim_evidence",
]

#: A radius: ``(norm, eps)`` with ``norm`` ``"linf"`` or ``"l2"``.
Budget = tuple[str, float]

#: The chapter's parameters that must be positive integers.
_POSITIVE = ("clf_epochs", "vae_epochs", "latent_dim", "dvae_epochs", "n_eval", "n_latent", "steps",
             "curve_steps", "curve_restarts", "eot", "eot_c", "c_steps", "n_samples", "latent_steps",
             "latent_restarts")


def check_parameters(params: Mapping[str, Any]) -> None:
    """Returns nothing; raises a ``ValueError`` naming the first bad value among the chapter's
    parameters (``params``: the notebook's globals, or any mapping holding them)."""
    for name in _POSITIVE:
        check_positive(name, params[name])
    check_positive("beta", params["beta"], integer=False, allow_zero=True)
    check_choice("likelihood", params["likelihood"], LIKELIHOODS)
    linf_eps, l2_eps = params["linf_eps"], params["l2_eps"]
    for eps in linf_eps:
        if not 0 < eps <= 1:
            raise ValueError(f"L-inf radii must be in (0, 1], got {eps}.")
    for eps in l2_eps:
        check_positive("l2_eps", eps, integer=False)
    if not linf_eps:
        raise ValueError("linf_eps must hold at least one radius (the convergence check uses the first).")
    n_latent, n_eval = params["n_latent"], params["n_eval"]
    if n_latent > n_eval:
        raise ValueError(f"n_latent ({n_latent}) must not exceed n_eval ({n_eval}).")
    curve_steps, steps = params["curve_steps"], params["steps"]
    if curve_steps < steps:
        raise ValueError(f"curve_steps ({curve_steps}) must be >= steps ({steps}).")
    if not 0 < params["converge_tol"] < 1:
        raise ValueError(f"converge_tol must be in (0, 1), got {params['converge_tol']}.")


def class_blocks(y: torch.Tensor) -> torch.Tensor:
    """Returns the order of ``y`` (digit labels 0-9) that puts the i-th image of every class in
    the i-th block of ten, classes ascending within a block (stable within a class)."""
    rank = torch.zeros_like(y)
    for c in y.unique():
        rank[y == c] = torch.arange(int((y == c).sum()))
    return torch.argsort(rank * 10 + y)


def clean_cost(defended: Mapping[str, nn.Module], purifiers: Mapping[str, nn.Module], x: torch.Tensor,
               y: torch.Tensor, n_of: Mapping[str, int], seed: int = 0) -> tuple[dict[str, torch.Tensor], pd.DataFrame]:
    """Returns each pipeline's per-image correctness on the clean images ``x[:n_of[name]]`` and the
    table of its clean accuracy, its purifier's pixel MSE to the input (0 undefended), and images.

    The MSE is measured after :func:`robustvae.utils.seed_everything` (``seed``), the purifiers
    drawing their noise in the order of ``purifiers``.
    """
    clean_correct = {name: purify.correct(model, x[: n_of[name]], y[: n_of[name]], seed=seed)
                     for name, model in defended.items()}
    with torch.no_grad():
        seed_everything(seed)
        mse = {name: ((p(x[: n_of[name]]) - x[: n_of[name]]) ** 2).mean().item()
               for name, p in purifiers.items()}
    table = pd.DataFrame({
        "clean accuracy": {k: v.float().mean().item() for k, v in clean_correct.items()},
        "pixel MSE to input": {"undefended": 0.0, **mse},
        "images": dict(n_of),
    })
    return clean_correct, table


def budget_label(budget: Budget) -> str:
    """Returns a radius as the tables write it: ``"L-inf 0.1"`` or ``"L2 1.5"``."""
    norm, eps = budget
    return f"L-inf {eps}" if norm == "linf" else f"L2 {eps}"


@dataclass
class Evaluation:
    """What :func:`run_portfolio` computed, keyed by pipeline name, attack name and radius.

    ``results[name, attack, budget]``: per-image correctness (CPU bool) of the defended pipeline
    ``name`` on the images of ``attack`` (``"oblivious"``, an attack of ``threats``, or
    ``"worst case"``: correct under every adaptive attack); ``x_adv`` the same keys (no worst
    case): the adversarial images; ``effort[name, attack]``: the attack's budget as the tables
    state it; ``ascents[name, budget]``: the main (first) attack's
    :class:`robustvae.attacks.Ascent`.
    """

    names: list[str]
    threats: dict[tuple[str, str], tuple[nn.Module, int]]
    budgets: list[Budget]
    n_of: dict[str, int]
    steps: int
    sequential: set[str] = field(default_factory=set)
    results: dict[tuple[str, str, Budget], torch.Tensor] = field(default_factory=dict)
    x_adv: dict[tuple[str, str, Budget], torch.Tensor] = field(default_factory=dict)
    effort: dict[tuple[str, str], str] = field(default_factory=dict)
    ascents: dict[tuple[str, Budget], attacks.Ascent] = field(default_factory=dict)

    @property
    def label(self) -> dict[Budget, str]:
        """Each radius's label (:func:`budget_label`)."""
        return {b: budget_label(b) for b in self.budgets}

    @property
    def purifiers(self) -> list[str]:
        """The purified pipelines, in the order of ``threats``."""
        return list(dict.fromkeys(p for p, _ in self.threats))

    def attacks_of(self, name: str) -> list[str]:
        """The adaptive attacks run on ``name``, main attack first."""
        return [t for p, t in self.threats if p == name]

    @property
    def main_attack(self) -> dict[str, str]:
        """Each purifier's main attack (its first in ``threats``)."""
        return {name: self.attacks_of(name)[0] for name in self.purifiers}

    def acc(self, name: str, threat: str, budget: Budget) -> float:
        """Returns the robust accuracy of ``name`` under ``threat`` at ``budget``."""
        return self.results[name, threat, budget].float().mean().item()

    def wilson(self, name: str, threat: str, budget: Budget) -> tuple[float, float]:
        """Returns the Wilson 95% interval of :meth:`acc`."""
        ok = self.results[name, threat, budget]
        return stats.wilson_interval(int(ok.sum()), len(ok))


def run_portfolio(classifier: nn.Module, defended: Mapping[str, nn.Module],
                  threats: Mapping[tuple[str, str], tuple[nn.Module, int]], x: torch.Tensor, y: torch.Tensor,
                  budgets: Sequence[Budget], n_of: Mapping[str, int], *, steps: int, curve_steps: int,
                  curve_restarts: int, main_steps: Mapping[str, int] | None = None,
                  sequential: Iterable[str] = (), seed: int = 0) -> Evaluation:
    """Returns the :class:`Evaluation` of every pipeline of ``defended`` at every radius.

    First the oblivious attack: per radius, PGD (``steps`` steps) on the bare ``classifier``
    against all of ``x``, each pipeline classifying the first ``n_of[name]`` of those images.
    Then, per ``(name, attack)`` of ``threats`` (value: the pipeline attacked and its EOT draws
    per step) and per radius, PGD with step size ``2.5 eps / steps`` and ``freeze_success=None``:
    the main attack (the first of ``name``) runs ``curve_steps`` (or ``main_steps[name]``) steps x
    ``curve_restarts`` restarts, the others ``steps`` x 1; a purifier in ``sequential`` runs each
    later attack only on the images that its attacks before left correct. Every attack is judged
    by :func:`robustvae.purify.correct` on ``defended[name]``. Each PGD starts from
    :func:`robustvae.utils.seed_everything` (``seed``) and a generator seeded with ``seed``, so a
    rerun hits the result cache call for call. Last, the worst case over each purifier's attacks.
    """
    main_steps = dict(main_steps or {})
    ev = Evaluation(list(defended), dict(threats), list(budgets), dict(n_of), steps, set(sequential))
    results, x_adv = ev.results, ev.x_adv
    for norm, eps in tqdm(ev.budgets, desc="oblivious PGD"):
        seed_everything(seed)
        xa = attacks.pgd(classifier, x, y, eps, norm=norm, steps=steps,
                         generator=torch.Generator().manual_seed(seed))
        for name, model in defended.items():
            results[name, "oblivious", (norm, eps)] = purify.correct(model, xa[: n_of[name]], y[: n_of[name]], seed=seed)
            x_adv[name, "oblivious", (norm, eps)] = xa[: n_of[name]]

    main_attack = ev.main_attack
    for (name, threat), (norm, eps) in tqdm([(key, b) for key in threats for b in ev.budgets], desc="adaptive PGD"):
        model, n_eot = threats[name, threat]
        main = threat == main_attack[name]
        n_steps, n_restarts = (main_steps.get(name, curve_steps), curve_restarts) if main else (steps, 1)
        ev.effort[name, threat] = f"{n_steps} x {n_restarts}" + (f", EOT {n_eot}" if n_eot > 1 else "")
        n = n_of[name]
        ok = torch.ones(n, dtype=torch.bool)
        if name in ev.sequential and not main:  # attack only what the attacks before left
            before = ev.attacks_of(name)
            before = before[: before.index(threat)]
            ok = torch.stack([results[name, t, (norm, eps)] for t in before]).all(0)
        todo = torch.nonzero(ok).flatten()
        x_att = x[:n].clone()
        seed_everything(seed)
        if len(todo):
            res = attacks.pgd(
                model, x[:n][todo], y[:n][todo], eps, norm=norm, steps=n_steps, alpha=2.5 * eps / steps,
                restarts=n_restarts, eot=n_eot, generator=torch.Generator().manual_seed(seed),
                return_result=True,
                freeze_success=None,  # a fooled image stops moving, on deterministic pipelines only
            )
            x_att[todo] = res.x
            ok[todo] = purify.correct(defended[name], res.x, y[:n][todo], seed=seed)
            if main:
                ev.ascents[name, (norm, eps)] = res
        results[name, threat, (norm, eps)] = ok
        x_adv[name, threat, (norm, eps)] = x_att

    for name in ev.purifiers:
        for budget in ev.budgets:
            ran = [ok for (p, t, b), ok in results.items() if p == name and b == budget and t != "oblivious"]
            results[name, "worst case", budget] = torch.stack(ran).all(0)
    return ev


def robust_table(ev: Evaluation) -> pd.DataFrame:
    """Returns the robust accuracy of every pipeline under each of its attacks (rows: pipeline,
    attack, with the oblivious attack first, named "PGD" for the undefended classifier), one
    column per radius, and a column "budget" (steps x restarts, EOT draws)."""
    rows, index = [], []
    for name in ev.names:
        for threat in ["oblivious"] + ev.attacks_of(name):
            shown = "PGD" if name == "undefended" else threat
            row = {"budget": f"{ev.steps} x 1" if threat == "oblivious" else ev.effort[name, threat]}
            row.update({ev.label[b]: ev.acc(name, threat, b) for b in ev.budgets})
            rows.append(row)
            index.append((name, shown))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["purifier", "attack"]))


def worst_table(ev: Evaluation) -> pd.DataFrame:
    """Returns each purifier's worst case with its Wilson 95% interval as text (rows: purifiers,
    columns: radii)."""
    from ..tables import interval

    table = pd.DataFrame({
        ev.label[b]: {
            name: interval(ev.acc(name, "worst case", b), *ev.wilson(name, "worst case", b), keep_together=True)
            for name in ev.purifiers
        }
        for b in ev.budgets
    })
    table.index.name = "worst case"
    return table


def portfolio_table(ev: Evaluation) -> pd.DataFrame:
    """Returns, per purifier and attack, its budget and how many images it alone broke, summed
    over the radii: broken by no other attack of the portfolio, or (``sequential`` purifiers) by
    none of the attacks before it."""
    unique = {}
    for name, threat in ev.threats:
        mine = ev.attacks_of(name)
        count = 0
        for b in ev.budgets:
            broke = ~ev.results[name, threat, b]
            if name in ev.sequential:
                earlier = mine[: mine.index(threat)]
                rest = (torch.stack([~ev.results[name, t, b] for t in earlier]).any(0) if earlier
                        else torch.zeros_like(broke))
            else:
                rest = torch.stack([~ev.results[name, t, b] for t in mine if t != threat]).any(0)
            count += int((broke & ~rest).sum())
        unique[name, threat] = {"budget": ev.effort[name, threat], "images broken by it alone": count}
    table = pd.DataFrame.from_dict(unique, orient="index")
    table.index.names = ["purifier", "attack"]
    return table


def convergence(ev: Evaluation, defended: Mapping[str, nn.Module], y: torch.Tensor,
                seed: int = 0) -> tuple[pd.DataFrame, dict[tuple[str, Budget], float]]:
    """Returns the main attacks' convergence table and, per (purifier, radius), the fraction of
    images that the last restart broke (evaluated).

    Per purifier and radius: the attacker's view (not yet broken) after ``ev.steps`` steps and
    after the first restart; the evaluated accuracy (:func:`robustvae.purify.correct`, ``seed``)
    of the images kept after the first restart and after all; the images the last restart broke
    and the exact McNemar p of it breaking more than it restored.
    """
    rows, last_gain = {}, {}
    for name in ev.purifiers:
        n = ev.n_of[name]
        for b in ev.budgets:
            res = ev.ascents[name, b]
            last = res.success_trace.shape[1] - 1
            after = [purify.correct(defended[name], xr, y[:n], seed=seed) for xr in res.x_after_restart]
            prev = after[-2] if len(after) > 1 else after[-1]
            lost, gained, p = stats.mcnemar_exact(prev, after[-1])
            last_gain[name, b] = lost / n
            first = min(ev.steps, last)
            rows[name, ev.label[b]] = {
                f"attacker, {first} steps": (~res.broken_by(0, first)).float().mean().item(),
                "attacker, restart 1": (~res.broken_by(0, last)).float().mean().item(),
                "evaluated, restart 1": after[0].float().mean().item(),
                "evaluated, all restarts": after[-1].float().mean().item(),
                "broken by the last restart": lost,
                "McNemar p": p,
            }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["purifier", "radius"]
    return table, last_gain


def quoted_radii(ev: Evaluation) -> tuple[Budget, Budget, Budget]:
    """Returns the three L-inf radii the prose quotes: the first, the second (or the first again), the largest."""
    linf = [b for b in ev.budgets if b[0] == "linf"]
    return linf[0], linf[min(1, len(linf) - 1)], max(linf, key=lambda b: b[1])


def findings(ev: Evaluation, clean_correct: Mapping[str, torch.Tensor],
             last_gain: Mapping[tuple[str, Budget], float]) -> dict[str, Any]:
    """Returns the numbers the chapter's "What we found" quotes, by glue name.

    The pipelines are ``ev.names``: the undefended classifier, then purifiers (a) to (d), tagged
    ``none a b c d``. ``eps1``, ``eps2``, ``eps_max``: the first, second and largest L-inf radii
    (suffixes ``_1 _2 _3``); ``clean_*``, ``obl_*``, ``adv_*`` (worst case) and ``adv_*_ci`` (its
    Wilson interval); ``gain_i``: (a) minus undefended, oblivious; ``bpda_*_1``, ``wb_*_1``: identity
    BPDA and main attack of (a), (b), (d) at ``eps1``; ``unr_c_1``, ``unr_c_2``: the main attack on
    (c); ``c_extra`` (``c_extra_max``): images (c)'s other attacks broke after its main one, summed
    (largest) over radii; ``max_gain_conv``: the largest ``last_gain`` of (a), (b), (d);
    ``c_last_max``, ``c_last_radius``: the most images the last restart broke on (c), and where.
    """
    if len(ev.names) != 5:
        raise ValueError(f"findings expects the undefended classifier and four purifiers, got {ev.names}.")
    a, b, c, d = ev.names[1:]
    b1, b2, bmax = quoted_radii(ev)
    out: dict[str, Any] = {"eps1": b1[1], "eps2": b2[1], "eps_max": bmax[1]}
    for tag, name in zip("none a b c d".split(), ev.names):
        out[f"clean_{tag}"] = clean_correct[name].float().mean().item()
        for i, budget in enumerate((b1, b2, bmax), start=1):
            out[f"obl_{tag}_{i}"] = ev.acc(name, "oblivious", budget)
            if name in ev.purifiers:
                out[f"adv_{tag}_{i}"] = ev.acc(name, "worst case", budget)
                lo, hi = ev.wilson(name, "worst case", budget)
                out[f"adv_{tag}_{i}_ci"] = f"[{lo:.2f}, {hi:.2f}]"
    for i, budget in enumerate((b1, b2, bmax), start=1):
        out[f"gain_{i}"] = ev.acc(a, "oblivious", budget) - ev.acc("undefended", "oblivious", budget)
    main = ev.main_attack
    for tag, name in (("a", a), ("b", b), ("d", d)):
        bpda = next(t for t in ev.attacks_of(name) if t.startswith("BPDA, identity"))
        out[f"bpda_{tag}_1"] = ev.acc(name, bpda, b1)
        out[f"wb_{tag}_1"] = ev.acc(name, main[name], b1)
    for i, budget in enumerate((b1, b2), start=1):
        out[f"unr_c_{i}"] = ev.acc(c, main[c], budget)
    c_last_attack = ev.attacks_of(c)[-1]
    c_extra = {bd: int((ev.results[c, main[c], bd] & ~ev.results[c, c_last_attack, bd]).sum()) for bd in ev.budgets}
    out.update(c_extra=sum(c_extra.values()), c_extra_max=max(c_extra.values()))
    out["max_gain_conv"] = max(last_gain[n, bd] for n in (a, b, d) for bd in ev.budgets)
    c_last = {bd: round(last_gain[c, bd] * ev.n_of[c]) for bd in ev.budgets}
    worst = max(c_last, key=c_last.get)
    out.update(c_last_max=c_last[worst], c_last_radius=ev.label[worst])
    return out


def record_table(ev: Evaluation, latent: str) -> pd.DataFrame:
    """Returns the published record beside this chapter's numbers for the latent search
    (``latent``, the name of purifier (c)): oblivious and worst case at the first two L-inf radii."""
    b1, b2, _ = quoted_radii(ev)
    n, label = ev.n_of[latent], ev.label
    return pd.DataFrame(
        [
            ("Defense-GAN, own evaluation (Samangouei et al. 2018)", "FGSM, L-inf 0.3", "0.988"),
            ("Defense-GAN under BPDA (Athalye et al. 2018)", "L2, small radius", "about 0.55"),
            ("(c), this chapter's previous version: tangent BPDA only, 30 images", "L-inf 0.1 / 0.2", "0.867 / 0.600"),
            (f"(c), this chapter now: oblivious, {n} images", f"{label[b1]} / {label[b2]}",
             f"{ev.acc(latent, 'oblivious', b1):.3f} / {ev.acc(latent, 'oblivious', b2):.3f}"),
            (f"(c), this chapter now: worst case of the portfolio, {n} images", f"{label[b1]} / {label[b2]}",
             f"{ev.acc(latent, 'worst case', b1):.3f} / {ev.acc(latent, 'worst case', b2):.3f}"),
        ],
        columns=["source", "threat model", "robust accuracy"],
    ).set_index("source")


def claim_evidence(ev: Evaluation, last_gain: Mapping[tuple[str, Budget], float],
                   converge_tol: float) -> dict[str, tuple[bool, str]]:
    """Returns, per claim of the chapter, ``(holds, numbers)`` for :meth:`robustvae.claims.Claims.check`.

    ``b1``, ``b2`` are the first two L-inf radii; every test is the exact McNemar test
    (:func:`robustvae.stats.mcnemar_exact`, p < 0.05) on the same images.

    - ``"oblivious helps"``: at L-inf 0.1 and 0.2 (those of the radii), (a) keeps more images than
      no defence under the oblivious attack, significantly.
    - ``"adaptive beats oblivious"``: for (a), (b), (d), at every radius where the oblivious attack
      leaves at least 0.1, the worst case keeps significantly fewer images than the oblivious attack.
    - ``"adaptive beats oblivious on (c)"``: the same for (c) at ``b2``.
    - ``"(a) (b) (d) below none"``: at ``b1``, the worst cases of (a), (b), (d) keep significantly
      fewer images than the undefended classifier under the oblivious attack.
    - ``"(c) above none"``: at ``b1``, the worst case of (c) keeps significantly more.
    - ``"converged"`` (a check): the last restart of the main attacks on (a), (b), (d) broke at most
      ``converge_tol`` of the images at every radius.
    """
    a, b, c, d = ev.names[1:]
    b1, b2, _ = quoted_radii(ev)
    acc, label, res = ev.acc, ev.label, ev.results
    out: dict[str, tuple[bool, str]] = {}

    small = [("linf", e) for (norm, e) in ev.budgets if norm == "linf" and e in (0.1, 0.2)]
    obl = {bd: stats.mcnemar_exact(res[a, "oblivious", bd], res["undefended", "oblivious", bd][: ev.n_of[a]])
           for bd in small}
    out["oblivious helps"] = (
        all(acc(a, "oblivious", bd) > acc("undefended", "oblivious", bd) and obl[bd][2] < 0.05 for bd in small),
        "; ".join(f"{label[bd]}: {acc(a, 'oblivious', bd):.2f} vs "
                  f"{acc('undefended', 'oblivious', bd):.2f}, p {obl[bd][2]:.2g}" for bd in small),
    )

    pairs = [(n, bd) for n in (a, b, d) for bd in ev.budgets if acc(n, "oblivious", bd) >= 0.1]
    adaptive = {(n, bd): stats.mcnemar_exact(res[n, "oblivious", bd], res[n, "worst case", bd]) for n, bd in pairs}
    not_below = [f"{n}, {label[bd]}" for n, bd in pairs if not adaptive[n, bd][2] < 0.05]
    out["adaptive beats oblivious"] = (
        not not_below, "not on: " + "; ".join(not_below) if not_below else f"all {len(pairs)} pairs")

    lost, gained, p = stats.mcnemar_exact(res[c, "oblivious", b2], res[c, "worst case", b2])
    out["adaptive beats oblivious on (c)"] = (
        p < 0.05, f"{acc(c, 'worst case', b2):.2f} vs {acc(c, 'oblivious', b2):.2f} on {ev.n_of[c]} images: "
                  f"{lost} lost, {gained} gained, p {p:.2g}")

    none1 = res["undefended", "oblivious", b1]
    worse = {n: stats.mcnemar_exact(none1[: ev.n_of[n]], res[n, "worst case", b1]) for n in (a, b, d)}
    out["(a) (b) (d) below none"] = (
        all(worse[n][2] < 0.05 for n in (a, b, d)),
        ", ".join(f"{acc(n, 'worst case', b1):.2f} (p {worse[n][2]:.2g})" for n in (a, b, d))
        + f" vs undefended {none1.float().mean():.2f}",
    )

    above = stats.mcnemar_exact(res[c, "worst case", b1], none1[: ev.n_of[c]])
    out["(c) above none"] = (
        above[2] < 0.05, f"{acc(c, 'worst case', b1):.2f} vs {none1[: ev.n_of[c]].float().mean():.2f} on the "
                         f"same {ev.n_of[c]} images, p {above[2]:.2g}")

    abd_gain = max(last_gain[n, bd] for n in (a, b, d) for bd in ev.budgets)
    out["converged"] = (
        abd_gain <= converge_tol,
        "largest: " + ", ".join(f"{n} {label[bd]} {last_gain[n, bd]:.3f}"
                                for n in (a, b, d) for bd in ev.budgets if last_gain[n, bd] == abd_gain),
    )
    return out

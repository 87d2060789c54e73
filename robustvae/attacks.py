"""Adversarial attacks: on classifiers (FGSM, PGD, L-BFGS) and on VAEs (latent, maximum damage).

Each attack is a function of a model and a batch; inputs and outputs are images in the box
[0, 1] with shape ``(B, 1, 28, 28)``. A "model" for the classifier attacks is any callable
``x -> logits``: the bare classifier, or a whole pipeline such as ``classifier(purify(x))``
(see :mod:`robustvae.purify` for BPDA and EOT wrappers).

Threat models
-------------
``norm="linf"``: ``||x_adv - x||_inf <= eps`` (each pixel moves by at most ``eps``).
``norm="l2"``: ``||x_adv - x||_2 <= eps`` per image (pixels flattened).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models import gaussian_kl
from .memo import memoize

__all__ = [
    "NORMS", "Ascent", "ascend", "ball_start", "fgsm", "pgd", "lbfgs", "project", "perturbation_norm",
    "latent_kl", "latent_attack", "max_damage", "reconstruction_distance",
]

NORMS = ("linf", "l2")

Model = Callable[[torch.Tensor], torch.Tensor]


def _check(eps: float, norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"Unknown norm {norm!r}. Valid norms: {', '.join(NORMS)}.")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}.")


def _flat_norm(d: torch.Tensor) -> torch.Tensor:
    return d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Project ``x_adv`` onto the ``eps``-ball around ``x`` in ``norm``, then onto the box [0, 1]."""
    _check(eps, norm)
    d = x_adv - x
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        n = _flat_norm(d)
        d = d * torch.clamp(eps / (n + 1e-12), max=1.0)
    return (x + d).clamp(0.0, 1.0)


def perturbation_norm(x_adv: torch.Tensor, x: torch.Tensor, norm: str = "linf") -> torch.Tensor:
    """Per-image size of ``x_adv - x`` in ``norm`` (pixels flattened): a ``(B,)`` tensor."""
    _check(0.0, norm)
    d = (x_adv - x).flatten(1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)



def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    if norm == "linf":
        noise = (torch.rand(x.shape, generator=generator, device="cpu") * 2 - 1).to(x.device) * eps
    else:
        g = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
        r = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=generator, device="cpu").to(x.device)
        noise = g / (_flat_norm(g) + 1e-12) * eps * r.pow(1.0 / x[0].numel())
    return project(x + noise, x, eps, norm)


# --- the projected-ascent engine ------------------------------------------------------------
SCHEDULES = ("constant", "cosine")
STEP_RULES = ("sign", "l2")


@dataclass
class Ascent:
    """What :func:`ascend` found for a batch of ``B`` examples.

    ``x``: the kept iterate per example (detached); ``value``: the objective there (mean over
    the EOT draws); ``success``: whether it succeeded (``None`` when the objective reports no
    success). ``trace`` ``(restarts, steps + 1, B)``: the objective at every iterate (NaN after
    an early stop); ``success_trace``: the same for success (``None`` without one). The
    cumulative "broken so far" curve of a convergence plot is
    ``success_trace.flatten(0, 1).cummax(0)``. ``x_after_restart`` (from :func:`pgd`): the kept
    iterates after each restart that ran, so the defence can be evaluated after each one.
    """

    x: torch.Tensor
    value: torch.Tensor
    success: torch.Tensor | None
    trace: torch.Tensor
    success_trace: torch.Tensor | None
    x_after_restart: list[torch.Tensor] | None = None

    def broken_after(self) -> torch.Tensor:
        """``(restarts, steps + 1)``: the fraction of examples broken by each point of the attack
        (all earlier restarts, then this restart up to this step); NaN without a success."""
        if self.success_trace is None:
            return torch.full(self.trace.shape[:2], float("nan"))
        r, t, b = self.success_trace.shape
        flat = self.success_trace.reshape(r * t, b).float().cummax(0).values
        return flat.mean(1).view(r, t)

    def broken_by(self, restart: int, step: int) -> torch.Tensor:
        """``(B,)`` bool: which examples some iterate up to ``step`` of ``restart`` (and every
        iterate of the restarts before it) succeeded on. Needs a success signal."""
        if self.success_trace is None:
            raise ValueError("broken_by needs an objective that reports success.")
        r, t, _ = self.success_trace.shape
        if not (0 <= restart < r and 0 <= step < t):
            raise ValueError(f"restart must be in [0, {r}) and step in [0, {t}), got {restart}, {step}.")
        return self.success_trace[:restart].flatten(0, 1).any(0) | self.success_trace[restart, : step + 1].any(0)


def _deterministic(model: Model) -> bool:
    """Whether two calls of ``model`` on the same input give the same output, as far as can be
    told: an ``nn.Module`` with no true ``stochastic`` attribute (the purifiers of
    :mod:`robustvae.purify` declare theirs) and no dropout or batch-norm layer in training
    mode. A plain callable counts as possibly random."""
    if bool(getattr(model, "stochastic", False)):
        return False
    if isinstance(model, nn.Module):
        random_layers = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
        return not any(m.training for m in model.modules() if isinstance(m, random_layers))
    return False                        # a plain callable: cannot tell, so assume it may be random


def _normalised(grad: torch.Tensor, rule: str) -> torch.Tensor:
    if rule == "sign":
        return grad.sign()
    return grad / (_flat_norm(grad) + 1e-12)


def ascend(
    objective: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    start: Callable[[int], torch.Tensor],
    project: Callable[[torch.Tensor], torch.Tensor],
    *,
    steps: int,
    alpha: float,
    step_rule: str = "sign",
    schedule: str = "constant",
    restarts: int = 1,
    eot: int = 1,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    stop_when_all_succeed: bool = True,
    freeze_success: bool = False,
) -> Ascent:
    """Projected ascent: the one loop behind every gradient attack of the book.

    For each restart ``k`` it starts from ``v_0 = start(k)`` and repeats
    ``v_{t+1} = project(v_t + alpha_t * N(g_t))`` for ``t < steps``, where ``g_t`` is the
    gradient of ``objective`` summed over the batch and averaged over ``eot`` evaluations
    (Expectation over Transformation, Athalye et al. 2018), ``N`` is the sign (``"sign"``,
    L-inf steepest ascent) or the per-example L2 normalisation (``"l2"``), and ``alpha_t`` is
    ``alpha`` (``"constant"``) or ``alpha * (1 + cos(pi t / steps)) / 2`` (``"cosine"``).

    ``objective(v)`` returns the per-example values ``(B,)`` to **maximise** (negate to
    minimise), or ``(values, success)`` with a boolean ``(B,)``: whether the attack has
    achieved its goal at ``v`` (for a stochastic objective, the majority over the ``eot``
    draws decides).

    **Which iterate is kept.** Every iterate ``v_0 .. v_steps`` of every restart is evaluated,
    and per example the best one is kept, ordered first by success, then by value: a successful
    iterate is only ever replaced by a successful one of higher value, so a later step or
    restart never overwrites a success with a failure. Without a success signal the iterate of
    highest value is kept. With ``stop_when_all_succeed`` no further restart starts once every
    example has succeeded.

    ``callback(restart, step, v_t)`` is called on every iterate (e.g. to record iterates).
    Returns an :class:`Ascent`.

    **Freezing successes** (``freeze_success=True``; needs a success signal). An example stops
    moving at its first successful iterate, which is kept, and later steps and restarts compute
    only the examples not yet broken. For a *deterministic* objective this changes no
    success (a successful iterate stays successful) and saves the steps spent on broken
    examples (``benchmarks/bench_savings.py`` measures how many). The kept iterate of a broken
    example is then its first success rather than its successful iterate of highest value (its
    trace holds that value from then on): a weaker point for any use beyond the verdict, such
    as transferring it to another model (see :func:`pgd`). Do not freeze a stochastic
    objective, whose success at an iterate is itself a random draw. ``objective`` and
    ``project`` are then called as ``objective(v, idx)`` and ``project(v, idx)``, where the
    ``LongTensor`` ``idx`` gives the positions in the batch of the rows of ``v``.
    """
    if steps < 0 or restarts < 1 or eot < 1:
        raise ValueError(f"steps must be >= 0, restarts and eot >= 1; got {steps}, {restarts}, {eot}.")
    if step_rule not in STEP_RULES:
        raise ValueError(f"Unknown step_rule {step_rule!r}. Valid: {', '.join(STEP_RULES)}.")
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}. Valid: {', '.join(SCHEDULES)}.")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}.")
    best = best_val = best_ok = None
    trace = succ_trace = None
    has_success = None
    for k in range(restarts):
        v = start(k).detach()
        b = len(v)
        # the examples this restart still moves: all, or (freezing) those no restart has broken
        active = torch.arange(b, device=v.device)
        if freeze_success and best_ok is not None:
            active = torch.nonzero(~best_ok).flatten()
            if len(active) == 0:                 # every example already broken: nothing to run
                trace[k], succ_trace[k] = best_val.cpu(), True
                continue
        for t in range(steps + 1):
            if callback is not None:
                callback(k, t, v)
            need_grad = t < steps
            va = v[active] if freeze_success else v
            total = torch.zeros(len(va), device=v.device)
            votes = torch.zeros(len(va), device=v.device)
            grad = None
            for _ in range(eot):
                vv = va.clone().requires_grad_(need_grad)
                with torch.set_grad_enabled(need_grad):
                    out = objective(vv, active) if freeze_success else objective(vv)
                val, ok = out if isinstance(out, tuple) else (out, None)
                if has_success is None:
                    has_success = ok is not None
                    if freeze_success and not has_success:
                        raise ValueError("freeze_success needs an objective that reports success.")
                    best, best_val = v.clone(), torch.full((b,), -float("inf"), device=v.device)
                    best_ok = torch.zeros(b, dtype=torch.bool, device=v.device)
                    trace = torch.full((restarts, steps + 1, b), float("nan"))
                    succ_trace = torch.zeros((restarts, steps + 1, b), dtype=torch.bool) if has_success else None
                if need_grad:
                    (g,) = torch.autograd.grad(val.sum(), vv)
                    grad = g if grad is None else grad + g
                total += val.detach()
                if ok is not None:
                    votes += ok.detach().float()
            val = total / eot
            ok = votes / eot > 0.5 if has_success else torch.zeros(len(va), dtype=torch.bool, device=v.device)
            if freeze_success:
                # frozen examples keep their kept value and stay broken in the trace
                trace[k, t] = best_val.cpu()
                succ_trace[k, t] = best_ok.cpu()
                idx = active.cpu()
                trace[k, t, idx] = val.cpu()
                succ_trace[k, t, idx] = ok.cpu()
                old_ok, old_val = best_ok[active], best_val[active]
                take = (ok & ~old_ok) | ((ok == old_ok) & (val > old_val))
                best[active[take]], best_val[active[take]] = va[take], val[take]
                best_ok[active] = old_ok | ok
                keep = ~ok                       # the broken ones stop here
                active, va, grad = active[keep], va[keep], (grad[keep] if grad is not None else None)
                if len(active) == 0:
                    if t < steps:                # nothing left to move: the rest of the trace stands
                        trace[k, t + 1:] = trace[k, t]
                        succ_trace[k, t + 1:] = succ_trace[k, t]
                        for t_rest in range(t + 1, steps + 1):
                            if callback is not None:
                                callback(k, t_rest, v)
                    break
            else:
                trace[k, t] = val.cpu()
                if has_success:
                    succ_trace[k, t] = ok.cpu()
                    take = (ok & ~best_ok) | ((ok == best_ok) & (val > best_val))
                else:
                    take = val > best_val
                best[take], best_val[take] = v[take], val[take]
                best_ok |= ok
            if need_grad:
                a = alpha if schedule == "constant" else alpha * 0.5 * (1.0 + math.cos(math.pi * t / steps))
                if freeze_success:
                    v = v.clone()
                    v[active] = project(va + a * _normalised(grad / eot, step_rule), active).detach()
                else:
                    v = project(v + a * _normalised(grad / eot, step_rule)).detach()
        if has_success and stop_when_all_succeed and bool(best_ok.all()):
            succ_trace[k + 1:] = True          # the broken stay broken for the rest of the trace
            if freeze_success:
                trace[k + 1:] = trace[k, -1]
            break
    return Ascent(best.detach(), best_val, best_ok if has_success else None, trace, succ_trace)


def ball_start(x: torch.Tensor, eps: float, norm: str = "linf", generator: torch.Generator | None = None,
               random: bool = True) -> Callable[[int], torch.Tensor]:
    """Starting points for :func:`ascend` in the ``eps``-ball around ``x`` (and the box [0, 1]):
    uniform in the L-inf ball, or a random point of the L2 ball; ``x`` itself when
    ``random`` is False or ``eps == 0``. Draws come from the CPU ``generator``."""
    _check(eps, norm)

    def start(k: int) -> torch.Tensor:
        return _random_start(x, eps, norm, generator) if (random and eps > 0) else x.clone()

    return start


def fgsm(model: Model, x: torch.Tensor, y: torch.Tensor, eps: float, targeted: bool = False) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy, ICLR 2015), L-inf threat model.

    ``x_adv = clip_[0,1](x + eps * sign(grad_x CE(model(x), y)))``; with ``targeted=True``,
    ``y`` is the target label and the step goes down the loss instead.

    Example
    -------
    >>> x_adv = fgsm(classifier, x, y, eps=0.1)   # doctest: +SKIP
    """
    _check(eps, "linf")
    x = x.detach()
    x_req = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x_req), y)
    (grad,) = torch.autograd.grad(loss, x_req)
    direction = -1.0 if targeted else 1.0
    return (x + direction * eps * grad.sign()).clamp(0.0, 1.0).detach()


@memoize
def pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str = "linf",
    steps: int = 40,
    alpha: float | None = None,
    random_start: bool = True,
    targeted: bool = False,
    eot: int = 1,
    restarts: int = 1,
    generator: torch.Generator | None = None,
    schedule: str = "constant",
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    return_result: bool = False,
    freeze_success: bool | None = False,
) -> torch.Tensor | "Ascent":
    """Projected Gradient Descent (Madry et al., ICLR 2018) on the cross-entropy.

    Repeats ``x_{t+1} = Proj_{B(x, eps) and [0,1]}(x_t + alpha * step(grad_x CE(model(x_t), y)))``
    where ``step`` is the sign for L-inf and the L2-normalised gradient for L2, through the
    shared engine :func:`ascend` (best iterate per image across steps and restarts; an image
    counts as fooled at an iterate when most of its ``eot`` draws are misclassified; a fooling
    iterate is kept over any that does not fool, then the highest loss wins).

    Parameters
    ----------
    model : callable ``x -> logits`` (may be stochastic; see ``eot``).
    x, y : images ``(B, 1, 28, 28)`` in [0, 1] and labels ``(B,)`` (targets if ``targeted``).
    eps : radius of the threat model in ``norm`` (``"linf"`` or ``"l2"``).
    steps : number of gradient steps; ``alpha`` defaults to ``2.5 * eps / steps``.
    random_start : start from a uniform point of the ball (L-inf) or a random point (L2).
    eot : Expectation over Transformation (Athalye et al., ICML 2018): average the gradient
        (and judge success) over ``eot`` forward passes of a stochastic model.
    restarts : independent runs; each restart after the first attacks only the images that no
        earlier restart fooled (a fooled image is never revisited), and per image the fooling
        iterate (else the iterate of highest loss) over all of them is returned. Without a
        random start a restart would repeat the first, so only one runs.
    generator : CPU generator for the random start (for reproducible attacks).
    schedule : ``"constant"`` step length, or ``"cosine"`` annealing from ``alpha`` to 0.
    callback : ``callback(restart, step, x_t)`` on every iterate (see :func:`ascend`); in later
        restarts ``x_t`` holds the kept iterates of the images already fooled.
    return_result : return the :class:`Ascent` record (images, loss, success and the
        per-iterate success trace for convergence curves) instead of the images.
    freeze_success : stop moving an image once it is fooled (see :func:`ascend`). Off by
        default. It leaves every *verdict* on ``model`` unchanged when the model is
        deterministic, and saves the steps spent on fooled images; but the image returned for a
        fooled input is then its first fooling iterate, just across the decision boundary,
        instead of the fooling iterate of highest loss, and such images transfer much worse:
        with freezing, the book's oblivious PGD images (chapter 4) left purifier (a) 0.53
        accurate at eps 0.3 instead of 0.18, and the consistency detector (chapter 9) reached
        an AUROC of 0.96 instead of 0.85. So freeze only when the images serve nothing but the
        verdict on ``model``. ``True`` on a model that is not deterministic (see
        :func:`_deterministic`) or with ``eot > 1`` raises a ``ValueError``; ``None`` freezes
        exactly when that is allowed (for benchmarks of the saving).

    Returns the adversarial images (detached), or the :class:`Ascent` record.
    """
    _check(eps, norm)
    if steps < 0 or eot < 1 or restarts < 1:
        raise ValueError("steps must be >= 0, eot and restarts >= 1.")
    alpha = 2.5 * eps / max(steps, 1) if alpha is None else alpha
    x = x.detach()

    b = len(x)
    best, best_val = x.clone(), torch.full((b,), -float("inf"), device=x.device)
    best_ok = torch.zeros(b, dtype=torch.bool, device=x.device)
    trace = torch.full((restarts, steps + 1, b), float("nan"))
    succ = torch.zeros((restarts, steps + 1, b), dtype=torch.bool)
    rem = torch.arange(b, device=x.device)
    after: list[torch.Tensor] = []
    allowed = eot == 1 and _deterministic(model)
    if freeze_success is None:
        freeze_success = allowed
    elif freeze_success and not allowed:
        raise ValueError("freeze_success=True needs a deterministic model and eot=1: a fooled draw of a "
                         "stochastic model may not stay fooled.")
    for k in range(restarts):
        xs, ys = x[rem], y[rem]

        def objective(v: torch.Tensor, idx: torch.Tensor | None = None, ys=ys):
            yv = ys if idx is None else ys[idx]
            logits = model(v)
            loss = F.cross_entropy(logits, yv, reduction="none")
            pred = logits.argmax(1)
            return (-loss, pred == yv) if targeted else (loss, pred != yv)

        def proj(v: torch.Tensor, idx: torch.Tensor | None = None, xs=xs):
            return project(v, xs if idx is None else xs[idx], eps, norm)

        def report(_, t, v, k=k, rem=rem):
            full = best.clone()
            full[rem] = v
            callback(k, t, full)

        r = ascend(objective, ball_start(xs, eps, norm, generator, random=random_start),
                   proj, steps=steps, alpha=alpha,
                   step_rule="sign" if norm == "linf" else "l2", schedule=schedule,
                   eot=eot, callback=None if callback is None else report, freeze_success=freeze_success)
        broken_before = best_ok.cpu().clone()
        old_ok, old_val = best_ok[rem], best_val[rem]
        take = (r.success & ~old_ok) | ((r.success == old_ok) & (r.value > old_val))
        best[rem[take]], best_val[rem[take]] = r.x[take], r.value[take]
        best_ok[rem] = old_ok | r.success
        trace[k][:, rem.cpu()] = r.trace[0]
        succ[k] = broken_before                      # images fooled by an earlier restart stay fooled
        succ[k][:, rem.cpu()] = r.success_trace[0]
        after.append(best.detach().clone())
        rem = torch.nonzero(~best_ok).flatten()
        if len(rem) == 0 or not (random_start and eps > 0):
            succ[k + 1:] = succ[k][-1]
            break
    res = Ascent(best.detach(), best_val, best_ok, trace, succ, after)
    return res if return_result else res.x


@memoize
def lbfgs(
    model: Model,
    x: torch.Tensor,
    target: torch.Tensor,
    c_init: float = 1.0,
    search_steps: int = 6,
    max_iter: int = 50,
    batch_size: int = 100,
) -> torch.Tensor:
    """Box-constrained L-BFGS attack (Szegedy et al., *Intriguing properties of neural networks*, ICLR 2014, Sec. 4.1).

    Threat model: targeted, no fixed budget; the attack looks for a *small* L2 perturbation
    that makes ``model`` predict ``target``. For each image it solves

        ``min_delta  c * ||delta||_2^2 + CE(model(x + delta), target)   s.t.  x + delta in [0, 1]^n``

    with SciPy's L-BFGS-B, which handles the box natively (Szegedy et al. penalise
    ``c * |r|``; we use the squared L2 norm, as most re-implementations do, which is smooth at
    ``delta = 0``). A binary search on ``c`` (``search_steps`` solves per image, each from
    ``delta = 0`` with at most ``max_iter`` L-BFGS iterations) looks for the largest ``c``,
    i.e. the smallest perturbation, whose solution is classified as ``target``: after a
    success ``c`` goes up (x10 until a failure bounds it, then bisection), after a failure it
    goes down. The images of a batch are solved together: their objectives are summed, which
    leaves each image's minimiser unchanged because the terms share no variables.

    Parameters
    ----------
    model : callable ``x -> logits`` (deterministic; put it in eval mode).
    x : images ``(B, 1, 28, 28)`` in [0, 1]; ``target`` : target labels ``(B,)``.
    c_init : first value of ``c`` for every image.
    search_steps, max_iter : binary-search steps and L-BFGS iterations per step.
    batch_size : images optimised together in one L-BFGS-B problem.

    Returns ``x + delta`` (detached): per image the smallest successful perturbation found,
    or, if none succeeded, the solution at the smallest ``c`` tried (check success with
    ``model(x_adv).argmax(1) == target``).

    Example
    -------
    >>> target = (y + 1) % 10                            # doctest: +SKIP
    >>> x_adv = lbfgs(classifier, x, target)             # doctest: +SKIP
    """
    from scipy.optimize import minimize

    if not c_init > 0:
        raise ValueError(f"c_init must be > 0, got {c_init}.")
    if search_steps < 1 or max_iter < 1 or batch_size < 1:
        raise ValueError("search_steps, max_iter and batch_size must be >= 1.")
    if target.shape != (len(x),):
        raise ValueError(f"target must have shape ({len(x)},), got {tuple(target.shape)}.")
    x = x.detach()
    out = []
    for i in range(0, len(x), batch_size):
        out.append(_lbfgs_batch(model, x[i : i + batch_size], target[i : i + batch_size],
                                c_init, search_steps, max_iter, minimize))
    return torch.cat(out)


def _lbfgs_batch(model, x, target, c_init, search_steps, max_iter, minimize) -> torch.Tensor:
    b, shape = len(x), x.shape
    x0 = x.cpu().double().flatten().numpy()
    bounds = np.stack([-x0, 1.0 - x0], axis=1)          # delta keeps x + delta in [0, 1]
    c = np.full(b, float(c_init))
    lo, hi = np.zeros(b), np.full(b, np.inf)
    best = x.clone()
    best_norm = np.full(b, np.inf)
    fallback = x.clone()                                   # solution at the smallest c tried
    smallest_c = np.full(b, np.inf)

    for _ in range(search_steps):
        c_t = torch.tensor(c, dtype=x.dtype, device=x.device)

        def f(d_flat: np.ndarray) -> tuple[float, np.ndarray]:
            d = torch.tensor(d_flat, dtype=x.dtype, device=x.device).view(shape).requires_grad_(True)
            loss = (c_t * d.flatten(1).pow(2).sum(1)).sum()
            loss = loss + F.cross_entropy(model(x + d), target, reduction="sum")
            (grad,) = torch.autograd.grad(loss, d)
            return loss.item(), grad.cpu().double().flatten().numpy()

        res = minimize(f, np.zeros_like(x0), jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": max_iter})
        delta = torch.tensor(res.x, dtype=x.dtype, device=x.device).view(shape)
        x_adv = (x + delta).clamp(0.0, 1.0)
        with torch.no_grad():
            success = (model(x_adv).argmax(1) == target).cpu().numpy()
        norms = delta.flatten(1).norm(dim=1).cpu().numpy()
        better = success & (norms < best_norm)
        best[torch.from_numpy(better).to(x.device)] = x_adv[torch.from_numpy(better).to(x.device)]
        best_norm[better] = norms[better]
        low = c < smallest_c
        fallback[torch.from_numpy(low).to(x.device)] = x_adv[torch.from_numpy(low).to(x.device)]
        smallest_c[low] = c[low]
        # success: c can grow (smaller delta); failure: c must shrink.
        lo = np.where(success, c, lo)
        hi = np.where(success, hi, c)
        c = np.where(np.isinf(hi), c * 10.0, np.where(lo > 0, (lo + hi) / 2, c / 10.0))
    found = torch.from_numpy(np.isfinite(best_norm)).to(x.device)
    return torch.where(found.view(-1, 1, 1, 1), best, fallback).detach()


# --- attacks on the VAE ------------------------------------------------------------------
def reconstruction_distance(vae, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
    """``||g(x_a) - g(x_b)||_2`` per image, with ``g(x) = E[x' | z = mu(x)]`` the mean reconstruction."""
    return (vae.reconstruct(x_a, sample=False) - vae.reconstruct(x_b, sample=False)).flatten(1).norm(dim=1)


def latent_kl(mu: torch.Tensor, log_var: torch.Tensor, mu_t: torch.Tensor, log_var_t: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag e^log_var) || N(mu_t, diag e^log_var_t))`` per row, summed over latent dimensions.

    :func:`robustvae.models.gaussian_kl` with a target Gaussian, in its ``"quotient"`` form
    ``KL = 1/2 * sum_j [log_var_t - log_var + (e^log_var + (mu - mu_t)^2) / e^log_var_t - 1]``.
    """
    return gaussian_kl(mu, log_var, mu_t, log_var_t, form="quotient")


@memoize
def latent_attack(
    vae,
    x: torch.Tensor,
    x_target: torch.Tensor,
    eps: float,
    norm: str = "l2",
    steps: int = 100,
    alpha: float | None = None,
    lam: float = 0.0,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Latent-space attack on a VAE: make ``x + delta`` encode like ``x_target``.

    Tabacof, Tavares & Valle (*Adversarial Images for Variational Autoencoders*, NIPS 2016
    Workshop on Adversarial Training) and Gondim-Ribeiro, Tabacof & Valle (*Adversarial Attacks
    on Variational Autoencoders*, arXiv:1806.04646, 2018) minimise
    ``KL(q(z | x + delta) || q(z | x_target)) + C * ||delta||_2`` over the box with L-BFGS-B and
    sweep ``C``. We solve the **constrained** form instead, which fixes the threat model:

        ``min_{||delta|| <= eps, x + delta in [0, 1]}  KL(q(z | x + delta) || q(z | x_target)) + lam * ||delta||_2``

    (``lam = 0`` by default, i.e. the pure constrained problem) by projected gradient descent:
    normalised-gradient steps for L2, sign steps for L-inf, projection onto the ball and the
    box after each step, step lengths annealed from ``alpha`` to 0 on a cosine schedule (the
    objective is a divergence to be driven down, not a boundary to be crossed, so the steps
    must shrink to converge), keeping per image the iterate with the lowest objective. The
    decoder then reconstructs something close to ``x_target`` from an input that still looks
    like ``x``: the reconstruction, not the input, is what the attack controls.

    Parameters
    ----------
    vae : a :class:`~robustvae.models.VAE` (anything with ``encode(x) -> (mu, log_var)``).
    x, x_target : images ``(B, 1, 28, 28)`` in [0, 1]; row ``i`` of ``x`` is pushed towards row ``i`` of ``x_target``.
    eps, norm : the threat model, ``||delta||_norm <= eps``.
    steps : gradient steps; ``alpha`` (first step length) defaults to ``5 * eps / steps``
        (the annealed steps then cover ``2.5 * eps`` in all, as PGD's default does).
    lam : weight of the ``||delta||_2`` penalty of Tabacof et al. inside the ball.
    random_start, generator : start from a random point of the ball (CPU generator for reproducibility).

    Returns ``x + delta`` (detached).

    Example
    -------
    >>> x_adv = latent_attack(vae, x, x_target, eps=3.0, norm="l2")   # doctest: +SKIP
    >>> vae.reconstruct(x_adv, sample=False)                          # doctest: +SKIP
    """
    _check(eps, norm)
    if x_target.shape != x.shape:
        raise ValueError(f"x_target must have the shape of x {tuple(x.shape)}, got {tuple(x_target.shape)}.")
    if steps < 0 or lam < 0:
        raise ValueError("steps and lam must be >= 0.")
    alpha = 5.0 * eps / max(steps, 1) if alpha is None else alpha
    x = x.detach()
    with torch.no_grad():
        mu_t, log_var_t = vae.encode(x_target)

    def objective(x_adv: torch.Tensor) -> torch.Tensor:
        mu, log_var = vae.encode(x_adv)
        obj = latent_kl(mu, log_var, mu_t, log_var_t)
        if lam > 0:
            obj = obj + lam * (x_adv - x).flatten(1).norm(dim=1)
        return obj

    res = ascend(lambda v: -objective(v), ball_start(x, eps, norm, generator, random=random_start),
                 lambda v: project(v, x, eps, norm), steps=steps, alpha=alpha,
                 step_rule="sign" if norm == "linf" else "l2", schedule="cosine")
    return res.x


def max_damage(
    vae,
    x: torch.Tensor,
    eps: float,
    norm: str = "l2",
    steps: int = 50,
    alpha: float | None = None,
    restarts: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Maximum-damage attack on a VAE: ``max_{||delta|| <= eps} ||g(x + delta) - g(x)||_2``.

    ``g`` is the deterministic reconstruction through the encoder mean, as in Camuto et al.
    (AISTATS 2021) and Barrett et al. (AISTATS 2022), who solve the same problem with L-BFGS-B;
    here it is projected gradient ascent from a random start in the ball, pixels kept in
    [0, 1], keeping per image the iterate (over all steps and restarts) that moved the
    reconstruction most (:func:`ascend`).
    ``alpha`` defaults to ``2.5 * eps / steps``. Returns ``x + delta`` (detached).
    """
    _check(eps, norm)
    alpha = 2.5 * eps / max(steps, 1) if alpha is None else alpha
    x = x.detach()
    with torch.no_grad():
        target = vae.reconstruct(x, sample=False)

    def damage(v: torch.Tensor) -> torch.Tensor:
        return (vae.reconstruct(v, sample=False) - target).flatten(1).pow(2).sum(1)

    res = ascend(damage, ball_start(x, eps, norm, generator), lambda v: project(v, x, eps, norm),
                 steps=steps, alpha=alpha, step_rule="sign" if norm == "linf" else "l2", restarts=restarts)
    return res.x

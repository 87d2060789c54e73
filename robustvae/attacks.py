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
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "NORMS", "fgsm", "pgd", "lbfgs", "project", "perturbation_norm",
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


def _step(grad: torch.Tensor, alpha: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return alpha * grad.sign()
    return alpha * grad / (_flat_norm(grad) + 1e-12)


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    if norm == "linf":
        noise = (torch.rand(x.shape, generator=generator, device="cpu") * 2 - 1).to(x.device) * eps
    else:
        g = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
        r = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=generator, device="cpu").to(x.device)
        noise = g / (_flat_norm(g) + 1e-12) * eps * r.pow(1.0 / x[0].numel())
    return project(x + noise, x, eps, norm)


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
) -> torch.Tensor:
    """Projected Gradient Descent (Madry et al., ICLR 2018) on the cross-entropy.

    Repeats ``x_{t+1} = Proj_{B(x, eps) and [0,1]}(x_t + alpha * step(grad_x CE(model(x_t), y)))``
    where ``step`` is the sign for L-inf and the L2-normalised gradient for L2.

    Parameters
    ----------
    model : callable ``x -> logits`` (may be stochastic; see ``eot``).
    x, y : images ``(B, 1, 28, 28)`` in [0, 1] and labels ``(B,)`` (targets if ``targeted``).
    eps : radius of the threat model in ``norm`` (``"linf"`` or ``"l2"``).
    steps : number of gradient steps; ``alpha`` defaults to ``2.5 * eps / steps``.
    random_start : start from a uniform point of the ball (L-inf) or a random point (L2).
    eot : Expectation over Transformation (Athalye et al., ICML 2018): average the gradient
        over ``eot`` forward passes of a stochastic model.
    restarts : keep, per image, the first restart that fools the model (else the last).
    generator : CPU generator for the random start (for reproducible attacks).

    Returns the adversarial images (detached).
    """
    _check(eps, norm)
    if steps < 0 or eot < 1 or restarts < 1:
        raise ValueError("steps must be >= 0, eot and restarts >= 1.")
    alpha = 2.5 * eps / max(steps, 1) if alpha is None else alpha
    x = x.detach()
    best = x.clone()
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        x_adv = _random_start(x, eps, norm, generator) if (random_start and eps > 0) else x.clone()
        for _ in range(steps):
            x_adv.requires_grad_(True)
            grad = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)[0]
            for _ in range(eot - 1):    # EOT: average the gradient over more forward passes
                grad += torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)[0]
            x_adv = x_adv.detach()
            step = _step(grad / eot if eot > 1 else grad, alpha, norm)
            x_adv = project(x_adv - step if targeted else x_adv + step, x, eps, norm)
        with torch.no_grad():
            pred = model(x_adv).argmax(1)
            success = (pred == y) if targeted else (pred != y)
        take = ~done
        best[take] = x_adv[take]
        done |= success
        if bool(done.all()):
            break
    return best.detach()


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

    ``KL = 1/2 * sum_j [log_var_t - log_var + (e^log_var + (mu - mu_t)^2) / e^log_var_t - 1]``.
    """
    return 0.5 * (log_var_t - log_var + (log_var.exp() + (mu - mu_t).pow(2)) / log_var_t.exp() - 1.0).sum(-1)


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

    x_adv = _random_start(x, eps, norm, generator) if (random_start and eps > 0) else x.clone()
    best = x_adv.clone()
    best_obj = torch.full((len(x),), float("inf"), device=x.device)
    for t in range(steps + 1):
        x_adv.requires_grad_(t < steps)
        with torch.set_grad_enabled(t < steps):
            obj = objective(x_adv)
        better = obj.detach() < best_obj
        best[better], best_obj[better] = x_adv.detach()[better], obj.detach()[better]
        if t < steps:
            (grad,) = torch.autograd.grad(obj.sum(), x_adv)
            alpha_t = alpha * 0.5 * (1.0 + math.cos(math.pi * t / steps))   # cosine-annealed step
            x_adv = project(x_adv.detach() - _step(grad, alpha_t, norm), x, eps, norm)
    return best.detach()


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
    [0, 1], keeping per image the restart that moved the reconstruction most.
    ``alpha`` defaults to ``2.5 * eps / steps``. Returns ``x + delta`` (detached).
    """
    _check(eps, norm)
    alpha = 2.5 * eps / max(steps, 1) if alpha is None else alpha
    x = x.detach()
    with torch.no_grad():
        target = vae.reconstruct(x, sample=False)
    best, best_d = x.clone(), torch.full((len(x),), -1.0, device=x.device)
    for _ in range(restarts):
        x_adv = _random_start(x, eps, norm, generator) if eps > 0 else x.clone()
        for _ in range(steps):
            x_adv.requires_grad_(True)
            dist = (vae.reconstruct(x_adv, sample=False) - target).flatten(1).pow(2).sum(1)
            (grad,) = torch.autograd.grad(dist.sum(), x_adv)
            x_adv = project(x_adv.detach() + _step(grad, alpha, norm), x, eps, norm)
        with torch.no_grad():
            d = (vae.reconstruct(x_adv, sample=False) - target).flatten(1).norm(dim=1)
        better = d > best_d
        best[better], best_d[better] = x_adv[better], d[better]
    return best.detach()

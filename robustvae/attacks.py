"""Adversarial attacks: on classifiers (FGSM, PGD) and on VAEs (maximum damage).

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

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["NORMS", "fgsm", "pgd", "project", "max_damage", "reconstruction_distance"]

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
            grad = torch.zeros_like(x)
            for _ in range(eot):
                loss = F.cross_entropy(model(x_adv), y)
                grad += torch.autograd.grad(loss, x_adv)[0]
            x_adv = x_adv.detach()
            step = _step(grad / eot, alpha, norm)
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


# --- attacks on the VAE ------------------------------------------------------------------
def reconstruction_distance(vae, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
    """``||g(x_a) - g(x_b)||_2`` per image, with ``g(x) = E[x' | z = mu(x)]`` the mean reconstruction."""
    return (vae.reconstruct(x_a, sample=False) - vae.reconstruct(x_b, sample=False)).flatten(1).norm(dim=1)


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

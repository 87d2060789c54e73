"""r-robustness of VAEs: the definition as a Monte-Carlo test, empirical and theoretical margins.

Camuto, Willetts, Roberts, Holmes & Rainforth (2021), *Towards a Theoretical Understanding of
the Robustness of Variational Autoencoders*, AISTATS (arXiv:2007.07365).

The model. A VAE with encoder ``q(z|x) = N(mu(x), diag sigma(x)^2)`` and decoder mean ``g(z)``
(``vae.mean_image(vae.decode(z))``) reconstructs stochastically:

    f(x) = g(z),   z ~ q(z|x)          (optionally followed by a draw from p(x|z)).

Definition (r-robustness). ``f`` is r-robust at ``x`` to a perturbation ``delta`` iff

    P(||f(x + delta) - f(x)||_2 <= r)  >  P(||f(x + delta) - f(x)||_2 > r),

i.e. iff that probability exceeds 1/2, the two reconstructions being independent draws.
The r-robustness margin ``R^r(x)`` is the smallest ``||delta||_2`` that breaks r-robustness.

What this module computes
-------------------------
* :func:`r_robust_probability`, :func:`is_r_robust`: the probability by Monte Carlo over the
  encoder (and optionally decoder) noise, with a binomial confidence interval.
* :func:`noise_scale_r`: an ``r`` on a model's own noise scale (a quantile of the distance
  between two reconstructions of the same input), to compare models at matched noise.
* :func:`empirical_margin`: the smallest perturbation norm found that breaks r-robustness,
  searched over a grid of radii along attack directions (:func:`max_damage_attack`,
  :func:`latent_target_attack`, :func:`encoder_kl_attack`, and :func:`random_attack` as a
  control), then refined by bisection along the ray of the first breaking perturbation. Attacks are not optimal, so it over-estimates the true margin.
* :func:`lbfgs_damage_attack`: the maximum-damage attack solved with SciPy's L-BFGS-B from
  several random starts, as Camuto et al. (2021) and Barrett et al. (2022) solve it.
* :func:`portfolio_margin`: :func:`empirical_margin` for a portfolio of attacks, keeping per
  input the smallest margin and the attack that found it (:class:`PortfolioMargin`, with a
  "what each attack adds" :meth:`~PortfolioMargin.summary`).
* :func:`theoretical_margins`: the paper's first-order margin
  ``sigma_min(x) Phi^{-1}(p) / ||J_mu(x)||_F`` with ``p = P(||Delta(x)||_2 <= r)`` the
  probability at ``delta = 0``, a sharper first-order variant, and the latent-space margin
  ``Phi^{-1}(p)`` (in units of the encoder standard deviation), which is a strict bound when the
  perturbation moves the encoder mean and leaves the encoder variance unchanged (see
  :func:`empirical_latent_margin` to test it).
* :class:`LinearGaussianVAE`: a linear encoder and decoder with a fixed encoder variance, where
  the probability and the margin are known in closed form (a non-central chi-square).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy import optimize, stats
from torch import nn

from . import attacks
from .models import gaussian_kl
from .memo import memoize

__all__ = [
    "CI_METHODS",
    "ProbabilityEstimate",
    "MarginSearch",
    "binomial_interval",
    "stochastic_reconstructions",
    "reconstruction_distances",
    "probability_from_distances",
    "r_robust_probability",
    "is_r_robust",
    "noise_scale_r",
    "max_damage_attack",
    "lbfgs_damage_attack",
    "latent_target_attack",
    "encoder_kl_attack",
    "random_attack",
    "empirical_margin",
    "PortfolioMargin",
    "portfolio_margin",
    "empirical_latent_margin",
    "encoder_jacobian",
    "decoder_jacobian",
    "theoretical_margins",
    "LinearGaussianVAE",
]

#: Confidence intervals for a binomial proportion.
CI_METHODS = ("wilson", "clopper-pearson")

#: ``attack(vae, x, eps, index) -> x_adv`` with ``||x_adv - x||_2 <= eps`` and ``x_adv`` in [0, 1];
#: ``index`` (a LongTensor) says which rows of the caller's full batch ``x`` holds, for attacks
#: that need per-input data such as a target image.
Attack = Callable[[nn.Module, torch.Tensor, float, torch.Tensor], torch.Tensor]


# --- checks --------------------------------------------------------------------------------
def _check_r(r: float) -> float:
    if not (isinstance(r, (int, float, np.floating)) and math.isfinite(r) and r > 0):
        raise ValueError(f"r must be a positive number (a distance between images), got {r!r}.")
    return float(r)


def _check_n(n_samples: int) -> int:
    if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 1) or isinstance(n_samples, bool):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    return int(n_samples)


def _check_confidence(confidence: float, method: str) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}.")
    if method not in CI_METHODS:
        raise ValueError(f"Unknown interval method {method!r}. Valid: {', '.join(CI_METHODS)}.")


def _row_norms(t: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each row of ``t`` (flattened past the batch dimension), shape ``(B,)``."""
    return t.flatten(1).norm(dim=1)


def _randn(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard normal noise drawn on the CPU (reproducible across devices), then moved."""
    return torch.randn(shape, generator=generator).to(device)


# --- the Monte-Carlo test --------------------------------------------------------------------
def binomial_interval(k: torch.Tensor, n: int, confidence: float = 0.95,
                      method: str = "wilson") -> tuple[torch.Tensor, torch.Tensor]:
    """Two-sided confidence interval for a proportion ``k / n`` (elementwise over ``k``).

    ``"wilson"``: the Wilson score interval (Wilson 1927, JASA), accurate near 0 and 1.
    ``"clopper-pearson"``: the exact, conservative interval from beta quantiles
    (Clopper & Pearson 1934, Biometrika).
    """
    _check_confidence(confidence, method)
    k = torch.as_tensor(k, dtype=torch.float64)
    if method == "wilson":
        z = stats.norm.ppf(0.5 + confidence / 2)
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * torch.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lo, hi = (centre - half).clamp(0, 1), (centre + half).clamp(0, 1)
    else:
        a = 1 - confidence
        kk = k.cpu().numpy()
        lo = np.where(kk > 0, stats.beta.ppf(a / 2, kk, n - kk + 1), 0.0)
        hi = np.where(kk < n, stats.beta.ppf(1 - a / 2, kk + 1, n - kk), 1.0)
        lo, hi = torch.as_tensor(lo), torch.as_tensor(hi)
    return lo.float(), hi.float()


@dataclass
class ProbabilityEstimate:
    """A Monte-Carlo estimate of ``P(||f(x + delta) - f(x)||_2 <= r)``, one entry per input."""

    p: torch.Tensor          # (B,) the fraction of sample pairs within r
    lower: torch.Tensor      # (B,) confidence interval
    upper: torch.Tensor
    n_samples: int
    r: float

    @property
    def robust(self) -> torch.Tensor:
        """The definition on the point estimate: ``p > 1/2``."""
        return self.p > 0.5

    @property
    def surely_robust(self) -> torch.Tensor:
        """r-robust with the stated confidence: the whole interval above 1/2."""
        return self.lower > 0.5

    @property
    def surely_not_robust(self) -> torch.Tensor:
        """Not r-robust with the stated confidence: the whole interval at or below 1/2."""
        return self.upper <= 0.5


@torch.no_grad()
def stochastic_reconstructions(
    vae: nn.Module,
    x: torch.Tensor,
    n_samples: int,
    decoder_noise: bool = False,
    whitened_shift: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    chunk: int = 2048,
) -> torch.Tensor:
    """``n_samples`` independent draws of ``f(x)``: shape ``(n_samples, B, *x.shape[1:])``.

    ``f(x) = g(z)`` with ``z = mu(x) + sigma(x) * (eps + h)``, ``eps ~ N(0, I)``, ``g`` the decoder
    mean (Camuto et al. 2021, Sec. 3). ``h = whitened_shift`` (``(B, d)``, default 0) moves the
    encoder mean by ``sigma * h`` at fixed ``sigma``: the perturbation the paper's latent-space
    result is about. ``decoder_noise=True`` also draws ``x' ~ p(x|z)`` (Bernoulli, continuous
    Bernoulli or Gaussian, as the VAE's likelihood says). Noise is drawn on the CPU from
    ``generator``, so the draws do not depend on the device.
    """
    n = _check_n(n_samples)
    dev = x.device
    mu, log_var = vae.encode(x)
    std = (0.5 * log_var).exp()
    if whitened_shift is not None:
        mu = mu + std * whitened_shift.to(dev)
    b, d = mu.shape
    eps = _randn((n, b, d), generator, dev)
    z = (mu.unsqueeze(0) + std.unsqueeze(0) * eps).flatten(0, 1)
    out = torch.cat([vae.mean_image(vae.decode(z[i : i + chunk])) for i in range(0, len(z), chunk)])
    if decoder_noise:
        likelihood = getattr(vae, "likelihood", "bernoulli")
        if likelihood == "bernoulli":
            u = torch.rand(out.shape, generator=generator).to(dev)
            out = (u < out).to(out.dtype)
        elif likelihood == "continuous-bernoulli":
            probs_logits = torch.cat([vae.decode(z[i : i + chunk]) for i in range(0, len(z), chunk)])
            u = torch.rand(out.shape, generator=generator).to(dev).clamp(1e-6, 1 - 1e-6)
            out = torch.distributions.ContinuousBernoulli(logits=probs_logits).icdf(u)
        else:
            out = out + float(getattr(vae, "obs_std", 0.1)) * _randn(out.shape, generator, dev)
    return out.view(n, b, *out.shape[1:])


@torch.no_grad()
@memoize
def reconstruction_distances(
    vae: nn.Module,
    x: torch.Tensor,
    x_pert: torch.Tensor | None = None,
    n_samples: int = 200,
    reference: torch.Tensor | None = None,
    decoder_noise: bool = False,
    whitened_shift: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``||f(x_pert) - f(x)||_2`` for ``n_samples`` independent pairs of draws: shape ``(B, n)``.

    ``x_pert`` defaults to ``x`` (the self-distance ``Delta(x)`` of the paper). ``reference``
    reuses draws of ``f(x)`` (from :func:`stochastic_reconstructions`, ``(n, B, ...)``), which is
    valid because the two sides are independent; it saves half the work when many perturbations
    of the same inputs are tested.
    """
    n = _check_n(n_samples)
    x_pert = x if x_pert is None else x_pert
    if x_pert.shape != x.shape:
        raise ValueError(f"x_pert has shape {tuple(x_pert.shape)}, x has {tuple(x.shape)}: they must match.")
    if reference is None:
        reference = stochastic_reconstructions(vae, x, n, decoder_noise, generator=generator)
    elif reference.shape[:2] != (n, len(x)):
        raise ValueError(f"reference must have shape (n_samples={n}, B={len(x)}, ...), got {tuple(reference.shape)}.")
    pert = stochastic_reconstructions(vae, x_pert, n, decoder_noise, whitened_shift, generator)
    return (pert - reference).flatten(2).norm(dim=2).T.contiguous()


def probability_from_distances(distances: torch.Tensor, r: float, confidence: float = 0.95,
                               method: str = "wilson") -> ProbabilityEstimate:
    """Turn ``(B, n)`` sampled distances into :class:`ProbabilityEstimate` of ``P(dist <= r)``."""
    r = _check_r(r)
    n = distances.shape[1]
    k = (distances <= r).sum(dim=1).cpu()
    lo, hi = binomial_interval(k, n, confidence, method)
    return ProbabilityEstimate(k.float() / n, lo, hi, n, r)


@memoize
def r_robust_probability(
    vae: nn.Module,
    x: torch.Tensor,
    delta: torch.Tensor | None,
    r: float,
    n_samples: int = 200,
    decoder_noise: bool = False,
    confidence: float = 0.95,
    method: str = "wilson",
    generator: torch.Generator | None = None,
) -> ProbabilityEstimate:
    """Monte-Carlo estimate of ``P(||f(x + delta) - f(x)||_2 <= r)`` with a confidence interval.

    Camuto et al. (AISTATS 2021), Definition of r-robustness: ``f`` is r-robust at ``x`` to
    ``delta`` iff this probability exceeds 1/2. ``delta=None`` means no perturbation, giving
    ``P(||Delta(x)||_2 <= r)``, the quantity the paper's margins are built on.

    Example
    -------
    >>> est = r_robust_probability(vae, x, delta, r=3.0, n_samples=200)   # doctest: +SKIP
    >>> est.p, est.lower, est.upper, est.robust                           # doctest: +SKIP
    """
    _check_r(r)
    _check_confidence(confidence, method)
    x_pert = x if delta is None else x + delta
    d = reconstruction_distances(vae, x, x_pert, n_samples, decoder_noise=decoder_noise, generator=generator)
    return probability_from_distances(d, r, confidence, method)


def noise_scale_r(vae: nn.Module, x: torch.Tensor, quantile: float = 0.9, n_samples: int = 400,
                  generator: torch.Generator | None = None) -> float:
    """An ``r`` on the model's own noise scale: the distance its reconstructions of an unperturbed
    input stay within with probability ``quantile``, the median of that quantile over the inputs.

    ``r`` is the ``quantile``-quantile of ``||Delta(x)||_2`` (``n_samples`` pairs per input), and
    the median over ``x``, so that ``P(||Delta(x)||_2 <= r)`` is about ``quantile`` for the median
    input. A fixed pixel-space ``r`` puts a sharp model's probabilities at 1 (where a Monte-Carlo
    estimate is clipped) and a noisy one's near or below 1/2; this ``r`` puts every model's at
    the same place, so margins compare the models on their own noise (a design choice beside
    Camuto et al.'s fixed ``r``; it favours no model for being blurry).
    """
    if not 0.5 < quantile < 1:
        raise ValueError(f"quantile must lie in (0.5, 1) so that the unperturbed input is r-robust, got {quantile}.")
    d = reconstruction_distances(vae, x, None, n_samples, generator=generator)
    return float(torch.quantile(d.double(), quantile, dim=1).median())


def is_r_robust(vae: nn.Module, x: torch.Tensor, delta: torch.Tensor | None, r: float,
                n_samples: int = 200, **kwargs) -> torch.Tensor:
    """``(B,)`` booleans: the Monte-Carlo point estimate of the probability exceeds 1/2.

    Use :func:`r_robust_probability` for the confidence interval (``surely_robust``,
    ``surely_not_robust``) when the estimate is close to 1/2.
    """
    return r_robust_probability(vae, x, delta, r, n_samples, **kwargs).robust


# --- attack directions -------------------------------------------------------------------------
def max_damage_attack(steps: int = 20, restarts: int = 1, generator: torch.Generator | None = None) -> Attack:
    """The maximum-damage attack (L2), ``max_{||delta|| <= eps} ||g(x + delta) - g(x)||_2`` with
    ``g`` the reconstruction through the encoder mean (:func:`robustvae.attacks.max_damage`),
    as in Camuto et al. (2021) and Barrett et al. (2022)."""

    def attack(vae, x, eps, index=None):
        return attacks.max_damage(vae, x, eps, norm="l2", steps=steps, restarts=restarts, generator=generator)

    return attack


def lbfgs_damage_attack(starts: int = 5, max_iter: int = 20, generator: torch.Generator | None = None,
                        batch_size: int = 100) -> Attack:
    """The maximum-damage attack solved as Camuto et al. (AISTATS 2021) and Barrett et al.
    (AISTATS 2022) solve it: SciPy's L-BFGS-B from ``starts`` random points of the ball.

    Maximises ``||g(x + rho(delta)) - g(x)||_2^2`` (``g``: the reconstruction through the
    encoder mean) over ``delta`` in the box ``x + delta in [0, 1]`` (L-BFGS-B's bounds), where
    ``rho(delta) = delta * eps / max(eps, ||delta||_2)`` rescales ``delta`` radially onto the
    L2 ball: a differentiable map (almost everywhere) that keeps the box, because the box
    contains ``delta = 0`` and is convex. Each start is a random point of the ball
    (:func:`robustvae.attacks.ball_start`) followed by at most ``max_iter`` L-BFGS-B
    iterations; the images of a batch (``batch_size`` at a time) are solved together as one
    problem, as :func:`robustvae.attacks.lbfgs` does: the problem minimises
    ``-sum_b log ||g(x_b + rho(delta_b)) - g(x_b)||^2``, the terms sharing no variables, so each
    image keeps its own maximiser, and the logarithm puts every image's term on the same
    scale for the shared line search (with the plain sum, images of small damage barely move:
    on an MNIST VAE trained for two epochs, 5 starts of 5 iterations reached about 15% less
    damage at ``eps = 3``). SciPy's stopping tolerances are switched off, so each start runs its
    ``max_iter`` iterations unless the line search fails.
    Per image the start of largest damage is kept, so
    more starts never lower the damage found (start ``k`` draws the same numbers whatever
    ``starts`` is, given the same ``generator`` state).

    Returns an :data:`Attack`: ``attack(vae, x, eps, index) -> x + rho(delta)`` (detached),
    inside the ball and the box.

    Example
    -------
    >>> search = empirical_margin(vae, x, r=4.0, radii=radii, attack=lbfgs_damage_attack())  # doctest: +SKIP
    """
    if starts < 1 or max_iter < 1 or batch_size < 1:
        raise ValueError(f"starts, max_iter and batch_size must be >= 1, got {starts}, {max_iter}, {batch_size}.")

    def attack(vae, x, eps, index=None):
        x = x.detach()
        if eps <= 0:
            return x.clone()
        return torch.cat([_lbfgs_damage_batch(vae, x[i:i + batch_size], float(eps), starts, max_iter, generator)
                          for i in range(0, len(x), batch_size)])

    return attack


def _radial(delta: torch.Tensor, eps: float) -> torch.Tensor:
    n = _row_norms(delta).view(-1, *[1] * (delta.dim() - 1))
    return delta * (eps / torch.clamp(n, min=eps))


def _lbfgs_damage_batch(vae, x, eps, starts, max_iter, generator) -> torch.Tensor:
    shape = x.shape
    x0 = x.cpu().double().flatten().numpy()
    bounds = np.stack([-x0, 1.0 - x0], axis=1)              # x + delta stays in [0, 1]
    with torch.no_grad():
        target = vae.reconstruct(x, sample=False)
    start = attacks.ball_start(x, eps, "l2", generator)

    def damage(d: torch.Tensor) -> torch.Tensor:
        return (vae.reconstruct(x + _radial(d, eps), sample=False) - target).flatten(1).pow(2).sum(1)

    def f(d_flat: np.ndarray) -> tuple[float, np.ndarray]:
        d = torch.tensor(d_flat, dtype=x.dtype, device=x.device).view(shape).requires_grad_(True)
        loss = -torch.log(damage(d) + 1e-12).sum()          # per image: log of its damage
        (grad,) = torch.autograd.grad(loss, d)
        return loss.item(), grad.cpu().double().flatten().numpy()

    best = x.clone()
    best_dmg = torch.full((len(x),), -float("inf"), device=x.device)
    for k in range(starts):
        d0 = (start(k) - x).cpu().double().flatten().numpy()
        res = optimize.minimize(f, np.clip(d0, bounds[:, 0], bounds[:, 1]), jac=True, method="L-BFGS-B",
                                bounds=bounds, options={"maxiter": max_iter, "ftol": 0.0, "gtol": 0.0})
        d = torch.tensor(res.x, dtype=x.dtype, device=x.device).view(shape)
        x_adv = attacks.project(x + _radial(d, eps), x, eps, "l2")    # float safety: ball and box
        with torch.no_grad():
            dmg = (vae.reconstruct(x_adv, sample=False) - target).flatten(1).pow(2).sum(1)
        take = dmg > best_dmg
        best[take], best_dmg[take] = x_adv[take], dmg[take]
    return best.detach()


def latent_target_attack(x_target: torch.Tensor, steps: int = 20,
                         generator: torch.Generator | None = None) -> Attack:
    """The latent-space attack of the adversarial chapter (:func:`robustvae.attacks.latent_attack`,
    Tabacof et al. 2016; Gondim-Ribeiro et al. 2018): ``min_{||delta||_2 <= eps}
    KL(q(z|x + delta) || q(z|x_target))``, row ``i`` of the batch pushed towards ``x_target[i]``."""

    def attack(vae, x, eps, index=None):
        tgt = x_target if index is None else x_target[index.to(x_target.device)]
        return attacks.latent_attack(vae, x, tgt.to(x.device), eps, norm="l2", steps=steps, generator=generator)

    return attack


def encoder_kl_attack(steps: int = 20, alpha: float | None = None,
                      generator: torch.Generator | None = None) -> Attack:
    """A latent-space attack: ``max_{||delta||_2 <= eps} KL(q(z|x + delta) || q(z|x))``.

    The untargeted form of the latent attacks of Tabacof et al. (2016) and Gondim-Ribeiro et al.
    (2018), who minimise the KL to a target's encoding instead: push the encoding as far from
    the original one as the budget allows. With the encoder variance fixed, the KL is half the
    squared whitened mean shift ``||(mu(x + delta) - mu(x)) / sigma(x)||^2``, the quantity the
    paper's margin controls. Projected L2 gradient ascent (:func:`robustvae.attacks.ascend`) from
    a random start at half the budget (the KL has zero gradient at ``delta = 0``), keeping per
    input the iterate of largest KL; ``alpha`` defaults to ``2.5 * eps / steps``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")

    def attack(vae, x, eps, index=None):
        if eps <= 0:
            return x.detach().clone()
        step = 2.5 * eps / steps if alpha is None else alpha
        x = x.detach()
        with torch.no_grad():
            mu0, lv0 = vae.encode(x)

        def start(k: int) -> torch.Tensor:
            u = _randn(x.shape, generator, x.device)
            return attacks.project(x + 0.5 * eps * u / _row_norms(u).view(-1, *[1] * (x.dim() - 1)), x, eps, "l2")

        def kl(v: torch.Tensor) -> torch.Tensor:
            mu, lv = vae.encode(v)
            return gaussian_kl(mu, lv, mu0, lv0, form="quotient")

        return attacks.ascend(kl, start, lambda v: attacks.project(v, x, eps, "l2"), steps=steps,
                              alpha=step, step_rule="l2").x

    return attack


def random_attack(generator: torch.Generator | None = None) -> Attack:
    """A control: ``x + eps * u`` with ``u`` uniform on the unit sphere, clipped to [0, 1]
    (clipping can shorten the perturbation; margins use the actual norm)."""

    def attack(vae, x, eps, index=None):
        u = _randn(x.shape, generator, x.device)
        u = u / _row_norms(u).view(-1, *[1] * (x.dim() - 1))
        return (x + eps * u).clamp(0.0, 1.0)

    return attack


# --- margin search -----------------------------------------------------------------------------
@dataclass
class MarginSearch:
    """The result of a margin search for ``B`` inputs over ``K`` radii.

    ``margin[b]`` is the norm of the smallest perturbation found that breaks r-robustness
    (point estimate ``p <= 1/2``), ``inf`` where none was found up to the largest radius
    (``found[b]`` is False). ``prob``/``lower``/``upper``/``norms`` are ``(K, B)``: the estimate
    and the actual perturbation norm at each radius of the grid. ``p_at_margin`` and
    ``upper_at_margin`` are the estimate at the returned margin (NaN where none was found).
    ``distances`` (``(K, B, n)``) keeps the sampled distances on the grid, so the probability
    can be read off at any other ``r`` (:func:`probability_from_distances`). ``perturbation``
    is the breaking perturbation of norm ``margin`` (zero where none was found), on the CPU.
    """

    margin: torch.Tensor
    found: torch.Tensor
    radii: torch.Tensor
    prob: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    norms: torch.Tensor
    p_at_margin: torch.Tensor
    upper_at_margin: torch.Tensor
    distances: torch.Tensor
    perturbation: torch.Tensor


def _margin_search(propose, evaluate, radii, refine_steps: int, batch: int,
                   stop_when_broken: bool) -> MarginSearch:
    """Grid search then bisection along the ray of the first breaking perturbation.

    ``propose(R, idx) -> pert`` gives, for the inputs ``idx`` of the batch, perturbations of
    norm at most ``R``; ``evaluate(pert, idx) -> (ProbabilityEstimate, distances)``. With
    ``stop_when_broken``, inputs already broken at a smaller radius are not attacked again (their
    grid entries are NaN). Points on the segment from 0 to a perturbation are valid perturbations
    too (the box [0, 1] is convex), so the bisection needs no projection.
    """
    radii = torch.as_tensor(np.asarray(radii, dtype=np.float32))
    if radii.ndim != 1 or len(radii) == 0 or not bool((radii > 0).all()) or not bool((radii[1:] > radii[:-1]).all()):
        raise ValueError("radii must be a non-empty increasing sequence of positive numbers.")
    if refine_steps < 0:
        raise ValueError(f"refine_steps must be >= 0, got {refine_steps}.")
    k_max, b = len(radii), batch
    nan = float("nan")
    prob, lower, upper, norm = (torch.full((k_max, b), nan) for _ in range(4))
    dists: list[torch.Tensor | None] = [None] * k_max
    found = torch.zeros(b, dtype=torch.bool)
    hi = torch.full((b,), float("inf"))
    lo = torch.zeros(b)
    p_at, up_at = torch.full((b,), nan), torch.full((b,), nan)
    hi_pert: torch.Tensor | None = None
    last_norm = torch.zeros(b)
    for k, R in enumerate(radii.tolist()):
        idx = torch.nonzero(~found).flatten() if stop_when_broken else torch.arange(b)
        if len(idx) == 0:
            break
        pert = propose(R, idx)
        est, dist = evaluate(pert, idx)
        n_k = _row_norms(pert).cpu()
        prob[k, idx], lower[k, idx], upper[k, idx], norm[k, idx] = est.p, est.lower, est.upper, n_k
        full = torch.full((b, dist.shape[1]), nan)
        full[idx] = dist.cpu()
        dists[k] = full
        if hi_pert is None:
            hi_pert = torch.zeros((b,) + tuple(pert.shape[1:]), dtype=pert.dtype)
        new = (est.p <= 0.5) & ~found[idx]
        rows = idx[new]
        found[rows], hi[rows], lo[rows] = True, n_k[new], torch.minimum(last_norm[rows], n_k[new])
        p_at[rows], up_at[rows] = est.p[new], est.upper[new]
        hi_pert[rows] = pert[new].detach().cpu()
        last_norm[idx] = n_k
    dists = [d if d is not None else torch.full_like(dists[0], nan) for d in dists]
    rows = torch.nonzero(found).flatten()
    direction = hi_pert[rows] / hi[rows].clamp_min(1e-12).view(-1, *[1] * (hi_pert.dim() - 1))
    if len(rows) and refine_steps:
        for _ in range(refine_steps):
            mid = (lo[rows] + hi[rows]) / 2
            est, _ = evaluate(direction * mid.view(-1, *[1] * (direction.dim() - 1)), rows)
            broken = est.p <= 0.5
            hi[rows] = torch.where(broken, mid, hi[rows])
            lo[rows] = torch.where(broken, lo[rows], mid)
            p_at[rows] = torch.where(broken, est.p, p_at[rows])
            up_at[rows] = torch.where(broken, est.upper, up_at[rows])
    breaking = torch.zeros_like(hi_pert)
    breaking[rows] = direction * hi[rows].view(-1, *[1] * (direction.dim() - 1))
    return MarginSearch(hi, found, radii, prob, lower, upper, norm, p_at, up_at, torch.stack(dists), breaking)


@memoize
def empirical_margin(
    vae: nn.Module,
    x: torch.Tensor,
    r: float,
    radii,
    attack: Attack,
    n_samples: int = 200,
    refine_steps: int = 4,
    reference: torch.Tensor | None = None,
    decoder_noise: bool = False,
    confidence: float = 0.95,
    method: str = "wilson",
    generator: torch.Generator | None = None,
    stop_when_broken: bool = False,
) -> MarginSearch:
    """Empirical r-robustness margin of each input along an attack's directions.

    For each radius ``R`` of the increasing grid ``radii``, ``attack(vae, x, R, index)`` proposes
    ``x + delta`` with ``||delta||_2 <= R`` and the probability ``P(||f(x + delta) - f(x)|| <= r)``
    is estimated with ``n_samples`` pairs of draws. The first radius where the estimate is
    ``<= 1/2`` brackets the margin; ``refine_steps`` bisection steps along that perturbation's
    ray tighten it. This is the estimate Camuto et al. (2021) and Barrett et al. (2022) compare
    their bounds with (a grid of ``R``, the maximum-damage attack, Monte Carlo at each ``R``).
    The attack is a heuristic, so the true margin is at most the returned one (up to
    Monte-Carlo error). ``stop_when_broken=True`` skips inputs already broken at a smaller
    radius (cheaper; their later grid entries are NaN).
    """
    r = _check_r(r)
    n = _check_n(n_samples)
    _check_confidence(confidence, method)
    x = x.detach()
    if reference is None:
        reference = stochastic_reconstructions(vae, x, n, decoder_noise, generator=generator)

    def propose(R, idx):
        xi = x[idx.to(x.device)]
        return (attack(vae, xi, R, idx) - xi).detach()

    def evaluate(delta, idx):
        i = idx.to(x.device)
        xi = x[i]
        d = reconstruction_distances(vae, xi, xi + delta.to(x.device), n, reference[:, i], decoder_noise,
                                     generator=generator)
        return probability_from_distances(d, r, confidence, method), d

    return _margin_search(propose, evaluate, radii, refine_steps, len(x), stop_when_broken)


@dataclass
class PortfolioMargin:
    """The empirical margin of each input over a portfolio of attacks (the worst case over
    attacks, as in RobustBench/AutoAttack, Croce & Hein, ICML 2020).

    ``margin`` ``(B,)``: per input the smallest margin any attack found (``inf`` where none
    broke it); ``found`` ``(B,)``; ``best_attack``: per input the name of the attack that found
    it (the first in portfolio order on ties, ``"-"`` where none did); ``margins``: each
    attack's ``(B,)`` margins; ``budgets``: each attack's budget in words (for captions);
    ``searches``: each attack's :class:`MarginSearch` (``None`` when built from margins only);
    ``perturbation``: the winning attack's breaking perturbation (``None`` without searches).
    """

    margin: torch.Tensor
    found: torch.Tensor
    best_attack: list[str]
    margins: dict[str, torch.Tensor]
    budgets: dict[str, str]
    searches: dict[str, MarginSearch] | None = None
    perturbation: torch.Tensor | None = None

    @classmethod
    def from_margins(cls, margins: dict[str, torch.Tensor], budgets: dict[str, str] | None = None,
                     searches: dict[str, MarginSearch] | None = None) -> "PortfolioMargin":
        """Combine per-attack ``(B,)`` margins (``inf``: not broken) into the portfolio's."""
        if not margins:
            raise ValueError("The portfolio needs at least one attack.")
        names = list(margins)
        stack = torch.stack([torch.as_tensor(margins[n], dtype=torch.float64).cpu() for n in names])
        if stack.dim() != 2:
            raise ValueError("Each attack's margins must be a (B,) tensor, all of the same length.")
        margin, arg = stack.min(0)
        found = torch.isfinite(margin)
        best = [names[a] if f else "-" for a, f in zip(arg.tolist(), found.tolist())]
        pert = None
        if searches is not None and all(n in searches for n in names):
            pert = torch.stack([searches[names[a]].perturbation[b] for b, a in enumerate(arg.tolist())])
        budgets = {n: (budgets or {}).get(n, "-") for n in names}
        return cls(margin.float(), found, best, {n: stack[i].float() for i, n in enumerate(names)},
                   budgets, searches, pert)

    def summary(self) -> "pd.DataFrame":
        """What each attack adds, one row per attack: its budget, how many inputs it broke, its
        median margin, on how many inputs it found the portfolio's margin (``best``), on how
        many it beat every other attack (``lowered``: strictly below the smallest margin of the
        others; ``newly broken``: the others broke none of them), and the median of
        ``(smallest margin of the others) - (its margin)`` over the inputs it lowered and the
        others broke (NaN where there are none)."""
        import pandas as pd

        names = list(self.margins)
        rows = {}
        for n in names:
            m = self.margins[n].double()
            others = [self.margins[o].double() for o in names if o != n]
            rest = torch.stack(others).min(0).values if others else torch.full_like(m, float("inf"))
            lowered = m < rest
            finite = lowered & torch.isfinite(rest)
            drop = (rest - m)[finite]
            rows[n] = {
                "budget": self.budgets.get(n, "-"),
                "broken": int(torch.isfinite(m).sum()),
                "median margin": m.median().item(),
                "best": sum(b == n for b in self.best_attack),
                "lowered": int(lowered.sum()),
                "newly broken": int((lowered & ~torch.isfinite(rest)).sum()),
                "median drop": drop.median().item() if len(drop) else float("nan"),
            }
        return pd.DataFrame.from_dict(rows, orient="index")


@memoize
def portfolio_margin(
    vae: nn.Module,
    x: torch.Tensor,
    r: float,
    radii,
    attacks: dict[str, Attack],
    budgets: dict[str, str] | None = None,
    n_samples: int = 200,
    reference: torch.Tensor | None = None,
    decoder_noise: bool = False,
    generator: torch.Generator | None = None,
    options: dict[str, dict] | None = None,
    **empirical_margin_kwargs,
) -> PortfolioMargin:
    """The empirical r-robustness margin of each input over a portfolio of attack directions.

    Runs :func:`empirical_margin` once per attack of ``attacks`` (name -> :data:`Attack`), all
    sharing the same ``n_samples`` reference reconstructions of ``x`` (drawn once here unless
    ``reference`` is given), and keeps per input the smallest margin found (Camuto et al.,
    AISTATS 2021, estimate the margin with one maximum-damage attack; a portfolio can only
    lower it, as in Croce & Hein, ICML 2020). ``options[name]`` overrides keyword arguments
    of :func:`empirical_margin` for one attack (e.g. ``{"max-damage": {"stop_when_broken":
    False}}``, or ``{"L-BFGS-B": {"radii": radii[::2]}}`` for a coarser grid where an attack is
    expensive); the other keywords go to every search. ``budgets[name]`` states an attack's
    budget in words ("20 steps, 1 restart") for the tables.

    Example
    -------
    >>> port = portfolio_margin(vae, x, 4.0, radii, {"max-damage": max_damage_attack(),
    ...                         "L-BFGS-B": lbfgs_damage_attack()})        # doctest: +SKIP
    >>> port.margin, port.best_attack, port.summary()                    # doctest: +SKIP
    """
    if not attacks:
        raise ValueError("attacks must name at least one attack, e.g. {'max-damage': max_damage_attack()}.")
    unknown = set(options or {}) - set(attacks)
    if unknown:
        raise ValueError(f"options names attacks not in the portfolio: {sorted(unknown)}.")
    n = _check_n(n_samples)
    x = x.detach()
    if reference is None:
        reference = stochastic_reconstructions(vae, x, n, decoder_noise, generator=generator)
    searches = {}
    for name, attack in attacks.items():
        kw = {**empirical_margin_kwargs, **(options or {}).get(name, {})}
        grid = kw.pop("radii", radii)
        searches[name] = empirical_margin(vae, x, r, grid, attack, n_samples=n, reference=reference,
                                          decoder_noise=decoder_noise, generator=generator, **kw)
    return PortfolioMargin.from_margins({k: s.margin for k, s in searches.items()}, budgets, searches)


@memoize
def empirical_latent_margin(
    vae: nn.Module,
    x: torch.Tensor,
    r: float,
    radii,
    adversarial: bool = True,
    steps: int = 20,
    n_samples: int = 200,
    refine_steps: int = 4,
    reference: torch.Tensor | None = None,
    confidence: float = 0.95,
    method: str = "wilson",
    generator: torch.Generator | None = None,
    stop_when_broken: bool = True,
) -> MarginSearch:
    """Empirical margin in the latent space, in units of the encoder standard deviation.

    The perturbation is a shift of the encoder mean by ``sigma(x) * h`` with the encoder
    variance unchanged, exactly the situation of the paper's latent-space argument; margins are
    ``||h||_2``. Directions: ``adversarial=True`` maximises the damage to the mean
    reconstruction, ``||g(mu + sigma * h) - g(mu)||_2`` over ``||h|| = R`` (projected gradient
    ascent on the sphere through :func:`robustvae.attacks.ascend`, ``steps`` steps from a random
    direction, keeping the iterate of largest damage); ``False`` draws random directions (a
    control).
    """
    r = _check_r(r)
    n = _check_n(n_samples)
    x = x.detach()
    if reference is None:
        reference = stochastic_reconstructions(vae, x, n, generator=generator)
    with torch.no_grad():
        mu_all, log_var = vae.encode(x)
        std_all = (0.5 * log_var).exp()
        g0_all = vae.mean_image(vae.decode(mu_all))

    def propose(R, idx):
        i = idx.to(x.device)
        mu, std, g0 = mu_all[i], std_all[i], g0_all[i]
        h = _randn(mu.shape, generator, mu.device)
        h = R * h / h.norm(dim=1, keepdim=True)
        if not adversarial:
            return h

        def damage(v: torch.Tensor) -> torch.Tensor:
            return (vae.mean_image(vae.decode(mu + std * v)) - g0).flatten(1).pow(2).sum(1)

        def sphere(v: torch.Tensor) -> torch.Tensor:     # onto ||h|| = R
            return R * v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)

        return attacks.ascend(damage, lambda k: h, sphere, steps=steps, alpha=2.5 * R / steps,
                              step_rule="l2").x

    def evaluate(h, idx):
        i = idx.to(x.device)
        d = reconstruction_distances(vae, x[i], x[i], n, reference[:, i], whitened_shift=h, generator=generator)
        return probability_from_distances(d, r, confidence, method), d

    return _margin_search(propose, evaluate, radii, refine_steps, len(x), stop_when_broken)


# --- theory -------------------------------------------------------------------------------------
def encoder_jacobian(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``J_mu(x) = d mu / d x`` per input: shape ``(B, latent_dim, D)`` with ``D`` the pixels."""
    x = x.detach()

    def mu_one(xi):
        return vae.encode(xi.unsqueeze(0))[0][0]

    return torch.func.vmap(torch.func.jacrev(mu_one))(x).flatten(2)


def decoder_jacobian(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Jacobian of the decoder mean ``g(z)`` per latent point: shape ``(B, D, latent_dim)``."""
    z = z.detach()

    def g_one(zi):
        return vae.mean_image(vae.decode(zi.unsqueeze(0)))[0].flatten()

    return torch.func.vmap(torch.func.jacfwd(g_one))(z)


@memoize
def theoretical_margins(vae: nn.Module, x: torch.Tensor, p0: torch.Tensor,
                        n_samples: int | None = None) -> dict[str, torch.Tensor]:
    """The margins of Camuto et al. (AISTATS 2021) for each input, from the model itself.

    ``p0[b] = P(||Delta(x_b)||_2 <= r)`` is the probability at ``delta = 0`` (two independent
    reconstructions of the same input within ``r``). If ``n_samples`` is given, ``p0`` is a
    Monte-Carlo estimate from that many pairs and is clipped to ``1 - 1/(2 n)`` so that
    ``Phi^{-1}`` stays finite. All margins are 0 where ``p0 <= 1/2``.

    Returns a dict of ``(B,)`` tensors:

    * ``"latent"``: ``Phi^{-1}(p0)``, the whitened latent margin. Any shift ``m`` of the encoder
      mean with ``||m / sigma(x)||_2 < Phi^{-1}(p0)`` and the encoder variance unchanged keeps
      r-robustness. Under that assumption this is a strict bound (Gaussian shift inequality:
      ``P_m >= Phi(Phi^{-1}(p0) - ||m / sigma||)``).
    * ``"paper"``: ``sigma_min(x) Phi^{-1}(p0) / ||J_mu(x)||_F``, the paper's input-space margin,
      from ``mu(x + delta) = mu(x) + J_mu(x) delta + O(||delta||^2)``: a first-order
      approximation (it also ignores the change of ``sigma``), not a strict bound.
    * ``"whitened"``: ``Phi^{-1}(p0) / ||diag(1/sigma(x)) J_mu(x)||_2``, the same first-order
      argument without the two relaxations ``sigma_min`` and Frobenius >= spectral norm (ours).
    * ``"phi_inv"``, ``"sigma_min"``, ``"jac_fro"``, ``"jac_whitened_spec"``, ``"p0"``: the parts.
    """
    p0 = torch.as_tensor(p0, dtype=torch.float64).cpu()
    if p0.shape != (len(x),):
        raise ValueError(f"p0 must have one probability per input, shape ({len(x)},), got {tuple(p0.shape)}.")
    if bool(((p0 < 0) | (p0 > 1)).any()):
        raise ValueError("p0 must hold probabilities in [0, 1].")
    if n_samples is not None:
        p0 = p0.clamp(max=1 - 0.5 / _check_n(n_samples))
    phi_inv = torch.special.ndtri(p0).clamp(min=0).float()
    with torch.no_grad():
        _, log_var = vae.encode(x)
    sigma = (0.5 * log_var).exp().cpu()
    jac = encoder_jacobian(vae, x).detach().cpu()
    jac_fro = jac.flatten(1).norm(dim=1)
    jac_w = torch.linalg.matrix_norm(jac / sigma.unsqueeze(-1), ord=2)
    sigma_min = sigma.min(dim=1).values
    return {
        "latent": phi_inv,
        "paper": sigma_min * phi_inv / jac_fro,
        "whitened": phi_inv / jac_w,
        "phi_inv": phi_inv,
        "sigma_min": sigma_min,
        "jac_fro": jac_fro,
        "jac_whitened_spec": jac_w,
        "p0": p0.float(),
    }


# --- a model with closed-form answers -----------------------------------------------------------
class LinearGaussianVAE(nn.Module):
    """A linear VAE where r-robustness is known in closed form (for tests and sanity checks).

    Encoder ``mu(x) = A x`` (``A``: ``(d, D)``) with a constant ``sigma(x) = s``; decoder mean
    ``g(z) = c z``. Then ``f(x + delta) - f(x) = c (A delta + s (eps - eps'))`` is Gaussian and
    ``||f(x + delta) - f(x)||^2 / (2 c^2 s^2)`` is non-central chi-square with ``d`` degrees of
    freedom and non-centrality ``lambda = ||A delta||^2 / (2 s^2)``. The worst direction is the
    top right-singular vector of ``A``, so the margin is ``s sqrt(2 lambda*) / ||A||_2`` with
    ``lambda*`` solving ``P(chi'^2_d(lambda*) <= r^2 / (2 c^2 s^2)) = 1/2``.

    Inputs are ``(B, *shape)`` with ``prod(shape) = D``; ``decode`` returns the mean directly.
    """

    likelihood = "identity"

    def __init__(self, A: torch.Tensor, s: float, c: float = 1.0, shape: tuple[int, ...] | None = None):
        super().__init__()
        if s <= 0 or c <= 0:
            raise ValueError("s and c must be positive.")
        self.register_buffer("A", torch.as_tensor(A, dtype=torch.float32))
        self.s, self.c = float(s), float(c)
        self.latent_dim = self.A.shape[0]
        self.shape = shape or (self.A.shape[1],)

    def encode(self, x):
        mu = x.flatten(1) @ self.A.T
        return mu, torch.full_like(mu, 2 * math.log(self.s))

    def decode(self, z):
        return self.c * z

    def mean_image(self, logits):
        return logits

    def reconstruct(self, x, sample: bool = True):
        mu, log_var = self.encode(x)
        z = mu + self.s * torch.randn_like(mu) if sample else mu
        return self.mean_image(self.decode(z))

    def probability(self, delta: torch.Tensor, r: float) -> torch.Tensor:
        """Exact ``P(||f(x + delta) - f(x)||_2 <= r)`` per input (does not depend on ``x``)."""
        lam = ((delta.flatten(1) @ self.A.T).pow(2).sum(1) / (2 * self.s ** 2)).double().cpu().numpy()
        q = r ** 2 / (2 * self.c ** 2 * self.s ** 2)
        return torch.as_tensor(stats.ncx2.cdf(q, self.latent_dim, np.maximum(lam, 1e-12)), dtype=torch.float32)

    def p0(self, r: float) -> float:
        """Exact ``P(||Delta(x)||_2 <= r)``."""
        return float(stats.chi2.cdf(r ** 2 / (2 * self.c ** 2 * self.s ** 2), self.latent_dim))

    def whitened_margin(self, r: float) -> float:
        """The exact latent margin ``||A delta|| / s`` at which the probability falls to 1/2."""
        q = r ** 2 / (2 * self.c ** 2 * self.s ** 2)
        if stats.chi2.cdf(q, self.latent_dim) <= 0.5:
            return 0.0
        lam = optimize.brentq(lambda l: stats.ncx2.cdf(q, self.latent_dim, l) - 0.5, 1e-12, 1e6)
        return math.sqrt(2 * lam)

    def margin(self, r: float) -> float:
        """The exact input-space margin ``R^r(x)`` (ignoring the box [0, 1])."""
        return self.s * self.whitened_margin(r) / float(torch.linalg.matrix_norm(self.A, ord=2))

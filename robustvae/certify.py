"""Certified robustness margins of VAEs, and the checks that try to break them (chapter 7).

Barrett, Camuto, Willetts & Rainforth (*Certifiably Robust Variational Autoencoders*, AISTATS
2022) bound the smallest input perturbation that can change a VAE's reconstruction by more than
``r``. Notation (all norms L2):

* ``q(z|x) = N(mu(x), diag sigma(x)^2)``, ``g(z) = E[x | z]`` the decoder's mean image;
* ``a``, ``b``, ``c``: Lipschitz constants of ``g``, ``mu`` and ``sigma``; ``s = ||sigma(x)||_2``;
* the reconstruction change under ``delta`` is ``Delta = g(z') - g(z)`` with ``z ~ q(.|x)`` and
  ``z' ~ q(.|x + delta)`` drawn independently (the stochastic reconstructions of the VAE).

**The certificate.** ``||Delta|| <= a ||z' - z||`` and ``z' - z`` is Gaussian, so

    E||z' - z||^2 = ||mu(x + delta) - mu(x)||^2 + ||sigma(x + delta)||^2 + ||sigma(x)||^2
                  <= b^2 R^2 + (s + c R)^2 + s^2                              for ||delta|| <= R,

and Markov's inequality gives ``P(||Delta|| > r) <= a^2 E||z' - z||^2 / r^2``. Hence the
reconstruction stays within ``r`` with probability at least ``prob`` whenever

    (b^2 + c^2) R^2 + beta c s R + alpha s^2 <= (1 - prob) r^2 / a^2,

with ``(alpha, beta) = (2, 2)`` from the display above (``variant="tight"``) and ``(4, 4)`` in the
paper (``variant="paper"``, which bounds ``||sigma(x+delta)||^2 + ||sigma(x)||^2`` by
``(||sigma(x+delta)|| + ||sigma(x)||)^2``). At ``prob = 1/2`` this is the paper's equation
``(b^2 + c^2) R^2 + 4 c s R + 4 s^2 = r^2 / (2 a^2)``: the model is r-robust (Camuto et al.,
AISTATS 2021: ``P(||Delta|| <= r) > P(||Delta|| > r)``) for every ``||delta|| < R``, ``R`` the
positive root. A root exists iff ``s < s_cap = r sqrt((1 - prob) / alpha) / a``
(``r / (sqrt(8) a)`` in the paper): capping ``||sigma(x)||`` below it certifies every input.

The module also gives the inverse (constants for a requested margin), the fixed-variance
variant with the exact noncentral chi-square law instead of Markov's inequality, and the
empirical side: Monte-Carlo change probabilities under attack, exact second moments, and
lower bounds on Lipschitz constants.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from . import attacks
from . import rrobust as rr
from .memo import memoize

__all__ = [
    "VARIANTS",
    "DESIGN_SLACK",
    "std_cap",
    "certified_margin",
    "markov_bound",
    "lipschitz_for_margin",
    "certified_margin_fixed_std",
    "noise_for_margin",
    "kl_floor",
    "certified_margins",
    "second_moment",
    "change_probability",
    "jacobian_norms",
    "lipschitz_lower_bound",
    "attack_margins",
    "portfolio_attack_margins",
]

#: ``(alpha, beta)`` of the margin inequality: the paper's and the one derived without its last
#: (loosening) step. Both are valid; ``"paper"`` gives smaller margins.
VARIANTS = {"paper": (4.0, 4.0), "tight": (2.0, 2.0)}

#: :func:`lipschitz_for_margin` designs for ``margin * (1 + DESIGN_SLACK)``, so that float
#: rounding in the exactly computed norms (about 1e-7 per layer) cannot push the certified
#: margin below the requested one.
DESIGN_SLACK = 1e-3


def _check_common(r: float, prob: float, variant: str) -> tuple[float, float]:
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}. Valid variants: {', '.join(VARIANTS)}.")
    if not r > 0:
        raise ValueError(f"r (the tolerated reconstruction change) must be > 0, got {r}.")
    if not 0 < prob < 1:
        raise ValueError(f"prob must lie in (0, 1), got {prob}.")
    return VARIANTS[variant]


def _check_lipschitz(**consts: float) -> None:
    for name, v in consts.items():
        if not (isinstance(v, (int, float, np.floating)) and v >= 0 and math.isfinite(v)):
            raise ValueError(f"Lipschitz constant {name} must be a finite number >= 0, got {v!r}.")


def std_cap(r: float, a: float, prob: float = 0.5, variant: str = "paper") -> float:
    """The largest ``s = ||sigma(x)||_2`` that still gives a positive margin:
    ``r * sqrt((1 - prob) / alpha) / a`` (``r / (sqrt(8) a)`` for the paper at ``prob = 1/2``)."""
    alpha, _ = _check_common(r, prob, variant)
    _check_lipschitz(a=a)
    if a == 0:
        return math.inf
    return r * math.sqrt((1.0 - prob) / alpha) / a


def certified_margin(s, r: float, a: float, b: float, c: float, prob: float = 0.5, variant: str = "paper"):
    """The certified margin ``R`` (Barrett et al., AISTATS 2022, Sec. 3): the positive root of

        ``(b^2 + c^2) R^2 + beta c s R + alpha s^2 = (1 - prob) r^2 / a^2``.

    For every ``||delta||_2 < R``, ``P(||g(z') - g(z)||_2 > r) < 1 - prob``. ``s`` is
    ``||sigma(x)||_2``: a float, a NumPy array or a tensor (the result has the same type). Where
    ``s >= std_cap(...)`` no positive root exists and the margin is 0. If ``a = 0`` or
    ``b = c = 0`` the margin is infinite.
    """
    alpha, beta = _check_common(r, prob, variant)
    _check_lipschitz(a=a, b=b, c=c)
    is_tensor = isinstance(s, torch.Tensor)
    s_arr = s.detach().cpu().double().numpy() if is_tensor else np.asarray(s, dtype=np.float64)
    if np.any(s_arr < 0):
        raise ValueError("s = ||sigma(x)||_2 must be >= 0.")
    with np.errstate(divide="ignore", invalid="ignore"):
        target = (1.0 - prob) * r**2 / a**2 if a > 0 else np.inf
        A = b**2 + c**2
        B = beta * c * s_arr
        C = alpha * s_arr**2 - target
        if A == 0:
            R = np.where(C < 0, np.inf, 0.0)
        else:
            R = (-B + np.sqrt(np.maximum(B**2 - 4 * A * C, 0.0))) / (2 * A)
            R = np.where(C < 0, R, 0.0)
    if is_tensor:
        return torch.from_numpy(R).to(s.device)
    return float(R) if np.ndim(R) == 0 else R


def markov_bound(R: float, s: float, r: float, a: float, b: float, c: float, variant: str = "paper") -> float:
    """The bound on ``P(||g(z') - g(z)|| > r)`` for ``||delta|| <= R`` that the margin inverts:
    ``min(1, a^2 [(b^2 + c^2) R^2 + beta c s R + alpha s^2] / r^2)``."""
    alpha, beta = _check_common(r, 0.5, variant)
    _check_lipschitz(a=a, b=b, c=c)
    second = (b**2 + c**2) * R**2 + beta * c * s * R + alpha * s**2
    return min(1.0, a**2 * second / r**2)


def lipschitz_for_margin(margin: float, r: float, a: float, prob: float = 0.5, std_fraction: float = 0.5,
                         std_ratio: float = 0.25, variant: str = "paper",
                         slack: float = DESIGN_SLACK) -> dict[str, float]:
    """Robustness up front (Barrett et al., AISTATS 2022, Sec. 4): constants that certify ``margin``.

    Given the decoder's constant ``a`` (chosen for reconstruction quality), cap the encoder
    standard deviation at ``s_max = std_fraction * std_cap(r, a, prob)``, set ``c = std_ratio * b``
    and solve the margin equation at ``s = s_max`` and ``R = margin * (1 + slack)`` for ``b``:

        ``(1 + k^2) R^2 b^2 + beta k s_max R b + alpha s_max^2 - (1 - prob) r^2 / a^2 = 0``,  k = std_ratio.

    Since the margin decreases in ``s`` and every input has ``||sigma(x)|| <= s_max``, a model
    whose constants are at most these is certified to at least ``margin`` at every input.
    Returns ``{"a", "b", "c", "s_max"}``.
    """
    alpha, beta = _check_common(r, prob, variant)
    for name, v in (("margin", margin), ("a", a)):
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v}.")
    if not 0 < std_fraction < 1:
        raise ValueError(f"std_fraction must lie in (0, 1), got {std_fraction}.")
    if not std_ratio >= 0:
        raise ValueError(f"std_ratio must be >= 0, got {std_ratio}.")
    if not slack >= 0:
        raise ValueError(f"slack must be >= 0, got {slack}.")
    s_max = std_fraction * std_cap(r, a, prob, variant)
    R = margin * (1.0 + slack)
    target = (1.0 - prob) * r**2 / a**2
    A = (1.0 + std_ratio**2) * R**2
    B = beta * std_ratio * s_max * R
    C = alpha * s_max**2 - target  # < 0 because std_fraction < 1
    b = (-B + math.sqrt(B**2 - 4 * A * C)) / (2 * A)
    return {"a": float(a), "b": b, "c": std_ratio * b, "s_max": s_max}


def certified_margin_fixed_std(gamma: float, latent_dim: int, r: float, a: float, b: float,
                               prob: float = 0.5) -> float:
    """The margin of a VAE with a fixed, isotropic encoder standard deviation ``gamma`` (c = 0).

    Then ``z' - z ~ N(m, 2 gamma^2 I)`` with ``||m|| <= b R``, so ``||z' - z||^2 / (2 gamma^2)``
    follows a noncentral chi-square law with ``latent_dim`` degrees of freedom and
    noncentrality ``||m||^2 / (2 gamma^2)``; its tail grows with the noncentrality. The margin
    is the largest ``R`` with ``P(chi2'(d, b^2 R^2 / (2 gamma^2)) > r^2 / (2 a^2 gamma^2)) <= 1 - prob``,
    the exact law replacing Markov's inequality (the fixed-variance case of Barrett et al. 2022).
    Returns 0 if even ``delta = 0`` fails.
    """
    from scipy.optimize import brentq
    from scipy.stats import ncx2, chi2

    _check_common(r, prob, "paper")
    _check_lipschitz(a=a, b=b)
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}.")
    if not (isinstance(latent_dim, int) and latent_dim > 0):
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}.")
    if a == 0 or b == 0:
        return math.inf
    t = r**2 / (2 * a**2 * gamma**2)
    if chi2.sf(t, latent_dim) > 1 - prob:
        return 0.0

    def excess(lam: float) -> float:
        return ncx2.sf(t, latent_dim, lam) - (1 - prob)

    hi = 1.0
    while excess(hi) <= 0:
        hi *= 2.0
    lam = brentq(excess, 0.0, hi, xtol=1e-12, rtol=1e-12)
    return gamma * math.sqrt(2 * lam) / b


def noise_for_margin(margin: float, latent_dim: int, r: float, a: float, b: float, prob: float = 0.5,
                     law: str = "chi2", variant: str = "paper") -> float:
    """The largest fixed, isotropic encoder standard deviation ``gamma`` (``c = 0``) at which a VAE
    with constants ``a`` and ``b`` is still certified to ``margin``: the certificate read backwards.

    ``law="markov"``: Barrett et al.'s quadratic (:func:`certified_margin`, ``variant``) with
    ``c = 0`` and ``s = gamma sqrt(latent_dim)``, solved in closed form,
    ``gamma^2 = ((1 - prob) r^2 / a^2 - b^2 margin^2) / (alpha latent_dim)``.
    ``law="chi2"``: the exact noncentral chi-square law (:func:`certified_margin_fixed_std`),
    inverted numerically; it allows at least the noise of either Markov variant, since Markov's
    inequality only loosens the same probability. Returns 0 when no noise level certifies
    ``margin`` (``b margin`` too large).
    """
    from scipy.optimize import brentq

    if law not in ("markov", "chi2"):
        raise ValueError(f"Unknown law {law!r}: 'markov' or 'chi2'.")
    alpha, _ = _check_common(r, prob, variant)
    _check_lipschitz(a=a, b=b)
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}.")
    if not (isinstance(latent_dim, int) and latent_dim > 0):
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}.")
    if a == 0 or b == 0:
        return math.inf

    def markov(alpha_: float) -> float:
        return math.sqrt(max((1.0 - prob) * r**2 / a**2 - b**2 * margin**2, 0.0) / (alpha_ * latent_dim))

    if law == "markov":
        return markov(alpha)
    lo = markov(VARIANTS["tight"][0])  # the loosest Markov bound's noise: the exact law allows more
    if lo == 0.0:
        return 0.0

    def excess(gamma: float) -> float:
        return certified_margin_fixed_std(gamma, latent_dim, r, a, b, prob) - margin

    hi = 2.0 * lo
    while excess(hi) > 0:
        hi *= 2.0
    return brentq(excess, lo, hi, xtol=1e-12, rtol=1e-10)


def kl_floor(gamma: float, latent_dim: int) -> float:
    """The smallest ``KL(q(z|x) || N(0, I))`` of a diagonal Gaussian posterior whose standard
    deviations are at most ``gamma`` in each of ``latent_dim`` dimensions:
    ``latent_dim / 2 (gamma^2 - 1 - log gamma^2)`` for ``gamma < 1`` (mean 0, every standard
    deviation at the cap), 0 for ``gamma >= 1``. It is the part of the ELBO's KL term that a cap
    on the encoder noise forces, whatever the data."""
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}.")
    if gamma >= 1:
        return 0.0
    return 0.5 * latent_dim * (gamma**2 - 1.0 - 2.0 * math.log(gamma))


# --- applied to a model ------------------------------------------------------------------
def _std(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, log_var = vae.encode(x)
    return mu, (0.5 * log_var).exp()


@torch.no_grad()
def certified_margins(vae, x: torch.Tensor, r: float, prob: float = 0.5, variant: str = "paper",
                      constants: dict[str, float] | None = None) -> torch.Tensor:
    """Per-input certified margins ``R(x)``, ``(B,)``, of a :class:`~robustvae.lipschitz.LipschitzVAE`.

    Uses ``s = ||sigma(x)||_2`` at each input and the constants of
    ``vae.lipschitz_constants()`` (exact spectral norms), unless ``constants`` are given.
    """
    consts = vae.lipschitz_constants() if constants is None else constants
    device = next(vae.parameters()).device
    _, std = _std(vae, x.to(device))
    s = std.flatten(1).norm(dim=1).cpu()
    return certified_margin(s, r, consts["a"], consts["b"], consts["c"], prob, variant)


@torch.no_grad()
def second_moment(vae, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """``E||z' - z||^2 = ||mu' - mu||^2 + ||sigma'||^2 + ||sigma||^2`` exactly, per input ``(B,)``:
    the quantity the certificate bounds before applying Markov's inequality."""
    mu, std = _std(vae, x)
    mu_a, std_a = _std(vae, x_adv)
    return ((mu_a - mu).pow(2).sum(1) + std_a.pow(2).sum(1) + std.pow(2).sum(1))


@torch.no_grad()
def change_probability(vae, x: torch.Tensor, x_adv: torch.Tensor, r: float, n_samples: int = 100,
                       generator: torch.Generator | None = None, chunk: int = 50) -> torch.Tensor:
    """Monte-Carlo estimate of ``P(||g(z') - g(z)||_2 > r)`` per input, ``(B,)``.

    ``z ~ q(.|x)`` and ``z' ~ q(.|x_adv)`` independently, ``g`` the decoder's mean image: the
    event the certificate bounds. Noise comes from ``generator`` (CPU) for reproducibility.
    """
    if not r > 0 or n_samples < 1:
        raise ValueError("r must be > 0 and n_samples >= 1.")
    mu, std = _std(vae, x)
    mu_a, std_a = _std(vae, x_adv)
    count = torch.zeros(len(x), device=x.device)
    done = 0
    while done < n_samples:
        m = min(chunk, n_samples - done)
        eps = torch.randn((2, m) + mu.shape, generator=generator).to(mu.device, mu.dtype)
        z = (mu + std * eps[0]).flatten(0, 1)
        z_a = (mu_a + std_a * eps[1]).flatten(0, 1)
        diff = vae.mean_image(vae.decode(z_a)) - vae.mean_image(vae.decode(z))
        count += (diff.flatten(1).norm(dim=1) > r).view(m, -1).float().sum(0)
        done += m
    return count / n_samples


def jacobian_norms(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The spectral norm of the Jacobian of ``fn`` at each row of ``x`` and its top right-singular vector.

    ``fn`` maps ``(B, n)`` to ``(B, m)`` row by row (no coupling between rows, eval mode).
    Returns ``(norms (B,), directions (B, n))``. Computed with :mod:`torch.func`.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be (B, n), got shape {tuple(x.shape)}.")

    def single(xi: torch.Tensor) -> torch.Tensor:
        return fn(xi.unsqueeze(0)).squeeze(0)

    n_out = fn(x[:1]).shape[-1]
    jac = torch.func.jacrev(single) if n_out <= x.shape[1] else torch.func.jacfwd(single)
    J = torch.func.vmap(jac)(x.detach())                      # (B, m, n)
    _, S, Vh = torch.linalg.svd(J, full_matrices=False)
    return S[:, 0].detach(), Vh[:, 0, :].detach()


@torch.no_grad()
def lipschitz_lower_bound(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                          h: float = 1e-3) -> torch.Tensor:
    """Difference quotients ``||fn(x + h v) - fn(x - h v)|| / (2h)`` along the Jacobian's top
    singular direction ``v`` at each row of ``x``, ``(B,)``.

    Every value is a lower bound on the Lipschitz constant of ``fn`` (it is a ratio of output to
    input distance), so their maximum is too; run ``fn`` in float64 to keep rounding out of it.
    """
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h}.")
    with torch.enable_grad():
        _, v = jacobian_norms(fn, x)
    return (fn(x + h * v) - fn(x - h * v)).flatten(1).norm(dim=1) / (2 * h)


def attack_margins(vae, x: torch.Tensor, r: float, eps_grid, prob: float = 0.5, n_samples: int = 100,
                   steps: int = 50, restarts: int = 1, generator: torch.Generator | None = None,
                   attack: "rr.Attack | None" = None) -> dict:
    """Empirical margins: attack ``x`` at each radius of ``eps_grid`` (ascending, L2) with the
    maximum-damage attack (:func:`robustvae.attacks.max_damage`, ``steps`` steps and
    ``restarts`` restarts), or with ``attack`` (an :data:`robustvae.rrobust.Attack` such as
    :func:`robustvae.rrobust.lbfgs_damage_attack`; ``steps`` and ``restarts`` are then unused),
    and record

    * ``damage`` ``(E, B)``: ``||g(mu(x_adv)) - g(mu(x))||`` (the deterministic reconstruction);
    * ``fail_prob`` ``(E, B)``: Monte-Carlo ``P(||g(z') - g(z)|| > r)`` at ``x_adv`` (:func:`change_probability`);
    * ``margin`` ``(B,)``: the smallest radius at which ``fail_prob >= 1 - prob``, i.e. the
      attack broke r-robustness (``inf`` if it never did);
    * ``margin_det`` ``(B,)``: the smallest radius at which ``damage > r``;
    * ``x_adv`` ``(E, B, ...)``: the attacks.

    The empirical margins are upper bounds on the true margins (a stronger attack could only
    lower them), up to the grid spacing.
    """
    eps_grid = [float(e) for e in eps_grid]
    if not eps_grid or any(e <= 0 for e in eps_grid) or eps_grid != sorted(eps_grid):
        raise ValueError("eps_grid must be a non-empty ascending list of positive radii.")
    device = next(vae.parameters()).device
    x = x.to(device)
    damage, fail, advs = [], [], []
    for eps in eps_grid:
        if attack is None:
            x_adv = attacks.max_damage(vae, x, eps, norm="l2", steps=steps, restarts=restarts, generator=generator)
        else:
            x_adv = attack(vae, x, eps, torch.arange(len(x))).detach()
        with torch.no_grad():
            damage.append(attacks.reconstruction_distance(vae, x, x_adv).cpu())
        fail.append(change_probability(vae, x, x_adv, r, n_samples, generator).cpu())
        advs.append(x_adv.cpu())
    damage_t, fail_t = torch.stack(damage), torch.stack(fail)
    grid = torch.tensor(eps_grid + [math.inf], dtype=torch.float64)

    def first(broken: torch.Tensor) -> torch.Tensor:
        broken = torch.cat([broken, torch.ones(1, broken.shape[1], dtype=torch.bool)])
        return grid[broken.float().argmax(0)]

    return {"eps": eps_grid, "damage": damage_t, "fail_prob": fail_t,
            "margin": first(fail_t >= 1 - prob), "margin_det": first(damage_t > r), "x_adv": torch.stack(advs)}


@memoize
def portfolio_attack_margins(vae, x: torch.Tensor, r: float, eps_grid, attacks_: "dict[str, rr.Attack | None]",
                             prob: float = 0.5, n_samples: int = 100, steps: int = 50,
                             generator: torch.Generator | None = None, budgets: dict[str, str] | None = None,
                             grids: dict[str, list] | None = None) -> tuple["rr.PortfolioMargin", dict]:
    """:func:`attack_margins` for each attack of a portfolio (name -> attack; ``None`` is the
    projected maximum-damage attack with ``steps`` steps), and per input the smallest margin
    found (:class:`robustvae.rrobust.PortfolioMargin`: the margin, the attack that found it,
    and :meth:`~robustvae.rrobust.PortfolioMargin.summary`). ``grids[name]`` replaces
    ``eps_grid`` for one attack (a coarser grid for an expensive attack). Returns
    ``(portfolio, searches)`` with ``searches[name]`` the dict of :func:`attack_margins`.
    """
    if not attacks_:
        raise ValueError("attacks_ must name at least one attack, e.g. {'max-damage': None}.")
    searches = {name: attack_margins(vae, x, r, (grids or {}).get(name, eps_grid), prob, n_samples, steps,
                                     generator=generator, attack=a)
                for name, a in attacks_.items()}
    port = rr.PortfolioMargin.from_margins({n: s["margin"] for n, s in searches.items()}, budgets)
    return port, searches

"""Reconstruction consistency as an adversarial-example detector, and latent statistics.

The seed study's experiment A: pass an input through the VAE ``n_samples`` times (each time a
fresh ``z ~ q(z|x)`` and its mean reconstruction ``E[x | z]``), label every reconstruction
with the classifier, and count how many different labels come out. The hope is that a clean
digit sits well inside its class in latent space, so every sample decodes to the same digit,
while an adversarial input, which the classifier sees as another class but the encoder
does not, lands between classes and its reconstructions disagree.

Two detection scores come out of the labels (higher means "more likely adversarial"):

* ``n_distinct``: the number of distinct labels among the ``n_samples`` reconstructions;
* ``1 - agreement``: one minus the fraction of reconstructions whose label equals the
  classifier's label for the input itself.

:func:`latent_stats` gives the per-input quantities the chapter compares between clean and
adversarial inputs: KL to the prior, ``||mu||``, the encoder's variance, and reconstruction
error.

**Attackers who know the detector.** Carlini & Wagner (*Adversarial examples are not easily
detected: bypassing ten detection methods*, AISec 2017) showed that a detector only counts if it
survives an attacker who optimises against it. :func:`consistency_attack` attacks classifier and
consistency detector together (L-inf PGD through :func:`robustvae.attacks.ascend`, with EOT over
the VAE's sampling); :func:`kl_attack` attacks the classifier while keeping the KL to the prior
where the clean input had it. :func:`detector_scores` scores inputs with every detector of the
chapter, and :func:`auroc_bootstrap` gives paired bootstrap intervals for their AUROCs.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import attacks
from .models import gaussian_kl
from .stats import bootstrap_draws
from .memo import memoize

__all__ = [
    "reconstruction_labels",
    "n_distinct",
    "agreement",
    "consistency_summary",
    "detection_auroc",
    "latent_stats",
    "nearest_centroid",
    "detector_scores",
    "auroc_bootstrap",
    "consistency_attack",
    "kl_attack",
]


@torch.no_grad()
@memoize
def reconstruction_labels(vae: nn.Module, classifier: nn.Module, x: torch.Tensor, n_samples: int = 10,
                          batch_size: int = 500) -> torch.Tensor:
    """Classifier labels of ``n_samples`` stochastic reconstructions of each input.

    For each input ``x_i`` and each ``s``, ``z_is ~ q(z | x_i)`` (reparameterised) and the label
    is ``argmax classifier(E[x | z_is])``. Returns an int64 tensor ``(N, n_samples)`` on the CPU.
    Both models run in eval mode on the device of their parameters; draws come from torch's
    global generator (seed it for reproducible labels).
    """
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}.")
    dev = next(vae.parameters()).device
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(dev)
        mu, log_var = vae.encode(xb)
        std = (0.5 * log_var).exp()
        z = mu.unsqueeze(1) + std.unsqueeze(1) * torch.randn(len(xb), n_samples, mu.shape[1], device=dev)
        rec = vae.mean_image(vae.decode(z.flatten(0, 1)))                       # (B*S, 1, 28, 28)
        labels = classifier(rec.to(next(classifier.parameters()).device)).argmax(1)
        out.append(labels.view(len(xb), n_samples).cpu())
    return torch.cat(out)


def n_distinct(labels: torch.Tensor) -> torch.Tensor:
    """Number of distinct labels in each row of ``labels`` ``(N, S)``: an int64 tensor ``(N,)``."""
    if labels.dim() != 2:
        raise ValueError(f"labels must have shape (N, n_samples), got {tuple(labels.shape)}.")
    s, _ = labels.sort(dim=1)
    return 1 + (s[:, 1:] != s[:, :-1]).sum(dim=1)


def agreement(labels: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Fraction of each row of ``labels`` ``(N, S)`` equal to ``reference`` ``(N,)``: a float tensor ``(N,)``."""
    if labels.dim() != 2 or reference.shape != (labels.shape[0],):
        raise ValueError(f"labels must be (N, S) and reference (N,), got {tuple(labels.shape)} "
                         f"and {tuple(reference.shape)}.")
    return (labels == reference.view(-1, 1)).float().mean(dim=1)


def consistency_summary(labels: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Share of inputs with a single label, mean number of distinct labels, mean agreement.

    ``reference`` is the classifier's label for the inputs themselves.
    """
    nd = n_distinct(labels).float()
    return {
        "single_label": (nd == 1).float().mean().item(),
        "mean_distinct": nd.mean().item(),
        "agreement": agreement(labels, reference).mean().item(),
    }


def detection_auroc(score_clean: torch.Tensor | np.ndarray, score_adv: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve of a detector that flags high scores as adversarial.

    The probability that a random adversarial input scores higher than a random clean one,
    ties counted one half (the Mann-Whitney statistic); 0.5 is chance, 1.0 perfect.
    """
    from sklearn.metrics import roc_auc_score

    a = np.asarray(score_clean, dtype=float).ravel()
    b = np.asarray(score_adv, dtype=float).ravel()
    if len(a) == 0 or len(b) == 0:
        raise ValueError("detection_auroc needs at least one clean and one adversarial score.")
    return float(roc_auc_score(np.r_[np.zeros(len(a)), np.ones(len(b))], np.r_[a, b]))


@torch.no_grad()
def latent_stats(vae: nn.Module, x: torch.Tensor, batch_size: int = 500) -> dict[str, np.ndarray]:
    """Per-input latent statistics of ``x``, each a NumPy array ``(N,)``.

    * ``kl``: ``KL(q(z|x) || p(z))`` in nats (Kingma & Welling 2014, App. B);
    * ``mu_norm``: ``||mu(x)||_2``;
    * ``enc_var``: the encoder's mean variance ``mean_j sigma_j(x)^2``;
    * ``rec_mse``: pixel MSE between ``x`` and its mean reconstruction ``E[x | z = mu(x)]``.
    """
    dev = next(vae.parameters()).device
    cols: dict[str, list] = {"kl": [], "mu_norm": [], "enc_var": [], "rec_mse": []}
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(dev)
        mu, log_var = vae.encode(xb)
        rec = vae.mean_image(vae.decode(mu))
        cols["kl"].append(gaussian_kl(mu, log_var))
        cols["mu_norm"].append(mu.norm(dim=1))
        cols["enc_var"].append(log_var.exp().mean(dim=1))
        cols["rec_mse"].append((rec - xb).pow(2).flatten(1).mean(dim=1))
    return {k: torch.cat(v).cpu().numpy() for k, v in cols.items()}


def nearest_centroid(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (Euclidean) for each row of ``points`` ``(N, d)``; centroids ``(K, d)``."""
    points, centroids = np.asarray(points), np.asarray(centroids)
    if points.ndim != 2 or centroids.ndim != 2 or points.shape[1] != centroids.shape[1]:
        raise ValueError(f"points (N, d) and centroids (K, d) must share d, got {points.shape} and {centroids.shape}.")
    d2 = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    return d2.argmin(1)


# --- detectors and attackers who know them --------------------------------------------------
@torch.no_grad()
def detector_scores(vae: nn.Module, classifier: nn.Module, x: torch.Tensor, n_samples: int = 10,
                    batch_size: int = 500) -> dict[str, np.ndarray]:
    """The chapter's detection scores of each input (higher means "more likely adversarial").

    * ``"1 - agreement"``: one minus the share of ``n_samples`` stochastic reconstructions whose
      label equals the classifier's label of the input (:func:`reconstruction_labels`);
    * ``"distinct labels"``: the number of distinct labels among them (:func:`n_distinct`);
    * ``"low KL"``: minus ``KL(q(z|x) || p(z))`` (adversarial inputs encode closer to the prior);

    and ``"label"``, the classifier's label of the input. Each a NumPy array ``(N,)``; the
    reconstructions draw from torch's global generator.
    """
    dev = next(classifier.parameters()).device
    label = torch.cat([classifier(x[i: i + batch_size].to(dev)).argmax(1).cpu()
                       for i in range(0, len(x), batch_size)])
    labels = reconstruction_labels(vae, classifier, x, n_samples, batch_size)
    return {
        "1 - agreement": (1 - agreement(labels, label)).numpy(),
        "distinct labels": n_distinct(labels).numpy().astype(float),
        "low KL": -latent_stats(vae, x, batch_size)["kl"],
        "label": label.numpy(),
    }


def _auroc_ranks(neg: np.ndarray, pos: np.ndarray) -> float:
    """Mann-Whitney AUROC (ties one half) from average ranks; NaN when a set is empty."""
    from scipy.stats import rankdata

    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    r = rankdata(np.r_[neg, pos])[len(neg):]
    return float((r.sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def auroc_bootstrap(score_clean, scores_adv: Mapping[str, np.ndarray], keep: Mapping[str, np.ndarray],
                    n_boot: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Bootstrap replicates of detection AUROCs over images, paired across attacks.

    Image ``i`` has a clean score ``score_clean[i]`` and, for every attack ``a``, an adversarial
    score ``scores_adv[a][i]`` that counts only where ``keep[a][i]`` (the attack succeeded; a
    failed attack needs no detecting). Each replicate draws ``n`` image indices with replacement
    (:func:`robustvae.stats.bootstrap_draws` with ``seed``) and computes, for every attack, the AUROC
    (:func:`detection_auroc`) of the drawn clean scores against the drawn adversarial scores
    that are kept. Clean and adversarial versions of an image stay together, and all attacks
    share the draws, so the replicates of ``a - b`` give a *paired* interval for the difference
    of two AUROCs. A replicate in which an attack kept no image is NaN (use ``np.nanquantile``).

    Returns ``{attack: (n_boot,) array}``.
    """
    c = np.asarray(score_clean, dtype=float).ravel()
    n = len(c)
    if n == 0:
        raise ValueError("auroc_bootstrap needs at least one image.")
    if set(scores_adv) != set(keep):
        raise ValueError("scores_adv and keep must name the same attacks.")
    adv = {a: np.asarray(v, dtype=float).ravel() for a, v in scores_adv.items()}
    kp = {a: np.asarray(v, dtype=bool).ravel() for a, v in keep.items()}
    for a in adv:
        if len(adv[a]) != n or len(kp[a]) != n:
            raise ValueError(f"attack {a!r}: scores and keep must have one entry per image ({n}).")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}.")
    out = {a: np.empty(n_boot) for a in adv}
    for b, i in enumerate(bootstrap_draws(n, n_boot, seed)):
        for a in adv:
            j = i[kp[a][i]]
            out[a][b] = _auroc_ranks(c[i], adv[a][j])
    return out


def _runner_up(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The most likely class other than ``y``: the classifier's label once ``x'`` is misclassified."""
    masked = logits.detach().clone()
    masked[torch.arange(len(y), device=y.device), y] = -float("inf")
    return masked.argmax(1)


LOSSES = ("ce", "margin")


def _classifier_loss(logits: torch.Tensor, y: torch.Tensor, loss: str, kappa: float) -> torch.Tensor:
    """PGD's cross-entropy, or Carlini & Wagner's margin ``min(max_{k != y} z_k - z_y, kappa)``."""
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    other = logits.clone()
    other[torch.arange(len(y), device=y.device), y] = -float("inf")
    return (other.amax(1) - z_y).clamp(max=kappa)


def _check_loss(loss: str, kappa: float) -> None:
    if loss not in LOSSES:
        raise ValueError(f"Unknown loss {loss!r}. Valid: {', '.join(LOSSES)}.")
    if not kappa > 0:
        raise ValueError(f"kappa must be > 0, got {kappa}.")


def _pgd_through_ascend(objective, x: torch.Tensor, eps: float, steps: int, alpha: float | None,
                        restarts: int, random_start: bool, generator, schedule: str, callback,
                        return_result: bool):
    if steps < 0 or restarts < 1:
        raise ValueError(f"steps must be >= 0 and restarts >= 1, got {steps} and {restarts}.")
    alpha = 2.5 * eps / max(steps, 1) if alpha is None else alpha
    res = attacks.ascend(objective, attacks.ball_start(x, eps, "linf", generator, random=random_start),
                         lambda v: attacks.project(v, x, eps, "linf"), steps=steps, alpha=alpha,
                         step_rule="sign", schedule=schedule, restarts=restarts, callback=callback)
    return res if return_result else res.x


def consistency_attack(
    classifier: nn.Module,
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    lam: float = 1.0,
    steps: int = 40,
    alpha: float | None = None,
    eot: int = 8,
    loss: str = "ce",
    kappa: float = float("inf"),
    restarts: int = 1,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    schedule: str = "constant",
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    return_result: bool = False,
) -> torch.Tensor | attacks.Ascent:
    """Adaptive L-inf PGD against the classifier *and* the reconstruction-consistency detector.

    Carlini & Wagner (*Adversarial examples are not easily detected*, AISec 2017) break
    detectors by putting them into the attacker's loss. Here the detector labels ``S``
    stochastic reconstructions ``g(z_s)``, ``z_s ~ q(z | x')``, and flags ``x'`` when they do not
    carry the classifier's label of ``x'``. The attack maximises over the ball
    ``||x' - x||_inf <= eps`` (and the box [0, 1])

        ``J(x') = CE(f(x'), y) - lam * (1/S) sum_s CE(f(g(z_s)), c(x'))``,
        ``c(x') = argmax_{k != y} f(x')_k``,

    with reparameterised ``z_s = mu(x') + sigma(x') * e_s`` so the gradient flows through the
    encoder and the decoder, and ``S = eot`` fresh draws at every step: Expectation over
    Transformation over the VAE's sampling (Athalye, Carlini & Wagner, ICML 2018). The first
    term is PGD's loss (``lam = 0`` gives :func:`robustvae.attacks.pgd` exactly), or with
    ``loss="margin"`` Carlini & Wagner's margin ``min(max_{k != y} f(x')_k - f(x')_y, kappa)``
    (IEEE S&P 2017). The margin is the better partner for a penalty: the cross-entropy of a
    confidently classified image is flat (its gradient vanishes as the softmax saturates), so
    any penalty's gradient outweighs it and the sign step ignores the classifier; the margin's
    gradient does not vanish. The second
    pulls the reconstructions to the class the attacker is heading for. ``c(x')`` is the
    classifier's label of ``x'`` once ``x'`` is misclassified (``argmax f(x')``, as the detector
    uses it), and the runner-up class before: ``argmax f(x')`` itself would, until the boundary
    is crossed, reward reconstructions that keep the *true* label, against the attacker's
    goal. ``c`` is held fixed inside each gradient (it is an argmax).

    **Success** at an iterate: ``f(x') != y`` and most of the ``S`` reconstructions are labelled
    ``f(x')`` (then ``1 - agreement < 1/2`` and the detector sees a consistent input). Steps,
    restarts and the kept iterate (successes first, then the highest ``J``) are those of
    :func:`robustvae.attacks.ascend`; ``alpha`` defaults to ``2.5 * eps / steps``.

    Parameters
    ----------
    classifier, vae : the models (eval mode); ``vae`` needs ``encode``, ``decode`` and ``mean_image``.
    x, y : images ``(B, C, H, W)`` in [0, 1] and their true labels ``(B,)``.
    eps : L-inf radius. ``lam`` : weight of the detector term (>= 0).
    eot : reconstructions drawn per step (the noise comes from torch's global generator).
    loss, kappa : the classifier term, ``"ce"`` (PGD's) or ``"margin"`` capped at ``kappa``.
    generator : CPU generator for the random start.

    Returns the adversarial images (detached), or the :class:`~robustvae.attacks.Ascent` record.

    Example
    -------
    >>> x_adv = consistency_attack(classifier, vae, x, y, eps=0.3, lam=1.0, eot=8)  # doctest: +SKIP
    """
    if not eps >= 0 or not lam >= 0:
        raise ValueError(f"eps and lam must be >= 0, got {eps} and {lam}.")
    if not isinstance(eot, int) or eot < 1:
        raise ValueError(f"eot (reconstructions per step) must be a positive integer, got {eot!r}.")
    _check_loss(loss, kappa)
    x, y = x.detach(), y.detach()

    def objective(v: torch.Tensor):
        logits = classifier(v)
        attack_loss = _classifier_loss(logits, y, loss, kappa)
        c = _runner_up(logits, y)
        mu, log_var = vae.encode(v)
        e = torch.randn(len(v), eot, mu.shape[1], device=mu.device)
        z = mu.unsqueeze(1) + (0.5 * log_var).exp().unsqueeze(1) * e
        rec_logits = classifier(vae.mean_image(vae.decode(z.flatten(0, 1))))
        rec_ce = F.cross_entropy(rec_logits, c.repeat_interleave(eot), reduction="none").view(len(v), eot)
        agree = (rec_logits.argmax(1).view(len(v), eot) == c.unsqueeze(1)).float().mean(1)
        success = (logits.argmax(1) != y) & (agree > 0.5)
        return attack_loss - lam * rec_ce.mean(1), success

    return _pgd_through_ascend(objective, x, eps, steps, alpha, restarts, random_start, generator,
                               schedule, callback, return_result)


def kl_attack(
    classifier: nn.Module,
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    lam: float = 1.0,
    kl_tol: float = 1.0,
    steps: int = 40,
    alpha: float | None = None,
    loss: str = "ce",
    kappa: float = float("inf"),
    restarts: int = 1,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    schedule: str = "constant",
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    return_result: bool = False,
) -> torch.Tensor | attacks.Ascent:
    """Adaptive L-inf PGD against the classifier and a KL-to-prior detector.

    Inputs attacked without regard for the VAE encode with a smaller ``KL(q(z|x') || p(z))``
    than clean ones (chapter 3), so the KL is a detection signal. An attacker who knows it
    (Carlini & Wagner, AISec 2017) keeps each input's KL where its clean version had it:

        ``J(x') = CE(f(x'), y) - lam * |KL(q(z|x') || p(z)) - KL(q(z|x) || p(z))|``

    (closed-form KL, Kingma & Welling 2014, App. B; in nats). The penalty is two-sided, so
    neither a low-KL nor a high-KL detector gains from the attack. **Success**: ``f(x') != y``
    and the KL moved by at most ``kl_tol`` nats. ``lam = 0`` with ``loss="ce"`` gives PGD; with
    a penalty prefer ``loss="margin"`` (see :func:`consistency_attack`, whose other arguments
    these are; no sampling here, so no EOT).
    """
    if not eps >= 0 or not lam >= 0 or not kl_tol >= 0:
        raise ValueError(f"eps, lam and kl_tol must be >= 0, got {eps}, {lam} and {kl_tol}.")
    _check_loss(loss, kappa)
    x, y = x.detach(), y.detach()
    with torch.no_grad():
        kl_clean = gaussian_kl(*vae.encode(x))

    def objective(v: torch.Tensor):
        logits = classifier(v)
        gap = (gaussian_kl(*vae.encode(v)) - kl_clean).abs()
        return _classifier_loss(logits, y, loss, kappa) - lam * gap, (logits.argmax(1) != y) & (gap <= kl_tol)

    return _pgd_through_ascend(objective, x, eps, steps, alpha, restarts, random_start, generator,
                               schedule, callback, return_result)

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
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .models import gaussian_kl

__all__ = [
    "reconstruction_labels",
    "n_distinct",
    "agreement",
    "consistency_summary",
    "detection_auroc",
    "latent_stats",
    "nearest_centroid",
]


@torch.no_grad()
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

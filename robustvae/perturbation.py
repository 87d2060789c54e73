"""Learned perturbation sets: a conditional VAE whose latent ball defines the set (Wong & Kolter, ICLR 2021).

Wong & Kolter, *Learning perturbation sets for robust machine learning*, ICLR 2021
(arXiv 2007.08450; code: locuslab/perturbation_learning) learn a threat model from pairs
``(x, x~)`` of an input and a perturbed copy. A conditional VAE has

* a prior network ``p(z|x) = N(mu(x), diag sigma(x)^2)``,
* a posterior (recognition) network ``q(z|x, x~) = N(mu_q, diag sigma_q^2)``,
* a generator ``g(z, x)``,

trained on the ELBO ``E_q[log p(x~|z, x)] - KL(q(z|x, x~) || p(z|x))``. The learned
perturbation set of radius ``eps`` is

    ``S(x) = { g(mu(x) + sigma(x) * u, x) : ||u||_2 <= eps }``,

and ``eps`` is read off validation percentiles of ``||(mu_q - mu(x)) / sigma(x)||_2``, the
normalised distance between the posterior and prior means of observed pairs.

This module holds

* the true perturbations used to make pairs offline: rotation-translation-scaling
  (:func:`rts`, the paper's MNIST "RTS" set) and elastic deformation (:func:`elastic`,
  Simard, Steinkraus & Platt, ICDAR 2003), with their parameters kept;
* the CVAE (:class:`PerturbationCVAE`) and its cached training (:func:`get_cvae`);
* the set itself: :func:`latent_radius` (the normalised distance above), :func:`sample_set`,
  :func:`latent_pgd` (the latent-space PGD attack on a classifier) and
  :func:`approximation_error` (how close ``S(x)`` gets to an observed ``x~``);
* the classifiers of the robust-training experiment (:func:`get_robust_classifier`).

Two generators are available. ``"conv"`` (the default) is a convolutional decoder with ``x``
concatenated at every resolution, like the authors' MNIST convolutional CVAE
(``mnist_conv.py``). ``"warp"`` predicts a warp of ``x`` (an affine map plus a smooth
displacement field) and resamples ``x`` with ``grid_sample``, in the spirit of their
spatial-transformer model for RTS (``mnist_stn.py``); both of our perturbation families are
warps, but with a few CPU epochs this generator stays near the identity warp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import attacks, cache, data
from .models import Classifier, gaussian_kl
from .training import TrainConfig, accuracy, device_of, fit, make_config
from .utils import check_choice, check_positive, resolve_device
from .memo import memoize

__all__ = [
    "FAMILIES", "SET_FAMILIES", "GENERATORS", "METHODS", "rts", "sample_rts_params", "elastic", "perturb", "make_pairs", "split_train_val",
    "PerturbationCVAE", "CVAEConfig", "get_cvae", "cvae_kl", "latent_radius", "sample_set", "latent_pgd",
    "approximation_error", "rts_grid", "distance_to_family", "grid_worst_case", "RobustClassifierConfig",
    "get_robust_classifier",
]

#: The true perturbation families; a set is learned for one of them or for ``"both"`` (a mixture).
FAMILIES = ("rts", "elastic")
SET_FAMILIES = FAMILIES + ("both",)
#: Generators g(z, x): a convolutional decoder, or a warp (affine + smooth displacement field) of x.
GENERATORS = ("conv", "warp")
#: Training methods of the robust-training experiment.
METHODS = ("standard", "augment", "latent-adv")

# RTS ranges of the paper's MNIST set (rotation +-45 degrees, scale 0.7-1.3); translation is
# in pixels on our 28x28 canvas (the paper pads to 42x42 and translates up to 7 pixels).
MAX_ANGLE = 45.0
SCALES = (0.7, 1.3)
MAX_SHIFT = 3.0
# elastic deformation: root-mean-square displacement (pixels) and smoothness of the field
ELASTIC_RMS = (1.0, 2.5)
ELASTIC_SIGMA = 4.0


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"Expected images of shape (B, 1, H, W), got {tuple(x.shape)}.")


def _check_eps(eps: float) -> float:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"The latent radius eps must be a finite number >= 0, got {eps!r}.")
    return float(eps)


# ---------------------------------------------------------------------------------------
# True perturbations
def rts(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Rotate, scale and translate ``x`` (B, 1, H, W) by ``params`` (B, 4) = (angle in degrees, scale, dx, dy in pixels).

    The digit is rotated clockwise as displayed (rows run downward) by ``angle``, magnified by
    ``scale`` about the image centre and moved by ``(dx, dy)`` pixels (right, down); bilinear
    resampling, zeros outside. (The opposite sense to :func:`robustvae.calibration.rotate`; the
    sampled angles are symmetric about 0, so no set depends on it.)
    """
    _check_images(x)
    if params.shape != (len(x), 4):
        raise ValueError(f"params must have shape ({len(x)}, 4), got {tuple(params.shape)}.")
    h, w = x.shape[-2:]
    p = params.to(x)
    a = torch.deg2rad(p[:, 0])
    s = p[:, 1]
    if (s <= 0).any():
        raise ValueError("RTS scales must be > 0.")
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    # affine_grid maps output coordinates to input coordinates: the inverse of the motion
    tx, ty = -p[:, 2] * 2 / w, -p[:, 3] * 2 / h
    theta = torch.stack([torch.stack([cos, sin, cos * tx + sin * ty], 1),
                         torch.stack([-sin, cos, -sin * tx + cos * ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def sample_rts_params(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` random RTS parameters, uniform on the paper's ranges: (angle, scale, dx, dy), shape (n, 4)."""
    u = torch.rand(n, 4, generator=generator)
    lo = torch.tensor([-MAX_ANGLE, SCALES[0], -MAX_SHIFT, -MAX_SHIFT])
    hi = torch.tensor([MAX_ANGLE, SCALES[1], MAX_SHIFT, MAX_SHIFT])
    return lo + (hi - lo) * u


def _gaussian_blur(f: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=f.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(f.device)
    c = f.shape[1]
    f = F.conv2d(F.pad(f, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(f, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def elastic(x: torch.Tensor, rms: torch.Tensor, generator: torch.Generator | None = None,
            sigma: float = ELASTIC_SIGMA) -> torch.Tensor:
    """Elastic deformation (Simard, Steinkraus & Platt, ICDAR 2003) with a given displacement size.

    A displacement field of i.i.d. uniform noise is smoothed by a Gaussian of width ``sigma``
    pixels and rescaled so that its root-mean-square displacement is ``rms[i]`` pixels for
    image ``i``; ``x`` is then resampled along it (bilinear, zeros outside).
    """
    _check_images(x)
    if rms.shape != (len(x),):
        raise ValueError(f"rms must have shape ({len(x)},), got {tuple(rms.shape)}.")
    b, _, h, w = x.shape
    noise = torch.rand(b, 2, h, w, generator=generator) * 2 - 1
    field = _gaussian_blur(noise, sigma)
    field = field / field.pow(2).sum(1).mean((1, 2)).sqrt().view(b, 1, 1, 1) * rms.view(b, 1, 1, 1).to(field)
    # pixels -> normalised coordinates of grid_sample
    scale = torch.tensor([2.0 / w, 2.0 / h]).view(1, 2, 1, 1)
    return _warp(x, None, (field * scale).to(x))


def _warp(x: torch.Tensor, theta: torch.Tensor | None, flow: torch.Tensor | None) -> torch.Tensor:
    """Resample ``x`` on ``affine_grid(theta) + flow`` (flow: (B, 2, h, w), upsampled to x's size)."""
    b, _, h, w = x.shape
    if theta is None:
        theta = torch.eye(2, 3, dtype=x.dtype, device=x.device).expand(b, 2, 3)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    if flow is not None:
        if flow.shape[-2:] != (h, w):
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        grid = grid + flow.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def perturb(x: torch.Tensor, family: str, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One random true perturbation of each image: returns ``(x_tilde, params)``.

    ``params`` is (B, 5): (angle, scale, dx, dy) of the RTS perturbation and the
    root-mean-square displacement (pixels) of the elastic one, NaN where a family was not
    used. ``family="both"`` picks one of the two families per image at random (1/2 each).
    """
    check_choice("family", family, SET_FAMILIES)
    b = len(x)
    params = torch.full((b, 5), float("nan"))
    pick = torch.zeros(b, dtype=torch.bool) if family == "rts" else (
        torch.ones(b, dtype=torch.bool) if family == "elastic" else torch.rand(b, generator=generator) < 0.5)
    p_rts = sample_rts_params(b, generator)
    rms = ELASTIC_RMS[0] + (ELASTIC_RMS[1] - ELASTIC_RMS[0]) * torch.rand(b, generator=generator)
    x_el = elastic(x, rms, generator)
    x_tilde = torch.where(pick.view(-1, 1, 1, 1).to(x.device), x_el, rts(x, p_rts))
    params[~pick, :4] = p_rts[~pick]
    params[pick, 4] = rms[pick]
    return x_tilde.clamp(0.0, 1.0), params


def make_pairs(x: torch.Tensor, y: torch.Tensor, family: str, n_per_image: int = 1,
               seed: int = 0) -> dict[str, torch.Tensor]:
    """Offline perturbation pairs: ``n_per_image`` random true perturbations of every image.

    Returns a dict with ``x`` (originals, repeated), ``x_tilde``, ``y``, ``params`` (the true
    perturbation's parameters, see :func:`perturb`) and ``family`` (0: RTS, 1: elastic), all
    aligned along the first axis.
    """
    check_choice("family", family, SET_FAMILIES)
    check_positive("n_per_image", n_per_image)
    gen = torch.Generator().manual_seed(seed)
    xs = x.repeat(n_per_image, 1, 1, 1)
    x_tilde, params = [], []
    for i in range(0, len(xs), 1000):
        xt, p = perturb(xs[i : i + 1000], family, gen)
        x_tilde.append(xt)
        params.append(p)
    params = torch.cat(params)
    return {"x": xs, "x_tilde": torch.cat(x_tilde), "y": y.repeat(n_per_image),
            "params": params, "family": torch.isnan(params[:, 0]).long()}


def split_train_val(x: torch.Tensor, y: torch.Tensor, n_val: int, seed: int = 0):
    """A seeded split of ``(x, y)`` into ``(x_train, y_train), (x_val, y_val)`` with ``n_val`` validation images."""
    if not 0 < n_val < len(x):
        raise ValueError(f"n_val must lie in (0, {len(x)}), got {n_val}.")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, train = perm[:n_val], perm[n_val:]
    return (x[train], y[train]), (x[val], y[val])


# ---------------------------------------------------------------------------------------
# The conditional VAE
def _body(in_ch: int, width: int, hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_ch, width, 4, 2, 1), nn.ReLU(),              # 14x14
        nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(),          # 7x7
        nn.Flatten(), nn.Linear(2 * width * 49, hidden), nn.ReLU(),
    )


class _GaussianNet(nn.Module):
    """A convolutional network giving ``(mu, log_var)`` of a diagonal Gaussian over z."""

    def __init__(self, in_ch: int, latent_dim: int, width: int, hidden: int):
        super().__init__()
        self.body = _body(in_ch, width, hidden)
        self.mu = nn.Linear(hidden, latent_dim)
        self.log_var = nn.Linear(hidden, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), self.log_var(h).clamp(-10.0, 4.0)


class WarpGenerator(nn.Module):
    """g(z, x): a warp of ``x`` predicted from ``z`` and features of ``x``.

    The warp is an affine map (6 numbers, identity at initialisation) plus a displacement field
    on a ``flow_res x flow_res`` grid, upsampled bilinearly to the image size. The output is the
    mean of a Bernoulli likelihood over the pixels of ``x~`` (the warped image, in [0, 1]).
    """

    def __init__(self, latent_dim: int, width: int, hidden: int, flow_res: int = 7):
        super().__init__()
        self.flow_res = flow_res
        self.features = _body(1, width, hidden)
        self.head = nn.Sequential(nn.Linear(hidden + latent_dim, hidden), nn.ReLU(),
                                  nn.Linear(hidden, 6 + 2 * flow_res * flow_res))
        nn.init.zeros_(self.head[-1].weight)   # start at the identity warp
        nn.init.zeros_(self.head[-1].bias)

    def warp_params(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(torch.cat([self.features(x), z], dim=1))
        theta = torch.eye(2, 3, dtype=x.dtype, device=x.device) + out[:, :6].view(-1, 2, 3)
        flow = out[:, 6:].view(-1, 2, self.flow_res, self.flow_res)
        return theta, flow

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        theta, flow = self.warp_params(z, x)
        return _warp(x, theta, flow).clamp(0.0, 1.0)


class ConvGenerator(nn.Module):
    """g(z, x): a convolutional decoder conditioned on ``x`` at every resolution.

    ``z`` is mapped to a 7x7 feature map and concatenated with convolutional features of
    ``x``; two transposed convolutions bring it to 28x28, with ``x`` (average-pooled to 14x14,
    then at full size) concatenated before each of the last two layers, as in the authors'
    MNIST convolutional CVAE. The output is the Bernoulli mean of every pixel of ``x~``.
    """

    def __init__(self, latent_dim: int, width: int, hidden: int):
        super().__init__()
        self.width = width
        self.fc = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * width * 49), nn.ReLU())
        self.features = nn.Sequential(nn.Conv2d(1, width, 4, 2, 1), nn.ReLU(),
                                      nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU())   # (2w, 7, 7)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1), nn.ReLU())  # 14x14
        self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * width + 1, width, 4, 2, 1), nn.ReLU())  # 28x28
        self.out = nn.Conv2d(width + 1, 1, 3, padding=1)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.fc(z).view(-1, 2 * self.width, 7, 7), self.features(x)], dim=1)
        h = self.up1(h)
        h = self.up2(torch.cat([h, F.avg_pool2d(x, 2)], dim=1))
        return torch.sigmoid(self.out(torch.cat([h, x], dim=1)))


def cvae_kl(mu_q: torch.Tensor, log_var_q: torch.Tensor, mu_p: torch.Tensor, log_var_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, diag e^log_var_q) || N(mu_p, diag e^log_var_p)) per example, summed over dimensions.

    :func:`robustvae.models.gaussian_kl` in its ``"log-difference"`` form
    ``1/2 sum_j [ e^(lq - lp) + (mu_q - mu_p)^2 e^(-lp) - 1 + lp - lq ]``.
    """
    return gaussian_kl(mu_q, log_var_q, mu_p, log_var_p, form="log-difference")


class PerturbationCVAE(nn.Module):
    """The conditional VAE of Wong & Kolter (2021): prior p(z|x), posterior q(z|x, x~), generator g(z, x).

    Shapes: ``x`` and ``x_tilde`` are ``(B, 1, 28, 28)`` in [0, 1]; latents are ``(B, latent_dim)``.

    Example
    -------
    >>> cvae = PerturbationCVAE(latent_dim=8)
    >>> x = torch.rand(4, 1, 28, 28)
    >>> cvae.elbo(x, x)["elbo"].shape
    torch.Size([4])
    """

    def __init__(self, latent_dim: int = 8, width: int = 16, hidden: int = 128, generator: str = "conv"):
        super().__init__()
        check_choice("generator", generator, GENERATORS)
        self.latent_dim = latent_dim
        self.prior = _GaussianNet(1, latent_dim, width, hidden)
        self.posterior = _GaussianNet(2, latent_dim, width, hidden)
        self.generator = ConvGenerator(latent_dim, width, hidden) if generator == "conv" else WarpGenerator(latent_dim, width, hidden)

    def prior_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu(x), sigma(x))`` of the prior p(z|x)."""
        mu, log_var = self.prior(x)
        return mu, (0.5 * log_var).exp()

    def generate(self, u: torch.Tensor, x: torch.Tensor, prior: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``g(mu(x) + sigma(x) * u, x)``: the point of S(x) at normalised latent offset ``u``."""
        mu, sigma = self.prior_params(x) if prior is None else prior
        return self.generator(mu + sigma * u, x)

    def elbo(self, x: torch.Tensor, x_tilde: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example ELBO of ``x_tilde`` given ``x`` (nats) and its terms ``rec`` (log-likelihood) and ``kl``.

        ``ELBO = E_q[log p(x~|z, x)] - KL(q(z|x, x~) || p(z|x))`` with one reparameterised sample
        and a Bernoulli likelihood on the pixels (Wong & Kolter 2021, Sec. 4).
        """
        mu_p, lv_p = self.prior(x)
        mu_q, lv_q = self.posterior(torch.cat([x, x_tilde], dim=1))
        z = mu_q + (0.5 * lv_q).exp() * torch.randn_like(mu_q)
        mean = self.generator(z, x).clamp(1e-6, 1 - 1e-6)
        rec = -F.binary_cross_entropy(mean, x_tilde, reduction="none").flatten(1).sum(1)
        kl = cvae_kl(mu_q, lv_q, mu_p, lv_p)
        return {"elbo": rec - kl, "rec": rec, "kl": kl}

    def loss(self, x: torch.Tensor, x_tilde: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        """The negative ELBO with the KL term weighted by ``beta`` (mean over the batch)."""
        out = self.elbo(x, x_tilde)
        return -(out["rec"] - beta * out["kl"]).mean()


@dataclass(frozen=True)
class CVAEConfig(TrainConfig):
    """Everything that determines a trained :class:`PerturbationCVAE`."""

    kind: ClassVar[str] = "perturbation-cvae"
    CHECKS: ClassVar[dict[str, Any]] = {"choices": {"dataset": data.DATASETS, "family": SET_FAMILIES,
                                                    "generator": GENERATORS},
                                        "counts": ("n_val", "pairs_per_image", "latent_dim", "width", "hidden"),
                                        "non_negative": ("warmup_epochs",)}
    dataset: str = "mnist-5k"
    family: str = "both"        # one of SET_FAMILIES
    n_val: int = 500            # training images held out for the validation pairs
    pairs_per_image: int = 2
    warmup_epochs: float = 2.0  # the KL weight rises linearly from 0 to 1 over these epochs
    generator: str = "conv"     # one of GENERATORS
    latent_dim: int = 8
    width: int = 16
    hidden: int = 128
    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3

    def build(self) -> PerturbationCVAE:
        return PerturbationCVAE(self.latent_dim, self.width, self.hidden, self.generator)

    def pairs(self, split: str) -> dict[str, torch.Tensor]:
        """The offline pairs of ``split``: ``"train"`` and ``"val"`` (disjoint images of the train split) or ``"test"``."""
        check_choice("split", split, ("train", "val", "test"))
        if split == "test":
            x, y = data.load_dataset(self.dataset, "test")
            return make_pairs(x, y, self.family, 1, seed=self.seed + 2)
        x, y = data.load_dataset(self.dataset, "train")
        train, val = split_train_val(x, y, self.n_val, self.seed)
        if split == "train":
            return make_pairs(*train, self.family, self.pairs_per_image, seed=self.seed)
        return make_pairs(*val, self.family, 1, seed=self.seed + 1)


def get_cvae(config: CVAEConfig | None = None, device: str | torch.device = "auto", retrain: bool = False,
             **overrides) -> tuple[PerturbationCVAE, dict]:
    """A trained perturbation CVAE for ``config`` (or ``CVAEConfig(**overrides)``), through the model cache.

    Adam on the negative ELBO over the offline training pairs, the KL weight warmed up from 0
    to 1 over ``warmup_epochs`` epochs; the history has per-epoch
    ``train_loss`` and ``val_elbo`` (on the validation pairs).
    """
    cfg = make_config(CVAEConfig, config, overrides)
    dev = resolve_device(device)

    def train(model: PerturbationCVAE) -> dict:
        tr, va = cfg.pairs("train"), cfg.pairs("val")
        xx = torch.cat([tr["x"], tr["x_tilde"]], dim=1)        # (N, 2, 28, 28): fit() batches one tensor

        def on_epoch(m, epoch):
            d = device_of(m)
            out = [m.elbo(va["x"][i:i + 500].to(d), va["x_tilde"][i:i + 500].to(d))["elbo"].sum().item()
                   for i in range(0, len(va["x"]), 500)]
            return {"val_elbo": sum(out) / len(va["x"])}

        steps_per_epoch = math.ceil(len(xx) / cfg.batch_size)
        step = [0]

        def loss_fn(m, xb, yb):   # KL warm-up (the authors anneal beta too), counted in batches
            beta = min(1.0, step[0] / max(cfg.warmup_epochs * steps_per_epoch, 1e-9))
            step[0] += 1
            return m.loss(xb[:, :1], xb[:, 1:], beta)

        return fit(model, loss_fn, xx, tr["y"],
                   epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                   desc=f"perturbation CVAE ({cfg.family})", on_epoch=on_epoch)

    return cache.load_or_train(cfg, cfg.build, train, dev, retrain)


# ---------------------------------------------------------------------------------------
# The learned set S(x)
@torch.no_grad()
def latent_radius(cvae: PerturbationCVAE, x: torch.Tensor, x_tilde: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """``||(mu_q(x, x~) - mu(x)) / sigma(x)||_2`` per pair: where the observed ``x~`` sits in the latent ball.

    Wong & Kolter pick the radius of S(x) as a percentile of this quantity on validation pairs.
    """
    dev = device_of(cvae)
    out = []
    for i in range(0, len(x), batch_size):
        xb, xt = x[i:i + batch_size].to(dev), x_tilde[i:i + batch_size].to(dev)
        mu_p, sigma_p = cvae.prior_params(xb)
        mu_q, _ = cvae.posterior(torch.cat([xb, xt], dim=1))
        out.append(((mu_q - mu_p) / sigma_p).norm(dim=1).cpu())
    return torch.cat(out)


def _ball(n: int, d: int, eps: float, mode: str, generator: torch.Generator | None) -> torch.Tensor:
    g = torch.randn(n, d, generator=generator)
    direction = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if mode == "sphere":
        return direction * eps
    if mode == "ball":          # uniform in the ball: radius eps * U^(1/d)
        return direction * eps * torch.rand(n, 1, generator=generator).pow(1.0 / d)
    return direction * eps * torch.rand(n, 1, generator=generator)   # "radial": radius uniform in [0, eps] (the paper's attack start)


def sample_set(cvae: PerturbationCVAE, x: torch.Tensor, eps: float, n: int = 1, mode: str = "ball",
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random points of S(x) per image: returns ``(samples, u)``.

    ``samples`` is ``(n, B, 1, 28, 28)`` and ``u`` is ``(n, B, latent_dim)`` with
    ``||u||_2 <= eps``: uniform in the ball (``mode="ball"``), on its surface (``"sphere"``), or
    with radius uniform in ``[0, eps]`` (``"radial"``).
    """
    eps = _check_eps(eps)
    check_choice("mode", mode, ("ball", "sphere", "radial"))
    check_positive("n", n)
    dev = device_of(cvae)
    x = x.to(dev)
    with torch.no_grad():
        prior = cvae.prior_params(x)
        us, outs = [], []
        for _ in range(n):
            u = _ball(len(x), cvae.latent_dim, eps, mode, generator).to(dev)
            us.append(u)
            outs.append(cvae.generate(u, x, prior))
    return torch.stack(outs), torch.stack(us)


def _project(u: torch.Tensor, eps: float) -> torch.Tensor:
    n = u.norm(dim=1, keepdim=True)
    return u * torch.clamp(eps / n.clamp_min(1e-12), max=1.0)


@memoize
def latent_pgd(cvae: PerturbationCVAE, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
               y: torch.Tensor, eps: float, steps: int = 10, alpha: float | None = None, restarts: int = 1,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent-space PGD in the learned set (Wong & Kolter 2021, Sec. 5): the worst point of S(x) for ``model``.

    Maximises ``CE(model(g(mu(x) + sigma(x) u, x)), y)`` over ``||u||_2 <= eps``: a random start
    (direction uniform, radius uniform in ``[0, eps]``), then ``steps`` steps
    ``u <- Proj_eps(u + alpha * grad / ||grad||_2)``, through the shared engine
    :func:`robustvae.attacks.ascend`. Per image, the iterate (over all steps and restarts) with
    the highest loss is returned.

    Parameters
    ----------
    cvae : a trained :class:`PerturbationCVAE` (in eval mode); ``model`` : ``x -> logits``.
    x, y : images ``(B, 1, 28, 28)`` and labels ``(B,)``.
    eps : latent radius of S(x); ``alpha`` defaults to ``2.5 * eps / steps``.

    Returns ``(x_adv, u)``: the perturbed images and their latent offsets, ``||u||_2 <= eps``.
    """
    eps = _check_eps(eps)
    check_positive("restarts", restarts)
    check_positive("steps", steps, allow_zero=True)
    alpha = 2.5 * eps / max(steps, 1) if alpha is None else alpha
    dev = x.device
    with torch.no_grad():
        prior = cvae.prior_params(x)

    def loss(u: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(cvae.generate(u, x, prior)), y, reduction="none")

    best_u = attacks.ascend(loss, lambda k: _ball(len(x), cvae.latent_dim, eps, "radial", generator).to(dev),
                            lambda u: _project(u, eps), steps=steps, alpha=alpha, step_rule="l2",
                            restarts=restarts).x
    with torch.no_grad():
        x_adv = cvae.generate(best_u, x, prior)
    return x_adv.detach(), best_u


@memoize
def approximation_error(cvae: PerturbationCVAE, x: torch.Tensor, x_tilde: torch.Tensor, eps: float,
                        steps: int = 30, alpha: float | None = None, batch_size: int = 500) -> torch.Tensor:
    """``min_{||u|| <= eps} ||g(mu(x) + sigma(x) u, x) - x~||_2`` per pair (pixel L2), by latent search.

    The search starts at the posterior's offset ``(mu_q - mu(x)) / sigma(x)`` projected on the
    ball (as the authors' ``eval.py`` does) and takes ``steps`` normalised-gradient steps on the
    squared error, projecting back each time (:func:`robustvae.attacks.ascend` on its
    negative); the best iterate counts. ``alpha`` defaults to ``2.5 * max(eps, 1e-3) / steps``
    (``/ 1`` when ``steps`` is 0). This is the paper's
    "necessary subset" property: observed perturbations should lie close to S(x).
    """
    eps = _check_eps(eps)
    alpha = 2.5 * max(eps, 1e-3) / max(steps, 1) if alpha is None else alpha
    dev = device_of(cvae)
    out = []
    for i in range(0, len(x), batch_size):
        xb, xt = x[i:i + batch_size].to(dev), x_tilde[i:i + batch_size].to(dev)
        with torch.no_grad():
            prior = cvae.prior_params(xb)
            mu_q, _ = cvae.posterior(torch.cat([xb, xt], dim=1))
            u = _project((mu_q - prior[0]) / prior[1], eps)

        def err(u: torch.Tensor, xb=xb, xt=xt, prior=prior) -> torch.Tensor:
            return -(cvae.generate(u, xb, prior) - xt).flatten(1).pow(2).sum(1)

        best = -attacks.ascend(err, lambda k, u=u: u, lambda v: _project(v, eps), steps=steps if eps > 0 else 0,
                               alpha=alpha, step_rule="l2").value
        out.append(best.sqrt().cpu())
    return torch.cat(out)


def rts_grid(n_angle: int = 13, n_scale: int = 7, n_shift: int = 5, magnitude: float = 1.0) -> torch.Tensor:
    """A regular grid over the RTS ranges: ``(n_angle * n_scale * n_shift**2, 4)`` parameters.

    ``magnitude`` in (0, 1] shrinks every range about the identity by that factor (angles in
    ``+-magnitude * MAX_ANGLE``, scales in ``1 +- magnitude * (SCALES[1] - 1)``, shifts in
    ``+-magnitude * MAX_SHIFT``): grids of growing magnitude give a worst case that grows with
    the size of the perturbation."""
    if not 0 < magnitude <= 1:
        raise ValueError(f"magnitude must lie in (0, 1], got {magnitude}.")
    a = torch.linspace(-MAX_ANGLE * magnitude, MAX_ANGLE * magnitude, n_angle)
    s = torch.linspace(1 - (1 - SCALES[0]) * magnitude, 1 + (SCALES[1] - 1) * magnitude, n_scale)
    t = torch.linspace(-MAX_SHIFT * magnitude, MAX_SHIFT * magnitude, n_shift)
    return torch.cartesian_prod(a, s, t, t)


@torch.no_grad()
def distance_to_family(samples: torch.Tensor, x: torch.Tensor, grid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance (pixel L2) from each sample to the closest true RTS perturbation of its input on a grid.

    ``samples`` is ``(n, B, 1, 28, 28)`` (points of S(x) for the ``B`` images ``x``). Returns
    ``(distance, params)``: ``(n, B)`` distances and ``(n, B, 4)`` parameters of the closest grid
    point. A sample of a good set is close to *some* true perturbation (the paper's
    "sufficient likelihood" property, measured here without a likelihood).
    """
    grid = rts_grid() if grid is None else grid
    n, b = samples.shape[:2]
    dist = torch.empty(n, b)
    best = torch.empty(n, b, 4)
    for j in range(b):
        bank = rts(x[j:j + 1].cpu().expand(len(grid), -1, -1, -1), grid).flatten(1)
        d = torch.cdist(samples[:, j].cpu().flatten(1), bank)
        dist[:, j], idx = d.min(dim=1)
        best[:, j] = grid[idx]
    return dist, best


@torch.no_grad()
@memoize
def grid_worst_case(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, grid: torch.Tensor | None = None,
                    batch_size: int = 1000) -> torch.Tensor:
    """The worst case of ``classifier`` over a grid of *true* RTS perturbations of each image.

    Every image of ``x`` is rotated, scaled and translated by the parameter rows of ``grid``
    (:func:`rts_grid`'s by default; a grid with an odd number of values per axis contains the
    identity) and classified. Returns ``(B,)`` bool: True where every transformed copy of the
    image is classified ``y``. The search is exhaustive, so on the grid this worst case is exact
    (unlike a gradient attack's). An image leaves the search at its first misclassified copy,
    and the grid points are visited farthest from the identity first (largest angle, scale and
    shift, normalised by their ranges), where failures are likeliest: the verdicts are those of
    the full search at a fraction of its ``B * G`` classifier evaluations.
    """
    grid = rts_grid() if grid is None else grid
    if grid.ndim != 2 or grid.shape[1] != 4 or len(grid) == 0:
        raise ValueError(f"grid must have shape (G, 4) with G >= 1, got {tuple(grid.shape)}.")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} and {len(y)}.")
    span = torch.tensor([MAX_ANGLE, (SCALES[1] - SCALES[0]) / 2, MAX_SHIFT, MAX_SHIFT])
    far = ((grid - torch.tensor([0.0, 1.0, 0.0, 0.0])) / span).abs().sum(1)
    robust = torch.ones(len(x), dtype=torch.bool)
    for params in grid[torch.argsort(far, descending=True, stable=True)]:
        left = torch.nonzero(robust).flatten()
        if len(left) == 0:
            break
        robust[left] = _correct_under(classifier, x[left], y[left], params, batch_size)
    return robust


def _correct_under(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor,
                   batch_size: int) -> torch.Tensor:
    """Per image: is ``rts(x, params)`` (one parameter row for all) classified ``y``? In eval mode."""
    was_training = classifier.training
    classifier.eval()
    dev = next((q.device for q in classifier.parameters()), x.device)
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        out.append(classifier(rts(xb, params.expand(len(xb), 4)).to(dev)).argmax(1).cpu() == y[i:i + batch_size].cpu())
    classifier.train(was_training)
    return torch.cat(out)


# ---------------------------------------------------------------------------------------
# Robust training in the learned set
@dataclass(frozen=True)
class RobustClassifierConfig(TrainConfig):
    """A classifier trained against RTS perturbations: ``method`` one of :data:`METHODS`.

    ``"standard"``: cross-entropy on clean images. ``"augment"``: the mean of the clean loss and
    the loss on a fresh random true perturbation of each image. ``"latent-adv"``: Wong &
    Kolter's adversarial training in the learned set, per example ``max(CE_clean, CE_adv)``
    with ``x_adv`` from :func:`latent_pgd` (``attack_steps`` steps, radius ``eps``) in the set of
    the CVAE given by ``cvae``.
    """

    kind: ClassVar[str] = "perturbation-classifier"
    CHECKS: ClassVar[dict[str, Any]] = {"choices": {"method": METHODS}, "counts": ("attack_steps", "width")}
    method: str = "standard"
    cvae: CVAEConfig = CVAEConfig()
    eps: float = 1.0
    attack_steps: int = 5
    epochs: int = 6
    width: int = 32

    def _check(self) -> None:
        if not isinstance(self.cvae, CVAEConfig):
            raise ValueError(f"cvae must be a CVAEConfig, got {type(self.cvae).__name__}.")
        _check_eps(self.eps)


def get_robust_classifier(config: RobustClassifierConfig | None = None, device: str | torch.device = "auto",
                          retrain: bool = False, **overrides) -> tuple[Classifier, dict]:
    """A trained classifier for ``config`` (or ``RobustClassifierConfig(**overrides)``), through the model cache.

    Same network, optimiser and data (the dataset's whole training split) for every method;
    the history has per-epoch ``train_loss`` and ``test_acc`` (clean).
    """
    cfg = make_config(RobustClassifierConfig, config, overrides)
    dev = resolve_device(device)

    def train(model: Classifier) -> dict:
        x, y = data.load_dataset(cfg.cvae.dataset, "train")
        x_test, y_test = data.load_dataset(cfg.cvae.dataset, "test")
        gen = torch.Generator().manual_seed(cfg.seed + 17)
        cvae_family = cfg.cvae.family
        if cfg.method == "standard":
            def loss_fn(m, xb, yb):
                return F.cross_entropy(m(xb), yb)
        elif cfg.method == "augment":
            def loss_fn(m, xb, yb):
                xt, _ = perturb(xb.cpu(), cvae_family, gen)
                return 0.5 * (F.cross_entropy(m(xb), yb) + F.cross_entropy(m(xt.to(xb.device)), yb))
        else:
            cvae, _ = get_cvae(cfg.cvae, device=dev)
            for p in cvae.parameters():
                p.requires_grad_(False)

            def loss_fn(m, xb, yb):
                m.eval()            # attack the deterministic network (no dropout), as at test time
                # uncached (__wrapped__): a training batch's attack is never asked for again
                x_adv, _ = latent_pgd.__wrapped__(cvae, m, xb, yb, cfg.eps, cfg.attack_steps, generator=gen)
                m.train()
                ce_clean = F.cross_entropy(m(xb), yb, reduction="none")
                ce_adv = F.cross_entropy(m(x_adv), yb, reduction="none")
                return torch.maximum(ce_clean, ce_adv).mean()
        return fit(model, loss_fn, x, y, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                   seed=cfg.seed, desc=f"classifier ({cfg.method})",
                   on_epoch=lambda m, e: {"test_acc": accuracy(m, x_test, y_test)})

    return cache.load_or_train(cfg, lambda: Classifier(width=cfg.width), train, dev, retrain)

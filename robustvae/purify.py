"""Purification: classify a VAE's reconstruction of the input instead of the input itself.

A *purifier* maps images to images, ``purify(x) -> x_pur`` with shapes ``(B, 1, 28, 28)`` and
values in [0, 1]; :class:`Defended` puts it in front of a classifier and returns logits, so the
attacks of :mod:`robustvae.attacks` can target the whole pipeline ``classifier(purify(x))``.

Purifiers
---------
:class:`Reconstruct`
    One pass through a VAE at the posterior mean, ``g(x) = E[x' | z = mu(x)]`` (the idea of
    MagNet's reformer, Meng & Chen, CCS 2017, with a VAE as the autoencoder). With
    ``sample=True`` it draws ``z ~ q(z|x)`` instead; ``Defended(..., n_samples=n)`` then
    averages the classifier's softmax over ``n`` such stochastic reconstructions.
:class:`LatentSearch`
    Defense-GAN (Samangouei, Kabkab & Chellappa, ICLR 2018, Eq. 7-8) with the VAE's decoder as
    the generator: ``z* = argmin_z ||G(z) - x||_2^2`` by gradient descent from several starts,
    output ``G(z*)``.
:func:`get_defense_vae`
    Defense-VAE (Li & Ji, ECML-PKDD Workshops 2019): a VAE trained to map *attacked* training
    images to their clean originals, then used like :class:`Reconstruct`.

Adaptive attacks
----------------
:class:`BPDA` is Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, ICML
2018, Sec. 4.1): the forward pass is the purifier, the backward pass the identity (or a
differentiable surrogate). :class:`TangentBPDA` is BPDA for :class:`LatentSearch` whose
backward pass is the projection's linearisation, the projector onto the decoder's tangent
space. Expectation over Transformation (same paper, Sec. 4.3) is
``robustvae.attacks.pgd(..., eot=n)`` on a stochastic pipeline. White-box attacks need nothing
special: :class:`Defended` is differentiable wherever its purifier is.

Evaluation helpers: :func:`correct` (seeded per-image correctness of a possibly stochastic
pipeline) and :func:`pgd_iterates` (one PGD run and its iterates at chosen steps, to show that
an attack converged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from . import attacks, cache, data
from .memo import memoize
from .models import LIKELIHOODS, VAE, gaussian_kl
from .training import DataConfig, device_of, fit, get_classifier, make_config
from .utils import check_choice, check_positive, resolve_device

__all__ = [
    "Purifier",
    "Identity",
    "Reconstruct",
    "LatentSearch",
    "BPDA",
    "TangentBPDA",
    "Defended",
    "DefenseVAEConfig",
    "get_defense_vae",
    "defense_vae_training_pairs",
    "correct",
    "pgd_iterates",
]


class Purifier(nn.Module):
    """Base class: ``forward(x)`` returns the purified images, same shape as ``x``, in [0, 1].

    ``stochastic`` says whether two calls on the same input can differ (then an attack should
    use Expectation over Transformation, and evaluation should fix the seed).
    """

    stochastic: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class Identity(Purifier):
    """No purification (the undefended classifier)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Reconstruct(Purifier):
    """Purify by reconstructing through a VAE: ``E[x' | z]`` with ``z = mu(x)`` or ``z ~ q(z|x)``.

    Parameters
    ----------
    vae : a trained :class:`~robustvae.models.VAE` (its weights are not trained further).
    sample : ``False`` (default) decodes the posterior mean, a deterministic map; ``True``
        decodes one sample ``z = mu(x) + sigma(x) * u, u ~ N(0, I)`` per call.
    """

    def __init__(self, vae: VAE, sample: bool = False):
        super().__init__()
        self.vae = vae
        self.sample = bool(sample)
        self.stochastic = self.sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.reconstruct(x, sample=self.sample)


class LatentSearch(Purifier):
    """Defense-GAN-style projection onto the decoder's range (Samangouei et al., ICLR 2018).

    Solves ``z* = argmin_z ||G(z) - x||_2^2`` (their Eq. 7), ``G(z) = E[x | z]`` the VAE's
    decoder mean, by ``steps`` steps of Adam (learning rate ``lr``) from ``restarts`` starting
    points, and returns ``G(z*)`` for the start that ends with the smallest error (their Eq. 8).
    The first start is the encoder mean ``mu(x)`` (when ``init="encoder"``), the others are
    drawn from the prior ``N(0, I)``; Defense-GAN draws all of them from the prior
    (``init="prior"``) and uses ``L = 200`` steps and ``R = 10`` restarts.

    The optimisation runs under ``torch.enable_grad()`` on a detached copy of ``x``: the output
    carries no gradient to ``x`` (differentiating through the whole optimisation would mean
    unrolling it), so attack it with :class:`BPDA`. With ``restarts > 1`` or
    ``init="prior"`` the purifier is stochastic.
    """

    INITS = ("encoder", "prior")

    def __init__(self, vae: VAE, steps: int = 30, restarts: int = 4, lr: float = 0.1, init: str = "encoder"):
        super().__init__()
        check_positive("steps", steps, allow_zero=True)
        check_positive("restarts", restarts)
        check_positive("lr", lr, integer=False)
        check_choice("init", init, self.INITS)
        self.vae, self.steps, self.restarts, self.lr, self.init = vae, steps, restarts, float(lr), init
        self.stochastic = restarts > 1 or init == "prior"

    def _starts(self, x: torch.Tensor) -> torch.Tensor:
        b, d = len(x), self.vae.latent_dim
        z0 = torch.randn(self.restarts, b, d, device=x.device, dtype=x.dtype)
        if self.init == "encoder":
            z0[0] = self.vae.encode(x)[0]
        return z0

    def search(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(z*, err)``: the best latent ``(B, d)`` and its squared error ``(B,)``."""
        x = x.detach()
        r, b = self.restarts, len(x)
        with torch.enable_grad():
            with torch.no_grad():
                z = self._starts(x).reshape(r * b, -1)
            z.requires_grad_(True)
            opt = torch.optim.Adam([z], lr=self.lr)
            target = x.repeat(r, 1, 1, 1)
            for _ in range(self.steps):
                err = (self.vae.mean_image(self.vae.decode(z)) - target).flatten(1).pow(2).sum(1)
                opt.zero_grad(set_to_none=True)
                (grad,) = torch.autograd.grad(err.sum(), z)
                z.grad = grad
                opt.step()
        with torch.no_grad():
            z = z.detach()
            err = (self.vae.mean_image(self.vae.decode(z)) - target).flatten(1).pow(2).sum(1)
            err, z = err.view(r, b), z.view(r, b, -1)
            best = err.argmin(0)
            idx = torch.arange(b, device=x.device)
            return z[best, idx], err[best, idx]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, _ = self.search(x)
        with torch.no_grad():
            return self.vae.mean_image(self.vae.decode(z))


class UnrolledLatentSearch(Purifier):
    """The latent search of a :class:`LatentSearch`, differentiable end to end (white-box).

    Runs the same optimisation (same starts, same number of Adam steps, same learning rate,
    same choice of the start with the smallest final error) but keeps the computation graph of
    every step: Adam is written out (first and second moments, bias correction, as
    ``torch.optim.Adam``) and each step's gradient is taken with ``create_graph=True``, so
    ``d pi(x) / dx`` is the exact derivative of the unrolled optimiser, through the encoder
    start and all ``steps`` updates. This is the attack the approximate gradients of
    :class:`BPDA` and :class:`TangentBPDA` stand in for; a random start from the prior is part of
    the purifier's randomness, so attack it with EOT (Athalye, Carlini & Wagner 2018).
    The cost is one double-backward through the decoder per step; memory grows with ``steps``.
    """

    def __init__(self, latent_search: LatentSearch):
        super().__init__()
        if not isinstance(latent_search, LatentSearch):
            raise ValueError("UnrolledLatentSearch needs a LatentSearch purifier.")
        self.purifier = latent_search
        self.stochastic = latent_search.stochastic

    def search(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z*, err)`` as :meth:`LatentSearch.search`, with ``z*`` differentiable in ``x``."""
        ls = self.purifier
        vae, r, b = ls.vae, ls.restarts, len(x)
        z0 = torch.randn(r, b, vae.latent_dim, device=x.device, dtype=x.dtype)
        if ls.init == "encoder":
            z0 = torch.cat([vae.encode(x)[0].unsqueeze(0), z0[1:]], 0)
        z = z0.reshape(r * b, -1)
        target = x.repeat(r, 1, 1, 1)
        beta1, beta2, eps = 0.9, 0.999, 1e-8            # torch.optim.Adam's defaults
        m = torch.zeros_like(z)
        v = torch.zeros_like(z)
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.requires_grad_(True)
            for t in range(1, ls.steps + 1):
                err = (vae.mean_image(vae.decode(z)) - target).flatten(1).pow(2).sum(1)
                (g,) = torch.autograd.grad(err.sum(), z, create_graph=True)
                m = beta1 * m + (1 - beta1) * g
                v = beta2 * v + (1 - beta2) * g * g
                denom = (v + 1e-30).sqrt() / math.sqrt(1 - beta2**t) + eps
                z = z - (ls.lr / (1 - beta1**t)) * m / denom
            err = (vae.mean_image(vae.decode(z)) - target).flatten(1).pow(2).sum(1)
        err, z = err.view(r, b), z.view(r, b, -1)
        best = err.detach().argmin(0)
        idx = torch.arange(b, device=x.device)
        return z[best, idx], err[best, idx]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, _ = self.search(x)
        return self.purifier.vae.mean_image(self.purifier.vae.decode(z))


class BPDA(Purifier):
    """Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, ICML 2018, Sec. 4.1).

    The forward pass is ``purify(x)``; the backward pass is that of a differentiable
    ``surrogate`` with ``surrogate(x) ~ purify(x)``:
    ``forward(x) = surrogate(x) + (purify(x) - surrogate(x)).detach()``.
    With no surrogate it is the identity, ``x + (purify(x) - x).detach()``, the approximation
    ``purify(x) ~ x`` that their paper uses against input-transformation defences. For a
    projection onto a manifold (Defense-GAN, :class:`LatentSearch`) the identity is a poor
    approximation, and a one-pass reconstruction :class:`Reconstruct` through the same VAE
    (the latent search's own starting point) is a closer one.
    """

    def __init__(self, purifier: nn.Module, surrogate: nn.Module | None = None):
        super().__init__()
        self.purifier = purifier
        self.surrogate = surrogate
        self.stochastic = bool(getattr(purifier, "stochastic", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x_pur = self.purifier(x.detach())
        s = x if self.surrogate is None else self.surrogate(x)
        return s + (x_pur - s).detach()


class TangentBPDA(Purifier):
    """BPDA for :class:`LatentSearch` whose backward pass is the projection's own linearisation.

    At the optimum ``z*`` of ``min_z ||G(z) - x||^2`` the gradient in ``z`` vanishes; the
    implicit function theorem with the Gauss-Newton Hessian ``2 J^T J`` (``J = dG/dz`` at
    ``z*``, ``784 x d``) gives ``dz*/dx = (J^T J)^{-1} J^T`` and so
    ``d pi(x)/dx = J (J^T J)^{-1} J^T``: the orthogonal projector onto the tangent space of the
    decoder's manifold at ``pi(x) = G(z*)``. The forward pass is the latent search; the backward
    pass multiplies the incoming gradient by that projector, computed from an orthonormal basis
    of ``J``'s columns (``d`` forward-mode derivatives of the decoder and a QR decomposition).
    This is BPDA (Athalye, Carlini & Wagner, ICML 2018, Sec. 4.1) with a first-order
    approximation of the purifier, cheaper than differentiating through the optimiser's steps.
    """

    def __init__(self, latent_search: LatentSearch):
        super().__init__()
        if not isinstance(latent_search, LatentSearch):
            raise ValueError("TangentBPDA needs a LatentSearch purifier.")
        self.purifier = latent_search
        self.stochastic = latent_search.stochastic

    def tangent_basis(self, z: torch.Tensor) -> torch.Tensor:
        """Orthonormal basis ``(B, 784, d)`` of the column space of ``dG/dz`` at ``z``."""
        vae = self.purifier.vae
        b, d = z.shape

        def g(zz):
            return vae.mean_image(vae.decode(zz)).flatten(1)

        eye = torch.eye(d, device=z.device, dtype=z.dtype)
        with torch.enable_grad():
            cols = torch.func.vmap(lambda v: torch.func.jvp(g, (z,), (v.expand(b, d),))[1])(eye)  # (d, B, 784)
        q, _ = torch.linalg.qr(cols.permute(1, 2, 0).detach())
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z, _ = self.purifier.search(x)
            x_pur = self.purifier.vae.mean_image(self.purifier.vae.decode(z))
            q = self.tangent_basis(z)
        dx = (x - x.detach()).flatten(1).unsqueeze(-1)            # zero, carries the gradient
        proj = (q @ (q.transpose(1, 2) @ dx)).view_as(x)         # J (J^T J)^-1 J^T dx
        return x_pur + proj


class Defended(nn.Module):
    """The defended classifier ``x -> logits of classifier(purify(x))``.

    With ``n_samples > 1`` the classifier's softmax is averaged over ``n_samples`` calls of a
    stochastic purifier and the logits returned are ``log mean_i softmax(classifier(purify_i(x)))``
    (so ``argmax`` is the class of highest mean probability and cross-entropy on them is the
    negative log of the mean probability). The ``n_samples`` calls run as one batch.

    The classifier and purifier are used as they are (put them in ``eval()`` mode first).
    """

    def __init__(self, classifier: nn.Module, purifier: nn.Module | None = None, n_samples: int = 1):
        super().__init__()
        check_positive("n_samples", n_samples)
        self.classifier = classifier
        self.purifier = purifier if purifier is not None else Identity()
        self.n_samples = n_samples
        if n_samples > 1 and not getattr(self.purifier, "stochastic", False):
            raise ValueError("n_samples > 1 only makes sense with a stochastic purifier "
                             "(e.g. Reconstruct(vae, sample=True)); use n_samples=1.")

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.purifier, "stochastic", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n_samples == 1:
            return self.classifier(self.purifier(x))
        n, b = self.n_samples, len(x)
        x_rep = x.repeat(n, *([1] * (x.dim() - 1)))
        log_p = F.log_softmax(self.classifier(self.purifier(x_rep)), dim=1).view(n, b, -1)
        return torch.logsumexp(log_p, dim=0) - math.log(n)


@torch.no_grad()
@memoize
def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """Per-image correctness ``argmax model(x) == y`` (a CPU bool tensor ``(B,)``).

    The torch random state is forked and seeded with ``seed``, so a stochastic pipeline gives
    the same answer on every call and the caller's random numbers are left untouched.
    """
    dev = x.device if not any(True for _ in model.parameters()) else device_of(model)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = []
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
            out.append((model(xb).argmax(1) == yb).cpu())
    return torch.cat(out)


# --- attack convergence -------------------------------------------------------------------
def pgd_iterates(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
                 record: tuple[int, ...] | list[int], steps: int, eot: int = 1,
                 **pgd_kwargs) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Run :func:`robustvae.attacks.pgd` once (one restart) and also return chosen iterates.

    Returns ``(x_adv, {t: x_t})`` for each ``t`` in ``record`` (``0 <= t <= steps``; ``x_0`` is the
    random start and ``x_steps == x_adv``). Evaluating a defence on ``x_t`` gives its accuracy
    after ``t`` steps of *this* attack (same step size), the curve that shows whether the attack
    converged (Carlini et al., 2019, *On Evaluating Adversarial Robustness*, Sec. 5).
    """
    keep = set(int(t) for t in record)
    if any(t < 0 or t > steps for t in keep):
        raise ValueError(f"record must hold steps between 0 and steps={steps}, got {sorted(keep)}.")
    if pgd_kwargs.get("restarts", 1) != 1:
        raise ValueError("pgd_iterates records a single run: use restarts=1.")
    iterates: dict[int, torch.Tensor] = {}

    def keep_iterate(k: int, t: int, v: torch.Tensor) -> None:
        if t in keep:
            iterates[t] = v.detach().clone()

    x_adv = attacks.pgd(model, x, y, eps, steps=steps, eot=eot, callback=keep_iterate, **pgd_kwargs)
    return x_adv, iterates


# --- Defense-VAE --------------------------------------------------------------------------
@dataclass(frozen=True)
class DefenseVAEConfig(DataConfig):
    """Everything that determines a trained Defense-VAE (Li & Ji, 2019).

    The training pairs are ``(x_attacked, x_clean)``: each training image is attacked once on
    the chapter's classifier (``get_classifier(dataset, epochs=clf_epochs, seed=seed)``), with an
    eps drawn from ``eps_choices``, by FGSM (the first half) or L-inf PGD with ``pgd_steps``
    steps (the second half); a fraction ``clean_fraction`` of the pairs stays clean. The VAE has
    the architecture of :class:`~robustvae.models.VAE` and minimises
    ``-E_q(z|x_attacked)[log p(x_clean|z)] + kl_weight * KL(q(z|x_attacked) || p(z))``.
    Li & Ji use ``kl_weight = 0`` by default (their ``r``), making it a denoising autoencoder
    with a noisy code.
    """

    kind: ClassVar[str] = "defense-vae"
    CHECKS: ClassVar[dict[str, Any]] = {"choices": {"likelihood": LIKELIHOODS},
                                        "counts": ("clf_epochs", "latent_dim", "width", "hidden", "pgd_steps"),
                                        "non_negative": ("kl_weight",)}
    clf_epochs: int = 10
    eps_choices: tuple[float, ...] = (0.1, 0.2, 0.3)
    pgd_steps: int = 5
    clean_fraction: float = 0.2
    latent_dim: int = 16
    width: int = 32
    hidden: int = 256
    likelihood: str = "bernoulli"
    kl_weight: float = 0.1
    epochs: int = 5
    batch_size: int = 32
    lr: float = 2e-3

    def _check(self) -> None:
        if not 0 <= self.clean_fraction < 1:
            raise ValueError(f"clean_fraction must be in [0, 1), got {self.clean_fraction}.")
        if not self.eps_choices or any(not (0 < e <= 1) for e in self.eps_choices):
            raise ValueError(f"eps_choices must be a non-empty tuple of numbers in (0, 1], got {self.eps_choices}.")

    def build(self) -> VAE:
        return VAE(self.latent_dim, self.width, self.hidden, self.likelihood, beta=self.kl_weight)


def defense_vae_training_pairs(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor,
                               cfg: DefenseVAEConfig, batch_size: int = 500) -> torch.Tensor:
    """The attacked inputs of the Defense-VAE training pairs (the targets are ``x`` itself).

    Image ``i`` gets eps ``eps_choices[i % len(eps_choices)]`` after a seeded shuffle; the first
    ``clean_fraction`` of the shuffled images stay clean, the next half of the rest get FGSM,
    the others ``pgd_steps``-step L-inf PGD (Madry et al., ICLR 2018), all on ``classifier``.
    """
    dev = device_of(classifier)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(x)
    perm = torch.randperm(n, generator=gen)
    n_clean = int(round(cfg.clean_fraction * n))
    n_fgsm = (n - n_clean) // 2
    method = torch.zeros(n, dtype=torch.long)  # 0 clean, 1 FGSM, 2 PGD
    method[perm[n_clean:n_clean + n_fgsm]] = 1
    method[perm[n_clean + n_fgsm:]] = 2
    eps_idx = torch.empty(n, dtype=torch.long)
    eps_idx[perm] = torch.arange(n) % len(cfg.eps_choices)
    x_att = x.clone()
    for m in (1, 2):
        for k, eps in enumerate(cfg.eps_choices):
            idx = torch.nonzero((method == m) & (eps_idx == k)).flatten()
            for i in range(0, len(idx), batch_size):
                j = idx[i:i + batch_size]
                xb, yb = x[j].to(dev), y[j].to(dev)
                if m == 1:
                    xa = attacks.fgsm(classifier, xb, yb, eps)
                else:
                    # uncached (__wrapped__): a training batch's attack is never asked for again
                    xa = attacks.pgd.__wrapped__(classifier, xb, yb, eps, steps=cfg.pgd_steps, generator=gen)
                x_att[j] = xa.cpu()
    return x_att


def _defense_vae_loss(model: VAE, x_att: torch.Tensor, x_clean: torch.Tensor) -> torch.Tensor:
    """``-E_q(z|x_att)[log p(x_clean|z)] + beta * KL(q(z|x_att) || p(z))``, batch mean."""
    mu, log_var = model.encode(x_att)
    z = model.reparameterize(mu, log_var)
    rec = model.log_px_given_z(x_clean, model.decode(z))
    return -(rec - model.beta * gaussian_kl(mu, log_var)).mean()


def get_defense_vae(config: DefenseVAEConfig | None = None, device: str | torch.device = "auto",
                    retrain: bool = False, **overrides) -> tuple[VAE, dict]:
    """A trained Defense-VAE for ``config`` (or ``DefenseVAEConfig(**overrides)``), through the cache.

    Training (when no checkpoint exists): load the chapter's classifier (itself cached), attack
    the training set with :func:`defense_vae_training_pairs`, then fit the VAE with Adam on
    ``(x_attacked, x_clean)`` pairs. The history has per-epoch ``train_loss`` and
    ``test_mse_attacked`` (pixel MSE between the posterior-mean reconstruction of FGSM test
    images at the largest eps and the clean test images).
    """
    cfg = make_config(DefenseVAEConfig, config, overrides)
    dev = resolve_device(device)

    def train(model):
        classifier, _ = get_classifier(dataset=cfg.dataset, epochs=cfg.clf_epochs, seed=cfg.seed, device=dev)
        x, y = cfg.training_data()
        x_att = defense_vae_training_pairs(classifier, x, y, cfg)
        x_test, y_test = data.load_dataset(cfg.dataset, "test")
        x_test, y_test = x_test[:500].to(dev), y_test[:500].to(dev)
        x_test_att = attacks.fgsm(classifier, x_test, y_test, max(cfg.eps_choices))

        def on_epoch(m, epoch):
            mse = (m.reconstruct(x_test_att, sample=False) - x_test).pow(2).flatten(1).mean(1).mean()
            return {"test_mse_attacked": mse.item()}

        # fit() passes (x, y) batches: here "x" is the attacked image and "y" the clean target
        return fit(model, _defense_vae_loss, x_att, x, epochs=cfg.epochs, batch_size=cfg.batch_size,
                   lr=cfg.lr, seed=cfg.seed, desc=f"Defense-VAE ({cfg.dataset})", on_epoch=on_epoch)

    return cache.load_or_train(cfg, cfg.build, train, dev, retrain)

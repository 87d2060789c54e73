"""Out-of-distribution (OOD) detection with VAEs and classifiers.

Every score is a small :class:`Detector`: ``fit(x_train)`` on in-distribution training
images (a no-op for most), then ``score(x)`` gives one number per image, **higher = more
OOD**. The interface follows pytorch-ood's ``Detector`` (fit, then score a batch), written
here from scratch for the book's models.

Scores
------
Latent signals of the encoder ``q(z|x) = N(mu(x), diag sigma^2(x))``:
:class:`KLScore`, :class:`LatentNorm`, :class:`EncoderVariance`, :class:`LatentMahalanobis`.
Reconstruction: :class:`ReconstructionMSE`, :class:`DecoderNLL`.
Likelihood: :class:`NegELBO`, :class:`NegIWAE`.
Corrections for the likelihood failure of Nalisnick et al. (2019):
:class:`InputComplexity` (Serra et al., ICLR 2020), :class:`LikelihoodRatio` (Ren et al.,
NeurIPS 2019, with a background model trained on :func:`mutate`-d inputs:
:func:`get_background_vae`, :class:`BackgroundVAEConfig`), and
:class:`BernoulliCeilingRatio` (the likelihood relative to its input-dependent maximum under a
Bernoulli decoder).
Classifier baselines: :class:`MaxSoftmax` (Hendrycks & Gimpel, ICLR 2017),
:class:`EnergyScore` (Liu et al., NeurIPS 2020).

Metrics
-------
:func:`ood_metrics` gives AUROC, AUPR and FPR at 95% TPR (scikit-learn), with seeded bootstrap
95% intervals. Conventions: OOD is the positive class for AUROC and AUPR (AUPR-out); FPR95 is
the fraction of OOD inputs accepted as in-distribution at the threshold that accepts 95% of
the in-distribution inputs (Liang et al., ICLR 2018; Liu et al., NeurIPS 2020).

OOD sets that need no download
------------------------------
:func:`uniform_noise`, :func:`gaussian_noise`, :func:`constant_images`, :func:`invert`,
:func:`rotate_flip`, :func:`sklearn_digits`.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import cache
from .memo import memoize
from .models import VAE, gaussian_kl
from .stats import bootstrap_draws
from .training import VAEConfig, curve_split, device_of, fit, make_config, vae_metrics
from .utils import resolve_device

__all__ = [
    "Detector", "KLScore", "LatentNorm", "EncoderVariance", "LatentMahalanobis",
    "ReconstructionMSE", "DecoderNLL", "NegELBO", "NegIWAE", "LikelihoodRegret", "InputComplexity", "BernoulliCeilingRatio",
    "LikelihoodRatio", "BackgroundVAEConfig", "get_background_vae", "MaxSoftmax", "EnergyScore", "COMPRESSORS",
    "compressed_bits",
    "bernoulli_entropy", "mutate", "ood_metrics", "roc", "uniform_noise", "gaussian_noise",
    "constant_images", "invert", "rotate_flip", "sklearn_digits", "TRANSFORMS",
    "vae_detectors", "classifier_detectors", "score_sets", "metrics_table",
]

#: Lossless compressors :func:`compressed_bits` knows.
COMPRESSORS = ("png", "zlib")

#: The non-identity rotations and flips of :func:`rotate_flip`.
TRANSFORMS = ("rot90", "rot180", "rot270", "hflip", "vflip")


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"Expected a (N, C, H, W) image tensor, got {getattr(x, 'shape', type(x))}.")


# ---------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------
class Detector(ABC):
    """An OOD score: ``fit`` on in-distribution training images, then ``score`` a batch.

    Subclasses implement :meth:`_score_batch` (a batch on the model's device in, ``(B,)`` out,
    higher = more OOD); :meth:`score` runs it in batches without gradients and returns a CPU
    float tensor of shape ``(N,)``.

    Example
    -------
    >>> vae = VAE(latent_dim=4)
    >>> det = LatentMahalanobis(vae).fit(torch.rand(50, 1, 28, 28))
    >>> s_in, s_out = det.score(torch.rand(8, 1, 28, 28)), det.score(constant_images(8))
    >>> s_in.shape, sorted(ood_metrics(s_in, s_out))
    (torch.Size([8]), ['aupr', 'auroc', 'fpr95'])
    """

    #: A short name for tables and figures.
    name: str = "detector"

    def __init__(self, model: nn.Module, batch_size: int = 500):
        if not isinstance(model, nn.Module):
            raise ValueError(f"{type(self).__name__} needs a torch model, got {type(model).__name__}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.model = model
        self.batch_size = int(batch_size)

    def fit(self, x_train: torch.Tensor) -> "Detector":
        """Learn what the score needs from in-distribution training images (default: nothing)."""
        return self

    @abstractmethod
    def _score_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of one batch already on the model's device, ``(B,)``."""

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """OOD scores of ``x`` (``(N, 1, 28, 28)`` in [0, 1]): ``(N,)`` float64 CPU tensor, higher = more OOD."""
        _check_images(x)
        was_training = self.model.training
        self.model.eval()
        dev = device_of(self.model)
        try:
            out = [self._score_batch(x[i : i + self.batch_size].to(dev)).detach().double().cpu()
                   for i in range(0, len(x), self.batch_size)]
        finally:
            self.model.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def score_reusing(self, x: torch.Tensor, memo: dict[int, torch.Tensor]) -> torch.Tensor:
        """:meth:`score`, reusing scores of inner detectors already computed on the same ``x``
        (``memo`` maps ``id(detector)`` to its scores); used by :func:`score_sets`."""
        return self.score(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _inner(det: Detector, x: torch.Tensor, memo: dict[int, torch.Tensor] | None) -> torch.Tensor:
    if memo is not None and id(det) in memo:
        return memo[id(det)]
    return det.score(x)


class _Composite(Detector):
    """A score computed from other detectors' scores (named by keyword: ``likelihood=...``).

    It scores whole sets through :meth:`score_reusing`, so inner scores already computed on the
    same images are reused; fitting it fits every inner detector.
    """

    def __init__(self, **inner: Detector):
        for what, d in inner.items():
            if not isinstance(d, Detector):
                raise ValueError(f"{type(self).__name__} needs a {what} Detector, got {type(d).__name__}.")
        first = next(iter(inner.values()))
        super().__init__(first.model, first.batch_size)
        self.inner_detectors = tuple(inner.values())
        for what, d in inner.items():
            setattr(self, what, d)

    def fit(self, x_train):
        for d in self.inner_detectors:
            d.fit(x_train)
        return self

    def _score_batch(self, x):  # pragma: no cover - score() is overridden
        raise NotImplementedError

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_reusing(x, {})

    @abstractmethod
    def score_reusing(self, x, memo):
        """The score of ``x``, from the inner detectors' scores (see :meth:`Detector.score_reusing`)."""


class _VAEDetector(Detector):
    def __init__(self, vae: VAE, batch_size: int = 500):
        super().__init__(vae, batch_size)
        if not hasattr(vae, "encode"):
            raise ValueError(f"{type(self).__name__} needs a VAE (with .encode), got {type(vae).__name__}.")

    @property
    def vae(self) -> VAE:
        return self.model  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------
# Latent signals
# ---------------------------------------------------------------------------------------
class KLScore(_VAEDetector):
    """KL(q(z|x) || p(z)) in nats: how far the encoder moves away from the prior for ``x``.

    KL = 1/2 sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1) (Kingma & Welling, ICLR 2014, App. B).
    """

    name = "KL(q(z|x) || p(z))"

    def _score_batch(self, x):
        mu, log_var = self.vae.encode(x)
        return gaussian_kl(mu, log_var)


class LatentNorm(_VAEDetector):
    """The Euclidean norm of the encoder mean, ``||mu(x)||_2``: far from the prior's bulk = OOD."""

    name = "||mu(x)||"

    def _score_batch(self, x):
        return self.vae.encode(x)[0].norm(dim=1)


class EncoderVariance(_VAEDetector):
    """The mean encoder variance ``(1/d) sum_j sigma_j^2(x)``: an uncertain encoding = OOD."""

    name = "mean sigma^2(x)"

    def _score_batch(self, x):
        return self.vae.encode(x)[1].exp().mean(dim=1)


class LatentMahalanobis(_VAEDetector):
    """Mahalanobis distance of ``mu(x)`` to the training encodings.

    ``fit`` estimates the mean ``m`` and covariance ``S`` of ``mu(x)`` over the training
    images; ``score(x) = (mu(x) - m)^T (S + shrinkage I)^{-1} (mu(x) - m)`` (the squared
    distance, as in Lee et al., NeurIPS 2018, applied to the VAE's latent means rather than a
    classifier's features, with one class).
    """

    name = "Mahalanobis(mu)"

    def __init__(self, vae: VAE, shrinkage: float = 1e-6, batch_size: int = 500):
        super().__init__(vae, batch_size)
        if not shrinkage >= 0:
            raise ValueError(f"shrinkage must be >= 0, got {shrinkage}.")
        self.shrinkage = float(shrinkage)
        self.mean: torch.Tensor | None = None
        self.precision: torch.Tensor | None = None

    @torch.no_grad()
    def fit(self, x_train: torch.Tensor) -> "LatentMahalanobis":
        _check_images(x_train)
        if len(x_train) < 2:
            raise ValueError("LatentMahalanobis.fit needs at least 2 training images.")
        dev = device_of(self.vae)
        self.vae.eval()
        mu = torch.cat([self.vae.encode(x_train[i : i + self.batch_size].to(dev))[0].double()
                        for i in range(0, len(x_train), self.batch_size)])
        self.mean = mu.mean(0)
        cov = torch.cov(mu.T).reshape(mu.shape[1], mu.shape[1])
        cov = cov + self.shrinkage * torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
        self.precision = torch.linalg.pinv(cov, hermitian=True)
        return self

    def _score_batch(self, x):
        if self.mean is None:
            raise RuntimeError("Call LatentMahalanobis.fit(x_train) before score().")
        d = self.vae.encode(x)[0].double() - self.mean
        return ((d @ self.precision) * d).sum(dim=1)


# ---------------------------------------------------------------------------------------
# Reconstruction and likelihood
# ---------------------------------------------------------------------------------------
class ReconstructionMSE(_VAEDetector):
    """Per-pixel mean squared error between ``x`` and its reconstruction ``E[x | z = mu(x)]``."""

    name = "reconstruction MSE"

    def _score_batch(self, x):
        x_rec = self.vae.reconstruct(x, sample=False)
        return (x_rec - x).pow(2).flatten(1).mean(dim=1)


class DecoderNLL(_VAEDetector):
    """The decoder's negative log-likelihood ``-log p(x | z = mu(x))`` in nats (deterministic)."""

    name = "-log p(x|mu)"

    def _score_batch(self, x):
        mu, _ = self.vae.encode(x)
        return -self.vae.log_px_given_z(x, self.vae.decode(mu))


class NegELBO(_VAEDetector):
    """The negative evidence lower bound ``-ELBO(x)`` in nats (Kingma & Welling, ICLR 2014, Eq. 3),
    its expectation estimated with ``n_samples`` draws of ``z ~ q(z|x)`` (uses torch's global RNG)."""

    name = "-ELBO"

    def __init__(self, vae: VAE, n_samples: int = 1, batch_size: int = 500):
        super().__init__(vae, batch_size)
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        self.n_samples = int(n_samples)

    def _score_batch(self, x):
        return -self.vae.elbo(x, n_samples=self.n_samples)["elbo"]


class NegIWAE(_VAEDetector):
    """The negative importance-weighted bound ``-L_k(x)`` in nats, an estimate of ``-log p(x)``
    (Burda et al., ICLR 2016, Eq. 8) with ``k`` samples (uses torch's global RNG)."""

    name = "-log p(x) (IWAE)"

    def __init__(self, vae: VAE, k: int = 64, batch_size: int = 250):
        super().__init__(vae, batch_size)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        self.k = int(k)

    def _score_batch(self, x):
        return -self.vae.iwae(x, k=self.k)


class LikelihoodRegret(_VAEDetector):
    """Likelihood Regret (Xiao, Yan & Amit, NeurIPS 2020): how much the likelihood of ``x``
    improves when the approximate posterior is fitted to ``x`` alone, the decoder fixed,

    ``LR(x) = -L_k(x; q_phi(z|x)) - [-L_k(x; q*_x)]``  (nats, higher = more OOD),

    with ``L_k`` the importance-weighted bound (:meth:`~robustvae.models.VAE.iwae`, ``k``
    samples) and ``q*_x`` the diagonal Gaussian that maximises ``ELBO(x)``, found by ``steps``
    Adam steps (learning rate ``lr``, ``mc`` reparameterised samples per step) from the
    encoder's own ``q_phi(z|x)``. The encoder was trained to serve in-distribution inputs, so
    on them it is already close to the best posterior and the regret is small; on an OOD input
    the decoder can often explain ``x`` much better than the encoder lets it.

    The authors fine-tune a copy of the encoder's *weights* on each test image; this detector
    optimises the Gaussian's parameters ``(mu, log_var)`` directly (a variant the paper's
    reasoning allows: on a single image every posterior the encoder can output is such a
    Gaussian), which batches over images. Uses torch's global RNG.
    """

    name = "likelihood regret"

    def __init__(self, vae: VAE, k: int = 16, steps: int = 50, lr: float = 0.05, mc: int = 1,
                 batch_size: int = 500):
        super().__init__(vae, batch_size)
        for what, v in (("k", k), ("steps", steps), ("mc", mc)):
            if int(v) != v or v < 1:
                raise ValueError(f"{what} must be an integer >= 1, got {v}.")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}.")
        self.k, self.steps, self.lr, self.mc = int(k), int(steps), float(lr), int(mc)

    def fit_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_var)`` of ``q*_x``: the encoder's posterior refined by Adam on ``-ELBO(x)``."""
        vae = self.vae
        with torch.no_grad():
            mu0, lv0 = vae.encode(x)
        mu, log_var = mu0.clone().requires_grad_(True), lv0.clone().requires_grad_(True)
        opt = torch.optim.Adam([mu, log_var], lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                z = mu.unsqueeze(0) + (0.5 * log_var).exp().unsqueeze(0) * torch.randn(
                    (self.mc,) + mu.shape, device=mu.device, dtype=mu.dtype)
                logits = vae.decode(z.flatten(0, 1))
                x_rep = x.unsqueeze(0).expand((self.mc,) + x.shape).flatten(0, 1)
                rec = vae.log_px_given_z(x_rep, logits).view(self.mc, -1).mean(0)
                loss = -(rec - gaussian_kl(mu, log_var)).sum()  # images are independent
                g_mu, g_lv = torch.autograd.grad(loss, [mu, log_var])
                mu.grad, log_var.grad = g_mu, g_lv
                opt.step()
        return mu.detach(), log_var.detach()

    @memoize
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`Detector.score`, cached by :func:`robustvae.memo.memoize` (the per-image fit is the
        costly part of chapter 2)."""
        return super().score(x)

    def _score_batch(self, x):
        nll_before = -self.vae.iwae(x, k=self.k)
        nll_after = -self.vae.iwae(x, k=self.k, posterior=self.fit_posterior(x))
        return nll_before - nll_after


# ---------------------------------------------------------------------------------------
# Corrections for the likelihood failure
# ---------------------------------------------------------------------------------------
def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def compressed_bits(x: torch.Tensor, compressor: str = "png") -> torch.Tensor:
    """Length in bits of each image, quantised to 8 bits per pixel and losslessly compressed.

    ``compressor="png"``: a greyscale PNG file (Pillow, compression level 9), the complexity
    estimate of Serra et al. (ICLR 2020); ``"zlib"``: the raw pixels deflated at level 9.
    Both include a small fixed header, the same for every image. Returns ``(N,)`` float64.
    """
    _check_images(x)
    if compressor not in COMPRESSORS:
        raise ValueError(f"Unknown compressor {compressor!r}. Valid: {', '.join(COMPRESSORS)}.")
    if x.shape[1] != 1:
        raise ValueError(f"compressed_bits expects single-channel images, got {x.shape[1]} channels.")
    imgs = _to_uint8(x)[:, 0]
    out = np.empty(len(imgs), dtype=np.float64)
    if compressor == "png":
        from PIL import Image  # Pillow: a dependency of matplotlib

        for i, im in enumerate(imgs):
            buf = io.BytesIO()
            Image.fromarray(im, mode="L").save(buf, format="PNG", compress_level=9)
            out[i] = 8 * buf.tell()
    else:
        for i, im in enumerate(imgs):
            out[i] = 8 * len(zlib.compress(im.tobytes(), 9))
    return torch.from_numpy(out)


def bernoulli_entropy(x: torch.Tensor) -> torch.Tensor:
    """``sum_i H_b(x_i)`` in nats per image: the smallest Bernoulli NLL any decoder can reach.

    For a grey pixel ``x_i`` in [0, 1] the Bernoulli "log-likelihood" ``x log p + (1 - x) log(1 - p)``
    is maximised at ``p = x`` and equals ``-H_b(x_i)`` there, so images with many grey pixels
    have a low likelihood ceiling (the Bernoulli is not a density on [0, 1]: Loaiza-Ganem &
    Cunningham, NeurIPS 2019).
    """
    _check_images(x)
    xc = x.double().clamp(0, 1)
    h = -(torch.special.xlogy(xc, xc) + torch.special.xlogy(1 - xc, 1 - xc))
    return h.flatten(1).sum(dim=1)


class InputComplexity(_Composite):
    """Input-complexity-corrected likelihood (Serra et al., ICLR 2020, Eq. 2):

    ``S(x) = -log2 p(x) - L(x)``, in bits per pixel,

    with ``-log2 p(x)`` the generative model's negative log-likelihood in bits (here the
    ``likelihood`` detector's score, in nats, divided by ln 2) and ``L(x)`` the length of
    ``x`` compressed by a lossless, generic compressor (:func:`compressed_bits`). ``S`` is a
    log-likelihood ratio of the model against a universal "complexity" model: inputs the
    model explains no better than a PNG encoder does are OOD.

    Parameters
    ----------
    likelihood : a detector whose score is a negative log-likelihood in nats
        (:class:`NegIWAE` in the chapter, or :class:`NegELBO`).
    compressor : ``"png"`` (default, as in the paper) or ``"zlib"``.
    """

    name = "input complexity S(x)"

    def __init__(self, likelihood: Detector, compressor: str = "png"):
        super().__init__(likelihood=likelihood)
        if compressor not in COMPRESSORS:
            raise ValueError(f"Unknown compressor {compressor!r}. Valid: {', '.join(COMPRESSORS)}.")
        self.compressor = compressor

    def score_reusing(self, x, memo):
        _check_images(x)
        nll_bits = _inner(self.likelihood, x, memo) / math.log(2)
        d = x[0].numel() if len(x) else 1
        return (nll_bits - compressed_bits(x, self.compressor)) / d


class BernoulliCeilingRatio(_Composite):
    """The likelihood measured from its ceiling: ``score(x) = -log p(x) - sum_i H_b(x_i)`` (nats).

    Under a Bernoulli decoder the log-likelihood of a grey-level image is bounded above by
    ``-sum_i H_b(x_i)`` (:func:`bernoulli_entropy`), reached by a decoder that outputs ``x``
    itself; the bound depends on the input (Yong, Pearce & Brintrup 2021, "Bayesian
    autoencoders: analysing and fixing the Bernoulli likelihood for OOD detection"). Nearly
    binary images (MNIST) have a bound near 0, grey ones (Fashion-MNIST) far below 0, which
    is enough to rank MNIST above Fashion-MNIST. The score is the log-likelihood ratio of
    that saturated per-pixel model to the VAE, ``log p_sat(x) / p(x)``: how many nats the
    VAE falls short of a perfect reconstruction. With the ELBO in place of ``log p(x)`` it is
    ``E_q[sum_i KL(Bern(x_i) || Bern(p_i(z)))] + KL(q(z|x) || p(z))``, which is zero only for a
    perfect, prior-matching encoding. This normalisation is the book's own, a cheap
    alternative to the fixes of the paper above.

    ``likelihood`` must score a negative log-likelihood in nats under a Bernoulli decoder.
    """

    name = "-log p(x) - sum H_b(x)"

    def __init__(self, likelihood: Detector):
        super().__init__(likelihood=likelihood)
        kind = getattr(likelihood.model, "likelihood", None)
        if kind != "bernoulli":
            raise ValueError(
                f"BernoulliCeilingRatio applies to Bernoulli decoders only; the model's likelihood is {kind!r}. "
                "Use InputComplexity or LikelihoodRatio instead."
            )

    def score_reusing(self, x, memo):
        _check_images(x)
        return _inner(self.likelihood, x, memo) - bernoulli_entropy(x)


class LikelihoodRatio(_Composite):
    """Likelihood ratio against a background model (Ren et al., NeurIPS 2019, Eq. 5):

    ``score(x) = -[log p_theta(x) - log p_theta0(x)]``,

    with ``p_theta0`` a background model trained on perturbed in-distribution inputs
    (:func:`mutate`), which captures population-level statistics (e.g. how many pixels are
    dark) but not the semantics. Both log-likelihoods come from ``likelihood`` detectors
    (negative log-likelihoods in nats), e.g. ``NegIWAE(vae)`` and ``NegIWAE(background_vae)``.
    """

    name = "likelihood ratio"

    def __init__(self, likelihood: Detector, background: Detector):
        super().__init__(likelihood=likelihood, background=background)

    def score_reusing(self, x, memo):
        # -log p_theta(x) + log p_theta0(x) = nll_theta - nll_theta0
        _check_images(x)
        return _inner(self.likelihood, x, memo) - _inner(self.background, x, memo)


def mutate(x: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ren et al. (NeurIPS 2019)'s input perturbation for training the background model: each
    pixel is replaced, with probability ``rate``, by a value drawn uniformly from the 256 grey levels."""
    _check_images(x)
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate}.")
    mask = torch.rand(x.shape, generator=generator) < rate
    noise = torch.randint(0, 256, x.shape, generator=generator).float() / 255
    return torch.where(mask, noise, x.cpu()).to(x.device)


@dataclass(frozen=True)
class BackgroundVAEConfig(VAEConfig):
    """Everything that determines a trained background VAE for :class:`LikelihoodRatio`.

    The fields of a :class:`~robustvae.training.VAEConfig` (architecture, training images,
    epochs, optimiser, seed) and ``mutation_rate``, the probability with which :func:`mutate`
    replaces each pixel of a training batch (Ren et al., NeurIPS 2019, Sec. 3: a rate in
    [0.1, 0.3] worked for their image models). The rate is a field, so the model cache keeps one
    checkpoint per rate. :meth:`of` makes the background config of a given VAE's config.

    Example
    -------
    >>> cfg = BackgroundVAEConfig.of(VAEConfig(dataset="fashion-mnist", n_train=4000, epochs=12), 0.2)
    >>> cfg.n_train, cfg.epochs, cfg.mutation_rate
    (4000, 12, 0.2)
    """

    kind: ClassVar[str] = "background-vae"
    mutation_rate: float = 0.2

    def _check(self) -> None:
        r = self.mutation_rate
        if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)) or not 0 < r < 1:
            raise ValueError(f"mutation_rate must be a number in (0, 1) (Ren et al. use 0.1 to 0.3), got {r!r}.")

    @classmethod
    def of(cls, config: VAEConfig, mutation_rate: float) -> "BackgroundVAEConfig":
        """The background model of the VAE ``config``: every one of its fields, and ``mutation_rate``."""
        if type(config) is not VAEConfig:
            raise TypeError(f"BackgroundVAEConfig.of needs a VAEConfig, got {type(config).__name__}.")
        return cls(**dataclasses.asdict(config), mutation_rate=mutation_rate)


def _mutation_generator(seed: int) -> torch.Generator:
    """The generator of a background VAE's mutations: seeded by the config's seed, but apart from
    the generator that shuffles the batches (:func:`~robustvae.training.fit`)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), 2019]).generate_state(1)[0]))


def get_background_vae(config: BackgroundVAEConfig | None = None, device: str | torch.device = "auto",
                       retrain: bool = False, **overrides) -> tuple[VAE, dict]:
    """A trained background VAE for ``config`` (or ``BackgroundVAEConfig(**overrides)``), and its
    history, through the model cache (:func:`robustvae.cache.load_or_train`).

    The background model of the likelihood ratio (Ren et al., NeurIPS 2019, Sec. 3): the VAE that
    :func:`~robustvae.training.get_vae` trains for the same fields (same images, initial weights,
    batches, optimiser and epochs), except that every training batch passes through
    :func:`mutate` at ``config.mutation_rate`` before the loss, with fresh mutations at every
    batch (a seeded generator of its own), as Ren et al.'s input pipeline draws them. The noise
    keeps the population-level statistics of the images (how many pixels are dark, how grey they
    are) and destroys their semantics, so ``log p_theta(x) - log p_theta0(x)`` cancels the former.
    Ren et al. also tried an L2 penalty on the background model's weights; none is used here.

    The history has per-epoch ``train_loss`` (the negative ELBO on the mutated batches), and
    ``test_elbo`` and ``test_mse`` on the clean images of the learning curve.
    """
    cfg = make_config(BackgroundVAEConfig, config, overrides)
    dev = resolve_device(device)

    def train(model):
        x, y = cfg.training_data()
        x_test, _ = curve_split(cfg.dataset)
        gen = _mutation_generator(cfg.seed)

        def on_epoch(m, epoch):
            met = vae_metrics(m, x_test)
            return {"test_elbo": met["elbo"], "test_mse": met["mse"]}

        return fit(
            model, lambda m, xb, yb: m.loss(mutate(xb, cfg.mutation_rate, gen)), x, y,
            epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
            desc=f"background VAE, rate {cfg.mutation_rate} ({cfg.dataset})", on_epoch=on_epoch,
        )

    return cache.load_or_train(cfg, cfg.build, train, dev, retrain)


# ---------------------------------------------------------------------------------------
# Classifier baselines
# ---------------------------------------------------------------------------------------
class MaxSoftmax(Detector):
    """Maximum softmax probability baseline (Hendrycks & Gimpel, ICLR 2017):
    ``score(x) = -max_c softmax(f(x))_c`` (a confident classifier = in-distribution)."""

    name = "max softmax (classifier)"

    def _score_batch(self, x):
        return -F.softmax(self.model(x), dim=1).max(dim=1).values


class EnergyScore(Detector):
    """Energy score (Liu et al., NeurIPS 2020, Eq. 1): ``E(x) = -T logsumexp_c f_c(x) / T``.

    OOD inputs have higher energy. ``temperature`` T defaults to 1 as in the paper.
    """

    name = "energy (classifier)"

    def __init__(self, model: nn.Module, temperature: float = 1.0, batch_size: int = 500):
        super().__init__(model, batch_size)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)

    def _score_batch(self, x):
        t = self.temperature
        return -t * torch.logsumexp(self.model(x) / t, dim=1)


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------
def _as_numpy(s) -> np.ndarray:
    a = s.detach().cpu().double().numpy() if isinstance(s, torch.Tensor) else np.asarray(s, dtype=np.float64)
    if a.ndim != 1 or len(a) == 0:
        raise ValueError(f"Scores must be a non-empty 1-D array, got shape {a.shape}.")
    if not np.isfinite(a).all():
        raise ValueError("Scores contain NaN or infinite values.")
    return a


def _fast_metrics(s_in: np.ndarray, s_out: np.ndarray) -> tuple[float, float, float]:
    """AUROC, AUPR (OOD positive) and FPR95 by one sort; equal to scikit-learn's (tested), for the bootstrap."""
    s = np.concatenate([s_out, s_in])
    y = np.concatenate([np.ones(len(s_out)), np.zeros(len(s_in))])
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    n_pos, n_neg = len(s_out), len(s_in)
    tpr, fpr = np.r_[0, tps / n_pos], np.r_[0, fps / n_neg]
    auroc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))
    precision = tps / (tps + fps)
    aupr = float(np.sum(np.diff(np.r_[0, tps / n_pos]) * precision))
    # FPR95 with in-distribution as the positive class: lowest scores accepted first
    return auroc, aupr, _fpr95(s_in, s_out)


def _fpr95(s_in: np.ndarray, s_out: np.ndarray) -> float:
    """Fraction of OOD scores <= the threshold accepting (at least) 95% of in-distribution scores,
    thresholds taken at the distinct scores as in ``sklearn.metrics.roc_curve``."""
    t_in = np.sort(s_in)
    need = math.ceil(0.95 * len(t_in) - 1e-9)
    threshold = t_in[need - 1]
    return float(np.mean(s_out <= threshold))


def ood_metrics(s_in, s_out, n_boot: int = 0, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """AUROC, AUPR and FPR95 of a score (higher = more OOD), with bootstrap intervals.

    Point estimates use scikit-learn (``roc_auc_score``, ``average_precision_score`` with OOD as
    the positive class, ``roc_curve`` with in-distribution as the positive class for FPR95).
    With ``n_boot > 0``, each metric also gets a percentile ``level`` interval from
    ``n_boot`` bootstrap resamples, in- and out-of-distribution scores resampled separately
    (:func:`robustvae.stats.bootstrap_draws` with ``seed``): keys ``auroc_lo``, ``auroc_hi``, and so on.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    a_in, a_out = _as_numpy(s_in), _as_numpy(s_out)
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}.")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    s = np.concatenate([a_in, a_out])
    is_out = np.r_[np.zeros(len(a_in)), np.ones(len(a_out))]
    fpr_in, tpr_in, _ = roc_curve(1 - is_out, -s, drop_intermediate=False)  # in-distribution positive
    res = {
        "auroc": float(roc_auc_score(is_out, s)),
        "aupr": float(average_precision_score(is_out, s)),
        "fpr95": float(fpr_in[np.searchsorted(tpr_in, 0.95 - 1e-12, side="left")]),
    }
    if n_boot:
        boots = np.array([
            _fast_metrics(a_in[i_in], a_out[i_out])
            for i_in, i_out in bootstrap_draws((len(a_in), len(a_out)), n_boot, seed)
        ])
        q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
        for j, key in enumerate(("auroc", "aupr", "fpr95")):
            lo, hi = np.percentile(boots[:, j], q)
            res[f"{key}_lo"], res[f"{key}_hi"] = float(lo), float(hi)
    return res


def roc(s_in, s_out) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve ``(fpr, tpr)`` with OOD as the positive class (``sklearn.metrics.roc_curve``)."""
    from sklearn.metrics import roc_curve

    a_in, a_out = _as_numpy(s_in), _as_numpy(s_out)
    fpr, tpr, _ = roc_curve(np.r_[np.zeros(len(a_in)), np.ones(len(a_out))], np.r_[a_in, a_out])
    return fpr, tpr


# ---------------------------------------------------------------------------------------
# OOD sets that need no download
# ---------------------------------------------------------------------------------------
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _check_n(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}.")


def uniform_noise(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images of i.i.d. uniform pixels in [0, 1], ``(n, 1, 28, 28)``."""
    _check_n(n)
    return torch.rand(n, 1, 28, 28, generator=_gen(seed))


def gaussian_noise(n: int, seed: int = 0, mean: float = 0.5, std: float = 0.25) -> torch.Tensor:
    """``n`` images of i.i.d. Gaussian pixels N(mean, std^2), clipped to [0, 1].

    New images of pure noise; :func:`robustvae.calibration.add_gaussian_noise` adds noise to given ones.
    """
    _check_n(n)
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}.")
    return (mean + std * torch.randn(n, 1, 28, 28, generator=_gen(seed))).clamp(0, 1)


def constant_images(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images, each of one grey level drawn uniformly from [0, 1]."""
    _check_n(n)
    return torch.rand(n, 1, 1, 1, generator=_gen(seed)).expand(n, 1, 28, 28).contiguous()


def invert(x: torch.Tensor) -> torch.Tensor:
    """Photographic negatives ``1 - x``."""
    _check_images(x)
    return 1.0 - x


def rotate_flip(x: torch.Tensor, seed: int = 0, transforms: tuple[str, ...] = TRANSFORMS) -> torch.Tensor:
    """Each image rotated or flipped by one of ``transforms`` (drawn per image with ``seed``).

    Near-OOD: some digits (0, 1, 8) and garments are nearly invariant under some of them.
    """
    _check_images(x)
    if not transforms or any(t not in TRANSFORMS for t in transforms):
        raise ValueError(f"transforms must be a non-empty subset of {TRANSFORMS}, got {transforms!r}.")
    ops: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "rot90": lambda im: torch.rot90(im, 1, dims=(-2, -1)),
        "rot180": lambda im: torch.rot90(im, 2, dims=(-2, -1)),
        "rot270": lambda im: torch.rot90(im, 3, dims=(-2, -1)),
        "hflip": lambda im: torch.flip(im, dims=(-1,)),
        "vflip": lambda im: torch.flip(im, dims=(-2,)),
    }
    pick = torch.randint(0, len(transforms), (len(x),), generator=_gen(seed))
    out = x.clone()
    for j, t in enumerate(transforms):
        m = pick == j
        if m.any():
            out[m] = ops[t](x[m])
    return out


def sklearn_digits(n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 handwritten 8x8 digits (UCI optdigits, shipped with scikit-learn),
    scaled to [0, 1], upsampled bilinearly to 20x20 and padded to 28x28 like MNIST's digits.

    Returns ``(x, y)``; ``n`` draws a seeded subset without replacement (all if None).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    if n is not None:
        _check_n(n)
        if n > len(x):
            raise ValueError(f"sklearn_digits has {len(x)} images, {n} requested.")
        idx = torch.randperm(len(x), generator=_gen(seed))[:n]
        x, y = x[idx], y[idx]
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    return F.pad(x, (4, 4, 4, 4)).clamp(0, 1), y


# ---------------------------------------------------------------------------------------
# Running many scores on many sets
# ---------------------------------------------------------------------------------------
def vae_detectors(vae: VAE, k: int = 64) -> dict[str, Detector]:
    """The chapter's VAE scores, by name: latent signals, reconstruction, likelihood, and the
    corrections of the likelihood (which reuse the IWAE estimate of ``-log p(x)``):
    input complexity, and for a Bernoulli decoder :class:`BernoulliCeilingRatio`."""
    iwae = NegIWAE(vae, k=k)
    dets = [KLScore(vae), LatentNorm(vae), EncoderVariance(vae), LatentMahalanobis(vae),
            ReconstructionMSE(vae), DecoderNLL(vae), NegELBO(vae), iwae, InputComplexity(iwae)]
    if getattr(vae, "likelihood", None) == "bernoulli":
        dets.append(BernoulliCeilingRatio(iwae))
    return {d.name: d for d in dets}


def classifier_detectors(classifier: nn.Module) -> dict[str, Detector]:
    """The classifier baselines, by name: maximum softmax probability and energy."""
    dets = [MaxSoftmax(classifier), EnergyScore(classifier)]
    return {d.name: d for d in dets}


@memoize
def score_sets(detectors: dict[str, Detector], sets: dict[str, torch.Tensor], x_train: torch.Tensor | None = None,
               seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Fit a copy of every detector on ``x_train`` (if given), then score every set.

    The detectors passed in are left as they are (the scores are cached by
    :func:`robustvae.memo.memoize`, so fitting them in place would happen only on a miss).

    Returns ``scores[detector][set]``, each ``(N,)``. Torch's global RNG is reseeded with
    ``seed`` before each call, so stochastic scores (ELBO, IWAE) do not depend on the order,
    and a wrapper (:class:`InputComplexity`, :class:`LikelihoodRatio`) listed after the
    detector it wraps reuses that detector's scores instead of recomputing them.
    """
    detectors = copy.deepcopy(detectors)  # one copy of the whole dict: a wrapper still shares its inner detector
    if x_train is not None:
        for det in detectors.values():
            det.fit(x_train)
    out: dict[str, dict[str, torch.Tensor]] = {name: {} for name in detectors}
    for set_name, x in sets.items():
        memo: dict[int, torch.Tensor] = {}
        for name, det in detectors.items():
            torch.manual_seed(seed)
            memo[id(det)] = out[name][set_name] = det.score_reusing(x, memo)
    return out


def metrics_table(scores: dict[str, dict[str, torch.Tensor]], in_set: str, n_boot: int = 0, seed: int = 0):
    """One row per (score, OOD set): AUROC, AUPR, FPR95 (and bootstrap bounds) of ``in_set``
    against every other set, as a pandas DataFrame indexed by ``("score", "OOD set")``."""
    import pandas as pd

    rows = []
    for name, by_set in scores.items():
        if in_set not in by_set:
            raise ValueError(f"In-distribution set {in_set!r} is missing; sets are {list(by_set)}.")
        for set_name, s in by_set.items():
            if set_name == in_set:
                continue
            rows.append({"score": name, "OOD set": set_name, **ood_metrics(by_set[in_set], s, n_boot, seed)})
    return pd.DataFrame(rows).set_index(["score", "OOD set"])

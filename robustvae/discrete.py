"""A VAE whose decoder is a probability over the 256 grey levels: the discretized logistic.

The book's images are 8-bit pictures stored as floats ``x = k / 255``, ``k`` in 0..255. A decoder
that gives every one of the 256 levels a probability makes ``-log2 p(x)`` a code length in bits
of that 8-bit image, directly comparable with a lossless compressor's output. Serra et al.'s input
complexity (ICLR 2020), ``S(x) = -log2 p(x) - L(x)`` with ``L`` the PNG length in bits
(:class:`robustvae.ood.InputComplexity`), assumes exactly that: under the book's Bernoulli decoder
the first term is not a code length, and the score turns against incompressible inputs.

The likelihood is the discretized logistic of PixelCNN++ (Salimans, Karpathy, Chen & Kingma, ICLR
2017, Sec. 2.1), one logistic per pixel (no mixture) on the [0, 1] scale, bins of width 1/255
centred on the levels::

    P(k) = sigmoid((k/255 + 0.5/255 - mu) / s) - sigmoid((k/255 - 0.5/255 - mu) / s),  0 < k < 255
    P(0) = sigmoid((0.5/255 - mu) / s),   P(255) = 1 - sigmoid((1 - 0.5/255 - mu) / s)

(the edge levels take the mass outside [0, 1]), so the 256 probabilities sum to 1 for every
``mu`` and ``s`` (:func:`discretized_logistic_log_prob`). A float image is read as the level
``k = round(255 x)`` (:func:`to_levels`), as :func:`robustvae.ood.compressed_bits` quantises it
for PNG, so both code lengths describe the same 8-bit image.

Where ``mu`` and ``s`` come from: ``mu = sigmoid(logits)`` as in the book's other decoders, and
``log s`` is a **second output channel of the decoder**, a function of ``z``, as in PixelCNN++
(whose network outputs every logistic's scale). The alternative, one learned log-scale per pixel
shared by all images, was rejected for two reasons: Adam moves a free parameter by about the
learning rate per step (1e-3, about 750 steps in chapter 2's 12 epochs), so a per-pixel scale would
end near its initial value and the initialisation, not the data, would set the likelihood's
sharpness; and a scale that cannot depend on the image cannot say that one garment is rendered
more sharply than another, which a Bernoulli decoder says through its logits. The cost is one
output channel of the last transposed convolution; the networks are otherwise the chapter's.

:class:`DiscretizedLogisticVAE` is a :class:`robustvae.models.VAE` with that likelihood (ELBO,
IWAE, Likelihood Regret and every chapter-2 detector work unchanged on it),
:class:`DiscretizedVAEConfig` its training config (its own model-cache entry) and
:func:`get_discretized_vae` trains or loads it. This module is apart from :mod:`robustvae.models`
and :mod:`robustvae.ood` on purpose: the model cache keys every model by the code of the modules
that build it, so adding a likelihood here retrains no model of the book.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .models import VAE, ConvDecoder
from .training import VAEConfig, get_vae, make_config

__all__ = [
    "DISCRETIZED", "LEVELS", "LOG_SCALE_MIN", "to_levels", "discretized_logistic_log_prob",
    "nats_to_bits", "DiscretizedLogisticVAE", "DiscretizedVAEConfig", "get_discretized_vae",
]

#: The likelihood's name (``vae.likelihood`` of a :class:`DiscretizedLogisticVAE`).
DISCRETIZED = "discretized-logistic"
#: Grey levels of an 8-bit image.
LEVELS = 256
#: Floor of ``log s`` (s = 1.2e-4 on the [0, 1] scale, 1/32 of a bin: a level's probability can
#: still reach 1 - 1e-7, so the floor bounds no likelihood the data asks for, only the gradients).
LOG_SCALE_MIN = -9.0

_HALF_BIN = 0.5 / (LEVELS - 1)


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """The 8-bit level ``k = round(255 x)`` of every pixel of ``x`` (floats, clipped to [0, 1]), as int64."""
    return (x.clamp(0, 1) * (LEVELS - 1)).round().long()


def discretized_logistic_log_prob(x: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """``log P(k)`` in nats, per pixel, of the level ``k = round(255 x)`` under a logistic with location
    ``mu`` and scale ``s = exp(log_scale)`` discretized into 256 bins (module docstring; Salimans et
    al., ICLR 2017, Eq. 2, on the [0, 1] scale with bins of width 1/255). Same shape as the broadcast
    of ``x``, ``mu`` and ``log_scale``.

    The interior bins use ``sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a))`` in
    logs, exact and free of the cancellation of the difference when both terms are near 0 or 1.
    """
    k = to_levels(x)
    centre = k.to(mu.dtype) / (LEVELS - 1)
    inv_s = torch.exp(-log_scale)
    plus = (centre + _HALF_BIN - mu) * inv_s
    minus = (centre - _HALF_BIN - mu) * inv_s
    log_cdf_plus = F.logsigmoid(plus)         # log sigmoid(plus): level 0 takes everything below
    log_sf_minus = F.logsigmoid(-minus)       # log (1 - sigmoid(minus)): level 255 everything above
    log_mid = log_cdf_plus + log_sf_minus + torch.log(-torch.expm1(-2 * _HALF_BIN * inv_s))
    return torch.where(k == 0, log_cdf_plus, torch.where(k == LEVELS - 1, log_sf_minus, log_mid))


def nats_to_bits(nats):
    """A code length in nats, in bits (divided by ln 2)."""
    return nats / math.log(2)


class DiscretizedLogisticVAE(VAE):
    """A :class:`~robustvae.models.VAE` whose ``p(x|z)`` is a discretized logistic per pixel.

    The decoder is the book's :class:`~robustvae.models.ConvDecoder` with two output channels:
    ``decode(z)`` gives ``(B, 2, 28, 28)``, the logits of ``mu`` (``mu = sigmoid``) and ``log s``
    (floored at :data:`LOG_SCALE_MIN`). ``log_px_given_z`` is a log-probability of the 8-bit image
    (:func:`discretized_logistic_log_prob`), so ``elbo``, ``iwae`` and every score built on them are
    bounds on ``log P(x)`` of the image's levels, and ``-iwae(x) / ln 2`` is a code length in bits.

    ``mean_image`` returns ``mu``, the logistic's location (its mean up to the mass folded into the
    two edge levels). ``likelihood`` is :data:`DISCRETIZED`; the other arguments are the VAE's.

    Example
    -------
    >>> vae = DiscretizedLogisticVAE(latent_dim=4)
    >>> x = torch.randint(0, 256, (3, 1, 28, 28)) / 255
    >>> vae.decode(torch.zeros(3, 4)).shape, vae.iwae(x, k=2).shape
    (torch.Size([3, 2, 28, 28]), torch.Size([3]))
    """

    def __init__(self, latent_dim: int = 16, width: int = 32, hidden: int = 256, beta: float = 1.0,
                 log_scale_min: float = LOG_SCALE_MIN):
        decoder = ConvDecoder(latent_dim, width, hidden)
        decoder.body[-1] = nn.ConvTranspose2d(width, 2, 4, 2, 1)  # location logits and log-scale
        # VAE checks its likelihood against models.LIKELIHOODS; this one is defined here
        super().__init__(latent_dim, width, hidden, likelihood="bernoulli", beta=beta, decoder=decoder)
        self.likelihood = DISCRETIZED
        self.log_scale_min = float(log_scale_min)

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_scale)`` of the decoder's output ``out`` (``(B, 2, H, W)``), each ``(B, 1, H, W)``."""
        if out.dim() != 4 or out.shape[1] != 2:
            raise ValueError(f"Expected the decoder's (B, 2, H, W) output, got shape {tuple(out.shape)}.")
        return torch.sigmoid(out[:, :1]), out[:, 1:].clamp(min=self.log_scale_min)

    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        return self.split(out)[0]

    def log_px_given_z(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        mu, log_scale = self.split(out)
        return discretized_logistic_log_prob(x, mu, log_scale).flatten(1).sum(dim=1)


@dataclass(frozen=True)
class DiscretizedVAEConfig(VAEConfig):
    """Everything that determines a trained :class:`DiscretizedLogisticVAE`: a
    :class:`~robustvae.training.VAEConfig` whose ``likelihood`` is :data:`DISCRETIZED` (its own kind,
    so its own model-cache entry). :meth:`of` gives the config of a given VAE's with this decoder.

    Example
    -------
    >>> cfg = DiscretizedVAEConfig.of(VAEConfig(dataset="fashion-mnist", n_train=4000, epochs=12))
    >>> cfg.n_train, cfg.epochs, cfg.likelihood
    (4000, 12, 'discretized-logistic')
    """

    kind: ClassVar[str] = "discretized-vae"
    CHECKS: ClassVar[dict[str, Any]] = {"choices": {"likelihood": (DISCRETIZED,)}}
    likelihood: str = DISCRETIZED

    def build(self) -> DiscretizedLogisticVAE:
        return DiscretizedLogisticVAE(self.latent_dim, self.width, self.hidden, self.beta)

    @classmethod
    def of(cls, config: VAEConfig) -> "DiscretizedVAEConfig":
        """The VAE ``config`` with the discretized-logistic decoder: every other field kept."""
        if type(config) is not VAEConfig:
            raise TypeError(f"DiscretizedVAEConfig.of needs a VAEConfig, got {type(config).__name__}.")
        return cls(**{**dataclasses.asdict(config), "likelihood": DISCRETIZED})


def get_discretized_vae(config: DiscretizedVAEConfig | None = None, device: str | torch.device = "auto",
                        retrain: bool = False, **overrides) -> tuple[DiscretizedLogisticVAE, dict]:
    """A trained :class:`DiscretizedLogisticVAE` for ``config`` (or ``DiscretizedVAEConfig(**overrides)``)
    and its history, through the model cache: the training of :func:`robustvae.training.get_vae`
    (same images, batches, optimiser and epochs; the loss is the negative ELBO under this decoder)."""
    cfg = make_config(DiscretizedVAEConfig, config, overrides)
    return get_vae(cfg, device=device, retrain=retrain)

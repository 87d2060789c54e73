"""Lipschitz-constrained VAEs whose robustness is chosen before training (chapter 7).

Barrett, Camuto, Willetts & Rainforth (*Certifiably Robust Variational Autoencoders*,
AISTATS 2022) bound how far an input must move before a VAE's reconstruction can change by more
than ``r``, in terms of three Lipschitz constants: ``a`` of the decoder, ``b`` of the encoder
mean and ``c`` of the encoder standard deviation, and the norm ``s = ||sigma(x)||_2`` of the
encoder standard deviation (see :mod:`robustvae.certify`). This module builds a VAE in which
all four are under control:

* three separate dense networks (encoder mean, encoder standard deviation, decoder), as in the
  authors' code (``FabianBarrett/Lipschitz_VAEs``, built on LNets);
* every weight matrix spectrally normalised with torch's own parametrisation
  (:func:`torch.nn.utils.parametrizations.spectral_norm`, Miyato et al., ICLR 2018) and
  followed by a fixed scale ``k^(1/L)``, so an ``L``-layer network is at most ``k``-Lipschitz;
* MaxMin activations (GroupSort with groups of two), which are 1-Lipschitz and gradient-norm
  preserving (Anil, Lucas & Grosse, *Sorting out Lipschitz function approximation*, ICML 2019);
* a standard deviation ``sigma(x) = Proj_{||.|| <= s_max}(s_max * sigmoid(h(x)))``: the sigmoid
  keeps it positive, the projection onto the L2 ball (1-Lipschitz, as Barrett et al.'s ``Clip``
  layer) caps ``||sigma(x)||_2 <= s_max`` for *every* input, which is what makes the certified
  margin positive everywhere;
* the decoder's Lipschitz constant ``a`` is that of the *mean image* ``E[x | z]``: the logits
  network gets ``a / slope``, where ``slope`` bounds the derivative of the likelihood's mean
  function (1/4 for the sigmoid, 1/12 for the continuous Bernoulli mean).

Why spectral normalisation and not orthonormal (Bjorck) layers as in the paper: deel-torchlip
is not a dependency of this book, and on our CPU torch's orthogonal parametrisation made a
training step of a 784-512-512-16 network 2.5x (Cayley map) to 50x (matrix exponential) slower
than spectral normalisation; Bjorck iterations cost several dense products per layer and step. Spectral normalisation only estimates each
norm by power iteration, but that is harmless here: the certificate never trusts the estimate.
:meth:`LipschitzVAE.lipschitz_constants` recomputes each layer's exact spectral norm with an SVD
and multiplies them (the activations are 1-Lipschitz), so the bound holds whatever the power
iteration did. After training, :meth:`LipschitzVAE.tighten` sets the power-iteration vectors
to the exact singular vectors so the normalised layers have norm 1 to float precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from . import cache, certify
from .models import LIKELIHOODS, VAE
from .training import DataConfig, curve_split, fit, make_config, vae_metrics
from .utils import check_choice, check_positive, resolve_device

__all__ = [
    "OUTPUT_SLOPE",
    "MaxMin",
    "LipschitzLinear",
    "LipschitzMLP",
    "LipschitzEncoder",
    "LipschitzDecoder",
    "LipschitzVAE",
    "LipschitzVAEConfig",
    "get_lipschitz_vae",
]

#: The largest derivative of the map logits -> E[x | z] of each likelihood, per pixel: the
#: sigmoid's 1/4, and for the continuous Bernoulli the derivative of its mean in the natural
#: parameter, which is its variance, largest (1/12) at the uniform distribution
#: (Loaiza-Ganem & Cunningham, NeurIPS 2019).
OUTPUT_SLOPE = {"bernoulli": 0.25, "gaussian": 0.25, "continuous-bernoulli": 1.0 / 12.0}


def _exact_norm(w: torch.Tensor) -> float:
    """The exact spectral norm (largest singular value) of ``w``, computed in float64 by SVD."""
    return torch.linalg.matrix_norm(w.detach().double(), ord=2).item()


class MaxMin(nn.Module):
    """GroupSort with groups of two: each pair ``(u, v)`` becomes ``(max(u, v), min(u, v))``.

    1-Lipschitz and gradient-norm preserving: its Jacobian is a permutation matrix wherever it
    exists (Anil, Lucas & Grosse, ICML 2019). The number of features must be even.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2:
            raise ValueError(f"MaxMin needs an even number of features, got {x.shape[-1]}.")
        u, v = x.unflatten(-1, (-1, 2)).unbind(-1)
        return torch.stack((torch.maximum(u, v), torch.minimum(u, v)), dim=-1).flatten(-2)


class LipschitzLinear(nn.Module):
    """``y = k * W_hat x + bias`` with ``W_hat`` spectrally normalised: at most ``k``-Lipschitz.

    ``W_hat = W / sigma_hat(W)``, ``sigma_hat`` being torch's power-iteration estimate
    (:func:`torch.nn.utils.parametrizations.spectral_norm`); :meth:`lipschitz_bound` gives the
    exact bound ``k * ||W_hat||_2`` by SVD.
    """

    def __init__(self, in_features: int, out_features: int, lipschitz: float = 1.0):
        super().__init__()
        check_positive("lipschitz", lipschitz, integer=False, allow_zero=True)
        self.linear = parametrizations.spectral_norm(nn.Linear(in_features, out_features))
        self.register_buffer("scale", torch.tensor(float(lipschitz)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.linear.weight * self.scale, self.linear.bias)

    def lipschitz_bound(self) -> float:
        """``k * ||W_hat||_2``, with the spectral norm computed exactly (SVD, float64)."""
        return float(self.scale) * _exact_norm(self.linear.weight)

    @torch.no_grad()
    def tighten(self) -> None:
        """Set the power-iteration vectors to the exact top singular vectors of ``W``.

        Afterwards torch's estimate ``u^T W v`` is the exact largest singular value, so the
        normalised weight has spectral norm 1 up to float rounding.
        """
        w = self.linear.parametrizations.weight.original
        u, _, vh = torch.linalg.svd(w.double(), full_matrices=False)
        sn = self.linear.parametrizations.weight[0]
        sn._u.copy_(u[:, 0].to(sn._u.dtype))
        sn._v.copy_(vh[0].to(sn._v.dtype))


class LipschitzMLP(nn.Module):
    """A dense network ``sizes[0] -> ... -> sizes[-1]``, at most ``lipschitz``-Lipschitz in L2.

    Each of the ``L`` layers is a :class:`LipschitzLinear` scaled by ``lipschitz ** (1 / L)``,
    with :class:`MaxMin` between layers (as in Barrett et al. 2022, who follow Anil et al. 2019).
    """

    def __init__(self, sizes: list[int], lipschitz: float):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"sizes needs at least an input and an output size, got {sizes}.")
        check_positive("lipschitz", lipschitz, integer=False, allow_zero=True)
        n_layers = len(sizes) - 1
        per_layer = float(lipschitz) ** (1.0 / n_layers)
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i > 0:
                layers.append(MaxMin())
            layers.append(LipschitzLinear(n_in, n_out, per_layer))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def linear_layers(self) -> list[LipschitzLinear]:
        return [m for m in self.net if isinstance(m, LipschitzLinear)]

    def lipschitz_bound(self) -> float:
        """The product of the layers' exact bounds (MaxMin is 1-Lipschitz)."""
        return math.prod(layer.lipschitz_bound() for layer in self.linear_layers())

    def tighten(self) -> None:
        for layer in self.linear_layers():
            layer.tighten()


class LipschitzEncoder(nn.Module):
    """q(z|x) = N(mu(x), diag sigma(x)^2) with ``mu`` at most b-Lipschitz, ``sigma`` at most
    c-Lipschitz and ``||sigma(x)||_2 <= std_max`` for every x.

    ``sigma(x) = Proj(std_max * sigmoid(h(x)))``, with ``h`` a :class:`LipschitzMLP` of constant
    ``4 c / std_max`` (the sigmoid is 1/4-Lipschitz), a floor at ``1e-6`` (so ``log sigma`` is
    finite) and ``Proj`` the projection onto the L2 ball of radius ``std_max`` (1-Lipschitz).
    ``forward(x)`` returns ``(mu, log_var)`` like :class:`~robustvae.models.ConvEncoder`.
    """

    def __init__(self, latent_dim: int, hidden: int, mean_lipschitz: float, std_lipschitz: float,
                 std_max: float, std_hidden: int | None = None, in_features: int = 784):
        super().__init__()
        check_positive("std_max", std_max, integer=False)
        std_hidden = hidden if std_hidden is None else std_hidden
        self.mean = LipschitzMLP([in_features, hidden, hidden, latent_dim], mean_lipschitz)
        self.std_net = LipschitzMLP([in_features, std_hidden, std_hidden, latent_dim], 4.0 * std_lipschitz / std_max)
        self.register_buffer("std_max", torch.tensor(float(std_max)))

    def std(self, x: torch.Tensor) -> torch.Tensor:
        """``sigma(x)``, ``(B, latent_dim)``, every row of L2 norm at most ``std_max``."""
        s = (self.std_max * torch.sigmoid(self.std_net(x.flatten(1)))).clamp_min(1e-6)
        return s * torch.clamp(self.std_max / s.norm(dim=1, keepdim=True), max=1.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(x.flatten(1)), 2.0 * self.std(x).log()

    def lipschitz_bounds(self) -> tuple[float, float]:
        """Exact upper bounds ``(b, c)`` on the Lipschitz constants of ``mu`` and ``sigma``."""
        return self.mean.lipschitz_bound(), self.std_net.lipschitz_bound() * float(self.std_max) / 4.0


class LipschitzDecoder(nn.Module):
    """Logits of p(x|z) from a :class:`LipschitzMLP` of constant ``a / slope``, shaped ``(B, 1, 28, 28)``,
    so that the mean image ``E[x | z]`` is at most ``a``-Lipschitz in z."""

    def __init__(self, latent_dim: int, hidden: int, lipschitz: float, likelihood: str = "bernoulli",
                 image_shape: tuple[int, ...] = (1, 28, 28)):
        super().__init__()
        check_choice("likelihood", likelihood, LIKELIHOODS)
        self.slope = OUTPUT_SLOPE[likelihood]
        self.image_shape = tuple(image_shape)
        self.net = LipschitzMLP([latent_dim, hidden, hidden, math.prod(image_shape)], lipschitz / self.slope)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(1, self.image_shape)

    def lipschitz_bound(self) -> float:
        """Exact upper bound on the Lipschitz constant of z -> E[x | z]."""
        return self.net.lipschitz_bound() * self.slope


class LipschitzVAE(VAE):
    """A :class:`~robustvae.models.VAE` with Lipschitz-constrained encoder mean, encoder standard
    deviation and decoder (Barrett et al., AISTATS 2022).

    Parameters
    ----------
    latent_dim, hidden : latent size and width of the two hidden layers of the encoder mean and
        the decoder; ``std_hidden`` that of the encoder standard deviation (default ``hidden``).
    decoder_lipschitz, mean_lipschitz, std_lipschitz : the design constants ``a``, ``b``, ``c``.
    std_max : the cap ``s_max`` on ``||sigma(x)||_2``.
    likelihood, beta : as for :class:`~robustvae.models.VAE`.

    Everything the VAE does (``encode``, ``elbo``, ``reconstruct``, ...) is inherited;
    :meth:`lipschitz_constants` gives the constants the certificate uses.

    Example
    -------
    >>> vae = LipschitzVAE(latent_dim=8, hidden=64, decoder_lipschitz=2.0, mean_lipschitz=1.0,
    ...                    std_lipschitz=0.2, std_max=0.5)
    >>> sorted(vae.lipschitz_constants())
    ['a', 'b', 'c', 's_max']
    """

    def __init__(self, latent_dim: int = 16, hidden: int = 256, decoder_lipschitz: float = 4.0,
                 mean_lipschitz: float = 1.0, std_lipschitz: float = 0.25, std_max: float = 0.2,
                 likelihood: str = "bernoulli", beta: float = 1.0, std_hidden: int | None = None):
        std_hidden = hidden if std_hidden is None else std_hidden
        if hidden % 2 or std_hidden % 2:
            raise ValueError(f"hidden and std_hidden must be even (MaxMin pairs units), got {hidden}, {std_hidden}.")
        encoder = LipschitzEncoder(latent_dim, hidden, mean_lipschitz, std_lipschitz, std_max, std_hidden)
        decoder = LipschitzDecoder(latent_dim, hidden, decoder_lipschitz, likelihood)
        super().__init__(latent_dim=latent_dim, likelihood=likelihood, beta=beta, encoder=encoder, decoder=decoder)

    def std(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder standard deviation ``sigma(x)``, ``(B, latent_dim)``."""
        return self.encoder.std(x)

    @torch.no_grad()
    def lipschitz_constants(self) -> dict[str, float]:
        """Upper bounds that truly hold: ``a`` (decoder mean image), ``b`` (encoder mean), ``c``
        (encoder std), each the product of its layers' *exact* spectral norms times the scales
        and output slopes, and the cap ``s_max`` on ``||sigma(x)||_2``."""
        b, c = self.encoder.lipschitz_bounds()
        return {"a": self.decoder.lipschitz_bound(), "b": b, "c": c, "s_max": float(self.encoder.std_max)}

    def tighten(self) -> None:
        """Make every layer's power-iteration estimate exact (see :meth:`LipschitzLinear.tighten`)."""
        for m in self.modules():
            if isinstance(m, LipschitzMLP):
                m.tighten()


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LipschitzVAEConfig(DataConfig):
    """Everything that determines a trained :class:`LipschitzVAE`, robustness included.

    The Lipschitz constants are not set by hand: they follow from the requested certified
    ``margin`` through :func:`robustvae.certify.lipschitz_for_margin` ("robustness up front",
    Barrett et al. 2022, Sec. 4). ``margin``, ``r`` and ``decoder_lipschitz`` are L2 distances
    in pixel space (images in [0, 1], 784 pixels).

    Fields
    ------
    margin : requested certified margin R*: no perturbation with ``||delta||_2 < R*`` may change
        the reconstruction by more than ``r`` with probability above ``1 - prob``.
    r, prob : the tolerated reconstruction change and the probability of staying within it
        (``prob = 0.5`` is the paper's r-robustness).
    decoder_lipschitz : ``a``, chosen for reconstruction quality; ``b`` and ``c`` then follow.
    hidden, std_hidden : widths of the mean/decoder networks and of the (small) std network.
    std_fraction : ``s_max`` as a fraction of its largest admissible value.
    std_ratio : ``c / b``.
    """

    kind: ClassVar[str] = "lipschitz-vae"
    CHECKS: ClassVar[dict[str, Any]] = {"choices": {"likelihood": LIKELIHOODS},
                                        "counts": ("latent_dim", "hidden", "std_hidden"),
                                        "positive": ("margin", "r", "decoder_lipschitz"),
                                        "non_negative": ("beta", "std_ratio")}
    margin: float = 0.5
    r: float = 4.0
    prob: float = 0.5
    decoder_lipschitz: float = 4.0
    std_fraction: float = 0.5
    std_ratio: float = 0.25
    latent_dim: int = 16
    hidden: int = 256
    std_hidden: int = 64
    likelihood: str = "bernoulli"
    beta: float = 1.0
    epochs: int = 20
    lr: float = 2e-3

    def _check(self) -> None:
        if not 0 < self.prob < 1:
            raise ValueError(f"prob must lie in (0, 1), got {self.prob!r}.")
        if not 0 < self.std_fraction < 1:
            raise ValueError(f"std_fraction must lie in (0, 1), got {self.std_fraction!r}.")
        if self.hidden % 2 or self.std_hidden % 2:
            raise ValueError(f"hidden and std_hidden must be even (MaxMin pairs units), got "
                             f"{self.hidden}, {self.std_hidden}.")

    def design(self) -> dict[str, float]:
        """The constants ``a, b, c, s_max`` that guarantee ``margin`` (see :func:`~robustvae.certify.lipschitz_for_margin`)."""
        return certify.lipschitz_for_margin(
            self.margin, self.r, self.decoder_lipschitz, prob=self.prob,
            std_fraction=self.std_fraction, std_ratio=self.std_ratio)

    def build(self) -> LipschitzVAE:
        d = self.design()
        return LipschitzVAE(self.latent_dim, self.hidden, d["a"], d["b"], d["c"], d["s_max"],
                            self.likelihood, self.beta, self.std_hidden)


def get_lipschitz_vae(config: LipschitzVAEConfig | None = None, device: str | torch.device = "auto",
                      retrain: bool = False, **overrides) -> tuple[LipschitzVAE, dict]:
    """A trained Lipschitz VAE for ``config`` (or ``LipschitzVAEConfig(**overrides)``), and its history.

    The same loop as :func:`robustvae.training.get_vae` (Adam on the beta-weighted negative
    ELBO, seeded shuffling; history with ``train_loss``, ``test_elbo``, ``test_mse``), through
    the model cache. At the end of every epoch (and after training) :meth:`LipschitzVAE.tighten`
    makes the spectral normalisation exact: one power iteration per step lags behind Adam's
    updates by a few percent, and correcting it only at the end would change the trained
    function by more. The stored model and its history are those of the tightened network.

    Example
    -------
    >>> vae, hist = get_lipschitz_vae(margin=0.5, r=4.0)             # doctest: +SKIP
    >>> robustvae.certify.certified_margins(vae, x, r=4.0).min()     # doctest: +SKIP
    """
    cfg = make_config(LipschitzVAEConfig, config, overrides)
    dev = resolve_device(device)

    def train(model: LipschitzVAE) -> dict:
        x, y = cfg.training_data()
        x_test, _ = curve_split(cfg.dataset)

        def on_epoch(m, epoch):
            m.tighten()   # exact norms at every epoch end, so the last correction is small
            met = vae_metrics(m, x_test)
            return {"test_elbo": met["elbo"], "test_mse": met["mse"]}

        history = fit(
            model, lambda m, xb, yb: m.loss(xb), x, y,
            epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
            desc=f"Lipschitz VAE R*={cfg.margin} ({cfg.dataset})", on_epoch=on_epoch,
        )
        model.tighten()
        return history

    return cache.load_or_train(cfg, cfg.build, train, dev, retrain)

"""The models of the book: a small CNN classifier and a convolutional VAE.

The VAE is written as three swappable parts (an encoder giving ``mu`` and ``log_var``, a
decoder giving the parameters of ``p(x|z)``, and a likelihood) so that later chapters can
bring beta-TCVAE objectives, conditional VAEs or Lipschitz-constrained networks without
rewriting it.

References
----------
Kingma & Welling (2014), *Auto-Encoding Variational Bayes*, ICLR.
Higgins et al. (2017), *beta-VAE*, ICLR.
Burda, Grosse & Salakhutdinov (2016), *Importance Weighted Autoencoders*, ICLR.
Loaiza-Ganem & Cunningham (2019), *The continuous Bernoulli*, NeurIPS.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Classifier", "ConvEncoder", "ConvDecoder", "VAE", "LIKELIHOODS", "KL_FORMS", "gaussian_kl"]

#: Decoder likelihoods p(x|z) the VAE supports.
LIKELIHOODS = ("bernoulli", "continuous-bernoulli", "gaussian")

LOG_2PI = math.log(2 * math.pi)

#: The memory layout of the book's convolutions on feature maps: channels last (NHWC). The same
#: arithmetic as the default NCHW layout, in the order oneDNN's CPU kernels are fastest at; it
#: matters most for max-pooling, whose NCHW kernel took 60% of the classifier's forward pass.
#: Measured side by side on the 2-core CPU under the book's pinned numerics (one thread, AVX2;
#: ``benchmarks/bench_layout.py``): the classifier's forward pass 2.2x faster, its input gradient
#: (every attack's step) 1.3x and its training step 1.5x; the VAE decoder's forward pass 1.3x,
#: the VAE's training step and input gradient 1.1x. Logits agree with NCHW to rounding (1e-7).
CHANNELS_LAST = torch.channels_last


def channels_last(module: nn.Module) -> nn.Module:
    """``module`` with its 4-D weights (convolutions) stored channels last (:data:`CHANNELS_LAST`);
    returns it. Loading a state dict keeps the layout (the values are copied into these tensors)."""
    return module.to(memory_format=CHANNELS_LAST)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """A 4-D ``x`` in the channels-last layout (a copy only when it is not already). Inside a
    ``torch.func`` transform (``vmap``, ``jvp``: :class:`robustvae.purify.TangentBPDA`), which
    cannot change a layout, ``x`` is returned as it is: the same values, in the default layout."""
    if torch._C._functorch.is_functorch_wrapped_tensor(x):
        return x
    return x.contiguous(memory_format=CHANNELS_LAST)


class Classifier(nn.Module):
    """A small CNN for 28x28 grey images: two 3x3 convolutions, max-pooling, two dense layers.

    ``forward(x)`` takes ``(B, 1, 28, 28)`` images in [0, 1] and returns ``(B, n_classes)`` logits.
    """

    def __init__(self, n_classes: int = 10, width: int = 32, dropout: float = 0.25):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),          # 14x14
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * 49, 128), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(128, n_classes),
        )
        channels_last(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(_nhwc(x)))


class ConvEncoder(nn.Module):
    """q(z|x) = N(mu(x), diag(exp(log_var(x)))): two stride-2 convolutions and a dense layer.

    ``forward(x)`` returns ``(mu, log_var)``, each ``(B, latent_dim)``.
    """

    def __init__(self, latent_dim: int = 16, width: int = 32, hidden: int = 256):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1), nn.ReLU(),              # 14x14
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(),      # 7x7
            nn.Flatten(), nn.Linear(2 * width * 49, hidden), nn.ReLU(),
        )
        self.mu = nn.Linear(hidden, latent_dim)
        self.log_var = nn.Linear(hidden, latent_dim)
        channels_last(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(_nhwc(x))
        return self.mu(h), self.log_var(h).clamp(-12.0, 8.0)


class ConvDecoder(nn.Module):
    """The mirror of :class:`ConvEncoder`: ``forward(z)`` gives ``(B, 1, 28, 28)`` logits."""

    def __init__(self, latent_dim: int = 16, width: int = 32, hidden: int = 256):
        super().__init__()
        self.width = width
        self.body = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * width * 49), nn.ReLU(),
            nn.Unflatten(1, (2 * width, 7, 7)),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),  # 14x14
            nn.ConvTranspose2d(width, 1, 4, 2, 1),                      # 28x28
        )
        channels_last(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for layer in self.body:
            h = layer(h)
            if isinstance(layer, nn.Unflatten):  # the dense part ends: feature maps from here
                h = _nhwc(h)
        return h


#: Float evaluation orders of the two-Gaussian KL in :func:`gaussian_kl` (equal in exact arithmetic).
KL_FORMS = ("quotient", "log-difference")


def gaussian_kl(mu: torch.Tensor, log_var: torch.Tensor, mu_p: torch.Tensor | None = None,
                log_var_p: torch.Tensor | None = None, form: str = "quotient") -> torch.Tensor:
    """KL between diagonal Gaussians, per row, summed over the last (latent) dimension.

    ``KL(N(mu, diag e^log_var) || N(mu_p, diag e^log_var_p))``; without ``mu_p`` and
    ``log_var_p`` the second Gaussian is the prior ``N(0, I)``. The library's one KL of this
    kind: the VAE's ELBO, the latent attacks (:func:`robustvae.attacks.latent_kl`), the
    encoder-KL attack of :mod:`robustvae.rrobust` and the conditional VAE of
    :mod:`robustvae.perturbation` (:func:`robustvae.perturbation.cvae_kl`) all call it.

    Parameters
    ----------
    mu, log_var : mean and log-variance of the first Gaussian, shape ``(..., d)``.
    mu_p, log_var_p : mean and log-variance of the second Gaussian (broadcastable to ``mu``);
        give both or neither. Neither: ``N(0, I)``, with
        ``KL = 1/2 * sum_j (mu_j^2 + e^log_var_j - log_var_j - 1)`` (Kingma & Welling 2014, App. B).
    form : how the two-Gaussian KL is evaluated in floating point, one of :data:`KL_FORMS`.
        The forms agree in exact arithmetic and differ only in rounding; each caller keeps the
        one it has always used, so that stored results stay bit-identical.

        * ``"quotient"`` (default):
          ``1/2 * sum_j [log_var_p - log_var + (e^log_var + (mu - mu_p)^2) / e^log_var_p - 1]``.
        * ``"log-difference"``:
          ``1/2 * sum_j [e^(log_var - log_var_p) + (mu - mu_p)^2 e^(-log_var_p) - 1 + log_var_p - log_var]``,
          which does not overflow when both variances are large.

        Ignored for the prior ``N(0, I)``.

    Returns
    -------
    Tensor of shape ``mu.shape[:-1]``: the KL in nats.
    """
    if (mu_p is None) != (log_var_p is None):
        raise ValueError("give both mu_p and log_var_p, or neither (for the prior N(0, I)).")
    if mu_p is None:
        return 0.5 * (mu.pow(2) + log_var.exp() - log_var - 1.0).sum(dim=-1)
    if form == "quotient":
        return 0.5 * (log_var_p - log_var + (log_var.exp() + (mu - mu_p).pow(2)) / log_var_p.exp() - 1.0).sum(-1)
    if form == "log-difference":
        return 0.5 * ((log_var - log_var_p).exp() + (mu - mu_p).pow(2) * (-log_var_p).exp()
                      - 1.0 + log_var_p - log_var).sum(-1)
    raise ValueError(f"Unknown form {form!r}. Valid forms: {', '.join(KL_FORMS)}.")


class VAE(nn.Module):
    """A variational autoencoder with a Gaussian encoder and a choice of decoder likelihood.

    Parameters
    ----------
    latent_dim : size of z; the prior is p(z) = N(0, I).
    width, hidden : channel and dense widths of the default convolutional networks.
    likelihood : ``p(x|z)`` for pixels in [0, 1], one of :data:`LIKELIHOODS`:

        * ``"bernoulli"`` (default): ``log p(x|z) = sum_i x_i log p_i + (1 - x_i) log(1 - p_i)``,
          the usual binary cross-entropy. On grey-level pixels it is not a normalised density,
          which is part of why likelihood-based OOD detection fails (chapter on OOD).
        * ``"continuous-bernoulli"``: the normalised version on [0, 1] (Loaiza-Ganem &
          Cunningham 2019), used by Barrett et al. (2022).
        * ``"gaussian"``: ``N(x; sigmoid(logits), obs_std^2)`` with a fixed ``obs_std``.
    beta : weight of the KL term in the training objective (beta-VAE, Higgins et al. 2017);
        ``elbo()`` itself is always the true ELBO (beta = 1).
    encoder, decoder : optional modules replacing the default networks (same signatures as
        :class:`ConvEncoder` and :class:`ConvDecoder`).

    Shapes: ``x`` is ``(B, 1, 28, 28)``; ``mu``, ``log_var``, ``z`` are ``(B, latent_dim)``.

    Example
    -------
    >>> vae = VAE(latent_dim=8)
    >>> x = torch.rand(4, 1, 28, 28)
    >>> out = vae.elbo(x)
    >>> out["elbo"].shape
    torch.Size([4])
    """

    def __init__(
        self,
        latent_dim: int = 16,
        width: int = 32,
        hidden: int = 256,
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        obs_std: float = 0.1,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"Unknown likelihood {likelihood!r}. Valid: {', '.join(LIKELIHOODS)}.")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}.")
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.beta = float(beta)
        self.obs_std = float(obs_std)
        self.encoder = encoder if encoder is not None else ConvEncoder(latent_dim, width, hidden)
        self.decoder = decoder if decoder is not None else ConvDecoder(latent_dim, width, hidden)

    # -- the three parts ---------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_var)`` of q(z|x)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder logits, ``(B, 1, 28, 28)``: the parameters of p(x|z)."""
        return self.decoder(z)

    @staticmethod
    def reparameterize(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I) (the reparameterisation trick)."""
        return mu + (0.5 * log_var).exp() * torch.randn_like(mu)

    def mean_image(self, logits: torch.Tensor) -> torch.Tensor:
        """E[x|z] under the decoder likelihood, in [0, 1]."""
        if self.likelihood == "continuous-bernoulli":
            return torch.distributions.ContinuousBernoulli(logits=logits).mean
        return torch.sigmoid(logits)

    def log_px_given_z(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example (summed over pixels), in nats."""
        if self.likelihood == "bernoulli":
            ll = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        elif self.likelihood == "continuous-bernoulli":
            ll = torch.distributions.ContinuousBernoulli(logits=logits).log_prob(x)
        else:
            mean = torch.sigmoid(logits)
            ll = -0.5 * ((x - mean) / self.obs_std).pow(2) - math.log(self.obs_std) - 0.5 * LOG_2PI
        return ll.flatten(1).sum(dim=1)

    # -- what chapters use ---------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One stochastic pass: ``(logits, mu, log_var)``."""
        mu, log_var = self.encode(x)
        z = self.reparameterize(mu, log_var)
        return self.decode(z), mu, log_var

    def reconstruct(self, x: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """E[x|z] for z ~ q(z|x) (``sample=True``) or z = mu(x) (``sample=False``)."""
        mu, log_var = self.encode(x)
        z = self.reparameterize(mu, log_var) if sample else mu
        return self.mean_image(self.decode(z))

    def elbo(self, x: torch.Tensor, n_samples: int = 1) -> dict[str, torch.Tensor]:
        """The evidence lower bound, per example (nats), with its two terms.

        ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)), the expectation estimated with
        ``n_samples`` reparameterised samples and the KL in closed form.
        Returns a dict with ``elbo``, ``rec`` (the expected log-likelihood) and ``kl``, each ``(B,)``.
        """
        mu, log_var = self.encode(x)
        rec = 0.0
        for _ in range(n_samples):
            z = self.reparameterize(mu, log_var)
            rec = rec + self.log_px_given_z(x, self.decode(z))
        rec = rec / n_samples
        kl = gaussian_kl(mu, log_var)
        return {"elbo": rec - kl, "rec": rec, "kl": kl}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The training objective: mean over the batch of -(E_q[log p(x|z)] - beta * KL)."""
        out = self.elbo(x)
        return -(out["rec"] - self.beta * out["kl"]).mean()

    def iwae(self, x: torch.Tensor, k: int = 64, chunk: int = 16,
             posterior: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Importance-weighted estimate of log p(x) per example (nats), with ``k`` samples.

        log p(x) >= L_k = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)
        (Burda et al. 2016, Eq. 8). L_1 is the ELBO and L_k grows with k towards log p(x).
        Samples are drawn in chunks of ``chunk`` to bound memory. ``posterior=(mu, log_var)``
        replaces the encoder's q(z|x) by another Gaussian (the bound holds for any q).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        mu, log_var = self.encode(x) if posterior is None else posterior
        std = (0.5 * log_var).exp()
        log_ws = []
        done = 0
        while done < k:
            m = min(chunk, k - done)
            eps = torch.randn((m,) + mu.shape, device=mu.device, dtype=mu.dtype)
            z = mu.unsqueeze(0) + std.unsqueeze(0) * eps                    # (m, B, d)
            logits = self.decode(z.flatten(0, 1))                          # (m*B, 1, 28, 28)
            x_rep = x.unsqueeze(0).expand((m,) + x.shape).flatten(0, 1)
            log_px = self.log_px_given_z(x_rep, logits).view(m, -1)         # (m, B)
            log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
            log_qz = -0.5 * (eps.pow(2) + LOG_2PI + log_var.unsqueeze(0)).sum(-1)
            log_ws.append(log_px + log_pz - log_qz)
            done += m
        log_w = torch.cat(log_ws, dim=0)
        return torch.logsumexp(log_w, dim=0) - math.log(k)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` images E[x|z] with z ~ p(z) = N(0, I)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, device=device)
        return self.mean_image(self.decode(z))

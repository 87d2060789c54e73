"""Tiny models for ``tests/test_score.py``: factories the ``score`` command imports by name.

``MLPVAE`` is a VAE that is *not* one of the library's classes: it has ``encode`` and ``decode``
only, as a third-party model might, so scoring it exercises the generic helpers.
"""

import torch
from torch import nn

import robustvae as rv


class MLPVAE(nn.Module):
    """A two-layer MLP VAE with only ``encode(x) -> (mu, log_var)`` and ``decode(z) -> logits``."""

    def __init__(self, latent_dim: int = 4, hidden: int = 32):
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))
        self.dec = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 784))

    def encode(self, x):
        mu, log_var = self.enc(x).chunk(2, dim=1)
        return mu, log_var.clamp(-8, 4)

    def decode(self, z):
        return self.dec(z).view(-1, 1, 28, 28)


class WrongShapeVAE(MLPVAE):
    """Decodes to 784-vectors instead of 1x28x28 images."""

    def decode(self, z):
        return self.dec(z)


class ImageDecoderVAE(MLPVAE):
    """Decodes to values outside [0, 1] and claims they are images (``mean_image`` is the identity)."""

    def decode(self, z):
        return 3.0 * self.dec(z).view(-1, 1, 28, 28)

    def mean_image(self, logits):
        return logits


def mlp_vae() -> MLPVAE:
    torch.manual_seed(0)
    return MLPVAE()


def wrong_shape_vae() -> WrongShapeVAE:
    torch.manual_seed(0)
    return WrongShapeVAE()


def image_decoder_vae() -> ImageDecoderVAE:
    torch.manual_seed(0)
    return ImageDecoderVAE()


def book_vae() -> rv.VAE:
    """The book's VAE class, tiny."""
    torch.manual_seed(0)
    return rv.VAE(latent_dim=4, width=8, hidden=32)


def logistic() -> nn.Module:
    """A 784 -> 10 linear classifier (untrained weights; the tests load trained ones)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def not_a_module():
    return "not a model"


def chapter1_vae() -> rv.VAE:
    """Chapter 1's (and chapter 9's first row's) VAE, through the model cache (trained if absent)."""
    return rv.get_vae(dataset="mnist-5k", epochs=30, latent_dim=16, beta=1.0, likelihood="bernoulli", seed=0,
                      device="cpu")[0]


def book_architecture_vae() -> rv.VAE:
    """The book's VAE architecture (latent 16, default widths), untrained: the benchmark's model."""
    torch.manual_seed(0)
    return rv.VAE(latent_dim=16)


def book_architecture_classifier() -> nn.Module:
    """The book's classifier architecture, untrained: the benchmark's classifier."""
    torch.manual_seed(0)
    return rv.Classifier()

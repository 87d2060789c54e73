"""beta-TCVAE: the VAE trained with a heavier penalty on the total correlation of q(z).

Chen, Li, Grosse & Duvenaud (2018), *Isolating Sources of Disentanglement in Variational
Autoencoders*, NeurIPS. The KL term of the ELBO, averaged over the data, splits into three
(their Eq. 2):

    E_p(x)[KL(q(z|x) || p(z))] = I_q(x; z)                            (index-code mutual information)
                               + KL(q(z) || prod_j q(z_j))            (total correlation, TC)
                               + sum_j KL(q(z_j) || p(z_j))           (dimension-wise KL)

and beta-TCVAE maximises ``E[log p(x|z)] - alpha * MI - beta * TC - gamma * DWKL`` with
``alpha = gamma = 1`` (their Eq. 4). The aggregate posterior ``q(z)`` and its marginals are
estimated on each minibatch of size ``M`` drawn from ``N`` training points by minibatch-weighted
sampling (their Eq. 5):

    log q(z_i) ~= logsumexp_j log q(z_i | x_j) - log(N M),

and likewise per dimension for ``log q(z_ij)``. With ``alpha = beta = gamma = 1`` the objective
is the usual single-sample ELBO.

``get_tcvae()`` trains one through the model cache, as :func:`robustvae.training.get_vae` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from . import cache
from .models import LIKELIHOODS, VAE
from .training import DataConfig, curve_split, fit, make_config, vae_metrics
from .utils import resolve_device

__all__ = ["TCVAE", "TCVAEConfig", "get_tcvae", "gaussian_log_density"]

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """``log N(z; mu, exp(log_var))`` elementwise (no sum), broadcasting the three arguments."""
    return -0.5 * (LOG_2PI + log_var + (z - mu).pow(2) / log_var.exp())


class TCVAE(VAE):
    """A :class:`~robustvae.models.VAE` whose training loss is the beta-TCVAE objective.

    Parameters as :class:`~robustvae.models.VAE`, plus

    beta : weight of the total-correlation term (the ``beta`` of beta-TCVAE, Chen et al. 2018).
    alpha, gamma : weights of the mutual-information and dimension-wise KL terms (1 in the paper).
    dataset_size : ``N``, the number of training points, for minibatch-weighted sampling;
        :func:`get_tcvae` sets it to the size of the training set.

    ``elbo()``, ``iwae()``, ``reconstruct()`` are those of the VAE: the model is the same,
    only the objective differs.
    """

    def __init__(self, latent_dim: int = 16, width: int = 32, hidden: int = 256,
                 likelihood: str = "bernoulli", beta: float = 6.0, alpha: float = 1.0,
                 gamma: float = 1.0, dataset_size: int | None = None, **kwargs):
        super().__init__(latent_dim, width, hidden, likelihood, beta, **kwargs)
        for name, value in (("alpha", alpha), ("gamma", gamma)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if dataset_size is not None and dataset_size < 1:
            raise ValueError(f"dataset_size must be a positive integer, got {dataset_size}.")
        self.alpha, self.gamma = float(alpha), float(gamma)
        # stored with the weights, so that a model loaded from the cache can be trained further
        self.register_buffer("n_train_points", torch.tensor(dataset_size or 0, dtype=torch.long))

    @property
    def dataset_size(self) -> int | None:
        """``N`` of minibatch-weighted sampling (None until set)."""
        n = int(self.n_train_points)
        return n if n > 0 else None

    @dataset_size.setter
    def dataset_size(self, n: int | None) -> None:
        if n is not None and n < 1:
            raise ValueError(f"dataset_size must be a positive integer, got {n}.")
        self.n_train_points.fill_(n or 0)

    def decomposition(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One-sample estimates, per example, of the terms of the objective (Chen et al. 2018).

        Returns ``rec`` (log p(x|z)), ``mi``, ``tc``, ``dwkl`` (minibatch-weighted sampling)
        and ``kl`` = ``log q(z|x) - log p(z)`` = ``mi + tc + dwkl``, each ``(M,)``, in nats, for
        one draw ``z ~ q(z|x)`` per example.
        """
        if self.dataset_size is None:
            raise ValueError("dataset_size (N, the number of training points) must be set before "
                             "computing the beta-TCVAE terms; get_tcvae() sets it.")
        m = len(x)
        mu, log_var = self.encode(x)
        z = self.reparameterize(mu, log_var)
        rec = self.log_px_given_z(x, self.decode(z))
        log_qz_x = gaussian_log_density(z, mu, log_var).sum(1)
        log_pz = (-0.5 * (LOG_2PI + z.pow(2))).sum(1)
        # log q(z_i[k] | x_j) for every pair (i, j) and dimension k: (M, M, d)
        mat = gaussian_log_density(z.unsqueeze(1), mu.unsqueeze(0), log_var.unsqueeze(0))
        log_nm = math.log(self.dataset_size * m)
        log_qz = torch.logsumexp(mat.sum(2), dim=1) - log_nm
        log_qz_prod = (torch.logsumexp(mat, dim=1) - log_nm).sum(1)
        return {"rec": rec, "mi": log_qz_x - log_qz, "tc": log_qz - log_qz_prod,
                "dwkl": log_qz_prod - log_pz, "kl": log_qz_x - log_pz}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of ``-(log p(x|z) - alpha MI - beta TC - gamma DWKL)``."""
        t = self.decomposition(x)
        return -(t["rec"] - self.alpha * t["mi"] - self.beta * t["tc"] - self.gamma * t["dwkl"]).mean()


@dataclass(frozen=True)
class TCVAEConfig(DataConfig):
    """Everything that determines a trained :class:`TCVAE`."""

    kind: ClassVar[str] = "tcvae"
    CHECKS: ClassVar[dict[str, Any]] = {"choices": {"likelihood": LIKELIHOODS},
                                        "counts": ("latent_dim", "width", "hidden"),
                                        "non_negative": ("beta", "alpha", "gamma")}
    latent_dim: int = 16
    width: int = 32
    hidden: int = 256
    likelihood: str = "bernoulli"
    beta: float = 6.0
    alpha: float = 1.0
    gamma: float = 1.0
    epochs: int = 30

    def _check(self) -> None:
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2: minibatch-weighted sampling needs other examples.")

    def build(self) -> TCVAE:
        return TCVAE(self.latent_dim, self.width, self.hidden, self.likelihood,
                     beta=self.beta, alpha=self.alpha, gamma=self.gamma)


def get_tcvae(config: TCVAEConfig | None = None, device: str | torch.device = "auto",
              retrain: bool = False, **overrides) -> tuple[TCVAE, dict]:
    """A trained beta-TCVAE for ``config`` (or ``TCVAEConfig(**overrides)``), and its history.

    Adam on the beta-TCVAE objective with seeded shuffling, through the model cache; the history
    has per-epoch ``train_loss``, ``test_elbo`` and ``test_mse`` as :func:`~robustvae.get_vae`'s.
    """
    cfg = make_config(TCVAEConfig, config, overrides)
    dev = resolve_device(device)

    def train(model):
        x, y = cfg.training_data()
        x_test, _ = curve_split(cfg.dataset)
        model.dataset_size = len(x)

        def on_epoch(m, epoch):
            met = vae_metrics(m, x_test)
            return {"test_elbo": met["elbo"], "test_mse": met["mse"]}

        return fit(model, lambda m, xb, yb: m.loss(xb), x, y, epochs=cfg.epochs,
                   batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                   desc=f"beta-TCVAE beta={cfg.beta} ({cfg.dataset})", on_epoch=on_epoch)

    model, history = cache.load_or_train(cfg, cfg.build, train, dev, retrain)
    return model, history

"""Deterministic training of the book's models, through the model cache.

``get_classifier()`` and ``get_vae()`` are what chapters call: they return a trained model,
loading it from the cache when a checkpoint for the exact config exists. Each config is a
frozen dataclass; every field changes the cache key. Every config of the book derives from
:class:`TrainConfig` (the optimiser's fields and their checks, written once) and, when it trains
on one of the book's datasets, :class:`DataConfig` (the dataset and an optional stratified subset).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import cache, data
from .models import LIKELIHOODS, VAE, Classifier
from .utils import check_fields, resolve_device, seed_everything

__all__ = [
    "TrainConfig",
    "DataConfig",
    "ClassifierConfig",
    "VAEConfig",
    "get_classifier",
    "get_vae",
    "fit",
    "curve_split",
    "CURVE_N",
    "batched",
    "predict_logits",
    "accuracy",
    "vae_metrics",
]


@dataclass(frozen=True)
class TrainConfig:
    """What every training config of the book shares: the optimiser's fields and their checks.

    A subclass adds its model's fields (redeclaring a field here only to change its default),
    names the checks of its own fields in ``CHECKS`` (keyword arguments of
    :func:`~robustvae.utils.check_fields`: ``choices``, ``counts``, ``positive``,
    ``non_negative``, ``optional_counts``; merged with its bases'), and puts any other check
    (ranges, combinations of fields) in :meth:`_check`. Invalid values raise ``ValueError``
    when the config is made, before any work.
    """

    kind: ClassVar[str] = "model"
    CHECKS: ClassVar[dict[str, Any]] = {"counts": ("epochs", "batch_size"), "positive": ("lr",)}
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        merged: dict[str, Any] = {"choices": {}, "counts": [], "positive": [], "non_negative": [],
                                  "optional_counts": []}
        for klass in reversed(type(self).__mro__):
            for key, value in vars(klass).get("CHECKS", {}).items():
                if key == "choices":
                    merged[key].update(value)
                else:
                    merged[key].extend(value)
        check_fields(self, **merged)
        self._check()

    def _check(self) -> None:
        """Checks beyond ``CHECKS``; none by default."""

    @classmethod
    def make(cls, config: "TrainConfig | None" = None, **overrides) -> "TrainConfig":
        """``config`` with ``overrides`` applied, or ``cls(**overrides)`` (see :func:`make_config`)."""
        return make_config(cls, config, overrides)


@dataclass(frozen=True)
class DataConfig(TrainConfig):
    """A training config on one of the book's datasets (:data:`robustvae.data.DATASETS`): its
    training split, or a class-stratified subset of ``n_train`` images drawn with ``seed``."""

    CHECKS: ClassVar[dict[str, Any]] = {"choices": {"dataset": data.DATASETS}, "optional_counts": ("n_train",)}
    dataset: str = "mnist-5k"
    n_train: int | None = None  # None: the whole training split

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels this config trains on (:func:`training_data`)."""
        return training_data(self.dataset, self.n_train, self.seed)


@dataclass(frozen=True)
class ClassifierConfig(DataConfig):
    """Everything that determines a trained :class:`~robustvae.models.Classifier`."""

    kind: ClassVar[str] = "classifier"
    CHECKS: ClassVar[dict[str, Any]] = {"counts": ("width",)}
    width: int = 32


@dataclass(frozen=True)
class VAEConfig(DataConfig):
    """Everything that determines a trained :class:`~robustvae.models.VAE`."""

    kind: ClassVar[str] = "vae"
    CHECKS: ClassVar[dict[str, Any]] = {"choices": {"likelihood": LIKELIHOODS},
                                        "counts": ("latent_dim", "width", "hidden"), "non_negative": ("beta",)}
    latent_dim: int = 16
    width: int = 32
    hidden: int = 256
    likelihood: str = "bernoulli"
    beta: float = 1.0
    epochs: int = 30

    def build(self) -> VAE:
        return VAE(self.latent_dim, self.width, self.hidden, self.likelihood, self.beta)


# ---------------------------------------------------------------------------------------
def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 500,
            device: torch.device | str | None = None) -> torch.Tensor:
    """Apply ``fn`` to ``x`` in batches (moved to ``device``) and concatenate the results on the CPU."""
    outs = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        if device is not None:
            xb = xb.to(device)
        outs.append(fn(xb).detach().cpu())
    return torch.cat(outs)


def device_of(model: nn.Module) -> torch.device:
    """The device that holds ``model``'s parameters."""
    return next(model.parameters()).device


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Classifier logits for ``x`` (CPU tensor out), in eval mode."""
    was_training = model.training
    model.eval()
    out = batched(model, x, batch_size, device_of(model))
    model.train(was_training)
    return out


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    return (predict_logits(model, x).argmax(1) == y).float().mean().item()


#: Test images behind the per-epoch learning curves (``history["test_*"]``). A test split larger
#: than this (Fashion-MNIST's 10,000, full MNIST's) is cut to a fixed class-stratified subset of it,
#: so that the curve does not cost more than the training: evaluating 10,000 Fashion-MNIST images
#: took 1.4x as long as the epoch of 4,000 training images it follows. Numbers the chapters report
#: on the test split are computed on the whole split, not read off the curve.
CURVE_N = 1000


def curve_split(dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images of ``dataset``'s learning curves: the whole test split when it holds at
    most :data:`CURVE_N` images (``mnist-5k``: 1,000), else a class-stratified subset of
    :data:`CURVE_N` of them drawn with seed 0 (the same for every model)."""
    x_test, y_test = data.load_dataset(dataset, "test")
    return data.stratified_subset(x_test, y_test, CURVE_N, seed=0)


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    desc: str = "training",
    on_epoch: Callable[[nn.Module, int], dict] | None = None,
) -> dict:
    """Adam on ``loss_fn(model, xb, yb)`` with seeded shuffling; returns the per-epoch history.

    ``history["train_loss"]`` holds the mean training loss of each epoch; ``on_epoch`` may add
    more per-epoch values (it runs in eval mode without gradients).

    Adam runs as PyTorch's fused kernel (``fused=True``: one vectorised pass over all
    parameters instead of a Python loop of small kernels per parameter tensor): the same
    algorithm, 1.2x faster per training step of the book's VAE on the 2-core CPU
    (``benchmarks/bench_savings.py``), though not bit-identical to the loop version.
    """
    device = device_of(model)
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=device.type in ("cpu", "cuda"))
    history: dict[str, list] = {"epoch": [], "train_loss": []}
    n = len(x)
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", leave=False, mininterval=2)
    for epoch in bar:
        model.train()
        perm = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            loss = loss_fn(model, xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        history["epoch"].append(epoch)
        history["train_loss"].append(total / count)
        if on_epoch is not None:
            model.eval()
            with torch.no_grad():
                for k, v in on_epoch(model, epoch).items():
                    history.setdefault(k, []).append(v)
        bar.set_postfix(loss=f"{total / count:.3f}", refresh=False)
    model.eval()
    return history


def training_data(dataset: str, n_train: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split of ``dataset``, or a class-stratified subset of ``n_train`` images drawn with ``seed``."""
    x, y = data.load_dataset(dataset, "train")
    return data.stratified_subset(x, y, n_train, seed=seed)


# ---------------------------------------------------------------------------------------
def make_config(config_cls, config, overrides):
    """``config``, or ``config_cls(**overrides)`` when it is ``None`` (unknown field names raise a
    ``ValueError`` naming the valid ones), with ``overrides`` applied to a given ``config``."""
    if config is None:
        names = {f.name for f in dataclasses.fields(config_cls)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(
                f"Unknown {config_cls.__name__} field(s): {', '.join(sorted(unknown))}. "
                f"Valid fields: {', '.join(sorted(names))}."
            )
        return config_cls(**overrides)
    if overrides:
        return dataclasses.replace(config, **overrides)
    return config


def get_classifier(config: ClassifierConfig | None = None, device: str | torch.device = "auto",
                   retrain: bool = False, **overrides) -> tuple[Classifier, dict]:
    """A trained classifier for ``config`` (or ``ClassifierConfig(**overrides)``), and its history.

    Cross-entropy, Adam, seeded shuffling; the history has per-epoch ``train_loss`` and
    ``test_acc`` (on the dataset's test split, for the learning curve only).
    """
    cfg = make_config(ClassifierConfig, config, overrides)
    dev = resolve_device(device)

    def train(model):
        x, y = training_data(cfg.dataset, cfg.n_train, cfg.seed)
        x_test, y_test = curve_split(cfg.dataset)
        return fit(
            model, lambda m, xb, yb: F.cross_entropy(m(xb), yb), x, y,
            epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
            desc=f"classifier ({cfg.dataset})",
            on_epoch=lambda m, e: {"test_acc": accuracy(m, x_test, y_test)},
        )

    return cache.load_or_train(cfg, lambda: Classifier(width=cfg.width), train, dev, retrain)


@torch.no_grad()
def vae_metrics(vae: VAE, x: torch.Tensor, batch_size: int = 500) -> dict[str, float]:
    """Mean ELBO, its two terms (nats per image) and the pixel MSE of mean reconstructions."""
    dev = device_of(vae)
    sums = {"elbo": 0.0, "rec": 0.0, "kl": 0.0, "mse": 0.0}
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(dev)
        out = vae.elbo(xb)
        for k in ("elbo", "rec", "kl"):
            sums[k] += out[k].sum().item()
        sums["mse"] += (vae.reconstruct(xb, sample=False) - xb).pow(2).flatten(1).mean(1).sum().item()
    return {k: v / len(x) for k, v in sums.items()}


def get_vae(config: VAEConfig | None = None, device: str | torch.device = "auto",
            retrain: bool = False, **overrides) -> tuple[VAE, dict]:
    """A trained VAE for ``config`` (or ``VAEConfig(**overrides)``), and its history.

    Maximises the beta-weighted ELBO with Adam; the history has per-epoch ``train_loss``
    (the beta-weighted negative ELBO), ``test_elbo`` and ``test_mse``.
    """
    cfg = make_config(VAEConfig, config, overrides)
    dev = resolve_device(device)

    def train(model):
        x, y = training_data(cfg.dataset, cfg.n_train, cfg.seed)
        x_test, _ = curve_split(cfg.dataset)

        def on_epoch(m, epoch):
            met = vae_metrics(m, x_test)
            return {"test_elbo": met["elbo"], "test_mse": met["mse"]}

        return fit(
            model, lambda m, xb, yb: m.loss(xb), x, y,
            epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
            desc=f"VAE beta={cfg.beta} ({cfg.dataset})", on_epoch=on_epoch,
        )

    return cache.load_or_train(cfg, cfg.build, train, dev, retrain)

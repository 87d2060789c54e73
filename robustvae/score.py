"""Score your own VAE: chapter 9's scorecard for any model, as a function and a command.

The scorecard (:mod:`robustvae.scorecard`, chapter 9) puts every robustness criterion of the
book side by side for one VAE, each with a bootstrap interval. This module runs it on a model
that is not one of the book's: :func:`evaluate` from Python, ``python -m robustvae score`` from
the shell (:func:`main`), and :func:`write_report` for a self-contained HTML report with a CSV
and JSON of the numbers. Every column is computed by the same function of
:mod:`robustvae.scorecard` that chapter 9 calls, on the same inputs, with the same attacks and
(``sizes="book"``) the same sample sizes, so a row is comparable with the book's rows.

What a model must provide is written down once, in :class:`ScorableVAE`; :func:`check_model`
checks it and says what is missing. A model with only ``encode`` and ``decode`` is completed by
thin generic helpers (:func:`complete`): the mean image is the sigmoid of the decoder's logits,
the likelihood a Bernoulli, as in the book's default VAE.

Example
-------
>>> import robustvae as rv
>>> from robustvae import score
>>> vae = rv.VAE(latent_dim=4, width=8, hidden=32)
>>> score.check_model(vae).missing_columns
{'certified': 'the model has no lipschitz_constants(), so no certificate (chapter 7)'}

The command::

    python -m robustvae score --model mypkg.models:make_vae --weights vae.pt --out report.html

References
----------
Croce et al. (2021), *RobustBench: a standardized adversarial robustness benchmark*, NeurIPS
Datasets and Benchmarks (one protocol, run by anyone on their own model).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import scorecard as sc
from .score_report import COLUMN_INFO, DIGITS, SHORT, _cell_text, git_commit, reference_rows, write_report

__all__ = [
    "ScorableVAE",
    "CompleteVAE",
    "CertifiableVAE",
    "REQUIRED",
    "FILLED",
    "OPTIONAL_COLUMNS",
    "ModelCheck",
    "check_model",
    "complete",
    "Completed",
    "bernoulli_log_px",
    "generic_reconstruct",
    "generic_elbo",
    "generic_iwae",
    "Sizes",
    "SIZES",
    "COLUMN_INFO",
    "budgets",
    "book_classifier",
    "ScoreResult",
    "score_model",
    "evaluate",
    "reference_rows",
    "git_commit",
    "write_report",
    "build_parser",
    "load_factory",
    "load_weights",
    "main",
]

LOG_2PI = math.log(2 * math.pi)
IMAGE_SHAPE = (1, 28, 28)


# ---------------------------------------------------------------------------------------
# The protocol
# ---------------------------------------------------------------------------------------
@runtime_checkable
class ScorableVAE(Protocol):
    """What a VAE must provide to be scored: a ``torch.nn.Module`` with ``encode`` and ``decode``.

    Images ``x`` are ``(B, 1, 28, 28)`` in [0, 1]; ``mu``, ``log_var`` and ``z`` are
    ``(B, d)``. Everything else the scorecard calls (:class:`CompleteVAE`) is optional: where the
    model lacks it, :func:`complete` supplies a generic version built on these two. The
    certified column needs :class:`CertifiableVAE`; without it the column is empty, with the
    reason.
    """

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_var)`` of the Gaussian encoder ``q(z|x) = N(mu, diag(exp(log_var)))``."""
        ...

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's parameters of ``p(x|z)`` (logits), ``(B, 1, 28, 28)``; the mean image is
        ``mean_image(decode(z))`` (default: their sigmoid)."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The model's parameters (an ``nn.Module``'s): the scorecard reads the device from them."""
        ...


@runtime_checkable
class CompleteVAE(ScorableVAE, Protocol):
    """Everything the scorecard's columns call on a VAE (the book's :class:`~robustvae.models.VAE`,
    its Lipschitz VAE and its beta-TCVAE have all of it). Each part beyond :class:`ScorableVAE` is
    optional: :func:`complete` fills a missing one with the generic helper named in :data:`FILLED`.
    """

    #: Size of ``z`` (the purification and latent attacks draw latent codes of this size).
    latent_dim: int

    def mean_image(self, logits: torch.Tensor) -> torch.Tensor:
        """``E[x|z]`` in [0, 1] from the decoder's output (every reconstruction of the book)."""
        ...

    def log_px_given_z(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``log p(x|z)`` per image, summed over pixels, in nats, ``(B,)`` (chapter 2's
        ``-log p(x|mu)`` score, and the ELBO and IWAE below)."""
        ...

    def reconstruct(self, x: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """``mean_image(decode(z))`` for ``z ~ q(z|x)`` or, with ``sample=False``, ``z = mu(x)``
        (the pixel MSE, the purifier of chapter 4, the margin attacks of chapter 6)."""
        ...

    def elbo(self, x: torch.Tensor, n_samples: int = 1) -> dict[str, torch.Tensor]:
        """``{"elbo": ..., "rec": ..., "kl": ...}`` per image, in nats (the ELBO column, chapter 2's
        ``-ELBO`` score, chapter 5's calibration table)."""
        ...

    def iwae(self, x: torch.Tensor, k: int = 64, chunk: int = 16) -> torch.Tensor:
        """The importance-weighted bound ``L_k(x)`` per image, in nats (Burda et al., ICLR 2016);
        chapter 2's ``-log p(x)`` score."""
        ...


@runtime_checkable
class CertifiableVAE(ScorableVAE, Protocol):
    """A VAE with a robustness certificate (chapter 7, Barrett et al., AISTATS 2022)."""

    def lipschitz_constants(self) -> dict[str, float]:
        """``{"a": ..., "b": ..., "c": ...}``: Lipschitz constants of the encoder mean, the encoder
        standard deviation and the decoder mean (:func:`robustvae.certify.certified_margins`)."""
        ...


#: The required parts, with what each must be (for error messages).
REQUIRED: dict[str, str] = {
    "encode": "encode(x) -> (mu, log_var), each (B, latent_dim)",
    "decode": "decode(z) -> logits, (B, 1, 28, 28)",
}

#: The optional parts of :class:`CompleteVAE`, and the generic helper that replaces each one.
FILLED: dict[str, str] = {
    "mean_image": "sigmoid of the decoder's logits (a Bernoulli decoder)",
    "log_px_given_z": "Bernoulli log-likelihood of the logits (bernoulli_log_px)",
    "reconstruct": "mean_image(decode(z)) (generic_reconstruct)",
    "elbo": "one-sample ELBO with the closed-form Gaussian KL (generic_elbo)",
    "iwae": "importance-weighted bound with the Gaussian encoder (generic_iwae)",
    "latent_dim": "read from the encoder's output on a probe batch",
}

#: Optional parts that no helper can replace: part -> (column, why the column is empty).
OPTIONAL_COLUMNS: dict[str, tuple[str, str]] = {
    "lipschitz_constants": ("certified", "the model has no lipschitz_constants(), so no certificate (chapter 7)"),
}


# ---------------------------------------------------------------------------------------
# Generic helpers for models with encode and decode only
# ---------------------------------------------------------------------------------------
def bernoulli_log_px(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``log p(x|z) = sum_i x_i log p_i + (1 - x_i) log(1 - p_i)``, ``p = sigmoid(logits)``, per image
    (nats): the book's default decoder likelihood (:meth:`robustvae.models.VAE.log_px_given_z`)."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)


def _reparameterize(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    return mu + (0.5 * log_var).exp() * torch.randn_like(mu)


def generic_reconstruct(vae: Any, x: torch.Tensor, sample: bool = True) -> torch.Tensor:
    """``vae.mean_image(vae.decode(z))`` with ``z ~ q(z|x)`` (``sample=True``) or ``z = mu(x)``."""
    mu, log_var = vae.encode(x)
    z = _reparameterize(mu, log_var) if sample else mu
    return vae.mean_image(vae.decode(z))


def generic_elbo(vae: Any, x: torch.Tensor, n_samples: int = 1) -> dict[str, torch.Tensor]:
    """The ELBO per image, ``E_q[log p(x|z)] - KL(q(z|x) || N(0, I))`` (Kingma & Welling, ICLR 2014,
    Eq. 10), the expectation over ``n_samples`` reparameterised draws, the KL in closed form;
    ``{"elbo", "rec", "kl"}`` as :meth:`robustvae.models.VAE.elbo` returns them."""
    from .models import gaussian_kl

    mu, log_var = vae.encode(x)
    rec = 0.0
    for _ in range(n_samples):
        rec = rec + vae.log_px_given_z(x, vae.decode(_reparameterize(mu, log_var)))
    rec = rec / n_samples
    kl = gaussian_kl(mu, log_var)
    return {"elbo": rec - kl, "rec": rec, "kl": kl}


def generic_iwae(vae: Any, x: torch.Tensor, k: int = 64, chunk: int = 16) -> torch.Tensor:
    """``L_k(x) = log (1/k) sum_i p(x, z_i) / q(z_i|x)``, ``z_i ~ q(z|x)`` (Burda et al., ICLR 2016,
    Eq. 8), with the standard-normal prior; the samples drawn ``chunk`` at a time."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    mu, log_var = vae.encode(x)
    std = (0.5 * log_var).exp()
    log_ws, done = [], 0
    while done < k:
        m = min(chunk, k - done)
        eps = torch.randn((m,) + mu.shape, device=mu.device, dtype=mu.dtype)
        z = mu.unsqueeze(0) + std.unsqueeze(0) * eps
        logits = vae.decode(z.flatten(0, 1))
        x_rep = x.unsqueeze(0).expand((m,) + x.shape).flatten(0, 1)
        log_px = vae.log_px_given_z(x_rep, logits).view(m, -1)
        log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
        log_qz = -0.5 * (eps.pow(2) + LOG_2PI + log_var.unsqueeze(0)).sum(-1)
        log_ws.append(log_px + log_pz - log_qz)
        done += m
    return torch.logsumexp(torch.cat(log_ws, 0), dim=0) - math.log(k)


class Completed(nn.Module):
    """A model with ``encode`` and ``decode`` completed to :class:`CompleteVAE`: each part the model
    has is its own, each it lacks is the generic helper of :data:`FILLED`. Other attributes (for
    example ``lipschitz_constants``) are the wrapped model's. Made by :func:`complete`.

    Parameters
    ----------
    model : the user's model (kept as ``self.model``, so its parameters are this module's).
    latent_dim : size of ``z`` (used when ``model`` has no ``latent_dim``).
    """

    def __init__(self, model: nn.Module, latent_dim: int):
        super().__init__()
        self.model = model
        self.latent_dim = int(getattr(model, "latent_dim", latent_dim))
        if not _has(model, "log_px_given_z") and not hasattr(model, "likelihood"):
            self.likelihood = "bernoulli"    # what the generic log_px_given_z assumes
        self.filled = tuple(p for p in FILLED if not _has(model, p))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "model" not in modules:
                raise
            return getattr(modules["model"], name)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)

    def mean_image(self, logits: torch.Tensor) -> torch.Tensor:
        own = getattr(self.model, "mean_image", None)
        return own(logits) if callable(own) else torch.sigmoid(logits)

    def log_px_given_z(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        own = getattr(self.model, "log_px_given_z", None)
        return own(x, logits) if callable(own) else bernoulli_log_px(x, logits)

    def reconstruct(self, x: torch.Tensor, sample: bool = True) -> torch.Tensor:
        own = getattr(self.model, "reconstruct", None)
        return own(x, sample=sample) if callable(own) else generic_reconstruct(self, x, sample)

    def elbo(self, x: torch.Tensor, n_samples: int = 1) -> dict[str, torch.Tensor]:
        own = getattr(self.model, "elbo", None)
        return own(x, n_samples=n_samples) if callable(own) else generic_elbo(self, x, n_samples)

    def iwae(self, x: torch.Tensor, k: int = 64, chunk: int = 16) -> torch.Tensor:
        own = getattr(self.model, "iwae", None)
        return own(x, k=k, chunk=chunk) if callable(own) else generic_iwae(self, x, k, chunk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mean reconstruction ``E[x | z = mu(x)]``."""
        return self.reconstruct(x, sample=False)


def _has(model: Any, part: str) -> bool:
    value = getattr(model, part, None)
    if part == "latent_dim":
        return isinstance(value, (int, np.integer)) and value > 0
    return callable(value)


# ---------------------------------------------------------------------------------------
# Checking a model
# ---------------------------------------------------------------------------------------
@dataclass
class ModelCheck:
    """What :func:`check_model` found.

    Attributes
    ----------
    latent_dim : size of ``z`` seen on the probe batch.
    filled : optional parts the model lacks -> the generic helper that replaces each.
    missing_columns : columns that will be empty -> why.
    """

    latent_dim: int
    filled: dict[str, str] = field(default_factory=dict)
    missing_columns: dict[str, str] = field(default_factory=dict)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_model(vae: Any, probe: bool = True) -> ModelCheck:
    """Check that ``vae`` can be scored (:class:`ScorableVAE`), and say what will be filled in or empty.

    Parameters
    ----------
    vae : the model.
    probe : also run it on two random images and check the shapes and ranges of what it returns.

    Returns
    -------
    ModelCheck : ``latent_dim``, the optional parts replaced by generic helpers, and the columns
        that will be empty with the reason.

    Raises
    ------
    TypeError
        If ``vae`` is not a ``torch.nn.Module`` with parameters, or lacks required parts (all of
        them are named).
    ValueError
        If the probe shows outputs of the wrong shape or range (``encode`` must give two
        ``(B, d)`` tensors, ``decode`` ``(B, 1, 28, 28)``, the mean image values in [0, 1]), or
        an optional part fails on the probe.
    """
    what = type(vae).__name__
    if not isinstance(vae, nn.Module):
        raise TypeError(f"The model must be a torch.nn.Module, got {what}. Wrap your networks in one "
                        "with encode(x) -> (mu, log_var) and decode(z) -> logits.")
    missing = [f"{p}: {REQUIRED[p]}" for p in REQUIRED if not callable(getattr(vae, p, None))]
    if missing:
        raise TypeError(f"{what} cannot be scored: it lacks the required part(s) " + "; ".join(missing)
                        + ". See robustvae.score.ScorableVAE.")
    if next(vae.parameters(), None) is None:
        raise TypeError(f"{what} has no parameters; the scorecard needs a trained torch model.")
    filled = {p: FILLED[p] for p in FILLED if not _has(vae, p)}
    empty = {col: why for part, (col, why) in OPTIONAL_COLUMNS.items() if not callable(getattr(vae, part, None))}
    latent_dim = int(getattr(vae, "latent_dim", 0) or 0)
    if probe:
        latent_dim = _probe(vae, latent_dim)
    return ModelCheck(latent_dim, filled, empty)


@torch.no_grad()
def _probe(vae: nn.Module, latent_dim: int) -> int:
    """Run the model's parts on two random images; return ``d``; raise ``ValueError`` on bad output."""
    what = type(vae).__name__
    x = torch.rand((2,) + IMAGE_SHAPE, generator=torch.Generator().manual_seed(0)).to(_device(vae))

    def call(part: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as err:  # the user's code: say which part failed and how
            raise ValueError(f"{what}.{part} failed on a batch of two (2, 1, 28, 28) images in [0, 1]: "
                             f"{type(err).__name__}: {err}") from err

    modes = [(sub, sub.training) for sub in vae.modules()]
    vae.eval()
    try:
        with sc._seeded(0):
            out = call("encode", lambda: vae.encode(x))
            if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(torch.is_tensor(t) for t in out)):
                raise ValueError(f"{what}.encode(x) must return a pair of tensors (mu, log_var), "
                                 f"got {type(out).__name__}.")
            mu, log_var = out
            if mu.dim() != 2 or mu.shape[0] != 2 or mu.shape != log_var.shape:
                raise ValueError(f"{what}.encode(x) must return mu and log_var of shape (B, latent_dim); for "
                                 f"B = 2 got {tuple(mu.shape)} and {tuple(log_var.shape)}.")
            d = mu.shape[1]
            if latent_dim and latent_dim != d:
                raise ValueError(f"{what}.latent_dim is {latent_dim} but encode gives codes of size {d}.")
            logits = call("decode", lambda: vae.decode(mu))
            if not torch.is_tensor(logits) or tuple(logits.shape) != (2,) + IMAGE_SHAPE:
                shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
                raise ValueError(f"{what}.decode(z) must give one 1x28x28 image (of logits) per code: "
                                 f"expected (2, 1, 28, 28), got {shape}. The book's data are 28x28 grey "
                                 "images in [0, 1].")
            mean_image = getattr(vae, "mean_image", None)
            img = call("mean_image", lambda: mean_image(logits)) if callable(mean_image) else torch.sigmoid(logits)
            how = "mean_image(decode(z))" if callable(mean_image) else "sigmoid(decode(z))"
            if tuple(img.shape) != (2,) + IMAGE_SHAPE:
                raise ValueError(f"{what}: {how} must have shape (2, 1, 28, 28), got {tuple(img.shape)}.")
            if not torch.isfinite(img).all() or img.min() < 0 or img.max() > 1:
                raise ValueError(f"{what}: {how} must lie in [0, 1], the range of the data (it is the mean "
                                 f"image); got values in [{img.min().item():.3g}, {img.max().item():.3g}]. "
                                 "decode(z) should return logits; if it returns images, define "
                                 "mean_image(logits) accordingly.")
            full = vae if all(_has(vae, p) for p in FILLED) else Completed(vae, d)
            rec = call("reconstruct", lambda: full.reconstruct(x, sample=False))
            if tuple(rec.shape) != (2,) + IMAGE_SHAPE or rec.min() < 0 or rec.max() > 1:
                raise ValueError(f"{what}.reconstruct(x, sample=False) must give (2, 1, 28, 28) images in "
                                 f"[0, 1], got shape {tuple(rec.shape)}.")
            for part, fn in (("log_px_given_z", lambda: full.log_px_given_z(x, logits)),
                             ("elbo", lambda: full.elbo(x)["elbo"]),
                             ("iwae", lambda: full.iwae(x, k=2))):
                v = call(part, fn)
                if not torch.is_tensor(v) or tuple(v.shape) != (2,):
                    shape = tuple(v.shape) if torch.is_tensor(v) else type(v).__name__
                    raise ValueError(f"{what}.{part} must give one number per image, shape (2,), got {shape}.")
            lip = getattr(vae, "lipschitz_constants", None)
            if callable(lip):
                consts = call("lipschitz_constants", lip)
                if not (isinstance(consts, Mapping) and {"a", "b", "c"} <= set(consts)):
                    raise ValueError(f"{what}.lipschitz_constants() must return a dict with keys 'a', 'b', 'c'.")
    finally:
        for sub, training in modes:
            sub.training = training
    return d


def complete(vae: nn.Module) -> nn.Module:
    """``vae`` itself if it has every part of :class:`CompleteVAE`, else a :class:`Completed` wrapper
    that adds the missing ones (the generic helpers of :data:`FILLED`). Checks it first
    (:func:`check_model`, which raises for a missing required part)."""
    found = check_model(vae)
    if not found.filled:
        return vae
    return Completed(vae, found.latent_dim)


# ---------------------------------------------------------------------------------------
# Sizes and columns
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    """The scorecard's sample sizes and attack budgets. The defaults are chapter 9's parameters
    (``Sizes()``, ``SIZES["book"]``): only a row scored with them is comparable with the book's.
    :meth:`smoke` shrinks the samples and budgets (same threat models) to check that a model runs.
    """

    r: float = 4.0                  #: r of r-robustness (chapters 6 and 7)
    prob: float = 0.5               #: r-robustness: P(change <= r) > prob
    n_eval: int = 1000              #: test images for ELBO, MSE and Spearman
    n_ood: int = 200                #: images of each set for the OOD AUROC
    iwae_k: int = 16                #: importance samples of the likelihood scores
    n_detect: int = 100             #: correctly classified test images attacked for detection
    detect_eps: float = 0.3         #: L-inf radius of that PGD attack (chapter 3)
    detect_steps: int = 40
    n_samples: int = 10             #: stochastic reconstructions per input (chapter 3)
    n_purify: int = 50              #: the first n_purify of them for the purification attack
    purify_eps: float = 0.1         #: L-inf radius of the adaptive attack (chapter 4)
    purify_steps: int = 15
    n_margin: int = 20              #: test images for the margins (two per class)
    margin_attacks: tuple[str, ...] = ("max-damage", "L-BFGS-B")
    min_radius: float = 0.25        #: the margin search's grid of ||delta||_2 (geometric)
    max_radius: float = 8.0
    n_radii: int = 11
    margin_steps: int = 20          #: gradient steps of each margin attack
    lbfgs_starts: int = 5
    lbfgs_iter: int = 5
    lbfgs_stride: int = 2           #: L-BFGS-B searches every lbfgs_stride-th radius (and the last)
    n_mc: int = 100                 #: Monte-Carlo pairs per probability
    refine_steps: int = 4           #: bisection steps after the grid
    n_boot: int = 500               #: bootstrap resamples

    def __post_init__(self):
        object.__setattr__(self, "margin_attacks", tuple(self.margin_attacks))
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "margin_attacks":
                if not v or any(a not in sc.MARGIN_ATTACKS for a in v):
                    raise ValueError(f"margin_attacks must be a non-empty subset of {sc.MARGIN_ATTACKS}, got {v!r}.")
            elif f.type in ("int", int):
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if f.name == "refine_steps" else 1):
                    raise ValueError(f"Size {f.name!r} must be a positive integer, got {v!r}.")
            elif not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"Size {f.name!r} must be a positive number, got {v!r}.")
        if not 0 < self.prob < 1:
            raise ValueError(f"prob must lie in (0, 1), got {self.prob!r}.")
        if not self.min_radius < self.max_radius:
            raise ValueError(f"min_radius ({self.min_radius}) must be below max_radius ({self.max_radius}).")
        if self.n_purify > self.n_detect:
            raise ValueError(f"n_purify ({self.n_purify}) must not exceed n_detect ({self.n_detect}).")
        if self.n_margin < 10:
            raise ValueError(f"n_margin must be at least 10 (one image per class), got {self.n_margin}.")

    @classmethod
    def smoke(cls) -> "Sizes":
        """Tiny samples and budgets (the same radii and threat models): minutes become seconds,
        and the numbers mean little. Chapter 9's values at the ``smoke`` rerun profile."""
        return cls(n_eval=50, n_ood=50, iwae_k=4, n_detect=20, detect_steps=10, n_samples=4, n_purify=10,
                   purify_steps=5, n_margin=10, n_radii=5, margin_steps=5, lbfgs_starts=2, lbfgs_iter=3,
                   n_mc=20, refine_steps=2, n_boot=50)

    def replace(self, **changes: Any) -> "Sizes":
        """A copy with ``changes`` (unknown names raise a ``ValueError`` naming the valid ones)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"Unknown size(s) {unknown}; valid: {sorted(names)}.")
        return dataclasses.replace(self, **changes)


#: The named size sets of :func:`evaluate` and the command's ``--sizes``.
SIZES: dict[str, Sizes] = {"book": Sizes(), "smoke": Sizes.smoke()}

_NEEDS_CLASSIFIER = ("detection_auroc", "purified_acc", "spearman")


def _check_columns(columns: Sequence[str] | str | None) -> list[str]:
    if columns is None:
        return list(sc.COLUMNS)
    if isinstance(columns, str):
        columns = [c for c in columns.split(",") if c.strip()]
    columns = [c.strip() for c in columns]
    unknown = [c for c in columns if c not in sc.COLUMNS]
    if unknown or not columns:
        raise ValueError(f"Unknown column(s) {unknown}; choose from {', '.join(sc.COLUMNS)}."
                         if unknown else "Name at least one column.")
    return [c for c in sc.COLUMNS if c in columns]      # the scorecard's order, no repeats


def _check_sizes(sizes: str | Sizes, n_inputs: int | None) -> Sizes:
    if isinstance(sizes, str):
        if sizes not in SIZES:
            raise ValueError(f"Unknown sizes {sizes!r}; choose from {', '.join(SIZES)} (or pass a Sizes).")
        sizes = SIZES[sizes]
    elif not isinstance(sizes, Sizes):
        raise ValueError(f"sizes must be one of {', '.join(SIZES)} or a Sizes, got {type(sizes).__name__}.")
    if n_inputs is not None:
        if isinstance(n_inputs, bool) or not isinstance(n_inputs, (int, np.integer)) or n_inputs < 10:
            raise ValueError(f"n_inputs must be an integer >= 10 (one image per class), got {n_inputs!r}.")
        n = int(n_inputs)
        sizes = sizes.replace(n_eval=n, n_ood=n, n_detect=n, n_purify=min(n, sizes.n_purify), n_margin=n)
    return sizes


def _check_dataset(dataset: str) -> str:
    from .data import DATASETS

    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}.")
    return dataset


def budgets(sizes: Sizes, columns: Sequence[str] | None = None) -> dict[str, str]:
    """Each column's inputs and attack budget in words (for the report and the result)."""
    s = sizes
    words = {
        "elbo": f"{s.n_eval} test images, one z sample each; {s.n_boot} bootstrap resamples",
        "mse": f"{s.n_eval} test images, z = mu(x)",
        "ood_auroc": (f"{s.n_ood} test images vs {s.n_ood} of the other dataset; best of chapter 2's VAE "
                      f"scores (IWAE k = {s.iwae_k}), picked on the scored images"),
        "detection_auroc": (f"PGD on the classifier alone, L-inf eps = {s.detect_eps:g}, {s.detect_steps} steps, "
                            f"on {s.n_detect} correctly classified test images (the fooled ones are the "
                            f"positives); {s.n_samples} stochastic reconstructions per input"),
        "purified_acc": (f"adaptive attack on classifier(reconstruct(x)): per image the worse of white-box PGD "
                         f"through the VAE and identity-BPDA PGD, L-inf eps = {s.purify_eps:g}, "
                         f"{s.purify_steps} steps each, on {s.n_purify} images"),
        "spearman": f"{s.n_eval} test images",
        "margin": (f"r = {s.r:g}, P(change <= r) > {s.prob:g}, {s.n_margin} test images, radii "
                   f"{s.min_radius:g} to {s.max_radius:g} ({s.n_radii}, geometric), {s.n_mc} Monte-Carlo pairs, "
                   f"{s.refine_steps} bisection steps; portfolio: "
                   + "; ".join(f"{a}: {b}" for a, b in sc.margin_budgets(
                       s.margin_attacks, s.margin_steps, s.lbfgs_starts, s.lbfgs_iter).items())),
        "certified": f"r = {s.r:g}, prob = {s.prob:g}, the same {s.n_margin} images (Barrett et al. 2022)",
    }
    return {c: words[c] for c in (columns or sc.COLUMNS)}


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------
@dataclass
class ScoreResult:
    """Everything :func:`score_model` found: the table, the estimates behind it and their context.

    Attributes
    ----------
    name : the row's name.
    table : :func:`robustvae.scorecard.table` of the row (``value``, ``lo``, ``hi`` per column).
    estimates : column -> :class:`~robustvae.scorecard.Estimate` (with the per-input numbers).
    notes : column -> a note (the best OOD score's name; why an empty column is empty).
    budgets : column -> inputs and attack budget in words.
    sizes, dataset, seed : what was scored, on what.
    filled : optional parts of the model replaced by generic helpers.
    meta : undefended accuracy, seconds per column, device, versions.
    """

    name: str
    table: pd.DataFrame
    estimates: dict[str, sc.Estimate]
    notes: dict[str, str]
    budgets: dict[str, str]
    sizes: Sizes
    dataset: str
    seed: int
    filled: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@contextmanager
def _frozen(*models: nn.Module):
    """``eval()`` and ``requires_grad_(False)`` for the scoring (the attacks differentiate with
    respect to inputs only, as in chapter 9); both restored afterwards."""
    modes = [(sub, sub.training) for m in models for sub in m.modules()]   # every submodule's own mode
    grads = [(p, p.requires_grad) for m in models for p in m.parameters()]
    try:
        for m in models:
            m.eval().requires_grad_(False)
        yield
    finally:
        for sub, training in modes:
            sub.training = training
        for p, flag in grads:
            p.requires_grad_(flag)


def _inputs(dataset: str, classifier: nn.Module | None, s: Sizes, seed: int, device: torch.device,
            columns: Sequence[str]) -> dict[str, Any]:
    """Chapter 9's inputs (its cell "The inputs"), only those the ``columns`` need."""
    from . import attacks
    from .data import load_dataset, stratified_subset
    from .training import predict_logits

    x_test, y_test = load_dataset(dataset, "test")
    out: dict[str, Any] = {}
    if {"elbo", "mse", "spearman"} & set(columns):
        out["x_eval"], out["y_eval"] = stratified_subset(x_test, y_test, s.n_eval, seed=seed)
    if "ood_auroc" in columns:
        out["x_train"] = load_dataset(dataset, "train")[0]
        other = "fashion-mnist" if dataset != "fashion-mnist" else "mnist-5k"
        out["x_in"] = stratified_subset(x_test, y_test, s.n_ood, seed=seed)[0]
        out["x_out"] = stratified_subset(*load_dataset(other, "test"), s.n_ood, seed=seed)[0]
        out["other"] = other
    if {"detection_auroc", "purified_acc"} & set(columns):
        right = predict_logits(classifier, x_test).argmax(1) == y_test
        x_att, y_att = stratified_subset(x_test[right], y_test[right], s.n_detect, seed=seed)
        x_att, y_att = x_att.to(device), y_att.to(device)
        out["x_att"], out["y_att"] = x_att, y_att
        if "detection_auroc" in columns:
            x_pgd = attacks.pgd(classifier, x_att, y_att, s.detect_eps, norm="linf", steps=s.detect_steps,
                                generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                fooled = (classifier(x_pgd).argmax(1) != y_att).cpu()
            out["x_pgd"], out["fooled"] = x_pgd, fooled
        x_pur, y_pur = x_att[: s.n_purify], y_att[: s.n_purify]
        out["x_pur"], out["y_pur"] = x_pur, y_pur
        if "purified_acc" in columns:
            x_undef = attacks.pgd(classifier, x_pur, y_pur, s.purify_eps, norm="linf", steps=s.purify_steps,
                                  generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                out["undefended"] = sc.bootstrap((classifier(x_undef).argmax(1) == y_pur).float().cpu(),
                                                 np.mean, s.n_boot, seed)
    if {"margin", "certified"} & set(columns):
        x_margin, y_margin = stratified_subset(x_test, y_test, s.n_margin, seed=seed)
        n = s.n_margin
        out["x_margin"] = x_margin.to(device)
        out["target_idx"] = [next(j % n for j in range(i + 1, i + n) if y_margin[j % n] != y_margin[i])
                             for i in range(n)]
        out["radii"] = np.geomspace(s.min_radius, s.max_radius, s.n_radii)
    return out


#: The units of work, in chapter 9's order: (step, the columns it gives).
_STEPS = (("likelihood", ("elbo", "mse")), ("ood_auroc", ("ood_auroc",)),
          ("detection_auroc", ("detection_auroc",)), ("purified_acc", ("purified_acc",)),
          ("spearman", ("spearman",)), ("margin", ("margin",)), ("certified", ("certified",)))


def _score_step(step: str, vae: nn.Module, classifier: nn.Module | None, d: dict[str, Any], s: Sizes,
                seed: int) -> dict[str, sc.Estimate]:
    """One of chapter 9's calls (its cell "Scoring every model"), with its arguments."""
    if step == "likelihood":
        return sc.likelihood_columns(vae, d["x_eval"], n_boot=s.n_boot, seed=seed)
    if step == "ood_auroc":
        return {step: sc.ood_column(vae, d["x_in"], d["x_out"], d["x_train"], k=s.iwae_k, n_boot=s.n_boot,
                                    seed=seed)}
    if step == "detection_auroc":
        fooled = d["fooled"]
        if not fooled.any():
            return {step: sc.Estimate.missing("PGD fooled the classifier on none of the images")}
        return {step: sc.detection_column(vae, classifier, d["x_att"], d["x_pgd"][fooled.to(d["x_pgd"].device)],
                                          n_samples=s.n_samples, n_boot=s.n_boot, seed=seed)}
    if step == "purified_acc":
        return {step: sc.purified_column(vae, classifier, d["x_pur"], d["y_pur"], s.purify_eps, norm="linf",
                                         steps=s.purify_steps, n_boot=s.n_boot, seed=seed)}
    if step == "spearman":
        return {step: sc.spearman_column(vae, classifier, d["x_eval"], d["y_eval"], n_boot=s.n_boot, seed=seed)}
    if step == "margin":
        radii, xm = d["radii"], d["x_margin"]
        return {step: sc.margin_column(vae, xm, s.r, radii, s.margin_attacks, x_target=xm[d["target_idx"]],
                                       steps=s.margin_steps, n_mc=s.n_mc, refine_steps=s.refine_steps,
                                       n_boot=s.n_boot, seed=seed, lbfgs_starts=s.lbfgs_starts,
                                       lbfgs_iter=s.lbfgs_iter,
                                       lbfgs_radii=np.unique(np.r_[radii[:: s.lbfgs_stride], radii[-1]]))}
    if step == "certified":
        return {step: sc.certified_column(vae, d["x_margin"], s.r, s.prob, n_boot=s.n_boot, seed=seed)}
    raise ValueError(f"Unknown step {step!r}.")  # pragma: no cover


def book_classifier(dataset: str, device: torch.device | str = "cpu") -> nn.Module:
    """The book's classifier for ``dataset`` (chapter 1's, 10 epochs, seed 0), through the model
    cache: loaded if present, else trained (a few minutes on a CPU)."""
    from .training import get_classifier

    return get_classifier(dataset=dataset, epochs=10, seed=0, device=device)[0]


def score_model(vae: nn.Module, classifier: nn.Module | None = None, dataset: str = "mnist-5k",
                columns: Sequence[str] | str | None = None, n_inputs: int | None = None, seed: int = 0,
                sizes: str | Sizes = "book", progress: bool = True, name: str = "your VAE",
                device: str | torch.device | None = None) -> ScoreResult:
    """:func:`evaluate`, returning the full :class:`ScoreResult` (estimates, notes, budgets, timing)."""
    from .utils import resolve_device, seed_everything

    cols = _check_columns(columns)
    dataset = _check_dataset(dataset)
    s = _check_sizes(sizes, n_inputs)
    found = check_model(vae)
    if classifier is not None and not isinstance(classifier, nn.Module):
        raise TypeError(f"classifier must be a torch.nn.Module giving (B, 10) logits, got {type(classifier).__name__}.")
    dev = _device(vae) if device is None else resolve_device(device)
    vae = vae.to(dev)
    model = vae if not found.filled else Completed(vae, found.latent_dim)
    need_clf = bool(set(_NEEDS_CLASSIFIER) & set(cols))
    if need_clf and classifier is None:
        classifier = book_classifier(dataset, dev)
    if classifier is not None:
        classifier = classifier.to(dev)

    steps = [(st, [c for c in gives if c in cols]) for st, gives in _STEPS]
    steps = [(st, gives) for st, gives in steps if gives]
    est: dict[str, sc.Estimate] = {}
    seconds: dict[str, float] = {}
    from tqdm.auto import tqdm

    seed_everything(seed)
    frozen = (model,) + ((classifier,) if classifier is not None else ())   # model: the wrapper, if any
    with _frozen(*frozen):
        bar = tqdm(total=len(steps) + 1, desc="scoring", unit="step", disable=not progress)
        try:
            bar.set_postfix_str("inputs")
            t0 = time.perf_counter()
            data = _inputs(dataset, classifier, s, seed, dev, cols)
            seconds["inputs"] = time.perf_counter() - t0
            bar.update()
            for step, gives in steps:
                bar.set_postfix_str(step)
                t0 = time.perf_counter()
                if step == "certified" and "certified" in found.missing_columns:
                    out = {"certified": sc.Estimate.missing(found.missing_columns["certified"])}
                else:
                    out = _score_step(step, model, classifier, data, s, seed)
                seconds[step] = time.perf_counter() - t0
                est.update({c: out[c] for c in gives})
                bar.update()
        finally:
            bar.close()
    notes = {c: e.note for c, e in est.items() if e.note}
    if "ood_auroc" in est and est["ood_auroc"].note:
        notes["ood_auroc"] = f"best score: {est['ood_auroc'].note} (out: {data['other']})"
    if "margin" in est:
        notes["margin"] = f"{int(np.isinf(est['margin'].per_input['values']).sum())} of {s.n_margin} inputs never broken"
    meta: dict[str, Any] = {"seconds": seconds, "device": str(dev), "torch": torch.__version__,
                            "latent_dim": found.latent_dim}
    if "undefended" in data:
        u = data["undefended"]
        meta["undefended_acc"] = [u.value, u.lo, u.hi]
    if "fooled" in data:
        meta["n_fooled"] = int(data["fooled"].sum())
    return ScoreResult(name, sc.table({name: est}, cols), est, notes, budgets(s, cols), s, dataset, int(seed),
                       found.filled, meta)


def evaluate(vae: nn.Module, classifier: nn.Module | None = None, dataset: str = "mnist-5k",
             columns: Sequence[str] | str | None = None, n_inputs: int | None = None, seed: int = 0,
             sizes: str | Sizes = "book", progress: bool = True, name: str = "your VAE",
             device: str | torch.device | None = None) -> pd.DataFrame:
    """Chapter 9's scorecard row of any VAE, with 95% bootstrap intervals.

    Each column is computed by the function of :mod:`robustvae.scorecard` that chapter 9 calls,
    on chapter 9's inputs (class-balanced test subsets, the same PGD inputs), so with
    ``sizes="book"`` and the book's classifier the row is comparable with the book's.

    Parameters
    ----------
    vae : a model with ``encode`` and ``decode`` (:class:`ScorableVAE`); missing optional parts
        are filled in by generic helpers (:func:`complete`), a missing certificate leaves the
        ``certified`` column empty (NaN), with the reason in ``.attrs["notes"]``.
    classifier : the classifier of the detection, purification and Spearman columns (``(B, 1, 28,
        28)`` images in [0, 1] to ``(B, 10)`` logits); default: the book's for ``dataset``
        (:func:`book_classifier`, through the model cache).
    dataset : the in-distribution data, one of :data:`robustvae.data.DATASETS`.
    columns : names of :data:`robustvae.scorecard.COLUMNS` (a list or a comma-separated string);
        default all.
    n_inputs : if given, the number of test inputs of every column at once (``n_eval``,
        ``n_ood``, ``n_detect``, ``n_margin``; ``n_purify`` is capped by it); at least 10.
    seed : seeds the subsets, the attacks and the bootstrap (chapter 9's ``seed``).
    sizes : ``"book"`` (chapter 9's parameters), ``"smoke"`` (:meth:`Sizes.smoke`) or a
        :class:`Sizes`.
    progress : show a tqdm progress bar over the columns.
    name : the row's name.
    device : where to score (``"auto"``, ``"cpu"``, ``"cuda"``); the model is moved there.
        Default: the VAE's device.

    Returns
    -------
    pandas.DataFrame : one row, a two-level column index (column, ``value``/``lo``/``hi``) as
        :func:`robustvae.scorecard.table` makes it; ``.attrs`` holds ``notes`` and ``budgets``.

    Raises
    ------
    ValueError
        For an unknown column, dataset or size, before any work; or a model whose outputs have
        the wrong shape or range.
    TypeError
        For a model that lacks a required part (:func:`check_model`).

    Example
    -------
    >>> row = evaluate(my_vae, sizes="smoke", columns=["elbo", "mse"])   # doctest: +SKIP
    >>> row[("mse", "value")]                                            # doctest: +SKIP
    """
    res = score_model(vae, classifier, dataset, columns, n_inputs, seed, sizes, progress, name, device)
    table = res.table
    table.attrs.update({"notes": dict(res.notes), "budgets": dict(res.budgets)})
    return table


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------
def load_factory(spec: str, what: str = "--model") -> nn.Module:
    """The model made by ``"package.module:factory"`` (``factory()`` called with no arguments).

    Raises ``ValueError`` with what to do when the spec is malformed, the module cannot be
    imported, the factory is missing or not callable, or it does not return a ``torch.nn.Module``.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"{what} must look like package.module:factory, got {spec!r}.")
    module_name, attr = spec.split(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))        # as `python -m` does: the current directory
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise ValueError(f"{what}: cannot import module {module_name!r} ({type(err).__name__}: {err}). "
                         "Run from the directory that holds it, or install its package.") from err
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ValueError(f"{what}: module {module_name!r} has no {attr!r}.")
    if not callable(factory):
        raise ValueError(f"{what}: {spec!r} is not callable (it must be a function or class that builds the model).")
    try:
        model = factory()
    except Exception as err:
        raise ValueError(f"{what}: calling {spec}() failed ({type(err).__name__}: {err}); the factory must "
                         "build the model with no arguments.") from err
    if not isinstance(model, nn.Module):
        raise ValueError(f"{what}: {spec}() must return a torch.nn.Module, got {type(model).__name__}.")
    return model


def load_weights(model: nn.Module, path: str | Path, what: str = "--weights") -> nn.Module:
    """Load a state dict (or a checkpoint dict with ``"state_dict"``/``"model"``) into ``model``,
    strictly: ``ValueError`` naming the missing and unexpected keys and the shape mismatches."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: no file {str(path)!r}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{what}: {str(path)!r} is not a weights file torch can load safely ({type(err).__name__}: "
                         f"{err}). Save it with torch.save(model.state_dict(), path).") from err
    if isinstance(state, Mapping) and not all(torch.is_tensor(v) for v in state.values()):
        for key in ("state_dict", "model_state_dict", "model", "weights"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping):
        raise ValueError(f"{what}: {str(path)!r} holds a {type(state).__name__}, not a state dict.")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state)
                    if torch.is_tensor(state[k]) and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
                parts.append(f"{label}: {', '.join(keys[:5])}{more}")
        raise ValueError(f"{what}: the weights in {str(path)!r} do not fit the model {type(model).__name__} "
                         f"({'; '.join(parts)}). Is it the factory that trained them?")
    model.load_state_dict(state, strict=True)
    return model


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["n_margin=10", "margin_attacks=max-damage,L-BFGS-B"]`` -> typed :class:`Sizes` changes."""
    types = {f.name: f.type for f in dataclasses.fields(Sizes)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in types:
            raise ValueError(f"--set takes NAME=VALUE with NAME one of {', '.join(types)}; got {item!r}.")
        try:
            if key == "margin_attacks":
                out[key] = tuple(a.strip() for a in value.split(","))
            elif types[key] in ("int", int):
                out[key] = int(value)
            else:
                out[key] = float(value)
        except ValueError as err:
            raise ValueError(f"--set {key}: cannot read {value!r} ({err}).") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m robustvae score`` command line."""
    from .data import DATASETS

    p = argparse.ArgumentParser(
        prog="python -m robustvae score",
        description="Score your own VAE on chapter 9's robustness scorecard, and write an HTML report "
                    "(with a CSV and JSON of the numbers next to it).",
        epilog="Example: python -m robustvae score --model mypkg.models:make_vae --weights vae.pt "
               "--sizes smoke --out report.html. The process is pinned as the book's are (1 thread, AVX2 "
               "kernels) so that a book model gets the book's numbers; ROBUSTVAE_NUMERICS=native turns that off.")
    p.add_argument("--model", required=True, metavar="MODULE:FACTORY",
                   help="importable factory that builds the (untrained) VAE with no arguments")
    p.add_argument("--weights", metavar="FILE", help="state dict to load into the factory's model "
                   "(torch.save(model.state_dict(), FILE)); omit if the factory loads its own")
    p.add_argument("--dataset", default="mnist-5k", choices=DATASETS, help="in-distribution data (default mnist-5k)")
    p.add_argument("--columns", nargs="+", metavar="COL",
                   help=f"columns to score (default all): {', '.join(sc.COLUMNS)}; commas also work")
    p.add_argument("--sizes", default="book", choices=tuple(SIZES),
                   help="book: chapter 9's sizes (comparable, minutes); smoke: tiny (seconds, a check only)")
    p.add_argument("--set", dest="set_", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="override one size of --sizes (e.g. n_boot=200); the row is then not the book's")
    p.add_argument("--n-inputs", type=int, help="number of test inputs of every column at once (>= 10)")
    p.add_argument("--classifier", metavar="MODULE:FACTORY",
                   help="the classifier to use instead of the book's (built like --model)")
    p.add_argument("--classifier-weights", metavar="FILE", help="state dict for --classifier")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--name", help="the row's name in the report (default: the factory)")
    p.add_argument("--out", default="report.html", help="the HTML report (default report.html)")
    p.add_argument("--reference", metavar="FILE",
                   help="reference rows: chapter 9's stored notebook (default) or a CSV of this command")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None, pin_numerics: bool = True) -> int:
    """``python -m robustvae score ...``: check everything, score, write the report.

    Returns the exit status: 0, or 2 for bad input (found before any scoring). With
    ``pin_numerics`` the process is pinned as the book's are (:func:`robustvae.numerics.apply`:
    one thread, AVX2 kernels; ``ROBUSTVAE_NUMERICS=native`` turns it off), so that a book model
    scored here gets the book's numbers; tests that call ``main`` in-process pass ``False``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        columns = _check_columns([c for item in (args.columns or []) for c in item.split(",") if c.strip()]
                                 or None)
        sizes = SIZES[args.sizes]
        if args.set_:
            sizes = sizes.replace(**_parse_set(args.set_))
        sizes = _check_sizes(sizes, args.n_inputs)
        from .utils import resolve_device

        device = resolve_device(args.device)
        if args.classifier_weights and not args.classifier:
            raise ValueError("--classifier-weights needs --classifier (the factory of its model).")
        vae = load_factory(args.model, "--model")
        if args.weights:
            load_weights(vae, args.weights, "--weights")
        check_model(vae)
        classifier = None
        if args.classifier:
            classifier = load_factory(args.classifier, "--classifier")
            if args.classifier_weights:
                load_weights(classifier, args.classifier_weights, "--classifier-weights")
            with torch.no_grad():
                dev = next(classifier.parameters(), torch.empty(0)).device
                logits = classifier.eval()(torch.rand((2,) + IMAGE_SHAPE, device=dev))
            if tuple(logits.shape) != (2, 10):
                raise ValueError(f"--classifier must map (B, 1, 28, 28) images to (B, 10) logits, got "
                                 f"{tuple(logits.shape)} for B = 2.")
        reference, ref_note = (None, None)
        if args.reference:
            reference, ref_note = reference_rows(args.reference)
            if reference is None:
                raise ValueError(f"--reference: {ref_note}")
    except (ValueError, TypeError) as err:
        print(f"python -m robustvae score: error: {err}", file=sys.stderr)
        return 2

    if pin_numerics:
        from . import numerics

        numerics.apply()
    name = args.name or args.model.split(":")[-1]
    t0 = time.perf_counter()
    result = score_model(vae, classifier, args.dataset, columns, None, args.seed, sizes,
                         progress=not args.no_progress, name=name, device=device)
    wall = time.perf_counter() - t0
    context = {"model": args.model, "weights": args.weights or "(the factory's own)",
               "classifier": args.classifier or "the book's (chapter 1, 10 epochs, seed 0, model cache)",
               "wall time": f"{wall:.1f} s"}
    paths = write_report(result, args.out, reference, ref_note, context)
    with pd.option_context("display.width", 160, "display.max_columns", 30):
        shown = pd.DataFrame({SHORT[c]: [_cell_text(result.table, name, c)] for c in columns}, index=[name])
        print(shown.T.to_string(header=False))
    print(f"wrote {paths['html']}, {paths['csv'].name}, {paths['json'].name} ({wall:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

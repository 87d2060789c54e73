"""Björck-orthonormalised Lipschitz VAEs: Barrett et al.'s own parametrisation (chapter 7's profile).

Chapter 7 builds its Lipschitz VAEs with spectrally normalised layers (:mod:`robustvae.lipschitz`),
because a training step with orthonormal layers costs about 20 times more on our CPU
(``benchmarks/bench_parametrisations.py``). Barrett et al. (AISTATS 2022), following LNets
(Anil, Lucas & Grosse, ICML 2019), orthonormalise every weight matrix with Björck-Bowie
iterations instead. With GroupSort (MaxMin) activations an orthonormal network is *gradient-norm
preserving*, so it can use its whole Lipschitz budget, where a spectrally normalised one may
shrink gradients layer after layer. This module builds the same VAE as
:class:`~robustvae.lipschitz.LipschitzVAE`, same design constants ``a, b, c, s_max``, with
every dense layer orthonormalised, so the two parametrisations can be compared at equal
Lipschitz constants (chapter 7's ``bjorck_margin`` parameter, the ``paper-layers`` rerun profile).

The orthonormalisation (first order, as in LNets and the authors' code): scale ``W`` by its
Frobenius norm, an upper bound on its spectral norm, then ``iters`` times

    A <- 3/2 A - 1/2 A A^T A,

which maps every singular value ``s`` in ``(0, 1]`` to ``s (3 - s^2) / 2``, again in ``(0, 1]``
and closer to 1. In exact arithmetic the layer's spectral norm therefore never exceeds 1, however
few the iterations; the certificate does not rely on it anyway:
:meth:`~robustvae.lipschitz.LipschitzVAE.lipschitz_constants` recomputes every layer's exact
spectral norm by SVD.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from .lipschitz import LipschitzLinear, LipschitzVAE, LipschitzVAEConfig
from .utils import check_positive

__all__ = ["bjorck_orthonormalize", "BjorckOrthonormal", "BjorckVAE", "BjorckVAEConfig"]


def bjorck_orthonormalize(w: torch.Tensor, iters: int = 15) -> torch.Tensor:
    """``w`` scaled by its Frobenius norm, then ``iters`` first-order Björck-Bowie steps.

    The result's singular vectors are those of ``w``; each singular value ``s / ||w||_F`` moves
    towards 1 by ``s <- s (3 - s^2) / 2``. For a wide matrix the rows become orthonormal, for a
    tall one the columns; the Gram product is taken on the smaller side.

    Example
    -------
    >>> w = bjorck_orthonormalize(torch.randn(8, 20, dtype=torch.float64), iters=40)
    >>> torch.allclose(w @ w.T, torch.eye(8, dtype=torch.float64), atol=1e-8)
    True
    """
    check_positive("iters", iters, allow_zero=True)
    if w.ndim != 2:
        raise ValueError(f"bjorck_orthonormalize needs a matrix, got shape {tuple(w.shape)}.")
    a = w / w.norm().clamp_min(torch.finfo(w.dtype).tiny)
    wide = a.shape[0] <= a.shape[1]
    for _ in range(iters):
        a = 1.5 * a - 0.5 * ((a @ a.T) @ a if wide else a @ (a.T @ a))
    return a


class BjorckOrthonormal(nn.Module):
    """A :mod:`torch.nn.utils.parametrize` parametrisation: ``weight = bjorck_orthonormalize(W, iters)``."""

    def __init__(self, iters: int = 15):
        super().__init__()
        check_positive("iters", iters, allow_zero=True)
        self.iters = int(iters)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return bjorck_orthonormalize(w, self.iters)


class BjorckVAE(LipschitzVAE):
    """A :class:`~robustvae.lipschitz.LipschitzVAE` whose dense layers are Björck-orthonormalised
    instead of spectrally normalised (same arguments, plus ``bjorck_iters``).

    Each :class:`~robustvae.lipschitz.LipschitzLinear` keeps its scale ``k^(1/L)``; only the
    parametrisation of its weight changes. :meth:`lipschitz_constants` is inherited: exact SVD
    norms of the weights actually used.
    """

    def __init__(self, *args, bjorck_iters: int = 15, **kwargs):
        super().__init__(*args, **kwargs)
        check_positive("bjorck_iters", bjorck_iters)
        self.bjorck_iters = int(bjorck_iters)
        for m in self.modules():
            if isinstance(m, LipschitzLinear):
                parametrize.remove_parametrizations(m.linear, "weight", leave_parametrized=False)
                parametrize.register_parametrization(m.linear, "weight", BjorckOrthonormal(bjorck_iters))

    def tighten(self) -> None:
        """Nothing to tighten: the orthonormalisation has no estimate that lags behind (unlike the
        power iteration of spectral normalisation)."""


@dataclass(frozen=True)
class BjorckVAEConfig(LipschitzVAEConfig):
    """A :class:`~robustvae.lipschitz.LipschitzVAEConfig` trained with Björck-orthonormalised layers.

    Same design (``margin``, ``r``, ``prob``, ``decoder_lipschitz``, ... give the same ``a, b, c,
    s_max``), so a :class:`BjorckVAE` and a :class:`~robustvae.lipschitz.LipschitzVAE` of equal
    fields have equal Lipschitz constants. Train it with
    :func:`robustvae.lipschitz.get_lipschitz_vae` (its own cache entry).

    Fields
    ------
    bjorck_iters : Björck-Bowie steps per forward pass (LNets use 15-20 in training).
    """

    kind: ClassVar[str] = "bjorck-vae"
    CHECKS: ClassVar[dict[str, Any]] = {"counts": ("bjorck_iters",)}
    bjorck_iters: int = 15

    @classmethod
    def of(cls, config: LipschitzVAEConfig, bjorck_iters: int = 15) -> "BjorckVAEConfig":
        """The Björck version of a spectrally normalised design (every other field equal)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(config)}, bjorck_iters=bjorck_iters)

    def build(self) -> BjorckVAE:
        d = self.design()
        return BjorckVAE(self.latent_dim, self.hidden, d["a"], d["b"], d["c"], d["s_max"],
                         self.likelihood, self.beta, self.std_hidden, bjorck_iters=self.bjorck_iters)

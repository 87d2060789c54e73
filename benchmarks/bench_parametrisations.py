"""Why chapter 7 uses spectral normalisation: the cost of one training step per weight parametrisation.

    .venv/bin/python benchmarks/bench_parametrisations.py --out benchmarks/results/cpu2_parametrisations.json

Chapter 7's Lipschitz VAE constrains every dense layer. Barrett et al. orthonormalise weights
(Björck iterations, as in LNets); torch offers an orthogonal parametrisation (Cayley map, matrix
exponential, Householder products) and spectral normalisation (one power iteration per step).
This script times one Adam training step (forward, backward, update) of the chapter's three
networks, encoder mean (784 -> 256 -> 256 -> 16), encoder standard deviation (784 -> 64 -> 64 -> 16)
and decoder (16 -> 256 -> 256 -> 784), with MaxMin activations and the negative ELBO of a
Bernoulli VAE, on a batch (the chapter's 64) of mnist-5k digits, for each parametrisation: the
median of ``--repeats`` steps after ``--warmup`` ones. Fresh weights (nothing from the cache).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrizations, parametrize

import robustvae as rv
from robustvae.lipschitz import MaxMin

MEAN = [784, 256, 256, 16]
STD = [784, 64, 64, 16]
DECODER = [16, 256, 256, 784]


class Bjorck(nn.Module):
    """Björck-Bowie orthonormalisation (first order), as in LNets: W <- W (3/2 I - 1/2 W^T W), ``iters`` times,
    after scaling W so that its spectral norm is at most 1 (Frobenius bound)."""

    def __init__(self, iters: int = 15):
        super().__init__()
        self.iters = iters

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        transpose = w.shape[0] < w.shape[1]
        if transpose:
            w = w.T
        w = w / w.norm()
        eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
        for _ in range(self.iters):
            w = w @ (1.5 * eye - 0.5 * (w.T @ w))
        return w.T if transpose else w


def _mlp(sizes: list[int], kind: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        if kind == "spectral norm (1 power iteration)":
            lin = parametrizations.spectral_norm(lin)
        elif kind.startswith("orthogonal"):
            mapping = {"orthogonal (Cayley)": "cayley", "orthogonal (matrix exponential)": "matrix_exp",
                       "orthogonal (Householder)": "householder"}[kind]
            lin = parametrizations.orthogonal(lin, orthogonal_map=mapping)
        elif kind.startswith("Björck"):
            parametrize.register_parametrization(lin, "weight", Bjorck(15))
        elif kind != "unconstrained":
            raise ValueError(f"unknown parametrisation {kind!r}")
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(MaxMin())
    return nn.Sequential(*layers)


KINDS = ("unconstrained", "spectral norm (1 power iteration)", "orthogonal (Cayley)",
         "orthogonal (Householder)", "orthogonal (matrix exponential)", "Björck (15 iterations)")


def step_time(kind: str, x: torch.Tensor, warmup: int, repeats: int) -> float:
    torch.manual_seed(0)
    mean, std, dec = _mlp(MEAN, kind), _mlp(STD, kind), _mlp(DECODER, kind)
    params = [p for net in (mean, std, dec) for p in net.parameters()]
    opt = torch.optim.Adam(params, 1e-3)
    flat = x.flatten(1)
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        mu, sigma = mean(flat), torch.sigmoid(std(flat)).clamp_min(1e-6)
        z = mu + sigma * torch.randn_like(mu)
        rec = F.binary_cross_entropy_with_logits(dec(z), flat, reduction="sum")
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - 1 - 2 * sigma.log()).sum()
        loss = (rec + kl) / len(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="the chapter's batch size")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out")
    args = ap.parse_args()
    rv.setup(seed=0, device="cpu")
    x, _ = rv.load_dataset("mnist-5k", "train")
    x = x[: args.batch]
    res = {"torch": torch.__version__, "threads": torch.get_num_threads(), "batch": args.batch,
           "repeats": args.repeats, "step_ms": {}}
    for kind in KINDS:
        res["step_ms"][kind] = 1000 * step_time(kind, x, args.warmup, args.repeats)
        print(f"{kind:36s} {res['step_ms'][kind]:8.2f} ms/step", flush=True)
    base = res["step_ms"]["spectral norm (1 power iteration)"]
    res["ratio_vs_spectral_norm"] = {k: v / base for k, v in res["step_ms"].items()}
    text = json.dumps(res, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Channels-last feature maps (issue 23): the book's networks in NHWC against NCHW, side by side.

:mod:`robustvae.models` stores the convolution weights of the classifier and of the VAE's
encoder and decoder channels last and feeds them channels-last feature maps
(:data:`robustvae.models.CHANNELS_LAST`); the arithmetic is the same, the kernels differ (oneDNN's
NHWC convolutions; ATen's NHWC max-pooling, where the NCHW kernel took 60% of the classifier's
forward pass). This script times the old layout (NCHW weights and maps, the code before) and the
new one alternately in one process (old, new, old, new, ...), under the book's pinned numerics
(one thread, AVX2 kernels), and quotes the median ratio ``old / new`` of each workload:

* the classifier: a forward pass over 300 digits (chapter 8's grid search, every evaluation), the
  gradient of the cross-entropy with respect to 200 input digits (one step of every attack on
  the classifier), a training step (batch 64);
* the VAE: decoding 2,000 latents without gradients (the Monte-Carlo reconstructions of chapters
  3, 6 and 9), the gradient of the ELBO with respect to 200 input digits, a training step (batch 64).

It also checks that the two layouts compute the same function: the largest absolute difference
of the classifier's logits and of the decoder's logits (recorded; rounding, about 1e-7).

    .venv/bin/python benchmarks/bench_layout.py [--repeats 7] [--out benchmarks/results/cpu2_layout.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustvae import numerics  # noqa: E402

numerics.pin_environment()   # the book's kernels (AVX2, 1 thread): set before torch loads them
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from robustvae import models  # noqa: E402


def nchw(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` with its weights in the default (NCHW) layout: the code before."""
    return copy.deepcopy(module).to(memory_format=torch.contiguous_format)


def old_classifier(m: models.Classifier, x: torch.Tensor) -> torch.Tensor:
    return m.head(m.features(x.contiguous()))


def old_encode(m: models.VAE, x: torch.Tensor):
    h = m.encoder.body(x.contiguous())
    return m.encoder.mu(h), m.encoder.log_var(h).clamp(-12.0, 8.0)


def old_decode(m: models.VAE, z: torch.Tensor) -> torch.Tensor:
    return m.decoder.body(z)


def elbo(encode, decode, x: torch.Tensor) -> torch.Tensor:
    """The ELBO (Bernoulli decoder, one z per image) through ``encode`` and ``decode``: the same
    computation in either layout, so that the two are timed on equal work."""
    mu, log_var = encode(x)
    z = mu + (0.5 * log_var).exp() * torch.randn_like(mu)
    logits = decode(z)
    rec = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    return rec - models.gaussian_kl(mu, log_var)


def old_elbo(m: models.VAE, x: torch.Tensor) -> torch.Tensor:
    """The ELBO of ``m`` through the NCHW path (the code before)."""
    return elbo(lambda v: old_encode(m, v), lambda z: old_decode(m, z), x)


def new_elbo(m: models.VAE, x: torch.Tensor) -> torch.Tensor:
    return elbo(m.encode, m.decode, x)


def workloads(seed: int = 0) -> dict[str, tuple]:
    """``{name: (old, new)}``: zero-argument callables doing the same work in each layout."""
    torch.manual_seed(seed)
    clf_new = models.Classifier().eval()
    clf_old = nchw(clf_new)
    vae_new = models.VAE().eval()
    vae_old = nchw(vae_new)
    x300, x200, x64 = torch.rand(300, 1, 28, 28), torch.rand(200, 1, 28, 28), torch.rand(64, 1, 28, 28)
    y200, y64 = torch.randint(0, 10, (200,)), torch.randint(0, 10, (64,))
    z = torch.randn(2000, 16)

    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    def input_grad(loss):
        def run():
            x = x200.clone().requires_grad_(True)
            torch.autograd.grad(loss(x), x)
        return run

    def train_step(model, loss):
        model = copy.deepcopy(model).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

        def run():
            for _ in range(5):
                opt.zero_grad(set_to_none=True)
                loss(model).backward()
                opt.step()
        return run

    return {
        "classifier forward, 300 digits": (no_grad(lambda: old_classifier(clf_old, x300)),
                                           no_grad(lambda: clf_new(x300))),
        "classifier input gradient, 200 digits": (
            input_grad(lambda x: F.cross_entropy(old_classifier(clf_old, x), y200)),
            input_grad(lambda x: F.cross_entropy(clf_new(x), y200))),
        "classifier training, 5 steps of 64": (
            train_step(clf_old, lambda m: F.cross_entropy(old_classifier(m, x64), y64)),
            train_step(clf_new, lambda m: F.cross_entropy(m(x64), y64))),
        "VAE decoder forward, 2000 latents": (no_grad(lambda: old_decode(vae_old, z)),
                                              no_grad(lambda: vae_new.decode(z))),
        "VAE ELBO input gradient, 200 digits": (input_grad(lambda x: old_elbo(vae_old, x).sum()),
                                               input_grad(lambda x: new_elbo(vae_new, x).sum())),
        "VAE training, 5 steps of 64": (train_step(vae_old, lambda m: -old_elbo(m, x64).mean()),
                                        train_step(vae_new, lambda m: -new_elbo(m, x64).mean())),
    }, (clf_old, clf_new, vae_old, vae_new, x300, z)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def alternate(old, new, repeats: int) -> dict:
    """Time ``old`` and ``new`` alternately (after one untimed call each); medians and ratio."""
    old(), new()
    t_old, t_new = [], []
    for _ in range(repeats):
        t_old.append(_timed(old))
        t_new.append(_timed(new))
    mo, mn = statistics.median(t_old), statistics.median(t_new)
    return {"old_s": round(mo, 4), "new_s": round(mn, 4), "ratio": round(mo / mn, 2),
            "old_runs": [round(t, 4) for t in t_old], "new_runs": [round(t, 4) for t in t_new]}


def agreement(clf_old, clf_new, vae_old, vae_new, x, z) -> dict[str, float]:
    """Largest absolute differences of the two layouts' outputs (the same function: rounding)."""
    with torch.no_grad():
        return {"classifier logits": (old_classifier(clf_old, x) - clf_new(x)).abs().max().item(),
                "decoder logits": (old_decode(vae_old, z) - vae_new.decode(z)).abs().max().item()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu2_layout.json")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    numerics.apply()
    work, probes = workloads()
    res = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "numerics": numerics.signature()},
           "repeats": args.repeats, "agreement": agreement(*probes), "workloads": {}}
    for name, (old, new) in work.items():
        res["workloads"][name] = alternate(old, new, args.repeats)
        r = res["workloads"][name]
        print(f"{name:42s} NCHW {r['old_s']:.3f} s  NHWC {r['new_s']:.3f} s  ratio {r['ratio']:.2f}")
    print("largest differences:", res["agreement"])
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

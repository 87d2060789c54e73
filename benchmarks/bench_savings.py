"""The savings of issue 23, each measured side by side against the code it replaced.

Every saving is timed in the same process, the old and the new way alternating (old, new, old,
new, ...), so that a machine that drifts or a neighbour that wakes up affects both alike; the
saving is quoted as the median ratio ``old / new``. Three savings, the three largest items the
book's profile (``benchmarks/results/profile/summary.json``) pointed at that could be cut
without changing what a chapter computes:

1. **Fused Adam** in :func:`robustvae.training.fit` (every model of the book trains through it):
   one epoch of the book's VAE (chapter 1's configuration, 4,000 mnist-5k digits, batch 64) and
   of its classifier, with ``torch.optim.Adam`` as a loop over parameters (``fused=False``, the
   old code) and fused (the new).
2. **Learning curves on a fixed 1,000-image test subset** (:func:`robustvae.training.curve_split`):
   the per-epoch test ELBO of chapter 2's Fashion-MNIST VAE on the whole 10,000-image test split
   (old) against the subset (new), next to the training epoch it follows.
3. **Freezing fooled images** in the attack engine (:func:`robustvae.attacks.ascend`,
   ``freeze_success``; on by default for deterministic models in :func:`robustvae.attacks.pgd`):
   L-inf PGD on chapter 1's classifier (the oblivious attack of chapters 3 and 4) and through
   purifier (a) (chapter 4's white-box attack), on 200 correctly classified test digits, 30
   steps, at eps 0.1 and 0.3, unfrozen (old) and frozen (new). The fooled images must be the
   same ones: the script checks it and records it.

Models come from the model cache (trained on first use, as the chapters train them).

    .venv/bin/python benchmarks/bench_savings.py [--repeats 3] [--out benchmarks/results/cpu2_savings.json]
"""

from __future__ import annotations

import argparse
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

import robustvae as rv  # noqa: E402
from robustvae import attacks, data, purify, training  # noqa: E402


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def alternate(old, new, repeats: int) -> dict:
    """Time ``old`` and ``new`` alternately ``repeats`` times each; medians and their ratio."""
    t_old, t_new = [], []
    for _ in range(repeats):
        t_old.append(_timed(old))
        t_new.append(_timed(new))
    m_old, m_new = statistics.median(t_old), statistics.median(t_new)
    return {"old_s": t_old, "new_s": t_new, "old_median_s": m_old, "new_median_s": m_new,
            "ratio": m_old / m_new}


def one_epoch(build, loss_fn, x, fused: bool):
    """One epoch of ``fit``'s loop (seeded shuffle, batch 64, Adam 1e-3) on a fresh model."""
    def run():
        torch.manual_seed(0)
        model = build()
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        for i in range(0, len(x), 64):
            xb = x[perm[i:i + 64]]
            loss = loss_fn(model, xb, perm[i:i + 64])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu2_savings.json")
    args = ap.parse_args()
    rv.setup(seed=0, device="cpu", dataset="mnist-5k")
    out: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                             "threads": torch.get_num_threads()}, "savings": {}}

    # 1. fused Adam
    x, y = training.training_data("mnist-5k", None, 0)
    vae_cfg = training.VAEConfig()
    vae_loss = lambda m, xb, idx: m.loss(xb)                                   # noqa: E731
    clf_loss = lambda m, xb, idx: torch.nn.functional.cross_entropy(m(xb), y[idx])  # noqa: E731
    out["savings"]["fused Adam: VAE epoch"] = alternate(
        one_epoch(vae_cfg.build, vae_loss, x, False), one_epoch(vae_cfg.build, vae_loss, x, True), args.repeats)
    out["savings"]["fused Adam: classifier epoch"] = alternate(
        one_epoch(lambda: rv.Classifier(width=32), clf_loss, x, False),
        one_epoch(lambda: rv.Classifier(width=32), clf_loss, x, True), args.repeats)
    print(json.dumps({k: round(v["ratio"], 2) for k, v in out["savings"].items()}))

    # 2. learning curve on the whole Fashion-MNIST test split or on the fixed subset
    vae = vae_cfg.build().eval()
    x_full, _ = data.load_dataset("fashion-mnist", "test")
    x_sub, _ = training.curve_split("fashion-mnist")
    with torch.no_grad():
        out["savings"]["learning curve: Fashion-MNIST test ELBO per epoch"] = alternate(
            lambda: training.vae_metrics(vae, x_full), lambda: training.vae_metrics(vae, x_sub), args.repeats)
    fx, _ = training.training_data("fashion-mnist", 4000, 0)
    out["savings"]["learning curve: Fashion-MNIST test ELBO per epoch"]["training_epoch_s"] = _timed(
        one_epoch(vae_cfg.build, vae_loss, fx, True))
    out["savings"]["learning curve: Fashion-MNIST test ELBO per epoch"]["images"] = [len(x_full), len(x_sub)]

    # 3. freezing fooled images in PGD (deterministic models)
    clf, _ = rv.get_classifier(dataset="mnist-5k", epochs=10, seed=0, device="cpu")
    vae1, _ = rv.get_vae(dataset="mnist-5k", epochs=30, seed=0, device="cpu")
    for m in (clf, vae1):
        m.requires_grad_(False)
    xt, yt = data.load_dataset("mnist-5k", "test")
    keep = training.predict_logits(clf, xt).argmax(1) == yt
    xt, yt = xt[keep][:200], yt[keep][:200]
    pipelines = {"classifier": clf, "purifier (a)": purify.Defended(clf, purify.Reconstruct(vae1)).eval()}
    for name, model in pipelines.items():
        for eps in (0.1, 0.3):
            res = {}

            def run(freeze, model=model, eps=eps):
                res[freeze] = attacks.pgd(model, xt, yt, eps, steps=30, return_result=True, freeze_success=freeze,
                                          generator=torch.Generator().manual_seed(0))
            entry = alternate(lambda: run(False), lambda: run(True), args.repeats)
            entry["same_images_fooled"] = bool(torch.equal(res[False].success, res[True].success))
            entry["robust_accuracy"] = [1 - res[False].success.float().mean().item(),
                                        1 - res[True].success.float().mean().item()]
            out["savings"][f"freezing fooled images: PGD-30 on the {name}, eps {eps}"] = entry
            print(name, eps, round(entry["ratio"], 2), entry["same_images_fooled"])

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for k, v in out["savings"].items():
        print(f"{k}: {v['old_median_s']:.2f} s -> {v['new_median_s']:.2f} s ({v['ratio']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Throughput of the library's hot loops, on the CPU or on a GPU (``--device auto`` picks CUDA).

    .venv/bin/python benchmarks/bench_throughput.py --device cpu
    python3 benchmarks/bench_throughput.py --device cuda --out results.json

Measures, on the default dataset (mnist-5k) with fresh (untrained) models so nothing depends on
the cache: classifier and VAE training throughput (images/s, one epoch after a warm-up epoch),
FGSM and PGD (L-inf, 40 steps) throughput against torchattacks on the same model and batch (the
ratio of our time to theirs: the target is at most 1.1), importance-weighted ELBO
throughput, and purification throughput (robustvae.purify, chapter 4): a classifier behind one
VAE reconstruction, behind the mean of 8 stochastic reconstructions, behind a Defense-GAN-style
latent search (15 Adam steps x 2 starts), and a 15-step PGD through the purified pipeline. Each figure is the median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import robustvae as rv
from robustvae import attacks, purify


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats):
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256, help="attack batch size")
    ap.add_argument("--out")
    args = ap.parse_args()
    device = rv.setup(seed=0, device=args.device)
    x, y = rv.load_dataset("mnist-5k", "train")
    x, y = x.to(device), y.to(device)
    res = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name()

    def epoch(model, loss_fn, bs=64):
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        perm = torch.randperm(len(x), device=device)
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
            loss = loss_fn(model, x[idx], y[idx])
            opt.zero_grad(); loss.backward(); opt.step()

    clf = rv.Classifier().to(device)
    ce = lambda m, xb, yb: F.cross_entropy(m(xb), yb)
    epoch(clf, ce)
    res["classifier_train_img_per_s"] = round(len(x) / timed(lambda: epoch(clf, ce), device, args.repeats))
    vae = rv.VAE().to(device)
    vl = lambda m, xb, yb: m.loss(xb)
    epoch(vae, vl)
    res["vae_train_img_per_s"] = round(len(x) / timed(lambda: epoch(vae, vl), device, args.repeats))

    clf.eval(); vae.eval()
    xb, yb = x[:args.batch], y[:args.batch]
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    t_fgsm = timed(lambda: attacks.fgsm(clf, xb, yb, 0.1), device, args.repeats)
    t_pgd = timed(lambda: attacks.pgd(clf, xb, yb, 0.3, steps=40, alpha=0.01, random_start=True), device, args.repeats)
    res["fgsm_img_per_s"] = round(len(xb) / t_fgsm)
    res["pgd40_img_per_s"] = round(len(xb) / t_pgd)
    if torchattacks is not None:
        ta_fgsm = torchattacks.FGSM(clf, eps=0.1)
        ta_pgd = torchattacks.PGD(clf, eps=0.3, alpha=0.01, steps=40, random_start=True)
        res["fgsm_time_ratio_vs_torchattacks"] = round(t_fgsm / timed(lambda: ta_fgsm(xb, yb), device, args.repeats), 3)
        res["pgd_time_ratio_vs_torchattacks"] = round(t_pgd / timed(lambda: ta_pgd(xb, yb), device, args.repeats), 3)
    with torch.no_grad():
        t_iw = timed(lambda: vae.iwae(x[:500], k=64), device, args.repeats)
    res["iwae64_img_per_s"] = round(500 / t_iw)

    # Purification (chapter 4): classify the VAE's reconstruction instead of the input.
    n_pur = min(500, len(x))
    xp = x[:n_pur]
    recon = purify.Defended(clf, purify.Reconstruct(vae))
    recon8 = purify.Defended(clf, purify.Reconstruct(vae, sample=True), n_samples=8)
    with torch.no_grad():
        res["purify_reconstruct_img_per_s"] = round(n_pur / timed(lambda: recon(xp), device, args.repeats))
        res["purify_reconstruct_8samples_img_per_s"] = round(
            n_pur / timed(lambda: recon8(xp), device, args.repeats))
    n_ls = min(100, len(x))
    search = purify.Defended(clf, purify.LatentSearch(vae, steps=15, restarts=2))
    with torch.no_grad():
        res["purify_latent_search_15x2_img_per_s"] = round(
            n_ls / timed(lambda: search(x[:n_ls]), device, args.repeats))
    # the white-box attack on the purified pipeline (gradients through the VAE), 15 PGD steps
    t_pgd_pur = timed(lambda: attacks.pgd(recon, xb, yb, 0.1, steps=15, alpha=2.5 * 0.1 / 15,
                                          random_start=True), device, args.repeats)
    res["pgd15_on_purified_img_per_s"] = round(len(xb) / t_pgd_pur)
    print(json.dumps(res, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

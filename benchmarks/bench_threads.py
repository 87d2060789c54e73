"""One chapter on two threads, or two chapters on one thread each? The book's workloads, side by side.

    .venv/bin/python benchmarks/bench_threads.py      # about 3 minutes on the 2-core machine

Each workload set (train a classifier and a VAE for 2 epochs on mnist-5k; PGD through a VAE
purifier and on the bare classifier, 200 images; an L-BFGS-B r-robustness margin search on 10
images) runs in a fresh process with the book's pinned kernels, in three ways:

- ``2 threads``: one process with two intra-op threads (the book until stop 27);
- ``1 thread``: one process with one thread, alone on the machine;
- ``2 x 1 thread``: two one-thread processes at the same time (the book since: one chapter per core).

The figure of merit is throughput: work done per second by the whole machine. Two one-thread
processes finish two sets in the time the slower of them takes; one two-thread process needs two
consecutive sets' time for the same work. Written to ``results/cpu2_threads.json``. Time on a
quiet machine: processes of other sessions share the cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "cpu2_threads.json"

_WORK = r"""
import json, os, sys, tempfile, time
threads = int(sys.argv[1])
import robustvae.numerics as num
num.THREADS = threads
num.pin_environment()
os.environ["ROBUSTVAE_CACHE"] = tempfile.mkdtemp()
import torch
import robustvae as rv
from robustvae import attacks, purify, rrobust as rr
rv.setup(seed=0)
assert torch.get_num_threads() == threads
out = {}
def timed(name, fn):
    t = time.perf_counter(); r = fn(); out[name] = round(time.perf_counter() - t, 2); return r
clf = timed("classifier, 2 epochs", lambda: rv.get_classifier(dataset="mnist-5k", epochs=2)[0])
vae = timed("VAE, 2 epochs", lambda: rv.get_vae(dataset="mnist-5k", epochs=2, latent_dim=16)[0])
x, y = rv.load_dataset("mnist-5k", "test")
x, y = x[:200], y[:200]
timed("PGD-20 through a VAE purifier, 200 images",
      lambda: attacks.pgd(purify.Defended(clf, purify.Reconstruct(vae)), x, y, 0.1, steps=20))
timed("PGD-40 on the classifier, 200 images", lambda: attacks.pgd(clf, x, y, 0.1, steps=40))
g = torch.Generator().manual_seed(0)
timed("L-BFGS-B margin search, 10 images",
      lambda: rr.empirical_margin(vae, x[:10], 5.0, [1.0, 2.0, 3.0], rr.lbfgs_damage_attack(3, 10, generator=g),
                                  n_samples=100, generator=g))
print(json.dumps(out))
"""


def _start(threads: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _WORK, str(threads)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=ROOT)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a workload process failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    runs = {"2 threads": [_result(_start(2))], "1 thread": [_result(_start(1))]}
    pair = [_start(1), _start(1)]
    runs["2 x 1 thread"] = [_result(p) for p in pair]
    total = {k: [round(sum(r.values()), 2) for r in v] for k, v in runs.items()}
    # seconds the machine needs for two workload sets
    two_sets = {"2 threads": 2 * total["2 threads"][0], "1 thread": 2 * total["1 thread"][0],
                "2 x 1 thread": max(total["2 x 1 thread"])}
    res = {"cpus": os.cpu_count(), "runs": runs, "total_s": total,
           "two_sets_s": {k: round(v, 2) for k, v in two_sets.items()},
           "throughput_2x1_over_2threads": round(two_sets["2 threads"] / two_sets["2 x 1 thread"], 3)}
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    for k, v in runs.items():
        print(k, v)
    print("seconds for two workload sets:", res["two_sets_s"])
    print(f"throughput, two one-thread processes over one two-thread process: "
          f"{res['throughput_2x1_over_2threads']}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Do the book's pinned numerics make training reproducible across machines, and what do they cost?

Trains the same small workload (the book's classifier and VAE architectures, 3 epochs on 1,024
mnist-5k digits, Adam) in fresh processes under settings that stand in for other machines: another
thread count (``OMP_NUM_THREADS=1``) and another CPU generation (``ATEN_CPU_CAPABILITY=default``,
PyTorch's generic kernels), each with the book's pins (:mod:`robustvae.numerics`) and without them
(``ROBUSTVAE_NUMERICS=native``). Prints and writes, per setting, the hash of the trained weights,
the final loss and the wall and CPU time; the runs alternate (pinned, native, pinned, ...) so
that a drifting machine affects both alike, and the cost is quoted as the median ratio.

    python benchmarks/bench_numerics.py [--repeats 3] [--out benchmarks/results/cpu2_numerics.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKLOAD = textwrap.dedent("""
    import hashlib, json, resource, time
    import torch
    import torch.nn.functional as F
    import robustvae as rv
    from robustvae import numerics
    numerics.apply()
    torch.manual_seed(0)
    x, y = rv.load_dataset("mnist-5k", "train")
    x, y = x[:1024], y[:1024]
    clf, vae = rv.Classifier(width=32), rv.VAE(16, 32, 256, "bernoulli", 1.0)
    opt = torch.optim.Adam(list(clf.parameters()) + list(vae.parameters()), 1e-3)
    t0, c0 = time.perf_counter(), time.process_time()
    for epoch in range(3):
        for i in range(0, 1024, 64):
            loss = F.cross_entropy(clf(x[i:i + 64]), y[i:i + 64]) + vae.loss(x[i:i + 64])
            opt.zero_grad(); loss.backward(); opt.step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    h = hashlib.sha256(b"".join(v.numpy().tobytes() for m in (clf, vae) for v in m.state_dict().values()))
    print(json.dumps({"hash": h.hexdigest()[:16], "loss": float(loss), "wall_s": wall, "cpu_s": cpu,
                      "signature": numerics.signature(), "threads": torch.get_num_threads(),
                      "capability": torch.backends.cpu.get_cpu_capability()}))
""")

#: (name, environment) of the stand-ins for other machines.
MACHINES = [
    ("this machine", {}),
    ("1 thread", {"OMP_NUM_THREADS": "1"}),
    ("generic kernels, 1 thread", {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default"}),
]


def run(env_extra: dict[str, str]) -> dict:
    from robustvae.numerics import PINNED_ENV

    env = {k: v for k, v in os.environ.items() if k not in PINNED_ENV and k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", WORKLOAD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each mode on this machine")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu2_numerics.json")
    args = ap.parse_args()
    rows = []
    for name, env in MACHINES:
        for mode in ("pinned", "native"):
            res = run({**env, "ROBUSTVAE_NUMERICS": mode})
            rows.append({"machine": name, "mode": mode, **res})
            print(f"{name:28s} {mode:7s} weights {res['hash']} loss {res['loss']:.6f} ({res['signature']})", flush=True)
    pinned = {r["hash"] for r in rows if r["mode"] == "pinned"}
    native = {r["hash"] for r in rows if r["mode"] == "native"}
    ratios, walls = [], {"pinned": [], "native": []}
    for _ in range(args.repeats):  # alternate, so that drift hits both
        p, n = run({"ROBUSTVAE_NUMERICS": "pinned"}), run({"ROBUSTVAE_NUMERICS": "native"})
        walls["pinned"].append(p["wall_s"])
        walls["native"].append(n["wall_s"])
        ratios.append(p["wall_s"] / n["wall_s"])
    result = {
        "workload": "classifier + VAE, 3 epochs on 1,024 mnist-5k digits (48 Adam steps), fresh process each",
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "runs": rows,
        "pinned_identical_across_machines": len(pinned) == 1,
        "native_distinct_weights": len(native),
    }
    if ratios:  # --repeats 0 checks reproducibility only
        result.update({
            "wall_s_median": {k: round(statistics.median(v), 2) for k, v in walls.items()},
            "cost_ratio_pinned_over_native_median": round(statistics.median(ratios), 3),
            "cost_ratios": [round(r, 3) for r in ratios],
        })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"pinned: {'identical' if len(pinned) == 1 else 'DIFFERENT'} weights on all "
          f"{len(MACHINES)} stand-ins; native: {len(native)} different weights")
    if ratios:
        print(f"cost: pinned / native wall time, median of {args.repeats}: "
              f"{result['cost_ratio_pinned_over_native_median']}")
    print(f"written: {os.path.relpath(args.out)}")
    return 0 if len(pinned) == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())

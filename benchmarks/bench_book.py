"""Time every chapter of the book: wall time, CPU time and peak memory, cold and warm cache.

    .venv/bin/python benchmarks/bench_book.py                 # all chapters
    .venv/bin/python benchmarks/bench_book.py 01_models       # some chapters
    .venv/bin/python benchmarks/bench_book.py --out benchmarks/results/book.json

Modes measured, each chapter run by papermill into a scratch copy (the book is not touched):
- ``book-cold``: all chapters in order, sharing one empty model cache: what `make test` costs
  on a fresh machine (chapter 1 trains the shared models, later chapters load them);
- ``warm``: every chapter again with that cache now full: what a reader's rerun costs.
Runtime budgets live here, not in timed tests: the script prints each figure and whether the
whole book fits the budget (20 minutes on the 2-core reference machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
BUDGET_S = 20 * 60


def run_chapter(nb: Path, cache: Path, scratch: Path) -> dict:
    env = dict(os.environ, ROBUSTVAE_CACHE=str(cache))
    out = scratch / nb.name
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", str(nb), str(out), "--cwd", str(BOOK), "-k", "python3",
         "--log-level", "ERROR", "--no-progress-bar"],
        env=env, capture_output=True, text=True,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "chapter": nb.stem,
        "ok": proc.returncode == 0,
        "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        # ru_maxrss of children: the largest resident set of any finished child (the kernel), KiB
        "peak_rss_mib": round(after.ru_maxrss / 1024, 0),
        "error": None if proc.returncode == 0 else proc.stderr[-2000:],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chapters", nargs="*", help="chapter stems (default: all book/NN_*.ipynb)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--skip-warm", action="store_true", help="only the cold-cache pass")
    args = ap.parse_args()

    all_nbs = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
    names = {nb.stem: nb for nb in all_nbs}
    unknown = [c for c in args.chapters if c not in names]
    if unknown:
        ap.error(f"unknown chapter(s) {unknown}; valid: {sorted(names)}")
    nbs = [names[c] for c in args.chapters] if args.chapters else all_nbs

    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "platform": platform.platform()}, "runs": []}
    try:
        import torch
        results["machine"]["torch"] = torch.__version__
        results["machine"]["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        cache, scratch = Path(tmp) / "cache", Path(tmp) / "out"
        scratch.mkdir()
        modes = ["book-cold"] + ([] if args.skip_warm else ["warm"])
        for mode in modes:
            for nb in nbs:
                r = run_chapter(nb, cache, scratch)
                r["mode"] = mode
                results["runs"].append(r)
                status = "ok" if r["ok"] else "FAILED"
                print(f"{mode:9s} {r['chapter']:22s} wall {r['wall_s']:7.1f} s  cpu {r['cpu_s']:7.1f} s  "
                      f"peak {r['peak_rss_mib']:6.0f} MiB  {status}", flush=True)
    for mode in sorted({r["mode"] for r in results["runs"]}):
        total = sum(r["wall_s"] for r in results["runs"] if r["mode"] == mode)
        results[f"total_{mode}_s"] = round(total, 1)
        print(f"{mode}: whole book {total / 60:.1f} min (budget {BUDGET_S / 60:.0f} min): "
              f"{'within' if total <= BUDGET_S else 'OVER'} budget")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return 0 if all(r["ok"] for r in results["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Time every chapter of the book: wall time, CPU time and peak memory, cold and warm cache.

    .venv/bin/python benchmarks/bench_book.py                 # all chapters
    .venv/bin/python benchmarks/bench_book.py 01_models       # some chapters
    .venv/bin/python benchmarks/bench_book.py --out benchmarks/results/book.json

Modes measured, each chapter run by papermill into a scratch copy (the book is not touched):
- ``book-cold``: all chapters in order, sharing one empty model cache: what `make test` costs
  on a fresh machine (chapter 1 trains the shared models, later chapters load them);
- ``warm``: every chapter again with that cache now full: what a reader's rerun costs.
The JSON also records the machine and the versions of the key libraries (``versions``).
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


# Runs one chapter with papermill in a fresh process and prints the peak resident set of that
# process's children (the kernel) and of itself, in KiB: a per-chapter peak (the parent's own
# RUSAGE_CHILDREN maximum would carry over from one chapter to the next).
_RUNNER = """
import json, resource, sys
import papermill as pm
nb, out, cwd = sys.argv[1:4]
try:
    pm.execute_notebook(nb, out, cwd=cwd, kernel_name="python3", progress_bar=False, log_output=False)
    ok, err = True, None
except Exception as e:
    ok, err = False, f"{type(e).__name__}: {e}"[-2000:]
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("BENCH " + json.dumps({"ok": ok, "error": err, "kernel_rss_kib": kids, "self_rss_kib": me}))
"""


def run_chapter(nb: Path, cache: Path, scratch: Path) -> dict:
    env = dict(os.environ, ROBUSTVAE_CACHE=str(cache))
    out = scratch / nb.name
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUNNER, str(nb), str(out), str(BOOK)],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")]
    info = json.loads(lines[-1][6:]) if lines else {
        "ok": False, "error": proc.stderr[-2000:], "kernel_rss_kib": 0, "self_rss_kib": 0}
    return {
        "chapter": nb.stem,
        "ok": bool(info["ok"]) and proc.returncode == 0,
        "wall_s": round(wall, 1),
        # CPU time of the runner and its kernel (user + system), so cpu_s / wall_s ~ cores used
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        # the kernel's peak resident set (where the chapter's work happens), MiB
        "peak_rss_mib": round(info["kernel_rss_kib"] / 1024, 0),
        "runner_rss_mib": round(info["self_rss_kib"] / 1024, 0),
        "error": info["error"],
    }


#: Distributions whose versions go into the results (those that decide the book's numbers and
#: how it is built and tested).
KEY_LIBRARIES = ("robustvae", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "pandas",
                 "matplotlib", "seaborn", "mlxtend", "torchattacks", "papermill", "nbclient",
                 "ipykernel", "jupytext", "jupyter-book", "myst-nb", "nbval", "pytest", "dask",
                 "distributed")


def library_versions(names=KEY_LIBRARIES) -> dict:
    """``{distribution: version}`` of the installed key libraries (``None`` when not installed)."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


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
                           "platform": platform.platform()},
               "versions": library_versions(), "runs": []}
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

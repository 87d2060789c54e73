"""The book's wall time as `make notebooks` spends it: every chapter, several at once, from an empty cache.

    .venv/bin/python benchmarks/time_book.py                  # cold (empty model cache), then warm
    .venv/bin/python benchmarks/time_book.py --no-warm        # cold only
    .venv/bin/python benchmarks/time_book.py --cache DIR      # use (and fill) this model cache

This *is* ``python -m robustvae.runs book`` (:func:`robustvae.runs.execute_book`, one chapter per
core, each on one thread): it re-executes the book's notebooks in place, replacing each one that
runs to its end. ``cold`` starts from an empty model cache, as a new reader's first ``make book``
does; ``warm`` runs every chapter again with that cache full (models, and the results of attacks
and estimates, :mod:`robustvae.memo`), as a reader's rerun does, and checks that every glued value
came out the same (the book's numbers do not depend on which process trained a model, on the
order in which chapters ran, or on whether a result was computed or loaded).

Between the two, :mod:`call_costs` splits each chapter's cold time into training per model,
attacks and estimates per function and the rest, from the cold notebooks' logs
(``results/cpu2_call_costs.json``). When the warm run gives the same glued values, the book keeps
the cold run's notebooks (their logs say what each chapter computed and how long it took).

Recorded in ``results/cpu2_book_parallel.json`` (``--out``): per chapter, when it started and
finished and its wall time; the whole book's wall time; a reference workload timed before and
after (:func:`profile_book.reference_workload`, a fixed training loop), so that the book's time is
also given in reference units and compared with the budget of issue 23 (cold 15 minutes and warm 6
on the slower machine of our kind: :data:`profile_book.BUDGET_COLD_S`, ``REFERENCE_SLOW_S``) and
with the guide's 20 minutes on this machine. Time on a quiet machine: processes of other sessions
share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import profile_book  # noqa: E402  (the reference workload and the budget)

GUIDE_BUDGET_S = 20 * 60


def _run(cache: Path, jobs: int | None) -> dict:
    from robustvae import runs

    os.environ["ROBUSTVAE_CACHE"] = str(cache)
    t0 = time.perf_counter()
    results = runs.execute_book(["all"], book=ROOT / "book", runs=ROOT / "runs", jobs=jobs)
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 1),
            "chapters": {r["chapter"]: {k: r[k] for k in ("wall_s", "started_s", "finished_s")} for r in results},
            "glued": {r["chapter"]: r["glued"] for r in results}}


def _same(a: dict, b: dict) -> list[str]:
    """Names of glued values that differ between two runs (floats compared exactly)."""
    diff = []
    for ch in a:
        for k, v in a[ch].items():
            if repr(b.get(ch, {}).get(k)) != repr(v):
                diff.append(f"{ch}:{k}")
    return diff


def main(argv: list[str] | None = None) -> int:
    from robustvae import runs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, help="model cache (default: a new empty folder)")
    ap.add_argument("--jobs", type=int, default=None, help="chapters at once (default: runs.default_jobs())")
    ap.add_argument("--no-warm", action="store_true", help="skip the warm run")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu2_book_parallel.json")
    args = ap.parse_args(argv)
    cache = args.cache or Path(tempfile.mkdtemp(prefix="robustvae-cold-")) / "models"
    cache.mkdir(parents=True, exist_ok=True)
    if any(cache.glob("*.pt")):
        print(f"note: {cache} already holds models: the 'cold' run is not from an empty cache", flush=True)
    ref = [profile_book.reference_workload()]
    res: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform()},
                 "jobs": args.jobs or runs.default_jobs(), "empty_cache": not any(cache.glob("*.pt"))}
    cold = _run(cache, args.jobs)
    res["cold"] = {k: cold[k] for k in ("wall_s", "chapters")}
    print(f"cold: {cold['wall_s']:.0f} s", flush=True)
    import call_costs  # where the cold run's time went, from its notebooks (before warm replaces them)

    call_costs.main(["--out", str(args.out.with_name("cpu2_call_costs.json"))])
    cold_notebooks = {p: p.read_bytes() for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb")}
    if not args.no_warm:
        warm = _run(cache, args.jobs)
        res["warm"] = {k: warm[k] for k in ("wall_s", "chapters")}
        res["warm"]["glued_values_that_changed"] = _same(cold["glued"], warm["glued"])
        res["warm"]["glued_values_compared"] = sum(len(v) for v in cold["glued"].values())
        print(f"warm: {warm['wall_s']:.0f} s; glued values that changed: "
              f"{res['warm']['glued_values_that_changed'] or 'none'}", flush=True)
        if not res["warm"]["glued_values_that_changed"]:  # the book keeps the cold run's notebooks, whose
            for p, text in cold_notebooks.items():        # logs say what was computed and how long it took
                p.write_bytes(text)
    ref.append(profile_book.reference_workload())
    mean_ref = sum(ref) / len(ref)
    res["reference_s"] = [round(r, 3) for r in ref]
    res["reference_slow_s"] = profile_book.REFERENCE_SLOW_S
    res["budget"] = {"cold_units": round(profile_book.BUDGET_COLD_S / profile_book.REFERENCE_SLOW_S, 1),
                     "warm_units": round(profile_book.BUDGET_WARM_S / profile_book.REFERENCE_SLOW_S, 1),
                     "guide_s": GUIDE_BUDGET_S}
    for mode in ("cold", "warm"):
        if mode in res:
            res[mode]["units"] = round(res[mode]["wall_s"] / mean_ref, 1)
            res[mode]["within_budget"] = res[mode]["units"] <= res["budget"][f"{mode}_units"]
    res["cold"]["within_guide"] = res["cold"]["wall_s"] <= GUIDE_BUDGET_S
    from robustvae.utils import git_commit  # here, not at the top: robustvae.utils imports torch
    res["commit"] = git_commit() or "unknown"
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: res[k] for k in ("jobs", "reference_s", "budget")}, indent=None))
    for mode in ("cold", "warm"):
        if mode in res:
            print(f"{mode}: {res[mode]['wall_s']:.0f} s = {res[mode]['units']} reference units "
                  f"(budget {res['budget'][mode + '_units']}): {'within' if res[mode]['within_budget'] else 'OVER'}")
    print(f"written {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

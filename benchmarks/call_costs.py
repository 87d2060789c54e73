"""Where a chapter's time goes, call by call, read from the executed notebooks themselves.

    .venv/bin/python benchmarks/call_costs.py            # reads book/*.ipynb, writes results/cpu2_call_costs.json

The model cache logs every model it trains with its training time (``robustvae.cache: trained
KIND in S s``) and the result cache logs every attack, margin search or estimate it computes
(``robustvae.memo: computed NAME in S s``; a call made inside another cached call is marked
``[nested]`` and counted once, in its caller). Those lines are in each chapter's stored stderr,
so after a cold run (``benchmarks/time_book.py``) this script splits each chapter's wall time
(papermill's) into training per model, cached computations per function, and the rest (data,
uncached estimates, figures, kernel start). After a warm run the lines say ``loaded`` and the
report says so: run it on the notebooks of a cold run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINED = re.compile(r"robustvae\.cache: trained (\S+) in ([\d.]+) s \((\S+)\)")
COMPUTED = re.compile(r"robustvae\.memo: computed (\S+) in ([\d.]+) s \((\S+)\)( \[nested\])?")
LOADED = re.compile(r"robustvae\.memo: loaded")


def chapter_costs(path: Path) -> dict:
    """Training per model, computed calls per function (top level only), loads, and the rest."""
    nb = json.loads(path.read_text())
    wall = float(nb.get("metadata", {}).get("papermill", {}).get("duration") or float("nan"))
    training: dict[str, float] = {}
    calls: dict[str, dict] = {}
    loads = 0
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("name") != "stderr":
                continue
            text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
            for kind, s, fname in TRAINED.findall(text):
                training[f"{kind} ({fname.split('-')[-1].split('.')[0][:8]})"] = float(s)
            for name, s, _, nested in COMPUTED.findall(text):
                if nested:
                    continue
                c = calls.setdefault(name, {"n": 0, "s": 0.0})
                c["n"] += 1
                c["s"] = round(c["s"] + float(s), 1)
            loads += len(LOADED.findall(text))
    spent = sum(training.values()) + sum(c["s"] for c in calls.values())
    return {"wall_s": round(wall, 1), "training_s": round(sum(training.values()), 1),
            "computed_s": round(sum(c["s"] for c in calls.values()), 1),
            "other_s": round(wall - spent, 1), "training": training,
            "calls": dict(sorted(calls.items(), key=lambda kv: -kv[1]["s"])), "loaded": loads}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--book", type=Path, default=ROOT / "book")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu2_call_costs.json")
    args = ap.parse_args(argv)
    chapters = sorted(p for p in args.book.glob("[0-9][0-9]_*.ipynb"))
    if not chapters:
        sys.exit(f"call_costs.py: no chapter notebooks under {args.book}")
    res = {p.stem: chapter_costs(p) for p in chapters}
    loading = [ch for ch, r in res.items() if r["loaded"]]  # loaded results computed elsewhere: costs counted there
    from robustvae.utils import git_commit

    commit = git_commit() or "?"  # the code that ran, when called right after the run (time_book.py does)
    out = {"note": "from the notebooks' stderr; run on the notebooks of a cold run", "commit": commit,
           "chapters": res, "chapters_loading_results": loading}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for ch, r in res.items():
        top = ", ".join(f"{k} {v['s']:.0f} s ({v['n']}x)" for k, v in list(r["calls"].items())[:3])
        print(f"{ch:24s} wall {r['wall_s']:6.0f}  training {r['training_s']:6.0f}  computed {r['computed_s']:6.0f}"
              f"  other {r['other_s']:6.0f}  | {top}")
    if loading:
        print(f"call_costs.py: {', '.join(loading)} loaded cached results (a warm run?): their costs are incomplete.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

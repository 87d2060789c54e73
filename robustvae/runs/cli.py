"""The command line: ``python -m robustvae.runs {book,rerun,sweep,show}``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from .plan import BOOK, PROFILES, RUNS, chapter_parameters, find_chapters, parse_assignments, parse_grid
from .execute import execute_book, rerun
from .sweep import sweep


# --------------------------------------------------------------------------- command line


def _show(chapters: Sequence[str], book: Path) -> None:
    for nb in find_chapters(chapters, book):
        print(f"{nb.stem}:")
        for k, v in chapter_parameters(nb).items():
            print(f"  {k} = {v!r}")
    print("profiles:")
    for k, v in PROFILES.items():
        print(f"  {k}: " + ", ".join(f"{a}={b!r}" for a, b in v.items()))


def _parser() -> argparse.ArgumentParser:
    from . import __doc__ as description  # the package's: what every command does

    ap = argparse.ArgumentParser(prog="python -m robustvae.runs", description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--name", required=True, help="the run's folder under runs/ (e.g. fashion-smoke)")
        p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                       help="a parameter of the chapter's parameters cell (repeatable)")
        p.add_argument("--profile", choices=sorted(PROFILES),
                       help="a named parameter set applied first: " + ", ".join(PROFILES))
        p.add_argument("--book", type=Path, default=BOOK, help=f"folder of the chapter notebooks (default {BOOK})")
        p.add_argument("--runs-dir", type=Path, default=RUNS, help=f"where runs go (default {RUNS})")
        p.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")

    r = sub.add_parser("rerun", help="execute chapters with other parameters into runs/NAME/")
    r.add_argument("chapters", nargs="+", help="chapter numbers (02), stems (02_ood) or 'all'")
    common(r)
    r.add_argument("--stop-on-error", action="store_true", help="stop at the first failing chapter")
    s = sub.add_parser("sweep", help="run one chapter over a grid of parameters on Dask distributed")
    s.add_argument("chapter", help="a chapter number (02) or stem (02_ood)")
    common(s)
    s.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help="a grid axis (repeatable; the sweep runs the Cartesian product)")
    s.add_argument("--scheduler", help="address of a running Dask scheduler (default: a LocalCluster)")
    s.add_argument("--workers", type=int, help="LocalCluster workers (default: one per two cores)")
    b = sub.add_parser("book", help="execute the book's chapters in place (make book), each replaced only on success")
    b.add_argument("chapters", nargs="*", default=["all"], help="chapter numbers (02), stems or 'all' (default)")
    b.add_argument("--book", type=Path, default=BOOK, help=f"folder of the chapter notebooks (default {BOOK})")
    b.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    b.add_argument("--jobs", type=int, default=None,
                   help="chapters run at once (default: one per core, each on one thread)")
    sh = sub.add_parser("show", help="print chapters' parameters and the profiles")
    sh.add_argument("chapters", nargs="*", default=["all"])
    sh.add_argument("--book", type=Path, default=BOOK)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    import pandas as pd

    from ..data import DataSourceError

    args = _parser().parse_args(argv)
    try:
        if args.command == "show":
            _show(args.chapters, args.book)
            return 0
        if args.command == "book":
            t0 = time.perf_counter()
            done = execute_book(args.chapters, book=args.book, kernel=args.kernel, jobs=args.jobs)
            print(f"executed {len(done)} chapter(s) in {time.perf_counter() - t0:.0f} s")
            return 0
        params = parse_assignments(args.param)
        if args.command == "rerun":
            table = rerun(args.chapters, args.name, params, profile=args.profile, book=args.book,
                          runs=args.runs_dir, kernel=args.kernel, stop_on_error=args.stop_on_error)
        else:
            table = sweep(args.chapter, args.name, parse_grid(args.grid), params, profile=args.profile,
                          scheduler=args.scheduler, workers=args.workers, book=args.book,
                          runs=args.runs_dir, kernel=args.kernel)
    except (ValueError, DataSourceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a chapter of the book failed (execute_book)
        print(f"error: {e}", file=sys.stderr)
        return 1
    shown = table.drop(columns=["notebook"])
    if args.command == "rerun":  # one row per chapter, each with its own numbers: those are in the CSV
        shown = shown[["chapter", "status", "wall_s"]
                      + [c for c in ("claims_checked", "claims_failed") if c in shown] + ["error"]]
    shown["error"] = [" ".join(e.split())[:100] if isinstance(e, str) else "" for e in shown["error"]]
    for col in ("claims_checked", "claims_failed"):  # counts, not floats (a failed chapter has none)
        if col in shown:
            shown[col] = shown[col].astype("Int64")
    with pd.option_context("display.max_columns", 30, "display.width", 200, "display.max_colwidth", 100):
        print(shown.round(3).to_string(index=False))
    print(f"results: {os.path.relpath(Path(args.runs_dir) / args.name / 'results.csv')}")
    return 0 if (table["status"] == "ok").all() else 1

"""Do the book's findings hold across training seeds? One table, from the book and its reruns.

    # the reruns (each retrains every model from another seed; about 50 minutes each on 2 cores,
    # or run the two at once, one per core):
    .venv/bin/python -m robustvae.runs rerun 01 02 03 04 05 06 07 08 09 --name seed-1 -p seed=1
    .venv/bin/python -m robustvae.runs rerun 01 02 03 04 05 06 07 08 09 --name seed-2 -p seed=2
    # the table (seed 0 is the book's own run):
    .venv/bin/python benchmarks/seed_findings.py --runs seed-1 seed-2

Every chapter records each claim it checked (``claims_detail``, glued by
:meth:`robustvae.claims.Claims.conclude`: number, kind, claimed, holds, text). This script reads
them from the book's stored notebooks (seed 0) and from each rerun's executed notebooks
(``runs/NAME/``), matches claims by chapter and text, and writes
``results/seeds_findings.csv``: one row per claim, its verdict on each seed (``holds``,
``fails``, ``not checked`` where that run did not check it, ``chapter failed`` where the rerun
did not finish, ``not run`` where the rerun left the chapter out; a chapter no rerun included is
left out of the table), and on how many seeds it held. The commit of each rerun (its manifest) and of
the book are recorded, and a run made on other code (a commit whose ``robustvae/`` or chapters'
code cells differ from HEAD's, or uncommitted changes) is refused: the table compares one version
of the code. An edit of a chapter's prose alone does not make a rerun stale.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "seeds_findings.csv"


def _claims(nb: Path) -> dict[str, tuple[str, bool, bool, int]] | None:
    from robustvae.runs import read_glued

    detail = read_glued(nb).get("claims_detail")
    if detail is None:
        return None
    return {text: (kind, claimed, holds, num) for num, kind, claimed, holds, text in detail}


def collect(book: Path, run_dirs: dict[int, Path]) -> pd.DataFrame:
    rows = []
    for nb in sorted(book.glob("[0-9][0-9]_*.ipynb")):
        base = _claims(nb)
        if base is None:
            continue
        per_seed: dict[int, dict | str | None] = {0: base}
        for seed, d in run_dirs.items():
            f = d / nb.name
            per_seed[seed] = _claims(f) if f.exists() else "not run"
        if all(v == "not run" for s, v in per_seed.items() if s != 0):
            continue  # a chapter the reruns did not include
        for text, (kind, claimed, _, num) in base.items():
            if not claimed:
                continue
            row = {"chapter": nb.stem, "number": num, "kind": kind, "claim": text}
            held = checked = 0
            for seed, claims in per_seed.items():
                if claims == "not run":
                    verdict = "not run"
                elif claims is None:
                    verdict = "chapter failed"
                elif text not in claims or not claims[text][1]:
                    verdict = "not checked"
                else:
                    verdict = "holds" if claims[text][2] else "fails"
                    checked += 1
                    held += claims[text][2]
                row[f"seed_{seed}"] = verdict
            row["held"] = f"{held} of {checked}"
            rows.append(row)
    return pd.DataFrame(rows)


def code_cells(text: str) -> list[str]:
    """The code cells of a MyST chapter, in order: what runs (prose and the front matter are left out)."""
    cells, lines, inside = [], [], False
    for line in text.splitlines():
        if not inside and line.startswith("```{code-cell}"):
            inside, lines = True, []
        elif inside and line.rstrip() == "```":
            inside = False
            cells.append("\n".join(lines))
        elif inside:
            lines.append(line)
    return cells


def library_code(text: str) -> str:
    """A library module's code without its docstrings and comments (its syntax tree, as the model and
    result caches key it: :func:`robustvae.cache.code_fingerprint`); the text itself if it does not parse."""
    import ast

    from robustvae.cache import _without_docstrings
    try:
        return ast.dump(_without_docstrings(ast.parse(text)))
    except SyntaxError:
        return text


def changed_code(ran: str, rev: str = "HEAD") -> list[str]:
    """The library files and chapters whose *code* differs between commits ``ran`` and ``rev``: a
    library file whose code differs (docstrings and comments left out), any other file under
    ``robustvae/``, and a chapter whose code cells differ (an edit of prose alone cannot change a
    number, so it does not count)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)

    names = git("diff", "--name-only", ran, rev, "--", "robustvae", "book/[0-9][0-9]_*.md")
    if names.returncode:
        return [f"(git cannot compare {ran} with {rev})"]
    changed = []
    for path in names.stdout.split():
        old, new = git("show", f"{ran}:{path}"), git("show", f"{rev}:{path}")
        if old.returncode or new.returncode:         # added or removed
            changed.append(path)
        elif path.startswith("robustvae/"):
            if not path.endswith(".py") or library_code(old.stdout) != library_code(new.stdout):
                changed.append(path)
        elif code_cells(old.stdout) != code_cells(new.stdout):
            changed.append(path)
    return changed


def require_current_code(name: str, manifest: dict, head: str) -> None:
    """Refuse a rerun (``manifest``: its ``rerun.json``) made on other code: its commit must be clean and
    its library and its chapters' code cells the same as HEAD's (:func:`changed_code`), so that one
    table compares one version of the book."""
    ran = manifest.get("commit") or ""
    changed = ["(uncommitted changes)"] if ran.endswith("+dirty") else (changed_code(ran) if ran else ["(no commit)"])
    if changed:
        raise SystemExit(f"{name} ran on commit {ran or '?'}, and the library or the chapters' code have changed "
                         f"since (HEAD {head}: {', '.join(changed[:5])}): rerun it.")


def current_rerun(runs: Path, name: str, command: str, head: str) -> tuple[Path, dict]:
    """``(directory, manifest)`` of the rerun ``runs/name``, refused (``SystemExit``) when it has no
    manifest (``command`` says how to make it) or ran on other code (:func:`require_current_code`)."""
    d = runs / name
    manifest = d / "rerun.json"
    if not manifest.exists():
        raise SystemExit(f"{d} has no rerun.json: run `{command}` first.")
    m = json.loads(manifest.read_text())
    require_current_code(name, m, head)
    return d, m


def profile_job(runs: Path, name: str, chapter: str, profile: str, head: str) -> tuple[Path, dict, dict]:
    """``(directory, manifest, job)`` of the rerun ``runs/name`` of one ``chapter`` with ``profile``:
    :func:`current_rerun`, and refused (``SystemExit``) unless the chapter ran to its end. Used by the
    scripts that read one profile's rerun (``background_lr.py``, ``decoder_ic.py``, ``paper_layers.py``,
    ``longer_set.py``)."""
    d, m = current_rerun(runs, name, f"python -m robustvae.runs rerun {chapter[:2]} --name {name} "
                         f"--profile {profile}", head)
    job = next((j for j in m["jobs"] if j["chapter"] == chapter), None)
    if job is None or job["status"] != "ok":
        raise SystemExit(f"{name}: chapter {chapter} did not run to its end "
                         f"({job['error'] if job else 'not in the rerun'}).")
    return d, m, job


def profile_claims(book_claims: list, rerun_claims: list) -> list[dict]:
    """The rows of the claims a profile adds: each of the rerun's ``claims_detail`` entries whose text
    the book's run did not check (the chapter's own claims are the book's), as ``row`` ("claim N
    (kind)"), ``what`` (its text) and ``value`` ("holds" or "fails", "(not claimed)" appended when the
    chapter reported it without claiming it)."""
    checked = {text for *_, text in book_claims}
    return [{"row": f"claim {num} ({kind})", "what": text,
             "value": ("holds" if holds else "fails") + ("" if claimed else " (not claimed)")}
            for num, kind, claimed, holds, text in rerun_claims if text not in checked]


def profile_header(head: str, manifest: dict, job: dict, profile: str, detail: str = "") -> str:
    """The first line of a profile's results table: the commit it was made on, the rerun's commit and
    wall time, and the profile (``detail`` appended to it)."""
    return (f"# commit {head}; rerun on commit {manifest['commit']}, chapter wall {job['wall_s']:.0f} s; "
            f"--profile {profile}{detail}\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True, help="rerun names under runs/, e.g. seed-1 seed-2")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from robustvae.utils import git_commit  # here, not at the top: robustvae.utils imports torch
    head = git_commit() or "unknown"
    run_dirs: dict[int, Path] = {}
    for name in args.runs:
        d = ROOT / "runs" / name
        manifest = d / "rerun.json"
        if not manifest.exists():
            raise SystemExit(f"{d} has no rerun.json: run `python -m robustvae.runs rerun ... --name {name}` first.")
        m = json.loads(manifest.read_text())
        seeds = {j["parameters"].get("seed") for j in m["jobs"]} or {None}
        seed = next(iter(seeds))
        if len(seeds) != 1 or not isinstance(seed, int):
            raise SystemExit(f"{name}: its chapters must all run with one integer seed, got {sorted(map(str, seeds))}.")
        require_current_code(name, m, head)
        run_dirs[seed] = d
    table = collect(ROOT / "book", run_dirs)
    table.attrs["commit"] = head
    args.out.write_text(f"# commit {head}; seed 0 is the book's own run\n" + table.to_csv(index=False))
    findings = table[table["kind"] == "finding"]
    all_held = (findings["held"].str.split(" of ").apply(lambda p: p[0] == p[1] and p[1] != "0")).sum()
    print(f"{len(findings)} findings; held on every seed where checked: {all_held}")
    print(findings[findings["held"].str.split(" of ").apply(lambda p: p[0] != p[1])].to_string(index=False))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

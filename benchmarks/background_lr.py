"""Chapter 2's likelihood ratio against a background model (Ren et al., NeurIPS 2019), from its rerun profile.

    # the rerun (trains the background VAE, a second Fashion-MNIST VAE; the chapter's other models
    # come from the model cache):
    .venv/bin/python -m robustvae.runs rerun 02 --name background --profile background
    # the table:
    .venv/bin/python benchmarks/background_lr.py

The book leaves the ratio out (``background_rate = 0``: a second Fashion-MNIST VAE does not fit its
time budget). This script reads the numbers the rerun's executed notebook recorded
(``runs/background/02_ood.ipynb``, glued values): the ratio's AUROC on Fashion-MNIST vs MNIST with
its 95% bootstrap interval, the raw likelihood's beside it, the background model's own, the mutation
rate, and the verdict of each claim the profile adds (the claims the book's own run does not check);
the training time of the background VAE (the model cache's log line, when the rerun trained it) and
the time of the chapter's likelihood-ratio cell. It writes ``results/background_lr.csv``: one row per
number or claim, with the published AUROC beside the ratio's, and the commits in its first line. A
rerun made on other code (a commit whose ``robustvae/`` or chapter sources differ from HEAD's) is
refused, as in ``seed_findings.py``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_findings import profile_claims  # noqa: E402  (the same rows in every profile table)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "background_lr.csv"
CHAPTER = "02_ood"
#: The model cache's log line for a model it trained (as ``call_costs.py`` reads it).
TRAINED = re.compile(r"robustvae\.cache: trained background-vae in ([\d.]+) s")

#: Glued numbers of the profile: (key, lower bound key, upper bound key, what it is).
NUMBERS = [
    ("bg_rate", None, None, "mutation rate of the background VAE's training images"),
    ("bg_auroc", "bg_lo", "bg_hi", "AUROC, likelihood ratio against the background model"),
    ("bg_raw_auroc", "bg_raw_lo", "bg_raw_hi", "AUROC, -log p(x) of the chapter's VAE (the raw likelihood)"),
    ("bg_alone_auroc", None, None, "AUROC, -log p(x) of the background model alone"),
]


def _glued(nb: Path) -> dict:
    from robustvae.runs import read_glued

    return read_glued(nb) if nb.exists() else {}


def _costs(nb: Path) -> tuple[float | None, float | None]:
    """The background VAE's training time (None if the run loaded it from the cache) and the wall
    time of the cell that trains or loads it and scores the ratio (papermill's), in seconds."""
    if not nb.exists():
        return None, None
    cells = json.loads(nb.read_text())["cells"]
    for cell in cells:
        source = "".join(cell.get("source", ""))
        if cell.get("cell_type") == "code" and "get_background_vae" in source:
            text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []) if o.get("name") == "stderr")
            trained = TRAINED.search(text)
            duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
            return (float(trained.group(1)) if trained else None), (float(duration) if duration is not None else None)
    return None, None


def collect(book: Path, run: Path) -> pd.DataFrame:
    """One row per number and claim of the profile: ``row``, ``what``, ``value``, ``lo``, ``hi``, ``published``."""
    from robustvae.reports.ood import BACKGROUND, PUBLISHED

    nb = run / f"{CHAPTER}.ipynb"
    glued = _glued(nb)
    if "bg_auroc" not in glued:
        raise SystemExit(f"{nb} holds no likelihood ratio (no glued bg_auroc): did the rerun use "
                         "--profile background, and did the chapter run to its end?")
    published = {"bg_auroc": PUBLISHED[BACKGROUND][0], "bg_raw_auroc": PUBLISHED["-log p(x)"][0]}
    rows = [{"row": key, "what": what, "value": glued.get(key), "lo": glued.get(lo) if lo else None,
             "hi": glued.get(hi) if hi else None, "published": published.get(key)}
            for key, lo, hi, what in NUMBERS]
    rows += profile_claims(_glued(book / f"{CHAPTER}.ipynb").get("claims_detail", []), glued.get("claims_detail", []))
    trained_s, cell_s = _costs(nb)
    rows.append({"row": "train_s", "what": "background VAE training (s; empty if the rerun loaded it)",
                 "value": trained_s})
    rows.append({"row": "cell_s", "what": "the likelihood-ratio cell (s): training or loading, and scoring",
                 "value": cell_s})
    return pd.DataFrame(rows, columns=["row", "what", "value", "lo", "hi", "published"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="background", help="the rerun's name under runs/")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from robustvae.utils import git_commit  # here, not at the top: robustvae.utils imports torch

    head = git_commit() or "unknown"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from seed_findings import profile_header, profile_job  # the same check as the seed table's

    d, m, job = profile_job(ROOT / "runs", args.run, CHAPTER, "background", head)
    table = collect(ROOT / "book", d)
    args.out.write_text(profile_header(head, m, job, "background") + table.to_csv(index=False))
    print(table.to_string(index=False))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

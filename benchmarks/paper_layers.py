"""Chapter 7 with Barrett et al.'s Björck layers and standard VAEs of matched blur, from its rerun profile.

    # the rerun (trains a Björck-layer Lipschitz VAE and standard VAEs of latent size 2, 3, 4; the
    # chapter's other models come from the model cache):
    .venv/bin/python -m robustvae.runs rerun 07 --name paper-layers --profile paper-layers
    # the table:
    .venv/bin/python benchmarks/paper_layers.py

The book leaves both comparisons out (``bjorck_margin = None``, ``matched_latent_dims = ()``): a
Björck training step costs about 20 times a spectrally normalised one. This script reads the numbers
the rerun's executed notebook recorded (``runs/paper-layers/07_certified.ipynb``, glued ``pl{j}_*``
values, one row ``j`` per compared pair): both models' pixel MSE, test ELBO and median empirical
margin, the paired differences with their 95% bootstrap intervals, the smallest certified margin of
a model that has one, and the verdict of each claim the profile adds; then the training time of each
model the rerun trained (the model cache's log lines) and the wall time of the comparison cell. It
writes ``results/paper_layers.csv`` with the commits in its first line. A rerun made on other code
is refused, as in ``seed_findings.py``.
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
OUT = ROOT / "benchmarks" / "results" / "paper_layers.csv"
CHAPTER = "07_certified"
#: The model cache's log line for a model it trained.
TRAINED = re.compile(r"robustvae\.cache: trained ([\w-]+) in ([\d.]+) s \(([\w-]+)\.pt\)")
#: The per-pair numbers, in the csv's column order.
FIELDS = ["model", "ref", "mse", "ref_mse", "elbo", "ref_elbo", "elbo_diff", "elbo_lo", "elbo_hi",
          "emp", "ref_emp", "margin_diff", "margin_lo", "margin_hi", "cert"]


def _glued(nb: Path) -> dict:
    from robustvae.runs import read_glued

    return read_glued(nb) if nb.exists() else {}


def _costs(nb: Path) -> tuple[list[tuple[str, float]], float | None]:
    """``(trained, cell_s)``: each model the comparison cell trained, ``(kind, seconds)``, and that
    cell's wall time (papermill's), in seconds."""
    if not nb.exists():
        return [], None
    for cell in json.loads(nb.read_text())["cells"]:
        source = "".join(cell.get("source", ""))
        if cell.get("cell_type") == "code" and "BjorckVAEConfig.of" in source:
            text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []) if o.get("name") == "stderr")
            duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
            trained = [(m.group(1), float(m.group(2))) for m in TRAINED.finditer(text)]
            return trained, (float(duration) if duration is not None else None)
    return [], None


def collect(book: Path, run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(pairs, extra)``: one row per compared pair (:data:`FIELDS`), and one row per claim the
    profile adds, trained model and cost (``row``, ``what``, ``value``)."""
    nb = run / f"{CHAPTER}.ipynb"
    glued = _glued(nb)
    if "pl_n" not in glued:
        raise SystemExit(f"{nb} holds no comparison (no glued pl_n): did the rerun use "
                         "--profile paper-layers, and did the chapter run to its end?")
    pairs = pd.DataFrame([{f: glued.get(f"pl{j}_{f}") for f in FIELDS} for j in range(int(glued["pl_n"]))],
                         columns=FIELDS)
    rows = [{"row": "standards", "what": "reconstruction error (pixel MSE) of each standard VAE",
             "value": glued.get("pl_standards")}]
    rows += profile_claims(_glued(book / f"{CHAPTER}.ipynb").get("claims_detail", []), glued.get("claims_detail", []))
    trained, cell_s = _costs(nb)
    for kind, seconds in trained:
        rows.append({"row": f"train_s {kind}", "what": f"training of a {kind} (s)", "value": seconds})
    rows.append({"row": "cell_s", "what": "the comparison cell (s): training or loading, and attacking",
                 "value": cell_s})
    return pairs, pd.DataFrame(rows, columns=["row", "what", "value"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="paper-layers", help="the rerun's name under runs/")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from robustvae.utils import git_commit  # here, not at the top: robustvae.utils imports torch

    head = git_commit() or "unknown"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from seed_findings import profile_header, profile_job  # the same check as the seed table's

    d, m, job = profile_job(ROOT / "runs", args.run, CHAPTER, "paper-layers", head)
    pairs, extra = collect(ROOT / "book", d)
    table = pd.concat([pairs.assign(row=[f"pair {j}" for j in range(len(pairs))]), extra], ignore_index=True)
    table = table[["row", *FIELDS, "what", "value"]]
    args.out.write_text(profile_header(head, m, job, "paper-layers") + table.to_csv(index=False))
    print(table.to_string(index=False))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does a better-trained perturbation set change chapter 8? The book's chapter beside its ``longer-set`` rerun.

    # the rerun (a CVAE trained 10 times longer, and the three classifiers trained again with it):
    .venv/bin/python -m robustvae.runs rerun 08 --name longer-set --profile longer-set
    # the table:
    .venv/bin/python benchmarks/longer_set.py

Wong & Kolter's first property of a perturbation set is that it approximates the real perturbations
closely; the book's CVAE trains for a few epochs and stays far from that. This script reads each
claim's verdict and the numbers behind them (the approximation error against the pairs' size, the
accuracies on random true perturbations and in the worst case) from the book's chapter 8 and from
the rerun's (``runs/longer-set/``), and writes ``results/longer_set.csv``, the book's value beside
the rerun's (:func:`more_inputs.collect`). A rerun made on other code is refused, as in
``seed_findings.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "longer_set.csv"
CHAPTER = "08_perturbation_sets"
LABEL = "longer set"

#: Glued numbers shown beside the verdicts: (chapter, key, what it is).
KEY_NUMBERS = [(CHAPTER, k, what) for k, what in [
    ("err_rts_max", "approximation error, RTS, largest radius"),
    ("shift_rts", "size of the RTS pairs, ||x~ - x||"),
    ("ratio_rts", "their ratio (the paper's first property wants it small)"),
    ("err_el_max", "approximation error, elastic, largest radius"),
    ("ratio_el", "its ratio to the elastic pairs' size"),
    ("eps_train", "radius of the learned set used in training and attacks"),
    ("clean_standard", "clean accuracy, standard training"),
    ("clean_latent_adv", "clean accuracy, learned-set adversarial training"),
    ("rtrue_standard", "accuracy on random true perturbations, standard training"),
    ("rtrue_augment", "..., augmentation with true perturbations"),
    ("rtrue_latent_adv", "..., learned-set adversarial training"),
    ("verdict_rtrue", "learned-set training against standard, random true perturbations"),
    ("worst_latent_adv", "accuracy in the learned set's worst case, learned-set training"),
    ("worst_standard", "..., standard training"),
    ("grid_latent_adv_range", "worst case over true RTS grids, learned-set training"),
    ("grid_standard_range", "..., standard training"),
    ("verdict_grid", "learned-set training against standard, true RTS grids"),
]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="longer-set", help="the rerun's name under runs/")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from robustvae.utils import git_commit  # here, not at the top: robustvae.utils imports torch

    head = git_commit() or "unknown"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from more_inputs import collect
    from seed_findings import profile_header, profile_job  # the same check as the seed table's

    d, m, job = profile_job(ROOT / "runs", args.run, CHAPTER, "longer-set", head)
    params = ", ".join(f"{k}={v}" for k, v in job.get("parameters", {}).items() if k != "strict_claims")
    table = collect(ROOT / "book", d, (CHAPTER,), KEY_NUMBERS, LABEL)
    args.out.write_text(profile_header(head, m, job, "longer-set", f" ({params})") + table.to_csv(index=False))
    print(table.to_string(index=False))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

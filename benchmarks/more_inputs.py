"""Do the findings hold on more inputs? The book's chapters 3, 4, 6, 7 and 9 beside a rerun on more.

    # the rerun (the book's models from the cache; 10 to 40 minutes a chapter on one core):
    .venv/bin/python -m robustvae.runs rerun 03 04 06 07 09 --name more-inputs --profile more-inputs \
        -p n_vae_attack=100 -p n_adaptive=200 -p n_lbfgs=200 -p n_latent=200 \
        -p n_margin=100 -p n_detect=200 -p n_purify=200
    # the table:
    .venv/bin/python benchmarks/more_inputs.py

Chapter 3 attacks the VAE itself on 20 test digits, its detectors' adaptive attackers face 40 and
L-BFGS 50; chapter 4 evaluates its costly latent-search purifier (c) on 30; chapter 6 studies its margins on 20 test digits and chapter 7 on 50; chapter 9 its
margins on 20, its detection on 100 and its purification on 50, to stay inside the book's time budget. This script reads each claim's verdict (``claims_detail``) and the key numbers behind
the margin findings (glued values) from the book's stored notebooks and from the rerun's
(``runs/more-inputs/``), and writes ``results/more_inputs_findings.csv``: one row per claim or
number, the book's value beside the rerun's. A rerun made on other code (a commit whose
``robustvae/`` or chapter sources differ from HEAD's) is refused, as in ``seed_findings.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "more_inputs_findings.csv"
CHAPTERS = ("03_adversarial", "04_purification", "06_rrobustness", "07_certified", "09_scorecard")
#: The rerun's command (the appendix and the refusal message show it).
COMMAND = ("python -m robustvae.runs rerun 03 04 06 07 09 --name more-inputs --profile more-inputs "
           "-p n_vae_attack=100 -p n_adaptive=200 -p n_lbfgs=200 -p n_latent=200 -p n_margin=100 -p n_detect=200 "
           "-p n_purify=200")

#: Glued numbers shown beside the verdicts: (chapter, key, what it is).
KEY_NUMBERS = [
    ("03_adversarial", "adaptive_n", "test digits facing the adaptive attackers"),
    ("03_adversarial", "adaptive_drop_lo", "AUROC drop under the consistency-aware attacker, 95% lower bound"),
    ("03_adversarial", "near_true_lbfgs", "L-BFGS encodings nearest their true class"),
    ("03_adversarial", "near_true_lbfgs_lo", "... 95% lower bound"),
    ("03_adversarial", "pgd_full_eps", "smallest L2 radius where targeted PGD wins on 90%"),
    ("03_adversarial", "latent_at_pgd", "latent attack's success there"),
    ("03_adversarial", "latent_pgd_p", "... McNemar p against PGD"),
    ("03_adversarial", "damage_flip_ci", "max-damage: reconstructions whose class changes"),
    ("03_adversarial", "damage_input_flip_ci", "max-damage: inputs whose class changes"),
    ("03_adversarial", "damage_p", "... McNemar p, reconstructions against inputs"),
    ("04_purification", "n_latent", "test digits attacked through the latent search (c)"),
    ("04_purification", "adv_c_1", "(c) under its worst-case portfolio, accuracy at L-inf 0.1"),
    ("04_purification", "adv_c_1_ci", "... 95% interval"),
    ("04_purification", "obl_c_2", "(c) against the oblivious attack, accuracy at L-inf 0.2"),
    ("04_purification", "adv_c_2", "(c) under its worst-case portfolio, accuracy at L-inf 0.2"),
    ("04_purification", "adv_c_2_ci", "... 95% interval"),
    ("06_rrobustness", "n_inputs", "test digits"),
    ("06_rrobustness", "med_vae", "median empirical margin, VAE"),
    ("06_rrobustness", "med_top", "median empirical margin, beta-VAE (largest beta)"),
    ("06_rrobustness", "diff_lo", "difference of the medians, 95% lower bound"),
    ("06_rrobustness", "diff_hi", "difference of the medians, 95% upper bound"),
    ("06_rrobustness", "rho_mean", "within-model Spearman (theory vs attack), mean over models"),
    ("06_rrobustness", "rho_lo", "... 95% lower bound"),
    ("06_rrobustness", "rho_hi", "... 95% upper bound"),
    ("06_rrobustness", "below_paper", "(model, input) pairs below the paper margin"),
    ("06_rrobustness", "n_total", "(model, input) pairs"),
    ("06_rrobustness", "below_paper_inputs", "inputs where some model falls below the paper margin"),
    ("06_rrobustness", "below_paper_inputs_hi", "... their share's Wilson 95% upper end"),
    ("07_certified", "n_attack", "test digits"),
    ("07_certified", "emp_std", "median empirical margin, standard VAE"),
    ("07_certified", "emp_0", "median empirical margin, sharpest Lipschitz VAE"),
    ("07_certified", "dmg_std", "mean damage at the compared budget, standard VAE"),
    ("07_certified", "dmg_0", "mean damage, sharpest Lipschitz VAE"),
    ("07_certified", "ratio_0", "empirical / certified margin, sharpest Lipschitz VAE"),
    ("09_scorecard", "n_margin", "test digits (margins)"),
    ("09_scorecard", "n_fooled", "attacked digits fooled (detection)"),
    ("09_scorecard", "margin_vae", "median empirical margin, VAE"),
    ("09_scorecard", "margin_top", "median empirical margin, beta-VAE (largest beta)"),
    ("09_scorecard", "diff_top_lo", "difference of the two, 95% lower bound"),
    ("09_scorecard", "diff_lip_lo_min", "Lipschitz VAEs minus VAE: smallest 95% lower bound"),
    ("09_scorecard", "diff_lip_tc_lo", "Lipschitz VAE (R*=0.25) minus beta-TCVAE, 95% lower bound"),
    ("09_scorecard", "det_vae", "detection AUROC of consistency, VAE"),
    ("09_scorecard", "undef_acc", "accuracy under attack without a purifier"),
    ("09_scorecard", "pur_max", "best accuracy under attack with a purifier"),
    ("09_scorecard", "pur_sig", "purified pipelines significantly less accurate than none (McNemar)"),
    ("09_scorecard", "pur_p_max", "... the largest of their p-values"),
    ("09_scorecard", "rho_trade", "Spearman across models, MSE vs margin"),
    ("09_scorecard", "rho_trade_lo", "... 95% lower bound (inputs resampled)"),
    ("09_scorecard", "rho_witness", "Spearman across models, margin vs detection AUROC"),
    ("09_scorecard", "rho_witness_hi", "... 95% upper bound (inputs resampled)"),
]


def _glued(nb: Path) -> dict:
    from robustvae.runs import read_glued

    return read_glued(nb) if nb.exists() else {}


def collect(book: Path, run: Path, chapters: tuple[str, ...] = CHAPTERS,
            key_numbers: list[tuple[str, str, str]] = KEY_NUMBERS, label: str = "more inputs") -> pd.DataFrame:
    """One row per claim the book's run checked (its verdict in the book and in the rerun) and per
    key number (the book's value and the rerun's), for ``chapters``; the rerun's column is ``label``
    (``benchmarks/longer_set.py`` reuses this for chapter 8's profile)."""
    rows = []
    for ch in chapters:
        base, more = _glued(book / f"{ch}.ipynb"), _glued(run / f"{ch}.ipynb")
        theirs = {text: holds for _, _, claimed, holds, text in more.get("claims_detail", []) if claimed}
        for num, kind, claimed, holds, text in base.get("claims_detail", []):
            if not claimed:
                continue
            rerun = ("holds" if theirs[text] else "fails") if text in theirs else (
                "chapter failed" if not more else "not checked")
            rows.append({"chapter": ch, "row": f"claim {num} ({kind})", "what": text,
                         "book": "holds" if holds else "fails", label: rerun})
    for ch, key, what in key_numbers:
        base, more = _glued(book / f"{ch}.ipynb"), _glued(run / f"{ch}.ipynb")
        rows.append({"chapter": ch, "row": key, "what": what, "book": base.get(key, ""),
                     label: more.get(key, "")})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="more-inputs", help="the rerun's name under runs/")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from robustvae.utils import git_commit  # here, not at the top: robustvae.utils imports torch

    head = git_commit() or "unknown"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from seed_findings import current_rerun  # the same check as the seed table's

    d, _ = current_rerun(ROOT / "runs", args.run, COMMAND.replace("more-inputs --profile", f"{args.run} --profile"), head)
    table = collect(ROOT / "book", d)
    args.out.write_text(f"# commit {head}; book: the chapters' default sizes; more inputs: "
                        f"{COMMAND.split('--profile ', 1)[1]}\n" + table.to_csv(index=False))
    print(table.to_string(index=False))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

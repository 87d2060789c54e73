"""Chapter 2's input complexity under three decoder likelihoods, from its `decoders` rerun profile.

    # the rerun (trains two more Fashion-MNIST VAEs, the chapter's configuration with a continuous
    # Bernoulli and with a discretized-logistic decoder; the chapter's other models come from the cache):
    .venv/bin/python -m robustvae.runs rerun 02 --name decoders --profile decoders
    # the table:
    .venv/bin/python benchmarks/decoder_ic.py

Serra et al.'s input complexity ``S(x) = -log2 p(x) - L_png(x)`` subtracts two code lengths of one 8-bit
image; under the book's Bernoulli decoder the first is not one, and the score calls uniform noise
in-distribution. The book leaves the comparison out (``ic_decoders = ()``: two more Fashion-MNIST VAEs
do not fit its time budget). This script reads the numbers the rerun's executed notebook recorded
(``runs/decoders/02_ood.ipynb``, glued values): for each decoder (the chapter's Bernoulli, the continuous
Bernoulli, the discretized logistic of ``robustvae.discrete``), the AUROC with its 95% bootstrap interval
of the raw likelihood ``-log p(x)`` and of ``S(x)``, Fashion-MNIST (in) against MNIST and against uniform
noise; the mean code lengths in bits per pixel behind ``S(x)``; the verdict of each claim the profile adds
(the claims the book's own run does not check); the training time of each extra VAE (the model cache's
log lines, when the rerun trained them) and the time of the chapter's decoders cell. It writes
``results/decoder_ic.csv``: one row per number or claim, with the published AUROC where a paper gives
one, and the commits in its first line. A rerun made on other code (a commit whose ``robustvae/`` or
chapter sources differ from HEAD's) is refused, as in ``seed_findings.py``.
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
OUT = ROOT / "benchmarks" / "results" / "decoder_ic.csv"
CHAPTER = "02_ood"
#: The model cache's log lines for the models it trained (as ``background_lr.py`` reads them).
TRAINED = re.compile(r"robustvae\.cache: trained ([\w-]+) in ([\d.]+) s")
#: The decoders, with the short names of their glued numbers (``robustvae.reports.ood.DECODERS``).
DECODERS = {"bern": "Bernoulli (the chapter's VAE)", "cb": "continuous Bernoulli",
            "dl": "discretized logistic"}
#: Which extra VAE each model-cache kind is in the decoders cell (the continuous Bernoulli VAE is a ``vae``).
KINDS = {"vae": "cb", "discretized-vae": "dl"}
SCORES = {"like": "-log p(x)", "ic": "input complexity S(x)"}
SETS = {"mnist": "MNIST", "noise": "uniform noise"}
CODE_SETS = {"in": "Fashion-MNIST test", "mnist": "MNIST", "noise": "uniform noise"}


def _glued(nb: Path) -> dict:
    from robustvae.runs import read_glued

    return read_glued(nb) if nb.exists() else {}


def _costs(nb: Path) -> tuple[dict[str, float], float | None]:
    """The extra VAEs' training times by decoder (none for a VAE the run loaded from the cache) and the
    wall time of the cell that trains or loads them and scores them (papermill's), in seconds."""
    if not nb.exists():
        return {}, None
    for cell in json.loads(nb.read_text())["cells"]:
        source = "".join(cell.get("source", ""))
        if cell.get("cell_type") == "code" and "decoder_vae" in source:
            text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []) if o.get("name") == "stderr")
            trained = {KINDS.get(kind, kind): float(s) for kind, s in TRAINED.findall(text)}
            duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
            return trained, (float(duration) if duration is not None else None)
    return {}, None


def collect(book: Path, run: Path) -> pd.DataFrame:
    """One row per number and claim of the profile: ``row``, ``what``, ``value``, ``lo``, ``hi``, ``published``."""
    from robustvae.reports.ood import PUBLISHED

    nb = run / f"{CHAPTER}.ipynb"
    glued = _glued(nb)
    if "dec_dl_ic_noise" not in glued:
        raise SystemExit(f"{nb} holds no decoder comparison (no glued dec_dl_ic_noise): did the rerun use "
                         "--profile decoders, and did the chapter run to its end?")
    # the published raw likelihood on this pair is PixelCNN++'s, a discretized-logistic (mixture) model
    published = {"dec_dl_like_mnist": PUBLISHED["-log p(x)"][0]}
    rows = []
    for d, decoder in DECODERS.items():
        for tag, score in SCORES.items():
            for st, name in SETS.items():
                key = f"dec_{d}_{tag}_{st}"
                rows.append({"row": key, "what": f"AUROC, {score}, {decoder}, Fashion-MNIST vs {name}",
                             "value": glued.get(key), "lo": glued.get(f"{key}_lo"), "hi": glued.get(f"{key}_hi"),
                             "published": published.get(key)})
    for d, decoder in DECODERS.items():
        for st, name in CODE_SETS.items():
            rows.append({"row": f"dec_{d}_bpp_{st}", "what": f"mean -log2 p(x) per pixel (bits, IWAE), {decoder}, "
                         f"{name}", "value": glued.get(f"dec_{d}_bpp_{st}")})
    for st, name in CODE_SETS.items():
        rows.append({"row": f"png_bpp_{st}", "what": f"mean PNG length per pixel (bits), {name}",
                     "value": glued.get(f"png_bpp_{st}")})
    rows += profile_claims(_glued(book / f"{CHAPTER}.ipynb").get("claims_detail", []), glued.get("claims_detail", []))
    trained, cell_s = _costs(nb)
    for d in ("cb", "dl"):
        rows.append({"row": f"train_s_{d}", "what": f"{DECODERS[d]} VAE training (s; empty if the rerun loaded it)",
                     "value": trained.get(d)})
    rows.append({"row": "cell_s", "what": "the decoders cell (s): training or loading the two VAEs, and scoring",
                 "value": cell_s})
    return pd.DataFrame(rows, columns=["row", "what", "value", "lo", "hi", "published"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="decoders", help="the rerun's name under runs/")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from robustvae.utils import git_commit  # here, not at the top: robustvae.utils imports torch

    head = git_commit() or "unknown"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from seed_findings import profile_header, profile_job  # the same check as the seed table's

    d, m, job = profile_job(ROOT / "runs", args.run, CHAPTER, "decoders", head)
    table = collect(ROOT / "book", d)
    args.out.write_text(profile_header(head, m, job, "decoders") + table.to_csv(index=False))
    print(table.to_string(index=False))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

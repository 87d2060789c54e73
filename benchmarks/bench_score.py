"""How long does ``python -m robustvae score`` take on one model?

Times the command end to end in a fresh process (import, checks, inputs, every column, the report),
and reads the per-column seconds from the JSON it writes. The model is the book's VAE architecture
(latent 16, default widths) and, unless ``--book-classifier``, the classifier is the book's
architecture too; both untrained, so nothing is trained and the column costs are those of the
book's models (an untrained VAE is never broken by the margin attacks, so every radius of the grid
is searched: the margin's worst case). ``--book-classifier`` uses the book's trained classifier
from the model cache instead (trained first if the cache lacks it: minutes).

    python benchmarks/bench_score.py                    # smoke sizes (issue 22: under a minute)
    python benchmarks/bench_score.py --sizes book       # chapter 9's sizes (issue 22: under 5 minutes)
    python benchmarks/bench_score.py --sizes book --book-classifier --out benchmarks/results/cpu2_score_book.json

The process is pinned as the book's are (1 thread, AVX2 kernels); ``ROBUSTVAE_NUMERICS=native``
in the environment runs with the machine's own kernels and ``OMP_NUM_THREADS`` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(sizes: str, book_classifier: bool, device: str = "cpu") -> dict:
    """One timed run of the command; returns wall seconds, the per-column seconds and the row."""
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "vae.pt"
        subprocess.run([sys.executable, "-c",
                        "import torch; from tests.score_fixture import book_architecture_vae as f; "
                        f"torch.save(f().state_dict(), {str(weights)!r})"], cwd=ROOT, check=True)
        cmd = [sys.executable, "-m", "robustvae", "score", "--model", "tests.score_fixture:book_architecture_vae",
               "--weights", str(weights), "--sizes", sizes, "--device", device, "--no-progress",
               "--out", str(Path(tmp) / "report.html")]
        if not book_classifier:
            cmd += ["--classifier", "tests.score_fixture:book_architecture_classifier"]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True)
        wall = time.perf_counter() - t0
        record = json.loads((Path(tmp) / "report.json").read_text())
    return {"sizes": sizes, "book_classifier": book_classifier, "wall_s": round(wall, 2),
            "columns_s": {k: round(v, 2) for k, v in record["meta"]["seconds"].items()},
            "numerics": os.environ.get("ROBUSTVAE_NUMERICS", "pinned"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "commit": record["commit"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="smoke", choices=("smoke", "book"))
    p.add_argument("--book-classifier", action="store_true", help="the book's trained classifier (model cache)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args(argv)
    result = run(args.sizes, args.book_classifier, args.device)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.sizes == "smoke":
        print("\nBook sizes (minutes; not run here): python benchmarks/bench_score.py --sizes book "
              "[--book-classifier] [--out benchmarks/results/cpu2_score_book.json]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m robustvae score ...`` scores a VAE (:mod:`robustvae.score`); every other command
(``rerun``, ``sweep``, ``show``, ...) is the same as ``python -m robustvae.runs``."""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``score`` to :func:`robustvae.score.main`, everything else to :func:`robustvae.runs.main`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "score":
        from . import numerics

        # before torch loads: the book's kernels, so the book's cached models (keyed by the
        # numerics) are found and a book model scores as in the book (ROBUSTVAE_NUMERICS=native: off)
        numerics.pin_environment()
        from .score import main as score_main

        return score_main(argv[1:])
    if argv[:1] in (["-h"], ["--help"]):
        print("python -m robustvae score --model MODULE:FACTORY --weights FILE [...]: score your own VAE "
              "(python -m robustvae score --help)\n")
    from .runs import main as runs_main

    return runs_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Chapter 10's tables, numbers and shell example: a scored VAE's row beside the book's, and the
``python -m robustvae score`` command run on a saved model.

The scoring is :mod:`robustvae.score` (:func:`robustvae.score.evaluate`), the book's reference rows
and the HTML report are :mod:`robustvae.score_report`; these functions put the rows together into
the chapter's table and the numbers its prose quotes, run the command in a subprocess and check
what it wrote. The figure is in :mod:`robustvae.plots.score`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

from .. import scorecard as sc
from ..score_report import DIGITS, SHORT, reference_rows
from ..tables import interval

if TYPE_CHECKING:  # pragma: no cover
    from ..score import ModelCheck

__all__ = [
    "REPORT_FILES",
    "check_text",
    "comparable_reference",
    "estimate",
    "interval_table",
    "numbers",
    "run_score_command",
    "printed",
    "check_command_output",
]

#: The files ``python -m robustvae score --out report.html`` writes.
REPORT_FILES = ("report.html", "report.csv", "report.json")

#: Chapter 10's glue prefixes: its prose's name -> the scorecard column.
_QUOTED = {"elbo": "elbo", "mse": "mse", "margin": "margin", "pur": "purified_acc", "det": "detection_auroc"}


def check_text(found: ModelCheck) -> str:
    """Returns :func:`robustvae.score.check_model`'s findings as lines of text.

    The latent size, each part the model lacks with what the scorecard uses instead, and each
    column that will be empty with the reason.
    """
    lines = [f"latent size: {found.latent_dim}", "parts the model lacks, and what the scorecard uses instead:"]
    lines += [f"  {part}: {how}" for part, how in found.filled.items()]
    lines.append("empty columns:")
    lines += [f"  {col}: {why}" for col, why in found.missing_columns.items()]
    return "\n".join(lines)


def comparable_reference(dataset: str, sizes: str) -> tuple[pd.DataFrame | None, str]:
    """Returns the book's reference rows and where they came from, or ``None`` where they do not compare.

    The rows (:func:`robustvae.score_report.reference_rows`, chapter 9's stored notebook) were scored
    on mnist-5k at the book's sizes: for another ``dataset`` or ``sizes`` the table is ``None`` and
    the note says so.
    """
    reference, note = reference_rows()
    if not (dataset == "mnist-5k" and sizes == "book"):
        return None, "No reference rows for this dataset or sizes."
    return reference, note


def estimate(card: pd.DataFrame, name: str, col: str) -> tuple[float, float, float]:
    """Returns ``(value, lo, hi)`` of column ``col`` in the row ``name`` of a scorecard table."""
    return tuple(float(card.loc[name, (col, s)]) for s in ("value", "lo", "hi"))


def interval_table(card: pd.DataFrame) -> pd.DataFrame:
    """Returns the scorecard as text: per model and column, ``"estimate [lo, hi]"`` at chapter 9's decimals.

    ``card`` is a :func:`robustvae.scorecard.table` (columns ``(column, value|lo|hi)``); the headers
    are :data:`robustvae.score_report.SHORT`, a dash marks a missing value.
    """
    def cell(name: str, col: str) -> str:
        v, lo, hi = (card.loc[name, (col, s)] for s in ("value", "lo", "hi"))
        return interval(v, lo, hi, precision=DIGITS[col], keep_together=True)

    return pd.DataFrame(
        {SHORT[c]: [cell(n, c) for n in card.index] for c in sc.COLUMNS},
        index=pd.Index(card.index, name="model"),
    )


def numbers(card: pd.DataFrame, rows: Mapping[str, str]) -> dict[str, float]:
    """Returns the estimates the prose quotes, by glue name ``<column>_<who>``, ``..._lo``, ``..._hi``.

    ``rows`` maps a short name (``"mlp"``) to a row of ``card``; a row not in ``card`` (no
    reference rows) is left out. The columns: ``elbo``, ``mse``, ``margin``, ``pur`` (purified
    accuracy) and ``det`` (detection AUROC).
    """
    out = {}
    for key, col in _QUOTED.items():
        for who, name in rows.items():
            if name not in card.index:
                continue
            for part, val in zip(("", "_lo", "_hi"), estimate(card, name, col)):
                out[f"{key}_{who}{part}"] = val
    return out


def run_score_command(args: Sequence[str], cwd: str | Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Returns the finished ``python -m robustvae score ARGS``, run in ``cwd`` with ``cwd`` on the import path.

    Raises ``RuntimeError`` with the end of its stderr if the command fails.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(cwd), env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-m", "robustvae", "score", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the command failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def printed(done: subprocess.CompletedProcess) -> str:
    """Returns what the command printed, less the timing at the end of its last line (it varies)."""
    return re.sub(r" \(\d+(\.\d+)? s\)$", "", done.stdout.rstrip())


def check_command_output(directory: str | Path, vae: nn.Module, x: torch.Tensor,
                         module: str = "my_vae") -> dict[str, Any]:
    """Returns what the shell example wrote in ``directory``, checked against the notebook's model.

    Keys: ``same_model`` (the
    factory ``make_vae`` of ``<module>.py`` with the weights ``<module>.pt`` encodes ``x`` exactly
    as ``vae`` does), ``self_contained`` (the HTML embeds its figure and links to nothing online)
    and ``record`` (the report's JSON).
    """
    from ..score import load_weights

    directory = Path(directory)
    spec = importlib.util.spec_from_file_location(module, directory / f"{module}.py")
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)
    reloaded = load_weights(factory.make_vae(), directory / f"{module}.pt").to(x.device).eval()
    with torch.no_grad():
        same_model = all(torch.equal(a, b) for a, b in zip(reloaded.encode(x), vae.encode(x)))
    page = (directory / "report.html").read_text(encoding="utf-8")
    record = json.loads((directory / "report.json").read_text(encoding="utf-8"))
    self_contained = "data:image/png;base64," in page and not re.search(r"""(src|href)=["']?https?:""", page)
    return {"same_model": same_model, "self_contained": self_contained, "record": record}

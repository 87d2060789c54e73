"""The report of :mod:`robustvae.score`: the book's reference rows and a self-contained HTML page.

:func:`reference_rows` reads the book's eight rows from chapter 9's stored notebook (or a CSV
written here); :func:`write_report` writes the HTML report (the heat map against the book's rows,
the table with intervals, what each column measures and which chapter explains it, the inputs and
attack budgets, the commit) and a CSV and a JSON of the numbers beside it. The page is
self-contained (inline CSS, the figure as an embedded PNG, no external links), so it opens
offline. :data:`COLUMN_INFO`, :data:`DIGITS` and :data:`SHORT` are the columns' descriptions,
decimals and short headers (chapter 9's).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import io
import json
import math
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from . import scorecard as sc

if TYPE_CHECKING:  # pragma: no cover
    from .score import ScoreResult

__all__ = ["COLUMN_INFO", "DIGITS", "SHORT", "reference_rows", "git_commit", "write_report"]

#: Column -> (what it measures, the chapter that explains it), as chapter 9's table of columns.
COLUMN_INFO: dict[str, tuple[str, int]] = {
    "elbo": ("fit: the test ELBO in nats, one sample of z per image (higher is better)", 1),
    "mse": ("reconstruction quality: pixel MSE of the mean reconstruction (lower is better)", 1),
    "ood_auroc": ("the model's best VAE score (of chapter 2's), test digits (in) vs Fashion-MNIST (out)", 2),
    "detection_auroc": ("reconstruction consistency: one minus the share of stochastic reconstructions that "
                        "keep the input's label, clean vs PGD-attacked digits", 3),
    "purified_acc": ("accuracy of classifier(reconstruct(x)) under the adaptive attack (white-box and BPDA "
                     "PGD, worst per image) at one L-inf radius", 4),
    "spearman": ("rank correlation of reconstruction error with classifier confidence (negative = the VAE "
                 "agrees with the classifier's doubts)", 5),
    "margin": ("the smallest ||delta||_2 found that breaks r-robustness, median over inputs (higher is better)", 6),
    "certified": ("the Lipschitz certificate of r-robustness, median over inputs, where the model has one", 7),
}

#: Decimals of each column in tables (chapter 9's).
DIGITS = {"elbo": 1, "mse": 4, "ood_auroc": 3, "detection_auroc": 3, "purified_acc": 2, "spearman": 3,
          "margin": 2, "certified": 3}

#: Chapter 9's short headers (its stored tables use them).
SHORT = {"elbo": "ELBO (nats)", "mse": "pixel MSE", "ood_auroc": "OOD AUROC", "detection_auroc": "detection AUROC",
         "purified_acc": "purified acc.", "spearman": "Spearman(MSE, conf.)", "margin": "emp. margin",
         "certified": "cert. margin"}


# ---------------------------------------------------------------------------------------
# The book's reference rows
# ---------------------------------------------------------------------------------------
class _Tables(HTMLParser):
    """The cells of every ``<table>`` of an HTML string: a list of tables, each a list of rows."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


_NUM = r"(-?(?:\d+(?:\.\d*)?|∞))"
_CELL = re.compile(rf"^{_NUM}\s*(?:\[\s*{_NUM}\s*,\s*{_NUM}\s*\])?$")


def _parse_cell(text: str) -> tuple[float, float, float]:
    t = text.replace("\u00a0", " ").replace("★", "").replace("−", "-").strip()
    t = re.sub(r"\s+", " ", t)
    if t in ("", "–", "-", "nan", "NaN"):
        return (math.nan,) * 3
    m = _CELL.match(t)
    if not m:
        raise ValueError(f"cannot read {text!r}")
    num = lambda g: math.nan if g is None else (math.copysign(math.inf, -1 if g.startswith("-") else 1)  # noqa: E731
                                                 if "∞" in g else float(g))
    v, lo, hi = (num(g) for g in m.groups())
    return v, lo, hi


def _book_notebook() -> Path:
    return Path(__file__).resolve().parent.parent / "book" / "09_scorecard.ipynb"


def reference_rows(path: str | Path | None = None) -> tuple[pd.DataFrame | None, str]:
    """The book's rows, read from chapter 9's stored notebook (its scorecard tables).

    Parameters
    ----------
    path : the notebook (default ``book/09_scorecard.ipynb`` next to the package), or a CSV written
        by :func:`write_report` (columns ``<column>_value``, ``_lo``, ``_hi``, one row per model).

    Returns
    -------
    (table, note) : a :func:`robustvae.scorecard.table`-like DataFrame of the book's eight models
        (``None`` if none could be read) and a sentence on where the rows came from. The values are
        as chapter 9 prints them (rounded to its table's digits), on mnist-5k at the book's sizes.
        Only the notebook's scorecard tables are read: tables with at least two of the scorecard's
        column headers (:data:`SHORT`).
    """
    path = Path(path) if path is not None else _book_notebook()
    if not path.exists():
        return None, f"No reference rows: {path} is not here (the book's stored chapter 9 notebook)."
    try:
        if path.suffix == ".csv":
            flat = pd.read_csv(path, index_col=0)
            cols = [c for c in sc.COLUMNS if f"{c}_value" in flat.columns]
            rows = {n: {c: sc.Estimate(*(flat.loc[n, f"{c}_{k}"] for k in ("value", "lo", "hi"))) for c in cols}
                    for n in flat.index}
            return sc.table(rows, cols), f"Reference rows from {path.name}."
        nb = json.loads(path.read_text(encoding="utf-8"))
        by_short = {v: k for k, v in SHORT.items()}
        values: dict[str, dict[str, tuple[float, float, float]]] = {}
        for cell in nb.get("cells", []):
            for out in cell.get("outputs", []):
                text = out.get("data", {}).get("text/html")
                if not text:
                    continue
                parser = _Tables()
                parser.feed("".join(text) if isinstance(text, list) else text)
                for tab in parser.tables:
                    # a scorecard table has several of the columns; a table that shares one
                    # header (chapter 9's purification tests: "purified acc." without intervals)
                    # is another table and must not overwrite the scorecard's cells
                    if not tab or sum(h in by_short for h in tab[0]) < 2:
                        continue
                    header = tab[0]
                    for row in tab[1:]:
                        if len(row) != len(header) or row[0] in ("", "model"):
                            continue
                        for h, cell_text in zip(header[1:], row[1:]):
                            if h in by_short:
                                values.setdefault(row[0], {})[by_short[h]] = _parse_cell(cell_text)
    except (OSError, ValueError, KeyError) as err:
        return None, f"No reference rows: chapter 9's stored notebook could not be read ({err})."
    if not values:
        return None, "No reference rows: chapter 9's stored notebook holds no scorecard table (not executed?)."
    rows = {n: {c: sc.Estimate(*v) for c, v in cols.items()} for n, cols in values.items()}
    return (sc.table(rows), "Reference rows: the book's eight models as chapter 9 prints them "
            "(stored notebook book/09_scorecard.ipynb; mnist-5k, book sizes, values rounded to the "
            "table's digits).")


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------
def git_commit() -> str:
    """The commit of the repository holding this package (:func:`robustvae.utils.git_commit`), or ``"unknown"``."""
    from .utils import git_commit as commit

    return commit() or "unknown"


def _values(table: pd.DataFrame) -> pd.DataFrame:
    return table.xs("value", axis=1, level="stat")


def _heatmap_png(values: pd.DataFrame, highlight: str) -> str:
    """The user's row and the reference rows, each column rescaled 0 = worst, 1 = best, as a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .plotting import COLUMN_WIDTH
    from .tables import fmt_number

    if len(values) > 1:
        norm = sc.normalise_columns(values)
    else:   # one row: nothing to rank it against
        norm = pd.DataFrame(np.where(values.notna(), 0.5, np.nan), index=values.index, columns=values.columns)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 1.2 + 0.45 * len(values)), dpi=100)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    im = ax.imshow(np.ma.masked_invalid(norm.to_numpy(dtype=float)), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i, n in enumerate(values.index):
        for j, c in enumerate(values.columns):
            v = norm.iloc[i, j]
            ax.text(j, i, fmt_number(values.iloc[i, j], min(DIGITS[c], 3)), ha="center", va="center", fontsize=9,
                    color="black" if (not np.isnan(v) and v > 0.6) or np.isnan(v) else "white",
                    fontweight="bold" if n == highlight else "normal")
    ax.set_xticks(range(len(values.columns)), [SHORT[c] for c in values.columns], rotation=30, ha="right",
                  fontsize=9)
    ax.set_yticks(range(len(values)), values.index, fontsize=9)
    for lab in ax.get_yticklabels():
        if lab.get_text() == highlight:
            lab.set_fontweight("bold")
    ax.set_title("Scorecard, normalised per column (numbers: the raw estimates)", fontsize=11)
    fig.colorbar(im, ax=ax, label="0 = worst row, 1 = best", fraction=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:72rem;margin:2rem auto;
padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.sub{color:#555;margin-top:0}table{border-collapse:collapse;font-size:.8rem;margin:.6rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.l,th.l{text-align:left}tr.you td,tr.you th{background:#fff6d6;font-weight:600}
.note{background:#f7f7f7;border-left:3px solid #888;padding:.4rem .8rem;font-size:.9rem}
code{background:#f2f2f2;padding:0 .2rem}img{max-width:100%}.ci{color:#555;font-size:.8rem;white-space:nowrap}
.wide{overflow-x:auto}
"""


def _cell_text(table: pd.DataFrame, row: str, col: str) -> str:
    from .tables import interval

    v, lo, hi = (table.loc[row, (col, s)] for s in ("value", "lo", "hi"))
    return interval(v, lo, hi, precision=DIGITS[col], keep_together=True)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) else (("inf" if x > 0 else "-inf") if math.isinf(x) else x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_report(result: ScoreResult, out: str | Path, reference: pd.DataFrame | None = None,
                 reference_note: str | None = None, context: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Write the HTML report, a CSV and a JSON of the numbers.

    Parameters
    ----------
    result : what :func:`score_model` returned.
    out : the HTML file; the CSV and JSON get the same name with ``.csv`` and ``.json``.
    reference : the book's rows (default: :func:`reference_rows` when ``result.dataset`` is
        mnist-5k).
    reference_note : where the reference rows came from (default: :func:`reference_rows`'s note).
    context : extra lines for the report's header (for example the factory and the weights).

    Returns
    -------
    dict : ``{"html": ..., "csv": ..., "json": ...}`` paths.

    The HTML is self-contained: inline CSS, the figure as an embedded PNG, no external links, so
    it opens offline.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {"html": out, "csv": out.with_suffix(".csv"), "json": out.with_suffix(".json")}
    cols = list(result.table.columns.get_level_values("column").unique())
    if reference is None and reference_note is None:
        if result.dataset == "mnist-5k":
            reference, reference_note = reference_rows()
        else:
            reference_note = (f"No reference rows: the book's scorecard is for mnist-5k, this row for "
                              f"{result.dataset}.")
    if reference is not None:
        reference = reference.loc[[n for n in reference.index if n != result.name]]
        reference = reference.reindex(columns=result.table.columns)
    combined = result.table if reference is None else pd.concat([result.table, reference])
    commit = git_commit()
    from .score import SIZES

    comparable = result.sizes == SIZES["book"] and result.dataset == "mnist-5k"

    # the numbers
    flat = result.table.copy()
    flat.columns = [f"{c}_{s}" for c, s in flat.columns]
    flat.index.name = "model"
    flat.to_csv(paths["csv"])
    record = {
        "model": result.name, "dataset": result.dataset, "seed": result.seed, "commit": commit,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "sizes": dataclasses.asdict(result.sizes),
        "sizes_are_the_books": result.sizes == SIZES["book"],
        "columns": {c: {"value": e.value, "lo": e.lo, "hi": e.hi, "note": result.notes.get(c, "")}
                    for c, e in result.estimates.items()},
        "budgets": result.budgets, "filled_by_generic_helpers": result.filled, "meta": result.meta,
        "context": dict(context or {}),
    }
    paths["json"].write_text(json.dumps(_jsonable(record), indent=2) + "\n", encoding="utf-8")

    # the page
    e = html.escape
    png = _heatmap_png(_values(combined).astype(float), result.name)
    head = "".join(f"<th>{e(SHORT[c])}</th>" for c in cols)
    # a row scored at other sizes or on another dataset is not ranked against the book's rows
    ranked = combined if comparable or reference is None else reference
    best = sc.best_per_column(_values(ranked).astype(float)) if len(ranked) > 1 else pd.Series(dtype=object)
    body = []
    for n in combined.index:
        cls = ' class="you"' if n == result.name else ""
        cells = [_cell_text(combined, n, c) for c in cols]
        cells = [t.replace(" [", " ★ [", 1) if best.get(c) == n and " [" in t else t + (" ★" if best.get(c) == n else "")
                 for t, c in zip(cells, cols)]
        body.append(f"<tr{cls}><th class='l'>{e(str(n))}</th>"
                    + "".join(f"<td>{_two_lines(t)}</td>" for t in cells) + "</tr>")
    col_lines = []
    for c in cols:
        what, chapter = COLUMN_INFO[c]
        label, larger = sc.COLUMNS[c]
        note = result.notes.get(c, "")
        empty = np.isnan(result.estimates[c].value)
        col_lines.append(
            f"<tr><td class='l'><b>{e(SHORT[c])}</b></td><td class='l'>{e(what)}</td><td>{chapter}</td>"
            f"<td class='l'>{'higher' if larger else 'lower'}</td>"
            f"<td class='l'>{'<b>empty</b>: ' if empty else ''}{e(note)}</td></tr>")
    budget_rows = "".join(f"<tr><td class='l'>{e(SHORT[c])}</td><td class='l'>{e(b)}</td></tr>"
                          for c, b in result.budgets.items())
    size_rows = "".join(f"<tr><td class='l'><code>{e(k)}</code></td><td class='l'>{e(str(v))}</td></tr>"
                        for k, v in dataclasses.asdict(result.sizes).items())
    ctx = dict(context or {})
    ctx.update({"dataset": result.dataset, "sizes": "the book's (chapter 9's parameters)"
                if result.sizes == SIZES["book"] else ("smoke" if result.sizes == SIZES["smoke"] else "custom"),
                "seed": str(result.seed), "commit": commit, "device": str(result.meta.get("device", "")),
                "torch": str(result.meta.get("torch", "")),
                "scoring time": f"{sum(result.meta.get('seconds', {}).values()):.1f} s"})
    if "undefended_acc" in result.meta:
        ctx["undefended classifier under the purification attack"] = _cell_text_from(result.meta["undefended_acc"], 2)
    ctx_rows = "".join(f"<tr><td class='l'>{e(k)}</td><td class='l'>{e(str(v))}</td></tr>" for k, v in ctx.items())
    notes = [reference_note or ""]
    if not comparable:
        notes.append("This row was not scored on mnist-5k at the book's sizes, so it is not directly comparable "
                     "with the book's rows: read it as a check that the model runs, not as a result.")
    if result.filled:
        notes.append("Parts of the model filled in by generic helpers: "
                     + "; ".join(f"{k}: {v}" for k, v in result.filled.items()) + ".")
    notes.append("Intervals are 95% percentile-bootstrap intervals over the test inputs (for AUROCs the two sets "
                 "resampled separately); they do not cover the training seed. Attacks are heuristics: a robust "
                 "accuracy or an empirical margin is an upper bound that a stronger attack could lower.")
    unranked = "" if comparable or reference is None else ", among the book's rows only (your row was not scored at the book's sizes on mnist-5k)"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Robustness scorecard: {e(result.name)}</title>
<style>{_CSS}</style></head><body>
<h1>Robustness scorecard: {e(result.name)}</h1>
<p class="sub">Chapter 9 of <i>How VAEs help and fail at making ML robust</i>, run on your model by
<code>python -m robustvae score</code> (robustvae, commit {e(commit)}).</p>
{''.join(f'<p class="note">{e(n)}</p>' for n in notes if n)}
<h2>Your model beside the book's</h2>
<img alt="heat map of the scorecard, each column rescaled from worst (0) to best (1)"
 src="data:image/png;base64,{png}">
<h2>The scorecard, with 95% intervals</h2>
<p>Each cell: the estimate and its 95% bootstrap interval; ★ marks the best row of each column
(for the Spearman correlation, the most negative){unranked}; a dash: no value.</p>
<div class="wide"><table><tr><th class="l">model</th>{head}</tr>{''.join(body)}</table></div>
<h2>What each column measures</h2>
<table><tr><th class="l">column</th><th class="l">what it measures</th><th>chapter</th><th class="l">better</th>
<th class="l">note</th></tr>{''.join(col_lines)}</table>
<h2>Inputs and attack budgets</h2>
<table><tr><th class="l">column</th><th class="l">inputs and budget</th></tr>{budget_rows}</table>
<details><summary>All sizes</summary><table>{size_rows}</table></details>
<h2>Run</h2>
<table>{ctx_rows}</table>
<p>The numbers: <code>{e(paths['csv'].name)}</code> and <code>{e(paths['json'].name)}</code>, next to this file.</p>
</body></html>
"""
    paths["html"].write_text(page, encoding="utf-8")
    return paths


def _two_lines(text: str) -> str:
    """An interval cell as HTML: the estimate, and its interval on a second, smaller line."""
    point, sep, bounds = text.partition(" [")
    if not sep:
        return html.escape(text)
    return f"{html.escape(point)}<br><span class='ci'>[{html.escape(bounds)}</span>"


def _cell_text_from(v: Sequence[float], precision: int) -> str:
    from .tables import interval

    return interval(v[0], v[1], v[2], precision=precision)

"""The chapters read as prose, parameters, calls, figures and claims (issue 21): their bookkeeping
lives in the library (``robustvae.plots``, ``robustvae.reports``), so a chapter that grows back into
a script fails here."""

import ast
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.md"))
MAX_CODE_LINES = 200
_OPTION = re.compile(r"^:\w[\w-]*:")


def code_cells(md: Path) -> list[str]:
    """The source of every ```{code-cell}``` block of a MyST notebook, option lines (``:tags:``) dropped."""
    cells, cell = [], None
    for line in md.read_text().splitlines():
        if cell is None:
            if line.startswith("```{code-cell}"):
                cell = []
        elif line.startswith("```"):
            cells.append("\n".join(cell))
            cell = None
        elif not _OPTION.match(line.strip()):
            cell.append(line)
    return cells


def code_lines(md: Path) -> int:
    """Lines of code in a chapter's cells: not blank, not comments."""
    return sum(1 for c in code_cells(md) for line in c.splitlines()
               if line.strip() and not line.strip().startswith("#"))


def _only_records(source: str) -> bool:
    """True when every statement of a cell is a ``glue(...)`` or ``rv.record(...)`` call."""
    body = ast.parse(source).body
    names = {"glue", "record"}

    def is_record(node):
        if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
            return False
        f = node.value.func
        return (isinstance(f, ast.Name) and f.id in names) or (isinstance(f, ast.Attribute) and f.attr in names)

    return bool(body) and all(is_record(n) for n in body)


def test_the_counter_counts_code_not_comments_options_or_blanks(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("# title\n\n```{code-cell} ipython3\n:tags: [hide-input]\n\nx = 1  # one\n# a comment\n"
                  "y = 2\n```\n\ntext `x`\n\n```{code-cell} ipython3\nglue('x', x)\n```\n")
    assert code_cells(md) == ["\nx = 1  # one\n# a comment\ny = 2", "glue('x', x)"]
    assert code_lines(md) == 3
    assert [_only_records(c) for c in code_cells(md)] == [False, True]
    assert _only_records("rv.record(a=1)\nglue('b', 2, display=False)") and not _only_records("rv.record(a=f(1))\nz = 3")


@pytest.mark.parametrize("md", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_a_chapter_has_at_most_200_lines_of_code(md):
    n = code_lines(md)
    assert n <= MAX_CODE_LINES, (f"{md.name} has {n} lines of code in its cells (at most {MAX_CODE_LINES}): move "
                                 "tables into robustvae.reports and figures into robustvae.plots")


@pytest.mark.parametrize("md", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_no_cell_exists_only_to_record_values(md):
    only = [i for i, c in enumerate(code_cells(md)) if _only_records(c)]
    assert not only, f"{md.name}: code cells {only} only glue/record values; record them where they are computed"

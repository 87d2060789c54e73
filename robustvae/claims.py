"""A chapter's claims: checked on computed numbers, shown as a table, enforced in the book.

Every chapter ends by checking its claims on the numbers it computed. Each is of one of two
kinds, shown in the table and counted apart ("5 findings hold; 7 checks pass"):

- a *finding* (``kind="finding"``): an empirical statement about VAEs and robustness that
  could have come out the other way;
- a *check* (``kind="check"``): the construction or a theorem working (a model built to a
  Lipschitz bound meets it, IWAE is above the ELBO), or a sanity condition. It fails only on a
  bug (or Monte-Carlo noise), and says nothing about robustness on its own.

In the book (and under ``pytest --nbval``) a claim that does not hold stops the notebook, so the
tests fail when the science breaks. A rerun with other parameters (another dataset, smaller
sizes, another seed: ``python -m robustvae.runs``) is a different experiment: there a claim that
does not hold is a result, reported loudly in the output and in the run's results table (with
``findings_failed`` and ``checks_failed`` apart), not a crash::

    claims = Claims(dataset, strict=strict_claims)
    claims.check("consistency detects PGD inputs (AUROC interval above 0.5)", lo > 0.5,
                 f"interval from {lo:.3f}", kind="finding", tuned=True)
    claims.check("the IWAE bound is above the ELBO", iwae >= elbo, f"{iwae:.2f} vs {elbo:.2f}",
                 kind="check")
    claims.conclude()   # the table; raises ClaimsFailed (strict) or prints what fails

A failing check fails a strict run just as a failing finding does (it means a bug).

A claim whose threshold was set on the book's dataset (``tuned=True``) is only *claimed* on that
dataset; on another one it is still evaluated and shown ("not claimed on fashion-mnist"), but it
never fails the run.

Across seeds: ``benchmarks/seed_findings.py`` reruns the chapters with other training seeds and
commits, per claim, on how many seeds it held (:data:`SEEDS_TABLE`). A chapter that names itself
(``Claims(..., chapter="04_purification")``) shows that record as the table's last column in the
book's own run (``strict=True`` on the book's dataset), so a finding that did not survive
retraining says so next to its verdict; a claim the table does not hold shows "not rerun".
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["record", "BOOK_DATASET", "KINDS", "SEEDS_TABLE", "seed_record", "Claim", "Claims", "ClaimsFailed",
           "ClaimsReport"]

#: The dataset the book's run uses, on which the tuned thresholds were set.
BOOK_DATASET = "mnist-5k"

#: The kinds of claim: an empirical finding, or a check (the construction or a theorem working).
KINDS = ("finding", "check")

#: Every claim of chapters 1-9 on several training seeds (``benchmarks/seed_findings.py``).
SEEDS_TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "seeds_findings.csv"


def seed_record(chapter: str, path: Path | str | None = None) -> tuple[dict[str, str], str | None]:
    """``({claim text: "k of n seeds"}, commit)`` of ``chapter`` (e.g. ``"04_purification"``) from
    the committed seeds table (default :data:`SEEDS_TABLE`); ``({}, None)`` if there is none."""
    path = Path(path) if path is not None else SEEDS_TABLE
    if not path.exists():
        return {}, None
    with path.open(newline="") as f:
        first = f.readline()
        commit = first.split("commit ", 1)[1].split(";")[0].strip() if first.startswith("#") else None
        if not first.startswith("#"):
            f.seek(0)
        rows = [r for r in csv.DictReader(f) if r["chapter"] == chapter]
    return {r["claim"]: f"{r['held']} seeds" for r in rows}, commit


class ClaimsFailed(AssertionError):
    """Raised by :meth:`Claims.conclude` in strict mode when a claim does not hold."""


@dataclass(frozen=True)
class Claim:
    """One checked statement: its text, whether it holds, the numbers behind it, whether it is
    claimed, and its kind (``"finding"`` or ``"check"``)."""

    text: str
    holds: bool
    numbers: str = ""
    claimed: bool = True
    kind: str = "finding"

    @property
    def verdict(self) -> str:
        if self.claimed:
            return "holds" if self.holds else "FAILS"
        return "holds (not claimed here)" if self.holds else "fails (not claimed here)"


class ClaimsReport:
    """What :meth:`Claims.conclude` returns: the claims table (``.table``), displayed in full.

    A bare DataFrame would be shown with its claim texts cut at pandas' default column width; this
    renders every cell whole, as HTML in the book and as text in a terminal.
    """

    def __init__(self, table):
        self.table = table

    def _full(self, render):
        import pandas as pd

        with pd.option_context("display.max_colwidth", None, "display.width", 250):
            return render()

    def _repr_html_(self) -> str:
        return self._full(lambda: self.table.to_html())

    def __repr__(self) -> str:
        return self._full(lambda: self.table.to_string())


class Claims:
    """Collects a chapter's claims; :meth:`conclude` reports them.

    Parameters
    ----------
    dataset:
        The run's dataset. Claims checked with ``tuned=True`` are claimed only when it is
        ``tuned_on`` (the book's :data:`BOOK_DATASET`).
    strict:
        True (the book, the tests): :meth:`conclude` raises :class:`ClaimsFailed` naming every
        claim that fails. False (reruns): it prints them instead, and the notebook goes on.
    chapter:
        The chapter's notebook name: in the book's own run (``strict`` on ``tuned_on``), the table
        gets a column "held on seeds" from :func:`seed_record` (none if it holds no record).
    """

    def __init__(self, dataset: str, strict: bool = True, *, tuned_on: str = BOOK_DATASET,
                 chapter: str | None = None):
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be True or False, got {strict!r}.")
        self.dataset = str(dataset)
        self.strict = strict
        self.tuned_on = tuned_on
        self.claims: list[Claim] = []
        book_run = chapter is not None and strict and self.dataset == tuned_on
        self.seeds, self.seeds_commit = seed_record(chapter) if book_run else ({}, None)

    def held_on_seeds(self, number: int) -> str:
        """On how many training seeds claim ``number`` (1-based, as in the table) held, e.g.
        ``"1 of 3 seeds"``; ``"not rerun"`` when the seeds table holds no record of it."""
        return self.seeds.get(self.claims[number - 1].text, "not rerun")

    def check(self, text: str, holds, numbers: str = "", *, kind: str, tuned: bool = False) -> bool:
        """Record the claim ``text``; ``holds`` is its truth on the computed numbers (anything
        ``bool()`` accepts: a NumPy boolean, a comparison). ``numbers`` shows what it was
        judged on. ``kind`` (required): ``"finding"``, an empirical statement that could have
        come out the other way, or ``"check"``, the construction or a theorem working.
        ``tuned=True``: its threshold was set on the book's dataset, so it is claimed only
        there. Returns whether it holds."""
        if not text or not isinstance(text, str):
            raise ValueError("A claim needs its statement as a non-empty string.")
        if kind not in KINDS:
            raise ValueError(
                f"Claim {text!r}: kind must be 'finding' (an empirical statement that could have "
                f"come out the other way) or 'check' (the construction or a theorem working), "
                f"got {kind!r}."
            )
        try:
            ok = bool(holds)
        except (TypeError, ValueError) as e:  # e.g. an array with several values
            raise TypeError(f"Claim {text!r}: holds must be one truth value, got {holds!r}.") from e
        claimed = not tuned or self.dataset == self.tuned_on
        self.claims.append(Claim(text, ok, str(numbers), claimed, kind))
        return ok

    @property
    def failed(self) -> list[Claim]:
        """The claimed statements that do not hold."""
        return [c for c in self.claims if c.claimed and not c.holds]

    @property
    def n_claimed(self) -> int:
        return sum(c.claimed for c in self.claims)

    def counts(self, kind: str) -> tuple[int, int]:
        """``(claimed, failed)`` among the claims of ``kind`` (``"finding"`` or ``"check"``)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be 'finding' or 'check', got {kind!r}.")
        mine = [c for c in self.claims if c.claimed and c.kind == kind]
        return len(mine), sum(not c.holds for c in mine)

    def table(self):
        """A pandas DataFrame: one row per claim (kind, verdict, numbers), in the order checked."""
        import pandas as pd

        df = pd.DataFrame(
            {"claim": [c.text for c in self.claims], "kind": [c.kind for c in self.claims],
             "verdict": [c.verdict for c in self.claims],
             "numbers": [c.numbers for c in self.claims]},
            index=pd.RangeIndex(1, len(self.claims) + 1, name="#"),
        )
        if self.seeds:
            df["held on seeds"] = [self.held_on_seeds(i) for i in df.index]
        return df

    def summary(self) -> str:
        """One line: how many findings hold and how many checks pass, counted apart (and how
        many claims were shown but not claimed), e.g. ``"5 findings hold; 7 checks pass"`` or
        ``"1 of 5 findings DOES NOT HOLD; 7 checks pass"``."""
        def phrase(kind: str, holds: tuple[str, str], fails: tuple[str, str]) -> str:
            n, k = self.counts(kind)
            if not n:
                return f"no {kind}s"
            if not k:
                return f"{n} {kind} {holds[0]}" if n == 1 else f"{n} {kind}s {holds[1]}"
            return f"{k} of {n} {kind}s " + (fails[0] if k == 1 else fails[1])

        findings = phrase("finding", ("holds", "hold"), ("DOES NOT HOLD", "DO NOT HOLD"))
        checks = phrase("check", ("passes", "pass"), ("FAILS", "FAIL"))
        shown = len(self.claims) - self.n_claimed
        extra = f"; {shown} more shown, not claimed on {self.dataset}" if shown else ""
        return f"{findings}; {checks}{extra}"

    def conclude(self, glue: bool = True) -> ClaimsReport:
        """Report every claim and return their table, as a :class:`ClaimsReport` (for display).

        Records ``claims_checked``, ``claims_failed`` and ``claims_failing`` (the failing claims'
        numbers in the table, e.g. ``"#2 #5"``, or ``"none"``), and by kind ``findings_checked``,
        ``findings_failed``, ``checks_checked`` and ``checks_failed``, with ``myst_nb.glue``
        (``glue=True``), so rerun and sweep tables carry them; and ``claims_detail``, one tuple
        ``(number, kind, claimed, holds, text)`` per claim (not a column of those tables). Strict: raises
        :class:`ClaimsFailed` listing every claim that fails, finding or check. Not strict:
        prints them, loudly, and returns the table.
        """
        if not self.claims:
            raise ValueError("No claim was checked.")
        if glue:
            from myst_nb import glue as _glue

            _glue("claims_checked", self.n_claimed, display=False)
            _glue("claims_failed", len(self.failed), display=False)
            # their numbers in the table, e.g. "#2 #5" (a string, so that result tables keep it)
            failing = [f"#{i}" for i, c in enumerate(self.claims, 1) if c.claimed and not c.holds]
            _glue("claims_failing", " ".join(failing) or "none", display=False)
            for kind in KINDS:
                n, k = self.counts(kind)
                _glue(f"{kind}s_checked", n, display=False)
                _glue(f"{kind}s_failed", k, display=False)
            # every claim, for comparing runs claim by claim (across seeds: benchmarks/seed_findings.py)
            _glue("claims_detail", [(i, c.kind, c.claimed, c.holds, c.text) for i, c in enumerate(self.claims, 1)],
                  display=False)
        failed = self.failed
        lines = [(f"  - {c.text}: {c.numbers}" if c.numbers else f"  - {c.text}") + f" ({c.kind})"
                 for c in failed]
        if failed and self.strict:
            raise ClaimsFailed(self.summary() + ":\n" + "\n".join(lines))
        if failed:
            print("!" * 78)
            print(self.summary() + " (strict_claims=False: reported, not raised).")
            print("The chapter's text describes the book's run; for this run it is wrong on:")
            print("\n".join(lines))
            print("!" * 78)
        else:
            print(self.summary())
        return ClaimsReport(self.table())


def record(values: dict[str, Any] | None = None, /, **named: Any) -> None:
    """Glue every value under its name for the chapter's prose (``{glue:text}`name```), without
    displaying it: ``record(acc=acc, n=n)`` or ``record({"acc": acc})``, in the given order.

    One call instead of a ``myst_nb.glue(name, value, display=False)`` per number; the values are
    stored exactly as ``glue`` stores them. A name given twice is an error.
    """
    from myst_nb import glue

    items = list((values or {}).items())
    clash = sorted(set(dict(items)) & set(named))
    if clash:
        raise ValueError(f"record() got these names twice: {clash}.")
    for name, value in items + list(named.items()):
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"A glued name must be an identifier, got {name!r}.")
        glue(name, value, display=False)

"""A chapter's claims: checked on computed numbers, shown as a table, enforced in the book.

Every chapter ends by checking its findings on the numbers it computed. In the book (and under
``pytest --nbval``) a claim that does not hold stops the notebook, so the tests fail when the
science breaks. A rerun with other parameters (another dataset, smaller sizes, another seed:
``python -m robustvae.runs``) is a different experiment: there a claim that does not hold is a
result, reported loudly in the output and in the run's results table, not a crash::

    claims = Claims(dataset, strict=strict_claims)
    claims.check("PGD at eps 0.3 leaves accuracy below 0.05", pgd_acc < 0.05, f"accuracy {pgd_acc:.3f}",
                 tuned=True)
    claims.conclude()   # the table; raises ClaimsFailed (strict) or prints what fails

A claim whose threshold was set on the book's dataset (``tuned=True``) is only *claimed* on that
dataset; on another one it is still evaluated and shown ("not claimed on fashion-mnist"), but it
never fails the run.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BOOK_DATASET", "Claim", "Claims", "ClaimsFailed", "ClaimsReport"]

#: The dataset the book's run uses, on which the tuned thresholds were set.
BOOK_DATASET = "mnist-5k"


class ClaimsFailed(AssertionError):
    """Raised by :meth:`Claims.conclude` in strict mode when a claim does not hold."""


@dataclass(frozen=True)
class Claim:
    """One checked statement: its text, whether it holds, the numbers behind it, whether it is claimed."""

    text: str
    holds: bool
    numbers: str = ""
    claimed: bool = True

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
    """

    def __init__(self, dataset: str, strict: bool = True, *, tuned_on: str = BOOK_DATASET):
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be True or False, got {strict!r}.")
        self.dataset = str(dataset)
        self.strict = strict
        self.tuned_on = tuned_on
        self.claims: list[Claim] = []

    def check(self, text: str, holds, numbers: str = "", *, tuned: bool = False) -> bool:
        """Record the claim ``text``; ``holds`` is its truth on the computed numbers (anything
        ``bool()`` accepts: a NumPy boolean, a comparison). ``numbers`` shows what it was
        judged on. ``tuned=True``: its threshold was set on the book's dataset, so it is claimed
        only there. Returns whether it holds."""
        if not text or not isinstance(text, str):
            raise ValueError("A claim needs its statement as a non-empty string.")
        try:
            ok = bool(holds)
        except (TypeError, ValueError) as e:  # e.g. an array with several values
            raise TypeError(f"Claim {text!r}: holds must be one truth value, got {holds!r}.") from e
        claimed = not tuned or self.dataset == self.tuned_on
        self.claims.append(Claim(text, ok, str(numbers), claimed))
        return ok

    @property
    def failed(self) -> list[Claim]:
        """The claimed statements that do not hold."""
        return [c for c in self.claims if c.claimed and not c.holds]

    @property
    def n_claimed(self) -> int:
        return sum(c.claimed for c in self.claims)

    def table(self):
        """A pandas DataFrame: one row per claim (verdict, numbers), in the order checked."""
        import pandas as pd

        df = pd.DataFrame(
            {"claim": [c.text for c in self.claims], "verdict": [c.verdict for c in self.claims],
             "numbers": [c.numbers for c in self.claims]},
            index=pd.RangeIndex(1, len(self.claims) + 1, name="#"),
        )
        return df

    def summary(self) -> str:
        """One line: how many claims hold (and how many were shown but not claimed)."""
        n, k = self.n_claimed, len(self.failed)
        shown = len(self.claims) - n
        extra = f"; {shown} more shown, not claimed on {self.dataset}" if shown else ""
        if not k:
            return f"all {n} claims hold{extra}"
        return f"{k} of {n} claims DO NOT HOLD on this run{extra}"

    def conclude(self, glue: bool = True) -> ClaimsReport:
        """Report every claim and return their table, as a :class:`ClaimsReport` (for display).

        Records ``claims_checked``, ``claims_failed`` and ``claims_failing`` (the failing claims'
        numbers in the table, e.g. ``"#2 #5"``, or ``"none"``) with ``myst_nb.glue``
        (``glue=True``), so rerun and sweep tables carry them. Strict: raises :class:`ClaimsFailed` listing every
        claim that fails. Not strict: prints them, loudly, and returns the table.
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
        failed = self.failed
        lines = [f"  - {c.text}: {c.numbers}" if c.numbers else f"  - {c.text}" for c in failed]
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

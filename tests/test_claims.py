"""Claims (robustvae.claims): enforced in the book, reported in reruns, tuned thresholds scoped."""

import numpy as np
import pytest

from robustvae.claims import Claims, ClaimsFailed


def _claims(dataset="mnist-5k", strict=True):
    c = Claims(dataset, strict=strict)
    c.check("one is less than two", 1 < 2, "1 vs 2")
    c.check("accuracy at least 0.95", np.float64(0.90) >= 0.95, "accuracy 0.900", tuned=True)
    c.check("the bound is tight", np.bool_(False), "gap 3.2")
    return c


def test_all_holding_claims_print_one_line_and_return_the_table(capsys):
    c = Claims("mnist-5k")
    c.check("a", True, "x")
    c.check("b", np.bool_(True))
    report = c.conclude(glue=False)
    table = report.table
    assert capsys.readouterr().out.strip() == "all 2 claims hold"
    assert list(table["verdict"]) == ["holds", "holds"] and list(table.index) == [1, 2]
    assert list(table.columns) == ["claim", "verdict", "numbers"]


def test_strict_raises_naming_every_failing_claim_with_its_numbers():
    c = _claims()
    with pytest.raises(ClaimsFailed) as e:
        c.conclude(glue=False)
    msg = str(e.value)
    assert msg.startswith("2 of 3 claims DO NOT HOLD")
    assert "accuracy at least 0.95: accuracy 0.900" in msg and "the bound is tight: gap 3.2" in msg
    assert "one is less than two" not in msg
    assert isinstance(e.value, AssertionError)  # nbval and plain asserts treat it alike


def test_not_strict_reports_failures_loudly_and_goes_on(capsys):
    table = _claims(strict=False).conclude(glue=False).table
    out = capsys.readouterr().out
    assert "2 of 3 claims DO NOT HOLD on this run" in out and "strict_claims=False" in out
    assert "  - the bound is tight: gap 3.2" in out
    assert list(table["verdict"]) == ["holds", "FAILS", "FAILS"]


def test_tuned_claims_are_shown_but_not_claimed_on_another_dataset(capsys):
    c = _claims(dataset="fashion-mnist")
    assert [x.text for x in c.failed] == ["the bound is tight"]  # the tuned one does not count
    with pytest.raises(ClaimsFailed, match="1 of 2 claims DO NOT HOLD on this run; 1 more shown, not claimed on fashion-mnist"):
        c.conclude(glue=False)
    assert list(c.table()["verdict"]) == ["holds", "fails (not claimed here)", "FAILS"]
    ok = Claims("fashion-mnist")
    ok.check("tuned and holding", True, tuned=True)
    ok.check("general", True)
    ok.conclude(glue=False)
    assert "all 1 claims hold; 1 more shown, not claimed on fashion-mnist" in capsys.readouterr().out


def test_bad_use_is_refused():
    with pytest.raises(TypeError, match="strict must be True or False"):
        Claims("mnist-5k", strict="yes")
    c = Claims("mnist-5k")
    with pytest.raises(ValueError, match="No claim was checked"):
        c.conclude(glue=False)
    with pytest.raises(ValueError, match="non-empty string"):
        c.check("", True)
    with pytest.raises(TypeError, match="one truth value"):
        c.check("an array is not a verdict", np.array([True, False]))


def test_the_report_shows_long_claims_whole():
    c = Claims("mnist-5k")
    text = "a claim whose statement is far longer than the fifty characters pandas keeps by default"
    c.check(text, True, "numbers " * 12)
    report = c.conclude(glue=False)
    assert text in report._repr_html_() and text in repr(report)
    assert ("numbers " * 12).strip() in repr(report)

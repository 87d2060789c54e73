"""Claims (robustvae.claims): enforced in the book, reported in reruns, tuned thresholds scoped,
findings and checks labelled and counted apart."""

import numpy as np
import pytest

from robustvae.claims import Claims, ClaimsFailed


def _claims(dataset="mnist-5k", strict=True):
    c = Claims(dataset, strict=strict)
    c.check("one is less than two", 1 < 2, "1 vs 2", kind="check")
    c.check("accuracy at least 0.95", np.float64(0.90) >= 0.95, "accuracy 0.900", kind="finding",
            tuned=True)
    c.check("the bound is tight", np.bool_(False), "gap 3.2", kind="finding")
    return c


def test_all_holding_claims_print_one_line_and_return_the_table(capsys):
    c = Claims("mnist-5k")
    c.check("a", True, "x", kind="finding")
    c.check("b", np.bool_(True), kind="finding")
    report = c.conclude(glue=False)
    table = report.table
    assert capsys.readouterr().out.strip() == "2 findings hold; no checks"
    assert list(table["verdict"]) == ["holds", "holds"] and list(table.index) == [1, 2]
    assert list(table.columns) == ["claim", "kind", "verdict", "numbers"]


def test_kinds_are_shown_and_counted_apart(capsys):
    c = Claims("mnist-5k")
    for i in range(5):
        c.check(f"finding {i}", True, kind="finding")
    for i in range(7):
        c.check(f"check {i}", True, kind="check")
    table = c.conclude(glue=False).table
    assert capsys.readouterr().out.strip() == "5 findings hold; 7 checks pass"
    assert list(table["kind"]) == ["finding"] * 5 + ["check"] * 7
    assert c.counts("finding") == (5, 0) and c.counts("check") == (7, 0)
    assert [x.kind for x in c.claims][:1] == ["finding"]
    one = Claims("mnist-5k")
    one.check("f", True, kind="finding")
    one.check("c", True, kind="check")
    assert one.summary() == "1 finding holds; 1 check passes"
    only_checks = Claims("mnist-5k")
    only_checks.check("c", True, kind="check")
    assert only_checks.summary() == "no findings; 1 check passes"


def test_failures_are_counted_in_their_kind():
    c = Claims("mnist-5k", strict=False)
    c.check("f0", False, kind="finding")
    for i in range(4):
        c.check(f"f{i + 1}", True, kind="finding")
    for i in range(7):
        c.check(f"c{i}", True, kind="check")
    assert c.summary() == "1 of 5 findings DOES NOT HOLD; 7 checks pass"
    c.check("c7", False, kind="check")
    c.check("c8", False, kind="check")
    assert c.summary() == "1 of 5 findings DOES NOT HOLD; 2 of 9 checks FAIL"
    assert c.counts("finding") == (5, 1) and c.counts("check") == (9, 2)


def test_a_failing_check_fails_the_strict_run_like_a_failing_finding(capsys):
    c = Claims("mnist-5k")
    c.check("the finding", True, "effect 0.3", kind="finding")
    c.check("the construction meets its bound", False, "margin 0.9 < 1.0", kind="check")
    with pytest.raises(ClaimsFailed) as e:
        c.conclude(glue=False)
    msg = str(e.value)
    assert msg.startswith("1 finding holds; 1 of 1 checks FAILS")
    assert "  - the construction meets its bound: margin 0.9 < 1.0 (check)" in msg
    assert "the finding" not in msg
    lenient = Claims("mnist-5k", strict=False)
    lenient.check("the construction meets its bound", False, kind="check")
    lenient.conclude(glue=False)
    out = capsys.readouterr().out
    assert "no findings; 1 of 1 checks FAILS (strict_claims=False" in out


def test_strict_raises_naming_every_failing_claim_with_its_numbers():
    c = _claims()
    with pytest.raises(ClaimsFailed) as e:
        c.conclude(glue=False)
    msg = str(e.value)
    assert msg.startswith("2 of 2 findings DO NOT HOLD; 1 check passes")
    assert "accuracy at least 0.95: accuracy 0.900" in msg and "the bound is tight: gap 3.2" in msg
    assert "one is less than two" not in msg
    assert isinstance(e.value, AssertionError)  # nbval and plain asserts treat it alike


def test_not_strict_reports_failures_loudly_and_goes_on(capsys):
    table = _claims(strict=False).conclude(glue=False).table
    out = capsys.readouterr().out
    assert "2 of 2 findings DO NOT HOLD; 1 check passes" in out and "strict_claims=False" in out
    assert "  - the bound is tight: gap 3.2 (finding)" in out
    assert list(table["verdict"]) == ["holds", "FAILS", "FAILS"]
    assert list(table["kind"]) == ["check", "finding", "finding"]


def test_tuned_claims_are_shown_but_not_claimed_on_another_dataset(capsys):
    c = _claims(dataset="fashion-mnist")
    assert [x.text for x in c.failed] == ["the bound is tight"]  # the tuned one does not count
    with pytest.raises(ClaimsFailed, match="1 of 1 findings DOES NOT HOLD; 1 check passes; "
                                           "1 more shown, not claimed on fashion-mnist"):
        c.conclude(glue=False)
    assert list(c.table()["verdict"]) == ["holds", "fails (not claimed here)", "FAILS"]
    ok = Claims("fashion-mnist")
    ok.check("tuned and holding", True, kind="finding", tuned=True)
    ok.check("general", True, kind="finding")
    ok.conclude(glue=False)
    assert ("1 finding holds; no checks; 1 more shown, not claimed on fashion-mnist"
            in capsys.readouterr().out)


def test_conclude_glues_the_counts_by_kind_and_the_old_names(monkeypatch, capsys):
    import myst_nb

    glued = {}
    monkeypatch.setattr(myst_nb, "glue",
                        lambda name, value, display=True: glued.update({name: value}))
    c = _claims(dataset="fashion-mnist", strict=False)  # the tuned finding is not claimed here
    c.check("another check", False, kind="check")
    c.conclude()
    detail = glued.pop("claims_detail")
    assert glued == {"claims_checked": 3, "claims_failed": 2, "claims_failing": "#3 #4",
                     "findings_checked": 1, "findings_failed": 1,
                     "checks_checked": 2, "checks_failed": 1}
    assert all(isinstance(v, int) for k, v in glued.items() if k != "claims_failing")
    assert [d[:4] for d in detail] == [(i + 1, cl.kind, cl.claimed, cl.holds) for i, cl in enumerate(c.claims)]
    assert [d[4] for d in detail] == [cl.text for cl in c.claims] and detail[2][3] is False
    glued.clear()
    ok = Claims("mnist-5k")
    ok.check("c", True, kind="check")
    ok.conclude()
    assert glued["claims_failing"] == "none" and glued["findings_checked"] == 0
    assert glued["checks_checked"] == 1 and glued["checks_failed"] == 0


def test_bad_use_is_refused():
    with pytest.raises(TypeError, match="strict must be True or False"):
        Claims("mnist-5k", strict="yes")
    c = Claims("mnist-5k")
    with pytest.raises(ValueError, match="No claim was checked"):
        c.conclude(glue=False)
    with pytest.raises(ValueError, match="non-empty string"):
        c.check("", True, kind="finding")
    with pytest.raises(TypeError, match="one truth value"):
        c.check("an array is not a verdict", np.array([True, False]), kind="finding")
    for bad in ("Finding", "sanity", "", None, 1):
        with pytest.raises(ValueError, match="'finding'.*'check'"):
            c.check("a claim of no kind", True, kind=bad)
    with pytest.raises(TypeError, match="kind"):
        c.check("a claim with its kind forgotten", True)
    assert c.claims == []  # nothing refused was recorded


def test_the_report_shows_long_claims_whole():
    c = Claims("mnist-5k")
    text = "a claim whose statement is far longer than the fifty characters pandas keeps by default"
    c.check(text, True, "numbers " * 12, kind="finding")
    report = c.conclude(glue=False)
    assert text in report._repr_html_() and text in repr(report)
    assert ("numbers " * 12).strip() in repr(report)


def test_the_book_run_shows_on_how_many_seeds_each_claim_held(tmp_path, monkeypatch):
    from robustvae import claims as claims_mod

    table = tmp_path / "seeds.csv"
    table.write_text("# commit abc1234; seed 0 is the book's own run\n"
                     "chapter,number,kind,claim,seed_0,seed_1,seed_2,held\n"
                     "04_x,1,finding,a beats b,holds,fails,holds,2 of 3\n"
                     "04_x,2,check,c works,holds,holds,holds,3 of 3\n"
                     "05_y,1,finding,a beats b,holds,holds,holds,3 of 3\n")
    monkeypatch.setattr(claims_mod, "SEEDS_TABLE", table)
    c = Claims("mnist-5k", chapter="04_x")
    c.check("a beats b", True, kind="finding")
    c.check("c works", True, kind="check")
    c.check("new claim", True, kind="finding")
    assert c.seeds_commit == "abc1234"
    assert list(c.table()["held on seeds"]) == ["2 of 3 seeds", "3 of 3 seeds", "not rerun"]
    assert c.held_on_seeds(1) == "2 of 3 seeds"
    # only the book's own run: not a rerun (strict=False), another dataset, or an unnamed chapter
    for other in (Claims("mnist-5k", strict=False, chapter="04_x"), Claims("fashion-mnist", chapter="04_x"),
                  Claims("mnist-5k")):
        other.check("a beats b", True, kind="finding")
        assert "held on seeds" not in other.table().columns
    assert claims_mod.seed_record("04_x", tmp_path / "absent.csv") == ({}, None)


def test_record_glues_every_value_in_order_without_display(monkeypatch):
    import myst_nb

    import robustvae as rv

    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: calls.append((name, value, display)))
    rv.record({"a": 1}, b=2.5, c="x")
    assert calls == [("a", 1, False), ("b", 2.5, False), ("c", "x", False)]
    with pytest.raises(ValueError, match="twice"):
        rv.record({"a": 1}, a=2)
    with pytest.raises(ValueError, match="identifier"):
        rv.record({"not a name": 1})

"""benchmarks/longer_set.py reads chapter 8's `longer-set` rerun beside the book's chapter 8, and
benchmarks/make_appendix.py shows it: tested on a fake run directory (no notebook executes)."""

import json

import pandas as pd
import pytest

from tests.scripts import load_script

CLAIMS = [(1, "check", True, True, "the approximation error falls"),
          (2, "finding", True, True, "learned-set training is worse on true perturbations")]
BOOK = {"claims_detail": CLAIMS, "err_rts_max": 6.0164, "shift_rts": 9.0647, "ratio_rts": 0.6637,
        "verdict_rtrue": "significantly worse than standard training"}
RERUN = {"claims_detail": [CLAIMS[0], (2, "finding", True, False, CLAIMS[1][4])], "err_rts_max": 3.5,
         "shift_rts": 9.0647, "ratio_rts": 0.3861, "verdict_rtrue": "not significantly different"}


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    mod = load_script("benchmarks/longer_set.py")
    more = load_script("benchmarks/more_inputs.py")
    from robustvae.utils import git_commit

    run = tmp_path / "runs" / "longer-set"
    run.mkdir(parents=True)
    (run / "08_perturbation_sets.ipynb").write_text("{}")
    (run / "rerun.json").write_text(json.dumps({"commit": git_commit(), "jobs": [
        {"chapter": "08_perturbation_sets", "status": "ok", "error": None, "wall_s": 901.2,
         "parameters": {"cvae_epochs": 40, "strict_claims": False}}]}))
    glued = {tmp_path / "book" / "08_perturbation_sets.ipynb": BOOK, run / "08_perturbation_sets.ipynb": RERUN}
    monkeypatch.setattr(more, "_glued", lambda nb: glued.get(nb, {}))
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    import sys
    monkeypatch.setitem(sys.modules, "more_inputs", more)
    return mod


def test_the_rerun_is_set_beside_the_book_claim_by_claim_and_number_by_number(fake_run, tmp_path):
    out = tmp_path / "longer_set.csv"
    assert fake_run.main(["--out", str(out)]) == 0
    first = out.read_text().splitlines()[0]
    assert "chapter wall 901 s" in first and "--profile longer-set (cvae_epochs=40)" in first
    table = pd.read_csv(out, comment="#").set_index("row")
    assert table.loc["claim 2 (finding)", "book"] == "holds" and table.loc["claim 2 (finding)", "longer set"] == "fails"
    assert float(table.loc["ratio_rts", "book"]) == 0.6637 and float(table.loc["ratio_rts", "longer set"]) == 0.3861
    assert table.loc["verdict_rtrue", "longer set"] == "not significantly different"
    app = load_script("benchmarks/make_appendix.py")
    app.RESULTS = tmp_path
    text = "\n".join(app._longer_set_section())
    assert "| claim 2 (finding) | learned-set training is worse on true perturbations | holds | fails |" in text
    assert "| their ratio (the paper's first property wants it small) | 0.664 | 0.386 |" in text
    assert "longer (cvae_epochs=40)" in text and "chapter wall 901 s" in text
    assert "--name longer-set --profile longer-set" in text

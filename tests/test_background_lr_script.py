"""benchmarks/background_lr.py reads chapter 2's `background` rerun into results/background_lr.csv, and
benchmarks/make_appendix.py shows it: tested on a fake run directory (no notebook executes)."""

import json

import pandas as pd
import pytest

from tests.scripts import load_script

BOOK_CLAIMS = [(1, "finding", True, True, "the likelihood failure reproduces"),
               (2, "finding", True, True, "input complexity separates them")]
PROFILE_CLAIMS = [(3, "finding", True, True, "the ratio fixes the failure"),
                  (4, "finding", True, False, "the ratio stays below the published 0.99")]
GLUED = {"bg_rate": 0.2, "bg_auroc": 0.9123, "bg_lo": 0.9, "bg_hi": 0.925, "bg_raw_auroc": 0.31,
         "bg_raw_lo": 0.29, "bg_raw_hi": 0.33, "bg_alone_auroc": 0.2, "like2_auroc": 0.31,
         "claims_detail": BOOK_CLAIMS + PROFILE_CLAIMS}


def _notebook(trained: bool = True) -> dict:
    """An executed chapter 2 as papermill writes it: the likelihood-ratio cell with its log and duration."""
    log = "robustvae.cache: training background-vae (no usable checkpoint at x.pt)\n"
    if trained:
        log += "robustvae.cache: trained background-vae in 301.5 s (background-vae-0123.pt)\n"
    return {"cells": [
        {"cell_type": "code", "source": "vae2, h = rv.get_vae(vae2_config)", "metadata": {"papermill": {"duration": 5.0}},
         "outputs": [{"name": "stderr", "output_type": "stream", "text": "robustvae.cache: trained vae in 99.0 s (v.pt)\n"}]},
        {"cell_type": "code", "source": ["if background_rate > 0:\n", "    background, _ = ood.get_background_vae(\n"],
         "metadata": {"papermill": {"duration": 330.25}},
         "outputs": [{"name": "stderr", "output_type": "stream", "text": [log]}]},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    """A repository root under tmp_path with the book's chapter 2 and a finished `background` rerun of it."""
    mod = load_script("benchmarks/background_lr.py")
    from robustvae.utils import git_commit

    run = tmp_path / "runs" / "background"
    run.mkdir(parents=True)
    (run / "02_ood.ipynb").write_text(json.dumps(_notebook()))
    (run / "rerun.json").write_text(json.dumps({"commit": git_commit(), "jobs": [
        {"chapter": "02_ood", "status": "ok", "error": None, "wall_s": 640.4,
         "parameters": {"background_rate": 0.2, "strict_claims": False}}]}))
    glued = {tmp_path / "book" / "02_ood.ipynb": {"claims_detail": BOOK_CLAIMS}, run / "02_ood.ipynb": GLUED}
    monkeypatch.setattr(mod, "_glued", lambda nb: glued.get(nb, {}))
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    return mod, run, glued


def test_the_table_holds_the_ratio_the_raw_likelihood_the_papers_and_the_profiles_claims_only(fake_run, tmp_path):
    mod, run, _ = fake_run
    out = tmp_path / "background_lr.csv"
    assert mod.main(["--out", str(out)]) == 0
    first = out.read_text().splitlines()[0]
    assert first.startswith("# commit ") and "rerun on commit" in first and "chapter wall 640 s" in first
    table = pd.read_csv(out, comment="#").set_index("row")
    number = lambda row: [float(table.loc[row, c]) for c in ("value", "lo", "hi")]  # noqa: E731
    assert number("bg_auroc") == [0.9123, 0.9, 0.925]
    assert table.loc["bg_auroc", "published"] == "0.99 (Ren et al. 2019)"
    assert number("bg_raw_auroc") == [0.31, 0.29, 0.33]
    assert table.loc["bg_raw_auroc", "published"].startswith("0.09")
    assert float(table.loc["bg_rate", "value"]) == 0.2 and float(table.loc["bg_alone_auroc", "value"]) == 0.2
    claims = table[table.index.str.startswith("claim")]
    assert list(claims.index) == ["claim 3 (finding)", "claim 4 (finding)"], "the book's own claims are left out"
    assert claims["value"].tolist() == ["holds", "fails"]
    assert float(table.loc["train_s", "value"]) == 301.5 and float(table.loc["cell_s", "value"]) == 330.25
    # the appendix shows the table, the claims and the cost, with the commands that make them
    app = load_script("benchmarks/make_appendix.py")
    app.RESULTS = tmp_path
    text = "\n".join(app._background_section())
    assert "| likelihood ratio against the background model (mutation rate 0.2) | 0.912 [0.900, 0.925] | " \
           "0.99 (Ren et al. 2019) |" in text
    assert "| -log p(x), the chapter's VAE (the raw likelihood) | 0.310 [0.290, 0.330] | 0.09" in text
    assert "| claim 4 (finding) | the ratio stays below the published 0.99 | fails |" in text
    assert "The ratio's 95% interval lies above 0.5: the ratio fixes the likelihood failure" in text
    assert "--name background --profile background" in text and "benchmarks/background_lr.py" in text
    head = first.split("commit ", 1)[1].split(";")[0]
    assert f"commit `{head}`; the rerun ran on `{head}`)" in text
    assert "training the background VAE took 302 s" in text and "cell (training and scoring) 330 s" in text


def test_a_loaded_background_vae_has_no_training_time(tmp_path):
    mod = load_script("benchmarks/background_lr.py")
    nb = tmp_path / "02_ood.ipynb"
    nb.write_text(json.dumps(_notebook(trained=False)))
    assert mod._costs(nb) == (None, 330.25)
    assert mod._costs(tmp_path / "missing.ipynb") == (None, None)


def test_a_rerun_on_other_code_a_failed_chapter_or_no_ratio_is_refused(fake_run, tmp_path):
    mod, run, glued = fake_run
    manifest = json.loads((run / "rerun.json").read_text())
    (run / "rerun.json").write_text(json.dumps({**manifest, "commit": manifest["commit"] + "+dirty"}))
    with pytest.raises(SystemExit, match="rerun it"):
        mod.main(["--out", str(tmp_path / "x.csv")])
    failed = {**manifest, "jobs": [{**manifest["jobs"][0], "status": "failed", "error": "KeyError: x"}]}
    (run / "rerun.json").write_text(json.dumps(failed))
    with pytest.raises(SystemExit, match="did not run to its end"):
        mod.main(["--out", str(tmp_path / "x.csv")])
    (run / "rerun.json").write_text(json.dumps(manifest))
    glued[run / "02_ood.ipynb"] = {k: v for k, v in GLUED.items() if not k.startswith("bg_")}  # a default run
    with pytest.raises(SystemExit, match="--profile background"):
        mod.main(["--out", str(tmp_path / "x.csv")])
    (run / "rerun.json").unlink()
    with pytest.raises(SystemExit, match="has no rerun.json"):
        mod.main(["--out", str(tmp_path / "x.csv")])
    assert not (tmp_path / "x.csv").exists()


def test_no_csv_no_appendix_section(tmp_path):
    app = load_script("benchmarks/make_appendix.py")
    app.RESULTS = tmp_path
    assert app._background_section() == []


@pytest.mark.parametrize("lo, hi, says", [(0.2, 0.3, "below 0.5: the ratio does not fix"),
                                          (0.45, 0.55, "around 0.5: the ratio does not settle"),
                                          (0.6, 0.7, "above 0.5: the ratio fixes")])
def test_the_appendix_says_which_side_of_chance_the_interval_lies(tmp_path, lo, hi, says):
    app = load_script("benchmarks/make_appendix.py")
    app.RESULTS = tmp_path
    (tmp_path / "background_lr.csv").write_text(
        "# commit abc; rerun on commit abc, chapter wall 1 s; --profile background\n"
        "row,what,value,lo,hi,published\nbg_rate,rate,0.2,,,\n"
        f"bg_auroc,ratio,{(lo + hi) / 2},{lo},{hi},0.99 (Ren et al. 2019)\nbg_raw_auroc,raw,0.3,0.28,0.32,0.09\n"
        "bg_alone_auroc,alone,0.4,,,\nclaim 10 (finding),a claim,holds,,,\ntrain_s,t,,,,\ncell_s,c,20.5,,,\n")
    text = "\n".join(app._background_section())
    assert f"The ratio's 95% interval lies {says} the likelihood failure" in text
    assert "training the background VAE took" not in text and "scoring) 20 s" in text

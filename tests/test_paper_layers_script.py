"""benchmarks/paper_layers.py reads chapter 7's `paper-layers` rerun into results/paper_layers.csv, and
benchmarks/make_appendix.py shows it: tested on a fake run directory (no notebook executes)."""

import json

import pandas as pd
import pytest

from tests.scripts import load_script

BOOK_CLAIMS = [(1, "check", True, True, "every Lipschitz VAE meets its requested certified margin")]
PROFILE_CLAIMS = [(9, "check", True, True, "the Björck-layer VAE meets its requested certified margin"),
                  (10, "finding", True, False, "Björck layers reach a higher test ELBO")]
PAIRS = [
    {"model": "Björck R*=0.5", "ref": "R*=0.5", "mse": 0.031, "ref_mse": 0.043, "elbo": -170.25, "ref_elbo": -199.9,
     "elbo_diff": 29.65, "elbo_lo": 28.0, "elbo_hi": 31.0, "emp": 4.0, "ref_emp": 5.0, "margin_diff": -1.0,
     "margin_lo": -2.0, "margin_hi": 0.0, "cert": 0.5003},
    {"model": "R*=0.5", "ref": "standard d=2", "mse": 0.043, "ref_mse": 0.045, "elbo": -199.9, "ref_elbo": -150.0,
     "elbo_diff": -49.9, "elbo_lo": -51.0, "elbo_hi": -48.0, "emp": 5.0, "ref_emp": 2.5, "margin_diff": 2.5,
     "margin_lo": 1.5, "margin_hi": float("inf"), "cert": float("nan")},
]
GLUED = {"pl_n": 2, "pl_standards": "standard: 0.0132, standard d=2: 0.0450",
         **{f"pl{j}_{k}": v for j, p in enumerate(PAIRS) for k, v in p.items()},
         "claims_detail": BOOK_CLAIMS + PROFILE_CLAIMS}


def _notebook() -> dict:
    log = ("robustvae.cache: training bjorck-vae (no usable checkpoint at x.pt)\n"
           "robustvae.cache: trained bjorck-vae in 812.5 s (bjorck-vae-0123abcd.pt)\n"
           "robustvae.cache: trained vae in 61.0 s (vae-89ab.pt)\n")
    return {"cells": [
        {"cell_type": "code", "source": "models[n], _ = lipschitz.get_lipschitz_vae(configs[R])",
         "metadata": {"papermill": {"duration": 5.0}},
         "outputs": [{"name": "stderr", "output_type": "stream", "text": "robustvae.cache: trained lipschitz-vae in 9.0 s (l.pt)\n"}]},
        {"cell_type": "code", "source": ["if bjorck_margin is not None:\n", "    bjorck.BjorckVAEConfig.of(c)\n"],
         "metadata": {"papermill": {"duration": 1001.5}},
         "outputs": [{"name": "stderr", "output_type": "stream", "text": [log]}]},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    mod = load_script("benchmarks/paper_layers.py")
    from robustvae.utils import git_commit

    run = tmp_path / "runs" / "paper-layers"
    run.mkdir(parents=True)
    (run / "07_certified.ipynb").write_text(json.dumps(_notebook()))
    (run / "rerun.json").write_text(json.dumps({"commit": git_commit(), "jobs": [
        {"chapter": "07_certified", "status": "ok", "error": None, "wall_s": 1500.4,
         "parameters": {"bjorck_margin": 0.5, "strict_claims": False}}]}))
    glued = {tmp_path / "book" / "07_certified.ipynb": {"claims_detail": BOOK_CLAIMS}, run / "07_certified.ipynb": GLUED}
    monkeypatch.setattr(mod, "_glued", lambda nb: glued.get(nb, {}))
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    return mod, run


def test_the_table_holds_every_pair_the_profiles_claims_only_and_the_training_times(fake_run, tmp_path):
    mod, _ = fake_run
    out = tmp_path / "paper_layers.csv"
    assert mod.main(["--out", str(out)]) == 0
    first = out.read_text().splitlines()[0]
    assert first.startswith("# commit ") and "rerun on commit" in first and "chapter wall 1500 s" in first
    table = pd.read_csv(out, comment="#").set_index("row")
    assert table.loc["pair 0", "model"] == "Björck R*=0.5" and table.loc["pair 1", "ref"] == "standard d=2"
    assert float(table.loc["pair 0", "elbo_diff"]) == 29.65 and float(table.loc["pair 1", "margin_hi"]) == float("inf")
    claims = table[table.index.str.startswith("claim")]
    assert list(claims.index) == ["claim 9 (check)", "claim 10 (finding)"], "the book's own claims are left out"
    assert claims["value"].tolist() == ["holds", "fails"]
    assert float(table.loc["train_s bjorck-vae", "value"]) == 812.5
    assert float(table.loc["train_s vae", "value"]) == 61.0
    assert float(table.loc["cell_s", "value"]) == 1001.5
    app = load_script("benchmarks/make_appendix.py")
    app.RESULTS = tmp_path
    text = "\n".join(app._paper_layers_section())
    assert ("| Björck R*=0.5 | R*=0.5 | 0.0310 / 0.0430 | -170.2 / -199.9 | 29.6 [28.0, 31.0] | 4.00 / 5.00 | "
            "-1.00 [-2.00, 0.00] | 0.500 |") in text
    assert "| R*=0.5 | standard d=2 | 0.0430 / 0.0450 |" in text and "2.50 [1.50, ∞] | - |" in text
    assert "| claim 10 (finding) | Björck layers reach a higher test ELBO | fails |" in text
    assert "training the bjorck-vae took 812 s" in text and "standard d=2: 0.0450" in text
    assert "--name paper-layers --profile paper-layers" in text and "benchmarks/paper_layers.py" in text


def test_a_run_without_the_profile_is_refused(fake_run, tmp_path):
    mod, run = fake_run
    mod._glued = lambda nb: {}
    with pytest.raises(SystemExit, match="--profile paper-layers"):
        mod.main(["--out", str(tmp_path / "x.csv")])

"""benchmarks/decoder_ic.py reads chapter 2's `decoders` rerun into results/decoder_ic.csv, and
benchmarks/make_appendix.py shows it: tested on a fake run directory (no notebook executes)."""

import json

import pandas as pd
import pytest

from tests.scripts import load_script

BOOK_CLAIMS = [(1, "finding", True, True, "the likelihood failure reproduces"),
               (2, "finding", True, True, "input complexity separates them")]
PROFILE_CLAIMS = [(10, "finding", True, True, "the failure still reproduces with a discrete decoder"),
                  (11, "finding", True, False, "input complexity no longer calls noise in-distribution")]


def _glued(ic_noise=(0.2, 0.15, 0.25)) -> dict:
    g = {"like2_auroc": 0.31, "claims_detail": BOOK_CLAIMS + PROFILE_CLAIMS}
    for i, d in enumerate(("bern", "cb", "dl")):
        for j, (tag, st) in enumerate([(t, s) for t in ("like", "ic") for s in ("mnist", "noise")]):
            v = 0.1 * (i + 1) + 0.01 * j
            g.update({f"dec_{d}_{tag}_{st}": v, f"dec_{d}_{tag}_{st}_lo": v - 0.005, f"dec_{d}_{tag}_{st}_hi": v + 0.005})
        for k, st in enumerate(("in", "mnist", "noise")):
            g[f"dec_{d}_bpp_{st}"] = 1.0 + i + 0.1 * k
    g.update({"dec_dl_ic_noise": ic_noise[0], "dec_dl_ic_noise_lo": ic_noise[1], "dec_dl_ic_noise_hi": ic_noise[2]})
    g.update({"png_bpp_in": 4.5, "png_bpp_mnist": 1.5, "png_bpp_noise": 8.6})
    return g


def _notebook(trained: bool = True) -> dict:
    """An executed chapter 2 as papermill writes it: the decoders cell with its log and duration."""
    log = "robustvae.cache: training vae (no usable checkpoint at x.pt)\n"
    if trained:
        log += ("robustvae.cache: trained vae in 120.5 s (vae-0123.pt)\n"
                "robustvae.cache: training discretized-vae (no usable checkpoint at y.pt)\n"
                "robustvae.cache: trained discretized-vae in 140.25 s (discretized-vae-4567.pt)\n")
    return {"cells": [
        {"cell_type": "code", "source": "vae2, h = rv.get_vae(vae2_config)", "metadata": {"papermill": {"duration": 5.0}},
         "outputs": [{"name": "stderr", "output_type": "stream", "text": "robustvae.cache: trained vae in 99.0 s (v.pt)\n"}]},
        {"cell_type": "code", "source": ["if ic_decoders:\n", "    extra_vaes = {d: report.decoder_vae(vae2_config, d)\n"],
         "metadata": {"papermill": {"duration": 301.75}},
         "outputs": [{"name": "stderr", "output_type": "stream", "text": [log]}]},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    """A repository root under tmp_path with the book's chapter 2 and a finished `decoders` rerun of it."""
    mod = load_script("benchmarks/decoder_ic.py")
    from robustvae.utils import git_commit

    run = tmp_path / "runs" / "decoders"
    run.mkdir(parents=True)
    (run / "02_ood.ipynb").write_text(json.dumps(_notebook()))
    (run / "rerun.json").write_text(json.dumps({"commit": git_commit(), "jobs": [
        {"chapter": "02_ood", "status": "ok", "error": None, "wall_s": 700.4,
         "parameters": {"ic_decoders": ["continuous-bernoulli", "discretized-logistic"], "strict_claims": False}}]}))
    glued = {tmp_path / "book" / "02_ood.ipynb": {"claims_detail": BOOK_CLAIMS}, run / "02_ood.ipynb": _glued()}
    monkeypatch.setattr(mod, "_glued", lambda nb: glued.get(nb, {}))
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    return mod, run, glued


def test_the_table_holds_every_decoder_score_set_the_code_lengths_and_the_profiles_claims_only(fake_run, tmp_path):
    mod, run, _ = fake_run
    out = tmp_path / "decoder_ic.csv"
    assert mod.main(["--out", str(out)]) == 0
    first = out.read_text().splitlines()[0]
    assert first.startswith("# commit ") and "rerun on commit" in first and "chapter wall 700 s" in first
    table = pd.read_csv(out, comment="#").set_index("row")
    number = lambda row: [round(float(table.loc[row, c]), 6) for c in ("value", "lo", "hi")]  # noqa: E731
    assert number("dec_bern_like_mnist") == [0.1, 0.095, 0.105]
    assert number("dec_cb_ic_mnist") == [0.22, 0.215, 0.225]
    assert number("dec_dl_ic_noise") == [0.2, 0.15, 0.25]
    assert table.loc["dec_dl_like_mnist", "published"].startswith("0.09 (PixelCNN++")
    assert pd.isna(table.loc["dec_bern_like_mnist", "published"])
    assert float(table.loc["dec_cb_bpp_noise", "value"]) == pytest.approx(2.2)
    assert float(table.loc["png_bpp_noise", "value"]) == 8.6
    claims = table[table.index.str.startswith("claim")]
    assert list(claims.index) == ["claim 10 (finding)", "claim 11 (finding)"], "the book's own claims are left out"
    assert claims["value"].tolist() == ["holds", "fails"]
    assert float(table.loc["train_s_cb", "value"]) == 120.5 and float(table.loc["train_s_dl", "value"]) == 140.25
    assert float(table.loc["cell_s", "value"]) == 301.75
    # the appendix shows the table, the code lengths, the claims and the cost, with the commands that make them
    app = load_script("benchmarks/make_appendix.py")
    app.RESULTS = tmp_path
    text = "\n".join(app._decoder_section())
    assert "## Input complexity under three decoders" in text
    assert ("| discretized logistic | 0.300 [0.295, 0.305] | 0.320 [0.315, 0.325] | 0.310 [0.305, 0.315] | "
            "0.200 [0.150, 0.250] |") in text
    assert "| Bernoulli (the chapter's VAE) | 0.100 [0.095, 0.105] |" in text
    assert "| PNG file | code length of the 8-bit image | 4.50 | 1.50 | 8.60 |" in text
    assert "| discretized logistic | code length of the 8-bit image | 3.00 | 3.10 | 3.20 |" in text
    assert "| claim 11 (finding) | input complexity no longer calls noise in-distribution | fails |" in text
    assert "lies below 0.5: even measured in bits on both sides, input complexity still calls uniform noise" in text
    assert "Published raw likelihood on this pair: 0.09 (PixelCNN++, Ren et al. 2019), a model" in text
    assert "On uniform noise PNG needs 8.60 bits per pixel; the discretized VAE needs 3.20, less than PNG" in text
    assert "| continuous Bernoulli | density; add 7.99 for the 8-bit image | 2.00 | 2.10 | 2.20 |" in text
    assert "--name decoders --profile decoders" in text and "benchmarks/decoder_ic.py" in text
    head = first.split("commit ", 1)[1].split(";")[0]
    assert f"commit `{head}`; the rerun ran on `{head}`)" in text
    assert "training the continuous Bernoulli VAE took 120 s" in text  # 120.5 rounds to even
    assert "training the discretized logistic VAE took 140 s" in text and "(training and scoring) 302 s" in text


def test_loaded_vaes_have_no_training_time(tmp_path):
    mod = load_script("benchmarks/decoder_ic.py")
    nb = tmp_path / "02_ood.ipynb"
    nb.write_text(json.dumps(_notebook(trained=False)))
    assert mod._costs(nb) == ({}, 301.75)
    assert mod._costs(tmp_path / "missing.ipynb") == ({}, None)


def test_a_rerun_on_other_code_a_failed_chapter_or_no_comparison_is_refused(fake_run, tmp_path):
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
    glued[run / "02_ood.ipynb"] = {k: v for k, v in _glued().items() if not k.startswith("dec_")}  # a default run
    with pytest.raises(SystemExit, match="--profile decoders"):
        mod.main(["--out", str(tmp_path / "x.csv")])
    (run / "rerun.json").unlink()
    with pytest.raises(SystemExit, match="has no rerun.json"):
        mod.main(["--out", str(tmp_path / "x.csv")])
    assert not (tmp_path / "x.csv").exists()


def test_no_csv_no_appendix_section(tmp_path):
    app = load_script("benchmarks/make_appendix.py")
    app.RESULTS = tmp_path
    assert app._decoder_section() == []


@pytest.mark.parametrize("lo, hi, says", [(0.2, 0.3, "below 0.5: even measured in bits on both sides, input "
                                                     "complexity still calls"),
                                          (0.45, 0.55, "around 0.5: measured in bits on both sides, input "
                                                       "complexity does not settle"),
                                          (0.6, 0.7, "above 0.5: measured in bits on both sides, input "
                                                     "complexity no longer calls")])
def test_the_appendix_says_which_side_of_chance_the_noise_interval_lies(fake_run, tmp_path, lo, hi, says):
    mod, run, glued = fake_run
    glued[run / "02_ood.ipynb"] = _glued(((lo + hi) / 2, lo, hi))
    assert mod.main(["--out", str(tmp_path / "decoder_ic.csv")]) == 0
    app = load_script("benchmarks/make_appendix.py")
    app.RESULTS = tmp_path
    text = "\n".join(app._decoder_section())
    assert f"the 95% interval of input complexity against uniform noise lies {says}" in text

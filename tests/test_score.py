"""Scoring your own VAE (:mod:`robustvae.score`): the protocol, ``evaluate``, the command, the report.

Tiny untrained models on the CPU and sizes below the smoke sizes; the models the command imports
live in ``tests/score_fixture.py``.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import robustvae as rv
from robustvae import scorecard as sc
from robustvae import score
from robustvae.lipschitz import LipschitzVAE
from robustvae.tcvae import TCVAE
from tests import score_fixture as fx

ROOT = Path(__file__).resolve().parent.parent
#: The user's model cache, read before conftest's fixture swaps in an empty one per test.
USER_CACHE = os.environ.get("ROBUSTVAE_CACHE") or str(rv.cache.cache_dir())
#: Below the smoke sizes: seconds per column on tiny models.
TINY = score.Sizes.smoke().replace(n_eval=20, n_ood=20, iwae_k=2, n_detect=10, detect_steps=5, n_samples=2,
                                   n_purify=5, purify_steps=3, n_radii=4, margin_steps=3, lbfgs_starts=1,
                                   lbfgs_iter=2, n_mc=10, refine_steps=1, n_boot=20)
TINY_SET = ["n_eval=20", "n_ood=20", "iwae_k=2", "n_detect=10", "detect_steps=5", "n_samples=2", "n_purify=5",
            "purify_steps=3", "n_radii=4", "margin_steps=3", "lbfgs_starts=1", "lbfgs_iter=2", "n_mc=10",
            "refine_steps=1", "n_boot=20"]


@pytest.fixture(scope="module")
def classifier():
    from tests.conftest import _train_logistic

    return _train_logistic(10, 30)


def _lipschitz_vae():
    torch.manual_seed(0)
    return LipschitzVAE(latent_dim=4, hidden=32, decoder_lipschitz=2.0, mean_lipschitz=0.5, std_lipschitz=0.1,
                        std_max=0.3, std_hidden=16).eval()


# --------------------------------------------------------------------------------- the protocol
def test_the_books_models_satisfy_the_protocol_without_adapters():
    torch.manual_seed(0)
    for vae in (rv.VAE(latent_dim=4, width=8, hidden=32), TCVAE(latent_dim=4, width=8, hidden=32), _lipschitz_vae()):
        assert isinstance(vae, score.ScorableVAE) and isinstance(vae, score.CompleteVAE)
        found = score.check_model(vae)
        assert found.filled == {} and found.latent_dim == 4
        assert score.complete(vae) is vae
    lip = _lipschitz_vae()
    assert isinstance(lip, score.CertifiableVAE) and score.check_model(lip).missing_columns == {}
    assert not isinstance(rv.VAE(latent_dim=4), score.CertifiableVAE)
    assert "certified" in score.check_model(rv.VAE(latent_dim=4)).missing_columns


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(784, 8)


class _NoEncode(_Net):
    def decode(self, z):
        return torch.zeros(len(z), 1, 28, 28)


class _NoDecode(_Net):
    def encode(self, x):
        return self.lin(x.flatten(1)).chunk(2, 1)


@pytest.mark.parametrize("model, missing", [(_NoEncode(), ["encode"]), (_NoDecode(), ["decode"]),
                                            (_Net(), ["encode", "decode"])])
def test_a_missing_required_part_is_named(model, missing):
    with pytest.raises(TypeError, match="lacks the required part") as err:
        score.check_model(model)
    for part in missing:
        assert f"{part}(" in str(err.value)
    for part in set(score.REQUIRED) - set(missing):
        assert f"{part}(" not in str(err.value)
    with pytest.raises(TypeError):
        score.evaluate(model, sizes="smoke", progress=False)


def test_a_model_must_be_a_module_with_parameters():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        score.check_model(object())

    class Empty(nn.Module):
        def encode(self, x):
            return x, x

        def decode(self, z):
            return z

    with pytest.raises(TypeError, match="no parameters"):
        score.check_model(Empty())


def test_a_third_party_model_is_completed_by_the_generic_helpers():
    vae = fx.mlp_vae()
    assert isinstance(vae, score.ScorableVAE) and not isinstance(vae, score.CompleteVAE)
    found = score.check_model(vae)
    assert set(found.filled) == set(score.FILLED) and found.latent_dim == 4
    full = score.complete(vae)
    assert isinstance(full, score.Completed) and isinstance(full, score.CompleteVAE)
    assert full.latent_dim == 4 and full.likelihood == "bernoulli"
    assert [p.data_ptr() for p in full.parameters()] == [p.data_ptr() for p in vae.parameters()]
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rec = full.reconstruct(x, sample=False)
        assert torch.equal(rec, torch.sigmoid(vae.decode(vae.encode(x)[0])))


def test_the_generic_helpers_equal_the_books_vae():
    torch.manual_seed(0)
    vae = rv.VAE(latent_dim=4, width=8, hidden=32).eval()
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = vae.decode(vae.encode(x)[0])
        assert torch.allclose(score.bernoulli_log_px(x, logits), vae.log_px_given_z(x, logits))
        for own, generic in ((lambda: vae.elbo(x, n_samples=2)["elbo"], lambda: score.generic_elbo(vae, x, 2)["elbo"]),
                             (lambda: vae.iwae(x, k=5, chunk=2), lambda: score.generic_iwae(vae, x, 5, 2)),
                             (lambda: vae.reconstruct(x), lambda: score.generic_reconstruct(vae, x))):
            torch.manual_seed(3)
            a = own()
            torch.manual_seed(3)
            assert torch.allclose(a, generic(), rtol=1e-5, atol=1e-4)


def test_the_probe_refuses_wrong_shapes_and_ranges():
    with pytest.raises(ValueError, match="1x28x28"):
        score.check_model(fx.wrong_shape_vae())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        score.check_model(fx.image_decoder_vae())

    class BadEncode(fx.MLPVAE):
        def encode(self, x):
            return self.enc(x)

    with pytest.raises(ValueError, match="pair of tensors"):
        score.check_model(BadEncode())


# --------------------------------------------------------------------------------- evaluate
def test_evaluate_refuses_bad_input_before_any_work(monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(score, "_inputs", no_work)
    monkeypatch.setattr(score, "book_classifier", no_work)
    vae = fx.mlp_vae()
    for kwargs, match in (({"columns": ["elbo", "bogus"]}, "bogus"), ({"columns": "mse,nope"}, "nope"),
                          ({"dataset": "cifar10"}, "cifar10"), ({"sizes": "huge"}, "huge"),
                          ({"n_inputs": 5}, "n_inputs"), ({"columns": []}, "at least one")):
        with pytest.raises(ValueError, match=match):
            score.evaluate(vae, **kwargs, progress=False)
    with pytest.raises(ValueError, match="n_margin"):
        score.Sizes(n_margin=5)
    with pytest.raises(ValueError, match="Unknown size"):
        score.Sizes().replace(n_everything=3)


def test_an_optional_part_missing_gives_an_empty_column_with_the_reason():
    row = score.evaluate(fx.mlp_vae(), columns=["certified"], sizes=TINY, progress=False)
    assert math.isnan(row.loc["your VAE", ("certified", "value")])
    assert "lipschitz_constants" in row.attrs["notes"]["certified"]
    lip = score.evaluate(_lipschitz_vae(), columns=["certified"], sizes=TINY, progress=False, name="lip")
    assert lip.loc["lip", ("certified", "value")] > 0


def test_columns_equal_a_direct_call_of_the_scorecard(classifier):
    vae = fx.book_vae().eval()
    res = score.score_model(vae, classifier, columns=["elbo", "mse", "spearman", "margin"], sizes=TINY,
                            progress=False, name="m")
    assert list(res.table.columns.get_level_values("column").unique()) == ["elbo", "mse", "spearman", "margin"]
    x_test, y_test = rv.load_dataset("mnist-5k", "test")
    x_eval, y_eval = rv.stratified_subset(x_test, y_test, TINY.n_eval, seed=0)
    vae.requires_grad_(False)
    direct = sc.likelihood_columns(vae, x_eval, n_boot=TINY.n_boot, seed=0)
    direct["spearman"] = sc.spearman_column(vae, classifier, x_eval, y_eval, n_boot=TINY.n_boot, seed=0)
    x_m, y_m = rv.stratified_subset(x_test, y_test, TINY.n_margin, seed=0)
    n = TINY.n_margin
    target = [next(j % n for j in range(i + 1, i + n) if y_m[j % n] != y_m[i]) for i in range(n)]
    radii = np.geomspace(TINY.min_radius, TINY.max_radius, TINY.n_radii)
    direct["margin"] = sc.margin_column(vae, x_m, TINY.r, radii, TINY.margin_attacks, x_target=x_m[target],
                                        steps=TINY.margin_steps, n_mc=TINY.n_mc, refine_steps=TINY.refine_steps,
                                        n_boot=TINY.n_boot, seed=0, lbfgs_starts=TINY.lbfgs_starts,
                                        lbfgs_iter=TINY.lbfgs_iter,
                                        lbfgs_radii=np.unique(np.r_[radii[::TINY.lbfgs_stride], radii[-1]]))
    for c, e in direct.items():
        got = res.estimates[c]
        np.testing.assert_allclose([got.value, got.lo, got.hi], [e.value, e.lo, e.hi], rtol=1e-6)
    # scoring left the model as it was
    assert not vae.training and all(not p.requires_grad for p in vae.parameters())
    fresh = fx.book_vae().train()
    score.evaluate(fresh, classifier, columns=["mse"], sizes=TINY, progress=False)
    assert fresh.training and all(p.requires_grad for p in fresh.parameters())
    third = fx.mlp_vae().eval()              # scored through the generic helpers' wrapper
    score.evaluate(third, classifier, columns=["ood_auroc"], sizes=TINY, progress=False)
    assert not any(m.training for m in third.modules()) and all(p.requires_grad for p in third.parameters())


def test_the_book_reference_rows_are_read_from_chapter_9():
    ref, note = score.reference_rows()
    if ref is None:
        pytest.skip(note)
    assert len(ref) == 8 and "VAE (beta=1)" in ref.index
    assert ref.loc["VAE (beta=1)", ("elbo", "lo")] < ref.loc["VAE (beta=1)", ("elbo", "value")]
    assert math.isnan(ref.loc["VAE (beta=1)", ("certified", "value")])
    assert (ref.xs("value", axis=1, level="stat")["certified"].notna().sum()) == 3
    # every cell of the interval columns has its interval (chapter 9's purification-test table,
    # which shares the "purified acc." header without intervals, is not read as a scorecard)
    for col in ("elbo", "purified_acc", "detection_auroc", "margin"):
        lo, v, hi = (ref[(col, s)] for s in ("lo", "value", "hi"))
        assert (lo.notna() & hi.notna()).all() and (lo <= v).all() and (v <= hi).all(), col
    # the parsed cells agree with the unrounded numbers chapter 9 glues into its prose
    nb = json.loads((ROOT / "book" / "09_scorecard.ipynb").read_text())
    glued = {o["metadata"]["scrapbook"]["name"]: float(o["data"]["application/papermill.record/text/plain"])
             for c in nb["cells"] for o in c.get("outputs", []) if (o.get("metadata") or {}).get("scrapbook")
             and o["metadata"]["scrapbook"]["name"] in ("elbo_vae", "mse_vae", "margin_vae_lo", "rho_vae_hi")}
    for key, (c, stat) in {"elbo_vae": ("elbo", "value"), "mse_vae": ("mse", "value"),
                           "margin_vae_lo": ("margin", "lo"), "rho_vae_hi": ("spearman", "hi")}.items():
        if key in glued:
            assert ref.loc["VAE (beta=1)", (c, stat)] == pytest.approx(round(glued[key], score.DIGITS[c]), abs=1e-9)
    missing, why = score.reference_rows(ROOT / "no-such-notebook.ipynb")
    assert missing is None and "not here" in why


# --------------------------------------------------------------------------------- the command
@pytest.fixture
def saved(tmp_path, classifier):
    torch.save(fx.mlp_vae().state_dict(), tmp_path / "vae.pt")
    torch.save(fx.book_vae().state_dict(), tmp_path / "other.pt")
    torch.save(classifier.state_dict(), tmp_path / "clf.pt")
    return tmp_path


def _cli(saved, *extra, model="tests.score_fixture:mlp_vae", weights="vae.pt"):
    return ["--model", model, "--weights", str(saved / weights), "--classifier", "tests.score_fixture:logistic",
            "--classifier-weights", str(saved / "clf.pt"), "--out", str(saved / "out" / "report.html"),
            "--no-progress", *extra]


@pytest.mark.parametrize("extra, kw, match", [
    (["--columns", "elbo", "bogus"], {}, "bogus"),
    (["--set", "n_margin=3"], {}, "n_margin"),
    (["--set", "nonsense=3"], {}, "NAME=VALUE"),
    ([], {"weights": "other.pt"}, "do not fit"),
    ([], {"weights": "missing.pt"}, "no file"),
    ([], {"model": "tests.no_such_module:f"}, "cannot import"),
    ([], {"model": "tests.score_fixture:nope"}, "has no"),
    ([], {"model": "tests.score_fixture:not_a_module"}, "torch.nn.Module"),
    ([], {"model": "tests.score_fixture", "weights": "vae.pt"}, "package.module:factory"),
    ([], {"model": "tests.score_fixture:wrong_shape_vae"}, "1x28x28"),
    ([], {"model": "tests.score_fixture:image_decoder_vae"}, r"\[0, 1\]"),
])
def test_the_command_refuses_bad_input_before_any_work(saved, monkeypatch, capsys, extra, kw, match):
    monkeypatch.setattr(score, "score_model", lambda *a, **k: pytest.fail("scoring started"))
    assert score.main(_cli(saved, *extra, **kw), pin_numerics=False) == 2
    err = capsys.readouterr().err
    assert "error:" in err and re.search(match, err), err
    assert not (saved / "out").exists()


def test_the_command_round_trip_writes_an_offline_report(saved, capsys):
    rc = score.main(_cli(saved, "--sizes", "smoke", "--set", *TINY_SET, "--name", "tiny MLP VAE"),
                    pin_numerics=False)
    assert rc == 0
    out = saved / "out"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page
    assert "data:image/png;base64," in page and "tiny MLP VAE" in page
    for c, (what, chapter) in score.COLUMN_INFO.items():
        assert what.replace("'", "&#x27;") in page
    assert "no lipschitz_constants" in page and "commit" in page and "L-inf eps = 0.3" in page
    # a smoke-size row is not ranked against the book's rows: the stars go to the book's models
    you = page[page.index('<tr class="you">'):]
    you = you[: you.index("</tr>")]
    assert "★" not in you and "★" in page and "among the book's rows only" in page
    table = pd.read_csv(out / "report.csv", index_col=0)
    assert list(table.index) == ["tiny MLP VAE"] and "margin_value" in table.columns
    record = json.loads((out / "report.json").read_text())
    assert set(record["columns"]) == set(sc.COLUMNS) and record["columns"]["certified"]["value"] is None
    assert record["sizes"]["n_eval"] == 20 and record["sizes_are_the_books"] is False
    assert "wrote" in capsys.readouterr().out
    # the CSV serves as reference rows of a later report
    ref, _ = score.reference_rows(out / "report.csv")
    assert list(ref.index) == ["tiny MLP VAE"]


def test_python_m_robustvae_dispatches_score_and_the_rest(monkeypatch):
    import robustvae.__main__ as entry
    import robustvae.runs

    seen = {}
    monkeypatch.setenv("ROBUSTVAE_NUMERICS", "native")     # no pins written into this process's environment
    monkeypatch.setattr(score, "main", lambda argv: seen.setdefault("score", list(argv)) and 0)
    monkeypatch.setattr(robustvae.runs, "main", lambda argv: seen.setdefault("runs", list(argv)) and 0)
    entry.main(["score", "--model", "a:b"])
    entry.main(["show", "02"])
    assert seen == {"score": ["--model", "a:b"], "runs": ["show", "02"]}
    # from the shell: a bad column is refused before torch loads any model
    proc = subprocess.run([sys.executable, "-m", "robustvae", "score", "--model", "tests.score_fixture:mlp_vae",
                           "--columns", "bogus"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "bogus" in proc.stderr


@pytest.mark.slow
def test_a_book_model_scores_as_in_chapter_9(tmp_path):
    """Chapter 1's VAE through the command: its ELBO and MSE columns equal chapter 9's stored table
    (to the table's digits). Uses the user's model cache: seconds when the book was built, else the
    VAE is trained first (minutes)."""
    ref, note = score.reference_rows()
    if ref is None:
        pytest.skip(note)
    env = {k: v for k, v in os.environ.items() if k != "ROBUSTVAE_NUMERICS"}
    env["ROBUSTVAE_CACHE"] = USER_CACHE
    proc = subprocess.run([sys.executable, "-m", "robustvae", "score", "--model", "tests.score_fixture:chapter1_vae",
                           "--columns", "elbo", "mse", "--no-progress", "--out", str(tmp_path / "r.html")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads((tmp_path / "r.json").read_text())["columns"]
    for c in ("elbo", "mse"):
        for stat in ("value", "lo", "hi"):
            book = ref.loc["VAE (beta=1)", (c, stat)]
            tol = 0.5 * 10 ** -score.DIGITS[c] * 1.01 + 1e-4 * abs(book)   # printed digits, nbval's RTOL
            assert abs(got[c][stat] - book) <= tol, (c, stat, got[c][stat], book)

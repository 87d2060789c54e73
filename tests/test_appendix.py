"""The appendix "Reproducing this book" is generated from benchmarks/results/: it must not drift."""

from pathlib import Path

import pytest

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _make_appendix():
    return load_script("benchmarks/make_appendix.py")


def test_appendix_matches_the_benchmark_results():
    mod = _make_appendix()
    assert mod.APPENDIX.exists(), "book/appendix_reproducing.md is missing: run benchmarks/make_appendix.py"
    assert mod.APPENDIX.read_text() == mod.render(), (
        "book/appendix_reproducing.md differs from benchmarks/results/: run benchmarks/make_appendix.py")


def test_appendix_reports_a_failing_claim_as_failing(tmp_path):
    mod = _make_appendix()
    csv = tmp_path / "sweep.csv"
    csv.write_text("seed,status,best1_auroc,like2_auroc\n0,ok,0.99,0.7\n")
    table = mod._sweep_table(csv)
    assert "0.990 holds" in table and "0.700 **fails**" in table


def test_smoke_rerun_table_counts_claims_per_dataset(tmp_path, monkeypatch):
    mod = _make_appendix()
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    assert mod._smoke_table() is None  # no reruns recorded: no section
    (tmp_path / "rerun_smoke_mnist-5k.csv").write_text(
        "chapter,status,error,wall_s,claims_checked,claims_failed,claims_failing\n"
        "01_models,ok,,60.2,3,0,none\n02_ood,ok,,100.0,7,2,#1 #4\n")
    (tmp_path / "rerun_smoke_fashion-mnist.csv").write_text(
        "chapter,status,error,wall_s,claims_checked,claims_failed,claims_failing\n"
        "01_models,failed,TypeError: x,30.0,,,\n")
    table, sentence = mod._smoke_table()
    assert "| `02_ood` | ok, 100 | 2 of 7 (#1 #4) | not run | - |" in table
    assert "| `01_models` | ok, 60 | 0 of 3 | failed, 30 | - |" in table
    assert sentence == ("In these runs on mnist-5k, 2 of 2 chapters ran to the end in 3 min and 2 of 10 claims "
                        "failed; on fashion-mnist, 0 of 1 chapters ran to the end in 0 min and 0 of 0 claims failed.")


@pytest.mark.slow
def test_bjorck_orthonormalises_and_every_parametrisation_trains():
    mod = load_script("benchmarks/bench_parametrisations.py")
    import torch

    torch.manual_seed(0)
    for shape in ((64, 784), (256, 16)):
        w = mod.Bjorck(30)(torch.randn(shape, dtype=torch.float64))
        small = min(shape)
        gram = w @ w.T if shape[0] < shape[1] else w.T @ w
        assert torch.allclose(gram, torch.eye(small, dtype=torch.float64), atol=1e-4), shape
    x = torch.rand(8, 1, 28, 28)
    for kind in mod.KINDS:
        assert mod.step_time(kind, x, warmup=0, repeats=1) > 0


def test_full_rerun_table_shows_the_recorded_numbers(tmp_path):
    mod = _make_appendix()
    f = tmp_path / "full.csv"
    f.write_text("chapter,status,error,wall_s,claims_checked,claims_failed,claims_failing,like1_auroc\n"
                 "02_ood,ok,,44.1,5,0,none,0.4025\n01_models,ok,,1131.5,2,0,none,\n")
    table, _ = mod._reruns_table({"fashion-mnist": f}, {"02_ood": [("like1_auroc", "AUROC")], "01_models": [("test_acc", "acc")]})
    assert "| `02_ood` | ok, 44 | 0 of 5 | AUROC 0.403 |" in table
    assert "| `01_models` | ok, 1132 | 0 of 2 | - |" in table


def _seed_findings():
    return load_script("benchmarks/seed_findings.py")


def test_findings_are_compared_across_seeds_claim_by_claim(tmp_path, monkeypatch):
    mod = _seed_findings()
    book, run1, run2 = tmp_path / "book", tmp_path / "s1", tmp_path / "s2"
    for d in (book, run1, run2):
        d.mkdir()
    for d in (book, run1):
        (d / "01_a.ipynb").write_text("{}")
    (book / "02_b.ipynb").write_text("{}")
    (run1 / "02_b.ipynb").write_text("{}")  # the seed-1 rerun of chapter 2 did not finish
    (run2 / "01_a.ipynb").write_text("{}")
    (run2 / "02_b.ipynb").write_text("{}")
    (book / "03_c.ipynb").write_text("{}")  # a chapter the reruns left out
    claims = {  # path -> {text: (kind, claimed, holds, number)}
        book / "01_a.ipynb": {"x beats y": ("finding", True, True, 1), "bound holds": ("check", True, True, 2),
                              "only here": ("finding", True, True, 3), "shown": ("finding", False, True, 4)},
        run1 / "01_a.ipynb": {"x beats y": ("finding", True, False, 1), "bound holds": ("check", True, True, 2)},
        run2 / "01_a.ipynb": {"x beats y": ("finding", True, True, 1), "bound holds": ("check", True, True, 2),
                              "only here": ("finding", True, True, 3)},
        book / "02_b.ipynb": {"z": ("finding", True, True, 1)},
        book / "03_c.ipynb": {"w": ("finding", True, True, 1)},
        run2 / "02_b.ipynb": {"z": ("finding", True, True, 1)},
    }
    monkeypatch.setattr(mod, "_claims", lambda nb: claims.get(nb))
    table = mod.collect(book, {1: run1, 2: run2}).set_index(["chapter", "claim"])
    assert ("01_a", "shown") not in table.index, "a claim shown but not claimed is not compared"
    assert table.loc[("01_a", "x beats y"), ["seed_0", "seed_1", "seed_2", "held"]].tolist() == [
        "holds", "fails", "holds", "2 of 3"]
    assert table.loc[("01_a", "only here"), ["seed_1", "held"]].tolist() == ["not checked", "2 of 2"]
    assert table.loc[("02_b", "z"), ["seed_1", "held"]].tolist() == ["chapter failed", "2 of 2"]
    assert "03_c" not in table.index.get_level_values("chapter")
    # the appendix section counts them per chapter and lists the finding that failed on a seed
    app = _make_appendix()
    monkeypatch.setattr(app, "RESULTS", tmp_path)
    (tmp_path / "seeds_findings.csv").write_text("# commit abc123; seed 0 is the book's own run\n"
                                                 + table.reset_index().to_csv(index=False))
    text = "\n".join(app._seeds_section())
    assert "| `01_a` | 2 | 0 | 1 | 1 |" in text and "| `02_b` | 1 | 0 | 0 | 1 |" in text
    assert "| `01` #1 | x beats y | holds | fails | holds |" in text and "commit `abc123`" in text


def test_more_inputs_table_puts_each_claim_and_number_beside_the_book(tmp_path, monkeypatch):
    mod = load_script("benchmarks/more_inputs.py")
    book, run = tmp_path / "book", tmp_path / "run"
    glued = {
        book / "06_rrobustness.ipynb": {"claims_detail": [(1, "check", True, True, "a bound"),
                                                          (2, "finding", True, True, "b beats c"),
                                                          (3, "finding", False, True, "shown only")],
                                        "n_inputs": 20, "med_vae": 1.25},
        run / "06_rrobustness.ipynb": {"claims_detail": [(1, "check", True, True, "a bound"),
                                                         (2, "finding", True, False, "b beats c")],
                                       "n_inputs": 200, "med_vae": 1.5},
        book / "07_certified.ipynb": {"claims_detail": [(1, "finding", True, True, "d")], "n_attack": 50},
        # the rerun of chapter 7 did not finish: no notebook
    }
    monkeypatch.setattr(mod, "_glued", lambda nb: glued.get(nb, {}))
    table = mod.collect(book, run).set_index(["chapter", "row"])
    assert table.loc[("06_rrobustness", "claim 2 (finding)"), ["book", "more inputs"]].tolist() == ["holds", "fails"]
    assert ("06_rrobustness", "claim 3 (finding)") not in table.index, "a claim shown but not claimed is not compared"
    assert table.loc[("07_certified", "claim 1 (finding)"), "more inputs"] == "chapter failed"
    assert table.loc[("06_rrobustness", "n_inputs"), ["book", "more inputs"]].tolist() == [20, 200]
    app = _make_appendix()
    monkeypatch.setattr(app, "RESULTS", tmp_path)
    (tmp_path / "more_inputs_findings.csv").write_text("# commit abc123; book: ...\n"
                                                       + table.reset_index().to_csv(index=False))
    text = "\n".join(app._more_inputs_section())
    assert "| `06` claim 2 (finding) | b beats c | holds | fails |" in text
    assert "| `06` | test digits | 20 | 200 |" in text and "| `06` | median empirical margin, VAE | 1.250 | 1.500 |" in text
    assert "commit `abc123`" in text


def test_a_rerun_is_stale_when_code_changed_but_not_when_only_prose_did(tmp_path, monkeypatch):
    """seed_findings.require_current_code: the library or a chapter's code cells changed since the
    rerun's commit -> refused; only a chapter's prose changed -> accepted; a dirty run -> refused."""
    import subprocess
    mod = _seed_findings()
    chapter = ("---\nfront: matter\n---\n# Title\n\nSome prose.\n\n```{code-cell} ipython3\n:tags: [x]\n\n"
               "a = 1\n```\n\nMore prose.\n\n```{code-cell} ipython3\nb = a + 1\n```\n")
    assert mod.code_cells(chapter) == [":tags: [x]\n\na = 1", "b = a + 1"]

    def git(*args):
        return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "book").mkdir()
    (tmp_path / "robustvae").mkdir()
    (tmp_path / "book" / "01_a.md").write_text(chapter)
    (tmp_path / "robustvae" / "m.py").write_text("x = 1\n")
    git("add", "-A")
    git("commit", "-qm", "one")
    ran = git("rev-parse", "HEAD")
    monkeypatch.setattr(mod, "ROOT", tmp_path)

    def edit(path, text):
        (tmp_path / path).write_text(text)
        git("commit", "-qam", "edit")

    edit("book/01_a.md", chapter.replace("Some prose.", "Better prose, same code."))
    assert mod.changed_code(ran) == []
    mod.require_current_code("r", {"commit": ran}, "HEAD")              # accepted
    with pytest.raises(SystemExit, match="uncommitted"):
        mod.require_current_code("r", {"commit": ran + "+dirty"}, "HEAD")
    edit("book/01_a.md", chapter.replace("b = a + 1", "b = a + 2"))
    assert mod.changed_code(ran) == ["book/01_a.md"]
    with pytest.raises(SystemExit, match="01_a.md"):
        mod.require_current_code("r", {"commit": ran}, "HEAD")
    git("revert", "--no-edit", "HEAD")
    edit("robustvae/m.py", '"""Now documented."""\n# and commented\nx = 1  # one\n')
    assert mod.changed_code(ran) == []                                   # documentation only
    edit("robustvae/m.py", "x = 2\n")
    assert mod.changed_code(ran) == ["robustvae/m.py"]

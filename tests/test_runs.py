"""Reruns and sweeps (robustvae.runs): checks before any work, glued values, a tiny real sweep."""

from pathlib import Path

import nbformat
import pandas as pd
import pytest

from robustvae import runs

ROOT = Path(__file__).resolve().parents[1]

GLUE_BODY = """\
from myst_nb import glue
if a < 0:
    raise ValueError(f"a must be non-negative, got {a}")
glue("double", 2 * a, display=False)
glue("label", f"{b}-{a}", display=False)
glue("pair", (a, 0.5), display=False)
glue("c_type", type(c).__name__, display=False)
glue("c_sum", sum(c), display=False)
print("done")
"""


def _notebook(path: Path, params: str = 'a = 1\nb = "x"   # a label, e.g. b = "y"\nc = (1, 2)\n', body: str = GLUE_BODY):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A tiny chapter"), cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def book(tmp_path):
    d = tmp_path / "book"
    _notebook(d / "01_tiny.ipynb")
    _notebook(d / "02_other.ipynb", params='dataset = "mnist-5k"\ndevice = "auto"\nseed = 0\n',
              body="print(dataset, device, seed)")
    return d


# ------------------------------------------------------------------ checks before any work


def test_chapters_are_found_by_number_stem_or_all(book):
    assert [p.stem for p in runs.find_chapters(["1"], book)] == ["01_tiny"]
    assert [p.stem for p in runs.find_chapters(["02_other", "01"], book)] == ["02_other", "01_tiny"]
    assert [p.stem for p in runs.find_chapters(["all"], book)] == ["01_tiny", "02_other"]
    with pytest.raises(ValueError, match="Unknown chapter '09'. Valid chapters: 01_tiny, 02_other"):
        runs.find_chapters(["09"], book)


def test_the_books_chapters_are_found_and_their_parameters_read():
    chapters = runs.find_chapters(["all"])
    assert len(chapters) >= 1 and all(p.suffix == ".ipynb" for p in chapters)
    for nb in chapters:
        declared = runs.chapter_parameters(nb)
        assert declared["dataset"] == "mnist-5k" and declared["device"] == "auto", nb.stem
        assert declared["strict_claims"] is True, nb.stem  # the book asserts its claims


def test_parameters_whose_comment_holds_an_equals_sign_are_read(book):
    # papermill's own line parser skips `b = "x"   # ... b = "y"`; robustvae.runs does not.
    assert runs.chapter_parameters(book / "01_tiny.ipynb") == {"a": 1, "b": "x", "c": (1, 2)}


@pytest.mark.parametrize("params, message", [
    ({"d": 1}, "Unknown parameter\\(s\\) 'd' for chapter 01_tiny. Valid parameters: a, b, c"),
    ({"a": "many"}, "Parameter 'a' of chapter 01_tiny takes an integer \\(default 1\\), got 'many'"),
    ({"b": 3}, "takes a string"),
])
def test_bad_parameters_fail_before_any_work(book, tmp_path, params, message):
    out = tmp_path / "runs"
    with pytest.raises(ValueError, match=message):
        runs.rerun(["01"], "bad", params, book=book, runs=out)
    assert not out.exists()


@pytest.mark.parametrize("params, message", [
    ({"dataset": "svhn"}, "Unknown value 'svhn' for parameter 'dataset'.*Valid values: 'mnist-5k', 'mnist', 'fashion-mnist'"),
    ({"device": "tpu"}, "Unknown value 'tpu' for parameter 'device'.*Valid values: 'auto', 'cpu', 'cuda'"),
])
def test_bad_dataset_or_device_fails_naming_the_valid_ones(book, tmp_path, params, message):
    with pytest.raises(ValueError, match=message):
        runs.plan_rerun(["02"], "bad", params, book=book, runs=tmp_path / "runs")
    jobs = runs.plan_rerun(["02"], "good", {"device": "cuda:1"}, book=book, runs=tmp_path / "runs")
    assert jobs[0].parameters == {"device": "cuda:1"}


def test_several_chapters_take_the_parameters_they_declare(book, tmp_path):
    jobs = runs.plan_rerun(["all"], "r", {"a": 2, "seed": 3}, book=book, runs=tmp_path)
    assert [j.parameters for j in jobs] == [{"a": 2}, {"seed": 3}]
    with pytest.raises(ValueError, match="none of the chapters 01_tiny, 02_other has it"):
        runs.plan_rerun(["all"], "r", {"zzz": 2}, book=book, runs=tmp_path)


def test_profiles_apply_only_to_declared_parameters():
    jobs = runs.plan_rerun(["01"], "smoke", {"vae_epochs": 3}, profile="smoke")
    assert jobs[0].parameters["vae_epochs"] == 3 and jobs[0].parameters["clf_epochs"] == 1
    assert "n_eval" not in jobs[0].parameters
    assert jobs[0].output == runs.RUNS / "smoke" / jobs[0].notebook.name
    with pytest.raises(ValueError, match="Unknown profile 'tiny'. Valid profiles: smoke"):
        runs.plan_rerun(["01"], "x", profile="tiny")


def test_every_smoke_entry_is_a_parameter_of_some_chapter_and_shrinks_every_chapter():
    declared = {nb.stem: runs.chapter_parameters(nb) for nb in runs.find_chapters(["all"])}
    union = set().union(*declared.values())
    assert not set(runs.PROFILES["smoke"]) - union, "smoke profile entries no chapter declares"
    for stem, params in declared.items():  # every chapter gets some of its sizes shrunk
        assert set(params) & set(runs.PROFILES["smoke"]) - {"dataset", "device"}, stem


def test_cli_reports_errors_and_starts_nothing(book, tmp_path, capsys):
    out = tmp_path / "runs"
    code = runs.main(["rerun", "01", "--name", "x", "--book", str(book), "--runs-dir", str(out), "-p", "d=1"])
    assert code == 2 and "Valid parameters: a, b, c" in capsys.readouterr().err
    code = runs.main(["sweep", "01", "--name", "x", "--book", str(book), "--runs-dir", str(out),
                      "--grid", "a=1,x"])
    assert code == 2 and "takes an integer" in capsys.readouterr().err
    assert not out.exists()


def test_values_are_python_literals_else_strings():
    assert runs.parse_assignments(["beta=4", "eps=0.1,0.2", "dataset=fashion-mnist", "n=None"]) == {
        "beta": 4, "eps": (0.1, 0.2), "dataset": "fashion-mnist", "n": None}
    assert runs.parse_grid(["beta=1,4.0", "dataset=mnist-5k,fashion-mnist", "betas=[(2.0,), (4.0, 8.0)]",
                            "seed=3"]) == {
        "beta": [1, 4.0], "dataset": ["mnist-5k", "fashion-mnist"], "betas": [(2.0,), (4.0, 8.0)], "seed": [3]}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        runs.parse_assignments(["beta"])
    with pytest.raises(ValueError, match="repeats a value"):
        runs.parse_grid(["seed=0,0"])


def test_runs_folder_is_git_ignored_and_the_runs_package_is_not():
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        # --no-index: the patterns themselves, also for files already tracked
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT).returncode == 0

    assert ignored("runs/seed-1/01_models.ipynb"), "the runs/ output folder must be git-ignored"
    assert not ignored("robustvae/runs/execute.py"), "the robustvae.runs package must be committed"


# ------------------------------------------------------------------ recorded values


def test_read_glued_reads_scrapbook_outputs_not_text(tmp_path):
    nb = nbformat.v4.new_notebook()
    prefix = "application/papermill.record/"

    def glued(name, data):
        return nbformat.v4.new_output("display_data", data=data,
                                      metadata={"scrapbook": {"name": name, "mime_prefix": prefix}})

    cell = nbformat.v4.new_code_cell("...")
    cell.outputs = [
        glued("acc", {prefix + "text/plain": "0.913"}),
        glued("n", {prefix + "text/plain": "np.int64(42)"}),
        glued("name", {prefix + "text/plain": "'fashion-mnist'"}),
        glued("fig", {prefix + "image/png": "iVBOR...", prefix + "text/plain": "<Figure>"}),
        glued("table", {prefix + "text/html": "<table></table>", prefix + "text/plain": "   a\n0  1"}),
        nbformat.v4.new_output("display_data", data={"application/scrapbook.scrap.json+json": {
            "name": "scrap", "data": {"k": [1, 2]}, "encoder": "json", "version": 1}},
            metadata={"scrapbook": {"name": "scrap", "data": True, "display": False}}),
        nbformat.v4.new_output("stream", name="stdout", text="acc = 0.5\n"),
        nbformat.v4.new_output("display_data", data={"text/plain": "0.7"}),
    ]
    nb.cells = [cell]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert runs.read_glued(path) == {"acc": 0.913, "n": 42, "name": "fashion-mnist", "fig": "<image/png>",
                                     "table": "   a\n0  1", "scrap": {"k": [1, 2]}}


# ------------------------------------------------------------------ a tiny real rerun and sweep


@pytest.mark.slow
def test_rerun_executes_into_runs_and_never_touches_the_book(book, tmp_path):
    before = (book / "01_tiny.ipynb").read_bytes()
    table = runs.rerun(["01"], "r1", {"a": 3, "c": (4, 5, 6)}, book=book, runs=tmp_path / "runs",
                       progress_bar=False)
    assert (book / "01_tiny.ipynb").read_bytes() == before
    out = tmp_path / "runs" / "r1" / "01_tiny.ipynb"
    # tuples arrive as tuples (papermill alone would pass the string "(4, 5, 6)")
    assert runs.read_glued(out) == {"double": 6, "label": "x-3", "pair": (3, 0.5), "c_type": "tuple", "c_sum": 15}
    assert table.loc[0, "status"] == "ok" and table.loc[0, "double"] == 6
    assert (tmp_path / "runs" / "r1" / "results.csv").exists()


@pytest.mark.slow
def test_tiny_sweep_on_a_local_dask_cluster(book, tmp_path):
    table = runs.sweep("01_tiny", "s1", {"a": [1, 2, -1], "b": ["x"], "c": [(1,)]}, book=book, runs=tmp_path / "runs",
                       workers=1, progress=False)
    assert list(table["a"]) == [1, 2, -1] and list(table["b"]) == ["x"] * 3
    assert list(table["status"]) == ["ok", "ok", "failed"]
    assert list(table["double"][:2]) == [2, 4] and pd.isna(table["double"][2])
    assert list(table["label"][:2]) == ["x-1", "x-2"] and list(table["c_sum"][:2]) == [1, 1]
    assert "a must be non-negative, got -1" in table["error"][2]
    assert table["error"][:2].isna().all()
    saved = pd.read_csv(tmp_path / "runs" / "s1" / "results.csv")
    assert list(saved["status"]) == ["ok", "ok", "failed"] and list(saved["double"][:2]) == [2, 4]
    # every point wrote its own executed notebook, the failing one with its error
    assert len(list((tmp_path / "runs" / "s1").glob("01_tiny__*.ipynb"))) == 3


def test_a_dataset_with_no_source_fails_before_any_notebook(book, tmp_path, monkeypatch):
    from robustvae import data

    monkeypatch.setenv("ROBUSTVAE_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("ROBUSTVAE_DOWNLOAD", "0")
    monkeypatch.setattr(data, "_MEMO", {})
    with pytest.raises(data.DataSourceError, match="'mnist' is not available offline"):
        runs.rerun(["02"], "offline", {"dataset": "mnist"}, book=book, runs=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


CLAIMS_BODY = """\
from robustvae.claims import Claims
claims = Claims(dataset, strict=strict_claims)
claims.check("a is small", a < 3, f"a = {a}", kind="finding")
claims.check("a is positive", a > 0, f"a = {a}", kind="check", tuned=True)
claims.conclude()
print("after the claims")
"""


@pytest.mark.slow
def test_reruns_report_failing_claims_instead_of_stopping(tmp_path):
    book = tmp_path / "book"
    _notebook(book / "01_claims.ipynb", body=CLAIMS_BODY,
              params='dataset = "mnist-5k"\na = 1\nstrict_claims = True   # the book asserts its claims\n')
    jobs = runs.plan_rerun(["01"], "c0", {"a": 5}, book=book, runs=tmp_path / "runs")
    assert jobs[0].parameters == {"a": 5, "strict_claims": False}
    assert runs.plan_rerun(["01"], "c0", {"strict_claims": True}, book=book,
                           runs=tmp_path / "runs")[0].parameters == {"strict_claims": True}
    sweep_jobs = runs.plan_sweep("01", "c0", {"a": [1, 5]}, book=book, runs=tmp_path / "runs")
    assert [j.parameters["strict_claims"] for j in sweep_jobs] == [False, False]

    table = runs.rerun(["01"], "c1", {"a": 5}, book=book, runs=tmp_path / "runs", progress_bar=False)
    assert table.loc[0, "status"] == "ok"
    assert table.loc[0, "claims_checked"] == 2 and table.loc[0, "claims_failed"] == 1
    assert table.loc[0, "findings_checked"] == 1 and table.loc[0, "findings_failed"] == 1
    assert table.loc[0, "checks_checked"] == 1 and table.loc[0, "checks_failed"] == 0
    out = nbformat.read(tmp_path / "runs" / "c1" / "01_claims.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in out.cells if c.cell_type == "code" for o in c.outputs)
    assert "1 of 1 findings DOES NOT HOLD; 1 check passes" in text and "after the claims" in text

    strict = runs.rerun(["01"], "c2", {"a": 5, "strict_claims": True}, book=book, runs=tmp_path / "runs",
                        progress_bar=False)
    assert strict.loc[0, "status"] == "failed" and "ClaimsFailed" in strict.loc[0, "error"]


# ------------------------------------------------------------------ the book, chapters at once


def _md_chapter(book: Path, stem: str, body: str, after=None) -> Path:
    from tests.test_portability import _chapter

    return _chapter(book, stem, body, after=after)


def test_start_order_puts_chapter_1_first_then_the_listed_order_then_the_rest():
    stems = ["01_a", "02_b", "03_h", "09_i", "04_c", "08_d", "11_g", "10_e", "05_f"]
    assert runs.start_order(stems) == ["01_a", "08_d", "04_c", "03_h", "09_i", "02_b", "10_e", "05_f", "11_g"]
    assert runs.default_jobs(1) == 1 and runs.default_jobs() >= 1


def test_after_is_read_from_the_front_matter_and_bad_values_are_refused(tmp_path):
    book = tmp_path / "book"
    assert runs.chapter_after(_md_chapter(book, "01_a", "x = 1").with_suffix(".md")) == []
    assert runs.chapter_after(_md_chapter(book, "02_b", "x = 1", after=["01_a"]).with_suffix(".md")) == ["01_a"]
    with pytest.raises(ValueError, match="robustvae.after must be a list"):
        runs.chapter_after(_md_chapter(book, "03_c", "x = 1", after="01_a").with_suffix(".md"))
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        runs.execute_book(["01"], book=book, runs=tmp_path / "runs", jobs=0)


@pytest.mark.slow
def test_chapters_run_at_once_and_a_chapter_waits_for_the_ones_it_reads(tmp_path):
    book = tmp_path / "book"
    _md_chapter(book, "01_slow", "import time; time.sleep(4); print('one')")
    _md_chapter(book, "02_free", "print('two')")
    _md_chapter(book, "03_reads_1", "print('three')", after=["01_slow"])
    res = {r["chapter"]: r for r in runs.execute_book(["all"], book=book, runs=tmp_path / "runs", jobs=2)}
    assert list(res) == ["01_slow", "02_free", "03_reads_1"]
    assert all(r["status"] == "ok" for r in res.values())
    # 02 ran beside 01 (it started before 01 ended), 03 only after 01 ended
    assert res["02_free"]["started_s"] < res["01_slow"]["finished_s"]
    assert res["03_reads_1"]["started_s"] >= res["01_slow"]["finished_s"]
    for stem, text in (("01_slow", "one"), ("02_free", "two"), ("03_reads_1", "three")):
        assert nbformat.read(book / f"{stem}.ipynb", as_version=4).cells[1].outputs[0]["text"] == text + "\n"
    # chapters that wait for each other are refused, not silently skipped
    _md_chapter(book, "04_x", "x = 1", after=["05_y"])
    _md_chapter(book, "05_y", "x = 1", after=["04_x"])
    with pytest.raises(ValueError, match="wait for each other"):
        runs.execute_book(["04", "05"], book=book, runs=tmp_path / "runs", jobs=2)


def test_the_background_profile_turns_on_chapter_2s_likelihood_ratio(tmp_path):
    """Chapter 2 declares ``background_rate`` off (0) in the book; the ``background`` profile sets it to a
    rate in Ren et al.'s range for images (read from the chapter's source, the ``.md``)."""
    import jupytext
    import nbformat

    nbformat.write(jupytext.read(runs.BOOK / "02_ood.md"), tmp_path / "02_ood.ipynb")
    assert runs.chapter_parameters(tmp_path / "02_ood.ipynb")["background_rate"] == 0.0
    jobs = runs.plan_rerun(["02"], "background", profile="background", book=tmp_path, runs=tmp_path / "runs")
    assert jobs[0].parameters == {"background_rate": 0.2, "strict_claims": False}
    assert 0.1 <= runs.PROFILES["background"]["background_rate"] <= 0.3
    with pytest.raises(ValueError, match="'background_rate' of chapter 02_ood takes a number"):
        runs.plan_rerun(["02"], "x", {"background_rate": "high"}, book=tmp_path, runs=tmp_path / "runs")


def test_the_decoders_profile_turns_on_chapter_2s_decoder_comparison(tmp_path):
    """Chapter 2 declares ``ic_decoders`` off (empty) in the book; the ``decoders`` profile asks for the
    continuous Bernoulli and the discretized logistic, both valid for the chapter's check."""
    import jupytext
    import nbformat

    from robustvae.reports import ood as report

    nbformat.write(jupytext.read(runs.BOOK / "02_ood.md"), tmp_path / "02_ood.ipynb")
    assert runs.chapter_parameters(tmp_path / "02_ood.ipynb")["ic_decoders"] == ()
    jobs = runs.plan_rerun(["02"], "decoders", profile="decoders", book=tmp_path, runs=tmp_path / "runs")
    assert jobs[0].parameters == {"ic_decoders": ("continuous-bernoulli", "discretized-logistic"),
                                  "strict_claims": False}
    assert all(d in report.DECODERS and d != "bernoulli" for d in runs.PROFILES["decoders"]["ic_decoders"])
    with pytest.raises(ValueError, match="'ic_decoders' of chapter 02_ood takes a tuple"):
        runs.plan_rerun(["02"], "x", {"ic_decoders": "discretized-logistic"}, book=tmp_path, runs=tmp_path / "runs")

"""The book pipeline: papermill parameters, jupytext pairing, the table of contents."""

from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.md"))


def _tiny_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('dataset = "mnist-5k"\nseed = 0')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "import robustvae as rv\n"
        "dev = rv.setup(seed=seed, device='cpu', dataset=dataset)\n"
        "print('dataset is', dataset, 'seed is', seed)"
    )
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.slow
def test_papermill_injects_parameters(tmp_path):
    src, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    _tiny_notebook(src)
    pm.execute_notebook(str(src), str(out), parameters={"dataset": "fashion-mnist", "seed": 3},
                        kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    assert "injected-parameters" in nb.cells[1].metadata.tags
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert "dataset is fashion-mnist seed is 3" in text


@pytest.mark.slow
def test_unknown_parameter_value_fails_with_a_clear_message(tmp_path):
    src, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    _tiny_notebook(src)
    with pytest.raises(pm.PapermillExecutionError, match="Unknown value 'mnist-10k' for parameter 'dataset'"):
        pm.execute_notebook(str(src), str(out), parameters={"dataset": "mnist-10k"},
                            kernel_name="python3", progress_bar=False)


@pytest.mark.slow
@pytest.mark.parametrize("chapter", [c.stem for c in CHAPTERS])
def test_chapter_rejects_a_bad_dataset_before_any_work(chapter, tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="Valid values: 'mnist-5k', 'mnist', 'fashion-mnist'"):
        pm.execute_notebook(str(BOOK / f"{chapter}.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"dataset": "svhn"}, kernel_name="python3",
                            cwd=str(BOOK), progress_bar=False)


@pytest.mark.parametrize("chapter", [c.stem for c in CHAPTERS])
def test_chapter_pairs_are_in_sync_and_executed(chapter):
    md = jupytext.read(BOOK / f"{chapter}.md")
    ipynb = nbformat.read(BOOK / f"{chapter}.ipynb", as_version=4)
    src_md = [c.source.strip() for c in md.cells if c.cell_type == "code"]
    src_nb = [c.source.strip() for c in ipynb.cells
              if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    assert src_md == src_nb, f"{chapter}.md and .ipynb differ: run `make book` (jupytext --sync, papermill)"
    code = [c for c in ipynb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged 'parameters'"
    assert all(c.get("execution_count") for c in code), f"{chapter}.ipynb has unexecuted cells"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{chapter}.ipynb stores an error output"


def test_toc_lists_every_chapter_and_config_is_linked():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    for chapter in CHAPTERS:
        assert chapter.stem in files, f"{chapter.stem} is missing from _toc.yml"
    for f in files + [toc["root"]]:
        assert any((BOOK / f"{f}{ext}").exists() for ext in (".md", ".ipynb")), f
    assert (BOOK / "_config.yml").resolve() == (ROOT / "_config.yml").resolve()
    assert (BOOK / "_toc.yml").resolve() == (ROOT / "_toc.yml").resolve()


def test_environment_yml_carries_the_pyproject_pins():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        pins |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins <= set(pip_section), f"missing from environment.yml: {sorted(pins - set(pip_section))}"

"""The package face: lazy, complete, and fast to import."""

import subprocess
import sys
from pathlib import Path

import robustvae as rv

PKG = Path(rv.__file__).parent


def test_import_is_lazy_and_pulls_in_no_torch():
    code = "import sys, robustvae; assert 'torch' not in sys.modules, 'import robustvae imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_module_is_listed_and_every_public_name_resolves():
    files = {p.stem for p in PKG.glob("*.py")} - {"__init__", "__main__"}
    files |= {p.parent.name for p in PKG.glob("*/__init__.py")}  # subpackages (runs)
    assert files == set(rv.SUBMODULES), f"unlisted: {files - set(rv.SUBMODULES)}, missing: {set(rv.SUBMODULES) - files}"
    for name in rv.__all__:
        assert getattr(rv, name) is not None, name
    assert rv.get_vae.__module__ == "robustvae.training" and rv.ood.__name__ == "robustvae.ood"


def test_each_chapter_has_its_figure_and_report_modules_and_their_names_resolve():
    """robustvae.plots and robustvae.reports: one module per chapter, named after its science module."""
    import importlib

    for pkg in (rv.plots, rv.reports):
        files = {p.stem for p in Path(pkg.__file__).parent.glob("*.py")} - {"__init__"}
        assert set(pkg.SUBMODULES) == files
        for name in pkg.SUBMODULES:
            assert name in rv.SUBMODULES, f"{pkg.__name__}.{name} is not named after a science module"
            mod = getattr(pkg, name)
            assert mod is importlib.import_module(f"{pkg.__name__}.{name}") and mod.__doc__, name
            for public in mod.__all__:
                obj = getattr(mod, public)
                assert not callable(obj) or (obj.__doc__ or "").strip(), f"{mod.__name__}.{public} has no docstring"
    assert {"ood", "consistency", "purify", "calibration", "rrobust", "certify", "perturbation",
            "scorecard", "score"} <= set(rv.reports.SUBMODULES)


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rv.nope


def test_the_library_page_is_current_and_lists_every_module():
    """book/library.md ("The robustvae library") is generated from the docstrings: it must not drift."""
    import robustvae
    from tests.scripts import load_script

    mod = load_script("scripts/make_library_page.py")
    text = mod.render()
    assert mod.PAGE.read_text() == text, "book/library.md is stale: run scripts/make_library_page.py"
    for name in robustvae.SUBMODULES:
        assert f"### `robustvae.{name}`" in text
    assert ":func:" not in text and ":class:" not in text, "reStructuredText roles left on a MyST page"

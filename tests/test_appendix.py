"""The appendix "Reproducing this book" is generated from benchmarks/results/: it must not drift."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _make_appendix():
    spec = importlib.util.spec_from_file_location("make_appendix", ROOT / "benchmarks" / "make_appendix.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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

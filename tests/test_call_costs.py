"""benchmarks/call_costs.py: a chapter's cold time split by the cache logs, each second counted once,
and the logs it reads are the ones the caches write."""

import json
import logging
from pathlib import Path

import pytest
import torch

from robustvae import memo

from tests.scripts import load_script


@pytest.fixture(scope="module")
def cc():
    return load_script("benchmarks/call_costs.py")


def _notebook(tmp_path, stderr: list[str], duration=100.0) -> Path:
    cells = [{"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stderr", "text": t}]}
             for t in stderr]
    p = tmp_path / "04_x.ipynb"
    p.write_text(json.dumps({"metadata": {"papermill": {"duration": duration}}, "cells": cells}))
    return p


def test_nested_calls_count_once_and_the_rest_is_what_is_left(cc, tmp_path):
    p = _notebook(tmp_path, [
        "robustvae.cache: trained vae in 30.0 s (vae-0123456789abcdef.pt)\nrobustvae.cache: loaded classifier\n"
        "robustvae.memo: loaded attacks.pgd (computed in 3.0 s) from a.pkl\n",
        "robustvae.memo: computed rrobust.portfolio_margin in 9.0 s (x.pkl) [nested]\n"
        "robustvae.memo: computed scorecard.margin_column in 10.0 s (y.pkl)\n",
        "robustvae.memo: computed attacks.pgd in 5.5 s (z.pkl)\nrobustvae.memo: computed attacks.pgd in 4.5 s (w.pkl)\n",
    ])
    r = cc.chapter_costs(p)
    assert r["training_s"] == 30.0 and r["computed_s"] == 20.0 and r["other_s"] == 50.0
    assert r["calls"]["attacks.pgd"] == {"n": 2, "s": 10.0}
    assert "rrobust.portfolio_margin" not in r["calls"] and r["loaded"] == 1


def test_the_patterns_match_what_the_result_cache_logs(cc, tmp_path, caplog):
    @memo.memoize
    def twice(x):
        return 2 * x

    with caplog.at_level(logging.INFO, logger="robustvae.memo"):
        twice(torch.ones(2))
        twice(torch.ones(2))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert len(cc.COMPUTED.findall(text)) == 1 and len(cc.LOADED.findall(text)) == 1


def test_a_call_inside_a_cached_call_is_logged_as_nested(cc, caplog):
    @memo.memoize
    def inner(x):
        return x + 1

    @memo.memoize
    def outer(x):
        return inner(x) * 2

    with caplog.at_level(logging.INFO, logger="robustvae.memo"):
        outer(torch.ones(2))
    found = cc.COMPUTED.findall("\n".join(r.getMessage() for r in caplog.records))
    assert [(n.rsplit(".", 1)[-1], bool(nested)) for n, _, _, nested in found] == [("inner", True), ("outer", False)]


def test_main_writes_the_table_and_names_chapters_that_loaded_results(cc, tmp_path, capsys):
    """The command line end to end (a leftover name once crashed it after every cold run of time_book.py)."""
    book = tmp_path / "book"
    book.mkdir()
    _notebook(book, ["robustvae.cache: trained vae in 30.0 s (vae-0123456789abcdef.pt)\n"
                     "robustvae.memo: loaded attacks.pgd (computed in 3.0 s) from a.pkl\n"])
    out = tmp_path / "costs.json"
    assert cc.main(["--book", str(book), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["chapters"]["04_x"]["training_s"] == 30.0 and res["chapters_loading_results"] == ["04_x"]
    assert "04_x loaded cached results" in capsys.readouterr().out

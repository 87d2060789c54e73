"""Chapter 10's table, numbers, shell-example plumbing and figure (robustvae.reports.score,
robustvae.plots.score) on tiny inputs whose right answers are known by hand."""

import matplotlib

matplotlib.use("Agg")

import math
import subprocess
import sys

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from robustvae import scorecard as sc
from robustvae.plots import score as plots
from robustvae.reports import score as report
from robustvae.score import ModelCheck


def _card():
    """Two models: "mine" (no certificate) and "book" (every column)."""
    mine = {c: sc.Estimate(1.0, 0.5, 1.5) for c in sc.COLUMNS}
    mine["elbo"] = sc.Estimate(-120.04, -121.0, -119.0)
    mine["certified"] = sc.Estimate.missing("no lipschitz_constants()")
    book = {c: sc.Estimate(2.0, 1.75, 2.25) for c in sc.COLUMNS}
    book["margin"] = sc.Estimate(3.14159, 3.0, 3.3)
    return sc.table({"mine": mine, "book": book})


def test_check_text_lists_the_filled_parts_and_the_empty_columns():
    found = ModelCheck(16, {"elbo": "generic", "iwae": "generic too"}, {"certified": "no constants"})
    assert report.check_text(found).splitlines() == [
        "latent size: 16",
        "parts the model lacks, and what the scorecard uses instead:",
        "  elbo: generic",
        "  iwae: generic too",
        "empty columns:",
        "  certified: no constants",
    ]


def test_comparable_reference_only_for_the_books_setting(monkeypatch):
    rows = pd.DataFrame({"x": [1]}, index=["VAE"])
    monkeypatch.setattr(report, "reference_rows", lambda: (rows, "from chapter 9"))
    assert report.comparable_reference("mnist-5k", "book") == (rows, "from chapter 9")
    for dataset, sizes in (("mnist-5k", "smoke"), ("fashion-mnist", "book")):
        ref, note = report.comparable_reference(dataset, sizes)
        assert ref is None and note == "No reference rows for this dataset or sizes."


def test_estimate_and_interval_table():
    card = _card()
    assert report.estimate(card, "book", "margin") == (3.14159, 3.0, 3.3)
    table = report.interval_table(card)
    assert table.index.name == "model" and list(table.index) == ["mine", "book"]
    assert list(table.columns) == [report.SHORT[c] for c in sc.COLUMNS]
    nbsp = "\u00a0"
    assert table.loc["mine", "ELBO (nats)"] == f"-120.0 [-121.0,{nbsp}-119.0]"  # one decimal
    assert table.loc["book", "emp. margin"] == f"3.14 [3.00,{nbsp}3.30]"  # two decimals
    assert table.loc["mine", "cert. margin"] == "–"  # missing: a dash


def test_numbers_by_glue_name_and_missing_rows():
    out = report.numbers(_card(), {"mlp": "mine", "vae": "book", "ghost": "not a row"})
    assert out["elbo_mlp"] == -120.04 and out["elbo_mlp_lo"] == -121.0 and out["elbo_mlp_hi"] == -119.0
    assert (out["margin_vae"], out["margin_vae_lo"], out["margin_vae_hi"]) == (3.14159, 3.0, 3.3)
    assert out["pur_vae"] == 2.0 and out["det_mlp_hi"] == 1.5 and out["mse_vae_lo"] == 1.75
    assert len(out) == 5 * 2 * 3 and not any("ghost" in k for k in out)


def test_run_score_command_puts_cwd_on_the_path_and_raises_on_failure(monkeypatch, tmp_path):
    calls = []

    def fake_run(cmd, cwd, env, capture_output, text, timeout):
        calls.append((cmd, cwd, env))
        return subprocess.CompletedProcess(cmd, 0 if "--ok" in cmd else 3, "done (1.5 s)\n", "x" * 5000 + "END")

    monkeypatch.setattr(report.subprocess, "run", fake_run)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    done = report.run_score_command(["--ok"], cwd=tmp_path)
    cmd, cwd, env = calls[0]
    assert cmd == [sys.executable, "-m", "robustvae", "score", "--ok"] and cwd == tmp_path
    assert env["PYTHONPATH"].split(":") == [str(tmp_path), "/elsewhere"]
    assert report.printed(done) == "done"  # the timing is left out
    with pytest.raises(RuntimeError, match=r"failed \(3\)") as err:
        report.run_score_command(["--bad"], cwd=tmp_path)
    assert str(err.value).endswith("END") and len(str(err.value)) < 3100  # the end of stderr only


MODULE = '''
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(784, 4)

    def encode(self, x):
        h = self.lin(x.flatten(1))
        return h[:, :2], h[:, 2:]


def make_vae():
    return Tiny()
'''


def _write(tmp_path, page, weights_from):
    (tmp_path / "tiny.py").write_text(MODULE)
    torch.save(weights_from.state_dict(), tmp_path / "tiny.pt")
    (tmp_path / "report.html").write_text(page)
    (tmp_path / "report.json").write_text('{"model": "make_vae"}')


def test_check_command_output(tmp_path):
    torch.manual_seed(0)
    ns = {}
    exec(MODULE, ns)
    vae, other = ns["make_vae"]().eval(), ns["make_vae"]().eval()
    x = torch.rand(3, 1, 28, 28)
    _write(tmp_path, '<img src="data:image/png;base64,AAAA">', vae)
    got = report.check_command_output(tmp_path, vae, x, module="tiny")
    assert got == {"same_model": True, "self_contained": True, "record": {"model": "make_vae"}}
    _write(tmp_path, '<img src="data:image/png;base64,AAAA"><a href="https://x.org">', other)
    got = report.check_command_output(tmp_path, vae, x, module="tiny")
    assert got["same_model"] is False and got["self_contained"] is False
    (tmp_path / "report.html").write_text("<p>no figure</p>")
    assert report.check_command_output(tmp_path, other, x, module="tiny")["self_contained"] is False


def test_beside_book_figure():
    card = _card()
    fig = plots.beside_book(card, highlight="mine", book="book", what="the tiny VAE")
    assert len(fig.axes) == 8
    assert fig._suptitle.get_text().startswith("The tiny VAE (top row) beside the book's models")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "ELBO (nats)\n(higher is better)" and titles[1] == "pixel MSE\n(lower is better)"
    elbo = fig.axes[0]
    points = sorted(tuple(line.get_xydata()[0]) for line in elbo.lines if line.get_marker() == "o")
    assert points == [(-120.04, 1.0), (2.0, 0.0)]  # "mine" on the top row (y = 1)
    assert [line.get_xdata()[0] for line in elbo.lines if line.get_linestyle() == ":"] == [2.0]  # the book's VAE
    bars = sorted(tuple(map(tuple, seg)) for c in elbo.collections for seg in c.get_segments())
    assert bars == [((-121.0, 1.0), (-119.0, 1.0)), ((1.75, 0.0), (2.25, 0.0))]  # the 95% intervals
    cert = fig.axes[7]
    assert [t.get_text() for t in cert.texts] == ["none"]  # "mine" has no certificate
    labels = {lab.get_text(): lab for lab in fig.axes[0].get_yticklabels()}
    assert labels["mine"].get_fontweight() == "bold" and labels["book"].get_fontweight() != "bold"
    plt.close(fig)
    assert not math.isnan(card.loc["book", ("certified", "value")])

"""Write the appendix "Reproducing this book" (``book/appendix_reproducing.md``) from measured results.

    .venv/bin/python benchmarks/make_appendix.py            # (re)write the appendix
    .venv/bin/python benchmarks/make_appendix.py --check    # exit 1 if the appendix is stale

Every number in the appendix comes from a file under ``benchmarks/results/``:

- ``cpu2_book.json``: ``benchmarks/bench_book.py`` on the 2-core reference machine (each
  chapter's wall time, CPU time and peak memory with an empty and a warm model cache, library
  versions);
- ``cpu2_throughput.json``: ``benchmarks/bench_throughput.py --device cpu`` on that machine;
- ``h100_throughput.json`` (optional): the same script on a lent H100 (``benchmarks/gpu_smoke.sh``);
- ``sweep_ood_seeds.csv``: a sweep of chapter 2 over two seeds
  (``python -m robustvae.runs sweep 02 --name appendix-ood-seeds --grid seed=0,1``, its
  ``results.csv`` copied here), i.e. the OOD claims on mnist-5k and on Fashion-MNIST per seed.

- ``cpu2_parametrisations.json`` (optional): ``benchmarks/bench_parametrisations.py`` on the 2-core
  machine (one training step of chapter 7's networks per weight parametrisation);
- ``rerun_full-fashion.csv`` (optional): chapters rerun with the ``full-fashion`` profile (the book's
  sizes on Fashion-MNIST), its ``results.csv`` copied here;
- ``background_lr.csv`` (optional): ``benchmarks/background_lr.py`` on chapter 2's ``background`` rerun
  (the likelihood ratio against a background model);
- ``decoder_ic.csv`` (optional): ``benchmarks/decoder_ic.py`` on chapter 2's ``decoders`` rerun (the raw
  likelihood and input complexity under three decoder likelihoods);
- ``longer_set.csv`` (optional): ``benchmarks/longer_set.py`` on chapter 8's ``longer-set`` rerun (a
  perturbation set trained longer, beside the book's);
- ``paper_layers.csv`` (optional): ``benchmarks/paper_layers.py`` on chapter 7's ``paper-layers`` rerun
  (Björck layers at equal constants, standard VAEs of matched reconstruction error);
- ``rerun_smoke_<dataset>.csv`` (optional): every chapter rerun at the ``smoke`` profile on each
  offline dataset (``python -m robustvae.runs rerun all --name smoke-<dataset> --profile smoke
  -p dataset=<dataset>``, its ``results.csv`` copied here): status, time and claims per chapter.

``tests/test_appendix.py`` runs ``--check``: the page cannot drift from the files it reports.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
APPENDIX = ROOT / "book" / "appendix_reproducing.md"
BUDGET_MIN = 20

#: The chapter-2 numbers shown from the sweep, with the claim each one carries in the chapter.
SWEEP_COLUMNS = {
    "best1_auroc": ("best VAE score, mnist-5k vs Fashion-MNIST", ">= 0.95", lambda v: v >= 0.95),
    "like2_auroc": ("-log p(x), Fashion-MNIST vs MNIST", "< 0.5 (the failure)", lambda v: v < 0.5),
    "ic2_auroc": ("input complexity, Fashion-MNIST vs MNIST", ">= 0.95", lambda v: v >= 0.95),
    "ceil2_auroc": ("Bernoulli-ceiling distance, Fashion-MNIST vs MNIST", ">= 0.95", lambda v: v >= 0.95),
}


def _load_json(name: str, required: bool = True) -> dict | None:
    path = RESULTS / name
    if not path.exists():
        if required:
            raise FileNotFoundError(f"{path} is missing: run the benchmark that writes it (see this script's docstring).")
        return None
    return json.loads(path.read_text())


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _chapter_table(book: dict) -> tuple[str, dict]:
    runs = book["runs"]
    chapters = list(dict.fromkeys(r["chapter"] for r in runs))
    by = {(r["mode"], r["chapter"]): r for r in runs}
    rows, totals = [], {}
    for ch in chapters:
        cold, warm = by.get(("book-cold", ch)), by.get(("warm", ch))
        cell = lambda r, k, fmt: (fmt.format(r[k]) + ("" if r["ok"] else " (failed)")) if r else "-"
        rows.append([f"`{ch}`", cell(cold, "wall_s", "{:.0f}"), cell(cold, "peak_rss_mib", "{:.0f}"),
                     cell(warm, "wall_s", "{:.0f}"), cell(warm, "peak_rss_mib", "{:.0f}")])
    for mode in ("book-cold", "warm"):
        sel = [r for r in runs if r["mode"] == mode]
        if sel:
            totals[mode] = sum(r["wall_s"] for r in sel)
    rows.append(["**whole book**", f"**{totals.get('book-cold', 0):.0f}**", "",
                 f"**{totals.get('warm', 0):.0f}**" if "warm" in totals else "-", ""])
    header = ["chapter", "empty cache: wall (s)", "peak memory (MiB)", "warm cache: wall (s)", "peak memory (MiB)"]
    return _table(header, rows), totals


def _throughput_table(cpu: dict, gpu: dict | None) -> str:
    labels = {
        "classifier_train_img_per_s": "classifier training (images/s)",
        "vae_train_img_per_s": "VAE training (images/s)",
        "fgsm_img_per_s": "FGSM (images/s)",
        "pgd40_img_per_s": "PGD, 40 steps (images/s)",
        "iwae64_img_per_s": "IWAE bound, k = 64 (images/s)",
        "purify_reconstruct_img_per_s": "purification: one reconstruction (images/s)",
        "purify_reconstruct_8samples_img_per_s": "purification: mean of 8 reconstructions (images/s)",
        "purify_latent_search_15x2_img_per_s": "purification: latent search, 15 steps x 2 starts (images/s)",
        "pgd15_on_purified_img_per_s": "PGD, 15 steps, through the purifier (images/s)",
        "fgsm_time_ratio_vs_torchattacks": "FGSM: our time / torchattacks' time",
        "pgd_time_ratio_vs_torchattacks": "PGD: our time / torchattacks' time (target <= 1.1)",
    }
    header = ["measure", f"CPU, {cpu.get('threads', '?')} threads"]
    if gpu:
        header.append(gpu.get("gpu", "GPU"))
    rows = []
    for key, label in labels.items():
        if key not in cpu and not (gpu and key in gpu):
            continue
        fmt = (lambda v: f"{v:.3f}") if "ratio" in key else (lambda v: f"{v:,.0f}")
        row = [label, fmt(cpu[key]) if key in cpu else "-"]
        if gpu:
            row.append(fmt(gpu[key]) if key in gpu else "not measured")
        rows.append(row)
    return _table(header, rows)


def _sweep_table(path: Path) -> str:
    with path.open() as f:
        records = list(csv.DictReader(f))
    if not records:
        raise ValueError(f"{path} holds no grid points")
    header = ["seed", "status"] + [f"{label} (claim {claim})" for label, claim, _ in SWEEP_COLUMNS.values()]
    rows = []
    for rec in records:
        row = [rec.get("seed", "?"), rec.get("status", "?")]
        for key, (_, _, holds) in SWEEP_COLUMNS.items():
            raw = rec.get(key, "")
            if raw in ("", None):
                row.append("-")
                continue
            v = float(raw)
            row.append(f"{v:.3f} {'holds' if holds(v) else '**fails**'}")
        rows.append(row)
    return _table(header, rows)


#: The datasets of the smoke reruns shown, in order (files ``rerun_smoke_<dataset>.csv``).
SMOKE_DATASETS = ("mnist-5k", "fashion-mnist")


def _smoke_table() -> tuple[str, str] | None:
    """Status, wall time and claims of every chapter, per dataset, from the smoke reruns, and a
    sentence with the totals."""
    return _reruns_table({d: RESULTS / f"rerun_smoke_{d}.csv" for d in SMOKE_DATASETS})


#: Numbers shown beside the full-dataset reruns: chapter -> [(glued name, label)].
KEY_NUMBERS = {
    "01_models": [("test_acc", "classifier test accuracy"), ("elbo_mean", "test ELBO (nats)")],
    "02_ood": [("like1_auroc", "AUROC of -log p(x), this dataset vs the other"),
               ("best1_auroc", "best VAE score's AUROC")],
    "05_calibration": [("rho_conf", "Spearman(recon. MSE, confidence)"), ("ece_none", "clean ECE")],
}


def _reruns_table(files: dict[str, Path], key_numbers: dict | None = None) -> tuple[str, str] | None:
    """Status, wall time and claims of every chapter in the reruns' result files (one column pair
    per run label; a missing file is skipped), and a sentence with the totals. With
    ``key_numbers`` (chapter -> [(glued name, label)]), a last column shows those values."""
    found = {d: p for d, p in files.items() if p.exists()}
    if not found:
        return None
    by: dict[str, dict[str, dict]] = {}
    for d, path in found.items():
        with path.open() as f:
            for rec in csv.DictReader(f):
                by.setdefault(rec["chapter"], {})[d] = rec
    header = ["chapter"]
    for d in found:
        header += [f"{d}: status, wall (s)", f"{d}: claims failing (of checked)"]
    if key_numbers is not None:
        header.append("numbers the chapter recorded")
    rows = []
    for ch in sorted(by):
        row = [f"`{ch}`"]
        for d in found:
            rec = by[ch].get(d)
            if rec is None:
                row += ["not run", "-"]
                continue
            row.append(f"{rec['status']}, {float(rec['wall_s']):.0f}")
            if rec.get("claims_checked", "") == "":
                row.append("-")
            else:
                failed = int(float(rec["claims_failed"]))
                which = rec.get("claims_failing", "")
                row.append(f"{failed} of {int(float(rec['claims_checked']))}"
                           + (f" ({which})" if failed and which not in ("", "none") else ""))
        if key_numbers is not None:
            shown = [f"{label} {float(rec[k]):.3f}" for d in found for rec in [by[ch].get(d) or {}]
                     for k, label in key_numbers.get(ch, []) if rec.get(k, "") != ""]
            row.append("; ".join(shown) or "-")
        rows.append(row)
    totals = []
    for d in found:
        recs = [by[ch][d] for ch in by if d in by[ch]]
        ok = sum(r["status"] == "ok" for r in recs)
        checked = sum(int(float(r["claims_checked"])) for r in recs if r.get("claims_checked", "") != "")
        failed = sum(int(float(r["claims_failed"])) for r in recs if r.get("claims_failed", "") != "")
        wall = sum(float(r["wall_s"]) for r in recs) / 60
        totals.append(f"on {d}, {ok} of {len(recs)} chapters ran to the end in {wall:.0f} min and "
                      f"{failed} of {checked} claims failed")
    return _table(header, rows), "In these runs " + "; ".join(totals) + "."


def _parallel_section() -> list[str]:
    """The book's wall time as ``make book`` runs it (``cpu2_book_parallel.json``, ``time_book.py``)
    and the thread measurement behind it (``cpu2_threads.json``, ``bench_threads.py``)."""
    res = _load_json("cpu2_book_parallel.json", required=False)
    if not res:
        return []
    modes = [m for m in ("cold", "warm") if m in res]
    rows = []
    for ch in res["cold"]["chapters"]:
        row = [f"`{ch}`"]
        for m in modes:
            c = res[m]["chapters"].get(ch)
            row += [f"{c['started_s']:.0f}-{c['finished_s']:.0f}", f"{c['wall_s']:.0f}"] if c else ["-", "-"]
        rows.append(row)
    header = ["chapter"] + [h for m in modes for h in (f"{m}: from-to (s)", f"{m}: wall (s)")]
    ref = sum(res["reference_s"]) / len(res["reference_s"])
    lines = [
        "## How long the book takes",
        "",
        f"`benchmarks/time_book.py` runs `python -m robustvae.runs book` as `make book` does (commit",
        f"`{res.get('commit', '?')}`, {res['machine']['cpus']} cores): {res['jobs']} chapters at once, each",
        "on one thread, started chapter 1 first and then the longest first; a chapter that reads",
        "another's notebook waits for it. *Cold*: from an empty model cache, as a new reader's first",
        "`make book`"
        + (" (this run's cache was not empty)" if not res.get("empty_cache", True) else "")
        + "; *warm*: every chapter again with every model and every cached result (attacks, margin"
        " searches, scorecard columns: `robustvae.memo`) loaded, as a reader's rerun does."
        " Seconds since the first start:",
        "",
        _table(header, rows),
        "",
    ]
    for m in modes:
        r = res[m]
        verdict = "within" if r["within_budget"] else "**over**"
        lines.append(
            f"- {m.capitalize()}: {r['wall_s'] / 60:.1f} minutes, {r['units']:.0f} reference workloads "
            f"({ref:.2f} s each here); the budget of the slower machine of our kind is "
            f"{res['budget'][m + '_units']:.0f}: {verdict}."
            + (f" The guide's {res['budget']['guide_s'] // 60} minutes on this machine: "
               f"{'within' if r['within_guide'] else '**over**'}." if "within_guide" in r else ""))
    if "warm" in res:
        changed = res["warm"].get("glued_values_that_changed", [])
        lines.append(f"- The warm run gave the same book: {res['warm'].get('glued_values_compared', 0)} "
                     "glued values, " + ("all identical to the cold run's." if not changed else
                                         f"**{len(changed)} differ**: {', '.join(changed[:10])}."))
    lines.append("")
    thr = _load_json("cpu2_threads.json", required=False)
    if thr:
        two = thr["two_sets_s"]
        lines += [
            "Why one thread per chapter: `benchmarks/bench_threads.py` times the book's workloads",
            "(training, PGD through a purifier and on the classifier, an L-BFGS-B margin search) in one",
            f"process on two threads, and in two one-thread processes at once. Two workload sets took",
            f"{two['2 threads']:.1f} s on two threads, one after the other, and {two['2 x 1 thread']:.1f} s as two",
            f"one-thread processes side by side: {thr['throughput_2x1_over_2threads']:.2f}x the throughput.",
            "",
        ]
    return lines


def _call_costs_section() -> list[str]:
    """Each chapter's cold time split by the book's own logs (``cpu2_call_costs.json``, ``call_costs.py``)."""
    res = _load_json("cpu2_call_costs.json", required=False)
    if not res:
        return []
    rows, tops = [], []
    total = {"wall_s": 0.0, "training_s": 0.0, "computed_s": 0.0, "other_s": 0.0}
    for ch, c in res["chapters"].items():
        rows.append([f"`{ch[:2]}`", *[f"{c[k]:.0f}" for k in total]])
        for k in total:
            total[k] += c[k]
        items = [(f"training {m}", s, 1) for m, s in c["training"].items()]
        items += [(f"`{name}`", v["s"], v["n"]) for name, v in c["calls"].items()]
        items.sort(key=lambda t: -t[1])
        if items:
            tops.append(f"{ch[:2]}: " + ", ".join(f"{n} {s:.0f} s" + (f" ({k} calls)" if k > 1 else "")
                                                 for n, s, k in items[:3]))
    rows.append(["all", *[f"**{total[k]:.0f}**" for k in total]])
    lines = [
        "### Where a cold run spends its time",
        "",
        "The model cache logs the training time of every model it trains and the result cache",
        "(`robustvae.memo`) the time of every attack, margin search and estimate it computes;",
        "`benchmarks/call_costs.py` reads those lines from the notebooks of the cold run above",
        "(`" + res.get("commit", "?") + "`) and splits each chapter's wall time (seconds, one thread): training,",
        "cached computations, and the rest (loading data and models, uncached estimates, figures,",
        "kernel start).",
        "",
        _table(["ch.", "wall", "training", "attacks and estimates", "rest"], rows),
        "",
        "The three largest items of each chapter:",
        "",
        *[f"- {t}" for t in tops],
        "",
    ]
    shared = [ch[:2] for ch in res.get("chapters_loading_results", [])]
    if shared:
        lines += [f"Chapter{'s' if len(shared) > 1 else ''} {', '.join(shared)} loaded results that an earlier "
                  "chapter of the same run had computed with the same inputs (the result cache works "
                  "across chapters), so part of their work is counted where it was done.", ""]
    return lines


def _before_after_section() -> list[str]:
    """Each chapter's cold wall time before and after the last round of savings, in seconds and in
    reference workloads (``cpu2_call_costs_before.json``, the cold run before it, with the reference
    workload timed after it; ``cpu2_call_costs.json`` and ``cpu2_book_parallel.json``: the run above)."""
    before = _load_json("cpu2_call_costs_before.json", required=False)
    after = _load_json("cpu2_call_costs.json", required=False)
    par = _load_json("cpu2_book_parallel.json", required=False)
    if not before or not after or not par or "reference_s" not in before:
        return []
    ref_b = float(before["reference_s"])
    ref_a = sum(par["reference_s"]) / len(par["reference_s"])
    rows, tot_b, tot_a = [], 0.0, 0.0
    for ch, a in after["chapters"].items():
        b = before["chapters"].get(ch)
        if b is None:
            continue
        ub, ua = b["wall_s"] / ref_b, a["wall_s"] / ref_a
        tot_b, tot_a = tot_b + ub, tot_a + ua
        rows.append([f"`{ch[:2]}`", f"{b['wall_s']:.0f}", f"{a['wall_s']:.0f}", f"{ub:.0f}", f"{ua:.0f}",
                     f"{ub / ua:.2f}x"])
    rows.append(["all", "", "", f"**{tot_b:.0f}**", f"**{tot_a:.0f}**", f"**{tot_b / tot_a:.2f}x**"])
    return [
        "### Before and after the last round of savings",
        "",
        f"Each chapter's cold wall time (one thread, two chapters at once) in the cold run of commit",
        f"`{before.get('commit', '?')}` and in the run above (`{after.get('commit', '?')}`). The two runs",
        f"met the machine at different speeds (the reference workload took {ref_b:.2f} s after the first",
        f"and {ref_a:.2f} s around the second: processes of other sessions share the cores), so the",
        "comparison is in reference workloads; a chapter's ratio carries that normalisation's noise",
        "(the reference is one two-thread training loop), which is why chapters that changed little",
        "land on either side of 1. The savings: channels-last feature maps (below, timed side by side),",
        "and smaller default sizes where the chapter says so (chapter 4 attacks at one $L_2$ radius",
        "instead of two and purifier (b) averages 4 reconstructions instead of 8; chapter 6's beta-VAEs",
        "and beta-TCVAE train 10 epochs instead of 15 and its margin grids have 8 radii and 5",
        "bisection steps instead of 11 and 4; chapter 9 follows chapter 6).",
        "",
        _table(["ch.", "before (s)", "after (s)", "before (units)", "after (units)", "ratio"], rows),
        "",
    ]


def _pinned_times_section() -> list[str]:
    """Chapter times with the pinned numerics (``cpu2_book_pinned.json``), if measured."""
    res = _load_json("cpu2_book_pinned.json", required=False)
    if not res:
        return []
    rows = [[f"`{ch}`", f"{res['cold_s'][ch]:.0f}", f"{res['warm_s'].get(ch, float('nan')):.0f}"]
            for ch in sorted(res["cold_s"])]
    cold, warm = res["total_cold_s"] / 60, res["total_warm_s"] / 60
    verdict = "within" if cold <= BUDGET_MIN else "**over**"
    return [
        "The table above was measured before the numerics were pinned (next section), on a faster",
        f"machine of our kind. With the pins (commit `{res['commit']}`), on a slower one: *cold*, {res['cold']};",
        f"*warm*, {res['warm']}.",
        "",
        _table(["chapter", "cold (s)", "warm (s)"], rows),
        "",
        f"Cold: {cold:.1f} minutes ({verdict} the {BUDGET_MIN}-minute budget); warm: {warm:.1f} minutes.",
        "",
    ]


def _profile_section() -> list[str]:
    """Where the time goes (``profile/summary.json`` from ``benchmarks/profile_book.py``)."""
    path = RESULTS / "profile" / "summary.json"
    if not path.exists():
        return []
    res = json.loads(path.read_text())
    cats = ["training", "attacks", "monte carlo", "scores", "data", "startup", "other"]
    heads = ["train", "attack", "MC", "scores", "data", "start", "other"]
    rows, tops = [], []
    for ch, c in res["chapters"].items():
        top = next(iter(c["details"]), "")
        rows.append([f"`{ch[:2]}`", f"{c['wall_s']:.0f}" if c.get("wall_s") else "-",
                     *[f"{100 * c['share'].get(k, 0):.0f}%" for k in cats]])
        tops.append(f"{ch[:2]} `{top.split(': ')[-1]}`")
    hot = [[f"`{k}`", f"{v / res.get('rate', 20):.0f}"] for k, v in list(res["hot_book_functions"].items())[:10]]
    ref = res.get("reference_mean_s")
    lines = [
        "## Where the time goes",
        "",
        f"`benchmarks/profile_book.py` ran every chapter ({res['mode']} cache, commit `{res.get('commit', '?')}`) "
        "under py-spy, sampling",
        "the chapter's kernel 20 times a second; each sample is charged to the outermost book",
        "function on its stack that names a kind of work (training a model, an attack, a",
        "Monte-Carlo estimate, a score or metric, loading data, starting up). Wall time in seconds, then the share of",
        "the kernel's samples per kind:",
        "",
        _table(["ch.", "wall (s)", *heads], rows),
        "",
        "The largest single item of each chapter: " + "; ".join(tops) + ".",
        "",
        *([res["note"], ""] if res.get("note") else []),
        "The book's functions with the most time (inclusive, seconds, all chapters):",
        "",
        _table(["function (module)", "seconds"], hot),
        "",
    ]
    if ref:
        verdict = "within" if res.get("within_budget") else "**over**"
        lines += [
            f"The whole book took {res['total_s'] / 60:.1f} minutes, {res['normalised_total']:.0f} times the",
            f"reference workload (a fixed VAE training loop timed in the same run: {ref:.1f} s here). The",
            f"budget, {res['budget_s_on_slow_machine'] / 60:.0f} minutes on the slower machine of our kind, is",
            f"{res['budget_normalised']:.0f} reference workloads: this run is {verdict} it.",
            "",
        ]
    return lines


def _savings_section() -> list[str]:
    """Each saving timed against the code it replaced (``cpu2_savings.json``, ``bench_savings.py``)."""
    res = _load_json("cpu2_savings.json", required=False)
    if not res:
        return []
    rows = []
    for name, v in res["savings"].items():
        extra = ""
        if "same_images_fooled" in v:
            extra = "same images fooled" if v["same_images_fooled"] else "**different images fooled**"
        rows.append([name, f"{v['old_median_s']:.2f}", f"{v['new_median_s']:.2f}", f"{v['ratio']:.2f}x", extra])
    return [
        "### What each saving buys",
        "",
        "`benchmarks/bench_savings.py` times each change against the code it replaced, the two",
        "alternating in one process (median of the repeats; seconds):",
        "",
        _table(["work", "before", "after", "ratio", "note"], rows),
        "",
        "Freezing fooled images is measured but not used by the book: it keeps every verdict on the",
        "attacked model, but returns each fooled image at its first fooling step, and such images",
        "transfer worse (chapter 4's oblivious attack, chapter 9's detection column), so",
        "`attacks.pgd` freezes only when asked (`freeze_success=True`).",
        "",
    ]


def _layout_section() -> list[str]:
    """Channels-last feature maps against NCHW, side by side (``cpu2_layout.json``, ``bench_layout.py``)."""
    res = _load_json("cpu2_layout.json", required=False)
    if not res:
        return []
    rows = [[name, f"{v['old_s']:.3f}", f"{v['new_s']:.3f}", f"{v['ratio']:.2f}x"]
            for name, v in res["workloads"].items()]
    agree = res["agreement"]
    return [
        "### Channels-last feature maps",
        "",
        "The classifier and the VAE's encoder and decoder store their convolution weights channels",
        "last and feed them channels-last feature maps (`robustvae.models.CHANNELS_LAST`): the same",
        "arithmetic in the order oneDNN's kernels are fastest at. `benchmarks/bench_layout.py` times",
        "the old layout (NCHW) and the new alternately in one process under the book's pinned",
        f"numerics (median of {res['repeats']} repeats; seconds):",
        "",
        _table(["work", "NCHW", "channels last", "ratio"], rows),
        "",
        f"The two layouts compute the same functions: the largest difference of the classifier's",
        f"logits was {agree['classifier logits']:.1e} and of the decoder's {agree['decoder logits']:.1e}",
        "(rounding; `tests/test_layout.py` checks both layouts against functional NCHW forms).",
        "",
    ]


def _numerics_section() -> list[str]:
    """The pinned numerics and what they were measured to do (``cpu2_numerics.json``)."""
    res = _load_json("cpu2_numerics.json", required=False)
    lines = [
        "## The same numbers on every machine",
        "",
        "Every kernel that computes the book's numbers runs with pinned numerics",
        "(`robustvae/numerics.py`): 1 intra-op thread, and PyTorch, oneDNN, MKL and NumPy capped at",
        "AVX2 kernels, so every x86-64 machine with AVX2 trains the same weights to the bit. The",
        "notebook tests compare integers and text exactly and floats within a relative 1e-4 plus one",
        "unit in the last printed digit; figures by a fingerprint of their data. CI runs the tests",
        "with `OMP_NUM_THREADS=2 ATEN_CPU_CAPABILITY=default`, as another machine, from an empty cache.",
        "",
    ]
    if not res:
        return lines
    rows = [[r["machine"], r["mode"], f"`{r['hash']}`", f"{r['loss']:.6f}"] for r in res["runs"]]
    lines += [
        f"`benchmarks/bench_numerics.py` trains one workload ({res['workload']}) under stand-ins",
        "for other machines, with the pins and without them (`ROBUSTVAE_NUMERICS=native`):",
        "",
        _table(["stand-in", "numerics", "weights (hash)", "final loss"], rows),
        "",
        f"With the pins the weights are {'identical' if res['pinned_identical_across_machines'] else '**not identical**'}"
        f" on every stand-in; without them the {len(_stand_ins(res))} stand-ins train "
        f"{res['native_distinct_weights']} different sets of weights.",
        "",
    ]
    if "cost_ratios" in res:
        lines[-2] += (f" The pins cost {res['cost_ratio_pinned_over_native_median']:.2f}x the wall time of the "
                      f"reference machine's native (AVX-512) kernels on that workload (median of "
                      f"{len(res['cost_ratios'])} alternating runs).")
    return lines


def _stand_ins(res: dict) -> list[str]:
    return sorted({r["machine"] for r in res["runs"]})


def _csv_commit(path: Path) -> str:
    """The commit a results table records in its first line (``# commit abc123; ...``), else ``?``."""
    first = path.read_text().splitlines()[0]
    return first.split("commit ")[-1].split(";")[0] if first.startswith("#") else "?"


def _rerun_header(path: Path) -> dict[str, str]:
    """The first line of a profile's table (``seed_findings.profile_header``), parsed: ``commit`` (the
    table's), ``ran`` (the rerun's commit), ``wall`` (its chapter wall time) and ``detail`` (what follows
    the profile's name, in parentheses); ``?`` for what the line lacks."""
    first = path.read_text().splitlines()[0]
    # "# commit HEAD; rerun on commit RAN, chapter wall W s; --profile NAME (DETAIL)"
    return {
        "commit": first.split("commit ", 1)[1].split(";")[0] if first.startswith("# commit ") else "?",
        "ran": first.split("rerun on commit ", 1)[1].split(",")[0] if "rerun on commit " in first else "?",
        "wall": first.split("chapter wall ", 1)[1].split(";")[0] if "chapter wall " in first else "?",
        "detail": first.split(" (", 1)[1].rstrip(")") if "--profile" in first and " (" in first else "?",
    }


def _seeds_section() -> list[str]:
    """Do the findings hold across seeds? (``seeds_findings.csv`` from ``seed_findings.py``)."""
    path = RESULTS / "seeds_findings.csv"
    if not path.exists():
        return []
    commit = _csv_commit(path)
    df = pd.read_csv(path, comment="#")
    seeds = [c for c in df.columns if c.startswith("seed_")]
    names = ", ".join(c.split("_")[1] for c in seeds)
    rows = []
    for ch, g in df[df["kind"] == "finding"].groupby("chapter", sort=True):
        held = g["held"].str.split(" of ")
        every = sum(int(a) == int(b) and int(b) == len(seeds) for a, b in held)
        rows.append([f"`{ch}`", str(len(g)), str(every),
                     str(sum(int(a) < int(b) for a, b in held)),
                     str(sum(int(b) < len(seeds) for a, b in held))])
    not_all = df[(df["kind"] == "finding") & df["held"].str.split(" of ").apply(lambda t: t[0] != t[1])]
    detail = [[f"`{r.chapter[:2]}` #{r.number}", r.claim.replace("|", "/"), *[getattr(r, c) for c in seeds]]
              for r in not_all.itertuples()]
    checks = df[df["kind"] == "check"]
    checks_failed = checks[checks["held"].str.split(" of ").apply(lambda t: t[0] != t[1])]
    lines = [
        "## Do the findings hold across seeds?",
        "",
        f"Chapters 1 to 9 rerun with training seeds {names} (seed 0 is the book's own run; every model",
        "retrained from its seed, data order included), each claim compared by its text",
        f"(`benchmarks/seed_findings.py`, commit `{commit}`). Per chapter: its findings, how many held on",
        "every seed, how many failed on at least one, and how many a rerun did not check (a finding",
        "whose condition was not met on that seed, or a chapter that did not finish):",
        "",
        "```bash",
        ".venv/bin/python -m robustvae.runs rerun 01 02 03 04 05 06 07 08 09 --name seed-1 -p seed=1",
        ".venv/bin/python -m robustvae.runs rerun 01 02 03 04 05 06 07 08 09 --name seed-2 -p seed=2",
        ".venv/bin/python benchmarks/seed_findings.py --runs seed-1 seed-2",
        "```",
        "",
        _table(["chapter", "findings", "held on every seed", "failed on a seed", "not checked on a seed"], rows),
        "",
    ]
    if detail:
        lines += ["The findings that did not hold on every seed where they were checked:", "",
                  _table(["finding", "claim", *[f"seed {c.split('_')[1]}" for c in seeds]], detail), ""]
    lines += [f"Checks (the construction or a theorem working): {len(checks)}, of which "
              f"{len(checks_failed)} failed on some seed.", ""]
    return lines


def _more_inputs_section() -> list[str]:
    """Do the findings hold on more inputs? (``more_inputs_findings.csv`` from ``more_inputs.py``)."""
    path = RESULTS / "more_inputs_findings.csv"
    if not path.exists():
        return []
    commit = _csv_commit(path)
    df = pd.read_csv(path, comment="#", dtype=str).fillna("").rename(columns={"more inputs": "more"})

    def cell(v: str) -> str:
        try:
            f = float(v)
        except ValueError:
            return v.replace("|", "/")
        return str(int(f)) if f.is_integer() else f"{f:.3f}"

    claims = df[df["row"].str.startswith("claim")]
    numbers = df[~df["row"].str.startswith("claim")]
    claim_rows = [[f"`{r.chapter[:2]}` {r.row}", cell(r.what), r.book, r.more]
                  for r in claims.itertuples()]
    number_rows = [[f"`{r.chapter[:2]}`", cell(r.what), cell(r.book), cell(r.more)]
                   for r in numbers.itertuples()]
    return [
        "## Do the findings hold on more inputs?",
        "",
        "Chapter 3 attacks the VAE itself on 20 test digits, chapter 4 its latent-search purifier on 30,",
        "chapters 6 and 7 search their empirical margins on a few dozen, and chapter 9 scores margins,",
        "detection and purification on 20 to 100, to stay inside the book's time budget. The `more-inputs`",
        "rerun repeats all five on more digits, with the book's models",
        f"(`benchmarks/more_inputs.py`, commit `{commit}`; the rows \"test digits\" below give how many):",
        "",
        "```bash",
        ".venv/bin/python -m robustvae.runs rerun 03 04 06 07 09 --name more-inputs --profile more-inputs \\",
        "    -p n_vae_attack=100 -p n_adaptive=200 -p n_lbfgs=200 -p n_latent=200 \\",
        "    -p n_margin=100 -p n_detect=200 -p n_purify=200",
        ".venv/bin/python benchmarks/more_inputs.py",
        "```",
        "",
        _table(["claim", "text", "book", "more inputs"], claim_rows),
        "",
        "The numbers behind them:",
        "",
        _table(["ch.", "number", "book", "more inputs"], number_rows),
        "",
    ]


def _paper_layers_section() -> list[str]:
    """Chapter 7 with the paper's layers and matched standard VAEs (``paper_layers.csv`` from ``paper_layers.py``)."""
    path = RESULTS / "paper_layers.csv"
    if not path.exists():
        return []
    header = _rerun_header(path)
    commit, ran = header["commit"], header["ran"]
    df = pd.read_csv(path, comment="#", dtype=str).fillna("")

    def num(v: str, digits: int) -> str:
        if not v:
            return "-"
        x = float(v)
        return "∞" if x == float("inf") else "-∞" if x == float("-inf") else "-" if x != x else f"{x:.{digits}f}"

    def diff(r, key: str, digits: int) -> str:
        return f"{num(getattr(r, key + '_diff'), digits)} [{num(getattr(r, key + '_lo'), digits)}, " \
               f"{num(getattr(r, key + '_hi'), digits)}]"

    pairs = [[r.model, r.ref, f"{num(r.mse, 4)} / {num(r.ref_mse, 4)}", f"{num(r.elbo, 1)} / {num(r.ref_elbo, 1)}",
              diff(r, "elbo", 1), f"{num(r.emp, 2)} / {num(r.ref_emp, 2)}", diff(r, "margin", 2), num(r.cert, 3)]
             for r in df.itertuples() if r.row.startswith("pair")]
    by = {r.row: r for r in df.itertuples() if not r.row.startswith("pair")}
    claims = [[r.row, r.what.replace("|", "/"), r.value] for r in df.itertuples() if r.row.startswith("claim")]
    cost = [f"training the {r.row.split(' ', 1)[1]} took {float(r.value):.0f} s" for r in df.itertuples()
            if r.row.startswith("train_s") and r.value]
    if "cell_s" in by and by["cell_s"].value:
        cost.append(f"the comparison cell (training, loading and attacking) {float(by['cell_s'].value):.0f} s")
    standards = by["standards"].value if "standards" in by else ""
    return [
        "## Chapter 7 with the paper's layers, and standard VAEs as blurry as the Lipschitz ones",
        "",
        "Barrett et al. build their Lipschitz VAEs from Björck-orthonormal layers; chapter 7 uses spectral",
        "normalisation, because a Björck training step costs about 20 times more on this CPU. The",
        "`paper-layers` profile retrains the R* = 0.5 design with Björck layers at the *same* Lipschitz",
        "constants, and compares every Lipschitz VAE with the standard VAE (chapter 1's network, latent size",
        "2, 3, 4 or the chapter's 16) whose reconstruction error is closest to its own. Each row: the model,",
        "its reference, both values (model / reference), and the paired 95% bootstrap interval of the",
        "difference on the same images (mean test ELBO; median empirical margin, the chapter's attack",
        f"portfolio). `benchmarks/paper_layers.py`, commit `{commit}`; the rerun ran on `{ran}`:",
        "",
        "```bash",
        ".venv/bin/python -m robustvae.runs rerun 07 --name paper-layers --profile paper-layers",
        ".venv/bin/python benchmarks/paper_layers.py",
        "```",
        "",
        _table(["model", "reference", "pixel MSE", "test ELBO", "ELBO difference [95%]", "median margin",
                "margin difference [95%]", "certified min"], pairs),
        "",
        *([f"Reconstruction errors of the standard VAEs: {standards}.", ""] if standards else []),
        "The profile's claims (checked in the rerun only):",
        "",
        _table(["claim", "text", "verdict"], claims),
        "",
        *([f"On the 2-core machine, {'; '.join(cost)}.", ""] if cost else []),
    ]


def _longer_set_section() -> list[str]:
    """Chapter 8 with a longer-trained perturbation set (``longer_set.csv`` from ``longer_set.py``)."""
    path = RESULTS / "longer_set.csv"
    if not path.exists():
        return []
    header = _rerun_header(path)
    commit, ran, wall, params = header["commit"], header["ran"], header["wall"], header["detail"]
    df = pd.read_csv(path, comment="#", dtype=str).fillna("").rename(columns={"longer set": "longer"})

    def cell(v: str) -> str:
        try:
            f = float(v)
        except ValueError:
            return v.replace("|", "/")
        return str(int(f)) if f.is_integer() else f"{f:.3f}"

    claims = [[r.row, cell(r.what), r.book, r.longer] for r in df.itertuples() if r.row.startswith("claim")]
    numbers = [[cell(r.what), cell(r.book), cell(r.longer)] for r in df.itertuples() if not r.row.startswith("claim")]
    return [
        "## Chapter 8 with a longer-trained perturbation set",
        "",
        "Wong & Kolter want a learned perturbation set that approximates the real perturbations closely;",
        "chapter 8's CVAE trains for a few CPU epochs and does not. The `longer-set` profile trains it",
        f"longer ({params}) and trains the three classifiers again with the new set",
        f"(`benchmarks/longer_set.py`, commit `{commit}`; the rerun ran on `{ran}`, chapter wall {wall}):",
        "",
        "```bash",
        ".venv/bin/python -m robustvae.runs rerun 08 --name longer-set --profile longer-set",
        ".venv/bin/python benchmarks/longer_set.py",
        "```",
        "",
        _table(["claim", "text", "book", "longer set"], claims),
        "",
        "The numbers behind them:",
        "",
        _table(["number", "book", "longer set"], numbers),
        "",
    ]


def _background_section() -> list[str]:
    """Chapter 2's likelihood ratio against a background model (``background_lr.csv`` from ``background_lr.py``)."""
    path = RESULTS / "background_lr.csv"
    if not path.exists():
        return []
    header = _rerun_header(path)
    commit, ran = header["commit"], header["ran"]
    df = pd.read_csv(path, comment="#", dtype=str).fillna("")
    by = {r.row: r for r in df.itertuples()}

    def num(v: str) -> str:
        return f"{float(v):.3f}" if v else "-"

    def auroc(key: str) -> str:
        r = by[key]
        return num(r.value) + (f" [{num(r.lo)}, {num(r.hi)}]" if r.lo and r.hi else "")

    rate = by["bg_rate"].value
    scores = [
        [f"likelihood ratio against the background model (mutation rate {float(rate):g})", auroc("bg_auroc"),
         by["bg_auroc"].published or "-"],
        ["-log p(x), the chapter's VAE (the raw likelihood)", auroc("bg_raw_auroc"), by["bg_raw_auroc"].published or "-"],
        ["-log p(x), the background model alone", auroc("bg_alone_auroc"), "-"],
    ]
    claims = [[r.row, r.what.replace("|", "/"), r.value] for r in df.itertuples() if r.row.startswith("claim")]
    lo, hi = float(by["bg_auroc"].lo), float(by["bg_auroc"].hi)
    where = "above 0.5: the ratio fixes" if lo > 0.5 else "below 0.5: the ratio does not fix" if hi < 0.5 else \
        "around 0.5: the ratio does not settle"
    outcome = f"The ratio's 95% interval lies {where} the likelihood failure with this VAE background model."
    train, cell = by.get("train_s"), by.get("cell_s")
    cost = []
    if train is not None and train.value:
        cost.append(f"training the background VAE took {float(train.value):.0f} s")
    if cell is not None and cell.value:
        cost.append(f"the chapter's likelihood-ratio cell (training and scoring) {float(cell.value):.0f} s, "
                    "all the profile adds to the chapter's run")
    return [
        "## The likelihood ratio against a background model",
        "",
        "Chapter 2 leaves out the likelihood ratio of Ren et al. (NeurIPS 2019), the field's standard fix",
        "of the likelihood failure, because its background model, a second Fashion-MNIST VAE, does not fit",
        "the book's time budget. The `background` profile trains it (the chapter's own VAE configuration,",
        "its training images mutated) and scores Fashion-MNIST (in) against MNIST (out), AUROC with a 95%",
        f"bootstrap interval (`benchmarks/background_lr.py`, commit `{commit}`; the rerun ran on `{ran}`):",
        "",
        "```bash",
        ".venv/bin/python -m robustvae.runs rerun 02 --name background --profile background",
        ".venv/bin/python benchmarks/background_lr.py",
        "```",
        "",
        _table(["score, Fashion-MNIST vs MNIST", "AUROC [95%]", "published"], scores),
        "",
        outcome + " The profile's claims (checked in the rerun only):",
        "",
        _table(["claim", "text", "verdict"], claims),
        "",
        *([f"On the 2-core machine, {'; '.join(cost)}.", ""] if cost else []),
    ]


def _decoder_section() -> list[str]:
    """Chapter 2's input complexity under three decoders (``decoder_ic.csv`` from ``decoder_ic.py``)."""
    path = RESULTS / "decoder_ic.csv"
    if not path.exists():
        return []
    header = _rerun_header(path)
    commit, ran = header["commit"], header["ran"]
    df = pd.read_csv(path, comment="#", dtype=str).fillna("")
    by = {r.row: r for r in df.itertuples()}

    def num(v: str, precision: int = 3) -> str:
        return f"{float(v):.{precision}f}" if v else "-"

    def auroc(key: str) -> str:
        r = by.get(key)
        if r is None or not r.value:
            return "-"
        return num(r.value) + (f" [{num(r.lo)}, {num(r.hi)}]" if r.lo and r.hi else "")

    names = {"bern": "Bernoulli (the chapter's VAE)", "cb": "continuous Bernoulli", "dl": "discretized logistic"}
    scores = [[name, *[auroc(f"dec_{d}_{tag}_{st}") for st in ("mnist", "noise") for tag in ("like", "ic")]]
              for d, name in names.items()]
    units = {"bern": "nats / ln 2, not a code length", "cb": "density; add 7.99 for the 8-bit image",
             "dl": "code length of the 8-bit image"}
    bits = [[name, units[d], *[num(by[f"dec_{d}_bpp_{st}"].value, 2) if f"dec_{d}_bpp_{st}" in by else "-"
                               for st in ("in", "mnist", "noise")]] for d, name in names.items()]
    bits.append(["PNG file", "code length of the 8-bit image",
                 *[num(by[f"png_bpp_{st}"].value, 2) if f"png_bpp_{st}" in by else "-" for st in ("in", "mnist", "noise")]])
    published = by.get("dec_dl_like_mnist")
    claims = [[r.row, r.what.replace("|", "/"), r.value] for r in df.itertuples() if r.row.startswith("claim")]
    noise = by["dec_dl_ic_noise"]
    lo, hi = float(noise.lo), float(noise.hi)
    where = ("above 0.5: measured in bits on both sides, input complexity no longer calls uniform noise "
             "in-distribution" if lo > 0.5 else
             "below 0.5: even measured in bits on both sides, input complexity still calls uniform noise "
             "in-distribution" if hi < 0.5 else
             "around 0.5: measured in bits on both sides, input complexity does not settle uniform noise")
    outcome = f"Under the discretized logistic, the 95% interval of input complexity against uniform noise lies {where}."
    value = {k: float(r.value) for k, r in by.items() if k.endswith(("_bpp_in", "_bpp_noise")) and r.value}
    if {"png_bpp_noise", "dec_dl_bpp_noise", "dec_bern_bpp_noise"} <= set(value):
        png, dl, bern = value["png_bpp_noise"], value["dec_dl_bpp_noise"], value["dec_bern_bpp_noise"]
        outcome += (f" On uniform noise PNG needs {png:.2f} bits per pixel; the discretized VAE needs {dl:.2f}, "
                    f"{'more' if dl > png else 'less'} than PNG, while the Bernoulli's {bern:.2f} nats / ln 2 "
                    "stay far below any code length of an incompressible 8-bit image.")
    cost = []
    for d in ("cb", "dl"):
        r = by.get(f"train_s_{d}")
        if r is not None and r.value:
            cost.append(f"training the {names[d]} VAE took {float(r.value):.0f} s")
    cell = by.get("cell_s")
    if cell is not None and cell.value:
        cost.append(f"the chapter's decoders cell (training and scoring) {float(cell.value):.0f} s, "
                    "all the profile adds to the chapter's run")
    return [
        "## Input complexity under three decoders",
        "",
        "Chapter 2's input complexity (Serra et al., ICLR 2020), $S(x) = -\\log_2 p(x) - L(x)$ with $L$ the PNG",
        "length in bits, calls uniform noise in-distribution under the book's Bernoulli decoder, whose",
        "$-\\log_2 p(x)$ is not a code length. The `decoders` profile trains the chapter's Fashion-MNIST VAE",
        "twice more, with a continuous Bernoulli decoder (a density on [0, 1]) and with a discretized",
        "logistic (PixelCNN++'s likelihood, one logistic per pixel, a probability over the 256 grey levels:",
        "`robustvae.discrete`), every other setting the same, and scores Fashion-MNIST (in) against MNIST and",
        "against uniform noise: AUROC with a 95% bootstrap interval, the likelihood the IWAE bound as in the",
        f"chapter (`benchmarks/decoder_ic.py`, commit `{commit}`; the rerun ran on `{ran}`):",
        "",
        "```bash",
        ".venv/bin/python -m robustvae.runs rerun 02 --name decoders --profile decoders",
        ".venv/bin/python benchmarks/decoder_ic.py",
        "```",
        "",
        _table(["decoder", "-log p(x), MNIST", "S(x), MNIST", "-log p(x), noise", "S(x), noise"], scores),
        "",
        outcome + (f" Published raw likelihood on this pair: {published.published}, a model whose likelihood is "
                   "a mixture of discretized logistics; the book cites no published input-complexity AUROC for it."
                   if published is not None and published.published else ""),
        "",
        "The two terms of $S(x)$, mean bits per pixel (the likelihood's IWAE estimate; a density's bits",
        "differ from the 8-bit image's code length by about $\\log_2 255 = 7.99$ bits per pixel, the same",
        "for every image, so adding them changes no AUROC):",
        "",
        _table(["model", "unit", "Fashion-MNIST test", "MNIST", "uniform noise"], bits),
        "",
        "The profile's claims (checked in the rerun only):",
        "",
        _table(["claim", "text", "verdict"], claims),
        "",
        *([f"On the 2-core machine, {'; '.join(cost)}.", ""] if cost else []),
    ]


def render() -> str:
    """The appendix as MyST markdown, from the files under ``benchmarks/results/``."""
    book = _load_json("cpu2_book.json")
    cpu = _load_json("cpu2_throughput.json")
    gpu = _load_json("h100_throughput.json", required=False)
    chapters, totals = _chapter_table(book)
    cold_min = totals.get("book-cold", 0) / 60
    warm_min = totals.get("warm", 0) / 60
    machine = book.get("machine", {})
    versions = book.get("versions", {})
    version_rows = [[f"`{k}`", v or "not installed"] for k, v in versions.items()]
    verdict = "within" if cold_min <= BUDGET_MIN else "**over**"
    parts = [
        "# Reproducing this book",
        "",
        "<!-- Generated by benchmarks/make_appendix.py from benchmarks/results/: do not edit by hand. -->",
        "",
        "Every chapter runs on a laptop CPU. This page says how long that takes, on what, and how to",
        "rerun the book with other parameters, datasets, seeds or a GPU. Its numbers are measured",
        "(`benchmarks/`), not typed: `benchmarks/make_appendix.py` writes this page from the",
        "result files, and a unit test fails when the page and the files disagree.",
        "",
        "## The two commands",
        "",
        "```bash",
        "make book   # data, .venv, execute every chapter, build the HTML",
        "make test   # data, .venv, unit tests, pytest --nbval over every chapter, strict build, browser",
        "```",
        "",
        "Both first provide the data (Debian's Fashion-MNIST, installed with apt-get as root; anywhere",
        "else they stop at once with the command to run), then the locked Python stack",
        "(`requirements.lock`). A chapter that fails leaves its notebook as it was.",
        "",
        *_numerics_section(),
        *_parallel_section(),
        *_call_costs_section(),
        *_before_after_section(),
        "## Time and memory per chapter, one chapter at a time",
        "",
        "The measurements below are older: each chapter alone on two threads, as the book ran until the",
        "section above. They give each chapter's memory and where its time goes.",
        "",
        f"Measured by `benchmarks/bench_book.py` on the reference machine ({machine.get('cpus', '?')} cores, "
        f"torch {machine.get('torch', '?')} with {machine.get('torch_threads', '?')} threads, Python "
        f"{machine.get('python', '?')}). *Empty cache*: the chapters in order, sharing one model cache",
        "that starts empty, as on a fresh clone (a model is trained by the first chapter that needs it",
        "and loaded by the others). *Warm cache*: every chapter again, every model loaded. Peak memory",
        "is the kernel's resident set.",
        "",
        chapters,
        "",
        f"The whole book takes {cold_min:.1f} minutes from an empty cache ({verdict} the {BUDGET_MIN}-minute "
        f"budget) and {warm_min:.1f} minutes with a warm one.",
        "",
        *_pinned_times_section(),
        *_profile_section(),
        *_savings_section(),
        *_layout_section(),
        "## Throughput of the hot loops",
        "",
        "`benchmarks/bench_throughput.py`, fresh models on mnist-5k batches. Each ratio against",
        "torchattacks is the time per image of our attack over theirs on the same model and batch.",
        "",
        _throughput_table(cpu, gpu),
        "",
    ]
    if gpu:
        parts += [
            f"The GPU column was measured on a lent {gpu.get('gpu', 'GPU')} with torch {gpu.get('torch', '?')}. With",
            '`device="auto"` every chapter runs on CUDA when one is present. The chapters\' full-MNIST',
            "profile has not been timed on a GPU yet: no GPU was lent to the session that ran these",
            "benchmarks.",
            "",
        ]
    param = _load_json("cpu2_parametrisations.json", required=False)
    if param:
        ratios = param["ratio_vs_spectral_norm"]
        rows = [[kind, f"{ms:.1f}", f"{ratios[kind]:.1f}x"] for kind, ms in param["step_ms"].items()]
        parts += [
            "## Why chapter 7 uses spectral normalisation",
            "",
            "One Adam training step of chapter 7's three networks (encoder mean and standard deviation,",
            f"decoder; MaxMin activations, negative ELBO, batch {param['batch']}) with each way of constraining",
            f"the weights: the median of {param['repeats']} steps on this machine ({param['threads']} threads,",
            f"torch {param['torch']}, `benchmarks/bench_parametrisations.py`).",
            "",
            _table(["weights", "ms per step", "time / spectral norm's"], rows),
            "",
        ]
    parts += [
        "## Rerunning with other parameters",
        "",
        "```bash",
        ".venv/bin/python -m robustvae.runs show 03                    # a chapter's parameters",
        ".venv/bin/python -m robustvae.runs rerun 01 --name fashion -p dataset=fashion-mnist",
        ".venv/bin/python -m robustvae.runs rerun all --name smoke --profile smoke",
        ".venv/bin/python -m robustvae.runs rerun all --name gpu --profile full-mnist -p device=cuda",
        ".venv/bin/python -m robustvae.runs sweep 06 --name betas --grid \"betas=[(2.0,), (4.0, 8.0)]\" --grid seed=0,1",
        "```",
        "",
        "Runs go to `runs/NAME/` (the book's notebooks are never written), with a `results.csv` of every",
        "number the chapters recorded. Parameters are checked before any work starts. A sweep sends each",
        "grid point to [Dask distributed](https://distributed.dask.org) as an independent papermill job",
        "(a local cluster by default, `--scheduler tcp://host:8786` for a real one).",
        "",
    ]
    smoke = _smoke_table()
    if smoke is not None:
        parts += [
            "## Every chapter on both offline datasets, at smoke sizes",
            "",
            "Every chapter rerun with the `smoke` profile (one or two epochs, tens of images: it checks that",
            "a chapter runs end to end; its numbers mean nothing) on the MNIST sample and on Fashion-MNIST:",
            "",
            "```bash",
            ".venv/bin/python -m robustvae.runs rerun all --name smoke-mnist-5k --profile smoke",
            ".venv/bin/python -m robustvae.runs rerun all --name smoke-fashion-mnist --profile smoke -p dataset=fashion-mnist",
            "```",
            "",
            "A rerun reports a claim that does not hold instead of stopping (`strict_claims=False`); the",
            "numbers in parentheses are the failing claims' rows in the chapter's claims table. The book's",
            "claims are made for its default sizes; thresholds set on the MNIST sample are shown but not",
            "claimed on Fashion-MNIST. Wall times are with the model cache that earlier runs left (a chapter",
            "trains only the models the cache lacks). " + smoke[1],
            "",
            smoke[0],
            "",
        ]
    full = _reruns_table({"fashion-mnist": RESULTS / "rerun_full-fashion.csv"}, KEY_NUMBERS)
    if full is not None:
        parts += [
            "## Fashion-MNIST at the book's sizes",
            "",
            "The `full-fashion` profile is the book's default sizes on Fashion-MNIST (60,000 training",
            "images instead of the sample's 4,000, so each training epoch takes 15 times as long). Three",
            "chapters: chapter 1 trains its Fashion-MNIST classifier and VAE from scratch, chapters 2 and 5",
            "reuse them (and chapter 2 its second direction's models, cached by the book's own run):",
            "",
            "```bash",
            ".venv/bin/python -m robustvae.runs rerun 01 02 05 --name full-fashion --profile full-fashion",
            "```",
            "",
            full[1],
            "",
            full[0],
            "",
        ]
    parts += [
        *_seeds_section(),
        *_more_inputs_section(),
        *_background_section(),
        *_decoder_section(),
        *_paper_layers_section(),
        *_longer_set_section(),
        "## One sweep: the OOD claims over two seeds",
        "",
        "Chapter 2 rerun with seeds 0 (the book's run) and 1: every model retrained from another seed.",
        "Its first direction is in-distribution on mnist-5k, its second on Fashion-MNIST, so the table",
        "shows the chapter's main claims on both datasets.",
        "",
        "```bash",
        ".venv/bin/python -m robustvae.runs sweep 02 --name appendix-ood-seeds --grid seed=0,1",
        "```",
        "",
        _sweep_table(RESULTS / "sweep_ood_seeds.csv"),
        "",
        "## Library versions",
        "",
        _table(["library", "version"], version_rows),
        "",
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if the appendix differs from a fresh render")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not APPENDIX.exists() or APPENDIX.read_text() != text:
            print(f"{APPENDIX} is stale: run benchmarks/make_appendix.py", file=sys.stderr)
            return 1
        return 0
    APPENDIX.write_text(text)
    print(f"wrote {APPENDIX}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Executing chapters with papermill: one job, a rerun into ``runs/NAME/``, and the book itself in place
(several chapters at once); the values a notebook glued, and the results table of a run."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..utils import git_commit
from .plan import BOOK, Job, RUNS, check_data, find_chapters, parse_value, plan_rerun


# --------------------------------------------------------------------------- execution, results


def _register_tuple_translator() -> None:
    """Make papermill write tuple parameters as tuples.

    papermill's Python translator writes a value of a type it does not know, a tuple among them,
    as the string of its repr: ``iwae_ks = "(1, 4)"``. The chapters' tuple parameters (radii,
    ``iwae_ks``) must arrive as tuples, so the Python translator is replaced by one that writes
    ``(1, 4)`` (and ``(1,)``), recursively inside lists and dicts too.
    """
    from papermill.translators import PythonTranslator, papermill_translators

    class TuplePythonTranslator(PythonTranslator):
        @classmethod
        def translate(cls, val):
            if isinstance(val, tuple):
                items = ", ".join(cls.translate(v) for v in val)
                return f"({items},)" if len(val) == 1 else f"({items})"
            return super().translate(val)

    current = papermill_translators._translators.get("python")
    if not (isinstance(current, type) and current.__name__ == "TuplePythonTranslator"):
        papermill_translators.register("python", TuplePythonTranslator)


def execute_job(job: Job, *, kernel: str = "python3", progress_bar: bool = False,
                log_output: bool = False) -> dict[str, Any]:
    """Run one job with papermill; never raises for a failing notebook.

    Returns ``{"status": "ok" | "failed", "error": str | None, "wall_s": float,
    "notebook": str, "glued": {...}}``; the executed notebook (with the error, if any) is
    written to ``job.output`` either way.
    """
    import papermill as pm

    from ..numerics import pin_environment

    _register_tuple_translator()
    pin_environment()  # the kernel papermill starts inherits the book's numerics
    job.output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    error = None
    try:
        pm.execute_notebook(
            str(job.notebook), str(job.output), parameters=dict(job.parameters),
            cwd=str(job.cwd or job.notebook.parent), kernel_name=kernel,
            progress_bar=progress_bar, log_output=log_output,
        )
    except pm.PapermillExecutionError as e:
        error = f"{e.ename}: {e.evalue}".strip()
    except Exception as e:  # kernel died, bad notebook, ...: the row records it
        error = f"{type(e).__name__}: {e}".strip()
    wall = time.perf_counter() - t0
    glued: dict[str, Any] = {}
    if job.output.exists():
        try:
            glued = read_glued(job.output)
        except Exception as e:  # pragma: no cover - a notebook papermill could not finish writing
            error = error or f"could not read {job.output}: {e}"
    return {"status": "ok" if error is None else "failed", "error": error,
            "wall_s": round(wall, 1), "notebook": str(job.output), "glued": glued}


def read_glued(path: Path | str) -> dict[str, Any]:
    """The values a notebook recorded with ``myst_nb.glue`` (or ``scrapbook.glue``), by name.

    myst-nb writes each glued value as an output whose metadata is
    ``{"scrapbook": {"name": NAME, "mime_prefix": "application/papermill.record/"}}`` and whose
    data holds the value's representations under that prefix. Plain-text representations that
    are Python literals come back as values (``0.913``, ``(1, 2)``, ``'mnist-5k'``), other text
    (a DataFrame's) as a string; a figure comes back as ``"<image/png>"`` (its kind of image).
    scrapbook's JSON scraps come back as their JSON value.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    found: dict[str, Any] = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            meta = out.get("metadata", {}).get("scrapbook")
            if not meta or "name" not in meta:
                continue
            data = out.get("data", {})
            scrap = data.get("application/scrapbook.scrap.json+json")
            if scrap is not None:
                found[meta["name"]] = scrap.get("data")
                continue
            prefix = meta.get("mime_prefix", "")
            mimes = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in data.items()}
            if "text/plain" in mimes and not any(m.startswith("image/") for m in mimes):
                text = mimes["text/plain"]
                text = "".join(text) if isinstance(text, list) else text
                value = parse_value(text)
                found[meta["name"]] = text if isinstance(value, str) and value == text.strip() else value
            elif mimes:
                kind = next((m for m in mimes if m.startswith("image/")), next(iter(mimes)))
                found[meta["name"]] = f"<{kind}>"
    return found


def _scalar(v: Any) -> bool:
    if isinstance(v, (bool, int, float)) or v is None:
        return True
    return isinstance(v, str) and len(v) <= 80 and "\n" not in v and not v.startswith("<")


def results_table(jobs: Sequence[Job], results: Sequence[Mapping[str, Any]]):
    """A pandas DataFrame: one row per job with its grid values (or chapter), status, error,
    wall time, notebook path and every scalar glued value."""
    import pandas as pd

    rows = []
    for job, res in zip(jobs, results):
        row: dict[str, Any] = {"chapter": job.notebook.stem}
        row.update({k: (v if _scalar(v) else repr(v)) for k, v in job.point.items()})
        row.update(status=res["status"], error=res["error"], wall_s=res["wall_s"],
                   notebook=os.path.relpath(res["notebook"]))
        for k, v in res.get("glued", {}).items():
            if _scalar(v) and k not in row:
                row[k] = v
        rows.append(row)
    return pd.DataFrame(rows)


def _write_manifest(out_dir: Path, kind: str, jobs: Sequence[Job], results: Sequence[Mapping]) -> None:
    manifest = {
        "kind": kind,
        "commit": git_commit(dirty=True),
        "argv": sys.argv,
        "jobs": [{"chapter": j.notebook.stem, "output": str(j.output), "point": j.point,
                  "parameters": j.parameters, "status": r["status"], "error": r["error"],
                  "wall_s": r["wall_s"]} for j, r in zip(jobs, results)],
    }
    (out_dir / f"{kind}.json").write_text(json.dumps(manifest, indent=2, default=repr))


def rerun(chapters: Sequence[str], name: str, params: Mapping[str, Any] | None = None, *,
          profile: str | None = None, book: Path | str = BOOK, runs: Path | str = RUNS,
          kernel: str = "python3", progress_bar: bool = True, stop_on_error: bool = False):
    """Execute chapters one after another into ``runs/NAME/``; returns the results table.

    All checks happen before the first chapter starts. A failing chapter is recorded (and, unless
    ``stop_on_error``, the next one runs).
    """
    jobs = plan_rerun(chapters, name, params, profile=profile, book=book, runs=runs)
    check_data(jobs)
    out_dir = Path(runs) / name
    results = []
    table = None
    for job in jobs:
        shown = ", ".join(f"{k}={v!r}" for k, v in job.parameters.items()) or "defaults"
        print(f"== {job.notebook.stem} -> {os.path.relpath(job.output)} ({shown})", flush=True)
        res = execute_job(job, kernel=kernel, progress_bar=progress_bar)
        failed = res["glued"].get("claims_failed")
        claims = (f", {failed} of {res['glued'].get('claims_checked')} claims fail"
                  if isinstance(failed, int) and failed else "")
        print(f"   {res['status']} in {res['wall_s']:.0f} s{claims}" + (f": {res['error']}" if res["error"] else ""),
              flush=True)
        results.append(res)
        # after every chapter, so that an interrupted rerun keeps the rows of the finished ones
        _write_manifest(out_dir, "rerun", jobs[: len(results)], results)
        table = results_table(jobs[: len(results)], results)
        table.to_csv(out_dir / "results.csv", index=False)
        if res["error"] and stop_on_error:
            break
    return table


def _code_of(path: Path) -> list[str]:
    """The code cells of a notebook or its jupytext source, without papermill's injected cell."""
    import jupytext

    return [c.source.strip() for c in jupytext.read(path).cells
            if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]


#: The order in which ``book`` starts chapters when it runs several at once: chapter 1 first (it
#: trains the classifier and the VAE that most chapters load), then the longest first (by the
#: profile of the whole book, ``benchmarks/results/profile/summary.json``), so that the chapters
#: still running at the end are short ones; chapter 9 a little earlier than its length says,
#: because chapter 10 waits for it (``robustvae.after``) and should not run alone at the end, but
#: after chapter 3, whose smaller-beta VAE it loads: a chapter that asks for a model another one
#: is training waits, and its core idles (stop 29: with 9 before 3, chapter 9 trained that VAE
#: and chapter 3 waited about 140 s for it). Chapters not listed start last, in book order.
START_ORDER = ("01", "08", "04", "07", "06", "03", "09", "02", "10", "05")


def chapter_after(source: Path | str) -> list[str]:
    """The chapters that must have finished before ``source`` (a chapter's ``.md`` or ``.ipynb``)
    starts, from its front matter::

        robustvae:
          after: [09_scorecard]

    (for a chapter that reads another chapter's stored notebook). Models need no such entry: a
    model asked for by two chapters at once is trained once (:func:`robustvae.cache.load_or_train`).
    """
    import jupytext

    meta = jupytext.read(source).metadata.get("robustvae") or {}
    after = meta.get("after") or []
    if isinstance(after, str) or not all(isinstance(a, str) for a in after):
        raise ValueError(f"{source}: robustvae.after must be a list of chapter names, got {after!r}.")
    return [a.removesuffix(".ipynb").removesuffix(".md") for a in after]


def start_order(stems: Sequence[str]) -> list[str]:
    """``stems`` in the order :data:`START_ORDER` starts them (unlisted ones last, in book order)."""
    rank = {num: i for i, num in enumerate(START_ORDER)}
    return sorted(stems, key=lambda st: (rank.get(st[:2], len(rank)), st))


def default_jobs(n_chapters: int | None = None) -> int:
    """How many chapters ``book`` runs at once: one per :data:`robustvae.numerics.THREADS` cores
    (two on the 2-core machine), at most ``n_chapters``."""
    from ..numerics import THREADS

    n = max(1, (os.cpu_count() or 1) // THREADS)
    return min(n, n_chapters) if n_chapters else n


def execute_book(chapters: Sequence[str] = ("all",), *, book: Path | str | None = None,
                 runs: Path | str | None = None, kernel: str = "python3",
                 jobs: int | None = None) -> list[dict[str, Any]]:
    """Execute the book's chapters in place (``make book``), each only replacing its notebook on success.

    Before any chapter starts: the chapters exist and every dataset they need loads
    (:func:`check_data`), and an edit made to a chapter's ``.ipynb`` in Jupyter is carried into its
    ``.md`` source (``jupytext --sync``). Then the cells of each ``.md`` source are executed with the
    chapter's own parameters into ``runs/.book/NN_name.ipynb``, which is moved over
    ``book/NN_name.ipynb`` if it ran to its end.

    ``jobs`` chapters run at once, each in its own process (default :func:`default_jobs`: one per
    core, as every kernel computes on :data:`~robustvae.numerics.THREADS` thread), started in
    :func:`start_order`; a chapter whose front matter names others in ``robustvae.after``
    (:func:`chapter_after`) starts when they have finished. Two chapters that ask for the same
    model at once share it: the second waits while the first trains it. The numbers do not
    depend on ``jobs`` or the order: every model is decided by its config, and each chapter seeds
    itself.

    A failing chapter stops the run: no further chapter starts, the running ones finish (and
    replace their notebooks if they succeed), then :class:`RuntimeError` names the failures; each
    failed notebook, with its error, is kept as ``runs/failed/NN_name.ipynb`` and the book's
    notebook is untouched. Returns one result per executed chapter, in book order, each with
    ``"chapter"``, ``"started_s"`` and ``"finished_s"`` (seconds since the first start).
    """
    import shutil
    import subprocess
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    import jupytext
    import nbformat

    book = Path(book) if book is not None else BOOK
    runs = Path(runs) if runs is not None else book.parent / "runs"
    nbs = find_chapters(chapters, book)
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}.")
    n_jobs = jobs or default_jobs(len(nbs))
    check_data([Job(nb, runs / ".book" / nb.name, {}, cwd=book) for nb in nbs])
    prepared: dict[str, Job] = {}
    after: dict[str, list[str]] = {}
    for nb in nbs:
        md = nb.with_suffix(".md")
        job = Job(nb, runs / ".book" / nb.name, {}, cwd=book)
        if md.exists():
            if nb.stat().st_mtime > md.stat().st_mtime + 1 and _code_of(nb) != _code_of(md):
                # the .ipynb was edited (in Jupyter) after its source: carry the edit into the .md first
                subprocess.run([sys.executable, "-m", "jupytext", "--sync", "--quiet", str(md)], check=True)
            # execute the .md source's cells; the book's .ipynb is written only on success
            source = runs / ".book" / f"{nb.stem}.source.ipynb"
            source.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(jupytext.read(md), source)
            job = Job(source, job.output, job.parameters, cwd=job.cwd)
        prepared[nb.stem] = job
        after[nb.stem] = [a for a in chapter_after(md if md.exists() else nb) if a != nb.stem]
    pending = start_order(list(prepared))
    done: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    t0 = time.perf_counter()
    ctx = get_context("spawn")  # papermill's event loops and zmq sockets do not survive a fork
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
        running: dict[Any, tuple[str, float]] = {}
        while pending or running:
            if not failures:
                for stem in list(pending):
                    if len(running) >= n_jobs:
                        break
                    # a chapter waits for the chapters it reads that are part of this run
                    if any(a in prepared and a not in done for a in after[stem]):
                        continue
                    pending.remove(stem)
                    print(f"== executing {os.path.relpath(book / prepared[stem].output.name)}", flush=True)
                    fut = pool.submit(execute_job, prepared[stem], kernel=kernel, progress_bar=False)
                    running[fut] = (stem, time.perf_counter() - t0)
            if not running:
                if pending and not failures:
                    raise ValueError(f"Chapters {', '.join(pending)} wait for each other (robustvae.after): "
                                     "none can start.")
                break  # after a failure: nothing left to wait for
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                stem, started = running.pop(fut)
                try:
                    res = fut.result()
                except Exception as e:  # the worker process itself died
                    res = {"status": "failed", "error": f"{type(e).__name__}: {e}", "wall_s": float("nan"),
                           "notebook": str(prepared[stem].output), "glued": {}}
                res.update(chapter=stem, started_s=round(started, 1),
                           finished_s=round(time.perf_counter() - t0, 1))
                done[stem] = res
                target = book / prepared[stem].output.name
                if res["error"]:
                    failed = runs / "failed" / target.name
                    failed.parent.mkdir(parents=True, exist_ok=True)
                    if prepared[stem].output.exists():
                        shutil.move(str(prepared[stem].output), failed)
                    failures.append(f"{target.stem} failed after {res['wall_s']:.0f} s: {res['error']}\n"
                                    f"The book's {target.name} is unchanged; the executed notebook with "
                                    f"the error is {os.path.relpath(failed)}.")
                    print(f"   {target.stem} FAILED after {res['wall_s']:.0f} s", flush=True)
                else:
                    os.replace(prepared[stem].output, target)
                    print(f"   {target.stem} ok in {res['wall_s']:.0f} s", flush=True)
    if failures:
        skipped = [st for st in pending if st not in done]
        raise RuntimeError("\n".join(failures) + (f"\nNot started: {', '.join(skipped)}." if skipped else ""))
    return [done[st] for st in prepared if st in done]

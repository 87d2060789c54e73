"""Rerun chapters with other parameters, and sweep a chapter over a grid of them.

Two commands, both executing the book's notebooks with papermill into ``runs/NAME/`` (git-ignored;
the book's own notebooks are never written), with the working directory ``book/`` as ``make book``
uses::

    python -m robustvae.runs rerun 03 --name fashion -p dataset=fashion-mnist -p n_attack=100
    python -m robustvae.runs rerun all --name smoke-fashion --profile smoke -p dataset=fashion-mnist
    python -m robustvae.runs sweep 06_rrobustness --name betas --grid "betas=[(2.0,), (4.0,)]" --grid seed=0,1
    python -m robustvae.runs show 03           # a chapter's parameters, and the profiles

A third command executes the book's own notebooks in place, as ``make book`` does::

    python -m robustvae.runs book              # every chapter; or: book 03 05

It checks every dataset the chapters need before the first one starts, executes each chapter into a
temporary file under ``runs/.book/`` and replaces ``book/NN_name.ipynb`` only when the chapter ran
to its end: an interrupted or failing run leaves the book as it was (the failed notebook is kept
under ``runs/failed/`` to read its error). It runs one chapter per core at once (``--jobs N`` to
choose), each kernel on one thread; a model two chapters ask for at once is trained once.

Every kernel these commands start computes with the book's pinned numerics
(:mod:`robustvae.numerics`), so the numbers are those the book stores, on any machine.

Where the book is: ``--book DIR``, else ``$ROBUSTVAE_BOOK``, else ``./book`` when the current folder
has chapters there (the repository root), else the ``book/`` beside this package in a source
checkout (``pip install -e .``). Runs go to ``runs/`` beside that ``book/`` folder.

Everything is checked before any notebook starts: the chapters exist; every ``-p``/``--grid`` name
is in the chapter's ``parameters`` cell (read with :func:`papermill.inspect_notebook`); values are
Python literals (:func:`ast.literal_eval`, else a string) of the default's type; ``dataset``,
``device`` and ``likelihood`` are among their valid values. Errors name the valid choices. Then
every dataset asked for is loaded once, so that one with no reachable source (full MNIST offline)
fails with :class:`~robustvae.data.DataSourceError` before any notebook starts.

A chapter's claims (:class:`robustvae.claims.Claims`) are asserted in the book; a rerun or sweep
passes ``strict_claims=False`` (unless ``-p strict_claims=True`` is given), so that a claim that
does not hold on another dataset or at other sizes is reported in the executed notebook and
counted in the ``claims_checked`` / ``claims_failed`` columns, instead of stopping the chapter.

A sweep runs each grid point as an independent papermill job through Dask distributed
(:class:`distributed.LocalCluster` by default, or ``--scheduler tcp://host:8786`` for a running
cluster whose workers see the same files), shows a progress bar, and gathers one results table
(``runs/NAME/results.csv``): the grid values, the status (a failed point keeps its row and its
error), the wall time, and every scalar the executed notebook recorded with ``myst_nb.glue``
(read from the outputs' ``scrapbook`` metadata by :func:`read_glued`, not from printed text).
"""

from __future__ import annotations

import argparse
import logging
import ast
import itertools
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "PROFILES",
    "STRICT",
    "ROOT",
    "BOOK",
    "RUNS",
    "Job",
    "find_chapters",
    "chapter_parameters",
    "parse_value",
    "parse_assignments",
    "parse_grid",
    "check_parameters",
    "plan_rerun",
    "plan_sweep",
    "check_data",
    "execute_job",
    "execute_book",
    "START_ORDER",
    "chapter_after",
    "start_order",
    "default_jobs",
    "datasets_needed",
    "read_glued",
    "results_table",
    "rerun",
    "sweep",
    "main",
]

ROOT = Path(__file__).resolve().parents[1]


def _default_book() -> Path:
    """``$ROBUSTVAE_BOOK``, else ``./book`` if it holds chapters, else the source checkout's ``book/``."""
    if os.environ.get("ROBUSTVAE_BOOK"):
        return Path(os.environ["ROBUSTVAE_BOOK"]).expanduser().resolve()
    here = Path.cwd() / "book"
    if any(here.glob("[0-9][0-9]_*.ipynb")):
        return here.resolve()
    return ROOT / "book"


#: The book's chapters (``book/NN_name.ipynb``) and where runs go (see the module docstring).
BOOK = _default_book()
RUNS = BOOK.parent / "runs"

#: Named parameter sets. A chapter takes the entries its parameters cell declares and ignores the
#: rest; ``-p`` values given on the command line override the profile's.
PROFILES: dict[str, dict[str, Any]] = {
    # Minutes, not hours: tiny epochs and sample sizes, to check that a chapter runs end to end
    # (on another dataset, a GPU, ...). Its numbers mean nothing.
    "smoke": {
        # models (chapters 1-7)
        "clf_epochs": 1, "vae_epochs": 2, "extra_epochs": 1, "dvae_epochs": 1, "lip_epochs": 2,
        "fashion_n_train": 1000, "fashion_vae_epochs": 1, "fashion_clf_epochs": 1,
        # 01 models
        "iwae_ks": (1, 4),
        # 02 OOD
        "n_test": 200, "n_synthetic": 100, "iwae_k": 4, "n_boot": 50,
        # 03 adversarial
        "n_attack": 30, "n_lbfgs": 5, "lbfgs_search": 2, "lbfgs_iter": 10, "pgd_steps": 10,
        "n_vae_attack": 5, "vae_attack_steps": 10,
        # 04 purification
        "n_eval": 20, "n_latent": 5, "steps": 5, "curve_steps": 15, "latent_steps": 5,
        "latent_restarts": 1, "eot": 1, "n_samples": 4,
        # 05 calibration
        "n_foreign": 100,
        # 06 r-robustness, 07 certified
        "n_inputs": 10, "n_mc": 20, "n_mc_p0": 50, "n_radii": 5, "attack_steps": 5, "refine_steps": 2,
        # 08 perturbation sets
        "cvae_epochs": 1, "train_attack_steps": 1, "eval_attack_steps": 3, "n_quality": 5,
        # 09 scorecard
        "n_ood": 50, "n_detect": 20, "detect_steps": 10, "n_purify": 10, "purify_steps": 5,
        "n_margin": 10, "margin_steps": 5,
        # 10 score your own VAE
        "sizes": "smoke",
    },
    # The chapters' default sizes on full MNIST (60,000 / 10,000): needs torchvision's files
    # under $ROBUSTVAE_DATA or a network connection.
    "full-mnist": {"dataset": "mnist"},
    # The chapters' default sizes on Fashion-MNIST.
    "full-fashion": {"dataset": "fashion-mnist"},
}


#: The chapters' parameter that makes a failing claim stop the notebook (True in the book). Reruns
#: and sweeps set it to False unless given: a claim that fails there is a result, reported in the
#: notebook's output and in the ``claims_failed`` column of the results table.
STRICT = "strict_claims"


def _choices() -> dict[str, tuple[str, ...]]:
    from .data import DATASETS
    from .models import LIKELIHOODS
    from .utils import DEVICES

    return {"dataset": DATASETS, "device": DEVICES, "likelihood": LIKELIHOODS}


# --------------------------------------------------------------------------- chapters, parameters


def _book_notebooks(book: Path) -> list[Path]:
    return sorted(p for p in Path(book).glob("[0-9][0-9]_*.ipynb"))


def find_chapters(names: Sequence[str], book: Path | str = BOOK) -> list[Path]:
    """The notebooks named by ``names``: a number (``"02"``, ``"2"``), a stem (``"02_ood"``) or ``"all"``.

    Raises ``ValueError`` naming the valid chapters for an unknown name.
    """
    book = Path(book)
    nbs = _book_notebooks(book)
    if not nbs:
        raise ValueError(f"No chapter notebooks (NN_name.ipynb) in {book}: run from the repository root, "
                         "pass --book DIR or set ROBUSTVAE_BOOK.")
    if not names:
        raise ValueError("Name at least one chapter (a number like 02, a stem like 02_ood, or 'all').")
    by_stem = {nb.stem: nb for nb in nbs}
    by_num = {nb.stem[:2]: nb for nb in nbs}
    chosen: list[Path] = []
    for name in names:
        name = str(name).strip().removesuffix(".ipynb").removesuffix(".md")
        if name == "all":
            found = nbs
        elif name in by_stem:
            found = [by_stem[name]]
        elif name.isdigit() and name.zfill(2) in by_num:
            found = [by_num[name.zfill(2)]]
        else:
            raise ValueError(
                f"Unknown chapter {name!r}. Valid chapters: {', '.join(sorted(by_stem))} "
                "(or their numbers, or 'all')."
            )
        chosen += [nb for nb in found if nb not in chosen]
    return chosen


def chapter_parameters(notebook: Path | str) -> dict[str, Any]:
    """The parameters cell of ``notebook`` as ``{name: default value}``.

    Read with :func:`papermill.inspect_notebook`, completed by an :mod:`ast` parse of the same
    cell: papermill's line parser skips an assignment whose comment contains ``=`` (such as
    ``vae_epochs = 30  # beta = 1``), although papermill still overrides it when executing.
    """
    import nbformat
    import papermill as pm

    pm_log = logging.getLogger("papermill")
    level = pm_log.level
    pm_log.setLevel(logging.ERROR)
    try:
        declared = pm.inspect_notebook(str(notebook))
    finally:
        pm_log.setLevel(level)
    params = {name: parse_value(p["default"]) for name, p in declared.items()}
    nb = nbformat.read(str(notebook), as_version=4)
    cell = next((c for c in nb.cells if c.cell_type == "code"
                 and "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        raise ValueError(f"{notebook} has no cell tagged 'parameters'.")
    try:
        tree = ast.parse(cell.source)
    except SyntaxError:
        tree = ast.Module(body=[], type_ignores=[])
    ordered: dict[str, Any] = {}  # in the cell's order
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in params:
                ordered[name] = params[name]
            else:
                try:
                    ordered[name] = ast.literal_eval(node.value)
                except ValueError:
                    ordered[name] = None  # not a literal: any value is accepted
    ordered.update({k: v for k, v in params.items() if k not in ordered})
    return ordered


_NP_SCALAR = re.compile(r"^np\.\w+\((.*)\)$", re.S)


def parse_value(text: str) -> Any:
    """A command-line value: a Python literal when it is one (``4``, ``0.5``, ``(1, 2)``, ``None``),
    else the string itself (``fashion-mnist``)."""
    text = str(text).strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    m = _NP_SCALAR.match(text)  # reprs of NumPy >= 2 scalars: np.float64(0.5)
    if m:
        try:
            return ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            pass
    return text


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["beta=4", "dataset=fashion-mnist"]`` -> ``{"beta": 4, "dataset": "fashion-mnist"}``."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ValueError(f"Write parameters as NAME=VALUE (e.g. -p beta=4), got {item!r}.")
        if name in out:
            raise ValueError(f"Parameter {name!r} is given twice.")
        out[name] = parse_value(value)
    return out


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["beta=1,4", "seed=0,1"]`` -> ``{"beta": [1, 4], "seed": [0, 1]}``.

    Values are comma-separated literals or strings (``dataset=mnist-5k,fashion-mnist``); for
    tuple-valued parameters give a Python list of tuples (``"betas=[(2.0,), (4.0, 8.0)]"``).
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, text = str(item).partition("=")
        name = name.strip()
        if not sep or not name.isidentifier() or not text.strip():
            raise ValueError(f"Write a grid axis as NAME=V1,V2,... (e.g. --grid beta=1,4), got {item!r}.")
        if name in grid:
            raise ValueError(f"Grid axis {name!r} is given twice.")
        whole = parse_value(text)
        if isinstance(whole, list):
            values = whole
        elif isinstance(whole, tuple):
            values = list(whole)
        elif isinstance(whole, str) and "," in whole:
            values = [parse_value(v) for v in whole.split(",") if v.strip()]
        else:
            values = [whole]
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"Grid axis {name!r} repeats a value: {values}.")
        grid[name] = values
    return grid


def _type_ok(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return True


def _type_name(default: Any) -> str:
    if isinstance(default, bool):
        return "a boolean (True or False)"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, (tuple, list)):
        return "a tuple (e.g. 0.1,0.2 or (0.1,))"
    return type(default).__name__


def check_parameters(chapter: str, declared: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless every name in ``params`` is declared by the chapter, with a
    value of the default's type and, for ``dataset``/``device``/``likelihood``, a valid one."""
    unknown = [n for n in params if n not in declared]
    if unknown:
        raise ValueError(
            f"Unknown parameter(s) {', '.join(map(repr, unknown))} for chapter {chapter}. "
            f"Valid parameters: {', '.join(declared)}."
        )
    choices = _choices()
    for name, value in params.items():
        default = declared[name]
        if name in choices:
            ok = isinstance(value, str) and (
                value in choices[name] or (name == "device" and re.fullmatch(r"cuda:\d+", value))
            )
            if not ok:
                raise ValueError(
                    f"Unknown value {value!r} for parameter {name!r} (chapter {chapter}). "
                    f"Valid values: {', '.join(map(repr, choices[name]))}."
                )
        elif not _type_ok(value, default):
            raise ValueError(
                f"Parameter {name!r} of chapter {chapter} takes {_type_name(default)} "
                f"(default {default!r}), got {value!r}."
            )


# --------------------------------------------------------------------------- planning


@dataclass
class Job:
    """One papermill execution: a chapter notebook, its parameters and where its output goes."""

    notebook: Path
    output: Path
    parameters: dict[str, Any]
    point: dict[str, Any] = field(default_factory=dict)  # the grid values (sweeps)
    cwd: Path | None = None


def _profile(name: str | None) -> dict[str, Any]:
    if name is None:
        return {}
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}. Valid profiles: {', '.join(PROFILES)}.")
    return dict(PROFILES[name])


def _resolve(nb: Path, declared: Mapping[str, Any], profile: Mapping[str, Any],
             params: Mapping[str, Any]) -> dict[str, Any]:
    """Profile entries the chapter declares, then the user's parameters (checked)."""
    merged = {k: v for k, v in profile.items() if k in declared}
    merged.update(params)
    if STRICT in declared:  # a rerun reports failing claims instead of stopping, unless asked
        merged.setdefault(STRICT, False)
    check_parameters(nb.stem, declared, merged)
    return merged


def datasets_needed(notebook: Path | str, parameters: Mapping[str, Any] | None = None) -> set[str]:
    """The datasets a chapter run loads: its ``dataset`` parameter (given, else its default) and every
    dataset name written as a string in its code (chapter 2 always asks about Fashion-MNIST)."""
    import nbformat

    from .data import DATASETS

    params = dict(parameters or {})
    names = {params.get("dataset", chapter_parameters(notebook).get("dataset"))} - {None}
    for cell in nbformat.read(str(notebook), as_version=4).cells:
        if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
            continue  # the parameters cell holds the default of `dataset`, which `parameters` may override
        code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            literals = {n.value for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Constant)}
        except SyntaxError:
            literals = set(re.findall(r"[\"']([\w-]+)[\"']", code))
        names |= {v for v in literals if isinstance(v, str) and v in DATASETS}
    return names


def check_data(jobs: Sequence[Job]) -> None:
    """Load every dataset the jobs need (:func:`datasets_needed`), so that a dataset with no
    reachable source fails with :class:`~robustvae.data.DataSourceError` before the first notebook
    starts (instead of in every chapter or grid point, or 20 minutes into ``make book``)."""
    from .data import load_dataset

    names = set()
    for job in jobs:
        names |= datasets_needed(job.notebook, job.parameters)
    for name in sorted(names):
        for split in ("train", "test"):
            load_dataset(name, split)


def _check_name(name: str) -> str:
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"A run name is letters, digits, '.', '_' and '-' (e.g. fashion-smoke), got {name!r}.")
    return name


def plan_rerun(chapters: Sequence[str], name: str, params: Mapping[str, Any] | None = None, *,
               profile: str | None = None, book: Path | str = BOOK,
               runs: Path | str = RUNS) -> list[Job]:
    """Check everything and return the jobs of a rerun (no notebook runs here).

    With one chapter, every parameter must be one of its own. With several, a parameter must
    belong to at least one of them, and each chapter gets the ones it declares.
    """
    params = dict(params or {})
    _check_name(name)
    prof = _profile(profile)
    nbs = find_chapters(chapters, book)
    declared = {nb: chapter_parameters(nb) for nb in nbs}
    if len(nbs) > 1:
        union = set().union(*declared.values())
        unknown = [n for n in params if n not in union]
        if unknown:
            valid = sorted(union)
            raise ValueError(
                f"Unknown parameter(s) {', '.join(map(repr, unknown))}: none of the chapters "
                f"{', '.join(nb.stem for nb in nbs)} has it. Valid parameters: {', '.join(valid)}."
            )
    out_dir = Path(runs) / name
    jobs = []
    for nb in nbs:
        own = {k: v for k, v in params.items() if k in declared[nb]} if len(nbs) > 1 else params
        jobs.append(Job(nb, out_dir / nb.name, _resolve(nb, declared[nb], prof, own), cwd=Path(book)))
    return jobs


def _slug(point: Mapping[str, Any]) -> str:
    text = "__".join(f"{k}={v}" for k, v in point.items())
    text = re.sub(r"[^A-Za-z0-9.=_-]+", "_", text).strip("_")
    return text[:80]


def plan_sweep(chapter: str, name: str, grid: Mapping[str, Sequence[Any]],
               params: Mapping[str, Any] | None = None, *, profile: str | None = None,
               book: Path | str = BOOK, runs: Path | str = RUNS) -> list[Job]:
    """Check everything and return one job per point of the grid (the Cartesian product)."""
    params = dict(params or {})
    _check_name(name)
    if not grid:
        raise ValueError("A sweep needs at least one --grid NAME=V1,V2 axis.")
    both = [n for n in grid if n in params]
    if both:
        raise ValueError(f"Parameter(s) {both} are given both as -p and as --grid.")
    nbs = find_chapters([chapter], book)
    if len(nbs) != 1:
        raise ValueError("A sweep runs one chapter; name one (e.g. 02 or 02_ood), not 'all'.")
    nb = nbs[0]
    declared = chapter_parameters(nb)
    prof = _profile(profile)
    check_parameters(nb.stem, declared, params)
    out_dir = Path(runs) / name
    jobs = []
    names = list(grid)
    for i, values in enumerate(itertools.product(*(grid[n] for n in names))):
        point = dict(zip(names, values))
        merged = _resolve(nb, declared, prof, {**params, **point})
        jobs.append(Job(nb, out_dir / f"{nb.stem}__{i:03d}_{_slug(point)}.ipynb", merged, point,
                        cwd=Path(book)))
    return jobs


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

    from .numerics import pin_environment

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


def _commit() -> str | None:
    """The source checkout's commit (short hash, ``+dirty`` with uncommitted changes), or None."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _write_manifest(out_dir: Path, kind: str, jobs: Sequence[Job], results: Sequence[Mapping]) -> None:
    manifest = {
        "kind": kind,
        "commit": _commit(),
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
#: still running at the end are short ones. Chapters not listed start last, in book order.
START_ORDER = ("01", "08", "04", "06", "07", "03", "02", "09", "05")


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
    from .numerics import THREADS

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


def _default_workers() -> int:
    """One single-threaded Dask worker per :data:`robustvae.numerics.THREADS` cores: each worker's
    notebook kernel computes on that many threads of its own."""
    return default_jobs()


def sweep(chapter: str, name: str, grid: Mapping[str, Sequence[Any]],
          params: Mapping[str, Any] | None = None, *, profile: str | None = None,
          scheduler: str | None = None, workers: int | None = None, book: Path | str = BOOK,
          runs: Path | str = RUNS, kernel: str = "python3", progress: bool = True):
    """Run every grid point of ``chapter`` as an independent papermill job on Dask distributed.

    ``scheduler=None`` starts a :class:`distributed.LocalCluster` of ``workers`` single-threaded
    worker processes (default: one per two cores); an address like ``tcp://host:8786`` uses that
    cluster (its workers must have robustvae installed and see ``book`` and ``runs`` at the same
    paths). Returns the results table, also written to ``runs/NAME/results.csv``.
    """
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as e:  # pragma: no cover - in the test extra
        raise ImportError("Sweeps run on Dask distributed: pip install 'dask[distributed]' "
                          "(or pip install -e '.[test]').") from e
    from tqdm.auto import tqdm

    jobs = plan_sweep(chapter, name, grid, params, profile=profile, book=book, runs=runs)
    check_data(jobs)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}.")
    out_dir = Path(runs) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    if scheduler is None:
        n = workers or min(_default_workers(), len(jobs))
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        cluster = None
        client = Client(scheduler)
    try:
        futures = {client.submit(execute_job, job, kernel=kernel, pure=False, key=f"point-{i}"): i
                   for i, job in enumerate(jobs)}
        results: list[dict[str, Any] | None] = [None] * len(jobs)
        bar = tqdm(total=len(jobs), desc=f"sweep {name}", unit="run", disable=not progress)
        for fut in as_completed(list(futures)):
            i = futures[fut]
            if fut.status == "finished":
                results[i] = fut.result()
            else:  # the worker died or the task could not run: keep the row, with the reason
                exc = fut.exception()
                results[i] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                              "wall_s": float("nan"), "notebook": str(jobs[i].output), "glued": {}}
            bar.update(1)
            bar.set_postfix_str(f"{jobs[i].point} {results[i]['status']}")
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    _write_manifest(out_dir, "sweep", jobs, results)
    table = results_table(jobs, results)
    table.to_csv(out_dir / "results.csv", index=False)
    return table


# --------------------------------------------------------------------------- command line


def _show(chapters: Sequence[str], book: Path) -> None:
    for nb in find_chapters(chapters, book):
        print(f"{nb.stem}:")
        for k, v in chapter_parameters(nb).items():
            print(f"  {k} = {v!r}")
    print("profiles:")
    for k, v in PROFILES.items():
        print(f"  {k}: " + ", ".join(f"{a}={b!r}" for a, b in v.items()))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m robustvae.runs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--name", required=True, help="the run's folder under runs/ (e.g. fashion-smoke)")
        p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                       help="a parameter of the chapter's parameters cell (repeatable)")
        p.add_argument("--profile", choices=sorted(PROFILES),
                       help="a named parameter set applied first: " + ", ".join(PROFILES))
        p.add_argument("--book", type=Path, default=BOOK, help=f"folder of the chapter notebooks (default {BOOK})")
        p.add_argument("--runs-dir", type=Path, default=RUNS, help=f"where runs go (default {RUNS})")
        p.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")

    r = sub.add_parser("rerun", help="execute chapters with other parameters into runs/NAME/")
    r.add_argument("chapters", nargs="+", help="chapter numbers (02), stems (02_ood) or 'all'")
    common(r)
    r.add_argument("--stop-on-error", action="store_true", help="stop at the first failing chapter")
    s = sub.add_parser("sweep", help="run one chapter over a grid of parameters on Dask distributed")
    s.add_argument("chapter", help="a chapter number (02) or stem (02_ood)")
    common(s)
    s.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help="a grid axis (repeatable; the sweep runs the Cartesian product)")
    s.add_argument("--scheduler", help="address of a running Dask scheduler (default: a LocalCluster)")
    s.add_argument("--workers", type=int, help="LocalCluster workers (default: one per two cores)")
    b = sub.add_parser("book", help="execute the book's chapters in place (make book), each replaced only on success")
    b.add_argument("chapters", nargs="*", default=["all"], help="chapter numbers (02), stems or 'all' (default)")
    b.add_argument("--book", type=Path, default=BOOK, help=f"folder of the chapter notebooks (default {BOOK})")
    b.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    b.add_argument("--jobs", type=int, default=None,
                   help="chapters run at once (default: one per core, each on one thread)")
    sh = sub.add_parser("show", help="print chapters' parameters and the profiles")
    sh.add_argument("chapters", nargs="*", default=["all"])
    sh.add_argument("--book", type=Path, default=BOOK)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    import pandas as pd

    from .data import DataSourceError

    args = _parser().parse_args(argv)
    try:
        if args.command == "show":
            _show(args.chapters, args.book)
            return 0
        if args.command == "book":
            t0 = time.perf_counter()
            done = execute_book(args.chapters, book=args.book, kernel=args.kernel, jobs=args.jobs)
            print(f"executed {len(done)} chapter(s) in {time.perf_counter() - t0:.0f} s")
            return 0
        params = parse_assignments(args.param)
        if args.command == "rerun":
            table = rerun(args.chapters, args.name, params, profile=args.profile, book=args.book,
                          runs=args.runs_dir, kernel=args.kernel, stop_on_error=args.stop_on_error)
        else:
            table = sweep(args.chapter, args.name, parse_grid(args.grid), params, profile=args.profile,
                          scheduler=args.scheduler, workers=args.workers, book=args.book,
                          runs=args.runs_dir, kernel=args.kernel)
    except (ValueError, DataSourceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a chapter of the book failed (execute_book)
        print(f"error: {e}", file=sys.stderr)
        return 1
    shown = table.drop(columns=["notebook"])
    if args.command == "rerun":  # one row per chapter, each with its own numbers: those are in the CSV
        shown = shown[["chapter", "status", "wall_s"]
                      + [c for c in ("claims_checked", "claims_failed") if c in shown] + ["error"]]
    shown["error"] = [" ".join(e.split())[:100] if isinstance(e, str) else "" for e in shown["error"]]
    for col in ("claims_checked", "claims_failed"):  # counts, not floats (a failed chapter has none)
        if col in shown:
            shown[col] = shown[col].astype("Int64")
    with pd.option_context("display.max_columns", 30, "display.width", 200, "display.max_colwidth", 100):
        print(shown.round(3).to_string(index=False))
    print(f"results: {os.path.relpath(Path(args.runs_dir) / args.name / 'results.csv')}")
    return 0 if (table["status"] == "ok").all() else 1


if __name__ == "__main__":
    raise SystemExit(main())

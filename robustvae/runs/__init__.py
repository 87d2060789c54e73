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

from .plan import BOOK, Job, PROFILES, ROOT, RUNS, STRICT, _default_book, chapter_parameters, check_data, check_parameters, datasets_needed, find_chapters, parse_assignments, parse_grid, parse_value, plan_rerun, plan_sweep  # noqa: F401
from .execute import START_ORDER, chapter_after, default_jobs, execute_book, execute_job, read_glued, rerun, results_table, start_order  # noqa: F401
from .sweep import sweep  # noqa: F401
from .cli import main  # noqa: F401

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

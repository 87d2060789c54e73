"""A sweep: one chapter over a grid of parameters, each point a papermill job on Dask distributed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from .plan import BOOK, RUNS, check_data, plan_sweep
from .execute import _write_manifest, default_jobs, execute_job, results_table


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

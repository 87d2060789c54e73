"""Planning runs of the book's chapters: finding chapters, reading and checking their parameters, the
profiles, the datasets a run needs, and the jobs of a rerun or a sweep (nothing executes here)."""

from __future__ import annotations

import ast
import itertools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence



ROOT = Path(__file__).resolve().parents[2]


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
    # More test inputs for the findings that rest on few: chapter 6's margins on 100 digits
    # instead of 20 (about 20 minutes on one core), chapter 7's on 200 instead of 50 (chapter 3
    # already attacks 200). The book's models. The appendix compares the verdicts with the
    # book's (benchmarks/more_inputs.py).
    "more-inputs": {"n_inputs": 100, "n_attack": 200},
    # Chapter 2's likelihood ratio against a background model (Ren et al., NeurIPS 2019), which the
    # book leaves out: a second Fashion-MNIST VAE, the chapter's own configuration trained on images
    # with a fifth of their pixels mutated (the middle of the rates 0.1 to 0.3 Ren et al. use for
    # images). The appendix shows its AUROC beside the published 0.99 (benchmarks/background_lr.py).
    "background": {"background_rate": 0.2},
    # Chapter 7 beside Barrett et al. (AISTATS 2022): the R* = 0.5 design rebuilt with the paper's
    # Björck-orthonormal layers at the same Lipschitz constants (a training step costs about 20
    # times a spectrally normalised one), and each Lipschitz VAE against a standard VAE of
    # latent size 2, 3 or 4, whichever matches its reconstruction error. The appendix shows the
    # comparison (benchmarks/paper_layers.py).
    "paper-layers": {"bjorck_margin": 0.5, "matched_latent_dims": (2, 3, 4)},
    # Chapter 8 with its perturbation set trained 10 times longer (40 epochs instead of 4; about
    # 5 minutes more on 2 cores), closer to Wong & Kolter's first property, and the classifiers
    # trained again with it. The appendix shows it beside the book (benchmarks/longer_set.py).
    "longer-set": {"cvae_epochs": 40},
    # Chapter 2's input complexity (Serra et al., ICLR 2020) under three decoder likelihoods, which the
    # book leaves out: two more Fashion-MNIST VAEs, the chapter's own configuration with a continuous
    # Bernoulli and with a discretized-logistic decoder (robustvae.discrete: a probability over the 256
    # grey levels, so that -log2 p(x) and the PNG length are both code lengths in bits). The appendix
    # shows the raw likelihood's and input complexity's AUROCs under each (benchmarks/decoder_ic.py).
    "decoders": {"ic_decoders": ("continuous-bernoulli", "discretized-logistic")},
}


#: The chapters' parameter that makes a failing claim stop the notebook (True in the book). Reruns
#: and sweeps set it to False unless given: a claim that fails there is a result, reported in the
#: notebook's output and in the ``claims_failed`` column of the results table.
STRICT = "strict_claims"


def _choices() -> dict[str, tuple[str, ...]]:
    from ..data import DATASETS
    from ..models import LIKELIHOODS
    from ..utils import DEVICES

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

    from ..data import DATASETS

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
    from ..data import load_dataset

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

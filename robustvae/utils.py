"""Seeds, devices, parameter checks and the one-line notebook setup."""

from __future__ import annotations

import logging
import os
import random
import sys
from typing import Any, Iterable

import numpy as np
import torch

__all__ = ["seed_everything", "resolve_device", "check_choice", "check_positive", "setup", "git_commit"]

DEVICES = ("auto", "cpu", "cuda")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and CUDA) with ``seed``.

    Together with deterministic batching in :mod:`robustvae.training`, the same machine gives
    the same numbers on every run.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}.")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(int(seed))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` gives CUDA when present, else the CPU; ``"cpu"`` / ``"cuda"`` are taken as asked.

    Raises ``ValueError`` for an unknown name or for ``"cuda"`` on a machine without CUDA.
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str) or device.split(":")[0] not in DEVICES:
        raise ValueError(f"Unknown device {device!r}. Valid devices: {', '.join(DEVICES)} (or 'cuda:N').")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but this machine has no CUDA GPU; use 'auto' or 'cpu'.")
    return torch.device(device)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Raise a ``ValueError`` naming the valid values unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(
            f"Unknown value {value!r} for parameter {name!r}. Valid values: "
            + ", ".join(repr(c) for c in choices)
            + "."
        )
    return value


def check_positive(name: str, value: Any, *, integer: bool = True, allow_zero: bool = False) -> Any:
    """Raise a ``ValueError`` unless ``value`` is a positive (or non-negative) number."""
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "integer" if integer else "number"
        sign = "non-negative" if allow_zero else "positive"
        raise ValueError(f"Parameter {name!r} must be a {sign} {what}, got {value!r}.")
    return value


def check_fields(obj: Any, *, choices: dict[str, Iterable[Any]] | None = None, counts: Iterable[str] = (),
                 positive: Iterable[str] = (), non_negative: Iterable[str] = (),
                 optional_counts: Iterable[str] = ()) -> None:
    """Check a config's fields by kind, with the messages of :func:`check_choice` and :func:`check_positive`.

    ``choices`` maps field names to their valid values; ``counts`` are positive integers,
    ``positive`` positive numbers, ``non_negative`` numbers >= 0, ``optional_counts`` positive
    integers or ``None``.
    """
    for name, valid in (choices or {}).items():
        check_choice(name, getattr(obj, name), valid)
    for name in counts:
        check_positive(name, getattr(obj, name))
    for name in positive:
        check_positive(name, getattr(obj, name), integer=False)
    for name in non_negative:
        check_positive(name, getattr(obj, name), integer=False, allow_zero=True)
    for name in optional_counts:
        if getattr(obj, name) is not None:
            check_positive(name, getattr(obj, name))


def _configure_logging() -> None:
    logger = logging.getLogger("robustvae")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def setup(*, seed: int = 0, device: str = "auto", dataset: str | None = None) -> torch.device:
    """The first call of every chapter: check parameters, pin the numerics, seed everything, set the
    plot style, and make every figure's text form a fingerprint of its data.

    Returns the resolved ``torch.device``. Messages (data source, cache hits and misses, numerics
    that could not be pinned) go to stderr, which the book's regression tests do not compare.
    The numerics (threads, CPU kernels) are pinned by :func:`robustvae.numerics.apply` so that the
    stored outputs reproduce on other machines; the figures' fingerprints
    (:func:`robustvae.fingerprint.install`) let the regression tests compare what a figure shows.
    """
    from . import data, fingerprint, numerics, plotting

    _configure_logging()
    numerics.apply()
    if dataset is not None:
        check_choice("dataset", dataset, data.DATASETS)
    dev = resolve_device(device)
    seed_everything(seed)
    plotting.set_style()
    fingerprint.install()
    # NumPy >= 2 writes scalars as 'np.float64(0.5)'; glued numbers in the book's prose need '0.5'.
    np.set_printoptions(legacy="1.25")
    os.environ.setdefault("TQDM_MININTERVAL", "5")
    return dev


def git_commit(dirty: bool = False) -> str | None:
    """The short commit hash of the source checkout holding this package (``git rev-parse --short
    HEAD``), with ``"+dirty"`` appended when ``dirty`` and tracked files have uncommitted changes;
    None outside a git checkout. What a run or a report records to say which code made it."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        if head.returncode or not head.stdout.strip():
            return None
        changed = dirty and subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                           capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if changed else "")
    except (OSError, subprocess.SubprocessError):
        return None

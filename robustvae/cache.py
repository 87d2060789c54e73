"""The model cache: train a model only if no checkpoint exists for its exact training config.

A checkpoint's file name is a hash of everything that decides the trained weights: the full
training config (every field of the config dataclass, the model kind and :data:`CACHE_FORMAT`),
the code that builds and trains the model (:func:`code_fingerprint`: the syntax tree, without
docstrings and comments, of the module defining the config and of every ``robustvae`` module it
imports, directly or not), the torch version and the process's numerics
(:func:`robustvae.numerics.signature`). Changing a hyper-parameter, the loss, an architecture or
the torch version trains a new model instead of loading a stale one; two chapters asking for the
same config share one file. The folder is
``$ROBUSTVAE_CACHE`` or, by default, the user's cache directory (``~/.cache/robustvae/models``
on Linux).

Several processes may share the folder (the book runs two chapters at once, a sweep runs many):
a checkpoint is trained under a lock file beside it (``NAME.pt.lock``, :mod:`filelock`), so a
second process asking for the same config while the first trains it waits, then loads the
first one's checkpoint instead of training the same model again.

A file that cannot be read, whose stored config differs from the one asked for, or whose
weights do not fit the model is retrained with a warning and overwritten: it is never loaded
silently. Training runs inside a forked random state, so the caller's random numbers are the
same whether the model was trained or loaded, and the initial weights depend on the
config's ``seed`` alone.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import random
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from filelock import FileLock, Timeout
from platformdirs import user_cache_dir
from torch import nn

__all__ = ["CACHE_FORMAT", "cache_dir", "code_fingerprint", "config_key", "checkpoint_path", "load_or_train", "CacheWarning"]

log = logging.getLogger("robustvae.cache")

#: Bumped when the checkpoint layout or the training code changes in a way that changes models.
CACHE_FORMAT = 1


#: Modules left out of :func:`code_fingerprint`: the result cache (:mod:`robustvae.memo`) stores and
#: loads results and computes none, so changing it neither retrains a model nor invalidates a
#: result (``benchmarks/time_book.py`` checks that loaded results give the same book).
NEUTRAL = frozenset({"robustvae.memo"})


class CacheWarning(UserWarning):
    """A cached checkpoint was unusable and is being retrained."""


def cache_dir() -> Path:
    """``$ROBUSTVAE_CACHE`` if set, else ``~/.cache/robustvae/models`` (created on demand)."""
    root = os.environ.get("ROBUSTVAE_CACHE")
    path = Path(root).expanduser() if root else Path(user_cache_dir("robustvae")) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _config_dict(config: Any) -> dict:
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"A training config must be a dataclass, got {type(config).__name__}.")
    return {"kind": getattr(config, "kind", type(config).__name__), **dataclasses.asdict(config)}


def _package_imports(tree: ast.AST, module: str) -> set[str]:
    """The ``robustvae`` modules that a module's syntax tree imports (relative or absolute)."""
    package = module.rpartition(".")[0] or module
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = package + ("." + node.module if node.module else "")
                found.add(base)
                found.update(f"{package}.{a.name}" for a in node.names if not node.module)
            elif node.level == 0 and node.module and node.module.startswith(package):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(package + "."))
    return {m for m in found if m != package and m not in NEUTRAL and importlib.util.find_spec(m) is not None}


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


@functools.lru_cache(maxsize=None)
def code_fingerprint(module: str) -> str:
    """A hash of the code of ``module`` and of every ``robustvae`` module it imports, transitively.

    Computed on the syntax trees without docstrings (comments and formatting are not in the tree),
    so editing documentation keeps cached models, and changing a line of code retrains them.
    """
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            seen[name] = ""
            continue
        tree = ast.parse(Path(spec.origin).read_text())
        todo.extend(_package_imports(tree, name))
        seen[name] = ast.dump(_without_docstrings(tree))
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(f"{name}\n{seen[name]}\n".encode())
    return digest.hexdigest()[:16]


def _environment_key(config: Any) -> dict:
    from . import numerics

    return {"code": code_fingerprint(type(config).__module__), "torch": torch.__version__,
            "numerics": numerics.signature()}


def config_key(config: Any) -> str:
    """A stable hash (hex, 16 characters) of the full training config, the code that trains it,
    the torch version and the numerics (see the module docstring)."""
    payload = json.dumps({"format": CACHE_FORMAT, **_config_dict(config), **_environment_key(config)},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def checkpoint_path(config: Any) -> Path:
    """Where the checkpoint of ``config`` lives in the cache."""
    kind = getattr(config, "kind", type(config).__name__.lower())
    return cache_dir() / f"{kind}-{config_key(config)}.pt"


def _try_load(path: Path, config: Any, model: nn.Module) -> dict | None:
    """Load ``path`` into ``model``; return its history, or None (with a warning) if unusable."""
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or ckpt.get("format") != CACHE_FORMAT:
            raise ValueError("unknown checkpoint format")
        stored = json.loads(ckpt["config"])
        wanted = json.loads(json.dumps(_config_dict(config), sort_keys=True, default=str))
        if stored != wanted:
            raise ValueError(f"its config {stored} differs from the requested {wanted}")
        model.load_state_dict(ckpt["state_dict"], strict=True)
        return json.loads(ckpt["history"])
    except Exception as e:  # any unreadable or mismatched file is retrained, loudly
        warnings.warn(
            f"Model cache file {path} is unusable ({type(e).__name__}: {e}); retraining it.",
            CacheWarning,
            stacklevel=3,
        )
        return None


def _save(path: Path, config: Any, model: nn.Module, history: dict) -> None:
    ckpt = {
        "format": CACHE_FORMAT,
        "config": json.dumps(_config_dict(config), sort_keys=True, default=str),
        "history": json.dumps(history),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_or_train(
    config: Any,
    build: Callable[[], nn.Module],
    train: Callable[[nn.Module], dict],
    device: torch.device | str = "cpu",
    retrain: bool = False,
) -> tuple[nn.Module, dict]:
    """Return ``(model, history)`` for ``config``: loaded from the cache, else trained and stored.

    Parameters
    ----------
    config : a dataclass holding every setting that changes the trained weights.
    build : makes the untrained model (on the CPU).
    train : trains the model in place and returns its history (JSON-serialisable dict).
    device : where the returned model lives (and where training runs).
    retrain : ignore any cached file and train anew.

    The model is returned in ``eval()`` mode.
    """
    path = checkpoint_path(config)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("robustvae.cache: waiting for another process that is training %s (%s)",
                 getattr(config, "kind", "model"), path.name)
        lock.acquire()
    try:
        return _load_or_train_locked(path, config, build, train, device, retrain)
    finally:
        lock.release()


def _load_or_train_locked(path: Path, config: Any, build: Callable[[], nn.Module],
                          train: Callable[[nn.Module], dict], device: torch.device | str,
                          retrain: bool) -> tuple[nn.Module, dict]:
    seed = int(getattr(config, "seed", 0))
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # initial weights depend on the config alone
            model = build()
            history = None if retrain else _try_load(path, config, model)
            if history is not None:
                log.info("robustvae.cache: loaded %s from %s", getattr(config, "kind", "model"), path)
                return model.to(device).eval(), history
            log.info("robustvae.cache: training %s (no usable checkpoint at %s)",
                     getattr(config, "kind", "model"), path)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            model = build().to(device)
            start = time.perf_counter()
            history = train(model)
            log.info("robustvae.cache: trained %s in %.1f s (%s)", getattr(config, "kind", "model"),
                     time.perf_counter() - start, path.name)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    _save(path, config, model, history)
    return model.eval(), history

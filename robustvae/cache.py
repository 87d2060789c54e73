"""The model cache: train a model only if no checkpoint exists for its exact training config.

A checkpoint's file name is a hash of the full training config (every field of the config
dataclass, the model kind and :data:`CACHE_FORMAT`), so changing any hyper-parameter trains a
new model and two chapters asking for the same config share one file. The folder is
``$ROBUSTVAE_CACHE`` or, by default, the user's cache directory (``~/.cache/robustvae/models``
on Linux).

A file that cannot be read, whose stored config differs from the one asked for, or whose
weights do not fit the model is retrained with a warning and overwritten: it is never loaded
silently. Training runs inside a forked random state, so the caller's random numbers are the
same whether the model was trained or loaded, and the initial weights depend on the
config's ``seed`` alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from platformdirs import user_cache_dir
from torch import nn

__all__ = ["CACHE_FORMAT", "cache_dir", "config_key", "checkpoint_path", "load_or_train", "CacheWarning"]

log = logging.getLogger("robustvae.cache")

#: Bumped when the checkpoint layout or the training code changes in a way that changes models.
CACHE_FORMAT = 1


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


def config_key(config: Any) -> str:
    """A stable hash of the full training config (hex, 16 characters)."""
    payload = json.dumps({"format": CACHE_FORMAT, **_config_dict(config)}, sort_keys=True, default=str)
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
            history = train(model)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    _save(path, config, model, history)
    return model.eval(), history

"""The result cache: an expensive computation (an attack, a margin search, a Monte-Carlo estimate)
is computed once per exact input and loaded on a rerun, the way :mod:`robustvae.cache` loads models.

:func:`memoize` wraps a function of the library. A call's key is a hash of everything that decides
its result:

- the function and its code (:func:`robustvae.cache.code_fingerprint` of its module, which covers
  every ``robustvae`` module it imports), the torch version and the process's numerics;
- every argument, by value: tensors and arrays by their bytes, models by their class, code and
  every parameter and buffer, objects by their class and attributes, functions and closures by
  their code and the values they capture (:func:`fingerprint_of`);
- the random state the call starts from: the global torch, NumPy and ``random`` states and every
  ``torch.Generator`` reachable from the arguments (an attack's generator, one captured by a closure).

A computation is a function of its inputs and of the random state, and what it changes is its
result and the random state. So the cache stores both: on a hit the result is loaded **and every
random state is set to where the computation would have left it**, so everything after the call
computes exactly what it would have computed without the cache. A rerun with a full cache is the
same run, skipped: chapter for chapter, every glued number is the same (``benchmarks/time_book.py``
checks it over the whole book, cold against warm).

What is not cached: a call with a ``callback`` (it has effects beyond its result), an argument the
fingerprint cannot read (a warning names it and the call runs uncached), a result that cannot be
pickled (a warning, computed and returned as usual). A stored file that cannot be read is
recomputed and overwritten with a warning, never trusted. The files live in ``results/`` of the
model cache (:func:`robustvae.cache.cache_dir`). ``ROBUSTVAE_RESULT_CACHE=off`` turns the cache
off (the nbval plugin, ``tests/nbval_plugin.py``, does, so that the regression tests recompute
every number).

A memoized function must be deterministic given its inputs and the random state, and must not
change its arguments other than by drawing random numbers: the functions wrapped in the library
are attacks, margin searches and estimates, which read models and images and return new tensors.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import logging
import os
import pickle
import random
import tempfile
import threading
import time
import types
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .cache import cache_dir, code_fingerprint

__all__ = ["memoize", "fingerprint_of", "enabled", "results_dir", "ResultCacheWarning", "Unfingerprintable"]

log = logging.getLogger("robustvae.memo")

class _Depth(threading.local):
    """How many memoized calls are running in this thread's stack (a nested call is logged as such,
    so that a report of the logged times can count each second once)."""

    n = 0


_DEPTH = _Depth()

#: Bumped when the stored layout changes.
RESULT_FORMAT = 1
_ENV = "ROBUSTVAE_RESULT_CACHE"


class ResultCacheWarning(UserWarning):
    """A result was not cached, or a stored one was unusable and is being recomputed."""


class Unfingerprintable(TypeError):
    """An argument whose value the fingerprint cannot read."""


def enabled() -> bool:
    """False when ``$ROBUSTVAE_RESULT_CACHE`` is ``off``, ``0``, ``false`` or ``no``."""
    return os.environ.get(_ENV, "on").strip().lower() not in {"off", "0", "false", "no"}


def results_dir() -> Path:
    """``results/`` inside the model cache (created on demand)."""
    path = cache_dir() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _is_library(module: str | None) -> bool:
    return bool(module) and (module == "robustvae" or module.startswith("robustvae."))


class _Hasher:
    """Feeds a value's content, recursively, into a sha256; collects the generators it meets."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.generators: list[torch.Generator] = []
        self._seen: dict[int, int] = {}
        self._keep: list[Any] = []  # keeps visited objects alive, so ids are not reused

    def tag(self, *parts: Any) -> None:
        self.digest.update(("\x1f".join(map(str, parts)) + "\x1e").encode())

    def code(self, co: types.CodeType) -> None:
        # Not co_filename or co_firstlineno: a notebook cell's file name changes from run to run.
        self.tag("code", co.co_name, co.co_argcount, co.co_kwonlyargcount, co.co_flags, co.co_names)
        self.digest.update(co.co_code)
        for const in co.co_consts:
            if isinstance(const, types.CodeType):
                self.code(const)
            else:
                self.update(const)

    def _object(self, obj: Any) -> None:
        cls = type(obj)
        self.tag("object", cls.__module__, cls.__qualname__)
        if _is_library(cls.__module__):
            self.tag(code_fingerprint(cls.__module__))
        state: dict[str, Any] = {}
        if hasattr(obj, "__dict__"):
            state.update(vars(obj))
        for klass in cls.__mro__:
            for slot in getattr(klass, "__slots__", ()):
                if isinstance(slot, str) and slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                    state[slot] = getattr(obj, slot)
        if not state and not hasattr(obj, "__dict__"):
            raise Unfingerprintable(f"cannot fingerprint a {cls.__module__}.{cls.__qualname__}")
        for name in sorted(state):
            self.tag("attr", name)
            self.update(state[name])

    def update(self, obj: Any) -> None:  # noqa: C901  (one branch per kind of value)
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
            self.tag(type(obj).__name__, repr(obj))
            return
        if isinstance(obj, (np.generic, torch.dtype, torch.device, enum.Enum)):
            self.tag(type(obj).__name__, repr(obj))
            return
        if id(obj) in self._seen:  # a shared or cyclic reference
            self.tag("ref", self._seen[id(obj)])
            return
        self._seen[id(obj)] = len(self._seen)
        self._keep.append(obj)
        if isinstance(obj, torch.Generator):
            self.tag("generator", obj.device)
            self.digest.update(obj.get_state().numpy().tobytes())
            self.generators.append(obj)
        elif isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            self.tag("tensor", t.dtype, tuple(t.shape), obj.requires_grad)
            self.digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, np.ndarray):
            self.tag("ndarray", obj.dtype.str, obj.shape)
            if obj.dtype == object:
                for item in obj.ravel():
                    self.update(item)
            else:
                self.digest.update(np.ascontiguousarray(obj).tobytes())
        elif isinstance(obj, (list, tuple)):
            self.tag(type(obj).__name__, len(obj))
            for item in obj:
                self.update(item)
        elif isinstance(obj, dict):  # in insertion order: the order of a portfolio matters
            self.tag(type(obj).__name__, len(obj))
            for k, v in obj.items():
                self.update(k)
                self.update(v)
        elif isinstance(obj, (set, frozenset)):
            self.tag(type(obj).__name__, len(obj))
            for item in sorted(obj, key=repr):
                self.update(item)
        elif isinstance(obj, range):
            self.tag("range", obj.start, obj.stop, obj.step)
        elif isinstance(obj, functools.partial):
            self.tag("partial")
            self.update(obj.func)
            self.update(obj.args)
            self.update(obj.keywords)
        elif isinstance(obj, types.MethodType):
            self.tag("method")
            self.update(obj.__func__)
            self.update(obj.__self__)
        elif isinstance(obj, types.FunctionType):
            self.tag("function", obj.__module__, obj.__qualname__)
            if _is_library(obj.__module__):
                self.tag(code_fingerprint(obj.__module__))
            self.code(obj.__code__)
            self.update(obj.__defaults__)
            self.update(obj.__kwdefaults__)
            for cell in obj.__closure__ or ():
                try:
                    self.update(cell.cell_contents)
                except ValueError:  # an empty cell
                    self.tag("empty cell")
            if not _is_library(obj.__module__):  # a notebook's function reads the notebook's globals
                for ref in sorted(_global_names(obj.__code__)):
                    if ref in obj.__globals__ and not isinstance(obj.__globals__[ref], types.ModuleType):
                        self.tag("global", ref)
                        self.update(obj.__globals__[ref])
        elif isinstance(obj, (types.BuiltinFunctionType, types.ModuleType, type)):
            self.tag(type(obj).__name__, getattr(obj, "__module__", ""), getattr(obj, "__qualname__", obj.__name__))
        elif isinstance(obj, types.CodeType):
            self.code(obj)
        elif dataclasses.is_dataclass(obj) or hasattr(obj, "__dict__") or hasattr(type(obj), "__slots__"):
            self._object(obj)
        else:
            raise Unfingerprintable(f"cannot fingerprint a {type(obj).__module__}.{type(obj).__qualname__}")


def _global_names(co: types.CodeType) -> set[str]:
    """The global names a code object (and the code nested in it) may read."""
    names = set(co.co_names)
    for const in co.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def fingerprint_of(*values: Any) -> str:
    """The hash (hex, 32 characters) of ``values`` as :func:`memoize` reads arguments; raises
    :class:`Unfingerprintable` for a value it cannot read."""
    h = _Hasher()
    for v in values:
        h.update(v)
    return h.digest.hexdigest()[:32]


def _global_states() -> tuple:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _set_global_states(states: tuple) -> None:
    torch.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])


def _load(path: Path, key: str) -> dict | None:
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            stored = pickle.load(f)
        if not isinstance(stored, dict) or stored.get("format") != RESULT_FORMAT or stored.get("key") != key:
            raise ValueError("not a result of this call")
        return stored
    except Exception as e:  # an unreadable file is recomputed, loudly
        warnings.warn(f"Result cache file {path} is unusable ({type(e).__name__}: {e}); recomputing it.",
                      ResultCacheWarning, stacklevel=4)
        return None


def _save(path: Path, stored: dict) -> bool:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(stored, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written file
        return True
    except Exception as e:
        warnings.warn(f"The result of {path.name.split('-')[0]} cannot be stored ({type(e).__name__}: {e}); "
                      "it is returned but not cached.", ResultCacheWarning, stacklevel=4)
        return False
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def memoize(fn: Callable) -> Callable:
    """Cache ``fn``'s results by the value of its arguments and the random state (module docstring).

    A call with a non-None ``callback`` argument is never cached. The wrapped function keeps its
    signature and docstring; ``wrapper.__wrapped__`` is the uncached function.
    """
    signature = inspect.signature(fn)
    name = f"{fn.__module__.rpartition('.')[2]}.{fn.__qualname__}"

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not enabled():
            return fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        if arguments.get("callback") is not None:
            return fn(*args, **kwargs)
        from . import numerics

        h = _Hasher()
        try:
            h.tag(RESULT_FORMAT, name, code_fingerprint(fn.__module__), torch.__version__, numerics.signature())
            h.update(arguments)
            for state in _global_states():
                h.update(state)
        except Unfingerprintable as e:
            warnings.warn(f"{name} is not cached for this call: {e}.", ResultCacheWarning, stacklevel=2)
            return fn(*args, **kwargs)
        key = h.digest.hexdigest()[:32]
        path = results_dir() / f"{name}-{key}.pkl"
        stored = _load(path, key)
        if stored is not None:
            log.info("robustvae.memo: loaded %s (computed in %.1f s) from %s%s", name,
                     stored.get("seconds", float("nan")), path.name, " [nested]" if _DEPTH.n else "")
            _set_global_states(stored["global_states"])
            for gen, state in zip(h.generators, stored["generator_states"]):
                gen.set_state(state)
            return stored["value"]
        start = time.perf_counter()
        _DEPTH.n += 1
        try:
            value = fn(*args, **kwargs)
        finally:
            _DEPTH.n -= 1
        seconds = time.perf_counter() - start
        log.info("robustvae.memo: computed %s in %.1f s (%s)%s", name, seconds, path.name,
                 " [nested]" if _DEPTH.n else "")
        _save(path, {"format": RESULT_FORMAT, "key": key, "value": value, "seconds": seconds,
                     "global_states": _global_states(),
                     "generator_states": [g.get_state() for g in h.generators]})
        return value

    return wrapper

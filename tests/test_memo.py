"""The result cache (robustvae.memo): a hit is the same run, skipped; anything that changes the
result changes the key."""

import random
import threading
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from robustvae import memo
from robustvae.memo import ResultCacheWarning, fingerprint_of, memoize

CALLS = {"n": 0}


@memoize
def _noisy_sum(x, model, attack=None, generator=None, callback=None):
    """Draws from the global torch, NumPy and random states and from ``generator``."""
    CALLS["n"] += 1
    out = model(x).sum() + torch.rand(()) + float(np.random.rand()) + random.random()
    if generator is not None:
        out = out + torch.rand((), generator=generator)
    if attack is not None:
        out = out + attack(x)
    if callback is not None:
        callback(out)
    return {"value": out.detach(), "per_input": model(x).detach()}


def _draw_after(gen):
    return (torch.rand(3), np.random.rand(2), random.random(), torch.rand(2, generator=gen))


def _run(x, model, **kw):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    gen = torch.Generator().manual_seed(5)
    out = _noisy_sum(x, model, generator=gen, **kw)
    return out, _draw_after(gen)


def _same(a, b):
    (ra, da), (rb, db) = a, b
    return (torch.equal(ra["value"], rb["value"]) and torch.equal(ra["per_input"], rb["per_input"])
            and torch.equal(da[0], db[0]) and np.array_equal(da[1], db[1]) and da[2] == db[2]
            and torch.equal(da[3], db[3]))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Linear(4, 2)


def test_a_hit_returns_the_result_and_leaves_every_random_state_as_the_computation_did(model, monkeypatch):
    x = torch.rand(3, 4)
    monkeypatch.setenv("ROBUSTVAE_RESULT_CACHE", "off")
    CALLS["n"] = 0
    uncached = _run(x, model)
    assert CALLS["n"] == 1
    monkeypatch.setenv("ROBUSTVAE_RESULT_CACHE", "on")
    first = _run(x, model)   # computed and stored
    second = _run(x, model)  # loaded
    assert CALLS["n"] == 2, "the second call must be loaded, not computed"
    assert _same(uncached, first) and _same(uncached, second)
    assert len(list(memo.results_dir().glob("*.pkl"))) == 1


def test_the_random_state_a_call_starts_from_is_part_of_its_key(model):
    x = torch.rand(3, 4)
    CALLS["n"] = 0
    _run(x, model)
    torch.manual_seed(2)  # another global state
    gen = torch.Generator().manual_seed(5)
    _noisy_sum(x, model, generator=gen)
    gen = torch.Generator().manual_seed(6)  # another generator state
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    _noisy_sum(x, model, generator=gen)
    assert CALLS["n"] == 3


def test_any_change_of_an_input_is_a_miss(model):
    x = torch.rand(3, 4)
    CALLS["n"] = 0
    _run(x, model)
    x2 = x.clone()
    x2[1, 2] += 1e-7  # one element of one input
    _run(x2, model)
    with torch.no_grad():
        model.weight[0, 0] += 1e-6  # one weight of the model
    _run(x, model)
    model.train(False)  # the model's mode
    _run(x, model)
    scale = 2.0
    _run(x, model, attack=lambda t: scale * t.sum())  # a closure ...
    scale = 3.0
    _run(x, model, attack=lambda t: scale * t.sum())  # ... capturing another value
    _run(x, model, attack=lambda t: scale * t.mean())  # other code
    _run(x, model, attack=lambda t: scale + t.mean())  # other code, the same names
    assert CALLS["n"] == 8
    _run(x, model, attack=lambda t: scale + t.mean())
    assert CALLS["n"] == 8, "the same closure with the same captured value is a hit"


SHIFT = 0.0


def _uses_global(t):
    return SHIFT + t.sum()


def test_a_function_reading_a_changed_global_is_a_miss(model):
    global SHIFT
    x = torch.rand(3, 4)
    CALLS["n"] = 0
    _run(x, model, attack=_uses_global)
    SHIFT = 1.0
    try:
        _run(x, model, attack=_uses_global)
    finally:
        SHIFT = 0.0
    assert CALLS["n"] == 2


def test_a_corrupt_file_is_recomputed_with_a_warning(model):
    x = torch.rand(3, 4)
    CALLS["n"] = 0
    first = _run(x, model)
    (path,) = memo.results_dir().glob("*.pkl")
    path.write_bytes(b"not a pickle")
    with pytest.warns(ResultCacheWarning, match="unusable"):
        again = _run(x, model)
    assert CALLS["n"] == 2 and _same(first, again)
    assert _same(first, _run(x, model)) and CALLS["n"] == 2, "the recomputed result is stored again"


def test_a_call_with_a_callback_or_an_unreadable_argument_is_never_cached(model):
    x = torch.rand(3, 4)
    seen = []
    CALLS["n"] = 0
    _run(x, model, callback=seen.append)
    _run(x, model, callback=seen.append)
    assert CALLS["n"] == 2 and len(seen) == 2, "the callback's effect happens on every call"
    lock = threading.Lock()
    with pytest.warns(ResultCacheWarning, match="not cached"):
        _run(x, model, attack=lambda t, lock=lock: t.sum())
    assert not list(memo.results_dir().glob("*.pkl"))


def test_the_cache_can_be_turned_off(model, monkeypatch):
    monkeypatch.setenv("ROBUSTVAE_RESULT_CACHE", "off")
    x = torch.rand(3, 4)
    CALLS["n"] = 0
    _run(x, model)
    _run(x, model)
    assert CALLS["n"] == 2 and not list(memo.results_dir().glob("*.pkl"))


def test_fingerprints_read_values_not_identities():
    a = {"w": torch.arange(6.0).reshape(2, 3), "k": (1, 2.5, "s"), "n": np.ones(3)}
    b = {"w": torch.arange(6.0).reshape(2, 3), "k": (1, 2.5, "s"), "n": np.ones(3)}
    assert fingerprint_of(a) == fingerprint_of(b)
    assert fingerprint_of(a) != fingerprint_of({**b, "n": np.ones(3, dtype=np.float32)})
    assert fingerprint_of(a) != fingerprint_of({**b, "w": b["w"].reshape(3, 2)})
    assert fingerprint_of(a) != fingerprint_of(dict(reversed(list(b.items())))), "insertion order counts"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(memo.Unfingerprintable):
            fingerprint_of(threading.Lock())


def test_the_result_cache_is_left_out_of_code_fingerprints():
    """Changing the cache machinery must not retrain models or drop results (robustvae.cache.NEUTRAL)."""
    import ast
    import importlib.util
    from pathlib import Path

    from robustvae import cache

    tree = ast.parse(Path(importlib.util.find_spec("robustvae.attacks").origin).read_text())
    followed = cache._package_imports(tree, "robustvae.attacks")
    assert "robustvae.models" in followed and "robustvae.memo" not in followed

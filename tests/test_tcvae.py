"""beta-TCVAE (Chen et al., NeurIPS 2018): the decomposition, the loss and the cached training."""

import math

import numpy as np

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


class _TableEncoder(torch.nn.Module):
    """Image ``i`` (a binary image whose pixel ``i`` is the brightest of the first three) is encoded to
    row ``i`` of fixed ``(mu, log_var)`` tables."""

    def __init__(self, mu, log_var):
        super().__init__()
        self.register_buffer("mu", mu)
        self.register_buffer("log_var", log_var)

    def forward(self, x):
        i = x.flatten(1)[:, :3].argmax(1)
        return self.mu[i], self.log_var[i]


@pytest.mark.parametrize("dataset_size", [3, 1000])
def test_terms_against_the_exact_mixture_when_the_minibatch_is_the_dataset(dataset_size):
    """Closed form on a three-component mixture: the minibatch is the whole dataset {x_1, x_2, x_3},
    so ``q(z) = 1/3 sum_j N(z; mu_j, diag sigma_j^2)`` and its marginals are known exactly (scipy).
    Minibatch-weighted sampling (Chen et al. 2018, Eq. 5; their code) estimates
    ``log q(z) ~= log sum_j q(z | x_j) - log(N M)``, i.e. the exact mixture density shifted by
    ``-log(N M / 3)`` (``-log M`` when ``N = M``: the estimator's known bias), and each marginal by the
    same constant; so with ``c = log(N M / 3)``: mi = exact mi + c, tc = exact tc + (d - 1) c,
    dwkl = exact dwkl - d c. The single-sample ``kl`` and ``rec`` are checked against scipy and
    ``torch.distributions``."""
    from scipy.special import logsumexp
    from scipy.stats import norm as normal

    mu = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 3.0]], dtype=torch.float64)
    log_var = torch.tensor([[0.0, -1.0], [-2.0, 0.5], [1.0, 0.0]], dtype=torch.float64)
    z = torch.tensor([[0.3, 0.2], [1.5, -0.4], [-0.7, 2.0]], dtype=torch.float64)
    torch.manual_seed(0)
    model = TCVAE(latent_dim=2, width=4, hidden=8, dataset_size=dataset_size,
                  encoder=_TableEncoder(mu, log_var)).double().eval()
    model.reparameterize = lambda m, lv: z          # the draw z ~ q(z|x), fixed
    x = torch.zeros(3, 1, 28, 28, dtype=torch.float64)
    x[:, 0, 0, :3] = torch.eye(3, dtype=torch.float64)
    with torch.no_grad():
        t = model.decomposition(x)
        logits = model.decode(z)
    mu_, sd_, z_ = mu.numpy(), (0.5 * log_var).exp().numpy(), z.numpy()
    # log N(z_ik; mu_jk, sd_jk) for every (i, j, k)
    dens = normal.logpdf(z_[:, None, :], mu_[None, :, :], sd_[None, :, :])
    log_qz = logsumexp(dens.sum(2), axis=1) - np.log(3)           # exact log q(z_i)
    log_qk = logsumexp(dens, axis=1) - np.log(3)                  # exact log q(z_ik)
    log_qz_x = normal.logpdf(z_, mu_, sd_).sum(1)
    log_pz = normal.logpdf(z_).sum(1)
    c = np.log(dataset_size * 3 / 3)
    np.testing.assert_allclose(t["kl"].numpy(), log_qz_x - log_pz, rtol=1e-10)
    np.testing.assert_allclose(t["mi"].numpy(), log_qz_x - log_qz + c, rtol=1e-10)
    np.testing.assert_allclose(t["tc"].numpy(), log_qz - log_qk.sum(1) + (2 - 1) * c, rtol=1e-10)
    np.testing.assert_allclose(t["dwkl"].numpy(), log_qk.sum(1) - log_pz - 2 * c, rtol=1e-10)
    rec = torch.distributions.Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    np.testing.assert_allclose(t["rec"].numpy(), rec.numpy(), rtol=1e-10)
    # the objective weights the three terms separately
    model.alpha, model.beta, model.gamma = 0.5, 3.0, 2.0
    with torch.no_grad():
        loss = model.loss(x).item()
    exact = -(rec.numpy() - 0.5 * (log_qz_x - log_qz + c) - 3.0 * (log_qz - log_qk.sum(1) + c)
              - 2.0 * (log_qk.sum(1) - log_pz - 2 * c)).mean()
    assert loss == pytest.approx(exact, rel=1e-10)


def test_the_three_terms_add_up_to_the_kl(batch):
    t = _terms(tiny(), batch)
    assert torch.allclose(t["mi"] + t["tc"] + t["dwkl"], t["kl"], atol=1e-3)
    # log q(z_i) >= log q(z_i|x_i) - log(N M): the MI estimate is bounded by log(N M)
    assert (t["mi"] <= math.log(1000 * len(batch)) + 1e-4).all()


def test_unit_weights_give_the_elbo_in_expectation(batch):
    """With alpha = beta = gamma = 1 the objective is the single-sample ELBO: over many draws of z its
    mean approaches the ELBO with the KL in closed form (torch.distributions), within Monte-Carlo error."""
    model = tiny(beta=1.0)
    x = batch[:8]
    with torch.no_grad():
        torch.manual_seed(0)
        draws = torch.stack([model.loss(x) for _ in range(60)])
        mu, log_var = model.encode(x)
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * log_var).exp()),
                                               torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
        recs = torch.stack([model.elbo(x)["rec"].mean() for _ in range(60)])
    se = math.sqrt(draws.var() / len(draws) + recs.var() / len(recs))
    assert abs(draws.mean() - (-(recs.mean() - kl))) < 5 * se + 0.05


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


@pytest.mark.slow
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

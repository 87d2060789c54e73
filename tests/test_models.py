import math

import pytest
import torch

from robustvae.models import LIKELIHOODS, VAE, Classifier, gaussian_kl


def test_classifier_shapes(tiny_images):
    clf = Classifier()
    assert clf(tiny_images).shape == (6, 10)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_vae_shapes_and_finite_losses(likelihood, tiny_images):
    vae = VAE(latent_dim=4, likelihood=likelihood)
    mu, log_var = vae.encode(tiny_images)
    assert mu.shape == log_var.shape == (6, 4)
    logits, _, _ = vae(tiny_images)
    assert logits.shape == tiny_images.shape
    out = vae.elbo(tiny_images)
    for k in ("elbo", "rec", "kl"):
        assert out[k].shape == (6,) and torch.isfinite(out[k]).all()
    assert torch.allclose(out["elbo"], out["rec"] - out["kl"])
    assert (out["kl"] >= 0).all()
    loss = vae.loss(tiny_images)
    loss.backward()
    assert torch.isfinite(loss)
    rec = vae.reconstruct(tiny_images)
    assert rec.shape == tiny_images.shape and rec.min() >= 0 and rec.max() <= 1
    assert vae.sample(3).shape == (3, 1, 28, 28)


def test_gaussian_kl_matches_torch_distributions():
    mu, log_var = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, (0.5 * log_var).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl(mu, log_var), expected, atol=1e-5)
    assert torch.allclose(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


def test_bernoulli_log_likelihood_by_hand():
    vae = VAE(latent_dim=2)
    x = torch.full((1, 1, 28, 28), 0.25)
    logits = torch.zeros(1, 1, 28, 28)  # p = 0.5 everywhere
    assert torch.allclose(vae.log_px_given_z(x, logits), torch.tensor([784 * math.log(0.5)]))


def test_beta_weights_only_the_training_objective(tiny_images):
    torch.manual_seed(1)
    a = VAE(latent_dim=4, beta=1.0)
    b = VAE(latent_dim=4, beta=4.0)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(2); ea = a.elbo(tiny_images)["elbo"]
    torch.manual_seed(2); eb = b.elbo(tiny_images)["elbo"]
    assert torch.allclose(ea, eb)
    torch.manual_seed(2); la = a.loss(tiny_images)
    torch.manual_seed(2); lb = b.loss(tiny_images)
    assert lb > la


@torch.no_grad()
def test_iwae_is_above_elbo_on_average_and_grows_with_k(tiny_images):
    torch.manual_seed(0)
    vae = VAE(latent_dim=4)
    elbo = torch.stack([vae.elbo(tiny_images)["elbo"] for _ in range(200)]).mean(0)
    iw1 = torch.stack([vae.iwae(tiny_images, k=1) for _ in range(200)]).mean(0)
    iw64 = torch.stack([vae.iwae(tiny_images, k=64) for _ in range(20)]).mean(0)
    # k = 1 is the ELBO in expectation
    assert torch.allclose(iw1, elbo, atol=0.5)
    assert (iw64 >= elbo - 0.05).all()
    assert iw64.mean() > elbo.mean()


def test_iwae_chunking_does_not_change_the_estimate(tiny_images):
    vae = VAE(latent_dim=4)
    torch.manual_seed(5); a = vae.iwae(tiny_images, k=10, chunk=10)
    torch.manual_seed(5); b = vae.iwae(tiny_images, k=10, chunk=10)
    assert torch.allclose(a, b)
    with pytest.raises(ValueError):
        vae.iwae(tiny_images, k=0)


def test_bad_vae_arguments():
    with pytest.raises(ValueError, match="Valid: bernoulli"):
        VAE(likelihood="poisson")
    with pytest.raises(ValueError, match="beta"):
        VAE(beta=-1)

import math

import pytest
import torch

from robustvae.models import KL_FORMS, LIKELIHOODS, VAE, Classifier, gaussian_kl


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



@pytest.mark.parametrize("form", KL_FORMS)
def test_gaussian_kl_between_two_gaussians_matches_torch_distributions(form):
    g = torch.Generator().manual_seed(0)
    mu, log_var, mu_p, log_var_p = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(4))
    q = torch.distributions.Normal(mu, (0.5 * log_var).exp())
    p = torch.distributions.Normal(mu_p, (0.5 * log_var_p).exp())
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    got = gaussian_kl(mu, log_var, mu_p, log_var_p, form=form)
    assert got.shape == (5,)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert torch.allclose(gaussian_kl(mu, log_var, mu, log_var, form=form), torch.zeros(5, dtype=torch.float64))
    # against N(0, I) the two-Gaussian form reduces to the prior KL
    zeros = torch.zeros_like(mu)
    assert torch.allclose(gaussian_kl(mu, log_var, zeros, zeros, form=form), gaussian_kl(mu, log_var), rtol=1e-12)


def test_gaussian_kl_rejects_half_a_second_gaussian_and_unknown_forms():
    mu = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="both"):
        gaussian_kl(mu, mu, mu_p=mu)
    with pytest.raises(ValueError, match="Unknown form"):
        gaussian_kl(mu, mu, mu, mu, form="nope")


def test_gaussian_kl_callers_share_the_one_function():
    from robustvae import attacks, perturbation
    g = torch.Generator().manual_seed(1)
    a, b, c, d = (torch.randn(4, 6, generator=g) for _ in range(4))
    assert torch.equal(attacks.latent_kl(a, b, c, d), gaussian_kl(a, b, c, d, form="quotient"))
    assert torch.equal(perturbation.cvae_kl(a, b, c, d), gaussian_kl(a, b, c, d, form="log-difference"))


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


class _ConstantDecoder(torch.nn.Module):
    """Logits that ignore z: then p(x | z) = p(x), the posterior is the prior, and
    log p(x) = ELBO + KL(q(z|x) || p(z)) exactly, whatever the encoder."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits, requires_grad=False)

    def forward(self, z):
        return self.logits.expand(len(z), *self.logits.shape[1:])


class _FirstPixelsEncoder(torch.nn.Module):
    """mu = 2 * (the first d pixels) - 1, log_var = -1 - (the next d pixels)."""

    def __init__(self, d):
        super().__init__()
        self.d = d

    def forward(self, x):
        h = x.flatten(1)
        return 2 * h[:, : self.d] - 1, -1 - h[:, self.d : 2 * self.d]


def _log_px(likelihood, x, logits, obs_std=0.1):
    """log p(x | logits) from torch.distributions (independent of VAE.log_px_given_z)."""
    D = torch.distributions
    if likelihood == "bernoulli":
        lp = D.Bernoulli(logits=logits).log_prob(x)
    elif likelihood == "continuous-bernoulli":
        lp = D.ContinuousBernoulli(logits=logits).log_prob(x)
    else:
        lp = D.Normal(torch.sigmoid(logits), obs_std).log_prob(x)
    return lp.flatten(1).sum(1)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_elbo_and_iwae_of_a_constant_decoder_against_the_exact_log_likelihood(likelihood):
    """Closed form: with a decoder that ignores z, log p(x) = log p(x | .) (torch.distributions),
    ELBO = log p(x) - KL(q || p) (torch.distributions.kl_divergence), and the IWAE bound with the
    encoder equal to the prior is log p(x) exactly for every k and chunk size."""
    torch.manual_seed(0)
    d = 3
    logits = torch.randn(1, 1, 28, 28)
    x = (torch.rand(5, 1, 28, 28) > 0.5).float() if likelihood == "bernoulli" else torch.rand(5, 1, 28, 28)
    vae = VAE(latent_dim=d, likelihood=likelihood, encoder=_FirstPixelsEncoder(d), decoder=_ConstantDecoder(logits))
    log_px = _log_px(likelihood, x, logits.expand_as(x))
    mu, log_var = vae.encode(x)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * log_var).exp()),
                                           torch.distributions.Normal(0.0, 1.0)).sum(1)
    out = vae.elbo(x, n_samples=2)
    assert torch.allclose(out["rec"], log_px, rtol=1e-5)
    assert torch.allclose(out["kl"], kl, rtol=1e-5)
    assert torch.allclose(out["elbo"], log_px - kl, rtol=1e-5)
    # beta weighs the KL in the loss only
    vae.beta = 3.0
    assert vae.loss(x).item() == pytest.approx(-(log_px - 3.0 * kl).mean().item(), rel=1e-5)
    vae.encode = lambda t: (torch.zeros(len(t), d), torch.zeros(len(t), d))   # q(z|x) = p(z)
    for k, chunk in ((1, 1), (7, 3), (20, 64)):
        assert torch.allclose(vae.iwae(x, k=k, chunk=chunk), log_px, rtol=1e-5)


def test_iwae_in_chunks_equals_the_estimate_computed_by_hand():
    """The same noise drawn chunk by chunk, and the importance weights computed with
    torch.distributions: chunk sizes that do and do not divide k must give the bound by hand."""
    torch.manual_seed(0)
    vae = VAE(latent_dim=3, width=4, hidden=16, encoder=_FirstPixelsEncoder(3)).eval()
    x = torch.rand(4, 1, 28, 28)
    D = torch.distributions
    with torch.no_grad():
        mu, log_var = vae.encode(x)
        q = D.Normal(mu, (0.5 * log_var).exp())
        for k, chunk in ((10, 3), (10, 10), (5, 16)):
            torch.manual_seed(5)
            got = vae.iwae(x, k=k, chunk=chunk)
            torch.manual_seed(5)
            sizes = [min(chunk, k - i) for i in range(0, k, chunk)]
            eps = torch.cat([torch.randn((m,) + mu.shape) for m in sizes])
            z = mu + (0.5 * log_var).exp() * eps                                    # (k, B, d)
            log_w = torch.stack([
                D.Bernoulli(logits=vae.decode(z[i]), validate_args=False).log_prob(x).flatten(1).sum(1)
                + D.Normal(0.0, 1.0).log_prob(z[i]).sum(1) - q.log_prob(z[i]).sum(1) for i in range(k)])
            expected = torch.logsumexp(log_w, 0) - math.log(k)
            assert torch.allclose(got, expected, rtol=1e-5, atol=1e-4), (k, chunk)
    with pytest.raises(ValueError):
        vae.iwae(x, k=0)


def test_bad_vae_arguments():
    with pytest.raises(ValueError, match="Valid: bernoulli"):
        VAE(likelihood="poisson")
    with pytest.raises(ValueError, match="beta"):
        VAE(beta=-1)

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustvae as rv
from robustvae import perturbation as P


@pytest.fixture
def digits():
    x, y = rv.load_dataset("mnist-5k", "test")
    return x[:16], y[:16]


@pytest.fixture
def cvae():
    torch.manual_seed(0)
    return P.PerturbationCVAE(latent_dim=4, width=4, hidden=16).eval()


def test_rts_identity_and_shift(digits):
    x, _ = digits
    ident = P.rts(x, torch.tensor([[0.0, 1.0, 0.0, 0.0]]).repeat(len(x), 1))
    assert torch.allclose(ident, x, atol=1e-5)
    shifted = P.rts(x, torch.tensor([[0.0, 1.0, 2.0, 0.0]]).repeat(len(x), 1))
    assert torch.allclose(shifted[..., 2:], x[..., :-2], atol=1e-5)       # two pixels to the right
    rot = P.rts(x, torch.tensor([[90.0, 1.0, 0.0, 0.0]]).repeat(len(x), 1))
    assert torch.allclose(rot, torch.rot90(x, -1, dims=(2, 3)), atol=1e-4)       # clockwise as displayed


def _blob(u, v, size=28, sigma=1.5):
    """A Gaussian spot centred (u, v) pixels right of and below the image centre, and the pixel offsets."""
    c = torch.arange(size) + 0.5 - size / 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * sigma ** 2))[None, None], xx, yy


@pytest.mark.parametrize("angle, scale, dx, dy", [(0.0, 1.25, 0.0, 0.0), (0.0, 0.7, 0.0, 0.0),
                                                  (30.0, 1.2, 1.5, -2.0), (-45.0, 0.7, 3.0, 3.0)])
def test_rts_moves_a_spot_where_the_motion_puts_its_centre(angle, scale, dx, dy):
    """Independent truth: a spot at offset (u, v) from the centre goes to scale * R(angle) (u, v) + (dx, dy),
    R clockwise as displayed, and its mass is multiplied by scale^2 (area grows as the square)."""
    u, v = 4.0, 2.0
    spot, xx, yy = _blob(u, v)
    out = P.rts(spot, torch.tensor([[angle, scale, dx, dy]]))
    a = math.radians(angle)
    want = (scale * (u * math.cos(a) - v * math.sin(a)) + dx, scale * (u * math.sin(a) + v * math.cos(a)) + dy)
    mass = out.sum()
    got = (((out[0, 0] * xx).sum() / mass).item(), ((out[0, 0] * yy).sum() / mass).item())
    assert got == pytest.approx(want, abs=0.02)
    assert mass.item() == pytest.approx(scale ** 2 * spot.sum().item(), rel=1e-3)


@pytest.mark.parametrize("family", P.SET_FAMILIES)
def test_pairs_keep_parameters_in_range(digits, family):
    x, y = digits
    pairs = P.make_pairs(x, y, family, n_per_image=2, seed=0)
    assert pairs["x"].shape == pairs["x_tilde"].shape == (32, 1, 28, 28)
    assert pairs["params"].shape == (32, 5) and pairs["family"].shape == (32,)
    assert 0 <= pairs["x_tilde"].min() and pairs["x_tilde"].max() <= 1
    p = pairs["params"]
    r = pairs["family"] == 0
    assert (p[r, 0].abs() <= P.MAX_ANGLE).all() and (p[r, 2:4].abs() <= P.MAX_SHIFT).all()
    assert ((p[r, 1] >= P.SCALES[0]) & (p[r, 1] <= P.SCALES[1])).all()
    assert ((p[~r, 4] >= P.ELASTIC_RMS[0]) & (p[~r, 4] <= P.ELASTIC_RMS[1])).all()
    # the perturbations do move the digits, and the same seed gives the same pairs
    assert (pairs["x_tilde"] - pairs["x"]).flatten(1).norm(dim=1).min() > 0.5
    again = P.make_pairs(x, y, family, n_per_image=2, seed=0)
    assert torch.equal(again["x_tilde"], pairs["x_tilde"])


def test_elastic_displacement_size(digits):
    x, _ = digits
    small = P.elastic(x, torch.full((len(x),), 0.5), torch.Generator().manual_seed(0))
    large = P.elastic(x, torch.full((len(x),), 3.0), torch.Generator().manual_seed(0))
    d = lambda a: (a - x).flatten(1).norm(dim=1).mean()
    assert 0 < d(small) < d(large)


@pytest.mark.parametrize("generator", P.GENERATORS)
def test_cvae_shapes_and_finite_elbo(digits, generator):
    x, _ = digits
    torch.manual_seed(0)
    model = P.PerturbationCVAE(latent_dim=4, width=4, hidden=16, generator=generator)
    x_t = P.rts(x, P.sample_rts_params(len(x), torch.Generator().manual_seed(1)))
    out = model.elbo(x, x_t)
    assert out["elbo"].shape == out["rec"].shape == out["kl"].shape == (len(x),)
    assert torch.isfinite(out["elbo"]).all() and (out["kl"] >= 0).all()
    # against torch.distributions, with the same noise: the Bernoulli log-likelihood of x~ at one
    # posterior sample and the KL between the two diagonal Gaussians in closed form
    D = torch.distributions
    with torch.no_grad():
        torch.manual_seed(3)
        out = model.elbo(x, x_t)
        torch.manual_seed(3)
        mu_q, lv_q = model.posterior(torch.cat([x, x_t], dim=1))
        mu_p, lv_p = model.prior(x)
        z = mu_q + (0.5 * lv_q).exp() * torch.randn_like(mu_q)
        probs = model.generator(z, x).clamp(1e-6, 1 - 1e-6)
        rec = D.Bernoulli(probs=probs, validate_args=False).log_prob(x_t).flatten(1).sum(1)
        kl = D.kl_divergence(D.Normal(mu_q, (0.5 * lv_q).exp()), D.Normal(mu_p, (0.5 * lv_p).exp())).sum(1)
    assert torch.allclose(out["rec"], rec, rtol=1e-4)
    assert torch.allclose(out["kl"], kl, rtol=1e-4, atol=1e-5)
    assert torch.allclose(out["elbo"], rec - kl, rtol=1e-4, atol=1e-3)
    assert model.loss(x, x_t, beta=0.0).item() != model.loss(x, x_t, beta=5.0).item()
    mu, sigma = model.prior_params(x)
    assert mu.shape == sigma.shape == (len(x), 4) and (sigma > 0).all()
    g = model.generate(torch.zeros(len(x), 4), x)
    assert g.shape == x.shape and 0 <= g.min() and g.max() <= 1
    model.loss(x, x_t).backward()         # every network gets a gradient
    assert all(p.grad is not None for p in model.parameters())


def test_elbo_samples_z_from_the_posterior_and_scores_a_known_generator_in_closed_form():
    """A posterior fixed at N(m, diag(s^2)) with s far from 1 and a generator that outputs 1/2 everywhere:
    the sampled z must have mean m and standard deviation s, ``rec`` is 784 log(1/2) whatever x~ is, and
    ``kl`` is the Gaussian KL written out per dimension."""
    class Half(nn.Module):
        def forward(self, z, x):
            self.z = z
            return torch.full_like(x, 0.5)

    m, s = torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([[0.5, 0.25, 3.0]])
    mp, sp = torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.5]])
    cvae = P.PerturbationCVAE(latent_dim=3, width=4, hidden=8)
    cvae.posterior, cvae.prior = _FixedGaussian(m, 2 * s.log()), _FixedGaussian(mp, 2 * sp.log())
    cvae.generator = Half()
    n = 20000
    x, x_tilde = torch.zeros(n, 1, 28, 28), torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    with torch.no_grad():
        out = cvae.elbo(x, x_tilde)
    z = cvae.generator.z
    # the sample mean and std are within 5 standard errors of the posterior's
    assert (z.mean(0) - m[0]).abs().max() < 5 * s.max() / math.sqrt(n)
    assert torch.allclose(z.std(0), s[0], rtol=0.03)
    assert torch.allclose(out["rec"], torch.full((n,), 784 * math.log(0.5)), rtol=1e-5)
    kl = (torch.log(sp / s) + (s ** 2 + (m - mp) ** 2) / (2 * sp ** 2) - 0.5).sum()
    assert torch.allclose(out["kl"], kl.expand(n), rtol=1e-5)
    assert torch.allclose(out["elbo"], out["rec"] - kl, rtol=1e-5)

def test_kl_zero_iff_posterior_equals_prior():
    torch.manual_seed(0)
    mu, lv = torch.randn(5, 3), torch.randn(5, 3)
    assert torch.allclose(P.cvae_kl(mu, lv, mu, lv), torch.zeros(5), atol=1e-6)
    assert (P.cvae_kl(mu + 0.5, lv, mu, lv) > 0).all()
    # against torch.distributions
    q = torch.distributions.Normal(mu + 0.3, (0.5 * (lv - 0.2)).exp())
    p = torch.distributions.Normal(mu, (0.5 * lv).exp())
    ref = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(P.cvae_kl(mu + 0.3, lv - 0.2, mu, lv), ref, atol=1e-5)


@pytest.mark.parametrize("mode", ["ball", "sphere", "radial"])
def test_sample_set_radius(cvae, digits, mode):
    x, _ = digits
    eps = 1.7
    samples, u = P.sample_set(cvae, x, eps, n=5, mode=mode, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, len(x), 1, 28, 28) and u.shape == (5, len(x), 4)
    norms = u.norm(dim=-1)
    assert (norms <= eps + 1e-5).all()
    if mode == "sphere":
        assert torch.allclose(norms, torch.full_like(norms, eps), atol=1e-5)
    else:
        assert norms.min() < 0.95 * eps          # not all on the surface
    # the samples are the generator's points at those offsets
    with torch.no_grad():
        assert torch.allclose(samples[0], cvae.generate(u[0], x), atol=1e-6)



@pytest.mark.parametrize("mode, law", [("ball", lambda t, d: t ** d), ("radial", lambda t, d: t)])
def test_sample_set_radii_follow_their_law_and_directions_are_uniform(cvae, digits, mode, law):
    """Independent truth: uniform in the d-ball, P(||u|| <= t eps) = t^d; "radial", P = t (Kolmogorov-Smirnov
    on 1,600 offsets; the other law is rejected). The mean direction is 0 within 5 standard errors."""
    from scipy.stats import kstest
    x, _ = digits
    eps, d = 1.7, cvae.latent_dim
    _, u = P.sample_set(cvae, x, eps, n=100, mode=mode, generator=torch.Generator().manual_seed(0))
    t = (u.norm(dim=-1) / eps).flatten().double().numpy()
    other = (lambda t, d: t) if mode == "ball" else (lambda t, d: t ** d)
    assert kstest(law(t, d), "uniform").pvalue > 1e-3
    assert kstest(other(t, d), "uniform").pvalue < 1e-6
    direction = (u / u.norm(dim=-1, keepdim=True)).reshape(-1, d)
    assert direction.mean(0).abs().max() < 5 / math.sqrt(len(direction))

def test_latent_pgd_stays_in_radius_and_raises_the_loss(cvae, digits):
    x, y = digits
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    eps = 2.0
    x_adv, u = P.latent_pgd(cvae, clf, x, y, eps, steps=10, generator=torch.Generator().manual_seed(0))
    assert (u.norm(dim=1) <= eps + 1e-5).all()
    with torch.no_grad():
        assert torch.allclose(x_adv, cvae.generate(u, x), atol=1e-6)
        centre = F.cross_entropy(clf(cvae.generate(torch.zeros_like(u), x)), y, reduction="none")
        attacked = F.cross_entropy(clf(x_adv), y, reduction="none")
    assert attacked.mean() > centre.mean()
    # a larger radius finds at least as bad points on average
    x_big, _ = P.latent_pgd(cvae, clf, x, y, 4 * eps, steps=10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert F.cross_entropy(clf(x_big), y) > F.cross_entropy(clf(cvae.generate(torch.zeros_like(u), x)), y)



class _FixedGaussian(nn.Module):
    """A prior or posterior net that ignores its input: N(mu, diag(e^log_var)) for every image."""

    def __init__(self, mu, log_var):
        super().__init__()
        self.mu, self.log_var = nn.Parameter(mu, requires_grad=False), nn.Parameter(log_var, requires_grad=False)

    def forward(self, inp):
        return self.mu.expand(len(inp), -1), self.log_var.expand(len(inp), -1)


class _LinearGenerator(nn.Module):
    """g(z, x) = x + z A: the set S(x) is an ellipsoid of images around x."""

    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, z, x):
        return x + (z @ self.a).view_as(x)


def test_latent_projection_keeps_points_inside_the_ball_and_sends_the_others_to_its_surface():
    u = torch.tensor([[0.3, 0.4], [3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]])
    want = torch.tensor([[0.3, 0.4], [0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]])   # eps = 1: the nearest point of the ball
    assert torch.allclose(P._project(u, 1.0), want)
    v = torch.randn(500, 5, generator=torch.Generator().manual_seed(0)) * 2
    out = P._project(v, 1.5)
    inside = v.norm(dim=1) <= 1.5
    assert inside.any() and (~inside).any()
    assert torch.equal(out[inside], v[inside])
    assert torch.allclose(out[~inside].norm(dim=1), torch.full(((~inside).sum(),), 1.5))
    assert torch.allclose(out[~inside] / 1.5, v[~inside] / v[~inside].norm(dim=1, keepdim=True), atol=1e-6)


def _linear_set(d=3, c=0.2, sigma=None, mu=None, seed=0):
    """A CVAE whose set is linear: prior N(mu, diag(sigma^2)) (mu = 0 by default), posterior at 0 (the search
    starts at u = -mu / sigma, 0 by default), generator g = x + z A with A = c Q, Q's rows orthonormal."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(784, d, generator=g))
    sigma = torch.ones(1, d) if sigma is None else sigma
    cvae = P.PerturbationCVAE(latent_dim=d, width=4, hidden=8)
    cvae.prior = _FixedGaussian(torch.zeros(1, d) if mu is None else mu, 2 * sigma.log())
    cvae.posterior = _FixedGaussian(torch.zeros(1, d), torch.zeros(1, d))
    cvae.generator = _LinearGenerator(c * q.T)
    return cvae


def test_latent_pgd_finds_the_closed_form_worst_point_of_a_linear_set():
    """A linear generator g = x + (mu + sigma u) A and a linear two-class model: the cross-entropy of class 0
    grows with w.g, so the worst point of the ball is u* = eps v / ||v||, v = sigma (A w). PGD must reach it;
    with no steps it returns its random start (radius uniform in [0, eps])."""
    torch.manual_seed(0)
    eps, w, sigma = 1.5, torch.randn(784), torch.tensor([[1.0, 0.5, 2.0]])
    cvae = _linear_set(sigma=sigma, mu=torch.tensor([[0.3, -0.2, 0.1]]))
    a = cvae.generator.a
    clf = lambda img: torch.stack([torch.zeros(len(img)), img.flatten(1) @ w], 1)
    x, y = 0.01 * torch.rand(64, 1, 28, 28), torch.zeros(64, dtype=torch.long)    # moderate logits: no saturated loss
    v = sigma[0] * (a @ w)
    worst = eps * v / v.norm()
    x_adv, u = P.latent_pgd(cvae, clf, x, y, eps, steps=10, alpha=eps, generator=torch.Generator().manual_seed(0))
    assert (u - worst).norm(dim=1).max() < 0.02 * eps
    assert torch.allclose(x_adv, cvae.generate(u, x), atol=1e-6)
    _, start = P.latent_pgd(cvae, clf, x, y, eps, steps=0, generator=torch.Generator().manual_seed(0))
    r = start.norm(dim=1) / eps
    assert (r <= 1 + 1e-6).all() and r.min() < 0.2 and r.max() > 0.8
    assert ((start - worst).norm(dim=1) > 0.1).all()


def test_approximation_error_shrinks_with_radius(cvae, digits):
    x, _ = digits
    x_t = P.rts(x, P.sample_rts_params(len(x), torch.Generator().manual_seed(1)))
    e0 = P.approximation_error(cvae, x, x_t, 0.0)
    e2 = P.approximation_error(cvae, x, x_t, 3.0, steps=10)
    with torch.no_grad():
        centre = (cvae.generate(torch.zeros(len(x), 4), x) - x_t).flatten(1).norm(dim=1)
    assert torch.allclose(e0, centre, atol=1e-4)
    assert (e2 <= e0 + 1e-4).all() and e2.mean() < e0.mean()



def test_approximation_error_is_the_distance_to_a_linear_set_in_closed_form():
    """With g = x + c u Q and an isotropic prior, ||g(u) - x~|| = c ||u - u_t|| for x~ = g(u_t): the error over
    the ball is c (||u_t|| - eps) for a target outside it, and at most c alpha / 2 for one inside (the
    default 30 steps of alpha = 2.5 eps / 30 walk to it from the centre)."""
    c, eps = 0.2, 2.0
    cvae = _linear_set(c=c)
    g = torch.Generator().manual_seed(1)
    direction = torch.randn(8, 3, generator=g)
    direction = direction / direction.norm(dim=1, keepdim=True)
    x = 0.5 * torch.ones(8, 1, 28, 28)
    with torch.no_grad():
        outside = cvae.generate(3.0 * direction, x)
        inside = cvae.generate(0.5 * eps * direction, x)
    err = P.approximation_error(cvae, x, outside, eps)
    assert torch.allclose(err, torch.full((8,), c * (3.0 - eps)), rtol=1e-4)
    err = P.approximation_error(cvae, x, inside, eps)
    assert (err <= c * (2.5 * eps / 30) / 2 + 1e-5).all()
    assert torch.allclose(P.approximation_error(cvae, x, inside, 0.0), torch.full((8,), c * 0.5 * eps), rtol=1e-4)



def test_approximation_error_starts_at_the_posterior_offset():
    """With no steps the error is that of the start: the posterior mean's offset (mu_q - mu) / sigma in the
    prior's normalised coordinates, projected on the ball; there g = x + mu_q A (inside) or the projected point."""
    m_p, sigma, mu_q = torch.tensor([[0.5, -1.0, 0.2]]), torch.tensor([[2.0, 0.5, 1.5]]), torch.tensor([[1.0, 0.0, -0.4]])
    cvae = _linear_set(c=0.3)
    cvae.prior = _FixedGaussian(m_p, 2 * sigma.log())
    cvae.posterior = _FixedGaussian(mu_q, torch.zeros(1, 3))
    a = cvae.generator.a
    x = 0.5 * torch.ones(4, 1, 28, 28)
    x_t = x + 0.05 * torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    offset = (mu_q - m_p) / sigma                                  # norm about 2.1
    for eps in (10.0, 1.0):
        u0 = offset * min(1.0, eps / offset.norm().item())
        want = (x + ((m_p + sigma * u0) @ a).view(1, 1, 28, 28) - x_t).flatten(1).norm(dim=1)
        assert torch.allclose(P.approximation_error(cvae, x, x_t, eps, steps=0), want, rtol=1e-5)

@pytest.mark.parametrize("steps", [1, 10])
def test_latent_searches_use_their_documented_step_sizes(steps):
    """latent_pgd: alpha = 2.5 eps / steps; approximation_error: 2.5 max(eps, 1e-3) / steps, 30 steps."""
    cvae = _linear_set(sigma=torch.tensor([[1.0, 0.5, 2.0]]))
    torch.manual_seed(0)
    w = torch.randn(784)
    clf = lambda img: torch.stack([torch.zeros(len(img)), img.flatten(1) @ w], 1)
    x, y = 0.01 * torch.rand(16, 1, 28, 28), torch.zeros(16, dtype=torch.long)
    with torch.no_grad():       # targets outside every ball tried: each step gets closer
        x_t = cvae.generate(3.0 * torch.randn(16, 3).sign(), x)
    cvae.posterior = _FixedGaussian(torch.tensor([[0.1, -0.1, 0.05]]), torch.zeros(1, 3))   # start off-centre
    for eps in (0.5, 2.0):
        run = lambda **kw: P.latent_pgd(cvae, clf, x, y, eps, steps=steps, generator=torch.Generator().manual_seed(0), **kw)[1]
        assert torch.equal(run(), run(alpha=2.5 * eps / steps))
        assert not torch.equal(run(), run(alpha=3.5 * eps / steps))
        err = lambda **kw: P.approximation_error(cvae, x, x_t, eps, **kw)
        assert torch.equal(err(steps=steps), err(steps=steps, alpha=2.5 * eps / steps))
        assert not torch.equal(err(steps=steps), err(steps=steps, alpha=3.5 * eps / steps))
    assert torch.equal(P.approximation_error(cvae, x, x_t, 1.0), P.approximation_error(cvae, x, x_t, 1.0, steps=30))
    assert not torch.equal(P.approximation_error(cvae, x, x_t, 1.0), P.approximation_error(cvae, x, x_t, 1.0, steps=29))

def test_latent_radius_matches_definition(cvae, digits):
    x, _ = digits
    x_t = x.flip(-1)
    r = P.latent_radius(cvae, x, x_t)
    with torch.no_grad():
        mu, sigma = cvae.prior_params(x)
        mu_q, _ = cvae.posterior(torch.cat([x, x_t], 1))
    assert torch.allclose(r, ((mu_q - mu) / sigma).norm(dim=1), atol=1e-5)


def test_distance_to_family_finds_the_true_grid_point(digits):
    x, _ = digits
    grid = P.rts_grid(5, 3, 3)
    params = grid[[7, 30, 100]]
    samples = torch.stack([P.rts(x[:3], params)])            # (1, 3, 1, 28, 28)
    dist, best = P.distance_to_family(samples, x[:3], grid)
    assert (dist < 1e-2).all()          # cdist works through matrix products: tiny rounding
    assert torch.allclose(best[0], params)
    # the default grid is rts_grid()'s; a sample off the grid is at its true distance from the nearest point
    default = P.rts_grid()
    on = P.rts(x[:2], default[[5, 2000]])
    off = on + 0.1 * torch.ones_like(on)
    dist, best = P.distance_to_family(torch.stack([on, off]), x[:2])
    assert (dist[0] < 1e-2).all() and torch.allclose(best[0], default[[5, 2000]])
    assert torch.allclose(dist[1], torch.full((2,), 0.1 * 28), atol=1e-2) and torch.allclose(best[1], best[0])


def test_bad_parameters_raise(cvae, digits):
    x, y = digits
    for bad in (-1.0, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="eps"):
            P.sample_set(cvae, x, bad)
        with pytest.raises(ValueError, match="eps"):
            P.latent_pgd(cvae, lambda t: t.flatten(1)[:, :10], x, y, bad)
    with pytest.raises(ValueError, match="family"):
        P.make_pairs(x, y, "shear")
    with pytest.raises(ValueError, match="family"):
        P.CVAEConfig(family="shear")
    with pytest.raises(ValueError, match="generator"):
        P.CVAEConfig(generator="gan")
    with pytest.raises(ValueError, match="method"):
        P.RobustClassifierConfig(method="trades")
    with pytest.raises(ValueError, match="eps"):
        P.RobustClassifierConfig(eps=-2.0)
    with pytest.raises(ValueError, match="mode"):
        P.sample_set(cvae, x, 1.0, mode="cube")
    with pytest.raises(ValueError, match="Unknown CVAEConfig field"):
        P.get_cvae(epoch=3)
    with pytest.raises(ValueError, match="scale"):
        P.rts(x[:1], torch.tensor([[0.0, 0.0, 0.0, 0.0]]))


def test_cvae_and_classifier_go_through_the_cache():
    cfg = P.CVAEConfig(n_val=3900, pairs_per_image=1, latent_dim=2, width=4, hidden=8, epochs=1, batch_size=256)
    m1, h1 = P.get_cvae(cfg, device="cpu")
    m2, h2 = P.get_cvae(cfg, device="cpu")
    assert h1 == h2 and len(h1["val_elbo"]) == 1 and math.isfinite(h1["val_elbo"][0])
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert rv.cache.checkpoint_path(cfg).exists()


def test_grid_worst_case_is_the_minimum_over_the_grid():
    """A classifier that is right only on the untransformed image (it recognises one exact
    image) is robust on no grid that moves the image, and on a grid holding only the identity
    it is right everywhere; the early-exit search gives the verdicts of the exhaustive one."""
    torch.manual_seed(0)
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0                          # a bar: rotation and shifts move it
    y = torch.tensor([0, 0, 0, 0])

    class Exact(nn.Module):
        def forward(self, v):
            same = (v - x[:1]).flatten(1).abs().amax(1) < 1e-4
            return torch.stack([same.float(), (~same).float()], 1)

    clf = Exact()
    identity = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    assert bool(P.grid_worst_case(clf, x, y, identity).all())
    assert bool(P._correct_under(clf, x, y, identity[0], 10).all())
    grid = P.rts_grid(3, 3, 3)                          # 81 points, identity among them
    assert not bool(P.grid_worst_case(clf, x, y, grid, batch_size=3).any())
    acc = torch.stack([P._correct_under(clf, x, y, p, 3).float().mean() for p in grid])
    centre = ((grid - identity).abs().sum(1) < 1e-6).nonzero().flatten()
    assert len(centre) == 1 and acc[centre].item() == 1.0 and acc.sum().item() == 1.0
    with pytest.raises(ValueError, match="shape"):
        P.grid_worst_case(clf, x, y, torch.zeros(3, 3))



def test_grid_worst_case_visits_the_grid_farthest_from_the_identity_first(monkeypatch):
    """The documented order: every grid point once, by |angle| / 45 + |scale - 1| / 0.3 + |dx| / 3 + |dy| / 3
    (each range's half-width) from largest to smallest; ties in grid order."""
    seen = []
    monkeypatch.setattr(P, "_correct_under", lambda clf, x, y, params, bs: seen.append(params) or torch.ones(len(x), dtype=torch.bool))
    corners = P.rts_grid(2, 2, 2)
    grid = torch.cat([P.sample_rts_params(200, torch.Generator().manual_seed(0)), corners])   # no ties but the corners
    P.grid_worst_case(nn.Identity(), torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), grid)
    seen = torch.stack(seen)
    far = (seen[:, 0].abs() / 45 + (seen[:, 1] - 1).abs() / 0.3 + seen[:, 2].abs() / 3 + seen[:, 3].abs() / 3)
    assert len(seen) == len(grid) and (far[1:] <= far[:-1] + 1e-5).all()
    assert torch.allclose(far[:16], torch.full((16,), 4.0))              # the 16 corners first
    # an image leaves the search at its first misclassified copy: when none is left, the search stops
    calls = []
    monkeypatch.setattr(P, "_correct_under", lambda clf, x, y, params, bs: calls.append(params) or torch.zeros(len(x), dtype=torch.bool))
    P.grid_worst_case(nn.Identity(), torch.ones(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), grid)   # not memoized
    assert len(calls) == 1


def test_grid_worst_case_agrees_with_the_exhaustive_search(digits):
    """On a real (tiny) classifier and random digits: robust exactly where every grid point is
    classified correctly, whatever order the early-exit search visits them in."""
    x, y = digits
    x, y = x[:24], y[:24]
    torch.manual_seed(1)
    clf = rv.Classifier(width=4).eval()
    grid = P.rts_grid(3, 3, 3)
    per_point = torch.stack([P._correct_under(clf, x, y, p, 10) for p in grid])   # (G, B)
    assert torch.equal(P.grid_worst_case(clf, x, y, grid, batch_size=10), per_point.all(0))

"""r-robustness (Camuto et al., AISTATS 2021): the Monte-Carlo test and the margins.

Most checks use :class:`LinearGaussianVAE`, where the probability is a non-central chi-square
and the margin is known in closed form.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

import robustvae as rv
from robustvae import rrobust as rr

R = 1.517  # with s = 0.5, c = 1, d = 2: P(||Delta|| <= R) = 0.9 at delta = 0


@pytest.fixture(scope="module")
def linear():
    """d = 2 latent dimensions, D = 16 pixels; A has singular values 3 and 1."""
    g = torch.Generator().manual_seed(1)
    u = torch.randn(16, generator=g)
    u = u / u.norm()
    v = torch.randn(16, generator=g)
    v = v - (v @ u) * u
    v = v / v.norm()
    A = torch.stack([3 * u, v])
    model = rr.LinearGaussianVAE(A, s=0.5, c=1.0, shape=(1, 4, 4))
    x = torch.full((4, 1, 4, 4), 0.5)
    return model, x, u.view(1, 4, 4)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_binomial_intervals_contain_the_estimate_and_shrink():
    k = torch.tensor([0, 5, 50, 100])
    for method in rr.CI_METHODS:
        lo, hi = rr.binomial_interval(k, 100, 0.95, method)
        p = k.float() / 100
        assert (lo <= p + 1e-6).all() and (p <= hi + 1e-6).all()
        assert lo[0] < 1e-6 and hi[-1] > 1 - 1e-6
        lo2, hi2 = rr.binomial_interval(k * 10, 1000, 0.95, method)
        assert ((hi2 - lo2)[1:3] < (hi - lo)[1:3]).all()
    # Wilson at 50/100: 0.5 +- 0.0962 (textbook value)
    lo, hi = rr.binomial_interval(torch.tensor([50]), 100, 0.95, "wilson")
    assert abs(hi.item() - 0.5962) < 1e-3 and abs(lo.item() - 0.4038) < 1e-3
    # Clopper-Pearson is the more conservative one
    lo_cp, hi_cp = rr.binomial_interval(torch.tensor([50]), 100, 0.95, "clopper-pearson")
    assert lo_cp < lo and hi_cp > hi


def test_monte_carlo_probability_matches_the_closed_form(linear):
    model, x, u = linear
    assert abs(model.p0(R) - 0.9) < 1e-3
    for t in (0.0, 0.3, 0.6):
        delta = (t * u).expand_as(x)
        exact = model.probability(delta, R)
        est = rr.r_robust_probability(model, x, delta, R, n_samples=4000, generator=gen())
        # a 99.9% interval around the estimate: each row fails with probability 1e-3
        lo, hi = rr.binomial_interval((est.p * 4000).round(), 4000, 0.999)
        assert ((lo <= exact) & (exact <= hi)).all(), (t, est.p, exact)


def test_is_r_robust_flips_at_the_exact_margin(linear):
    model, x, u = linear
    margin = model.margin(R)
    assert 0.4 < margin < 0.5
    inside = rr.r_robust_probability(model, x, (0.85 * margin * u).expand_as(x), R, 3000, generator=gen(1))
    outside = rr.r_robust_probability(model, x, (1.15 * margin * u).expand_as(x), R, 3000, generator=gen(2))
    assert inside.surely_robust.all() and outside.surely_not_robust.all()
    assert rr.is_r_robust(model, x, None, R, 500, generator=gen(3)).all()
    # a direction A barely moves is far safer
    v = torch.randn(16, generator=gen(4))
    w = v - (v @ model.A.T) @ torch.linalg.pinv(model.A.T)  # in the null space of A
    w = (w / w.norm()).view(1, 4, 4)
    assert rr.is_r_robust(model, x, (0.45 * w).expand_as(x), R, 2000, generator=gen(5)).all()


def test_empirical_margin_finds_the_exact_margin_along_the_attack(linear):
    model, x, _ = linear
    exact = model.margin(R)
    radii = np.geomspace(0.05, 1.0, 12)
    for stop in (False, True):
        res = rr.empirical_margin(model, x, R, radii, rr.max_damage_attack(steps=20, generator=gen()),
                                  n_samples=2000, refine_steps=6, generator=gen(1), stop_when_broken=stop)
        assert res.found.all()
        assert ((res.margin - exact).abs() < 0.05 * exact).all(), (res.margin, exact)
        assert res.prob.shape == (12, 4) and res.distances.shape == (12, 4, 2000)
        assert (res.p_at_margin <= 0.5).all()
        assert torch.allclose(res.perturbation.flatten(1).norm(dim=1), res.margin, rtol=1e-4)
        if stop:  # broken inputs are not evaluated again
            assert torch.isnan(res.prob[-1]).all()
    # a random direction needs a larger perturbation (A has a 14-dimensional null space)
    rnd = rr.empirical_margin(model, x, R, np.geomspace(0.05, 2.0, 12), rr.random_attack(gen(2)),
                              n_samples=1000, refine_steps=4, generator=gen(3))
    assert (rnd.margin > 1.5 * exact).all()
    # nothing breaks below the smallest radius the search was allowed: margin is inf
    none = rr.empirical_margin(model, x, R, [0.01, 0.02], rr.max_damage_attack(steps=5), n_samples=500)
    assert not none.found.any() and torch.isinf(none.margin).all()


def test_encoder_kl_attack_stays_in_budget_and_box(linear):
    model, x, u = linear
    x_adv = rr.encoder_kl_attack(steps=10, generator=gen())(model, x, 0.3, None)
    assert ((x_adv - x).flatten(1).norm(dim=1) <= 0.3 + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # on the linear model the KL is largest along the top singular vector u
    cos = ((x_adv - x).flatten(1) @ u.flatten()).abs() / (x_adv - x).flatten(1).norm(dim=1)
    assert (cos > 0.95).all()


def test_theoretical_margins_on_the_linear_model(linear):
    model, x, _ = linear
    p0 = torch.full((len(x),), model.p0(R))
    th = rr.theoretical_margins(model, x, p0)
    phi = float(torch.special.ndtri(torch.tensor(model.p0(R), dtype=torch.float64)))
    assert torch.allclose(th["latent"], torch.tensor(phi), atol=1e-5)
    assert torch.allclose(th["jac_fro"], torch.tensor(math.sqrt(10.0)), atol=1e-4)       # ||A||_F
    assert torch.allclose(th["paper"], torch.tensor(0.5 * phi / math.sqrt(10.0)), atol=1e-5)
    assert torch.allclose(th["whitened"], torch.tensor(0.5 * phi / 3.0), atol=1e-5)       # s phi / ||A||_2
    # here the theorem's assumptions hold exactly (linear mean, fixed variance): strict bounds
    assert (th["paper"] <= th["whitened"]).all() and (th["whitened"] <= model.margin(R)).all()
    assert (th["latent"] <= model.whitened_margin(R)).all()
    # no margin at all when p0 <= 1/2
    assert (rr.theoretical_margins(model, x, torch.full((4,), 0.4))["paper"] == 0).all()
    # clipping keeps Phi^{-1} finite when every sampled pair was within r
    assert torch.isfinite(rr.theoretical_margins(model, x, torch.ones(4), n_samples=100)["latent"]).all()


def test_latent_margin_respects_the_gaussian_shift_bound(linear):
    model, x, _ = linear
    res = rr.empirical_latent_margin(model, x, R, np.geomspace(0.1, 5, 12), n_samples=2000,
                                     refine_steps=6, generator=gen())
    exact = model.whitened_margin(R)
    assert ((res.margin - exact).abs() < 0.05 * exact).all()
    phi = float(torch.special.ndtri(torch.tensor(model.p0(R), dtype=torch.float64)))
    assert (res.margin >= phi).all()


@pytest.mark.slow
def test_gaussian_shift_bound_on_a_nonlinear_vae():
    """P(shifted) >= Phi(Phi^{-1}(p0) - ||h||) for any decoder: a test that can fail."""
    torch.manual_seed(0)
    vae = rv.VAE(latent_dim=4, width=8, hidden=32).eval()
    x = rv.load_dataset("mnist-5k", "test")[0][:6]
    n = 3000
    ref = rr.stochastic_reconstructions(vae, x, n, generator=gen())
    d0 = rr.reconstruction_distances(vae, x, x, n, ref, generator=gen(1))
    r = float(d0.median(dim=1).values.max() * 1.3)
    p0 = rr.probability_from_distances(d0, r).p.double()
    h = torch.randn(6, 4, generator=gen(2))
    h = 0.8 * h / h.norm(dim=1, keepdim=True)
    d = rr.reconstruction_distances(vae, x, x, n, ref, whitened_shift=h, generator=gen(3))
    p = rr.probability_from_distances(d, r).p.double()
    bound = torch.special.ndtr(torch.special.ndtri(p0.clamp(max=1 - 1e-4)) - 0.8)
    assert (p >= bound - 0.04).all(), (p, bound)


def test_sampling_is_reproducible_and_shaped():
    torch.manual_seed(0)
    vae = rv.VAE(latent_dim=4, width=8, hidden=32).eval()
    x = torch.rand(3, 1, 28, 28, generator=gen())
    a = rr.stochastic_reconstructions(vae, x, 5, generator=gen(7))
    b = rr.stochastic_reconstructions(vae, x, 5, generator=gen(7))
    assert a.shape == (5, 3, 1, 28, 28) and torch.equal(a, b)
    noisy = rr.stochastic_reconstructions(vae, x, 5, decoder_noise=True, generator=gen(7))
    assert set(noisy.unique().tolist()) <= {0.0, 1.0}
    d = rr.reconstruction_distances(vae, x, None, 5, generator=gen())
    assert d.shape == (3, 5) and (d > 0).all()


def test_jacobians_match_autograd_and_finite_differences():
    torch.manual_seed(0)
    vae = rv.VAE(latent_dim=3, width=8, hidden=32).eval()
    x = torch.rand(2, 1, 28, 28, generator=gen())
    J = rr.encoder_jacobian(vae, x)
    assert J.shape == (2, 3, 784)
    x0 = x[:1].clone().requires_grad_(True)
    (row,) = torch.autograd.grad(vae.encode(x0)[0][0, 1], x0)
    assert torch.allclose(J[0, 1], row.flatten(), atol=1e-5)
    vae = vae.double()
    z = torch.randn(2, 3, generator=gen(1), dtype=torch.float64)
    Jg = rr.decoder_jacobian(vae, z)
    assert Jg.shape == (2, 784, 3)
    e = 1e-5 * torch.eye(3, dtype=torch.float64)[0]
    with torch.no_grad():
        fd = (vae.mean_image(vae.decode(z + e)) - vae.mean_image(vae.decode(z - e))).flatten(1) / 2e-5
    assert torch.allclose(Jg[:, :, 0], fd, atol=1e-7)


def test_bad_arguments_raise_clear_errors(linear):
    model, x, _ = linear
    with pytest.raises(ValueError, match="r must be a positive"):
        rr.r_robust_probability(model, x, None, r=0.0)
    with pytest.raises(ValueError, match="n_samples"):
        rr.r_robust_probability(model, x, None, r=1.0, n_samples=0)
    with pytest.raises(ValueError, match="confidence"):
        rr.r_robust_probability(model, x, None, r=1.0, confidence=1.5)
    with pytest.raises(ValueError, match="interval method"):
        rr.binomial_interval(torch.tensor([1]), 10, method="exact")
    with pytest.raises(ValueError, match="radii"):
        rr.empirical_margin(model, x, 1.0, [0.5, 0.2], rr.random_attack())
    with pytest.raises(ValueError, match="p0"):
        rr.theoretical_margins(model, x, torch.full((3,), 0.9))
    with pytest.raises(ValueError, match="shape"):
        rr.reconstruction_distances(model, x, x[:2], 5)


# --- the L-BFGS-B maximum-damage attack and the margin portfolio --------------------------
@pytest.fixture(scope="module")
def tiny_vae():
    torch.manual_seed(0)
    vae = rv.VAE(latent_dim=4, width=8, hidden=32).eval()
    x = rv.load_dataset("mnist-5k", "test")[0][:5]
    return vae, x


def _damage(vae, x, x_adv):
    with torch.no_grad():
        return (vae.reconstruct(x_adv, sample=False) - vae.reconstruct(x, sample=False)).flatten(1).norm(dim=1)


def test_lbfgs_damage_attack_respects_ball_and_box(linear, tiny_vae):
    model, x, u = linear
    for eps in (0.05, 0.3, 3.0):
        x_adv = rr.lbfgs_damage_attack(starts=2, max_iter=15, generator=gen())(model, x, eps, None)
        assert ((x_adv - x).flatten(1).norm(dim=1) <= eps + 1e-5).all()
        assert x_adv.min() >= 0 and x_adv.max() <= 1
    # inside the box the worst direction is the top singular vector u, at the full budget
    x_adv = rr.lbfgs_damage_attack(starts=2, max_iter=20, generator=gen())(model, x, 0.3, None)
    d = (x_adv - x).flatten(1)
    assert ((d @ u.flatten()).abs() / d.norm(dim=1) > 0.99).all()
    assert torch.allclose(d.norm(dim=1), torch.full((4,), 0.3), atol=1e-4)
    # MNIST digits sit on the box (most pixels are 0): the box binds, the ball too
    vae, xm = tiny_vae
    for eps in (0.5, 2.0):
        xa = rr.lbfgs_damage_attack(starts=2, max_iter=10, generator=gen())(vae, xm, eps, None)
        assert ((xa - xm).flatten(1).norm(dim=1) <= eps + 1e-5).all()
        assert xa.min() >= 0 and xa.max() <= 1
        assert (_damage(vae, xm, xa) > 0).all()
    assert torch.equal(rr.lbfgs_damage_attack()(vae, xm, 0.0, None), xm)


def test_lbfgs_more_starts_never_lower_the_damage(tiny_vae):
    vae, x = tiny_vae
    one = rr.lbfgs_damage_attack(starts=1, max_iter=10, generator=gen(4))(vae, x, 1.5, None)
    four = rr.lbfgs_damage_attack(starts=4, max_iter=10, generator=gen(4))(vae, x, 1.5, None)
    assert (_damage(vae, x, four) >= _damage(vae, x, one) - 1e-6).all()


class _Sharp(torch.nn.Module):
    """A VAE with its encoder noise switched off (sigma = e^-15): r-robustness becomes the
    deterministic test ``||g(mu(x + delta)) - g(mu(x))|| <= r``, with no Monte-Carlo error."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def encode(self, x):
        mu, _ = self.vae.encode(x)
        return mu, torch.full_like(mu, -30.0)

    def decode(self, z):
        return self.vae.decode(z)

    def mean_image(self, logits):
        return self.vae.mean_image(logits)

    def reconstruct(self, x, sample=False):
        return self.mean_image(self.decode(self.encode(x)[0]))


def test_more_starts_never_make_the_margin_larger(tiny_vae):
    """Without Monte-Carlo error, more starts (the same first start) never break an input at a
    later radius of the grid: the margin with 4 starts is at most the grid radius that
    bracketed the margin with 1 start."""
    vae, x = tiny_vae
    sharp = _Sharp(vae)
    x_one = rr.lbfgs_damage_attack(starts=1, max_iter=2, generator=gen(5))(sharp, x, 1.0, None)
    r = float(_damage(sharp, x, x_one).median())
    radii = np.geomspace(0.2, 4.0, 9)
    m = {k: rr.empirical_margin(sharp, x, r, radii, rr.lbfgs_damage_attack(starts=k, max_iter=2, generator=gen(5)),
                                n_samples=5, refine_steps=0, generator=gen(1)).margin for k in (1, 4)}
    assert torch.isfinite(m[1]).any()
    bracket = torch.tensor([radii[radii >= v - 1e-5].min() if np.isfinite(v) else np.inf
                            for v in m[1].tolist()], dtype=torch.float32)
    assert (m[4] <= bracket + 1e-5).all(), (m, bracket)


def test_portfolio_margin_is_the_smallest_and_exact_on_the_linear_model(linear):
    model, x, _ = linear
    exact = model.margin(R)
    attacks_ = {"random": rr.random_attack(gen(2)),
                "max-damage": rr.max_damage_attack(steps=20, generator=gen()),
                "L-BFGS-B": rr.lbfgs_damage_attack(starts=2, max_iter=10, generator=gen(3))}
    port = rr.portfolio_margin(model, x, R, np.geomspace(0.05, 2.0, 14), attacks_,
                               budgets={"max-damage": "20 steps, 1 restart"}, n_samples=2000, refine_steps=6,
                               generator=gen(1), options={"random": {"refine_steps": 2}})
    stack = torch.stack([port.margins[a] for a in attacks_])
    assert (port.margin <= stack + 1e-6).all() and torch.equal(port.margin, stack.min(0).values)
    assert ((port.margin - exact).abs() < 0.05 * exact).all(), (port.margin, exact)
    for i, name in enumerate(port.best_attack):
        assert port.margins[name][i] == port.margin[i] and name != "random"
    assert torch.allclose(port.perturbation.flatten(1).norm(dim=1), port.margin, rtol=1e-4)
    table = port.summary()
    assert list(table.index) == list(attacks_) and table.loc["max-damage", "budget"] == "20 steps, 1 restart"
    assert table.loc["random", "budget"] == "-" and table["best"].sum() == len(x)
    assert table.loc["random", "lowered"] == 0 and np.isnan(table.loc["random", "median drop"])
    assert (table["lowered"] <= table["best"]).all()
    # the summary on hand-made margins: what "lowered" and "median drop" count
    hand = rr.PortfolioMargin.from_margins({"a": torch.tensor([1.0, 2.0, math.inf, 4.0]),
                                            "b": torch.tensor([1.5, 1.0, 3.0, math.inf])})
    assert hand.best_attack == ["a", "b", "b", "a"] and hand.margin.tolist() == [1.0, 1.0, 3.0, 4.0]
    t = hand.summary()
    assert t.loc["a", "lowered"] == 2 and t.loc["a", "newly broken"] == 1 and t.loc["a", "median drop"] == 0.5
    assert t.loc["b", "lowered"] == 2 and t.loc["b", "newly broken"] == 1 and t.loc["b", "median drop"] == 1.0
    with pytest.raises(ValueError, match="at least one"):
        rr.portfolio_margin(model, x, R, [0.1], {})
    with pytest.raises(ValueError, match="not in the portfolio"):
        rr.portfolio_margin(model, x, R, [0.1], attacks_, options={"pgd": {}})
    with pytest.raises(ValueError, match="starts"):
        rr.lbfgs_damage_attack(starts=0)


@pytest.mark.parametrize("quantile", [0.6, 0.9, 0.97])
def test_noise_scale_r_is_the_closed_form_quantile_of_the_self_distance(linear, quantile):
    """||Delta(x)||^2 / (2 c^2 s^2) is chi-square with d = 2: r = c s sqrt(2 chi2.ppf(q, 2))."""
    model, x, _ = linear
    r = rr.noise_scale_r(model, x, quantile, n_samples=20000, generator=gen(3))
    exact = 0.5 * math.sqrt(2 * scipy_stats.chi2.ppf(quantile, 2))
    assert r == pytest.approx(exact, rel=0.02)
    assert model.p0(r) == pytest.approx(quantile, abs=0.01)
    if quantile == 0.9:
        assert r == pytest.approx(R, rel=0.02)


class _NoisyPerInput(torch.nn.Module):
    """mu = 0 in two latent dimensions, sigma(x) = the input's first pixel, g(z) = z."""
    likelihood = "identity"

    def encode(self, x):
        s = x.flatten(1)[:, :1].expand(-1, 2)
        return torch.zeros_like(s), 2 * s.log()

    def decode(self, z):
        return z

    def mean_image(self, logits):
        return logits


def test_noise_scale_r_takes_the_median_input_not_the_pooled_distances():
    x = torch.tensor([0.2, 0.5, 2.0]).view(3, 1)
    r = rr.noise_scale_r(_NoisyPerInput(), x, 0.9, n_samples=20000, generator=gen(4))
    per_input = math.sqrt(2 * scipy_stats.chi2.ppf(0.9, 2)) * x.flatten()
    assert r == pytest.approx(per_input[1].item(), rel=0.02)  # the middle input's own quantile


@pytest.mark.parametrize("quantile", [0.5, 1.0, 0.3])
def test_noise_scale_r_refuses_a_quantile_at_which_the_input_is_not_r_robust(linear, quantile):
    model, x, _ = linear
    with pytest.raises(ValueError, match="quantile"):
        rr.noise_scale_r(model, x, quantile)

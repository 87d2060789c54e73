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


# --- mutation-testing additions: independent references ------------------------------------
@pytest.mark.parametrize("n", [1, 7, 40])
@pytest.mark.parametrize("confidence", [0.8, 0.99])
@pytest.mark.parametrize("method, scipy_method", [("wilson", "wilson"), ("clopper-pearson", "exact")])
def test_binomial_interval_matches_scipy_for_every_count(n, confidence, method, scipy_method):
    """Both intervals equal SciPy's ``binomtest(k, n).proportion_ci`` (Wilson score without
    continuity correction; Clopper-Pearson = ``"exact"``) for every count k = 0..n."""
    k = torch.arange(n + 1)
    lo, hi = rr.binomial_interval(k, n, confidence, method)
    ref = np.array([scipy_stats.binomtest(j, n).proportion_ci(confidence, scipy_method) for j in range(n + 1)])
    assert lo.dtype == hi.dtype == torch.float32
    np.testing.assert_allclose(lo.numpy(), ref[:, 0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(hi.numpy(), ref[:, 1], atol=1e-6, rtol=0)


def test_probability_estimate_decisions_at_exactly_one_half():
    """The definition is strict: r-robust iff p > 1/2 (so p = 1/2 is not robust); surely robust
    iff the lower bound > 1/2; surely not robust iff the upper bound <= 1/2."""
    v = torch.tensor([0.25, 0.5, 0.75])
    est = rr.ProbabilityEstimate(p=v, lower=v, upper=v, n_samples=10, r=1.0)
    assert est.robust.tolist() == [False, False, True]
    assert est.surely_robust.tolist() == [False, False, True]
    assert est.surely_not_robust.tolist() == [True, True, False]


def test_probability_from_distances_counts_ties_as_within_r():
    """P(dist <= r): a distance equal to r counts as within r; the interval is the binomial one."""
    d = torch.tensor([[0.5, 1.0, 1.5, 2.0], [1.0, 1.0, 1.0, 1.0], [2.0, 3.0, 4.0, 5.0]])
    est = rr.probability_from_distances(d, 1.0, 0.9, "clopper-pearson")
    assert est.p.tolist() == [0.5, 1.0, 0.0] and est.n_samples == 4 and est.r == 1.0
    ref = [scipy_stats.binomtest(k, 4).proportion_ci(0.9, "exact") for k in (2, 4, 0)]
    np.testing.assert_allclose(est.lower.numpy(), [c.low for c in ref], atol=1e-6)
    np.testing.assert_allclose(est.upper.numpy(), [c.high for c in ref], atol=1e-6)


def _small_linear(s=0.1, c=2.0, **kw):
    """d = 2, D = 3; mu(x) = A x with A = [[1, 0, 0], [0, 2, 1]]."""
    return rr.LinearGaussianVAE(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]]), s=s, c=c, **kw)


def test_stochastic_reconstructions_follow_the_gaussian_law_of_the_linear_model():
    """f(x) = c (A x + s (eps + h)), eps ~ N(0, I): mean c (A x + s h), covariance c^2 s^2 I,
    and without decoder noise unless asked (the default, as in Camuto et al. Sec. 3)."""
    model = _small_linear()
    x = torch.tensor([[0.5, 0.2, 0.4], [0.0, 1.0, -1.0]])
    mean = 2.0 * (x @ model.A.T)
    h = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    for shift, expected in ((None, mean), (h, mean + 2.0 * 0.1 * h)):
        out = rr.stochastic_reconstructions(model, x, 20000, whitened_shift=shift, generator=gen(2))
        assert out.shape == (20000, 2, 2)
        assert torch.allclose(out.mean(0), expected, atol=0.01), (out.mean(0), expected)
        assert torch.allclose(out.var(0), torch.full((2, 2), 0.04), rtol=0.05), out.var(0)


def test_gaussian_decoder_noise_adds_the_observation_variance():
    """With decoder noise and a Gaussian p(x|z) = N(g(z), obs_std^2): variance c^2 s^2 + obs_std^2,
    obs_std falling back to the library VAE's default 0.1 for a model that states none."""
    x = torch.tensor([[0.5, 0.2, 0.4]])
    assert rv.VAE(latent_dim=2, width=8, hidden=32, likelihood="gaussian").obs_std == 0.1
    for obs_std in (None, 0.3):
        model = _small_linear()
        if obs_std is not None:
            model.obs_std = obs_std
        out = rr.stochastic_reconstructions(model, x, 20000, decoder_noise=True, generator=gen(3))
        var = 0.04 + (0.1 if obs_std is None else obs_std) ** 2
        assert torch.allclose(out.mean(0), 2.0 * (x @ model.A.T), atol=0.01)
        assert torch.allclose(out.var(0), torch.full((1, 2), var), rtol=0.05), (out.var(0), var)


class _SharpCB(_Sharp):
    likelihood = "continuous-bernoulli"


def test_continuous_bernoulli_decoder_noise_draws_from_the_decoder_distribution():
    """With the encoder noise off, decoder-noise draws are i.i.d. ContinuousBernoulli(logits)
    per pixel: in [0, 1], with the distribution's mean and quartiles."""
    torch.manual_seed(0)
    vae = _SharpCB(rv.VAE(latent_dim=2, width=8, hidden=32, likelihood="continuous-bernoulli").eval())
    x = torch.rand(1, 1, 28, 28, generator=gen())
    out = rr.stochastic_reconstructions(vae, x, 1000, decoder_noise=True, generator=gen(1))
    assert out.min() >= 0 and out.max() <= 1
    with torch.no_grad():
        cb = torch.distributions.ContinuousBernoulli(logits=vae.decode(vae.encode(x)[0]))
    assert (out.mean(0) - cb.mean).abs().mean() < 0.01 and (out.mean(0) - cb.mean).abs().max() < 0.05
    for q in (0.25, 0.75):
        frac = (out <= cb.icdf(torch.full_like(cb.mean, q))).double().mean()
        assert abs(frac - q) < 0.01, (q, frac)


def _toy_margin_search(margins, radii, refine_steps, stop_when_broken):
    """_margin_search on a deterministic toy: perturbations R e_1 in R^2 and, for input b,
    p_b(delta) = 1 - ||delta|| / (2 m_b), which falls to exactly 1/2 at ||delta|| = m_b (the
    true margin); interval p -+ 0.1, sampled distances all equal to ||delta||."""
    m = torch.tensor(margins)
    calls = []

    def propose(R, idx):
        return torch.stack([torch.full((len(idx),), R), torch.zeros(len(idx))], dim=1)

    def evaluate(pert, idx):
        calls.append(idx.tolist())
        norm = pert.norm(dim=1)
        p = 1 - norm / (2 * m[idx])
        return rr.ProbabilityEstimate(p, p - 0.1, p + 0.1, 3, 1.0), norm[:, None].expand(-1, 3)

    return rr._margin_search(propose, evaluate, radii, refine_steps, len(m), stop_when_broken), calls


def test_margin_search_grid_breaks_at_p_exactly_one_half():
    """Not r-robust iff p <= 1/2: a grid radius where p is exactly 1/2 brackets the margin;
    the grid tables hold each radius's estimate, norm and distances."""
    res, _ = _toy_margin_search([1.0], [0.5, 1.0, 1.5], refine_steps=0, stop_when_broken=False)
    assert res.found.tolist() == [True] and res.margin.tolist() == [1.0]
    assert res.p_at_margin.tolist() == [0.5] and res.upper_at_margin.tolist() == [pytest.approx(0.6)]
    assert res.prob[:, 0].tolist() == [0.75, 0.5, 0.25]
    assert torch.allclose(res.lower[:, 0], torch.tensor([0.65, 0.4, 0.15]))
    assert torch.allclose(res.upper[:, 0], torch.tensor([0.85, 0.6, 0.35]))
    assert res.norms[:, 0].tolist() == [0.5, 1.0, 1.5]
    assert torch.equal(res.distances[:, 0], torch.tensor([0.5, 1.0, 1.5])[:, None].expand(-1, 3))
    assert torch.equal(res.perturbation, torch.tensor([[1.0, 0.0]]))


@pytest.mark.parametrize("stop", [False, True])
def test_margin_search_bisection_converges_to_the_true_margin(stop):
    """Bisection between the last unbroken and the first broken grid norm: after k steps the
    margin is a broken point within (bracket width) / 2^k above the true margin m_b, and the
    estimate at the margin is p(margin). An input never broken has margin inf, NaN estimates,
    a zero perturbation. With stop_when_broken the broken inputs are not evaluated again."""
    radii = [0.5, 1.5, 2.0]
    res, calls = _toy_margin_search([1.0, 0.8, 3.0], radii, refine_steps=5, stop_when_broken=stop)
    assert res.found.tolist() == [True, True, False]
    # m = 1: the first midpoint (0.5 + 1.5) / 2 = 1 has p = 1/2 exactly, so it is the margin
    assert res.margin[0].item() == 1.0 and res.p_at_margin[0].item() == 0.5
    assert 0.8 <= res.margin[1].item() <= 0.8 + 1.0 / 2 ** 5
    assert res.margin[1].item() == 0.8125                         # the bisection's broken end
    assert res.p_at_margin[1].item() == pytest.approx(1 - 0.8125 / 1.6)
    assert res.upper_at_margin[:2].tolist() == pytest.approx([0.6, 1.1 - 0.8125 / 1.6])
    assert math.isinf(res.margin[2]) and math.isnan(res.p_at_margin[2]) and math.isnan(res.upper_at_margin[2])
    assert torch.allclose(res.perturbation, torch.tensor([[1.0, 0.0], [0.8125, 0.0], [0.0, 0.0]]))
    assert res.radii.tolist() == radii
    assert res.prob[2, 2].item() == pytest.approx(1 - 2.0 / 6)
    assert res.distances.shape == (3, 3, 3)
    if stop:
        assert calls[:3] == [[0, 1, 2], [0, 1, 2], [2]]
        assert torch.isnan(res.prob[2, :2]).all() and torch.isnan(res.distances[2, :2]).all()
    else:
        assert calls[:3] == [[0, 1, 2]] * 3 and torch.isfinite(res.prob).all()
    assert calls[3:] == [[0, 1]] * 5                               # the bisection: broken rows only


def test_margin_search_with_every_input_broken_early_fills_the_rest_with_nan():
    """With stop_when_broken and every input broken at the first radius, the later radii are not
    evaluated: their grid entries and distances are NaN."""
    res, calls = _toy_margin_search([0.2, 0.3], [0.5, 1.0, 2.0], refine_steps=0, stop_when_broken=True)
    assert calls == [[0, 1]] and res.margin.tolist() == [0.5, 0.5]
    assert torch.isnan(res.prob[1:]).all() and torch.isnan(res.distances[1:]).all()
    assert torch.equal(res.distances[0], torch.full((2, 3), 0.5))


@pytest.mark.parametrize("radii", [[], [[0.1, 0.2]], [0.0, 0.1], [-0.1], [0.1, 0.1], [0.2, 0.1], [0.1, 0.3, 0.2]])
def test_margin_search_rejects_bad_grids(radii):
    """radii: a non-empty, strictly increasing sequence of positive numbers."""
    with pytest.raises(ValueError, match="radii"):
        _toy_margin_search([1.0], radii, refine_steps=0, stop_when_broken=False)


def test_margin_search_accepts_a_single_radius_and_no_refinement_but_not_negative_steps():
    """One grid radius is a valid grid; refine_steps = 0 means no bisection; < 0 is an error."""
    res, calls = _toy_margin_search([1.0], [1.5], refine_steps=0, stop_when_broken=False)
    assert res.margin.tolist() == [1.5] and calls == [[0]]
    with pytest.raises(ValueError, match="refine_steps"):
        _toy_margin_search([1.0], [1.5], refine_steps=-1, stop_when_broken=False)


def test_theoretical_margins_clip_p0_at_one_minus_half_over_n_and_check_its_range(linear):
    """With n_samples, p0 is clipped to 1 - 1/(2n) (documented) so Phi^{-1} is finite; p0 must lie
    in [0, 1], both ends included; a probability below 1/2 gives no margin."""
    model, x, _ = linear
    th = rr.theoretical_margins(model, x, torch.tensor([1.0, 1.0, 0.9, 0.0]), n_samples=100)
    clipped = scipy_stats.norm.ppf(1 - 1 / 200)
    assert th["latent"].tolist() == pytest.approx([clipped, clipped, scipy_stats.norm.ppf(0.9), 0.0], rel=1e-6)
    assert th["p0"].tolist() == pytest.approx([0.995, 0.995, 0.9, 0.0])
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match="probabilities"):
            rr.theoretical_margins(model, x, torch.tensor([0.9, 0.9, 0.9, bad]))


def test_linear_vae_closed_forms_scale_with_the_decoder_gain():
    """g(z) = c z scales every distance by c: P_c(r) = P_1(r / c), the margins at r equal those at
    r / c with c = 1, and the Monte-Carlo probability agrees with the closed form at c != 1."""
    A = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    one, two = rr.LinearGaussianVAE(A, s=0.5), rr.LinearGaussianVAE(A, s=0.5, c=2.0)
    delta = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.2, 0.3, 0.0]])
    assert two.p0(2 * R) == pytest.approx(one.p0(R), rel=1e-9) == pytest.approx(0.9, abs=1e-3)
    assert torch.allclose(two.probability(delta, 2 * R), one.probability(delta, R))
    assert two.whitened_margin(2 * R) == pytest.approx(one.whitened_margin(R), rel=1e-6)
    assert two.margin(2 * R) == pytest.approx(one.margin(R), rel=1e-6)
    x = torch.full((3, 3), 0.5)
    est = rr.r_robust_probability(two, x, delta, 2 * R, n_samples=4000, generator=gen(6))
    lo, hi = rr.binomial_interval((est.p * 4000).round(), 4000, 0.999)
    exact = two.probability(delta, 2 * R)
    assert ((lo <= exact) & (exact <= hi)).all(), (est.p, exact)


def test_linear_vae_margin_is_zero_when_the_unperturbed_probability_is_one_half():
    """p0 = 1/2 is already not r-robust (the definition needs p > 1/2), so the margin is 0. With
    d = 2, P(||Delta|| <= r) = 1 - exp(-r^2 / (4 c^2 s^2)) = 1/2 at r = 2 c s sqrt(ln 2); we take
    the float next to sqrt(ln 2) at which the chi-square cdf rounds to 1/2 exactly."""
    model = rr.LinearGaussianVAE(torch.eye(2), s=0.5)
    r = 0.8325546111576978
    assert r == pytest.approx(math.sqrt(math.log(2.0)), rel=1e-15)
    assert model.p0(r) == 0.5
    assert model.whitened_margin(r) == 0.0 and model.margin(r) == 0.0
    assert model.whitened_margin(1.2 * r) > 0


def test_linear_vae_defaults_and_argument_checks():
    """Defaults: c = 1 (g(z) = z) and inputs of shape (D,); s and c must be positive;
    reconstruct samples z = mu + s eps by default and returns c A x with sample=False."""
    A = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]])
    model = rr.LinearGaussianVAE(A, s=0.5)
    assert model.c == 1.0 and model.shape == (3,) and model.latent_dim == 2
    assert rr.LinearGaussianVAE(A, s=0.5, shape=(1, 3)).shape == (1, 3)
    z = torch.randn(4, 2, generator=gen())
    assert torch.equal(model.decode(z), z)
    for s, c in ((0.0, 1.0), (-1.0, 1.0), (1.0, 0.0), (1.0, -2.0)):
        with pytest.raises(ValueError, match="positive"):
            rr.LinearGaussianVAE(A, s=s, c=c)
    small = rr.LinearGaussianVAE(A, s=0.2, c=0.5)
    assert small.s == 0.2 and small.c == 0.5
    x = torch.tensor([[0.5, 0.2, 0.4]])
    assert torch.allclose(small.reconstruct(x, sample=False), 0.5 * x @ A.T)
    torch.manual_seed(0)
    draws = torch.cat([small.reconstruct(x) for _ in range(4000)])
    assert torch.allclose(draws.mean(0), (0.5 * x @ A.T)[0], atol=0.01)
    assert torch.allclose(draws.std(0), torch.full((2,), 0.5 * 0.2), rtol=0.05)


def test_portfolio_summary_counts_strict_improvements_only():
    """"lowered" is strictly below every other attack (a tie lowers nothing); with a single attack
    every broken input is newly broken; an empty portfolio or 2-D margins are errors."""
    tie = rr.PortfolioMargin.from_margins({"a": torch.tensor([1.0, 2.0, math.inf]),
                                           "b": torch.tensor([1.0, 3.0, math.inf])})
    assert tie.best_attack == ["a", "a", "-"] and tie.found.tolist() == [True, True, False]
    t = tie.summary()
    assert t.loc["a", "lowered"] == 1 and t.loc["b", "lowered"] == 0 and t.loc["a", "median drop"] == 1.0
    assert t.loc["a", "newly broken"] == 0 and t.loc["a", "best"] == 2 and t.loc["b", "best"] == 0
    assert t.loc["a", "broken"] == 2 and t.loc["a", "median margin"] == 2.0
    solo = rr.PortfolioMargin.from_margins({"a": torch.tensor([1.0, math.inf, 2.0])}).summary()
    assert solo.loc["a", "lowered"] == 2 and solo.loc["a", "newly broken"] == 2
    assert np.isnan(solo.loc["a", "median drop"])
    with pytest.raises(ValueError, match="at least one"):
        rr.PortfolioMargin.from_margins({})
    with pytest.raises(ValueError, match="same length"):
        rr.PortfolioMargin.from_margins({"a": torch.ones(2, 2)})


def test_probability_from_distances_defaults_to_a_95_percent_wilson_interval():
    """Default interval: Wilson at 95% (SciPy's binomtest proportion_ci)."""
    d = torch.tensor([[0.5, 1.0, 1.5, 2.0, 0.1]])
    est = rr.probability_from_distances(d, 1.0)
    ci = scipy_stats.binomtest(3, 5).proportion_ci(0.95, "wilson")
    assert est.p.item() == pytest.approx(0.6)
    assert est.lower.item() == pytest.approx(ci.low, abs=1e-6) and est.upper.item() == pytest.approx(ci.high, abs=1e-6)


def test_reconstruction_distances_default_is_200_pairs_of_the_encoder_noise_only():
    """Defaults: x_pert = x, 200 pairs, no decoder noise: ||Delta(x)||^2 / (2 c^2 s^2) ~ chi^2_d,
    so E ||Delta||^2 = 2 d c^2 s^2; a given reference of the wrong shape is refused."""
    model = _small_linear()
    x = torch.tensor([[0.5, 0.2, 0.4]])
    torch.manual_seed(0)
    assert rr.reconstruction_distances(model, x).shape == (1, 200)
    d = rr.reconstruction_distances(model, x, None, 20000, generator=gen(5))
    assert d.pow(2).mean().item() == pytest.approx(2 * 2 * 4.0 * 0.01, rel=0.03)
    # a reference of pure zeros: distances are ||f(x)||, E||f(x)||^2 = ||c A x||^2 + d c^2 s^2
    ref = torch.zeros(20000, 1, 2)
    d = rr.reconstruction_distances(model, x, None, 20000, ref, generator=gen(5))
    expected = (2.0 * x @ model.A.T).pow(2).sum().item() + 2 * 4.0 * 0.01
    assert d.pow(2).mean().item() == pytest.approx(expected, rel=0.02)
    with pytest.raises(ValueError, match="reference"):
        rr.reconstruction_distances(model, x, None, 100, ref)


def test_radial_map_of_the_lbfgs_attack():
    """rho(delta) = delta * eps / max(eps, ||delta||_2) (lbfgs_damage_attack's docstring): the
    identity inside the ball, the radial projection onto its sphere outside, row by row."""
    delta = torch.tensor([[0.3, 0.4], [3.0, 4.0], [0.0, 0.0]]).view(3, 1, 2)
    out = rr._radial(delta, 1.0)
    assert torch.allclose(out, torch.tensor([[0.3, 0.4], [0.6, 0.8], [0.0, 0.0]]).view(3, 1, 2))


def test_portfolio_margin_without_searches_has_no_perturbation():
    """Built from margins only (or directly), ``searches`` and ``perturbation`` are None."""
    hand = rr.PortfolioMargin.from_margins({"a": torch.tensor([1.0, math.inf])})
    assert hand.searches is None and hand.perturbation is None and hand.budgets == {"a": "-"}
    direct = rr.PortfolioMargin(hand.margin, hand.found, hand.best_attack, hand.margins, hand.budgets)
    assert direct.searches is None and direct.perturbation is None


def test_encoder_jacobian_of_the_linear_model_is_A_for_flat_and_image_inputs():
    """mu(x) = A x, so J_mu(x) = A at every x, whatever the input's shape."""
    A = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, -1.0]])
    for shape in ((4,), (1, 2, 2), (2, 2)):
        model = rr.LinearGaussianVAE(A, s=0.5, shape=shape)
        x = torch.rand(3, *shape, generator=gen())
        J = rr.encoder_jacobian(model, x)
        assert J.shape == (3, 2, 4) and torch.allclose(J, A.expand(3, 2, 4)), shape


def test_stochastic_reconstructions_stay_on_the_input_device():
    """Noise is drawn on the CPU and moved to x's device (documented): on the 'meta' device, which
    refuses to mix with CPU tensors, every draw lands on x's device, decoder noise included."""
    model = _small_linear().to("meta")
    x = torch.zeros(2, 3, device="meta")
    for kw in ({}, {"whitened_shift": torch.zeros(2, 2)}, {"decoder_noise": True}):
        out = rr.stochastic_reconstructions(model, x, 5, generator=gen(), **kw)
        assert out.device == x.device and out.shape == (5, 2, 2), kw


def test_margin_search_does_not_bisect_when_nothing_broke():
    """Bisection refines broken inputs only: with none broken, the search evaluates the grid and
    nothing else (no evaluation of an empty batch), and every margin is inf."""
    res, calls = _toy_margin_search([5.0, 6.0], [0.5, 1.0], refine_steps=3, stop_when_broken=False)
    assert calls == [[0, 1], [0, 1]] and torch.isinf(res.margin).all() and not res.found.any()

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from robustvae import certify
from robustvae import rrobust as rr
from robustvae.lipschitz import LipschitzVAE


def test_margin_solves_the_paper_equation():
    a, b, c, r = 2.0, 0.7, 0.2, 4.0
    for s in (0.0, 0.1, 0.3):
        R = certify.certified_margin(s, r, a, b, c)          # paper, prob = 1/2
        assert R > 0
        lhs = (b**2 + c**2) * R**2 + 4 * c * s * R + 4 * s**2
        assert lhs == pytest.approx(r**2 / (2 * a**2), rel=1e-12)
        assert certify.markov_bound(R, s, r, a, b, c) == pytest.approx(0.5)
    # the cap of the paper: r / (sqrt(8) a); at and above it no certificate
    cap = certify.std_cap(r, a)
    assert cap == pytest.approx(r / (math.sqrt(8) * a))
    assert certify.certified_margin(cap, r, a, b, c) == 0.0
    assert certify.certified_margin(2 * cap, r, a, b, c) == 0.0
    # decreasing in s; the tight variant is never smaller than the paper's
    s = np.linspace(0, cap, 50)
    R = certify.certified_margin(s, r, a, b, c)
    assert (np.diff(R) <= 1e-12).all()
    assert (certify.certified_margin(s, r, a, b, c, variant="tight") >= R - 1e-12).all()
    # tensors in, tensors out
    Rt = certify.certified_margin(torch.tensor(s), r, a, b, c)
    assert isinstance(Rt, torch.Tensor) and np.allclose(Rt.numpy(), R)


def test_inverse_gives_the_requested_margin():
    for prob in (0.5, 0.9):
        for variant in certify.VARIANTS:
            d = certify.lipschitz_for_margin(1.7, 3.0, 2.5, prob=prob, std_fraction=0.6, std_ratio=0.3,
                                             variant=variant)
            assert d["c"] == pytest.approx(0.3 * d["b"])
            assert d["s_max"] == pytest.approx(0.6 * certify.std_cap(3.0, 2.5, prob, variant))
            R = certify.certified_margin(d["s_max"], 3.0, d["a"], d["b"], d["c"], prob, variant)
            assert R == pytest.approx(1.7 * (1 + certify.DESIGN_SLACK), rel=1e-10)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="variant"):
        certify.certified_margin(0.1, 1.0, 1.0, 1.0, 1.0, variant="loose")
    with pytest.raises(ValueError, match="prob"):
        certify.certified_margin(0.1, 1.0, 1.0, 1.0, 1.0, prob=1.5)
    with pytest.raises(ValueError, match="r "):
        certify.certified_margin(0.1, 0.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="Lipschitz"):
        certify.certified_margin(0.1, 1.0, -1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="s ="):
        certify.certified_margin(-0.1, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="std_fraction"):
        certify.lipschitz_for_margin(1.0, 1.0, 1.0, std_fraction=1.0)
    with pytest.raises(ValueError, match="margin"):
        certify.lipschitz_for_margin(0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="eps_grid"):
        certify.attack_margins(None, torch.zeros(1, 1, 28, 28), 1.0, [2.0, 1.0])


@pytest.mark.parametrize("variant", ["paper", "tight"])
@pytest.mark.parametrize("prob", [0.5, 0.8])
def test_certificate_holds_exhaustively_on_a_toy_vae(variant, prob):
    """A 1-D VAE with mu(x) = b x, sigma(x) = s0 + c |sin(3x)|, g(z) = a z: the change
    g(z') - g(z) ~ N(a (mu(x+d) - mu(x)), a^2 (sigma(x+d)^2 + sigma(x)^2)) has an exact law,
    so P(|change| > r) is checked on a fine grid of inputs and every perturbation inside the
    certified radius."""
    a, b, c, r = 1.5, 0.8, 0.4, 1.0
    s_cap = certify.std_cap(r, a, prob, variant)
    s0 = 0.5 * s_cap
    mu = lambda x: b * x
    sigma = lambda x: s0 + c * np.abs(np.sin(3 * x))   # c-Lipschitz, >= s0 > 0
    xs = np.linspace(-2, 2, 401)
    worst = 0.0
    for x in xs:
        s = sigma(x)
        R = certify.certified_margin(s, r, a, b, c, prob, variant)
        if R == 0:
            continue
        d = np.linspace(-R, R, 801)
        m = a * (mu(x + d) - mu(x))
        sd = a * np.sqrt(sigma(x + d) ** 2 + s**2)
        p_out = norm.sf((r - m) / sd) + norm.cdf((-r - m) / sd)
        worst = max(worst, p_out.max())
    assert worst <= 1 - prob
    assert worst > 0.01      # the grid reaches where the change is likely, so the test can fail


def test_fixed_std_margin_is_exact_and_beats_markov():
    gamma, d, r, a, b, prob = 0.15, 8, 3.0, 2.0, 0.9, 0.5
    R = certify.certified_margin_fixed_std(gamma, d, r, a, b, prob)
    # Monte Carlo at the worst mean shift of length b R: P(a ||z' - z|| > r) is 1 - prob
    g = torch.Generator().manual_seed(0)
    n = 400_000
    m = torch.zeros(d, dtype=torch.float64)
    m[0] = b * R
    diff = m + math.sqrt(2) * gamma * torch.randn(n, d, generator=g, dtype=torch.float64)
    p = (a * diff.norm(dim=1) > r).double().mean().item()
    assert p == pytest.approx(1 - prob, abs=4 * math.sqrt(0.25 / n))
    # the exact law certifies more than Markov's inequality with c = 0 and s = gamma sqrt(d)
    markov = certify.certified_margin(gamma * math.sqrt(d), r, a, b, 0.0, prob, "tight")
    assert R > markov > 0
    assert certify.certified_margin_fixed_std(10.0, d, r, a, b, prob) == 0.0


def _linear_vae(std: float = 1e-4):
    torch.manual_seed(0)
    vae = LipschitzVAE(latent_dim=4, hidden=16, decoder_lipschitz=1.0, mean_lipschitz=1.0,
                       std_lipschitz=0.1, std_max=std).eval()
    vae.tighten()
    return vae


def test_change_probability_and_second_moment():
    vae = _linear_vae()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 28, 28)
    # no perturbation and tiny noise: the reconstruction never moves by 0.1
    assert certify.change_probability(vae, x, x, r=0.1, n_samples=20, generator=g).max() == 0
    x_far = (x + 0.5).clamp(0, 1)
    with torch.no_grad():
        moved = (vae.reconstruct(x_far, sample=False) - vae.reconstruct(x, sample=False)).flatten(1).norm(dim=1)
    p = certify.change_probability(vae, x, x_far, r=float(moved.min()) / 2, n_samples=20, generator=g)
    assert (p == 1).all()
    m2 = certify.second_moment(vae, x, x_far)
    with torch.no_grad():
        mu, mu_far = vae.encode(x)[0], vae.encode(x_far)[0]
    assert torch.allclose(m2, (mu_far - mu).pow(2).sum(1), atol=1e-6)


def test_lipschitz_lower_bound_is_exact_on_a_linear_map():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(7, 12, generator=g, dtype=torch.float64)
    fn = lambda u: u @ W.T
    x = torch.randn(5, 12, generator=g, dtype=torch.float64)
    lb = certify.lipschitz_lower_bound(fn, x)
    assert torch.allclose(lb, torch.linalg.matrix_norm(W, ord=2).expand(5))


def test_attacks_inside_the_certified_radius_do_not_break_it():
    torch.manual_seed(0)
    vae = LipschitzVAE(latent_dim=4, hidden=16, decoder_lipschitz=3.0, mean_lipschitz=2.0,
                       std_lipschitz=0.2, std_max=0.2).eval()
    vae.tighten()
    x = torch.rand(8, 1, 28, 28) * 0.5 + 0.25
    r = 2.0
    R = certify.certified_margins(vae, x, r)
    assert (R > 0).all()
    g = torch.Generator().manual_seed(0)
    res = certify.attack_margins(vae, x, r, [float(R.min()), 4 * float(R.max())], n_samples=50,
                                 steps=20, generator=g)
    assert res["damage"].shape == (2, 8) and res["x_adv"].shape == (2, 8, 1, 28, 28)
    assert (res["fail_prob"][0] < 0.5).all()
    # the deterministic reconstruction moves at most a b ||delta||
    k = vae.lipschitz_constants()
    assert (res["damage"][0] <= k["a"] * k["b"] * R.min() * (1 + 1e-5)).all()
    # the empirical margins are never below the certified ones
    assert (res["margin"] >= R.min()).all()


def test_portfolio_attack_margins_never_break_the_certificate_and_take_the_minimum():
    """The L-BFGS-B attack joins the projected one: no found margin is below the certificate,
    and the portfolio's margin is the smaller of the two per input."""
    torch.manual_seed(0)
    vae = LipschitzVAE(latent_dim=4, hidden=16, decoder_lipschitz=3.0, mean_lipschitz=2.0,
                       std_lipschitz=0.2, std_max=0.2).eval()
    vae.tighten()
    x = torch.rand(6, 1, 28, 28) * 0.5 + 0.25
    r = 2.0
    R = certify.certified_margins(vae, x, r)
    g = torch.Generator().manual_seed(0)
    grid = [float(R.min()), 2 * float(R.max()), 8 * float(R.max())]
    port, searches = certify.portfolio_attack_margins(
        vae, x, r, grid, {"max-damage": None, "L-BFGS-B": rr.lbfgs_damage_attack(2, 5, generator=g)},
        n_samples=50, steps=10, generator=g, budgets={"L-BFGS-B": "2 starts"}, grids={"L-BFGS-B": grid[:2]})
    assert searches["L-BFGS-B"]["x_adv"].shape == (2, 6, 1, 28, 28)
    norms = (searches["L-BFGS-B"]["x_adv"] - x).flatten(2).norm(dim=2)
    assert (norms <= torch.tensor(grid[:2]).view(2, 1) + 1e-5).all()
    assert torch.equal(port.margin.double(), torch.minimum(searches["max-damage"]["margin"],
                                                           searches["L-BFGS-B"]["margin"]).float().double())
    assert (port.margin >= R.min()).all()
    assert port.summary().loc["L-BFGS-B", "budget"] == "2 starts"


# --- independent truth: a hand-computed certificate and a property over constants ----------
class _AffineGaussianEncoder(torch.nn.Module):
    """``mu(x) = B x`` (flattened) and a constant ``sigma``: ``||sigma(x)||_2 = sigma sqrt(d)`` by hand."""

    def __init__(self, B: torch.Tensor, sigma: float):
        super().__init__()
        self.B = torch.nn.Parameter(B, requires_grad=False)
        self.log_var = 2 * math.log(sigma)

    def forward(self, x):
        mu = x.flatten(1) @ self.B.T
        return mu, torch.full_like(mu, self.log_var)


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.7])
@pytest.mark.parametrize("variant", ["paper", "tight"])
def test_certified_margins_of_a_model_equal_the_hand_computed_certificate(sigma, variant):
    """Known sigma and constants: ``s = sigma sqrt(d)``, and ``R`` is the positive root of
    ``(b^2 + c^2) R^2 + beta c s R + alpha s^2 = (1 - prob) r^2 / a^2``, solved here by the
    quadratic formula written out (alpha = beta = 4 for the paper, 2 for the tight variant)."""
    from robustvae.models import VAE

    d = 4
    g = torch.Generator().manual_seed(0)
    vae = VAE(latent_dim=d, width=4, hidden=8,
              encoder=_AffineGaussianEncoder(0.01 * torch.randn(d, 784, generator=g), sigma)).eval()
    x = torch.rand(5, 1, 28, 28, generator=g)
    a, b, c, r, prob = 0.5, 1.3, 0.4, 3.0, 0.6
    k = 4.0 if variant == "paper" else 2.0
    s = sigma * math.sqrt(d)
    A, Bq, C = b**2 + c**2, k * c * s, k * s**2 - (1 - prob) * r**2 / a**2
    expected = max((-Bq + math.sqrt(max(Bq**2 - 4 * A * C, 0.0))) / (2 * A), 0.0) if C < 0 else 0.0
    R = certify.certified_margins(vae, x, r, prob=prob, variant=variant, constants={"a": a, "b": b, "c": c})
    assert R.shape == (5,)
    assert torch.allclose(R, torch.full((5,), expected, dtype=R.dtype), rtol=1e-6, atol=1e-9)
    if sigma == 0.3:
        assert expected > 0       # the case that separates the standard deviation from the variance
    # the second moment the certificate bounds, by hand: ||mu' - mu||^2 + 2 d sigma^2
    x2 = (x + 0.1).clamp(0, 1)
    with torch.no_grad():
        dmu = (x2 - x).flatten(1) @ vae.encoder.B.T
    assert torch.allclose(certify.second_moment(vae, x, x2), dmu.pow(2).sum(1) + 2 * d * sigma**2, rtol=1e-5)


def test_paper_margin_in_closed_form_without_the_std_term():
    """c = 0: ``R = sqrt((1 - prob) r^2 / a^2 - alpha s^2) / b`` exactly."""
    a, b, r, s = 2.0, 0.5, 3.0, 0.2
    assert certify.certified_margin(s, r, a, b, 0.0) == pytest.approx(math.sqrt(r**2 / (2 * a**2) - 4 * s**2) / b)
    assert certify.certified_margin(s, r, a, b, 0.0, prob=0.9, variant="tight") == pytest.approx(
        math.sqrt(0.1 * r**2 / a**2 - 2 * s**2) / b)
    assert certify.std_cap(r, 1.0) == pytest.approx(r / math.sqrt(8))
    assert certify.std_cap(r, 2.0, prob=0.9, variant="tight") == pytest.approx(r * math.sqrt(0.1 / 2) / 2.0)
    assert certify.std_cap(r, 0.0) == math.inf
    assert certify.certified_margin(s, r, 0.0, b, 0.3) == math.inf        # a constant decoder never changes
    assert certify.certified_margin(s, r, a, 0.0, 0.0) == math.inf        # a constant encoder neither
    # ... unless s is at or above the cap: exactly at it (tight: 2 s^2 = r^2 / (2 a^2), s = 1, r = 2, a = 1)
    # no positive root exists, with or without Lipschitz constants
    assert certify.certified_margin(1.0, 2.0, 1.0, 0.0, 0.0, variant="tight") == 0.0
    assert certify.certified_margin(1.0, 2.0, 1.0, 0.5, 0.1, variant="tight") == 0.0
    assert certify.certified_margin(10.0, r, a, 0.0, 0.0) == 0.0
    assert certify.markov_bound(0.0, s, r, a, b, 0.3) == pytest.approx(a**2 * 4 * s**2 / r**2)
    assert certify.markov_bound(100.0, s, r, a, b, 0.3) == 1.0


def test_an_inflated_margin_fails_the_exact_law():
    """The fixed-variance margin is exact: 1% beyond it, the change probability at the worst shift
    (computed with scipy's noncentral chi-square, independently of the library) exceeds 1 - prob."""
    from scipy.stats import ncx2

    gamma, d, r, a, b, prob = 0.15, 8, 3.0, 2.0, 0.9, 0.5
    R = certify.certified_margin_fixed_std(gamma, d, r, a, b, prob)

    def p_change(radius):
        return ncx2.sf(r**2 / (2 * a**2 * gamma**2), d, (b * radius) ** 2 / (2 * gamma**2))

    assert p_change(R) == pytest.approx(1 - prob, abs=1e-8)
    assert p_change(0.99 * R) < 1 - prob < p_change(1.01 * R)


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None, database=None)
@given(a=st.floats(0.2, 5.0), b=st.floats(0.1, 5.0), c=st.floats(0.0, 2.0), r=st.floats(0.2, 5.0),
       frac=st.floats(0.0, 0.99), prob=st.floats(0.05, 0.95), variant=st.sampled_from(["paper", "tight"]))
def test_certified_margin_never_exceeds_the_exact_margin_of_a_1d_linear_gaussian_vae(a, b, c, r, frac, prob, variant):
    """Property: on the 1-D VAE ``mu(x) = b x``, ``sigma(x) = s + c |x - x0|``, ``g(z) = a z`` the change
    ``a (z' - z)`` at ``x0 + R`` is ``N(a b R, a^2 (s^2 + (s + c R)^2))`` exactly (scipy): at the certified
    radius it exceeds ``r`` with probability at most ``1 - prob``, and the radius solves the margin
    equation."""
    from scipy.stats import norm as normal

    s = frac * certify.std_cap(r, a, prob, variant)
    R = certify.certified_margin(s, r, a, b, c, prob, variant)
    assert R >= 0
    if R == 0:
        return
    m, sd = a * b * R, a * math.sqrt(s**2 + (s + c * R) ** 2)
    p_out = normal.sf((r - m) / sd) + normal.cdf((-r - m) / sd) if sd > 0 else float(abs(m) > r)
    assert p_out <= 1 - prob + 1e-9
    assert certify.markov_bound(R, s, r, a, b, c, variant) == pytest.approx(1 - prob, rel=1e-6)


@pytest.mark.parametrize("law,variant", [("markov", "paper"), ("markov", "tight"), ("chi2", "paper")])
def test_noise_for_margin_inverts_the_certificate(law, variant):
    """The certificate at the returned noise is exactly the requested margin, and a little more
    noise certifies less."""
    margin, d, r, a, b = 0.5, 16, 4.0, 4.0, 1.0
    gamma = certify.noise_for_margin(margin, d, r, a, b, law=law, variant=variant)

    def cert(g):
        if law == "chi2":
            return certify.certified_margin_fixed_std(g, d, r, a, b)
        return certify.certified_margin(g * math.sqrt(d), r, a, b, 0.0, 0.5, variant)

    assert cert(gamma) == pytest.approx(margin, rel=1e-6)
    assert cert(1.01 * gamma) < margin < cert(0.99 * gamma)


def test_noise_for_margin_markov_closed_form_and_the_order_of_the_laws():
    margin, d, r, a, b = 0.25, 16, 4.0, 4.0, 2.0
    # paper variant: 4 d gamma^2 + b^2 R^2 = r^2 / (2 a^2)  ->  gamma^2 = (0.5 - 0.25) / 64
    assert certify.noise_for_margin(margin, d, r, a, b, law="markov") == pytest.approx(math.sqrt(0.25 / 64))
    paper, tight, exact = (certify.noise_for_margin(margin, d, r, a, b, law=law, variant=v)
                           for law, v in (("markov", "paper"), ("markov", "tight"), ("chi2", "paper")))
    assert paper < tight < exact
    assert tight == pytest.approx(math.sqrt(2) * paper)
    # a margin that no noise level certifies (b R above r sqrt(1 - p) / a)
    assert certify.noise_for_margin(1.0, d, r, a, 1.0 / 0.7, law="markov") == 0.0
    assert certify.noise_for_margin(1.0, d, r, a, 1.0 / 0.7, law="chi2") == 0.0
    with pytest.raises(ValueError, match="law"):
        certify.noise_for_margin(margin, d, r, a, b, law="gauss")


def test_kl_floor_is_the_kl_of_the_capped_posterior_and_nothing_below_it():
    d, gamma = 16, 0.2
    q = torch.distributions.Normal(torch.zeros(d, dtype=torch.float64), torch.full((d,), gamma, dtype=torch.float64))
    prior = torch.distributions.Normal(torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64))
    exact = torch.distributions.kl_divergence(q, prior).sum().item()
    assert certify.kl_floor(gamma, d) == pytest.approx(exact)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # any posterior within the cap has at least this KL
        mu = torch.randn(d, generator=g, dtype=torch.float64) * 0.5
        sd = gamma * torch.rand(d, generator=g, dtype=torch.float64).clamp(min=0.05)
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sd), prior).sum().item()
        assert kl >= certify.kl_floor(gamma, d) - 1e-9
    assert certify.kl_floor(1.0, d) == 0.0 and certify.kl_floor(3.0, d) == 0.0
    # the chapter's design: ||sigma||_2 <= r / (2 sqrt(8) a) = 0.1768 spread over 16 dimensions
    assert certify.kl_floor(0.1767767 / 4, 16) == pytest.approx(41.9, abs=0.05)


# --- tests added for the mutation run of session 35 (tests/MUTANTS.md) ------------------
@pytest.mark.parametrize("gamma", [0.0, -0.1])
def test_fixed_std_margin_refuses_a_noise_level_that_is_not_positive(gamma):
    """The chi-square law needs encoder noise: gamma = 0 (a deterministic encoder) is refused with a
    ValueError that names gamma, not a ZeroDivisionError from inside the formula."""
    with pytest.raises(ValueError, match="gamma"):
        certify.certified_margin_fixed_std(gamma, 4, 1.0, 1.0, 1.0)


@pytest.mark.parametrize("latent_dim", [0, -1, 2.5])
def test_fixed_std_margin_refuses_a_latent_dimension_that_is_not_a_positive_integer(latent_dim):
    with pytest.raises(ValueError, match="latent_dim"):
        certify.certified_margin_fixed_std(0.2, latent_dim, 1.0, 1.0, 1.0)


@pytest.mark.parametrize("prob", [0.5, 0.8])
def test_fixed_std_margin_in_one_dimension_is_the_folded_normal_root_and_infinite_without_a_or_b(prob):
    """With ``latent_dim = 1`` and ``a = 1``, ``g(z') - g(z) = z' - z ~ N(b R, 2 gamma^2)`` (worst mean shift), so
    the margin solves ``P(|N(b R, 2 gamma^2)| > r) = 1 - prob``: two normal tails (scipy), no chi-square law.
    A decoder or an encoder mean that cannot move (``a = 0`` or ``b = 0``) certifies every radius."""
    from scipy.optimize import brentq

    gamma, r, b = 0.2, 1.0, 0.7
    sd = math.sqrt(2) * gamma
    tail = lambda m: norm.sf((r - m) / sd) + norm.cdf((-r - m) / sd)  # noqa: E731
    expected = brentq(lambda m: tail(m) - (1 - prob), 0.0, 10.0, xtol=1e-14) / b
    assert certify.certified_margin_fixed_std(gamma, 1, r, 1.0, b, prob) == pytest.approx(expected, rel=1e-8)
    assert certify.certified_margin_fixed_std(gamma, 1, r, 0.0, b, prob) == math.inf
    assert certify.certified_margin_fixed_std(gamma, 1, r, 1.0, 0.0, prob) == math.inf

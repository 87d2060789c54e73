import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from robustvae import certify
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

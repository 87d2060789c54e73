import math

import pytest
import torch

import robustvae as rv
from robustvae import certify, lipschitz
from robustvae.lipschitz import (
    OUTPUT_SLOPE, LipschitzMLP, LipschitzVAE, LipschitzVAEConfig, MaxMin, get_lipschitz_vae,
)


def _jac_norms(fn, x):
    return certify.jacobian_norms(fn, x)[0]


def test_maxmin_is_1_lipschitz_and_gradient_norm_preserving():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 10, generator=g, dtype=torch.float64)
    y = MaxMin()(x)
    # it sorts each pair, so the multiset of values is unchanged
    assert torch.allclose(y.sort(dim=1).values, x.sort(dim=1).values)
    assert (y[:, 0::2] >= y[:, 1::2]).all()
    # its Jacobian is a permutation: every singular value is 1
    J = torch.func.vmap(torch.func.jacrev(lambda u: MaxMin()(u[None])[0]))(x)
    S = torch.linalg.svdvals(J)
    assert torch.allclose(S, torch.ones_like(S))
    with pytest.raises(ValueError, match="even"):
        MaxMin()(torch.zeros(2, 3))


@pytest.mark.parametrize("lip", [0.5, 1.0, 3.0])
def test_mlp_gradient_norm_never_exceeds_its_exact_bound(lip):
    torch.manual_seed(0)
    net = LipschitzMLP([20, 32, 32, 6], lip)
    # move the weights far with big Adam steps: the power iteration lags behind the weights
    opt = torch.optim.Adam(net.parameters(), lr=0.5)
    for _ in range(20):
        loss = -net(torch.randn(16, 20)).pow(2).sum()   # pushes towards the largest gradients
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval().double()
    bound = net.lipschitz_bound()
    x = torch.randn(400, 20, dtype=torch.float64) * 3
    norms = _jac_norms(net, x)
    assert norms.max() <= bound * (1 + 1e-9)
    # random pairs: difference quotients too
    x2 = x + 0.1 * torch.randn_like(x)
    with torch.no_grad():
        q = (net(x2) - net(x)).norm(dim=1) / (x2 - x).norm(dim=1)
    assert q.max() <= bound * (1 + 1e-9)
    # after tightening, the exact bound is the design constant (to float precision)
    net.tighten()
    assert net.lipschitz_bound() == pytest.approx(lip, rel=1e-6)


def test_output_slopes_bound_the_mean_functions():
    eta = torch.linspace(-30, 30, 60001, dtype=torch.float64)
    for likelihood, slope in OUTPUT_SLOPE.items():
        vae = rv.VAE(latent_dim=2, likelihood=likelihood)
        m = vae.mean_image(eta)
        deriv = (m[1:] - m[:-1]) / (eta[1:] - eta[:-1])
        assert deriv.max() <= slope * (1 + 1e-6), likelihood
        assert deriv.max() >= slope * 0.99, likelihood   # and the slope is attained (near eta = 0)


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous-bernoulli"])
def test_vae_parts_respect_their_constants(likelihood):
    torch.manual_seed(0)
    vae = LipschitzVAE(latent_dim=6, hidden=32, decoder_lipschitz=2.0, mean_lipschitz=0.8,
                       std_lipschitz=0.3, std_max=0.4, likelihood=likelihood).eval()
    vae.tighten()
    k = vae.lipschitz_constants()
    assert k["a"] == pytest.approx(2.0, rel=1e-5) and k["b"] == pytest.approx(0.8, rel=1e-5)
    assert k["c"] == pytest.approx(0.3, rel=1e-5) and k["s_max"] == pytest.approx(0.4)
    v64 = vae.double()
    x = torch.rand(64, 784, dtype=torch.float64)
    assert _jac_norms(lambda u: v64.encoder.mean(u), x).max() <= k["b"] * (1 + 1e-9)
    assert _jac_norms(lambda u: v64.std(u), x).max() <= k["c"] * (1 + 1e-9)
    z = 3 * torch.randn(64, 6, dtype=torch.float64)
    assert _jac_norms(lambda u: v64.mean_image(v64.decode(u)).flatten(1), z).max() <= k["a"] * (1 + 1e-9)


def test_std_is_positive_and_capped_for_any_input():
    torch.manual_seed(0)
    vae = LipschitzVAE(latent_dim=8, hidden=16, decoder_lipschitz=1.0, mean_lipschitz=1.0,
                       std_lipschitz=50.0, std_max=0.3).eval()
    for scale in (0.0, 1.0, 100.0, -100.0):
        x = scale * torch.randn(20, 1, 28, 28)
        s = vae.std(x)
        assert (s > 0).all()
        assert s.norm(dim=1).max() <= 0.3 * (1 + 1e-6)
        mu, log_var = vae.encode(x)
        assert torch.isfinite(log_var).all()


def test_config_validation():
    with pytest.raises(ValueError, match="margin"):
        LipschitzVAEConfig(margin=0.0)
    with pytest.raises(ValueError, match="prob"):
        LipschitzVAEConfig(prob=1.0)
    with pytest.raises(ValueError, match="std_fraction"):
        LipschitzVAEConfig(std_fraction=1.0)
    with pytest.raises(ValueError, match="likelihood"):
        LipschitzVAEConfig(likelihood="poisson")
    with pytest.raises(ValueError, match="even"):
        LipschitzVAEConfig(hidden=33)
    with pytest.raises(ValueError, match="Unknown LipschitzVAEConfig field"):
        get_lipschitz_vae(device="cpu", margn=1.0)


@pytest.fixture
def tiny_dataset(monkeypatch):
    """200 random 'training' and 100 'test' images instead of reading MNIST from disk."""
    g = torch.Generator().manual_seed(0)
    fake = {split: (torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10)
            for split, n in (("train", 200), ("test", 100))}
    monkeypatch.setattr(rv.data, "load_dataset", lambda name, split="train": fake[split])
    return fake


def test_trained_model_meets_its_requested_margin_and_is_cached(tiny_dataset):
    cfg = LipschitzVAEConfig(margin=1.5, r=3.0, epochs=2, latent_dim=4, hidden=32, seed=1)
    vae, hist = get_lipschitz_vae(cfg, device="cpu")
    assert len(hist["test_elbo"]) == 2 and math.isfinite(hist["test_elbo"][-1])
    x, _ = tiny_dataset["test"]
    margins = certify.certified_margins(vae, x, r=3.0)
    assert margins.min() >= 1.5
    again, _ = get_lipschitz_vae(cfg, device="cpu")
    for (k, v), (k2, v2) in zip(vae.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert again.lipschitz_constants() == pytest.approx(vae.lipschitz_constants())


# --- tests written against surviving mutants (benchmarks/mutation.py lipschitz; tests/MUTANTS.md) ---
def test_maxmin_sorts_pairs_along_the_last_axis_of_any_batch_shape():
    x = torch.arange(24.0).flip(0).view(2, 3, 4)          # (batch, tokens, features)
    y = MaxMin()(x)
    assert torch.equal(y, torch.stack([MaxMin()(row) for row in x]))
    assert torch.equal(y[0, 0], torch.tensor([23.0, 22.0, 21.0, 20.0]))
    with pytest.raises(ValueError, match="got 5"):        # the feature axis, not the batch axes
        MaxMin()(torch.zeros(2, 4, 5))


def test_a_default_layer_is_1_lipschitz_and_a_zero_constant_is_allowed():
    torch.manual_seed(0)
    layer = lipschitz.LipschitzLinear(6, 4).eval()
    layer.tighten()
    assert layer.lipschitz_bound() == pytest.approx(1.0, rel=1e-5)
    flat = lipschitz.LipschitzLinear(6, 4, lipschitz=0.0).eval()      # a constant map
    x = torch.randn(3, 6)
    assert torch.allclose(flat(x), flat.linear.bias.expand(3, 4)) and flat.lipschitz_bound() == 0.0


def test_the_bound_is_the_exact_norm_of_the_weight_used_even_when_power_iteration_is_off():
    torch.manual_seed(0)
    layer = lipschitz.LipschitzLinear(6, 4, lipschitz=3.0).eval()
    w = layer.linear.parametrizations.weight.original.detach().double()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    sn = layer.linear.parametrizations.weight[0]
    with torch.no_grad():                                   # a power-iteration estimate of sigma_2, not sigma_1
        sn._u.copy_(u[:, 1].float())
        sn._v.copy_(vh[1].float())
    used = torch.linalg.matrix_norm(layer.linear.weight.detach().double() * 3.0, ord=2).item()
    assert used == pytest.approx(3.0 * (s[0] / s[1]).item(), rel=1e-4)   # well above the nominal 3
    assert layer.lipschitz_bound() == pytest.approx(used, rel=1e-6)
    layer.tighten()
    assert layer.lipschitz_bound() == pytest.approx(3.0, rel=1e-5)


def test_mlp_layers_alternate_with_maxmin_and_a_single_layer_is_allowed():
    names = [type(m).__name__ for m in LipschitzMLP([5, 6, 4, 3], 2.0).net]
    assert names == ["LipschitzLinear", "MaxMin", "LipschitzLinear", "MaxMin", "LipschitzLinear"]
    torch.manual_seed(0)
    net = LipschitzMLP([5, 3], 2.0).eval()                 # one layer: no MaxMin, any input size
    assert [type(m).__name__ for m in net.net] == ["LipschitzLinear"] and net(torch.randn(2, 5)).shape == (2, 3)
    net.tighten()
    assert net.lipschitz_bound() == pytest.approx(2.0, rel=1e-5)
    flat = LipschitzMLP([4, 6, 2], 0.0).eval()               # a zero constant is allowed: a constant map
    x = torch.randn(5, 4)
    assert torch.allclose(flat(x), flat(torch.zeros(1, 4)).expand(5, 2)) and flat.lipschitz_bound() == 0.0


def test_encoder_std_network_width_defaults_to_the_mean_network_width():
    enc = lipschitz.LipschitzEncoder(4, hidden=12, mean_lipschitz=1.0, std_lipschitz=1.0, std_max=0.5, in_features=6)
    assert enc.std_net.linear_layers()[0].linear.out_features == 12
    enc = lipschitz.LipschitzEncoder(4, hidden=12, mean_lipschitz=1.0, std_lipschitz=1.0, std_max=0.5,
                                     std_hidden=8, in_features=6)
    assert enc.std_net.linear_layers()[0].linear.out_features == 8
    # the VAE passes its width on, and refuses an odd width in either network before building anything
    vae = lipschitz.LipschitzVAE(latent_dim=4, hidden=12)
    assert vae.encoder.std_net.linear_layers()[0].linear.out_features == 12
    for hidden, std_hidden in ((12, 7), (11, 8), (11, 7)):
        with pytest.raises(ValueError, match="must be even"):
            lipschitz.LipschitzVAE(latent_dim=4, hidden=hidden, std_hidden=std_hidden)


def test_std_is_the_raw_std_projected_onto_the_ball_and_log_var_is_twice_its_log():
    torch.manual_seed(0)
    enc = lipschitz.LipschitzEncoder(8, hidden=16, mean_lipschitz=1.0, std_lipschitz=50.0, std_max=0.3,
                                     in_features=784).eval()
    with torch.no_grad():                       # small raw stds near x = 0, large ones far away
        enc.std_net.linear_layers()[-1].linear.bias.fill_(-3.0)
    x = torch.cat([0.01 * torch.randn(10, 784), 100 * torch.randn(10, 784)]).view(20, 1, 28, 28)
    with torch.no_grad():
        raw = (0.3 * torch.sigmoid(enc.std_net(x.flatten(1)))).clamp_min(1e-6)
        norm = raw.norm(dim=1, keepdim=True)
        s = enc.std(x)
        _, log_var = enc(x)
    inside = (norm <= 0.3).flatten()
    assert inside.any() and (~inside).any()                       # both cases occur
    assert torch.allclose(s[inside], raw[inside])                  # inside the ball: unchanged
    assert torch.allclose(s[~inside].norm(dim=1), torch.full(((~inside).sum(),), 0.3))   # outside: on the sphere
    assert torch.allclose(s[~inside], raw[~inside] * 0.3 / norm[~inside])
    assert torch.allclose(log_var, 2 * s.log())

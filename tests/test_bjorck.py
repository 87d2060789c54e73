"""Björck-orthonormalised Lipschitz VAEs (robustvae.bjorck), checked against SVD."""

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import robustvae as rv
from robustvae import certify
from robustvae.bjorck import BjorckOrthonormal, BjorckVAE, BjorckVAEConfig, bjorck_orthonormalize
from robustvae.lipschitz import LipschitzLinear, LipschitzVAEConfig, get_lipschitz_vae


def _matrix(rows, cols, seed=0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(6, 15), (15, 6), (9, 9)])
def test_converges_to_the_polar_factor_of_the_svd(shape):
    """Enough iterations give U V^T, the orthonormal factor of the polar decomposition."""
    w = _matrix(*shape)
    u, _, vh = torch.linalg.svd(w, full_matrices=False)
    got = bjorck_orthonormalize(w, iters=60)
    assert torch.allclose(got, u @ vh, atol=1e-9)


@pytest.mark.parametrize("iters", [0, 1, 2, 5])
@pytest.mark.parametrize("shape", [(5, 12), (12, 5)])
def test_each_step_maps_the_scaled_singular_values_by_s_3_minus_s2_over_2(iters, shape):
    """Singular vectors kept, singular values s/||W||_F pushed through s(3 - s^2)/2, ``iters`` times."""
    w = _matrix(*shape, seed=iters)
    s = torch.linalg.svdvals(w) / w.norm()
    for _ in range(iters):
        s = s * (3 - s**2) / 2
    got = bjorck_orthonormalize(w, iters)
    assert torch.allclose(torch.linalg.svdvals(got), s, atol=1e-12)
    u, _, vh = torch.linalg.svd(w, full_matrices=False)
    assert torch.allclose(got, u @ torch.diag(s) @ vh, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 12), iters=st.integers(0, 20),
       scale=st.floats(1e-3, 1e3), seed=st.integers(0, 10_000))
def test_the_spectral_norm_never_exceeds_one_whatever_the_matrix_and_the_iterations(rows, cols, iters, scale, seed):
    w = scale * _matrix(rows, cols, seed)
    assert torch.linalg.matrix_norm(bjorck_orthonormalize(w, iters), ord=2) <= 1 + 1e-12


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="matrix"):
        bjorck_orthonormalize(torch.ones(3), 2)
    with pytest.raises(ValueError, match="iters"):
        BjorckOrthonormal(-1)
    with pytest.raises(ValueError, match="bjorck_iters"):
        BjorckVAEConfig(bjorck_iters=0)


def test_the_parametrisation_is_differentiable_and_its_gradient_matches_finite_differences():
    w = _matrix(4, 7).requires_grad_(True)
    torch.autograd.gradcheck(lambda m: bjorck_orthonormalize(m, 3), (w,))


def test_a_vae_of_equal_design_has_equal_constants_and_orthonormal_layers():
    cfg = LipschitzVAEConfig(margin=0.5, latent_dim=4, hidden=32, std_hidden=16)
    spectral, orth = cfg.build(), BjorckVAEConfig.of(cfg, bjorck_iters=40).build()
    assert isinstance(orth, BjorckVAE)
    design = cfg.design()
    for k, v in orth.lipschitz_constants().items():
        assert v == pytest.approx(design[k], rel=1e-5)
    spectral.tighten()   # exact power-iteration vectors: the spectral design is met exactly too
    assert orth.lipschitz_constants() == pytest.approx(spectral.lipschitz_constants(), rel=1e-5)
    # every layer's singular values all equal its scale: the layer preserves gradient norms
    # (on the smaller side), which spectral normalisation does not
    for m_orth, m_spec in zip(
        (m for m in orth.modules() if isinstance(m, LipschitzLinear)),
        (m for m in spectral.modules() if isinstance(m, LipschitzLinear)),
    ):
        s_orth = torch.linalg.svdvals(m_orth.linear.weight.detach().double())
        s_spec = torch.linalg.svdvals(m_spec.linear.weight.detach().double())
        assert torch.allclose(s_orth, torch.ones_like(s_orth), atol=1e-4)
        assert s_spec.min() < 0.9
    orth.tighten()   # a no-op, not a crash on a missing power-iteration state


def test_of_keeps_every_field_and_only_the_kind_and_iterations_differ():
    cfg = LipschitzVAEConfig(margin=0.7, r=3.0, latent_dim=6, hidden=16, seed=3, epochs=2)
    b = BjorckVAEConfig.of(cfg, bjorck_iters=7)
    assert b.bjorck_iters == 7 and b.kind != cfg.kind
    for f in ("margin", "r", "prob", "latent_dim", "hidden", "seed", "epochs", "lr", "dataset"):
        assert getattr(b, f) == getattr(cfg, f)
    assert b.design() == cfg.design()


@pytest.fixture
def tiny_dataset(monkeypatch):
    g = torch.Generator().manual_seed(0)
    fake = {split: (torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10)
            for split, n in (("train", 128), ("test", 64))}
    monkeypatch.setattr(rv.data, "load_dataset", lambda name, split="train": fake[split])
    return fake


def test_trained_bjorck_vae_is_certified_cached_and_reloads_identically(tiny_dataset):
    cfg = BjorckVAEConfig(margin=1.5, r=3.0, epochs=1, latent_dim=4, hidden=16, std_hidden=8, seed=2,
                          bjorck_iters=5)
    vae, hist = get_lipschitz_vae(cfg, device="cpu")
    assert isinstance(vae, BjorckVAE) and math.isfinite(hist["test_elbo"][-1])
    x, _ = tiny_dataset["test"]
    assert certify.certified_margins(vae, x, r=3.0).min() >= 1.5 * (1 - 1e-5)
    again, _ = get_lipschitz_vae(cfg, device="cpu")
    with torch.no_grad():
        assert torch.equal(vae.encode(x)[0], again.encode(x)[0])


# --- tests written against surviving mutants (benchmarks/mutation.py bjorck; tests/MUTANTS.md) ---

def test_the_documented_defaults_are_lnets_15_steps_and_zero_steps_is_the_scaled_matrix():
    """15 Björck steps by default everywhere (LNets' training value, and what the profile's cached
    model was trained with); 0 steps is allowed and is only the Frobenius scaling."""
    w = _matrix(6, 9)
    assert torch.equal(bjorck_orthonormalize(w), bjorck_orthonormalize(w, 15))
    assert not torch.equal(bjorck_orthonormalize(w, 15), bjorck_orthonormalize(w, 16))
    assert torch.equal(BjorckOrthonormal()(w), bjorck_orthonormalize(w, 15))
    assert torch.allclose(BjorckOrthonormal(0)(w), w / w.norm())
    cfg = LipschitzVAEConfig(latent_dim=4, hidden=16, std_hidden=8)
    assert BjorckVAEConfig().bjorck_iters == 15 and BjorckVAEConfig.of(cfg).bjorck_iters == 15
    assert BjorckVAEConfig.kind == "bjorck-vae"   # names its cache files
    vae = BjorckVAE(4, 16, 2.0, 1.0, 0.2, 0.5, std_hidden=8)
    layer = next(m for m in vae.modules() if isinstance(m, LipschitzLinear))
    assert vae.bjorck_iters == 15 and layer.linear.parametrizations.weight[0].iters == 15
    assert BjorckVAE(4, 16, 2.0, 1.0, 0.2, 0.5, std_hidden=8, bjorck_iters=3).bjorck_iters == 3

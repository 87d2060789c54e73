"""Tests of robustvae.discrete: the discretized-logistic likelihood against hand computations, its
probabilities summing to one, code lengths in bits, Serra et al.'s score in bits on both sides, and
the VAE and config built on it (CPU, tiny models)."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from scipy.special import expit
from scipy.stats import logistic

import robustvae as rv
from robustvae import cache, discrete, ood
from robustvae.discrete import DISCRETIZED, DiscretizedLogisticVAE, DiscretizedVAEConfig

SETTINGS = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
TINY = dict(dataset="mnist-5k", n_train=100, epochs=2, batch_size=50, latent_dim=2, width=4, hidden=16)


def _sigmoid(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


def test_a_two_pixel_image_matches_the_hand_computed_probabilities():
    """Pixel 1: level 77 (interior) under mu 0.3, s 0.05; pixel 2: level 255 (the top edge, which takes
    all the mass above) under mu 0.9, s 0.2; then level 0 (the bottom edge) under mu 0.1, s 0.02."""
    x = torch.tensor([[77 / 255, 1.0]], dtype=torch.float64)
    mu = torch.tensor([[0.3, 0.9]], dtype=torch.float64)
    s = torch.tensor([[0.05, 0.2]], dtype=torch.float64)
    lp = discrete.discretized_logistic_log_prob(x, mu, s.log())
    h = 0.5 / 255
    p1 = _sigmoid((77 / 255 + h - 0.3) / 0.05) - _sigmoid((77 / 255 - h - 0.3) / 0.05)
    p2 = 1 - _sigmoid((1 - h - 0.9) / 0.2)
    assert lp[0, 0].item() == pytest.approx(math.log(p1), rel=1e-12)
    assert lp[0, 1].item() == pytest.approx(math.log(p2), rel=1e-12)
    # the same with scipy's logistic distribution (loc, scale): a bin's mass is a difference of CDFs
    assert math.exp(lp[0, 0].item()) == pytest.approx(
        logistic.cdf(77 / 255 + h, 0.3, 0.05) - logistic.cdf(77 / 255 - h, 0.3, 0.05), rel=1e-10)
    assert math.exp(lp[0, 1].item()) == pytest.approx(logistic.sf(1 - h, 0.9, 0.2), rel=1e-10)
    # the image's log-probability is the sum over its pixels: p1 * p2, about 0.01960 * 0.37985
    assert lp.sum().exp().item() == pytest.approx(p1 * p2, rel=1e-10)
    assert p1 == pytest.approx(0.01960, abs=1e-5) and p2 == pytest.approx(0.37985, abs=1e-5)
    low = discrete.discretized_logistic_log_prob(torch.zeros(1, dtype=torch.float64),
                                                 torch.tensor([0.1], dtype=torch.float64),
                                                 torch.tensor([math.log(0.02)], dtype=torch.float64))
    assert low.exp().item() == pytest.approx(_sigmoid((h - 0.1) / 0.02), rel=1e-10)


@SETTINGS
@given(mu=st.floats(-0.5, 1.5), log_s=st.floats(discrete.LOG_SCALE_MIN, 3.0))
def test_the_256_probabilities_sum_to_one(mu, log_s):
    levels = torch.arange(256, dtype=torch.float64) / 255
    lp = discrete.discretized_logistic_log_prob(levels, torch.tensor(mu, dtype=torch.float64),
                                                torch.tensor(log_s, dtype=torch.float64))
    assert torch.isfinite(lp).all() and (lp <= 0).all()
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


@SETTINGS
@given(mu=st.floats(0.0, 1.0), log_s=st.floats(-6.0, 1.0), k=st.integers(1, 254))
def test_the_stable_form_equals_the_plain_difference_of_sigmoids(mu, log_s, k):
    """Where the plain difference is accurate (float64, taken on the side of 0.5 where the two sigmoids are
    small, scales not tiny), the log-space form agrees with it."""
    s, h = math.exp(log_s), 0.5 / 255
    a, b = (k / 255 + h - mu) / s, (k / 255 - h - mu) / s
    plain = expit(a) - expit(b) if a + b < 0 else expit(-b) - expit(-a)
    lp = discrete.discretized_logistic_log_prob(torch.tensor(k / 255, dtype=torch.float64),
                                                torch.tensor(mu, dtype=torch.float64),
                                                torch.tensor(log_s, dtype=torch.float64)).item()
    if plain > 1e-200:
        assert lp == pytest.approx(math.log(plain), rel=1e-6, abs=1e-9)


def test_tiny_probabilities_stay_finite_where_the_plain_difference_underflows():
    """Level 242, about 0.9 above mu at scale 1e-3: both sigmoids round to 1 in float32 and their
    difference to 0; the log form gives log(e^-b - e^-a), with a and b the bin's edges in scale units."""
    lp = discrete.discretized_logistic_log_prob(torch.tensor([242 / 255]), torch.tensor([0.05]),
                                                torch.tensor([math.log(1e-3)]))
    a, b = (242 / 255 + 0.5 / 255 - 0.05) / 1e-3, (242 / 255 - 0.5 / 255 - 0.05) / 1e-3
    exact = -b + math.log1p(-math.exp(b - a))  # about -897.08
    assert torch.isfinite(lp).all() and lp.item() == pytest.approx(exact, rel=1e-5)


@SETTINGS
@given(x=st.floats(0.0, 1.0))
def test_a_float_pixel_is_read_as_the_level_png_stores(x):
    """Both code lengths of input complexity describe one 8-bit image: the likelihood's level round(255 x)
    is the byte that robustvae.ood.compressed_bits writes into the PNG."""
    t = torch.tensor([[[[x]]]], dtype=torch.float32)
    assert discrete.to_levels(t).item() == int(ood._to_uint8(t)[0, 0, 0, 0])


def test_to_levels_clips_and_rounds():
    x = torch.tensor([-0.2, 0.0, 0.4 / 255, 0.6 / 255, 128 / 255, 1.0, 1.3])
    assert discrete.to_levels(x).tolist() == [0, 0, 0, 1, 128, 255, 255]


def test_nats_to_bits():
    assert discrete.nats_to_bits(math.log(2)) == pytest.approx(1.0)
    assert discrete.nats_to_bits(256 * math.log(256)) == pytest.approx(256 * 8)
    p = 0.0157
    assert discrete.nats_to_bits(-math.log(p)) == pytest.approx(-math.log2(p))
    t = torch.tensor([math.log(2), 8 * math.log(2)])
    assert discrete.nats_to_bits(t).tolist() == pytest.approx([1.0, 8.0])


class _CodeLength(ood.Detector):
    """A 'likelihood' detector whose -log p(x) in nats is ln 2 * (the PNG length + extra bits per pixel)."""

    def __init__(self, extra_bits_per_pixel: float = 0.0):
        super().__init__(torch.nn.Linear(1, 1))  # a module with a parameter: the device the scores run on
        self.extra = extra_bits_per_pixel

    def _score_batch(self, x):
        bits = ood.compressed_bits(x).to(x.device) + self.extra * x[0].numel()
        return bits * math.log(2)


def test_serra_score_is_in_bits_on_both_sides(tiny_images):
    """A model whose code length is the PNG file's length has S(x) = 0; one bit per pixel more gives
    S(x) = 1 (bits per pixel). A score that mixed nats and bits would give about -0.3 and 0.1 here."""
    x = torch.cat([tiny_images, ood.constant_images(3), torch.zeros(2, 1, 28, 28)])
    zero = ood.InputComplexity(_CodeLength()).score(x)
    one = ood.InputComplexity(_CodeLength(1.0)).score(x)
    assert torch.allclose(zero, torch.zeros(len(x), dtype=torch.float64), atol=1e-9)
    assert torch.allclose(one, torch.ones(len(x), dtype=torch.float64), atol=1e-9)


def test_the_discretized_vae_code_length_is_in_bits_of_the_8bit_image():
    """The VAE's -log2 p(x|z) is the sum of -log2 P over the 784 levels; an image off the 256-level grid
    has the probability of its rounded image; the two output channels are the location and log-scale."""
    torch.manual_seed(0)
    vae = DiscretizedLogisticVAE(latent_dim=2, width=4, hidden=8).double()
    x = torch.randint(0, 256, (3, 1, 28, 28)).double() / 255
    out = vae.decode(torch.randn(3, 2, dtype=torch.float64))
    assert out.shape == (3, 2, 28, 28) and vae.likelihood == DISCRETIZED
    mu, log_s = vae.split(out)
    assert torch.equal(mu, torch.sigmoid(out[:, :1])) and torch.equal(vae.mean_image(out), mu)
    direct = discrete.discretized_logistic_log_prob(x, mu, log_s).flatten(1).sum(1)
    ll = vae.log_px_given_z(x, out)
    assert torch.allclose(ll, direct) and (ll <= 0).all()
    off_grid = (x + 0.3 / 255).clamp(0, 1)
    assert torch.allclose(vae.log_px_given_z(off_grid, out), ll)
    # the log-scale is floored
    out_small = out.clone()
    out_small[:, 1] = -50.0
    assert (vae.split(out_small)[1] == discrete.LOG_SCALE_MIN).all()
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        vae.split(out[:, :1])
    # ELBO, IWAE and the chapter's detectors run on it; the Bernoulli-ceiling correction does not apply
    assert vae.iwae(x, k=3).shape == (3,) and vae.elbo(x)["elbo"].shape == (3,)
    names = set(ood.vae_detectors(vae.float(), k=2))
    assert ood.InputComplexity(ood.NegIWAE(vae, k=2)).name in names
    assert "-log p(x) - sum H_b(x)" not in names


def test_training_lowers_the_code_length_and_the_config_has_its_own_cache_entry():
    """get_discretized_vae trains the VAE of its config (the loss falls below the untrained code length)
    and loads it the second time; the config keeps every field of the VAE's config and has its own key."""
    vae_cfg = rv.VAEConfig(**TINY)
    cfg = DiscretizedVAEConfig.of(vae_cfg)
    assert {f: getattr(cfg, f) for f in vae_cfg.__dict__ if f != "likelihood"} == {
        k: v for k, v in vae_cfg.__dict__.items() if k != "likelihood"}
    assert cfg.likelihood == DISCRETIZED and cache.config_key(cfg) != cache.config_key(vae_cfg)
    assert cache.checkpoint_path(cfg).name.startswith("discretized-vae-")
    torch.manual_seed(0)
    x, _ = cfg.training_data()
    with torch.no_grad():
        untrained = -cfg.build().elbo(x)["elbo"].mean().item()
    vae, history = discrete.get_discretized_vae(cfg, device="cpu")
    assert isinstance(vae, DiscretizedLogisticVAE) and len(history["train_loss"]) == 2
    assert history["train_loss"][-1] < untrained
    again, _ = discrete.get_discretized_vae(cfg, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), again.state_dict().values()))


def test_the_config_rejects_other_likelihoods_and_other_configs():
    with pytest.raises(ValueError, match="likelihood"):
        DiscretizedVAEConfig(likelihood="bernoulli")
    with pytest.raises(TypeError, match="VAEConfig"):
        DiscretizedVAEConfig.of(DiscretizedVAEConfig())


def test_the_book_models_and_scores_do_not_import_this_module():
    """The model cache keys models by the code of the modules that build them (and of what those import):
    robustvae.models, robustvae.training and robustvae.ood must not import robustvae.discrete, so that
    adding or changing it retrains no model of the book and invalidates no cached score."""
    import ast
    import importlib.util
    from pathlib import Path

    for module in ("robustvae.models", "robustvae.training", "robustvae.ood"):
        tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
        assert "robustvae.discrete" not in cache._package_imports(tree, module), module


def test_a_decoder_sure_of_every_pixel_codes_the_image_in_well_under_a_bit_per_pixel():
    """Location on the level, the smallest scale: every level has probability near 1, and the image's
    code length is near 0 bits (a discrete likelihood is at most 1: no density can run off to infinity)."""
    x = torch.randint(0, 256, (1, 1, 28, 28)).double() / 255
    sure = discrete.discretized_logistic_log_prob(x, x, torch.full_like(x, discrete.LOG_SCALE_MIN)).sum()
    assert 0 <= discrete.nats_to_bits(-sure).item() / 784 < 0.01


# --- tests written against surviving mutants (benchmarks/mutation.py discrete; tests/MUTANTS.md) ---

def test_the_vae_reads_location_and_log_scale_from_the_two_decoder_channels():
    """A decoder output with known channels gives the scipy probability of each pixel's level: channel 0
    holds the location's logit, channel 1 the log-scale (floored at LOG_SCALE_MIN)."""
    vae = DiscretizedLogisticVAE(latent_dim=2, hidden=8)
    out = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    out[0, 0] = torch.tensor([[0.0, 1.0]], dtype=torch.float64)            # mu = 0.5, sigmoid(1)
    out[0, 1] = torch.tensor([[math.log(0.05), -50.0]], dtype=torch.float64)  # s = 0.05, floored
    x = torch.tensor([[[[128 / 255, 187 / 255]]]], dtype=torch.float64)   # 187: one level above mu
    mu, log_s = vae.split(out)
    assert mu.shape == log_s.shape == (1, 1, 1, 2)
    assert log_s[0, 0, 0, 1].item() == pytest.approx(discrete.LOG_SCALE_MIN)
    expected = 0.0
    for k, m, s in ((128, 0.5, 0.05), (187, expit(1.0), math.exp(discrete.LOG_SCALE_MIN))):
        p = logistic.cdf((k + 0.5) / 255, m, s) - logistic.cdf((k - 0.5) / 255, m, s)
        expected += math.log(p)
    got = vae.log_px_given_z(x, out).item()
    assert got == pytest.approx(expected, rel=1e-6)

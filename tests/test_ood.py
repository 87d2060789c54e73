import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torch import nn

import robustvae as rv
from robustvae import ood
from robustvae.models import VAE, gaussian_kl


class _FirstPixels(nn.Module):
    """A mock encoder: mu = the first d pixels, log_var = a fixed value."""

    def __init__(self, d=3, log_var=0.0):
        super().__init__()
        self.d, self.lv = d, log_var
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        mu = x.flatten(1)[:, : self.d] + 0 * self.dummy
        return mu, torch.full_like(mu, self.lv)


@pytest.fixture(scope="module")
def tiny_vae():
    torch.manual_seed(0)
    return VAE(latent_dim=4, width=4, hidden=16).eval()


@pytest.fixture(scope="module")
def tiny_clf():
    torch.manual_seed(0)
    return rv.Classifier(width=4).eval()


@pytest.fixture(scope="module")
def trained_tiny_vae():
    """A small VAE trained for a few seconds on 800 digits: enough to tell digits from noise."""
    torch.manual_seed(0)
    x, _ = rv.load_dataset("mnist-5k", "train")
    x = x[::5]
    vae = VAE(latent_dim=4, width=8, hidden=64)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(4):
        for i in range(0, len(x), 100):
            loss = vae.loss(x[i : i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return vae.eval(), x


def _all_detectors(vae, clf):
    return [
        ood.KLScore(vae), ood.LatentNorm(vae), ood.EncoderVariance(vae), ood.LatentMahalanobis(vae),
        ood.ReconstructionMSE(vae), ood.DecoderNLL(vae), ood.NegELBO(vae), ood.NegIWAE(vae, k=4),
        ood.InputComplexity(ood.NegIWAE(vae, k=4)), ood.InputComplexity(ood.NegELBO(vae), "zlib"),
        ood.LikelihoodRatio(ood.NegELBO(vae), ood.NegELBO(vae)), ood.BernoulliCeilingRatio(ood.NegIWAE(vae, k=4)),
        ood.MaxSoftmax(clf), ood.EnergyScore(clf),
    ]


def test_every_detector_scores_a_batch(tiny_vae, tiny_clf, tiny_images):
    for det in _all_detectors(tiny_vae, tiny_clf):
        s = det.fit(tiny_images).score(tiny_images)
        assert s.shape == (6,) and s.dtype == torch.float64, det
        assert torch.isfinite(s).all(), det
        assert isinstance(det.name, str) and det.name


def test_deterministic_scores_do_not_depend_on_batching(tiny_vae, tiny_clf, tiny_images):
    for cls in (ood.KLScore, ood.LatentNorm, ood.EncoderVariance, ood.ReconstructionMSE, ood.DecoderNLL):
        a = cls(tiny_vae, batch_size=2).score(tiny_images)
        b = cls(tiny_vae, batch_size=500).score(tiny_images)
        assert torch.allclose(a, b, atol=1e-5), cls
    for cls in (ood.MaxSoftmax, ood.EnergyScore):
        assert torch.allclose(cls(tiny_clf, batch_size=4).score(tiny_images), cls(tiny_clf).score(tiny_images), atol=1e-5)


def test_latent_scores_match_their_formulas(tiny_vae, tiny_images):
    with torch.no_grad():
        mu, log_var = tiny_vae.encode(tiny_images)
    assert torch.allclose(ood.KLScore(tiny_vae).score(tiny_images), gaussian_kl(mu, log_var).double(), atol=1e-5)
    assert torch.allclose(ood.LatentNorm(tiny_vae).score(tiny_images), mu.norm(dim=1).double(), atol=1e-5)
    assert torch.allclose(ood.EncoderVariance(tiny_vae).score(tiny_images), log_var.exp().mean(1).double(), atol=1e-6)


def test_mahalanobis_against_numpy():
    vae = VAE(latent_dim=3, encoder=_FirstPixels(3))
    g = torch.Generator().manual_seed(1)
    x_train = torch.rand(200, 1, 28, 28, generator=g)
    x = torch.rand(5, 1, 28, 28, generator=g)
    det = ood.LatentMahalanobis(vae, shrinkage=0.0).fit(x_train)
    z_tr = x_train.flatten(1)[:, :3].double().numpy()
    z = x.flatten(1)[:, :3].double().numpy()
    d = z - z_tr.mean(0)
    expected = np.einsum("ij,jk,ik->i", d, np.linalg.inv(np.cov(z_tr.T)), d)
    assert np.allclose(det.score(x).numpy(), expected, rtol=1e-5)
    # the training mean itself is at distance zero
    centre = x_train.mean(0, keepdim=True)
    assert det.score(centre).item() == pytest.approx(0.0, abs=1e-8)


def test_mahalanobis_needs_fit(tiny_vae, tiny_images):
    with pytest.raises(RuntimeError, match="fit"):
        ood.LatentMahalanobis(tiny_vae).score(tiny_images)


def test_encoder_variance_by_hand(tiny_images):
    vae = VAE(latent_dim=3, encoder=_FirstPixels(3, log_var=math.log(0.25)))
    assert torch.allclose(ood.EncoderVariance(vae).score(tiny_images), torch.full((6,), 0.25, dtype=torch.float64))


def test_decoder_nll_and_mse_at_the_posterior_mean(tiny_vae, tiny_images):
    with torch.no_grad():
        mu, _ = tiny_vae.encode(tiny_images)
        logits = tiny_vae.decode(mu)
        nll = -tiny_vae.log_px_given_z(tiny_images, logits)
        mse = (torch.sigmoid(logits) - tiny_images).pow(2).flatten(1).mean(1)
    assert torch.allclose(ood.DecoderNLL(tiny_vae).score(tiny_images), nll.double(), atol=1e-4)
    assert torch.allclose(ood.ReconstructionMSE(tiny_vae).score(tiny_images), mse.double(), atol=1e-6)


def test_iwae_score_is_below_elbo_score_on_average(tiny_vae, tiny_images):
    torch.manual_seed(0)
    neg_elbo = torch.stack([ood.NegELBO(tiny_vae).score(tiny_images) for _ in range(20)]).mean(0)
    neg_iwae = ood.NegIWAE(tiny_vae, k=256).score(tiny_images)
    assert (neg_iwae <= neg_elbo + 0.05).all()
    torch.manual_seed(3); a = ood.NegIWAE(tiny_vae, k=8).score(tiny_images)
    torch.manual_seed(3); b = ood.NegIWAE(tiny_vae, k=8).score(tiny_images)
    assert torch.equal(a, b)


def test_compressed_bits_orders_simple_below_complex():
    const = ood.constant_images(4, seed=0)
    noise = ood.uniform_noise(4, seed=0)
    for c in ood.COMPRESSORS:
        bc, bn = ood.compressed_bits(const, c), ood.compressed_bits(noise, c)
        assert bc.shape == (4,) and (bc > 0).all()
        assert (bn > 5 * bc).all(), c
        # uniform 8-bit noise is incompressible: about 8 bits per pixel, plus headers
        assert (bn >= 8 * 784 * 0.98).all()
    with pytest.raises(ValueError, match="compressor"):
        ood.compressed_bits(const, "gzip")


def test_input_complexity_is_likelihood_in_bits_minus_compressed_length(tiny_vae, tiny_images):
    like = ood.DecoderNLL(tiny_vae)
    s = ood.InputComplexity(like, "zlib").score(tiny_images)
    expected = (like.score(tiny_images) / math.log(2) - ood.compressed_bits(tiny_images, "zlib")) / 784
    assert torch.allclose(s, expected)
    with pytest.raises(ValueError):
        ood.InputComplexity(tiny_vae)


class _MeanIntensityNLL(ood.Detector):
    """A likelihood known in closed form: the mean pixel intensity ``m`` of an image is modelled as
    ``N(loc, scale^2)`` and the score is ``-log N(m; loc, scale^2)`` (scipy gives the reference)."""

    def __init__(self, loc, scale):
        super().__init__(nn.Linear(1, 1))
        self.loc, self.scale = loc, scale

    def _score_batch(self, x):
        m = x.flatten(1).mean(1).double()
        return 0.5 * ((m - self.loc) / self.scale) ** 2 + math.log(self.scale) + 0.5 * math.log(2 * math.pi)


def test_likelihood_ratio_is_the_negative_log_ratio_of_model_to_background():
    """Ren et al. (2019), Eq. 5, against scipy: ``score = -(log p_theta(x) - log p_theta0(x))``. The model
    is sharp around the in-distribution mean intensity, the background broad: in-distribution
    images get low scores and the detector separates them from brighter OOD images (AUROC 1),
    which its negation would not (AUROC 0)."""
    from scipy.stats import norm as normal

    fg, bg = _MeanIntensityNLL(0.2, 0.02), _MeanIntensityNLL(0.3, 0.3)
    lr = ood.LikelihoodRatio(fg, bg)
    g = torch.Generator().manual_seed(0)
    x_in = (0.2 + 0.01 * torch.randn(20, 1, 1, 1, generator=g)).expand(20, 1, 28, 28).clone()
    x_out = (0.5 + 0.05 * torch.randn(20, 1, 1, 1, generator=g)).expand(20, 1, 28, 28).clone()
    for x in (x_in, x_out):
        m = x.flatten(1).double().mean(1).numpy()
        expected = -(normal.logpdf(m, 0.2, 0.02) - normal.logpdf(m, 0.3, 0.3))
        np.testing.assert_allclose(lr.score(x).numpy(), expected, rtol=1e-5)
    assert ood.ood_metrics(lr.score(x_in), lr.score(x_out))["auroc"] == 1.0
    # against itself the ratio is zero
    assert torch.allclose(ood.LikelihoodRatio(fg, fg).score(x_in), torch.zeros(20, dtype=torch.float64))


class _FixedPosterior(nn.Module):
    """A mock encoder returning stored ``(mu, log_var)`` rows, one per input in order."""

    def __init__(self, mu, log_var):
        super().__init__()
        self.register_buffer("mu", mu.clone())
        self.register_buffer("lv", log_var.clone())

    def forward(self, x):
        return self.mu[: len(x)], self.lv[: len(x)]


def test_likelihood_regret_is_large_for_a_bad_encoder_and_near_zero_for_the_best(trained_tiny_vae):
    """Xiao et al. (2020): the regret is what fitting the posterior to x alone gains. An encoder that
    already outputs the fitted posterior leaves no regret; one that outputs a posterior far from it
    (far from the prior and too narrow) leaves a large one. A flipped sign, an optimiser that climbs
    the wrong way or no optimisation at all fails one of the two."""
    vae, x = trained_tiny_vae
    x = x[:12]
    torch.manual_seed(0)
    det = ood.LikelihoodRegret(vae, k=64, steps=300, lr=0.05)
    mu_star, lv_star = det.fit_posterior(x)

    def elbo(mu, lv, n=256):   # the objective fitted, with little Monte-Carlo noise
        z = mu + (0.5 * lv).exp() * torch.randn((n,) + mu.shape)
        rec = vae.log_px_given_z(x.repeat(n, 1, 1, 1), vae.decode(z.flatten(0, 1))).view(n, -1).mean(0)
        return rec - gaussian_kl(mu, lv)

    with torch.no_grad():
        gain = elbo(mu_star, lv_star) - elbo(*vae.encode(x))
    assert gain.min() > 0.5
    best = VAE(latent_dim=4, width=8, hidden=64, encoder=_FixedPosterior(mu_star, lv_star), decoder=vae.decoder).eval()
    bad = VAE(latent_dim=4, width=8, hidden=64, encoder=_FixedPosterior(mu_star + 3.0, lv_star - 3.0),
              decoder=vae.decoder).eval()
    torch.manual_seed(1)
    r_best = ood.LikelihoodRegret(best, k=64, steps=100).score(x)
    r_bad = ood.LikelihoodRegret(bad, k=64, steps=100).score(x)
    assert r_best.abs().median() < 2.0
    assert (r_bad > 20.0).all()
    assert ood.ood_metrics(r_best, r_bad)["auroc"] == 1.0


def test_likelihood_regret_rejects_bad_settings(tiny_vae):
    for kw in ({"k": 0}, {"steps": 0}, {"mc": 1.5}, {"lr": 0.0}):
        with pytest.raises(ValueError):
            ood.LikelihoodRegret(tiny_vae, **kw)


def test_likelihood_ratio_against_itself_is_zero(tiny_vae, tiny_images):
    lr = ood.LikelihoodRatio(ood.DecoderNLL(tiny_vae), ood.DecoderNLL(tiny_vae))
    assert torch.allclose(lr.score(tiny_images), torch.zeros(6, dtype=torch.float64))


def test_bernoulli_entropy_by_hand():
    assert ood.bernoulli_entropy(torch.zeros(2, 1, 28, 28)).abs().max() < 1e-12
    assert ood.bernoulli_entropy(torch.ones(1, 1, 28, 28)).item() == pytest.approx(0.0, abs=1e-12)
    half = torch.full((1, 1, 28, 28), 0.5)
    assert ood.bernoulli_entropy(half).item() == pytest.approx(784 * math.log(2))
    # it is the lowest Bernoulli NLL any decoder output reaches
    vae = VAE(latent_dim=2)
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    logit_x = torch.logit(x.clamp(1e-6, 1 - 1e-6))
    nll_best = -vae.log_px_given_z(x, logit_x).double()
    assert torch.allclose(nll_best, ood.bernoulli_entropy(x), rtol=1e-4)
    nll_other = -vae.log_px_given_z(x, logit_x + 0.3).double()
    assert (nll_other > nll_best).all()


def test_mutate():
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ood.mutate(x, 0.0), x)
    g = torch.Generator().manual_seed(0)
    m = ood.mutate(x, 0.3, generator=g)
    frac = (m != x).float().mean().item()
    assert 0.25 < frac < 0.35
    assert m.min() >= 0 and m.max() <= 1
    with pytest.raises(ValueError, match="rate"):
        ood.mutate(x, 1.5)


def test_classifier_scores_by_hand():
    clf = nn.Linear(784, 3)
    with torch.no_grad():
        clf.weight.zero_()
        clf.bias.copy_(torch.tensor([2.0, 0.0, 0.0]))
    model = nn.Sequential(nn.Flatten(), clf)
    x = torch.zeros(2, 1, 28, 28)
    p_max = math.exp(2) / (math.exp(2) + 2)
    assert torch.allclose(ood.MaxSoftmax(model).score(x), torch.full((2,), -p_max, dtype=torch.float64))
    energy = -math.log(math.exp(2) + 2)
    assert torch.allclose(ood.EnergyScore(model).score(x), torch.full((2,), energy, dtype=torch.float64))
    e_t2 = -2 * math.log(math.exp(1) + 2)
    assert ood.EnergyScore(model, temperature=2.0).score(x)[0].item() == pytest.approx(e_t2)
    with pytest.raises(ValueError, match="temperature"):
        ood.EnergyScore(model, temperature=0)


def test_fpr95_on_a_collinear_roc_segment():
    # in: 0..99; out: 95 copies of 1000 and five scores spread inside the in-range
    s_in = np.arange(100.0)
    s_out = np.r_[np.full(95, 1000.0), [10.5, 20.5, 30.5, 40.5, 50.5]]
    # accepting 95% of in-distribution needs threshold 94: OOD scores 10.5..50.5 are accepted
    assert ood.ood_metrics(s_in, s_out)["fpr95"] == pytest.approx(0.05)
    assert ood._fast_metrics(s_in, s_out)[2] == pytest.approx(0.05)


def test_metrics_on_perfect_and_reversed_scores():
    s_in, s_out = np.arange(100.0), np.arange(100.0) + 1000
    m = ood.ood_metrics(s_in, s_out)
    assert m == {"auroc": 1.0, "aupr": 1.0, "fpr95": 0.0}
    r = ood.ood_metrics(s_out, s_in)
    assert r["auroc"] == 0.0 and r["fpr95"] == 1.0
    # identical score distributions: chance
    c = ood.ood_metrics(np.zeros(50), np.zeros(50))
    assert c["auroc"] == 0.5 and c["fpr95"] == 1.0


def test_fast_metrics_match_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(20):
        s_in = rng.integers(0, 15, size=rng.integers(5, 60)).astype(float)
        s_out = rng.integers(3, 20, size=rng.integers(5, 60)).astype(float)
        auroc, aupr, fpr95 = ood._fast_metrics(s_in, s_out)
        y = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
        s = np.r_[s_in, s_out]
        assert auroc == pytest.approx(roc_auc_score(y, s))
        assert aupr == pytest.approx(average_precision_score(y, s))
        fpr, tpr, _ = roc_curve(1 - y, -s, drop_intermediate=False)
        assert fpr95 == pytest.approx(fpr[np.searchsorted(tpr, 0.95 - 1e-12)]), trial
        ref = ood.ood_metrics(s_in, s_out)
        assert (auroc, aupr, fpr95) == pytest.approx((ref["auroc"], ref["aupr"], ref["fpr95"]))


def test_bootstrap_intervals_are_seeded_and_bracket_the_estimate():
    rng = np.random.default_rng(1)
    s_in, s_out = rng.normal(size=300), rng.normal(1.0, size=300)
    a = ood.ood_metrics(s_in, s_out, n_boot=200, seed=0)
    b = ood.ood_metrics(torch.from_numpy(s_in), torch.from_numpy(s_out), n_boot=200, seed=0)
    assert a == pytest.approx(b)
    for k in ("auroc", "aupr", "fpr95"):
        assert a[f"{k}_lo"] <= a[k] <= a[f"{k}_hi"]
    assert 0.02 < a["auroc_hi"] - a["auroc_lo"] < 0.15


def test_bootstrap_interval_covers_the_true_auroc_most_of_the_time():
    # the true AUROC of N(0,1) (in) vs N(1,1) (out) is Phi(1/sqrt 2) = 0.7602
    rng = np.random.default_rng(2)
    hits = []
    for rep in range(30):
        m = ood.ood_metrics(rng.normal(size=100), rng.normal(1.0, size=100), n_boot=100, seed=rep)
        hits.append(m["auroc_lo"] <= 0.7602 <= m["auroc_hi"])
    assert np.mean(hits) >= 0.8  # nominal 0.95


@pytest.mark.parametrize("bad", [np.array([]), np.array([1.0, np.nan]), np.zeros((2, 2))])
def test_metrics_reject_bad_scores(bad):
    with pytest.raises(ValueError):
        ood.ood_metrics(bad, np.ones(3))


def test_roc_curve_endpoints():
    fpr, tpr = ood.roc(np.zeros(10), np.ones(10))
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr[-1] == 1


def test_ood_sets_shapes_ranges_and_seeds():
    for make in (ood.uniform_noise, ood.gaussian_noise, ood.constant_images):
        x = make(7, seed=3)
        assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32
        assert x.min() >= 0 and x.max() <= 1
        assert torch.equal(x, make(7, seed=3)) and not torch.equal(x, make(7, seed=4))
    c = ood.constant_images(5)
    assert (c.flatten(1).std(1) == 0).all()
    with pytest.raises(ValueError):
        ood.uniform_noise(0)
    x = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ood.invert(ood.invert(x)), x)
    r = ood.rotate_flip(x, seed=0)
    assert r.shape == x.shape and not torch.equal(r, x)
    # a rotation or flip permutes pixels: each image keeps its sorted pixel values
    assert torch.equal(r.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert torch.equal(ood.rotate_flip(x, transforms=("rot180",)), torch.rot90(x, 2, dims=(-2, -1)))
    with pytest.raises(ValueError, match="transforms"):
        ood.rotate_flip(x, transforms=("shear",))


def test_sklearn_digits_look_like_mnist():
    x, y = ood.sklearn_digits()
    assert x.shape == (1797, 1, 28, 28) and y.shape == (1797,)
    assert x.min() >= 0 and x.max() <= 1
    assert x[:, :, :4].abs().max() == 0 and x[:, :, -4:].abs().max() == 0  # MNIST-like 4-pixel border
    xs, ys = ood.sklearn_digits(100, seed=0)
    assert xs.shape == (100, 1, 28, 28) and torch.equal(xs, ood.sklearn_digits(100, seed=0)[0])


def test_a_trained_vae_tells_digits_from_noise(trained_tiny_vae):
    vae, x_train = trained_tiny_vae
    x_in = rv.load_dataset("mnist-5k", "test")[0][:200]
    x_out = ood.uniform_noise(200, seed=0)
    # a few seconds of training: likelihood and reconstruction already separate digits from
    # noise; the latent geometry is still rough, so the Mahalanobis bar is lower
    for det, bar in ((ood.NegELBO(vae), 0.95), (ood.ReconstructionMSE(vae), 0.95),
                     (ood.LatentMahalanobis(vae).fit(x_train), 0.75)):
        torch.manual_seed(0)
        m = ood.ood_metrics(det.score(x_in), det.score(x_out))
        assert m["auroc"] > bar, (det, m)
    # and an untrained VAE does not: the test above measures training, not the noise
    untrained = VAE(latent_dim=4, width=8, hidden=64).eval()
    torch.manual_seed(0)
    m = ood.ood_metrics(ood.ReconstructionMSE(untrained).score(x_in), ood.ReconstructionMSE(untrained).score(x_out))
    assert m["auroc"] < 0.95


def test_score_sets_and_metrics_table(tiny_vae, tiny_clf, tiny_images):
    dets = {**ood.vae_detectors(tiny_vae, k=4), **ood.classifier_detectors(tiny_clf)}
    assert len(dets) == 12
    sets = {"in": tiny_images, "noise": ood.uniform_noise(5), "const": ood.constant_images(4)}
    scores = ood.score_sets(dets, sets, x_train=tiny_images, seed=0)
    assert set(scores) == set(dets) and all(set(v) == set(sets) for v in scores.values())
    assert scores["-ELBO"]["noise"].shape == (5,)
    # the wrapper reused the IWAE scores computed under the same seed: same as computing afresh
    ic = dets["input complexity S(x)"]
    torch.manual_seed(0)
    assert torch.allclose(scores["input complexity S(x)"]["noise"], ic.score(sets["noise"]))
    table = ood.metrics_table(scores, "in", n_boot=10, seed=0)
    assert len(table) == 12 * 2 and {"auroc", "aupr", "fpr95", "auroc_lo", "fpr95_hi"} <= set(table.columns)
    with pytest.raises(ValueError, match="missing"):
        ood.metrics_table(scores, "nope")


def test_bernoulli_ceiling_ratio_is_nonnegative_and_bernoulli_only(tiny_vae, tiny_images):
    s = ood.BernoulliCeilingRatio(ood.DecoderNLL(tiny_vae)).score(tiny_images)
    expected = ood.DecoderNLL(tiny_vae).score(tiny_images) - ood.bernoulli_entropy(tiny_images)
    assert torch.allclose(s, expected)
    assert (s >= 0).all()  # no decoder beats the saturated model
    gauss = VAE(latent_dim=2, likelihood="gaussian")
    with pytest.raises(ValueError, match="Bernoulli"):
        ood.BernoulliCeilingRatio(ood.NegELBO(gauss))
    assert "-log p(x) - sum H_b(x)" not in ood.vae_detectors(gauss, k=2)


def test_score_sets_fits_copies_and_a_cached_call_gives_the_same_scores(tiny_vae, tiny_images):
    """score_sets is cached (robustvae.memo): it fits copies, so the caller's detectors are the same
    after a computed call as after a loaded one, and the loaded scores equal the computed ones."""
    det = ood.LatentMahalanobis(tiny_vae)
    sets = {"in": tiny_images, "noise": ood.uniform_noise(5)}
    first = ood.score_sets({"m": det}, sets, x_train=tiny_images, seed=0)
    assert det.mean is None and det.precision is None, "the caller's detector must stay unfitted"
    again = ood.score_sets({"m": det}, sets, x_train=tiny_images, seed=0)
    assert all(torch.equal(first["m"][s], again["m"][s]) for s in sets)
    fitted = ood.LatentMahalanobis(tiny_vae).fit(tiny_images)
    assert torch.allclose(first["m"]["noise"], fitted.score(sets["noise"]))


# ---------------------------------------------------------------------------------------
# The background model of the likelihood ratio (Ren et al., NeurIPS 2019)
# ---------------------------------------------------------------------------------------
TINY_BG = dict(dataset="mnist-5k", n_train=100, epochs=2, batch_size=50, latent_dim=2, width=4, hidden=16)


def _record_training_batches(monkeypatch) -> list[torch.Tensor]:
    """Make every ``VAE.loss`` call record the batch it trains on (the images the loss sees)."""
    seen: list[torch.Tensor] = []
    loss = VAE.loss

    def spy(self, x):
        seen.append(x.detach().cpu().clone())
        return loss(self, x)

    monkeypatch.setattr(VAE, "loss", spy)
    return seen


def _differing_fraction(batches: list[torch.Tensor], clean: torch.Tensor) -> torch.Tensor:
    """For every trained-on image, the fraction of its pixels that differ from the closest clean image."""
    flat = clean.flatten(1)
    return torch.cat([(b.flatten(1)[:, None, :] != flat[None]).float().mean(-1).min(1).values for b in batches])


def test_the_background_vae_trains_on_images_mutated_at_its_rate_afresh_each_epoch(monkeypatch):
    """Ren et al.'s background model sees its training images with a fraction ``rate`` of their pixels
    replaced by uniform grey levels (a pixel redrawn to its own value stays: 1 in 256). The VAE of the
    same config trains on the clean images (the control: a background training that forgot to mutate
    fails here). Mutations are drawn afresh at every batch, so an image's two epochs differ."""
    seen = _record_training_batches(monkeypatch)
    cfg = ood.BackgroundVAEConfig(**TINY_BG, mutation_rate=0.3)
    clean, _ = cfg.training_data()
    ood.get_background_vae(cfg, device="cpu")
    assert sum(len(b) for b in seen) == 2 * len(clean)  # two epochs, every image once per epoch
    frac = _differing_fraction(seen, clean)
    assert 0.3 * 0.97 < frac.mean() < 0.3 * 1.03, frac.mean()
    assert frac.min() > 0.15 and frac.max() < 0.45  # each image is mutated, none wholesale
    epochs = [torch.cat(seen[:2]), torch.cat(seen[2:])]  # 100 images in batches of 50
    source = [(e.flatten(1)[:, None, :] != clean.flatten(1)[None]).sum(-1).argmin(1) for e in epochs]
    for src in source:  # each epoch trains on a mutated copy of every clean image, once
        assert torch.equal(src.sort().values, torch.arange(len(clean)))
    second = epochs[1][source[1].argsort()][source[0]]  # epoch 2's copy of each image of epoch 1
    changed = (second != epochs[0]).flatten(1).any(1)
    assert changed.all(), "an image met again in the second epoch kept its mutations"
    seen.clear()
    rv.get_vae(rv.VAEConfig(**TINY_BG), device="cpu")
    assert _differing_fraction(seen, clean).max() == 0.0


def test_the_background_vae_has_the_vae_config_and_its_own_cache_entry_per_rate(monkeypatch):
    """``BackgroundVAEConfig.of`` keeps every field of the VAE's config; the rate is part of the cache key:
    a second call with the same rate loads the checkpoint (no training), another rate trains another model."""
    from robustvae import cache

    vae_cfg = rv.VAEConfig(**TINY_BG)
    cfg = ood.BackgroundVAEConfig.of(vae_cfg, 0.2)
    assert {f: getattr(cfg, f) for f in vae_cfg.__dict__} == vae_cfg.__dict__
    keys = {r: cache.config_key(ood.BackgroundVAEConfig.of(vae_cfg, r)) for r in (0.1, 0.2, 0.3)}
    assert len(set(keys.values())) == 3 and cache.config_key(vae_cfg) not in keys.values()
    assert cache.config_key(ood.BackgroundVAEConfig.of(vae_cfg, 0.2)) == keys[0.2]
    assert cache.checkpoint_path(cfg).name == f"background-vae-{keys[0.2]}.pt"
    seen = _record_training_batches(monkeypatch)
    bg, history = ood.get_background_vae(cfg, device="cpu")
    assert seen and len(history["train_loss"]) == 2 and len(history["test_elbo"]) == 2
    seen.clear()
    again, history_again = ood.get_background_vae(cfg, device="cpu")
    assert not seen, "the second call trained instead of loading the checkpoint"
    assert history_again == history
    assert all(torch.equal(a, b) for a, b in zip(bg.state_dict().values(), again.state_dict().values()))
    other, _ = ood.get_background_vae(ood.BackgroundVAEConfig.of(vae_cfg, 0.1), device="cpu")
    assert seen, "another rate must train another model"
    assert not all(torch.equal(a, b) for a, b in zip(bg.state_dict().values(), other.state_dict().values()))


@pytest.mark.parametrize("rate", [0, 0.0, 1.0, -0.1, 1.5, True, "0.2", None])
def test_the_background_config_rejects_rates_outside_zero_one(rate):
    with pytest.raises(ValueError, match="mutation_rate"):
        ood.BackgroundVAEConfig(mutation_rate=rate)


def test_the_background_config_is_made_from_a_plain_vae_config_only():
    assert ood.BackgroundVAEConfig.of(rv.VAEConfig(), 0.1).mutation_rate == 0.1
    with pytest.raises(TypeError, match="VAEConfig"):
        ood.BackgroundVAEConfig.of(ood.BackgroundVAEConfig(), 0.1)
    with pytest.raises(TypeError, match="VAEConfig"):
        ood.BackgroundVAEConfig.of(rv.ClassifierConfig(), 0.1)


# ---------------------------------------------------------------------------------------
# Tests added for the mutation run of session 35 (tests/MUTANTS.md)
# ---------------------------------------------------------------------------------------
def test_bernoulli_entropy_against_scipy_with_pixels_outside_zero_one_taken_as_saturated():
    """``sum_i H_b(x_i)`` against scipy's Bernoulli entropy. Pixels a little outside [0, 1] (an
    interpolation's overshoot) count as the nearest valid grey level: the ceiling stays finite."""
    from scipy.stats import bernoulli

    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(4)) * 1.4 - 0.2
    assert (x < 0).any() and (x > 1).any()
    expected = bernoulli(np.clip(x.double().numpy(), 0, 1)).entropy().reshape(3, -1).sum(1)
    got = ood.bernoulli_entropy(x)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_input_complexity_of_a_single_image_is_its_score_within_a_batch(tiny_vae, tiny_images):
    """Serra et al.'s S(x) is per image, in bits per pixel (784 pixels): an image scored alone gets
    the score it gets in a batch."""
    like = ood.DecoderNLL(tiny_vae)
    ic = ood.InputComplexity(like, "zlib")
    one = tiny_images[2:3]
    expected = (like.score(one) / math.log(2) - ood.compressed_bits(one, "zlib")) / 784
    assert torch.allclose(ic.score(one), expected)
    assert torch.allclose(ic.score(one), ic.score(tiny_images)[2:3])


@pytest.mark.parametrize("n", [20, 40, 57, 100])
def test_fpr95_at_sizes_where_95_percent_is_a_whole_number_of_scores(n):
    """FPR95 by brute force: the lowest in-distribution score ``t`` with at least 95% of the in-distribution
    scores ``<= t``, then the fraction of OOD scores ``<= t`` (ties accepted). At n = 20, 40, 100 exactly 95%
    of the scores reach the threshold, the case a rounding guard decides; OOD scores sit on, just below and
    just above every in-distribution score. scikit-learn's ``roc_curve`` (``ood_metrics``) agrees."""
    s_in = np.random.default_rng(n).permutation(np.arange(float(n)))
    s_out = np.r_[s_in - 0.5, s_in, s_in + 0.5]
    t = min(v for v in s_in if np.mean(s_in <= v) >= 0.95)
    expected = np.mean(s_out <= t)
    assert ood._fpr95(s_in, s_out) == pytest.approx(expected, abs=1e-15)
    assert ood._fast_metrics(s_in, s_out)[2] == pytest.approx(expected, abs=1e-15)
    assert ood.ood_metrics(s_in, s_out)["fpr95"] == pytest.approx(expected, abs=1e-15)


def test_fast_metrics_match_scikit_learn_when_the_highest_score_is_in_distribution():
    """The ROC curve's first step leaves (0, 0) towards the highest score's group; when that group holds
    in-distribution scores (alone or tied with OOD ones) the step moves right, and its area counts. The
    other tests' highest scores were all OOD. scikit-learn is the reference."""
    rng = np.random.default_rng(7)
    s_in, s_out = rng.normal(size=40), rng.normal(0.5, size=30)
    cases = [(np.r_[s_in, 9.0], s_out),                 # the highest score alone, in-distribution
             (np.r_[s_in, 9.0, 9.0], np.r_[s_out, 9.0]),  # a tie at the top: two in, one OOD
             (s_out + 5.0, s_in)]                        # every in-distribution score above every OOD one
    for a_in, a_out in cases:
        y = np.r_[np.zeros(len(a_in)), np.ones(len(a_out))]
        s = np.r_[a_in, a_out]
        auroc, aupr, _ = ood._fast_metrics(a_in, a_out)
        assert auroc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert aupr == pytest.approx(average_precision_score(y, s), abs=1e-12)

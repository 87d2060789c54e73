import numpy as np
import pytest
import torch
from torch import nn

import robustvae as rv
from robustvae import consistency as cons


class _ToyVAE(nn.Module):
    """q(z|x) = N(mu, sigma^2) in 1-D with mu = mean pixel - 0.5; decode(z) = a flat image of brightness sigmoid(8z).

    With the toy classifier below (label 1 iff the image is brighter than 0.5), an input's
    reconstructions get label 1 iff z > 0: clean-cut when sigma is tiny, mixed when the
    posterior straddles 0.
    """

    def __init__(self, log_var: float):
        super().__init__()
        self.log_var = nn.Parameter(torch.tensor(float(log_var)), requires_grad=False)

    def encode(self, x):
        mu = x.flatten(1).mean(1, keepdim=True) - 0.5
        return mu, self.log_var.expand_as(mu)

    def decode(self, z):
        return (8 * z).view(-1, 1, 1, 1).expand(-1, 1, 28, 28)

    def mean_image(self, logits):
        return torch.sigmoid(logits)


class _ToyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x):
        bright = x.flatten(1).mean(1) - 0.5
        return torch.stack([-bright, bright], dim=1)


def _images(levels):
    return torch.tensor(levels, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 28, 28).clone()


def test_reconstruction_labels_follow_the_posterior():
    x = _images([0.1, 0.9, 0.5])          # clearly dark, clearly bright, on the boundary
    clf = _ToyClassifier()
    torch.manual_seed(0)
    sharp = cons.reconstruction_labels(_ToyVAE(log_var=-20.0), clf, x, n_samples=10)
    assert sharp.shape == (3, 10) and sharp.dtype == torch.int64
    assert (sharp[0] == 0).all() and (sharp[1] == 1).all()
    wide = cons.reconstruction_labels(_ToyVAE(log_var=0.0), clf, x, n_samples=50)
    assert cons.n_distinct(wide)[2] == 2                       # a boundary input gets both labels
    assert 0.2 < wide[2].float().mean() < 0.8


def test_reconstruction_labels_are_reproducible_and_batch_independent():
    x = _images([0.3, 0.45, 0.55, 0.7])
    vae, clf = _ToyVAE(log_var=-2.0), _ToyClassifier()
    torch.manual_seed(1)
    a = cons.reconstruction_labels(vae, clf, x, n_samples=8)
    torch.manual_seed(1)
    b = cons.reconstruction_labels(vae, clf, x, n_samples=8)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="n_samples"):
        cons.reconstruction_labels(vae, clf, x, n_samples=0)
    with pytest.raises(ValueError, match="batch of images"):
        cons.reconstruction_labels(vae, clf, x[0], n_samples=2)


def test_n_distinct_agreement_and_summary():
    labels = torch.tensor([[3, 3, 3, 3], [1, 2, 1, 2], [0, 1, 2, 3]])
    assert cons.n_distinct(labels).tolist() == [1, 2, 4]
    reference = torch.tensor([3, 1, 7])
    assert torch.allclose(cons.agreement(labels, reference), torch.tensor([1.0, 0.5, 0.0]))
    summary = cons.consistency_summary(labels, reference)
    assert summary["single_label"] == pytest.approx(1 / 3)
    assert summary["mean_distinct"] == pytest.approx(7 / 3)
    assert summary["agreement"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        cons.n_distinct(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        cons.agreement(labels, reference[:2])


def test_detection_auroc():
    assert cons.detection_auroc([0, 1, 2], [3, 4]) == 1.0
    assert cons.detection_auroc([3, 4], [0, 1, 2]) == 0.0
    assert cons.detection_auroc([1, 1], [1, 1, 1]) == 0.5          # ties count one half
    assert cons.detection_auroc(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 3.0])) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        cons.detection_auroc([], [1.0])


def test_latent_stats_match_the_vae():
    torch.manual_seed(0)
    vae = rv.VAE(latent_dim=4, width=8, hidden=32).eval()
    x = torch.rand(6, 1, 28, 28)
    stats = cons.latent_stats(vae, x, batch_size=4)
    assert set(stats) == {"kl", "mu_norm", "enc_var", "rec_mse"}
    assert all(v.shape == (6,) for v in stats.values())
    with torch.no_grad():
        mu, log_var = vae.encode(x)
        kl = vae.elbo(x)["kl"]
    np.testing.assert_allclose(stats["kl"], kl.numpy(), rtol=1e-5)
    np.testing.assert_allclose(stats["mu_norm"], mu.norm(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(stats["enc_var"], log_var.exp().mean(1).numpy(), rtol=1e-5)
    assert (stats["rec_mse"] > 0).all()


def test_nearest_centroid():
    centroids = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.array([[1.0, 1.0], [9.0, -1.0], [-1.0, 8.0]])
    assert cons.nearest_centroid(points, centroids).tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        cons.nearest_centroid(points, centroids[:, :1])


# --- detector scores, paired AUROC bootstrap, adaptive attacks ------------------------------
class _HalfClassifier(nn.Module):
    """Label 1 iff the *left* half of the image is brighter than 0.5."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x):
        bright = x[..., :14].flatten(1).mean(1) - 0.5
        return torch.stack([-bright, bright], dim=1) * 10


class _RightVAE(_ToyVAE):
    """Like :class:`_ToyVAE`, but the encoder reads only the *right* half of the image."""

    def encode(self, x):
        mu = x[..., 14:].flatten(1).mean(1, keepdim=True) - 0.5
        return mu, self.log_var.expand_as(mu)


def _uniform_images(n, lo=0.25, hi=0.35):
    return _images(np.linspace(lo, hi, n).tolist())


def test_detector_scores_on_the_toy_models():
    x = _images([0.1, 0.9])
    torch.manual_seed(0)
    s = cons.detector_scores(_ToyVAE(log_var=-20.0), _ToyClassifier(), x, n_samples=6)
    assert set(s) == {"1 - agreement", "distinct labels", "low KL", "label"}
    assert s["label"].tolist() == [0, 1]
    np.testing.assert_allclose(s["1 - agreement"], [0.0, 0.0])
    np.testing.assert_allclose(s["distinct labels"], [1.0, 1.0])
    # mu = -0.4 and 0.4: the same KL, minus
    np.testing.assert_allclose(s["low KL"][0], s["low KL"][1], rtol=1e-6)
    assert (s["low KL"] < 0).all()


def test_auroc_bootstrap_is_paired_and_matches_the_point_estimate():
    rng = np.random.default_rng(0)
    clean = rng.normal(size=60)
    strong, weak = clean + 3.0, clean + 0.2                # strong separates, weak barely
    keep = {"strong": np.ones(60, bool), "weak": np.ones(60, bool), "none": np.zeros(60, bool)}
    reps = cons.auroc_bootstrap(clean, {"strong": strong, "weak": weak, "none": weak}, keep,
                                n_boot=300, seed=1)
    assert reps["strong"].shape == (300,)
    assert np.isnan(reps["none"]).all()                   # nothing to detect: NaN, not a crash
    # the replicates' centre is near the point estimate, and the paired difference is clear
    assert abs(np.median(reps["weak"]) - cons.detection_auroc(clean, weak)) < 0.05
    lo, hi = np.quantile(reps["strong"] - reps["weak"], [0.025, 0.975])
    assert lo > 0.2
    # rank AUROC == sklearn's, ties included
    assert cons._auroc_ranks(np.array([1.0, 1.0]), np.array([1.0, 2.0])) == pytest.approx(
        cons.detection_auroc([1.0, 1.0], [1.0, 2.0]))
    again = cons.auroc_bootstrap(clean, {"weak": weak}, {"weak": keep["weak"]}, n_boot=300, seed=1)
    np.testing.assert_array_equal(again["weak"], reps["weak"])     # same draws for every attack
    with pytest.raises(ValueError, match="same attacks"):
        cons.auroc_bootstrap(clean, {"weak": weak}, {}, n_boot=10)
    with pytest.raises(ValueError, match="one entry per image"):
        cons.auroc_bootstrap(clean, {"weak": weak[:5]}, {"weak": keep["weak"][:5]}, n_boot=10)


def test_consistency_attack_lam0_is_pgd():
    """With lam = 0 the objective is PGD's loss: same start, same steps, same trace."""
    x, y = _uniform_images(6), torch.zeros(6, dtype=torch.long)
    clf, vae = _HalfClassifier(), _RightVAE(log_var=-8.0)
    ref = rv.attacks.pgd(clf, x, y, eps=0.1, steps=5, generator=torch.Generator().manual_seed(3),
                         return_result=True)
    ours = cons.consistency_attack(clf, vae, x, y, eps=0.1, lam=0.0, steps=5, eot=2,
                                   generator=torch.Generator().manual_seed(3), return_result=True)
    torch.testing.assert_close(ours.trace, ref.trace)
    ours_kl = cons.kl_attack(clf, vae, x, y, eps=0.1, lam=0.0, steps=5,
                             generator=torch.Generator().manual_seed(3), return_result=True)
    torch.testing.assert_close(ours_kl.trace, ref.trace)


def _in_ball_and_box(x_adv, x, eps):
    return bool((x_adv - x).abs().amax() <= eps + 1e-6) and bool(x_adv.min() >= 0) and bool(x_adv.max() <= 1)


def test_consistency_attack_fools_the_detector_where_pgd_cannot():
    """The classifier reads the left half, the VAE the right half. PGD only brightens the left
    half, so the reconstructions keep the clean label and the detector sees every attack
    (AUROC 1); the adaptive attack brightens both halves and the detector sees none."""
    n, eps = 8, 0.3
    x, y = _uniform_images(n), torch.zeros(n, dtype=torch.long)
    clf, vae = _HalfClassifier(), _RightVAE(log_var=-8.0)
    torch.manual_seed(0)
    clean = cons.detector_scores(vae, clf, x, n_samples=10)
    x_obl = rv.attacks.pgd(clf, x, y, eps=eps, steps=20, generator=torch.Generator().manual_seed(0))
    res = cons.consistency_attack(clf, vae, x, y, eps=eps, lam=1.0, steps=20, eot=4,
                                  generator=torch.Generator().manual_seed(0), return_result=True)
    assert _in_ball_and_box(x_obl, x, eps) and _in_ball_and_box(res.x, x, eps)
    s_obl = cons.detector_scores(vae, clf, x_obl, n_samples=10)
    s_ada = cons.detector_scores(vae, clf, res.x, n_samples=10)
    assert (s_obl["label"] == 1).all() and (s_ada["label"] == 1).all()     # both fool f
    auroc_obl = cons.detection_auroc(clean["1 - agreement"], s_obl["1 - agreement"])
    auroc_ada = cons.detection_auroc(clean["1 - agreement"], s_ada["1 - agreement"])
    assert auroc_obl == 1.0 and auroc_ada <= 0.6
    # its own success flag says the same: misclassified and most reconstructions agree
    assert res.success.all()
    labels = cons.reconstruction_labels(vae, clf, res.x, n_samples=10)
    assert (labels.float().mean(1) > 0.5).all()
    # ... and the flag is not just "misclassified": PGD's images fool f but not the detector
    check = cons.consistency_attack(clf, vae, x_obl, y, eps=0.0, steps=0, eot=4, return_result=True)
    assert not check.success.any()


def test_kl_attack_keeps_the_kl_where_pgd_drops_it():
    """The encoder reads the whole image and the classifier the left half. PGD brightens the
    left half, pulling mu towards 0 and the KL down (the detector flags low KL); the KL-aware
    attack darkens the right half to keep the mean, and so the KL, in place."""
    n, eps = 8, 0.3
    x, y = _uniform_images(n), torch.zeros(n, dtype=torch.long)
    clf, vae = _HalfClassifier(), _ToyVAE(log_var=-2.0)
    clean = cons.latent_stats(vae, x)["kl"]
    x_obl = rv.attacks.pgd(clf, x, y, eps=eps, steps=20, generator=torch.Generator().manual_seed(0))
    res = cons.kl_attack(clf, vae, x, y, eps=eps, lam=1.0, kl_tol=0.005, steps=40,
                         generator=torch.Generator().manual_seed(0), return_result=True)
    assert _in_ball_and_box(res.x, x, eps)
    with torch.no_grad():
        assert (clf(x_obl).argmax(1) == 1).all() and (clf(res.x).argmax(1) == 1).all()
    kl_obl, kl_ada = cons.latent_stats(vae, x_obl)["kl"], cons.latent_stats(vae, res.x)["kl"]
    assert cons.detection_auroc(-clean, -kl_obl) == 1.0
    assert cons.detection_auroc(-clean, -kl_ada) <= 0.7
    assert res.success.all() and np.abs(kl_ada - clean).max() <= 0.005 + 1e-6


def test_adaptive_attacks_reject_bad_arguments():
    x, y = _uniform_images(2), torch.zeros(2, dtype=torch.long)
    clf, vae = _HalfClassifier(), _RightVAE(log_var=-8.0)
    with pytest.raises(ValueError, match="eot"):
        cons.consistency_attack(clf, vae, x, y, eps=0.1, eot=0)
    with pytest.raises(ValueError, match="lam"):
        cons.consistency_attack(clf, vae, x, y, eps=0.1, lam=-1.0)
    with pytest.raises(ValueError, match="kl_tol"):
        cons.kl_attack(clf, vae, x, y, eps=0.1, kl_tol=-1.0)
    with pytest.raises(ValueError, match="restarts"):
        cons.kl_attack(clf, vae, x, y, eps=0.1, restarts=0)
    with pytest.raises(ValueError, match="Unknown loss"):
        cons.consistency_attack(clf, vae, x, y, eps=0.1, loss="hinge")
    with pytest.raises(ValueError, match="kappa"):
        cons.kl_attack(clf, vae, x, y, eps=0.1, loss="margin", kappa=0.0)


def test_margin_loss_is_carlini_wagner():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    y = torch.tensor([0, 0])
    torch.testing.assert_close(cons._classifier_loss(logits, y, "margin", float("inf")),
                               torch.tensor([-1.0, 5.0]))
    torch.testing.assert_close(cons._classifier_loss(logits, y, "margin", 2.0), torch.tensor([-1.0, 2.0]))
    assert cons._runner_up(logits, y).tolist() == [2, 1]


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_adaptive_attacks_with_either_loss_fool_the_toy_detector(loss):
    n, eps = 6, 0.3
    x, y = _uniform_images(n), torch.zeros(n, dtype=torch.long)
    clf, vae = _HalfClassifier(), _RightVAE(log_var=-8.0)
    torch.manual_seed(0)
    res = cons.consistency_attack(clf, vae, x, y, eps=eps, lam=1.0, steps=20, eot=4, loss=loss,
                                  generator=torch.Generator().manual_seed(0), return_result=True)
    assert res.success.all() and _in_ball_and_box(res.x, x, eps)


# --- tests written against surviving mutants (benchmarks/mutation.py consistency; tests/MUTANTS.md) ---
def test_summary_counts_only_rows_with_exactly_one_label():
    labels = torch.tensor([[5, 5, 5], [2, 2, 2], [1, 2, 1], [0, 1, 2]])   # 1, 1, 2 and 3 distinct labels
    summary = cons.consistency_summary(labels, torch.tensor([5, 2, 1, 0]))
    assert summary["single_label"] == pytest.approx(0.5)
    assert summary["mean_distinct"] == pytest.approx(7 / 4)


def test_detection_auroc_with_a_single_score_on_either_side():
    assert cons.detection_auroc([0.0, 1.0], [2.0]) == 1.0
    assert cons.detection_auroc([3.0], [1.0, 2.0]) == 0.0
    with pytest.raises(ValueError):
        cons.detection_auroc([1.0], [])


def test_latent_stats_reconstruction_error_is_the_mean_squared_difference():
    vae = _ToyVAE(log_var=-20.0)
    x = _images([0.2, 0.9])
    stats = cons.latent_stats(vae, x)
    rec = torch.sigmoid(8 * (x.flatten(1).mean(1) - 0.5))          # each reconstruction is a flat image
    np.testing.assert_allclose(stats["rec_mse"], ((rec - torch.tensor([0.2, 0.9])) ** 2).numpy(), rtol=1e-5)


def test_nearest_centroid_refuses_points_that_are_not_a_matrix():
    with pytest.raises(ValueError):
        cons.nearest_centroid(np.array([1.0, 2.0]), np.array([[0.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError):
        cons.nearest_centroid(np.array([[1.0, 2.0]]), np.array([0.0, 0.0]))


def test_rank_auroc_with_one_score_a_side_and_nan_without_warnings_when_a_side_is_empty():
    import warnings

    assert cons._auroc_ranks(np.array([1.0]), np.array([2.0])) == 1.0
    assert cons._auroc_ranks(np.array([1.0, 3.0]), np.array([2.0])) == 0.5
    assert cons._auroc_ranks(np.array([2.0]), np.array([1.0, 3.0])) == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # NaN by the guard, not by a 0/0 division
        assert np.isnan(cons._auroc_ranks(np.array([1.0, 2.0]), np.array([])))
        assert np.isnan(cons._auroc_ranks(np.array([]), np.array([1.0, 2.0])))


def test_auroc_bootstrap_edge_sizes_and_length_checks():
    one = cons.auroc_bootstrap([0.0], {"a": [1.0]}, {"a": [True]}, n_boot=1, seed=0)   # one image, one replicate
    assert one["a"].shape == (1,) and one["a"][0] == 1.0
    with pytest.raises(ValueError, match="one entry per image"):      # scores right, keep too short
        cons.auroc_bootstrap([0.0, 1.0], {"a": [1.0, 2.0]}, {"a": [True]})
    with pytest.raises(ValueError, match="one entry per image"):      # keep right, scores too short
        cons.auroc_bootstrap([0.0, 1.0], {"a": [1.0]}, {"a": [True, True]})
    with pytest.raises(ValueError, match="n_boot"):
        cons.auroc_bootstrap([0.0], {"a": [1.0]}, {"a": [True]}, n_boot=0)

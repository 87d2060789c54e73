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

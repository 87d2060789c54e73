import pytest
import torch

import robustvae as rv
from robustvae import cache


@pytest.mark.slow
def test_tiny_vae_trains_deterministically_and_is_cached():
    cfg = rv.VAEConfig(n_train=200, epochs=2, latent_dim=4, width=8, hidden=32)
    vae, hist = rv.get_vae(cfg, device="cpu")
    assert len(hist["train_loss"]) == 2 and len(hist["test_elbo"]) == 2
    assert hist["train_loss"][1] < hist["train_loss"][0]
    again, _ = rv.get_vae(cfg, device="cpu", retrain=True)
    for (k, a), b in zip(vae.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), f"training is not deterministic ({k})"
    assert cache.checkpoint_path(cfg).exists()


@pytest.mark.slow
def test_tiny_classifier_learns():
    clf, hist = rv.get_classifier(n_train=1000, epochs=3, width=16, device="cpu")
    x, y = rv.load_dataset("mnist-5k", "test")
    assert rv.accuracy(clf, x[:300], y[:300]) > 0.6
    assert hist["test_acc"][-1] > 0.6


def test_unknown_config_fields_and_values_fail_clearly():
    with pytest.raises(ValueError, match="Unknown VAEConfig field"):
        rv.get_vae(epoch=3)
    with pytest.raises(ValueError, match="Unknown value 'mnist-10k' for parameter 'dataset'"):
        rv.VAEConfig(dataset="mnist-10k")
    with pytest.raises(ValueError, match="likelihood"):
        rv.VAEConfig(likelihood="laplace")
    with pytest.raises(ValueError, match="positive integer"):
        rv.ClassifierConfig(epochs=0)
    with pytest.raises(ValueError, match="beta"):
        rv.VAEConfig(beta=-0.5)


def test_vae_metrics_are_consistent():
    vae = rv.VAE(latent_dim=4, width=8, hidden=32)
    x, _ = rv.load_dataset("mnist-5k", "test")
    m = rv.vae_metrics(vae, x[:64])
    assert set(m) == {"elbo", "rec", "kl", "mse"}
    assert m["kl"] >= 0 and 0 <= m["mse"] <= 1
    # the KL is deterministic: the mean of the closed-form KL over the images, computed with torch.distributions
    with torch.no_grad():
        mu, log_var = vae.encode(x[:64])
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * log_var).exp()),
                                               torch.distributions.Normal(0.0, 1.0)).sum(1).mean().item()
        mse = (vae.reconstruct(x[:64], sample=False) - x[:64]).pow(2).mean().item()
    assert m["kl"] == pytest.approx(kl, rel=1e-4)
    assert m["mse"] == pytest.approx(mse, rel=1e-4)
    # batching does not change the means (64 images in batches of 10, the last one short)
    m10 = rv.vae_metrics(vae, x[:64], batch_size=10)
    assert m10["kl"] == pytest.approx(m["kl"], rel=1e-5) and m10["mse"] == pytest.approx(m["mse"], rel=1e-5)


def test_every_training_config_shares_the_base_checks():
    """The optimiser's fields are checked once, in TrainConfig, for every model the book trains."""
    from robustvae import lipschitz, perturbation, purify, tcvae
    from robustvae.training import ClassifierConfig, DataConfig, TrainConfig, VAEConfig

    configs = [ClassifierConfig, VAEConfig, tcvae.TCVAEConfig, lipschitz.LipschitzVAEConfig,
               purify.DefenseVAEConfig, perturbation.CVAEConfig, perturbation.RobustClassifierConfig]
    for cls in configs:
        assert issubclass(cls, TrainConfig), cls.__name__
        for bad, match in (({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr")):
            with pytest.raises(ValueError, match=match):
                cls(**bad)
        if issubclass(cls, DataConfig):
            with pytest.raises(ValueError, match="dataset"):
                cls(dataset="cifar")
            with pytest.raises(ValueError, match="n_train"):
                cls(n_train=0)
    # a subclass's own checks and its extra rules still apply
    with pytest.raises(ValueError, match="likelihood"):
        VAEConfig(likelihood="poisson")
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        tcvae.TCVAEConfig(batch_size=1)
    with pytest.raises(ValueError, match="method"):
        perturbation.RobustClassifierConfig(method="mixup")
    assert VAEConfig().training_data()[0].shape[1:] == (1, 28, 28)

import pytest
import torch
import torch.nn.functional as F

import robustvae as rv
from robustvae import attacks, cache, purify


@pytest.fixture(scope="module")
def tiny(train_logistic):
    """A tiny untrained VAE, a logistic-regression classifier trained for a moment, and digits."""
    torch.manual_seed(0)
    vae = rv.VAE(latent_dim=4, width=8, hidden=32).eval().requires_grad_(False)
    clf = train_logistic(stride=8, steps=100, seed=None).requires_grad_(False)
    xt, yt = rv.load_dataset("mnist-5k", "test")
    return vae, clf, xt[:16], yt[:16]


def test_reconstruct_matches_the_vae_and_is_deterministic_at_the_mean(tiny):
    vae, _, x, _ = tiny
    p = purify.Reconstruct(vae)
    out = p(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, vae.reconstruct(x, sample=False)) and torch.equal(out, p(x))
    assert not p.stochastic
    s = purify.Reconstruct(vae, sample=True)
    assert s.stochastic and not torch.equal(s(x), s(x))


def test_defended_averages_softmax_over_samples(tiny):
    vae, clf, x, _ = tiny
    p = purify.Reconstruct(vae, sample=True)
    model = purify.Defended(clf, p, n_samples=3)
    torch.manual_seed(1)
    logits = model(x)
    assert torch.allclose(logits.exp().sum(1), torch.ones(len(x)), atol=1e-5)
    torch.manual_seed(1)
    probs = F.softmax(clf(p(x.repeat(3, 1, 1, 1))), dim=1).view(3, len(x), -1).mean(0)
    assert torch.allclose(logits, probs.log(), atol=1e-5)
    assert torch.equal(purify.Defended(clf)(x), clf(x))
    for n in (2, 4):                      # a deterministic purifier, or one that does not say, is refused
        for purifier in (purify.Reconstruct(vae), torch.nn.Identity()):
            with pytest.raises(ValueError, match="stochastic purifier"):
                purify.Defended(clf, purifier, n_samples=n)
    assert purify.Defended(clf).stochastic is False and purify.Defended(clf, torch.nn.Identity()).stochastic is False
    assert purify.Defended(clf, p).stochastic is True
    with pytest.raises(ValueError, match="n_samples"):
        purify.Defended(clf, p, n_samples=0)


def test_bpda_forward_is_the_purifier_and_backward_the_identity_or_surrogate(tiny):
    vae, _, x, _ = tiny
    p = purify.Reconstruct(vae)
    w = torch.randn_like(x)
    xr = x.clone().requires_grad_(True)
    out = purify.BPDA(p)(xr)
    assert torch.allclose(out, p(x))
    (g,) = torch.autograd.grad((w * out).sum(), xr)
    assert torch.allclose(g, w)                      # identity backward pass
    xr = x.clone().requires_grad_(True)
    out = purify.BPDA(purify.LatentSearch(vae, steps=3, restarts=1), surrogate=p)(xr)
    (g,) = torch.autograd.grad((w * out).sum(), xr)
    xr2 = x.clone().requires_grad_(True)
    (g_sur,) = torch.autograd.grad((w * p(xr2)).sum(), xr2)
    assert torch.allclose(g, g_sur)                  # the surrogate's backward pass


def test_latent_search_finds_points_of_the_decoder_range(tiny):
    vae, _, _, _ = tiny
    torch.manual_seed(0)
    z_true = torch.randn(6, vae.latent_dim)
    x = vae.mean_image(vae.decode(z_true))           # exactly on the decoder's range
    p = purify.LatentSearch(vae, steps=150, restarts=3, lr=0.05)
    z, err = p.search(x)
    with torch.no_grad():
        mu = vae.encode(x)[0]
        err0 = (vae.mean_image(vae.decode(mu)) - x).flatten(1).pow(2).sum(1)
    assert (err <= err0 + 1e-6).all()                # never worse than the encoder's start
    assert err.mean() < 0.1 * err0.mean()
    out = p(x)
    assert out.shape == x.shape and not out.requires_grad
    assert p.stochastic and not purify.LatentSearch(vae, restarts=1).stochastic
    with pytest.raises(ValueError, match="init"):
        purify.LatentSearch(vae, init="zeros")
    with pytest.raises(ValueError, match="restarts"):
        purify.LatentSearch(vae, restarts=0)


def test_tangent_bpda_backward_is_the_tangent_projector(tiny):
    vae, _, x, _ = tiny
    search = purify.LatentSearch(vae, steps=5, restarts=1)
    t = purify.TangentBPDA(search)
    xr = x[:2].clone().requires_grad_(True)
    out = t(xr)
    assert torch.allclose(out, search(x[:2]), atol=1e-6)
    w = torch.randn_like(out)
    (g,) = torch.autograd.grad((w * out).sum(), xr)
    z, _ = search.search(x[:2])
    for i in range(2):
        jac = torch.autograd.functional.jacobian(
            lambda zz: vae.mean_image(vae.decode(zz[None])).flatten(), z[i])      # (784, d)
        proj = jac @ torch.linalg.pinv(jac)                                     # J (J^T J)^-1 J^T
        assert torch.allclose(g[i].flatten(), proj @ w[i].flatten(), atol=1e-4)
    with pytest.raises(ValueError, match="LatentSearch"):
        purify.TangentBPDA(purify.Reconstruct(vae))


def test_pgd_iterates_records_the_attack_and_stays_in_budget(tiny):
    vae, clf, x, y = tiny
    model = purify.Defended(clf, purify.Reconstruct(vae))
    gen = torch.Generator().manual_seed(0)
    x_adv, its = purify.pgd_iterates(model, x, y, 0.1, steps=6, record=[0, 3, 6], generator=gen)
    assert set(its) == {0, 3, 6}
    # the attack returns, per image, one of its own iterates (the best one, see attacks.ascend)
    _, every = purify.pgd_iterates(model, x, y, 0.1, steps=6, record=range(7), generator=torch.Generator().manual_seed(0))
    assert torch.equal(every[6], its[6])
    assert bool(torch.stack([(v == x_adv).flatten(1).all(1) for v in every.values()]).any(0).all())
    same = attacks.pgd(model, x, y, 0.1, steps=6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(same, x_adv)                  # recording does not change the attack
    for xt in its.values():
        assert (xt - x).abs().max() <= 0.1 + 1e-6 and xt.min() >= 0 and xt.max() <= 1
    stoch = purify.Defended(clf, purify.BPDA(purify.Reconstruct(vae, sample=True)))
    x2, its2 = purify.pgd_iterates(stoch, x, y, 1.0, norm="l2", steps=4, eot=3, record=range(5))
    assert bool(torch.stack([(v == x2).flatten(1).all(1) for v in its2.values()]).any(0).all())
    assert ((x2 - x).flatten(1).norm(dim=1) <= 1.0 + 1e-4).all()
    with pytest.raises(ValueError, match="record"):
        purify.pgd_iterates(model, x, y, 0.1, steps=3, record=[5])
    with pytest.raises(ValueError, match="restarts"):
        purify.pgd_iterates(model, x, y, 0.1, steps=3, record=[3], restarts=2)


def test_white_box_attack_beats_oblivious_on_the_pipeline(tiny):
    vae, clf, x, y = tiny
    model = purify.Defended(clf, purify.Reconstruct(vae))
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    x_obl = attacks.pgd(clf, x, y, 0.3, steps=10, generator=gen())
    x_wb = attacks.pgd(model, x, y, 0.3, steps=10, generator=gen())
    with torch.no_grad():
        loss_obl = F.cross_entropy(model(x_obl), y)
        loss_wb = F.cross_entropy(model(x_wb), y)
    assert loss_wb > loss_obl


def test_correct_is_seeded_and_leaves_the_global_rng_alone(tiny):
    vae, clf, x, y = tiny
    model = purify.Defended(clf, purify.Reconstruct(vae, sample=True), n_samples=2)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    a = purify.correct(model, x, y, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, purify.correct(model, x, y, seed=3)) and a.dtype == torch.bool


def test_correct_is_argmax_against_the_label_in_every_batch_under_its_seed():
    """Independent truth: a model of random logits (torch.rand) is judged image by image as argmax == label,
    on the numbers torch.manual_seed(seed) draws in one batch; a model with no parameters works too."""
    torch.manual_seed(0)
    x, y = torch.rand(7, 3), torch.tensor([0, 1, 2, 0, 1, 2, 0])

    class RandomLogits(torch.nn.Module):        # no parameters: the device is the input's
        def forward(self, v):
            return torch.rand(len(v), 3)

    def truth(seed):
        torch.manual_seed(seed)
        return RandomLogits()(x).argmax(1) == y

    assert truth(0).any() and not truth(0).all()
    assert torch.equal(purify.correct(RandomLogits(), x, y), truth(0))             # the default seed is 0
    for seed in (4, 11):
        assert torch.equal(purify.correct(RandomLogits(), x, y, seed=seed), truth(seed))
    linear = torch.nn.Linear(3, 3)                 # with parameters, in batches of 3 (7 = 3 + 3 + 1)
    with torch.no_grad():
        want = linear(x).argmax(1) == y
    assert torch.equal(purify.correct(linear, x, y, batch_size=3), want) and want.any() and not want.all()


def test_defense_vae_config_validation():
    with pytest.raises(ValueError, match="clean_fraction"):
        purify.DefenseVAEConfig(clean_fraction=1.0)
    with pytest.raises(ValueError, match="eps_choices"):
        purify.DefenseVAEConfig(eps_choices=(0.0,))
    with pytest.raises(ValueError, match="kl_weight"):
        purify.DefenseVAEConfig(kl_weight=-1.0)
    with pytest.raises(ValueError, match="Unknown DefenseVAEConfig field"):
        purify.get_defense_vae(epoch=3)


@pytest.mark.slow
def test_defense_vae_pairs_and_tiny_training_through_the_cache(tiny):
    _, clf, _, _ = tiny
    cfg = purify.DefenseVAEConfig(n_train=100, clf_epochs=1, epochs=2, latent_dim=4, width=8, hidden=32,
                                  eps_choices=(0.1, 0.3), pgd_steps=2)
    x, y = rv.load_dataset("mnist-5k", "train")
    x, y = x[:100], y[:100]
    x_att = purify.defense_vae_training_pairs(clf, x, y, cfg)
    moved = (x_att - x).flatten(1).abs().amax(1)
    assert (moved <= 0.3 + 1e-6).all() and x_att.min() >= 0 and x_att.max() <= 1
    assert (moved == 0).float().mean().item() == pytest.approx(cfg.clean_fraction, abs=0.02)
    assert (moved > 0.2).any() and ((moved > 0) & (moved <= 0.1 + 1e-6)).any()

    dvae, hist = purify.get_defense_vae(cfg, device="cpu")
    assert len(hist["train_loss"]) == 2 and len(hist["test_mse_attacked"]) == 2
    assert hist["train_loss"][1] < hist["train_loss"][0]
    assert cache.checkpoint_path(cfg).exists()
    again, _ = purify.get_defense_vae(cfg, device="cpu")
    for a, b in zip(dvae.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_unrolled_latent_search_is_the_latent_search_and_its_exact_derivative(tiny):
    """White-box through the optimiser: the forward pass is LatentSearch's (same starts, same Adam),
    and the gradient is the derivative of the unrolled steps: it matches central finite
    differences of the purifier itself in float64, where BPDA's identity gradient does not."""
    vae, _, x, _ = tiny
    search = purify.LatentSearch(vae, steps=6, restarts=2, lr=0.1)
    unrolled = purify.UnrolledLatentSearch(search)
    torch.manual_seed(3)
    ref = search(x[:4])
    torch.manual_seed(3)
    out = unrolled(x[:4])
    assert torch.allclose(out, ref, atol=1e-5)
    assert unrolled.stochastic
    # derivative, deterministic case (encoder start only), in float64
    vae64 = rv.VAE(latent_dim=4, width=8, hidden=32)
    vae64.load_state_dict(vae.state_dict())
    vae64 = vae64.double().eval().requires_grad_(False)
    det = purify.LatentSearch(vae64, steps=6, restarts=1, lr=0.1)
    un = purify.UnrolledLatentSearch(det)
    x0 = x[:1].double()
    w = torch.randn_like(x0)
    d = torch.randn_like(x0)
    xr = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((w * un(xr)).sum(), xr)
    h = 1e-5
    with torch.no_grad():
        fd = ((w * det(x0 + h * d)).sum() - (w * det(x0 - h * d)).sum()) / (2 * h)
    analytic = (g * d).sum()
    assert torch.allclose(analytic, fd, rtol=1e-3, atol=1e-6), (analytic.item(), fd.item())
    identity = (w * d).sum()                       # what BPDA with the identity would claim
    assert not torch.allclose(identity, fd, rtol=0.1)
    with pytest.raises(ValueError, match="LatentSearch"):
        purify.UnrolledLatentSearch(purify.Reconstruct(vae))


# --- tests written against surviving mutants (benchmarks/mutation.py purify; tests/MUTANTS.md) ---
def test_latent_search_with_zero_steps_is_the_vae_reconstruction(tiny):
    vae, _, x, _ = tiny
    p = purify.LatentSearch(vae, steps=0, restarts=1)            # the encoder start, not moved
    assert torch.allclose(p(x), purify.Reconstruct(vae)(x))


def test_latent_search_default_step_size_converges_in_thirty_steps(tiny):
    """The book's purifier (c) uses the default Adam step size (0.1): from the encoder's start, 30
    steps bring every error on the decoder's range below 5% of the start's (0.3 at most here)."""
    vae, _, _, _ = tiny
    torch.manual_seed(0)
    x = vae.mean_image(vae.decode(torch.randn(6, vae.latent_dim)))
    with torch.no_grad():
        err0 = (vae.mean_image(vae.decode(vae.encode(x)[0])) - x).flatten(1).pow(2).sum(1)
    _, err = purify.LatentSearch(vae, steps=30, restarts=1).search(x)
    assert (err / err0).max() < 0.05


def test_bpda_is_stochastic_exactly_when_its_purifier_is(tiny):
    vae, _, _, _ = tiny
    assert purify.BPDA(torch.nn.Identity()).stochastic is False          # a module that says nothing
    assert purify.BPDA(purify.Reconstruct(vae)).stochastic is False
    assert purify.BPDA(purify.LatentSearch(vae, restarts=2)).stochastic is True
    # the latent search's wrappers are as stochastic as the search they wrap
    for wrapper in (purify.TangentBPDA, purify.UnrolledLatentSearch):
        assert wrapper(purify.LatentSearch(vae, restarts=2)).stochastic is True
        assert wrapper(purify.LatentSearch(vae, restarts=1)).stochastic is False

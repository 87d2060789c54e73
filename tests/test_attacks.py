import math
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustvae as rv
from robustvae import attacks


@pytest.fixture(scope="module")
def tiny_classifier_and_data(train_logistic):
    """A logistic-regression 'classifier' trained for a few seconds on 1,000 digits."""
    model = train_logistic(stride=4, steps=150)
    xt, yt = rv.load_dataset("mnist-5k", "test")
    keep = model(xt).argmax(1) == yt  # attack correctly classified images only
    return model, xt[keep][:64], yt[keep][:64]


def _acc(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
def test_pgd_within_budget_in_box_and_succeeds(tiny_classifier_and_data, norm, eps):
    model, x, y = tiny_classifier_and_data
    x_adv = attacks.pgd(model, x, y, eps=eps, norm=norm, steps=20, generator=torch.Generator().manual_seed(0))
    d = (x_adv - x).flatten(1)
    size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert _acc(model, x, y) == 1.0
    if norm == "linf":     # strength against the closed form (FGSM leaves 0.078 here, PGD reaches the exact 0.016)
        assert _acc(model, x_adv, y) <= _linear_robust_accuracy(model, x, y, eps) + 1 / len(x) + 1e-9
    else:
        assert _acc(model, x_adv, y) < 0.2


def test_fgsm_within_budget_and_raises_the_loss(tiny_classifier_and_data):
    model, x, y = tiny_classifier_and_data
    x_adv = attacks.fgsm(model, x, y, eps=0.1)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    assert _acc(model, x_adv, y) < _acc(model, x, y)


def test_targeted_pgd_reaches_the_target(tiny_classifier_and_data):
    model, x, y = tiny_classifier_and_data
    target = (y + 1) % 10
    x_adv = attacks.pgd(model, x, target, eps=0.3, steps=30, targeted=True)
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == target).float().mean() > 0.8


def test_project_and_bad_arguments():
    x = torch.full((2, 1, 28, 28), 0.5)
    far = x + 1.0
    assert (attacks.project(far, x, 0.1, "linf") - x).abs().max() <= 0.1 + 1e-6
    p = attacks.project(x + torch.randn_like(x), x, 2.0, "l2")
    assert ((p - x).flatten(1).norm(dim=1) <= 2.0 + 1e-5).all()
    with pytest.raises(ValueError, match="Valid norms"):
        attacks.project(x, x, 0.1, "l1")
    with pytest.raises(ValueError, match="eps"):
        attacks.fgsm(lambda t: t.flatten(1)[:, :10], x, torch.zeros(2, dtype=torch.long), eps=-1)


def test_max_damage_moves_the_reconstruction_more_than_random_noise():
    torch.manual_seed(0)
    vae = rv.VAE(latent_dim=4, width=8, hidden=32).eval()
    x, _ = rv.load_dataset("mnist-5k", "test")
    x = x[:8]
    eps = 2.0
    x_adv = attacks.max_damage(vae, x, eps=eps, steps=20, restarts=2, generator=torch.Generator().manual_seed(0))
    assert ((x_adv - x).flatten(1).norm(dim=1) <= eps + 1e-4).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    noise = attacks.project(x + torch.randn_like(x), x, eps, "l2")
    with torch.no_grad():
        assert (attacks.reconstruction_distance(vae, x_adv, x) >= attacks.reconstruction_distance(vae, noise, x)).all()


# --- L-BFGS (Szegedy et al. 2014) ---------------------------------------------------------
def test_lbfgs_reaches_the_target_in_the_box(tiny_classifier_and_data):
    model, x, y = tiny_classifier_and_data
    x, y = x[:16], y[:16]
    target = (y + 1) % 10
    x_adv = attacks.lbfgs(model, x, target, search_steps=3, max_iter=30, batch_size=8)
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == target).float().mean() >= 0.9
    # a perturbation, not a replacement: far smaller than the images themselves
    assert attacks.perturbation_norm(x_adv, x, "l2").median() < 0.5 * x.flatten(1).norm(dim=1).median()


def test_lbfgs_binary_search_only_shrinks_successful_perturbations(tiny_classifier_and_data):
    model, x, y = tiny_classifier_and_data
    x, y = x[:8], y[:8]
    target = (y + 3) % 10
    one = attacks.lbfgs(model, x, target, c_init=0.01, search_steps=1, max_iter=30)
    more = attacks.lbfgs(model, x, target, c_init=0.01, search_steps=4, max_iter=30)
    with torch.no_grad():
        ok_one = model(one).argmax(1) == target
        ok_more = model(more).argmax(1) == target
    assert ok_one.all() and ok_more.all()   # c = 0.01 is small enough to succeed everywhere
    n_one, n_more = attacks.perturbation_norm(one, x, "l2"), attacks.perturbation_norm(more, x, "l2")
    assert (n_more <= n_one + 1e-4).all() and (n_more < n_one - 1e-3).any()


def test_lbfgs_bad_arguments(tiny_classifier_and_data):
    model, x, y = tiny_classifier_and_data
    with pytest.raises(ValueError, match="c_init"):
        attacks.lbfgs(model, x[:2], y[:2], c_init=0.0)
    with pytest.raises(ValueError, match="target"):
        attacks.lbfgs(model, x[:2], y[:3])


def test_perturbation_norm():
    x = torch.zeros(2, 1, 28, 28)
    x_adv = x.clone()
    x_adv[0, 0, 0, :4] = 0.5
    assert torch.allclose(attacks.perturbation_norm(x_adv, x, "linf"), torch.tensor([0.5, 0.0]))
    assert torch.allclose(attacks.perturbation_norm(x_adv, x, "l2"), torch.tensor([1.0, 0.0]))


# --- latent-space attack on a VAE (Tabacof et al. 2016; Gondim-Ribeiro et al. 2018) ------
def test_latent_kl_matches_the_prior_kl_and_vanishes_on_itself():
    torch.manual_seed(0)
    mu, log_var = torch.randn(5, 4), torch.randn(5, 4)
    zeros = torch.zeros(5, 4)
    assert torch.allclose(attacks.latent_kl(mu, log_var, zeros, zeros), rv.models.gaussian_kl(mu, log_var), atol=1e-5)
    assert torch.allclose(attacks.latent_kl(mu, log_var, mu, log_var), torch.zeros(5), atol=1e-6)
    assert (attacks.latent_kl(mu, log_var, mu + 1, log_var) > 0).all()


class _LinearEncoder(nn.Module):
    """mu = W x, log_var = V x + b: a random encoder whose posteriors differ between digits."""

    def __init__(self, latent_dim=4):
        super().__init__()
        self.mu = nn.Linear(784, latent_dim)
        self.log_var = nn.Linear(784, latent_dim)
        with torch.no_grad():
            self.mu.weight.mul_(10.0)
            self.log_var.weight.mul_(0.1)
            self.log_var.bias.fill_(-2.0)

    def forward(self, x):
        h = x.flatten(1)
        return self.mu(h), self.log_var(h)


@pytest.fixture(scope="module")
def tiny_vae_and_pairs():
    torch.manual_seed(0)
    vae = rv.VAE(latent_dim=4, width=8, hidden=32, encoder=_LinearEncoder(4)).eval()
    x, _ = rv.load_dataset("mnist-5k", "test")
    return vae, x[:8], x[8:16]


@pytest.mark.parametrize("norm,eps", [("l2", 0.3), ("linf", 0.02)])
def test_latent_attack_within_budget_in_box_and_moves_the_encoding(tiny_vae_and_pairs, norm, eps):
    vae, x, x_target = tiny_vae_and_pairs
    x_adv = attacks.latent_attack(vae, x, x_target, eps=eps, norm=norm, steps=30)
    assert (attacks.perturbation_norm(x_adv, x, norm) <= eps + 1e-4).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        mu_t, lv_t = vae.encode(x_target)
        before = attacks.latent_kl(*vae.encode(x), mu_t, lv_t)
        after = attacks.latent_kl(*vae.encode(x_adv), mu_t, lv_t)
    assert (after < before).all()


def test_latent_attack_succeeds_with_a_large_budget(tiny_vae_and_pairs):
    vae, x, x_target = tiny_vae_and_pairs
    x_adv = attacks.latent_attack(vae, x, x_target, eps=5.0, norm="l2", steps=100)
    with torch.no_grad():
        mu_t, lv_t = vae.encode(x_target)
        before = attacks.latent_kl(*vae.encode(x), mu_t, lv_t)
        after = attacks.latent_kl(*vae.encode(x_adv), mu_t, lv_t)
        d_adv = attacks.reconstruction_distance(vae, x_adv, x_target)
        d_src = attacks.reconstruction_distance(vae, x, x_target)
    assert (after < 0.01 * before).all()
    assert (d_adv < d_src).all()


def test_latent_attack_penalty_and_bad_arguments(tiny_vae_and_pairs):
    vae, x, x_target = tiny_vae_and_pairs
    free = attacks.latent_attack(vae, x, x_target, eps=5.0, steps=30)
    penalised = attacks.latent_attack(vae, x, x_target, eps=5.0, steps=30, lam=50.0)
    assert (attacks.perturbation_norm(penalised, x, "l2").mean() < attacks.perturbation_norm(free, x, "l2").mean())
    with pytest.raises(ValueError, match="shape"):
        attacks.latent_attack(vae, x, x_target[:2], eps=1.0)
    with pytest.raises(ValueError, match="Valid norms"):
        attacks.latent_attack(vae, x, x_target, eps=1.0, norm="l0")


# --- independent truth and strength (mutation-tested: see tests/MUTANTS.md) ---------------
def _linear_robust_accuracy(model, x, y, eps):
    """The exact L-inf robust accuracy of a linear classifier ``W x + b`` on the box [0, 1].

    Image ``i`` is robust iff for every class ``j != y_i`` the margin ``(w_y - w_j) . (x + delta)
    + b_y - b_j`` stays positive at its minimiser, which is separable per pixel: each pixel moves
    to the end of ``[max(-eps, -x), min(eps, 1 - x)]`` opposite to the sign of ``w_y - w_j``."""
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)][0]
    W, b = lin.weight.detach().double(), lin.bias.detach().double()
    xf = x.flatten(1).double()
    lo, hi = (-xf).clamp(min=-eps), (1 - xf).clamp(max=eps)
    robust = torch.ones(len(x), dtype=torch.bool)
    for j in range(W.shape[0]):
        v = W[y] - W[j]                                    # (B, n)
        worst = torch.where(v > 0, lo, hi)
        margin = (v * (xf + worst)).sum(1) + b[y] - b[j]
        robust &= (margin > 0) | (torch.as_tensor(j) == y)
    return robust.double().mean().item()


def test_pgd_reaches_the_exact_robust_accuracy_of_a_linear_model_and_beats_fgsm(tiny_classifier_and_data):
    """Strength, against a closed form: on a linear model the worst case in the L-inf ball is
    known exactly. PGD (40 steps) must come within 2 images of it; FGSM, one step, must not."""
    model, x, y = tiny_classifier_and_data
    for eps in (0.03, 0.08, 0.1):
        exact = _linear_robust_accuracy(model, x, y, eps)
        acc_pgd = _acc(model, attacks.pgd(model, x, y, eps=eps, steps=40, generator=torch.Generator().manual_seed(0)), y)
        assert exact - 1e-9 <= acc_pgd <= exact + 1 / len(x) + 1e-9, eps     # measured: equal at every eps
        if eps >= 0.08:                                   # FGSM leaves 4 more images correct (0.17 vs 0.11 at 0.08)
            assert _acc(model, attacks.fgsm(model, x, y, eps=eps), y) >= acc_pgd + 3 / len(x), eps


def _pgd_path(model, x, y, **kw):
    """Our PGD's iterates ``{step: x_t}`` of the single run (unfrozen: the path torchattacks
    takes), and the images it returns."""
    path = {}
    res = attacks.pgd(model, x, y, callback=lambda k, t, v: path.__setitem__(t, v.clone()), return_result=True,
                      freeze_success=False, **kw)
    return path, res


def test_pgd_and_fgsm_equal_torchattacks_image_by_image(tiny_classifier_and_data):
    """A reference implementation: the same iterates, not just the same accuracy. torchattacks
    returns the last iterate; ours returns each image's first fooling iterate (else the one of
    highest loss), which must be one of the same iterates."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = tiny_classifier_and_data
    for eps in (0.03, 0.1):
        path, res = _pgd_path(model, x, y, eps=eps, steps=10, alpha=eps / 4, random_start=False)
        theirs = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10, random_start=False)(x, y)
        assert 10 in path, "the run stopped early: every image fooled before the last step"
        assert torch.equal(path[10], theirs)                     # measured: bit-identical
        on_path = torch.stack([(path[t] == res.x).flatten(1).all(1) for t in path]).any(0)
        assert bool(on_path.all())
        assert torch.equal(attacks.fgsm(model, x, y, eps=eps), torchattacks.FGSM(model, eps=eps)(x, y))
    # L2: torchattacks' PGDL2 normalises the gradient and projects onto the ball the same way
    path, _ = _pgd_path(model, x, y, eps=1.0, norm="l2", steps=10, alpha=0.25, random_start=False)
    theirs = torchattacks.PGDL2(model, eps=1.0, alpha=0.25, steps=10, random_start=False)(x, y)
    assert torch.allclose(path[10], theirs, atol=1e-5)


def _two_class_linear(w: torch.Tensor, c: float = 0.0) -> nn.Module:
    """Logits ``(c, w . x)``: label 0 is overturned once ``w . x > c``."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(w.numel(), 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1] = w.flatten()
        model[1].bias.copy_(torch.tensor([c, 0.0]))
    return model.eval()


@pytest.mark.parametrize("steps", [1, 3, 7])
def test_pgd_moves_exactly_steps_times_alpha_on_a_linear_model(steps):
    """Closed form: on ``logits = (0, w . x)`` with label 0 the gradient's sign is ``sign(w)`` at
    every point, so from a mid-grey image without a random start, L-inf PGD ends at
    ``x + steps * alpha * sign(w)`` while that stays inside the ball; L2 PGD at
    ``x + steps * alpha * w / ||w||``."""
    g = torch.Generator().manual_seed(0)
    w = 0.01 * torch.randn(1, 1, 28, 28, generator=g)
    w = w - w.mean()                  # small and centred: the softmax stays far from saturation
    model = _two_class_linear(w)
    x = torch.full((3, 1, 28, 28), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    # (not frozen: the mid-grey start is a tie of the two logits, which already counts as fooled)
    kw = dict(random_start=False, freeze_success=False)
    x_adv = attacks.pgd(model, x, y, eps=0.4, steps=steps, alpha=0.01, **kw)
    assert torch.allclose(x_adv - x, (steps * 0.01 * w.sign()).expand_as(x), atol=1e-6)
    x_adv = attacks.pgd(model, x, y, eps=10.0, norm="l2", steps=steps, alpha=0.1, **kw)
    assert torch.allclose(x_adv - x, (steps * 0.1 * w / w.norm()).expand_as(x), atol=1e-5)
    # the default step length is 2.5 eps / steps: the iterate ends on the sphere of radius eps
    x_adv = attacks.pgd(model, x, y, eps=0.02, steps=steps, **kw)
    assert torch.allclose(x_adv - x, (0.02 * w.sign()).expand_as(x), atol=1e-6)
    # targeted: the step goes down the loss of the target, i.e. the other way
    x_adv = attacks.pgd(model, x, torch.ones(3, dtype=torch.long), eps=0.4, steps=steps, alpha=0.01,
                        targeted=True, **kw)
    assert torch.allclose(x_adv - x, (steps * 0.01 * w.sign()).expand_as(x), atol=1e-6)
    x_adv = attacks.pgd(model, x, y, eps=0.4, steps=steps, alpha=0.01, targeted=True, **kw)
    assert torch.allclose(x_adv - x, (-steps * 0.01 * w.sign()).expand_as(x), atol=1e-6)


class _FlatCoinFlip(nn.Module):
    """Class 1 iff the first pixel is above 0.5, with zero gradient everywhere: gradient steps
    cannot move, only the random start decides, and from a mid-grey image half of the random
    starts succeed."""

    def forward(self, x):
        hit = (x.flatten(1)[:, 0] > 0.5).float()
        return torch.stack([torch.zeros_like(hit), 10 * hit], 1) + 0 * x.flatten(1).sum(1, keepdim=True)


def test_restarts_keep_the_first_successful_one():
    """Strength: only some random starts succeed. With 8 restarts an image fails only if all 8
    starts do (1 in 256), with one restart about half fail; and a later, failing restart must not
    overwrite an earlier success."""
    model = _FlatCoinFlip()
    x = torch.full((64, 1, 28, 28), 0.5)
    y = torch.zeros(64, dtype=torch.long)
    one = attacks.pgd(model, x, y, eps=0.1, steps=3, restarts=1, generator=torch.Generator().manual_seed(0))
    many = attacks.pgd(model, x, y, eps=0.1, steps=3, restarts=8, generator=torch.Generator().manual_seed(0))
    for x_adv in (one, many):
        assert attacks.perturbation_norm(x_adv, x, "linf").max() <= 0.1 + 1e-6
    fooled_one = 1 - _acc(model, one, y)
    fooled_many = 1 - _acc(model, many, y)
    assert 0.3 < fooled_one < 0.7
    assert fooled_many >= 0.95
    # restarts continue only for the images not yet fooled: the first restart's successes are kept as they were
    ok = model(one).argmax(1) != y
    assert torch.equal(many[ok], one[ok])
    # without a random start nothing moves
    still = attacks.pgd(model, x, y, eps=0.1, steps=3, restarts=4, random_start=False)
    assert torch.equal(still, x)


def test_eot_averages_the_gradient_of_a_stochastic_model():
    """EOT: with a model whose gradient direction is random (+w or -w, the +w one twice as often), one
    pass follows the sign of a single draw, the average over many passes follows +w."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 1, 28, 28, generator=g)
    w = w - w.mean()                  # w . x = 0 on a constant image: both signs have the same gradient size
    lin = _two_class_linear(w)
    flips = torch.Generator().manual_seed(1)

    def noisy(x):
        s = 1.0 if torch.rand(1, generator=flips).item() < 2 / 3 else -1.0
        return s * lin(x)

    x = torch.full((2, 1, 28, 28), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    x_adv = attacks.pgd(noisy, x, y, eps=0.4, steps=1, alpha=0.01, random_start=False, eot=400)
    assert torch.allclose(x_adv - x, (0.01 * w.sign()).expand_as(x), atol=1e-6)


def test_ascend_keeps_the_best_iterate_not_the_last():
    """Best-iterate rule: on f(v) = -(v - 1)^2 with steps that overshoot the maximum at 1, the last
    iterate is worse than an earlier one; ascend returns the best, and its trace records every
    iterate's value."""
    v0 = torch.zeros(3, 1)
    res = attacks.ascend(lambda v: -(v - 1).pow(2).sum(1), lambda k: v0.clone(), lambda v: v,
                         steps=3, alpha=0.8, step_rule="sign")
    # iterates 0, 0.8, 1.6, 0.8: values -1, -0.04, -0.36, -0.04; the first best is kept
    assert torch.allclose(res.x, torch.full((3, 1), 0.8))
    assert torch.allclose(res.trace[0, :, 0], torch.tensor([-1.0, -0.04, -0.36, -0.04]), atol=1e-6)
    assert res.success is None and res.success_trace is None
    with pytest.raises(ValueError, match="success"):
        res.broken_by(0, 1)


def test_ascend_success_beats_value_and_is_never_lost():
    """A successful iterate is kept over any unsuccessful one of higher value, and a later restart
    that fails cannot replace it; the cumulative broken fraction never decreases."""
    starts = [torch.tensor([[0.0], [0.0]]), torch.tensor([[5.0], [5.0]])]

    def objective(v):                       # success only near 1 (row 0) or never (row 1)
        ok = torch.stack([(v[0, 0] - 1).abs() < 0.1, torch.tensor(False)])
        return v.sum(1), ok

    res = attacks.ascend(objective, lambda k: starts[k].clone(), lambda v: v.clamp(max=6.0),
                         steps=2, alpha=1.0, step_rule="sign", restarts=2, stop_when_all_succeed=False)
    assert res.success.tolist() == [True, False]
    assert res.x[0, 0].item() == pytest.approx(1.0)          # the success, not the larger value 6
    assert res.x[1, 0].item() == pytest.approx(6.0)          # no success: the highest value
    curve = res.broken_after().flatten()
    assert bool((curve[1:] >= curve[:-1]).all()) and curve[-1].item() == pytest.approx(0.5)
    assert res.broken_by(0, 0).tolist() == [False, False] and res.broken_by(0, 1).tolist() == [True, False]
    # the second restart's first iterate: row 0 stays broken by the first restart, row 1 never was
    assert res.broken_by(1, 0).tolist() == [True, False]


def test_broken_by_accepts_exactly_the_recorded_restarts_and_steps():
    """``broken_by(restart, step)`` is defined for restart in [0, r) and step in [0, t) of the
    ``(r, t, B)`` success trace: the last restart's last iterate is accepted; one past either end,
    or a negative index, is refused (not read from another restart or wrapped around)."""
    starts = [torch.tensor([[0.0], [0.0]]), torch.tensor([[5.0], [5.0]])]
    res = attacks.ascend(lambda v: (v.sum(1), v[:, 0] > 100), lambda k: starts[k].clone(), lambda v: v,
                         steps=2, alpha=1.0, step_rule="sign", restarts=2, stop_when_all_succeed=False)
    r, t, _ = res.success_trace.shape
    assert (r, t) == (2, 3)
    assert res.broken_by(r - 1, t - 1).tolist() == [False, False]
    for restart, step in [(r, 0), (0, t), (-1, 0), (0, -1), (r, t)]:
        with pytest.raises(ValueError, match="restart must be"):
            res.broken_by(restart, step)


def test_broken_after_without_a_success_signal_is_nan_shaped_like_the_trace():
    """An objective with no success signal: ``broken_after()`` is NaN, one value per (restart,
    iterate), and only :func:`attacks.pgd` records the kept iterates per restart."""
    res = attacks.ascend(lambda v: -(v - 1).pow(2).sum(1), lambda k: torch.zeros(3, 1), lambda v: v,
                         steps=3, alpha=0.8, step_rule="sign", restarts=2)
    curve = res.broken_after()
    assert curve.shape == res.trace.shape[:2] == (2, 4) and bool(curve.isnan().all())
    assert res.x_after_restart is None


def test_ascend_takes_zero_steps_and_a_zero_step_and_refuses_negative_steps():
    """``steps = 0`` evaluates the start only (one iterate per restart, no gradient asked for);
    ``alpha = 0`` never moves; ``steps < 0`` is refused whatever the other settings."""
    x0 = torch.tensor([[0.3], [0.7]])
    grads = []

    def objective(v):
        grads.append(v.requires_grad)
        return v.sum(1)

    res = attacks.ascend(objective, lambda k: x0.clone(), lambda v: v, steps=0, alpha=1.0, restarts=2)
    assert torch.equal(res.x, x0) and res.trace.shape == (2, 1, 2) and grads == [False, False]
    res = attacks.ascend(lambda v: v.sum(1), lambda k: x0.clone(), lambda v: v, steps=3, alpha=0.0)
    assert torch.equal(res.x, x0) and torch.allclose(res.trace[0], x0.T.expand(4, 2))
    with pytest.raises(ValueError, match="steps must be"):
        attacks.ascend(lambda v: v.sum(1), lambda k: x0.clone(), lambda v: v, steps=-1, alpha=1.0)


def test_ascend_stops_restarting_once_every_example_succeeded_unless_asked_not_to():
    """By default no restart starts after every example has succeeded (the rest of the trace is
    NaN, the rest of the success trace True); with ``stop_when_all_succeed=False`` all run."""
    started = []

    def start(k):
        started.append(k)
        return torch.zeros(2, 1)

    def always(v):
        return v.sum(1), torch.ones(len(v), dtype=torch.bool)

    res = attacks.ascend(always, start, lambda v: v, steps=2, alpha=1.0, restarts=3)
    assert started == [0]
    assert bool(res.trace[1:].isnan().all()) and bool(res.success_trace[1:].all())
    started.clear()
    attacks.ascend(always, start, lambda v: v, steps=2, alpha=1.0, restarts=3, stop_when_all_succeed=False)
    assert started == [0, 1, 2]


def test_eot_value_is_the_mean_of_the_draws_and_success_a_strict_majority():
    """With ``eot`` draws of a random objective the kept value is the mean of the draws and success
    needs more than half of them: 2 of 4 is not a success, 3 of 4 is."""
    values = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [6.0, 4.0]])        # draw i: rows 0, 1
    oks = torch.tensor([[True, True], [True, True], [False, True], [False, False]])
    draw = iter(range(4))

    def objective(v):
        i = next(draw)
        return values[i].clone(), oks[i].clone()

    res = attacks.ascend(objective, lambda k: torch.zeros(2, 1), lambda v: v, steps=0, alpha=1.0, eot=4)
    assert torch.equal(res.trace[0, 0], torch.tensor([3.0, 1.0])) and torch.equal(res.value, torch.tensor([3.0, 1.0]))
    assert res.success.tolist() == [False, True]


def test_ascend_cosine_schedule_and_bad_arguments():
    """The cosine schedule anneals the step from alpha to 0 (first step alpha, last near 0)."""
    path = []
    attacks.ascend(lambda v: v.sum(1), lambda k: torch.zeros(1, 1), lambda v: v, steps=4, alpha=1.0,
                   step_rule="l2", schedule="cosine", callback=lambda k, t, v: path.append(v.item()))
    steps = torch.diff(torch.tensor(path))
    expected = torch.tensor([0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)])
    assert torch.allclose(steps, expected, atol=1e-6)
    for bad in (dict(schedule="linear"), dict(step_rule="l1"), dict(eot=0), dict(alpha=-1.0)):
        kwargs = dict(steps=1, alpha=1.0) | bad
        with pytest.raises(ValueError):
            attacks.ascend(lambda v: v.sum(1), lambda k: torch.zeros(1, 1), lambda v: v, **kwargs)


def test_pgd_restarts_attack_only_the_survivors():
    """Later restarts run on the images no earlier restart fooled: the model sees fewer rows."""
    model = _FlatCoinFlip()
    seen = []

    class Counting(nn.Module):
        def forward(self, x):
            seen.append(len(x))
            return model(x)

    x = torch.full((64, 1, 28, 28), 0.5)
    y = torch.zeros(64, dtype=torch.long)
    res = attacks.pgd(Counting(), x, y, eps=0.1, steps=1, restarts=3, generator=torch.Generator().manual_seed(0),
                      return_result=True)
    sizes = sorted(set(seen), reverse=True)
    assert sizes[0] == 64 and len(sizes) >= 2 and sizes[-1] < 32
    assert res.broken_after()[-1, -1].item() == pytest.approx(res.success.float().mean().item())
    # the kept images after each restart: an image fooled after restart k stays as it was after
    assert 1 <= len(res.x_after_restart) <= 3 and torch.equal(res.x_after_restart[-1], res.x)
    first = res.x_after_restart[0]
    fooled_first = model(first).argmax(1) != y
    assert torch.equal(res.x[fooled_first], first[fooled_first])


# --- freezing successes ----------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3])
def test_freezing_successes_breaks_the_same_images_with_fewer_evaluations(tiny_classifier_and_data, eps):
    """On a deterministic model, stopping an image at its first fooling iterate changes no
    verdict (a fooling iterate stays fooling), keeps only fooling iterates for the fooled, and
    evaluates fewer images: the saving the book's attacks rely on."""
    model, x, y = tiny_classifier_and_data
    calls = {"n": 0}

    class Counting(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, v):
            calls["n"] += len(v)
            return self.m(v)

    counted = Counting(model).eval()
    runs = {}
    for freeze in (False, True):
        calls["n"] = 0
        res = attacks.pgd(counted, x, y, eps=eps, steps=10, restarts=2, return_result=True,
                          generator=torch.Generator().manual_seed(0), freeze_success=freeze)
        runs[freeze] = (res, calls["n"])
    (plain, n_plain), (frozen, n_frozen) = runs[False], runs[True]
    assert torch.equal(plain.success, frozen.success)
    assert torch.equal(plain.broken_after(), frozen.broken_after())
    with torch.no_grad():
        fooled_now = model(frozen.x).argmax(1) != y
    assert torch.equal(fooled_now, frozen.success)          # the kept iterates really fool
    assert (frozen.x - x).abs().max() <= eps + 1e-6
    if bool(frozen.success.any()):
        assert n_frozen < n_plain
    else:
        assert n_frozen == n_plain


def test_freezing_is_allowed_only_for_deterministic_models(tiny_classifier_and_data):
    """Freezing is off by default; ``None`` freezes a model in eval mode, not one with dropout in
    training mode, not a model that declares itself stochastic, not a plain callable; asking
    for it on a stochastic model or with EOT is an error."""
    from robustvae.attacks import _deterministic
    model, x, y = tiny_classifier_and_data
    assert _deterministic(model.eval())

    class Noisy(nn.Module):
        stochastic = True

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, v):
            return self.m(v + 0.01 * torch.randn_like(v))

    assert not _deterministic(Noisy(model))
    assert not _deterministic(nn.Sequential(nn.Dropout(0.5), model).train())
    assert not _deterministic(lambda v: model(v))
    model.eval()
    with pytest.raises(ValueError, match="deterministic"):
        attacks.pgd(Noisy(model), x, y, eps=0.1, steps=2, freeze_success=True)
    with pytest.raises(ValueError, match="deterministic"):
        attacks.pgd(model, x, y, eps=0.1, steps=2, eot=2, freeze_success=True)
    # the default returns the highest-loss fooling iterate, not the first one
    plain = attacks.pgd(model, x, y, eps=0.3, steps=10, return_result=True, generator=torch.Generator().manual_seed(0))
    auto = attacks.pgd(model, x, y, eps=0.3, steps=10, return_result=True, freeze_success=None,
                       generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain.success, auto.success)
    fooled = plain.success
    if bool(fooled.any()):
        assert bool((plain.value[fooled] >= auto.value[fooled] - 1e-6).all())
    # None froze this deterministic model: the same images as freezing asked for, not the plain ones
    frozen = attacks.pgd(model, x, y, eps=0.3, steps=10, return_result=True, freeze_success=True,
                         generator=torch.Generator().manual_seed(0))
    assert torch.equal(auto.x, frozen.x) and not torch.equal(plain.x, frozen.x)


def test_freezing_needs_a_success_signal():
    v0 = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="success"):
        attacks.ascend(lambda v, idx: v.sum(1), lambda k: v0, lambda v, idx: v, steps=2, alpha=0.1,
                       freeze_success=True)


def test_freezing_keeps_successes_across_restarts_and_stops_when_all_broken():
    """A toy objective whose success is ``v > 1`` coordinate-wise-summed: examples break at
    different steps; frozen ones never move again and the trace says broken from then on."""
    v0 = torch.tensor([[0.0], [0.4], [0.9]])      # steps of 0.25 (exact in binary)
    seen = []

    def objective(v, idx):
        seen.append(idx.tolist())
        return v.sum(1), v.sum(1) > 1.0

    res = attacks.ascend(objective, lambda k: v0, lambda v, idx: v, steps=6, alpha=0.25, step_rule="l2",
                         restarts=2, freeze_success=True)
    assert bool(res.success.all())
    # the third breaks at step 1, the second at step 3, the first at step 5; restart 2 never runs
    assert seen == [[0, 1, 2], [0, 1, 2], [0, 1], [0, 1], [0], [0]]
    assert torch.allclose(res.x.flatten(), torch.tensor([1.25, 1.15, 1.15]))
    assert res.success_trace[0, :, 2].tolist() == [False] + [True] * 6
    assert res.success_trace[0, :, 0].tolist() == [False] * 5 + [True] * 2
    assert bool(res.success_trace[1:].all())


def test_freezing_runs_a_later_restart_on_the_unbroken_only_and_gives_the_plain_verdicts():
    """Examples broken by an earlier restart are not computed again: restart k sees only the rows
    still unbroken, and the verdicts and broken-fraction curve equal those of the plain run. Once
    every example is broken, the remaining restarts (``stop_when_all_succeed=False``) compute
    nothing and the trace keeps each example's kept value, broken."""
    starts = [torch.tensor([[1.0], [0.0], [0.0]]), torch.tensor([[0.0], [1.0], [0.0]]),
              torch.tensor([[0.0], [0.0], [1.0]])]     # restart k breaks example k at its start
    runs = {}
    for freeze in (False, True):
        seen = []

        def objective(v, idx=None):
            seen.append(idx.tolist() if idx is not None else None)
            return v.sum(1), v.sum(1) >= 1.0

        proj = (lambda v, idx: v) if freeze else (lambda v: v)
        res = attacks.ascend(objective, lambda k: starts[k].clone(), proj, steps=1, alpha=0.0, restarts=3,
                             freeze_success=freeze)
        runs[freeze] = res, seen
    (plain, _), (frozen, seen) = runs[False], runs[True]
    assert seen == [[0, 1, 2], [1, 2], [1, 2], [2], [2]]     # a frozen example is not computed again
    assert bool(frozen.success.all()) and torch.equal(plain.success, frozen.success)
    assert torch.allclose(frozen.broken_after()[:, -1], torch.tensor([1 / 3, 2 / 3, 1.0]))
    assert torch.equal(plain.broken_after(), frozen.broken_after())

    seen = []
    res = attacks.ascend(lambda v, idx: (seen.append(idx.tolist()), (v.sum(1), v.sum(1) >= 1.0))[1],
                         lambda k: torch.ones(2, 1), lambda v, idx: v, steps=1, alpha=0.0, restarts=3,
                         freeze_success=True, stop_when_all_succeed=False)
    assert seen == [[0, 1]]                                  # broken at the first iterate; nothing after
    assert bool(res.success_trace.all()) and torch.equal(res.trace, torch.ones(3, 2, 2))


@pytest.mark.parametrize("freeze,signal", [(False, False), (False, True), (True, True)])
def test_the_kept_iterate_of_an_unbroken_example_is_its_first_best(freeze, signal):
    """With no success, the iterate of highest value is kept and a tie keeps the earlier one:
    f(v) = -(v - 1)^2 with its gradient replaced by +1, from 0.5 with unit sign steps: the iterates
    0.5, 1.5, 2.5 score -0.25, -0.25, -2.25, so 0.5 is kept (not the tie 1.5, not the last 2.5),
    frozen or not."""
    def objective(v, idx=None):
        fixed = v.detach()
        value = -(fixed - 1).pow(2).sum(1) + (v - fixed).sum(1)
        return (value, v.sum(1) > 100.0) if signal else value

    proj = (lambda v, idx: v) if freeze else (lambda v: v)
    res = attacks.ascend(objective, lambda k: torch.full((1, 1), 0.5), proj, steps=2, alpha=1.0,
                         freeze_success=freeze)
    assert res.x.item() == 0.5 and res.value.item() == -0.25
    assert (res.success is None) if not signal else not res.success.item()


def test_freezing_fills_the_trace_after_the_last_example_breaks():
    """Once every example is broken the loop stops; the trace keeps each earlier iterate's value
    and repeats the breaking value to the end (no NaN, nothing overwritten), and the callback is
    still called once for each remaining step."""
    calls = []
    res = attacks.ascend(lambda v, idx: (v.sum(1), v.sum(1) > 1.0), lambda k: torch.zeros(1, 1),
                         lambda v, idx: v, steps=5, alpha=0.5, freeze_success=True,
                         callback=lambda k, t, v: calls.append((k, t)))
    assert calls == [(0, t) for t in range(6)]             # the callback still sees every step, once
    assert res.trace[0, :, 0].tolist() == [0.0, 0.5, 1.0, 1.5, 1.5, 1.5]
    assert res.success_trace[0, :, 0].tolist() == [False, False, False, True, True, True]


@pytest.mark.parametrize("freeze", [False, True])
def test_an_l2_step_moves_alpha_along_the_unit_gradient(freeze):
    """On the linear objective w.v with w = (3, 4), one L2 step of size 1 moves each row by
    w / ||w|| = (0.6, 0.8), frozen or not (the frozen path has its own update)."""
    w = torch.tensor([3.0, 4.0])

    def objective(v, idx=None):
        return (v * w).sum(1), (v * w).sum(1) > 100.0

    proj = (lambda v, idx: v) if freeze else (lambda v: v)
    res = attacks.ascend(objective, lambda k: torch.zeros(2, 2), proj, steps=1, alpha=1.0, step_rule="l2",
                         freeze_success=freeze)
    assert torch.allclose(res.x, torch.tensor([[0.6, 0.8], [0.6, 0.8]]))


def test_frozen_attack_with_every_example_broken_starts_no_restart_and_keeps_the_final_value():
    """Freezing with the default stop: the example breaks at the last step of the first restart
    (iterates 0, 0.5, 1, 1.5), so no other restart starts, and the rest of the trace holds the
    breaking value 1.5, broken."""
    started = []

    def start(k):
        started.append(k)
        return torch.zeros(1, 1)

    res = attacks.ascend(lambda v, idx: (v.sum(1), v.sum(1) > 1.0), start, lambda v, idx: v, steps=3,
                         alpha=0.5, restarts=3, freeze_success=True)
    assert started == [0]
    assert res.trace[:, :, 0].tolist() == [[0.0, 0.5, 1.0, 1.5], [1.5] * 4, [1.5] * 4]
    assert res.success_trace[0, :, 0].tolist() == [False] * 3 + [True] and bool(res.success_trace[1:].all())


def test_fgsm_steps_eps_up_the_loss_or_down_the_target_loss_and_leaves_ignored_pixels():
    """Closed form on a linear model that ignores two of four pixels: the gradient of the loss of
    label 0 at a tie is (0, 0, -1, 1) in sign, so FGSM moves the last two pixels by eps and leaves
    the ignored ones (zero gradient) alone; targeted at label 1 it goes down that label's loss,
    which here is the same move."""
    lin = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0, 1.0, -1.0], [0.0, 0.0, -1.0, 1.0]]))
    model = nn.Sequential(nn.Flatten(), lin)
    x = torch.full((1, 1, 2, 2), 0.5)
    want = torch.tensor([0.5, 0.5, 0.4, 0.6]).view(1, 1, 2, 2)
    assert torch.allclose(attacks.fgsm(model, x, torch.tensor([0]), eps=0.1), want)
    assert torch.allclose(attacks.fgsm(model, x, torch.tensor([1]), eps=0.1, targeted=True), want)
    assert torch.allclose(attacks.fgsm(model, x, torch.tensor([1]), eps=0.1), 1 - want)


def test_pgd_defaults_to_40_steps_of_2_5_eps_over_40():
    """The documented defaults: 40 steps (41 iterates) of L-inf length 2.5 eps / steps."""
    w = 0.01 * torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    model = _two_class_linear(w - w.mean())
    x = torch.full((1, 1, 28, 28), 0.5)
    path = []
    attacks.pgd(model, x, torch.zeros(1, dtype=torch.long), eps=0.1, random_start=False,
                callback=lambda k, t, v: path.append((t, v.clone())))
    assert [t for t, _ in path] == list(range(41))
    assert torch.allclose((path[1][1] - x).abs(), torch.full_like(x, 2.5 * 0.1 / 40), atol=1e-7)


def test_pgd_one_default_step_from_a_random_start_reaches_the_corner_and_zero_steps_is_the_start():
    """With one step the default length is 2.5 eps, more than the 2 eps across the L-inf ball, so
    from any random start the step lands on the corner ``x + eps sign(w)`` of a linear model's
    ball; ``steps = 0`` returns the start itself, and ``steps < 0`` is refused."""
    w = 0.01 * torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    w = w - w.mean()
    model = _two_class_linear(w)
    x = torch.full((4, 1, 28, 28), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    x_adv = attacks.pgd(model, x, y, eps=0.1, steps=1, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(x_adv - x, (0.1 * w.sign()).expand_as(x), atol=1e-6)
    assert torch.equal(attacks.pgd(model, x, y, eps=0.1, steps=0, random_start=False), x)
    with pytest.raises(ValueError, match="steps must be"):
        attacks.pgd(model, x, y, eps=0.1, steps=-1)


def test_pgd_returns_the_highest_loss_iterate_of_an_image_it_cannot_fool():
    """Logits (10, w.x) with a small w: label 0 can never be overturned, and the loss grows along
    sign(w), so PGD returns its last iterate ``x + steps alpha sign(w)`` with that iterate's loss,
    not the clean image."""
    w = 0.01 * torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    model = _two_class_linear(w, 10.0)
    x = torch.full((2, 1, 28, 28), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    res = attacks.pgd(model, x, y, eps=0.1, steps=4, alpha=0.01, random_start=False, return_result=True)
    assert not res.success.any()
    assert torch.allclose(res.x - x, (0.04 * w.sign()).expand_as(x), atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(res.value, F.cross_entropy(model(res.x), y, reduction="none"))


def test_pgd_keeps_the_highest_loss_restart_of_an_image_it_cannot_fool_and_the_first_of_a_tie():
    """Across restarts an image never fooled keeps the restart of highest loss (with no step, the
    best random start), and a tie keeps the earlier restart's image."""
    w = 0.01 * torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x = torch.full((3, 1, 28, 28), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    starts = {}
    res = attacks.pgd(_two_class_linear(w - w.mean(), 10.0), x, y, eps=0.1, steps=0, restarts=3, return_result=True,
                      generator=torch.Generator().manual_seed(1), callback=lambda k, t, v: starts.setdefault(k, v.clone()))
    assert sorted(starts) == [0, 1, 2] and not res.success.any()
    assert torch.equal(res.value, res.trace[:, 0].max(0).values)
    best = res.trace[:, 0].argmax(0)
    assert torch.equal(res.x, torch.stack([starts[int(k)][i] for i, k in enumerate(best)]))
    starts.clear()
    flat = attacks.pgd(_two_class_linear(torch.zeros(1, 1, 28, 28), 10.0), x, y, eps=0.1, steps=0, restarts=3,
                       generator=torch.Generator().manual_seed(1), callback=lambda k, t, v: starts.setdefault(k, v.clone()))
    assert torch.equal(flat, starts[0]) and not torch.equal(flat, starts[2])      # a constant loss: the first


def test_pgd_restarts_only_while_a_random_start_can_differ_and_an_image_is_unfooled():
    """Restarts run while some image is unfooled, even one alone; without a random start, or with
    eps = 0, a restart would repeat the first, so only one runs."""
    w = 0.01 * torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    model = _two_class_linear(w - w.mean(), 10.0)                  # cannot be fooled
    x1, y1 = torch.full((1, 1, 28, 28), 0.5), torch.zeros(1, dtype=torch.long)
    for kw, runs in ((dict(), [0, 1, 2]), (dict(random_start=False), [0]), (dict(eps=0.0), [0])):
        seen = set()
        attacks.pgd(model, x1, y1, **({"eps": 0.1} | kw), steps=1, restarts=3,
                    generator=torch.Generator().manual_seed(1), callback=lambda k, t, v: seen.add(k))
        assert sorted(seen) == runs, kw
    seen = set()
    attacks.pgd(model, x1, y1, eps=0.1, steps=1, generator=torch.Generator().manual_seed(1),
                callback=lambda k, t, v: seen.add(k))
    assert seen == {0}                                             # one restart unless asked for more


def test_pgd_success_trace_after_the_last_restart_repeats_its_final_verdict():
    """Logits (c, w . x) from mid-grey without a random start: each step of 0.01 raises w . x by
    0.01 ||w||_1, so with c = 2.5 steps' worth the image is fooled at the third step only; no
    second restart runs and the rest of the success trace holds that final verdict."""
    w = 0.01 * torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    w = w - w.mean()
    model = _two_class_linear(w, 2.5 * 0.01 * w.abs().sum().item())
    x = torch.full((1, 1, 28, 28), 0.5)
    res = attacks.pgd(model, x, torch.zeros(1, dtype=torch.long), eps=1.0, steps=3, alpha=0.01, restarts=3,
                      random_start=False, return_result=True)
    assert res.success_trace[0, :, 0].tolist() == [False, False, False, True]
    assert bool(res.success_trace[1:].all())


# --- random starts: their distribution against the closed form ----------------------------------
def test_linf_random_start_is_uniform_in_the_box():
    """Uniform on [-eps, eps] per pixel: mean |d| = eps / 2 and a quarter of |d| beyond 3 eps / 4."""
    x = torch.full((2000, 1, 2, 2), 0.5)
    d = (attacks.ball_start(x, 0.1, "linf", generator=torch.Generator().manual_seed(0))(0) - x).flatten()
    assert d.abs().max().item() <= 0.1 + 1e-7
    assert d.abs().mean().item() == pytest.approx(0.05, abs=0.002)
    assert (d.abs() > 0.075).float().mean().item() == pytest.approx(0.25, abs=0.015)
    assert d.mean().item() == pytest.approx(0.0, abs=0.003)


@pytest.mark.parametrize("shape", [(4000, 2), (4000, 1, 1, 2)])
def test_l2_random_start_is_uniform_in_the_ball(shape):
    """In n = 2 dimensions a uniform point of the ball has P(||d|| <= t eps) = t^2, each image its
    own radius and a uniform direction."""
    x = torch.full(shape, 0.5)
    d = (attacks.ball_start(x, 0.2, "l2", generator=torch.Generator().manual_seed(1))(0) - x).flatten(1)
    radius = d.norm(dim=1)
    assert radius.max().item() <= 0.2 + 1e-6
    for t in (0.25, 0.5, 0.75):
        assert (radius <= t * 0.2).float().mean().item() == pytest.approx(t ** 2, abs=0.02)
    angle = torch.atan2(d[:, 1], d[:, 0])
    assert (angle > 0).float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert (angle.abs() < math.pi / 2).float().mean().item() == pytest.approx(0.5, abs=0.03)


def test_l2_random_start_of_a_single_image_is_uniform_in_its_ball():
    """A batch of one image (the dimension comes from the image, not from a second one): over 2,000
    draws in n = 2 dimensions, P(||d|| <= t eps) = t^2."""
    x = torch.full((1, 2), 0.5)
    start = attacks.ball_start(x, 0.2, "l2", generator=torch.Generator().manual_seed(3))
    radius = torch.stack([(start(0) - x).norm() for _ in range(2000)])
    assert radius.max().item() <= 0.2 + 1e-6
    for t in (0.25, 0.5, 0.75):
        assert (radius <= t * 0.2).float().mean().item() == pytest.approx(t ** 2, abs=0.03)


def test_a_start_without_randomness_or_budget_is_the_input_itself():
    x = torch.rand(3, 1, 2, 2)
    for start in (attacks.ball_start(x, 0.3, "l2", random=False), attacks.ball_start(x, 0.0, "linf")):
        assert torch.equal(start(0), x)

"""Chapter 3's tables, numbers and claims (robustvae.reports.consistency) on tiny inputs worked out by hand."""

import functools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import robustvae as rv
from robustvae.reports import consistency as rep


class _PixelClassifier(nn.Module):
    """Logits are the pixels themselves: the label of a (N, 1, 2, 2) image is its brightest pixel (0..3)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x):
        return x.flatten(1) + 0 * self.dummy


class _IdentityVAE(nn.Module):
    """Reconstructs every input as itself; encodes it as its first two pixels."""

    def reconstruct(self, x, sample=True):
        return x

    def encode(self, x):
        mu = x.flatten(1)[:, :2]
        return mu, torch.zeros_like(mu)


def _hot(classes, value=1.0):
    """(N, 1, 2, 2) images with one bright pixel at each given class index."""
    x = torch.zeros(len(classes), 4)
    x[torch.arange(len(classes)), torch.as_tensor(classes)] = value
    return x.view(-1, 1, 2, 2)


PARAMS = dict(
    clf_epochs=1, vae_epochs=1, latent_dim=2, n_samples=3, n_attack=10, n_lbfgs=4, pgd_steps=2,
    lbfgs_search=1, lbfgs_iter=1, n_vae_attack=5, vae_attack_steps=1, n_adaptive=10, adaptive_steps=1,
    adaptive_restarts=1, adaptive_eot=1, n_boot=10, beta=1.0, beta_small=0.0, likelihood="bernoulli",
    adaptive_lam=0.0, kl_lam=1.0, kl_tol=1.0, fgsm_eps=(0.1,), latent_eps=(1.0,), damage_eps=(1.0,),
    adaptive_eps=(0.3,), pgd_eps=0.3, check_eps=0.1,
)


def test_check_parameters_accepts_the_book_and_names_the_bad_value():
    rep.check_parameters(PARAMS)
    for bad, match in (({"n_adaptive": 11}, "n_adaptive"), ({"n_vae_attack": 6}, "n_vae_attack"),
                       ({"fgsm_eps": ()}, "fgsm_eps"), ({"pgd_eps": -0.1}, "pgd_eps"),
                       ({"likelihood": "poisson"}, "likelihood")):
        with pytest.raises(ValueError, match=match):
            rep.check_parameters({**PARAMS, **bad})


def test_threat_models_name_each_attack():
    t = rep.threat_models((0.1, 0.2), 0.3, 40)
    assert t == {"FGSM 0.1": "L-inf <= 0.1", "FGSM 0.2": "L-inf <= 0.2", "L-BFGS": "L2, minimal, targeted",
                 "PGD 0.3": "L-inf <= 0.3, 40 steps"}


def test_attack_outcomes_and_table_by_hand():
    clf = _PixelClassifier()
    x, y = _hot([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3])
    adv = {
        "FGSM 0.1": _hot([0, 2, 2, 0], 2.0),                     # changes images 1 and 3
        "L-BFGS": _hot([3, 1], 2.0),                              # first two images, targets 3 and 0
    }
    pred_clean, pred_adv, success = rep.attack_outcomes(clf, x, y, adv, {"L-BFGS": torch.tensor([3, 0])})
    assert pred_clean.tolist() == [0, 1, 2, 3]
    assert success["FGSM 0.1"].tolist() == [False, True, False, True]
    assert success["L-BFGS"].tolist() == [True, False]           # image 1 stayed at 1, not its target 0
    table = rep.attack_table(x, y, adv, pred_adv, success, {"FGSM 0.1": "a", "L-BFGS": "b"})
    assert table.loc["FGSM 0.1", "images"] == 4 and table.loc["L-BFGS", "images"] == 2
    assert table.loc["FGSM 0.1", "success rate"] == pytest.approx(0.5)
    assert table.loc["FGSM 0.1", "classifier accuracy"] == pytest.approx(0.5)
    assert table.loc["L-BFGS", "classifier accuracy"] == pytest.approx(0.5)
    # FGSM's L-inf sizes are (1, 2, 1, 2): torch's median of an even count is the lower middle
    assert table.loc["FGSM 0.1", "median L-inf"] == pytest.approx(1.0)
    assert table.loc["L-BFGS", "median L2"] == pytest.approx(1.0)  # median of (sqrt 5, 1) is the lower
    nums = rep.attack_numbers(table.rename(index={"FGSM 0.1": "PGD 0.3"}), "PGD 0.3")
    assert nums == {"pgd_acc": pytest.approx(0.5), "lbfgs_success": pytest.approx(0.5),
                    "lbfgs_l2": pytest.approx(1.0)}


def test_cross_check_agrees_with_torchattacks_on_a_linear_model():
    pytest.importorskip("torchattacks")
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(8, 1, 2, 2)
    y = clf(x).argmax(1)
    table = rep.cross_check(clf, x, y, eps=0.1, steps=3)
    assert list(table.index) == ["FGSM", "PGD (best iterate)", "PGD (last iterate)"]
    assert table.index.name == "L-inf eps 0.1, 3 steps"
    assert math.isnan(table.loc["PGD (best iterate)", "robust accuracy, torchattacks"])
    nums = rep.cross_check_numbers(table)
    assert nums["cross_diff"] <= 1e-6
    assert nums["cross_best_acc"] <= nums["cross_pgd_acc"]
    assert rep._cross_gap(table) == 0


def test_cross_check_numbers_by_hand():
    table = pd.DataFrame({"robust accuracy, robustvae": [0.5, 0.2, 0.3],
                          "robust accuracy, torchattacks": [0.5, np.nan, 0.25],
                          "max |image difference|": [0.0, np.nan, 1e-3]},
                         index=["FGSM", "PGD (best iterate)", "PGD (last iterate)"])
    assert rep.cross_check_numbers(table) == {"cross_diff": 1e-3, "cross_pgd_acc": 0.3, "cross_best_acc": 0.2}
    assert rep._cross_gap(table) == pytest.approx(0.05)


def test_clean_consistency_counts_single_labels(monkeypatch):
    from tests.test_consistency import _ToyClassifier, _ToyVAE

    monkeypatch.setattr(rv.training, "vae_metrics", lambda v, x: {"elbo": -float(v.log_var)})
    x = torch.cat([torch.full((2, 1, 28, 28), 0.9), torch.full((2, 1, 28, 28), 0.5)])
    correct = torch.tensor([True, True, True, False])
    table = rep.clean_consistency({"sharp": _ToyVAE(-10.0)}, _ToyClassifier(), x, correct, n_samples=20)
    # the bright digits decode clean-cut; the grey ones sit on the boundary (mu = 0) and split
    assert table.loc["sharp", "single label (test set)"] == pytest.approx(0.5)
    assert table.loc["sharp", "single label (correctly classified)"] == pytest.approx(2 / 3)
    assert table.loc["sharp", "mean distinct labels"] == pytest.approx(1.5)
    assert table.loc["sharp", "test ELBO (nats)"] == 10.0
    assert table.attrs["single"] == {"sharp": [True, True, False, False]}
    two = pd.concat([table, table.rename(index={"sharp": "other"}) * 2])
    two.attrs["single"] = {"sharp": [True, True, False, False], "other": [True, True, True, True]}
    nums = rep.clean_numbers(two, 0.5)
    assert nums["clean_single_ch1"] == pytest.approx(0.5) and nums["clean_single_small"] == pytest.approx(1.0)
    assert nums["beta_small"] == 0.5 and nums["elbo_small"] == 20.0
    # "other" gives a single label to the two grey digits as well: 2 gained, 0 lost, p = 1/4
    assert (nums["beta_gained"], nums["beta_lost"], nums["beta_p"]) == (2, 0, 0.25)
    with pytest.raises(ValueError, match="attrs"):
        rep.beta_test(two.rename(index={"other": "x"}))


def _labels():
    """Two VAEs, a clean kind and one attack, three images, three reconstructions each."""
    clean = torch.tensor([[1, 1, 1], [2, 2, 2], [0, 0, 1]])
    attack = torch.tensor([[1, 2, 3], [2, 2, 0], [5, 5, 5]])
    return {"A": {"clean": clean, "FGSM 0.1": attack}, "B": {"clean": clean, "FGSM 0.1": clean}}


def test_successful_keeps_every_clean_input():
    keep = rep.successful({"X": torch.tensor([True, False])}, 3)
    assert keep["clean"].tolist() == [True, True, True] and keep["X"].tolist() == [True, False]


def test_consistency_table_by_hand():
    keep = rep.successful({"FGSM 0.1": torch.tensor([True, True, False])}, 3)
    pred_clean, pred_adv = torch.tensor([1, 2, 0]), {"FGSM 0.1": torch.tensor([3, 0, 5])}
    t = rep.consistency_table(_labels(), pred_clean, pred_adv, keep)
    assert t.loc[("A", "clean"), "images"] == 3 and t.loc[("A", "FGSM 0.1"), "images"] == 2
    assert t.loc[("A", "clean"), "single_label"] == pytest.approx(2 / 3)
    assert t.loc[("A", "FGSM 0.1"), "single_label"] == 0
    assert t.loc[("A", "FGSM 0.1"), "mean_distinct"] == pytest.approx(2.5)       # 3 and 2 labels
    assert t.loc[("A", "FGSM 0.1"), "agreement"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    # distinct labels: clean (1, 1, 2) against attacked (3, 2): 5 of 6 pairs higher, 1 tie
    assert t.loc[("A", "FGSM 0.1"), "AUROC distinct"] == pytest.approx(5.5 / 6)
    # 1 - agreement: clean (0, 0, 1/3) against attacked (2/3, 2/3): always higher
    assert t.loc[("A", "FGSM 0.1"), "AUROC 1-agreement"] == pytest.approx(1.0)
    assert math.isnan(t.loc[("A", "clean"), "AUROC distinct"])
    assert rep.CONSISTENCY_COLUMNS["single_label"] in t.rename(columns=rep.CONSISTENCY_COLUMNS).columns


def test_consistency_tests_by_hand():
    keep = rep.successful({"FGSM 0.1": torch.tensor([True, True, False])}, 3)
    pred_clean, pred_adv = torch.tensor([1, 2, 0]), {"FGSM 0.1": torch.tensor([3, 0, 5])}
    t = rep.consistency_tests(_labels(), pred_clean, pred_adv, keep, n_boot=50)
    a = t.loc[("A", "FGSM 0.1")]
    # the two fooled images had one label each when clean, 3 and 2 attacked: 2 lost, none gained
    assert a["images"] == 2 and (a["single clean"], a["single attacked"]) == (1.0, 0.0)
    assert (a["lost"], a["gained"], a["p single"]) == (2, 0, 0.25)
    assert a["distinct increase"] == pytest.approx(1.5)                  # (3 - 1 + 2 - 1) / 2
    assert a["AUROC distinct"] == pytest.approx(5.5 / 6)                 # as consistency_table's
    assert a["agreement minus distinct"] == pytest.approx(1 - 5.5 / 6)
    for col in ("distinct increase", "AUROC distinct", "agreement minus distinct"):
        assert a[f"{col}_lo"] <= a[col] <= a[f"{col}_hi"]
    assert t.loc[("B", "FGSM 0.1"), "p single"] == 1.0                    # attacked = clean: no discordant image
    shown = rep.tests_table(t)
    assert shown.loc[("A", "FGSM 0.1"), "lost / gained"] == "2 / 0"
    assert shown.loc[("A", "FGSM 0.1"), "McNemar p"] == "0.250"
    assert shown.loc[("A", "FGSM 0.1"), "single label, clean -> attacked"] == "1.00 -> 0.00"
    nums = rep.tests_numbers(t)
    assert (nums["single_p_max"], nums["single_p_max_vae"], nums["single_p_max_kind"]) == (1.0, "B", "FGSM 0.1")
    assert nums["single_p_same_other"] == 0.25 and math.isnan(nums["single_p_rest_max"])  # no other attack
    assert nums["agree_gap_kind"] == "FGSM 0.1"


def _toy_labels(n, lose):
    """VAEs A and B, ``n`` images: one label for every clean image; each attack (FGSM 0.1, L-BFGS)
    gives three labels to the first ``lose`` images and keeps one for the rest."""
    one = torch.ones(n, 3, dtype=torch.long)
    adv = one.clone()
    adv[:lose] = torch.tensor([1, 2, 3])
    return {v: {"clean": one, "FGSM 0.1": adv, "L-BFGS": adv} for v in "AB"}


@functools.lru_cache(maxsize=None)
def _toy_tests(n, lose, clean_label=1):
    """:func:`consistency_tests` of :func:`_toy_labels`, every attack successful; the classifier
    labels clean images ``clean_label`` and attacked ones 2."""
    labels = _toy_labels(n, lose)
    keep = rep.successful({k: torch.ones(n, dtype=torch.bool) for k in ("FGSM 0.1", "L-BFGS")}, n)
    pred_adv = {k: torch.full((n,), 2) for k in ("FGSM 0.1", "L-BFGS")}
    return rep.consistency_tests(labels, torch.full((n,), clean_label), pred_adv, keep, n_boot=200)


def _consistency(single, distinct, auroc_d, auroc_a):
    """A consistency table for VAEs "A" and "B" and kinds clean, FGSM 0.1, L-BFGS from per-row values."""
    idx = pd.MultiIndex.from_product([["A", "B"], ["clean", "FGSM 0.1", "L-BFGS"]], names=["VAE", "input"])
    return pd.DataFrame({"single_label": single, "mean_distinct": distinct, "AUROC distinct": auroc_d,
                         "AUROC 1-agreement": auroc_a}, index=idx)


NAN = np.nan
GOOD = _consistency([0.9, 0.5, 0.4, 0.95, 0.6, 0.5], [1.1, 2.0, 1.5, 1.05, 1.8, 1.4],
                    [NAN, 0.95, 0.7, NAN, 0.9, 0.6], [NAN, 0.96, 0.99, NAN, 0.9, 0.95])


def test_seed_comparison_and_summary_and_auroc_numbers():
    c = rep.seed_comparison(GOOD)
    assert c.loc["clean", "seed study (full MNIST, read off its figure)"] == rep.SEED_STUDY["clean"]
    assert c.loc["L-BFGS", "this chapter, VAE B"] == 0.5 and c.index.name == "single-label share"
    s = rep.summary_table(GOOD)
    assert list(s.columns) == ["single label, VAE A", "single label, VAE B", "mean distinct labels",
                               "AUROC distinct", "AUROC 1-agreement"]
    assert s.loc["L-BFGS", "single label, VAE B"] == 0.5 and s.loc["FGSM 0.1", "AUROC distinct"] == 0.95
    nums = rep.auroc_numbers(GOOD, ["FGSM 0.1", "L-BFGS"])
    assert nums == {"auroc_best": 0.95, "auroc_best_kind": "FGSM 0.1", "auroc_worst": 0.7,
                    "auroc_worst_kind": "L-BFGS", "auroc_agree_min": 0.96}


def test_population_table_and_numbers_by_hand():
    one = torch.tensor([[1, 1, 1]])
    two = torch.tensor([[1, 2, 1]])
    labels = {"A": {"clean": torch.cat([one, one, one, two]),       # 3 of 4 single
                    "FGSM 0.1": torch.cat([one, two, two, two]),    # 1 of 4; 0 of the 2 successful
                    "FGSM 0.2": torch.cat([one, one, two, two]),    # 2 of 4; 1 of 2 successful
                    "L-BFGS": torch.cat([two, two])}}               # 0 of 2
    keep = {"clean": torch.ones(4, dtype=torch.bool), "FGSM 0.1": torch.tensor([False, True, True, False]),
            "FGSM 0.2": torch.tensor([True, False, True, False]), "L-BFGS": torch.tensor([True, True])}
    t = rep.population_table(labels, keep, (0.1, 0.2))
    every, succ = "every attacked input", "successful attacks only"
    assert ("A", "clean", succ) not in t.index
    assert t.loc[("A", "clean", every), "single-label share"] == 0.75
    assert t.loc[("A", "FGSM 0.2", succ), "images"] == 2 and t.loc[("A", "FGSM 0.2", succ), "single-label share"] == 0.5
    lo, hi = rv.stats.wilson_interval(1, 4)
    assert t.loc[("A", "FGSM 0.1", every), "95% CI"] == f"[{lo:.2f}, {hi:.2f}]"
    assert t.loc[("A", "FGSM 0.1", every), "seed study"] == rep.SEED_STUDY["FGSM"]
    assert math.isnan(t.loc[("A", "FGSM 0.1", succ), "seed study"])
    nums = rep.population_numbers(t, (0.1, 0.2))
    # shares 0.25, 0.0 (FGSM 0.1), 0.5, 0.5 (FGSM 0.2): 0.5 is closest to the seed's 0.61, first found
    assert (nums["seed_fgsm_kind"], nums["seed_fgsm_pop"], nums["seed_fgsm_share"]) == ("FGSM 0.2", every, 0.5)
    assert nums["fgsm_all_range"] == "0.25-0.50" and nums["fgsm_succ_range"] == "0.00-0.50"
    assert nums["lbfgs_single_all"] == 0 and nums["lbfgs_ratio_ours"] == 0
    assert nums["lbfgs_gap"] == pytest.approx(0.735) and nums["lbfgs_expected"] == 0
    assert nums["lbfgs_gap_baseline"] == pytest.approx(0.0)
    assert nums["lbfgs_ratio_seed"] == pytest.approx(0.735 / 0.935)


def test_latent_auroc_table_direction():
    stats = {"clean": {"kl": np.array([2.0, 3.0]), "mu_norm": np.array([1.0, 1.0]),
                       "enc_var": np.array([0.1, 0.2]), "rec_mse": np.array([0.0, 0.0])},
             "PGD 0.3": {"kl": np.array([1.0]), "mu_norm": np.array([1.0]),
                         "enc_var": np.array([0.15]), "rec_mse": np.array([1.0])}}
    t = rep.latent_auroc_table(stats)
    assert list(t.index) == ["PGD 0.3"]
    row = t.loc["PGD 0.3"]
    assert row["KL to prior (nats)"] == 0.0 and row["||mu(x)||"] == 0.5
    assert row["mean encoder variance"] == 0.5 and row["reconstruction MSE"] == 1.0


def _kl_stats(n, shift, seed=0):
    """Latent statistics of ``n`` clean images and of their attacked versions, whose KL is lower by
    ``shift`` nats on average (plus noise); the first image's attack failed (it has no attacked
    statistics)."""
    rng = np.random.default_rng(seed)
    kl = rng.normal(5.0, 1.0, n)
    adv = kl - shift + rng.normal(0.0, 1.0, n)
    other = {s: np.zeros(n) for s in ("mu_norm", "enc_var", "rec_mse")}
    stats = {"clean": {"kl": kl, **other}, "PGD 0.3": {"kl": adv[1:], **{s: v[1:] for s, v in other.items()}}}
    success = {"PGD 0.3": torch.tensor([False] + [True] * (n - 1))}
    return stats, success


@pytest.mark.parametrize("n, below", [(6, False), (200, True)])
def test_kl_claim_needs_an_interval_below_one_half(n, below):
    stats, success = _kl_stats(n, shift=0.5)
    t = rep.latent_auroc_table(stats, success, n_boot=200, seed=0)
    lo, hi = t.attrs["kl_interval"]["PGD 0.3"]
    assert lo <= t.loc["PGD 0.3", "KL to prior (nats)"] <= hi
    assert t.loc["PGD 0.3", "KL to prior (nats)"] < 0.5                    # the point is below 0.5 either way
    assert rep.kl_numbers(t) == {"kl_auroc_hi_max": hi, "kl_auroc_hi_kind": "PGD 0.3"}
    claim = _claims(latent_auroc=t, kinds=["PGD 0.3"], tests=_toy_tests(200, 40).rename(
        index={"L-BFGS": "PGD 0.3"}))[7]
    assert claim.holds == below
    with pytest.raises(ValueError, match="kl_interval"):
        rep.kl_numbers(rep.latent_auroc_table(stats))


def test_latent_means_and_nearest_centroids():
    vae = _IdentityVAE()
    x_test = _hot([0, 0, 1, 1])                                      # means (1, 0) and (0, 1)
    y_test = torch.tensor([0, 0, 1, 1])
    adv = {"L-BFGS": _hot([0, 1, 0])}
    success = {"L-BFGS": torch.tensor([True, True, False])}
    mu_test, mu_adv = rep.latent_means(vae, x_test, adv, success, "cpu")
    assert mu_test.shape == (4, 2) and mu_adv["L-BFGS"].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    # eight more test digits at the origin give classes 2..9 their centroid (0, 0)
    mu_test = np.concatenate([mu_test, np.zeros((8, 2))])
    y_all = torch.tensor([0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    y = torch.tensor([0, 0, 1])
    pred_adv = {"L-BFGS": torch.tensor([3, 1, 1])}
    mu_adv = {"L-BFGS": np.array([[0.9, 0.0], [0.0, 2.0]])}
    t = rep.nearest_centroid_table(mu_test, y_all, mu_adv, y, pred_adv, success)
    # image 0 (true 0, now 3) is nearest class 0's centroid (1, 0): true class; image 1 (true 0,
    # now 1) is nearest class 1's (0, 1): adversarial class
    assert t.loc["L-BFGS"].tolist() == [0.5, 0.5, 0.0]
    assert t.attrs["n"] == {"L-BFGS": 2}
    lo, hi = rv.stats.wilson_interval(1, 2)
    assert rep.nearest_numbers(t, "L-BFGS") == {"near_true_lbfgs": 0.5, "near_true_lbfgs_lo": lo,
                                                "near_true_lbfgs_hi": hi, "near_adv_pgd": 0.5}


def _scores(agree, kl, label):
    return {"1 - agreement": np.array(agree, float), "low KL": np.array(kl, float), "label": np.array(label)}


def test_adaptive_evaluation_by_hand():
    y = torch.tensor([0, 0, 0, 0])
    clean = _scores([0.0, 0.1, 0.0, 0.2], [-5, -4, -5, -4], [0, 0, 0, 0])
    scores = {
        (0.3, "oblivious PGD"): _scores([0.9, 0.8, 0.7, 0.9], [-1, -1, -2, -1], [1, 1, 1, 0]),
        (0.3, "consistency-aware"): _scores([0.0, 0.1, 0.4, 0.0], [-1, -1, -1, -1], [1, 1, 1, 1]),
        (0.3, "KL-aware"): _scores([0.9, 0.9, 0.9, 0.9], [-5, -5, -5, -5], [1, 0, 0, 0]),
    }
    a = rep.adaptive_evaluation(clean, scores, y, n_boot=50, seed=0)
    assert a.eps_top == 0.3 and list(a.table.index.names) == ["L-inf eps", "attacker"]
    obl, cons_aware, kl_aware = (a.numbers[(0.3, k)] for k in ("oblivious PGD", "consistency-aware", "KL-aware"))
    assert obl["fools f"][0] == 0.75 and cons_aware["fools f"][0] == 1.0 and kl_aware["fools f"][0] == 0.25
    assert obl["fools f"][1:] == pytest.approx(rv.stats.wilson_interval(3, 4))
    assert obl["fools f and consistency"][0] == 0.0 and cons_aware["fools f and consistency"][0] == 1.0
    assert obl["AUROC consistency"][0] == 1.0 and obl["AUROC low KL"][0] == 1.0
    # consistency-aware scores (0, .1, .4, 0) against clean (0, .1, 0, .2)
    assert cons_aware["AUROC consistency"][0] == pytest.approx(rv.consistency.detection_auroc(
        clean["1 - agreement"], scores[(0.3, "consistency-aware")]["1 - agreement"]))
    assert kl_aware["AUROC low KL"][0] == pytest.approx(0.25)     # -5 vs (-5, -4, -5, -4): ties and losses
    assert a.drop["low KL"][0] > 0 and a.drop["1 - agreement"][0] >= 0
    assert a.table.loc[(0.3, "oblivious PGD"), "fools f"].startswith("0.75 [")
    nums = rep.adaptive_numbers(a)
    assert nums["adaptive_auroc_obl"] == 1.0 and nums["adaptive_auroc_kl"] == pytest.approx(0.25)
    assert nums["adaptive_fool_kl"] == 0.25 and nums["adaptive_evade_cons"] == 1.0
    assert (nums["adaptive_drop_lo"], nums["adaptive_drop_hi"]) == tuple(a.drop["1 - agreement"])


@pytest.mark.filterwarnings("ignore:All-NaN slice")
def test_adaptive_evaluation_with_nothing_fooled_is_a_dash():
    y = torch.tensor([0, 0])
    clean = _scores([0.0, 0.1], [-5, -4], [0, 0])
    miss = _scores([0.9, 0.8], [-1, -1], [0, 0])
    scores = {(0.1, k): miss for k in ("oblivious PGD", "consistency-aware", "KL-aware")}
    a = rep.adaptive_evaluation(clean, scores, y, n_boot=5, seed=0)
    assert math.isnan(a.numbers[(0.1, "KL-aware")]["AUROC low KL"][0])
    assert a.table.loc[(0.1, "KL-aware"), "AUROC low KL"] == rv.tables.DASH


def test_latent_attack_table_and_numbers_by_hand():
    clf, vae = _PixelClassifier(), _IdentityVAE()
    x_src, y_src = _hot([0, 0]), torch.tensor([0, 0])
    x_tgt, y_tgt = _hot([1, 1]), torch.tensor([1, 1])
    t = rep.latent_attack_table(clf, vae, x_src, y_src, x_tgt, y_tgt, {1.0: x_src, 2.0: x_tgt},
                                {1.0: x_src, 2.0: x_tgt})
    assert t.index.name == "L2 radius"
    assert t.loc[1.0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert t.loc[2.0].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert t.attrs["n"] == 2
    assert t.attrs["hits"] == {1.0: {"latent": [False, False], "pgd": [False, False]},
                               2.0: {"latent": [True, True], "pgd": [True, True]}}
    assert rep.latent_attack_numbers(t) == {"pgd_full_eps": 2.0, "pgd_at_full": 1.0, "latent_at_pgd": 1.0,
                                            "source_at_pgd": 0.0, "latent_pgd_p": 1.0}
    never = t.assign(**{t.columns[2]: [0.0, 0.5]})
    assert rep.latent_attack_numbers(never)["pgd_full_eps"] == 2.0        # the largest radius
    assert math.isnan(rep.latent_attack_numbers(never)["latent_pgd_p"]) and rep.latent_pgd_test(never) is None


def test_first_radius_counts_float32_shares_that_reach_the_level():
    share = torch.tensor([True] * 18 + [False] * 2).float().mean().item()    # 18 of 20 in float32
    assert share < 0.9
    t = pd.DataFrame({"a": [0.0, 0.0], "b": [0.0, 0.0], "pgd": [share, 1.0]}, index=[3.0, 4.0])
    assert list(rep._first_radius(t, 2, 0.9)) == [3.0, 4.0]
    assert list(rep._first_radius(t.assign(pgd=[0.85, 1.0]), 2, 0.9)) == [4.0]


def test_damage_table_and_numbers_by_hand():
    clf, vae = _PixelClassifier(), _IdentityVAE()
    x, y = _hot([0, 0]), torch.tensor([0, 0])
    noise = x + 0.1 * _hot([3, 3])
    t = rep.damage_table(clf, vae, x, y, {1.0: _hot([2, 0])}, {1.0: noise})
    assert t.loc[1.0].tolist() == pytest.approx([math.sqrt(2) / 2, 0.1, 0.5, 0.5])
    assert t.attrs["n"] == 2 and t.attrs["changes"] == {1.0: {"reconstruction": [True, False],
                                                             "input": [True, False]}}
    nums = rep.damage_numbers(t, vae, x, _hot([1, 1]), (1.0,))
    assert nums["d_other"] == pytest.approx(math.sqrt(2)) and nums["damage_eps_max"] == 1.0
    assert nums["damage_ratio"] == pytest.approx(math.sqrt(2) / 2 / 0.1)
    assert (nums["damage_flip"], nums["damage_input_flip"]) == (0.5, 0.5)
    lo, hi = rv.stats.wilson_interval(1, 2)
    assert nums["damage_flip_ci"] == rv.tables.interval(0.5, lo, hi) and nums["damage_p"] == 1.0


def _firsts(share, n):
    """``n`` booleans, the first ``round(share * n)`` true."""
    k = round(share * n)
    return [True] * k + [False] * (n - k)


def _latent(rows, index, n=20):
    """A latent_attack_table-like frame over ``n`` attacked images; each attack hits the first images."""
    t = pd.DataFrame(np.array(rows), index=index)
    t.attrs["n"] = n
    t.attrs["hits"] = {eps: {"latent": _firsts(r[0], n), "pgd": _firsts(r[2], n)} for eps, r in zip(index, rows)}
    return t


def _damage(rows, index, n=20):
    """A damage_table-like frame over ``n`` images; reconstructions and inputs change class on the first images."""
    t = pd.DataFrame(np.array(rows), index=index)
    t.attrs["n"] = n
    t.attrs["changes"] = {eps: {"reconstruction": _firsts(r[2], n), "input": _firsts(r[3], n)}
                          for eps, r in zip(index, rows)}
    return t


def _clean(shares, n=1000):
    """A clean_consistency-like table for VAEs A and B; each gives a single label to the first test images."""
    t = pd.DataFrame({"single label (test set)": shares}, index=["A", "B"])
    t.attrs["single"] = {v: _firsts(s, n) for v, s in zip("AB", shares)}
    return t


def _near(share, n=50):
    """A nearest_centroid_table-like frame: ``share`` of ``n`` L-BFGS encodings nearest their true class."""
    t = pd.DataFrame({"true class": [share]}, index=["L-BFGS"])
    t.attrs["n"] = {"L-BFGS": n}
    return t


def test_latent_claim_is_judged_on_the_interval_not_the_point():
    idx = pd.Index([1.0, 2.0], name="L2 radius")
    # 6 of 20 fooled (0.30): Wilson 95% from 0.145, above 0.1; 4 of 20 (0.20): from 0.081
    holds = _claims(latent=_latent([[0.3, 0.9, 0.5, 1.0], [0.95, 0.2, 1.0, 0.1]], idx))[14]
    fails = _claims(latent=_latent([[0.2, 0.9, 0.5, 1.0], [0.95, 0.2, 1.0, 0.1]], idx))[14]
    assert holds.holds and holds.numbers == "radii [1.0] (20 images)"
    assert not fails.holds
    # the same share on 5 images is not enough evidence (1 of 5: Wilson from 0.036)
    assert not _claims(latent=_latent([[0.2, 0.9, 0.5, 1.0], [0.95, 0.2, 1.0, 0.1]], idx, n=5))[14].holds
    with pytest.raises(ValueError, match="attrs"):
        _claims(latent=pd.DataFrame(np.array([[0.3, 0.9, 0.5, 1.0]]), index=pd.Index([1.0])))


def _claim_inputs(**change):
    """Inputs on which every one of chapter 3's claims holds, with ``change`` replacing some."""
    idx = lambda *radii: pd.Index(radii, name="L2 radius")  # noqa: E731
    num = {(0.3, "oblivious PGD"): {"AUROC consistency": (0.98, 0.9, 1.0), "AUROC low KL": (1.0, 1.0, 1.0)},
           (0.3, "consistency-aware"): {"AUROC consistency": (0.7, 0.5, 0.8)},
           (0.3, "KL-aware"): {"AUROC low KL": (0.7, 0.6, 0.8)}}
    latent_auroc = pd.DataFrame({"KL to prior (nats)": [0.2, 0.4]}, index=["FGSM 0.1", "L-BFGS"])
    latent_auroc.attrs["kl_interval"] = {"FGSM 0.1": (0.1, 0.3), "L-BFGS": (0.3, 0.48)}
    inputs = dict(
        tests=_toy_tests(200, 40), kinds=["FGSM 0.1", "L-BFGS"], n_samples=10,
        cross=pd.DataFrame({"robust accuracy, robustvae": [0.5, 0.3], "robust accuracy, torchattacks": [0.5, 0.3],
                            "max |image difference|": [0.0, 0.0]}, index=["FGSM", "PGD (last iterate)"]),
        check_eps=0.1,
        adaptive=rep.Adaptive(pd.DataFrame(), num, {"1 - agreement": np.array([0.2, 0.4]),
                                                    "low KL": np.array([0.1, 0.4])}, 0.3),
        latent_auroc=latent_auroc,
        latent=_latent([[0.1, 1.0, 0.5, 1.0], [0.5, 0.9, 1.0, 0.8], [0.95, 0.2, 1.0, 0.1]], idx(1.0, 2.0, 4.0)),
        damage=_damage([[2.0, 0.5, 0.2, 0.0], [4.0, 1.0, 0.7, 0.05]], idx(1.0, 2.0)),
        attack=pd.DataFrame({"classifier accuracy": [0.5, 0.0]}, index=["FGSM 0.1", "PGD 0.3"]),
        pgd_eps=0.3,
        clean=_clean([0.87, 0.92]),
        beta_small=0.5,
        near=_near(0.8),
    )
    inputs.update(change)
    return inputs


def _claims(**change):
    claims = rv.Claims("mnist-5k", strict=False)
    rep.check_claims(claims, **_claim_inputs(**change))
    return claims.claims


def test_check_claims_all_hold_in_order_with_their_kinds():
    c = _claims()
    assert len(c) == 16 and all(x.holds for x in c)
    assert [x.kind for x in c].count("check") == 4
    assert c[0].text == ("every attack but FGSM 0.1 lowers the share of images whose 10 reconstructions get one "
                         "label, on the images it fooled against the same images clean (both VAEs; exact McNemar, "
                         "p < 0.05 for each)")
    p_left_out = f"{_toy_tests(200, 40).loc[('A', 'FGSM 0.1'), 'p single']:.2g}"
    assert c[0].numbers.startswith("largest p ") and c[0].numbers.endswith(f"left out: FGSM 0.1, p {p_left_out} / "
                                                                           f"{p_left_out}")
    assert all("(" in x.text and ("p < 0.05" in x.text or "interval" in x.text)
               for i, x in enumerate(c, 1) if i in (1, 2, 3, 4, 8, 9, 13, 14, 16))
    assert c[4].text.startswith("robustvae's FGSM and PGD (last iterate) reproduce torchattacks' images at eps 0.1")
    assert c[5].numbers == "0.980 -> 0.700, drop in [0.200, 0.400]"
    assert c[7].numbers == "highest: L-BFGS, AUROC 0.400 [0.300, 0.480]"
    assert c[8].numbers == "L2 2: PGD 20 of 20, latent 10 of 20, p 0.00098"   # 10 lost, none gained: 2 ** -10
    assert c[10].text == "PGD at eps 0.3 leaves accuracy below 0.05"
    assert c[12].numbers == "0.920 vs 0.870; 50 images gained, 0 lost, p 8.9e-16"
    lo, hi = rv.stats.wilson_interval(40, 50)
    assert c[13].numbers == f"0.80 [{lo:.2f}, {hi:.2f}] of 50"
    assert c[14].numbers == "radii [2.0] (20 images)"
    assert c[15].numbers == "reconstruction 0.70 [0.48, 0.85], input 0.05 [0.01, 0.24] (20 images), p 0.00012"
    # (14 reconstructions and 1 input, that one among the 14: 13 discordant, p = 2 ** -13)
    assert len(_claims(cross=None)) == 15


@pytest.mark.parametrize("change, failing", [
    (dict(tests=_toy_tests(5, 1)), [1, 2, 3]),
    (dict(tests=_toy_tests(200, 40, clean_label=3)), [4]),
    (dict(latent=_latent([[0.9, 0.5, 0.95, 1.0]], pd.Index([1.0]))), [9, 15]),
    (dict(damage=_damage([[0.4, 0.5, 0.3, 0.2]], pd.Index([1.0]))), [10, 16]),
    (dict(clean=_clean([0.92, 0.87])), [12, 13]),
    (dict(near=_near(0.5),
          cross=pd.DataFrame({"robust accuracy, robustvae": [0.5], "robust accuracy, torchattacks": [0.45],
                              "max |image difference|": [0.0]}, index=["FGSM"])), [5, 14]),
])
def test_check_claims_fail_where_the_numbers_say_so(change, failing):
    c = _claims(**change)
    assert [i for i, x in enumerate(c, 1) if not x.holds] == failing


# Each finding is judged on a test or an interval: the same effect on few images fails, on many holds.
@pytest.mark.parametrize("n, holds", [(5, False), (200, True)])
def test_consistency_findings_need_enough_images(n, holds):
    # a fifth of the images lose their single label and gain two more labels: McNemar 1 of 5 lost
    # (p = 0.5) against 40 of 200; the increase and the AUROC's lower ends reach 0 and 0.5 on 5
    t = _toy_tests(n, n // 5)
    assert t.loc[("A", "L-BFGS"), "AUROC distinct"] == pytest.approx(0.6)      # the same point either way
    assert [x.holds for x in _claims(tests=t)[:3]] == [holds] * 3


def test_agreement_claim_fails_only_when_an_interval_lies_below_zero():
    # clean images whose reconstructions all disagree with the classifier's own label score 1 - agreement = 1:
    # the agreement score ranks them above every attacked image, far below distinct labels
    worse = _toy_tests(200, 40, clean_label=3)
    assert (worse["agreement minus distinct_hi"] < 0).all()
    assert not _claims(tests=worse)[3].holds
    same = _toy_tests(200, 40)
    assert (same["agreement minus distinct_hi"] >= 0).all() and _claims(tests=same)[3].holds


@pytest.mark.parametrize("n, holds", [(5, False), (20, True)])
def test_latent_pgd_claim_is_a_paired_test(n, holds):
    # PGD hits every image, the latent attack 40% of them: 3 of 5 discordant (p = 1/8) or 12 of 20 (p < 0.001)
    t = _latent([[0.4, 1.0, 1.0, 0.5]], pd.Index([3.0], name="L2 radius"), n=n)
    test = rep.latent_pgd_test(t)
    assert test["eps"] == 3.0 and test["n"] == n and (test["p"] < 0.05) == holds
    assert _claims(latent=t)[8].holds == holds


@pytest.mark.parametrize("n, holds", [(10, False), (1000, True)])
def test_beta_claim_is_a_paired_test(n, holds):
    # the smaller beta single-labels 1 more of 10 images (p = 1/2), or 50 more of 1000 (p < 1e-14)
    c = _claims(clean=_clean([0.8, 0.9], n=n) if n == 10 else _clean([0.87, 0.92], n=n))
    assert c[12].holds == holds


@pytest.mark.parametrize("n, holds", [(5, False), (50, True)])
def test_nearest_claim_is_judged_on_the_wilson_interval(n, holds):
    # 0.8 of 5 (Wilson from 0.38) against 0.8 of 50 (from 0.67)
    assert _claims(near=_near(0.8, n=n))[13].holds == holds


@pytest.mark.parametrize("n, holds", [(5, False), (20, True)])
def test_damage_claim_is_a_paired_test(n, holds):
    # 0.6 of the reconstructions change class, no input does: 3 of 5 (p = 1/8) or 12 of 20 (p < 0.001)
    t = _damage([[2.0, 0.5, 0.6, 0.0]], pd.Index([1.0], name="L2 radius"), n=n)
    test = rep.damage_test(t)
    assert test["reconstruction"][0] == 0.6 and test["input"][0] == 0.0 and test["n"] == n
    assert _claims(damage=t)[15].holds == holds
    with pytest.raises(ValueError, match="changes"):
        rep.damage_test(pd.DataFrame(np.array([[2.0, 0.5, 0.6, 0.0]]), index=pd.Index([1.0])))

"""Tests of robustvae.reports.ood: chapter 2's test sets, tables and quoted numbers, on tiny
synthetic scores whose AUROCs are known by hand (no training, no dataset loading)."""

import numpy as np
import pandas as pd
import pytest
import torch

from robustvae import ood
from robustvae.models import VAE
from robustvae.reports import ood as report
from robustvae.tables import DASH

SETS = ["in-distribution", "MNIST", "uniform noise"]
PARAMS = dict(likelihood="bernoulli", beta=1.0, clf_epochs=1, vae_epochs=1, latent_dim=2, fashion_n_train=10,
              fashion_vae_epochs=1, fashion_clf_epochs=1, n_test=10, n_synthetic=5, iwae_k=2, regret_steps=1,
              n_boot=10, background_rate=0.0, ic_decoders=())


def _scores():
    """Score "z-high" flags every OOD set perfectly (AUROC 1), "a-low" never (AUROC 0)."""
    s_in, s_out = torch.arange(4.0), torch.arange(4.0) + 10
    return {
        "z-high": {"in-distribution": s_in, "MNIST": s_out, "uniform noise": s_out},
        "a-low": {"in-distribution": s_out, "MNIST": s_in, "uniform noise": s_in},
    }


def _auroc_frame(values: dict[str, list[float]], sets=("Fashion-MNIST", "uniform noise")) -> pd.DataFrame:
    return pd.DataFrame(values, index=list(sets)).T


def test_check_parameters_accepts_good_values_and_names_the_bad_one():
    report.check_parameters({**PARAMS, "beta": 0.0, "unrelated": "ignored"})
    with pytest.raises(ValueError, match="likelihood"):
        report.check_parameters({**PARAMS, "likelihood": "poisson"})
    with pytest.raises(ValueError, match="'iwae_k'"):
        report.check_parameters({**PARAMS, "iwae_k": 0})
    with pytest.raises(ValueError, match="'beta'"):
        report.check_parameters({**PARAMS, "beta": -1.0})
    with pytest.raises(ValueError, match="must not exceed n_test"):
        report.check_parameters({**PARAMS, "n_synthetic": 11})


def test_ood_sets_are_in_distribution_first_and_sized(monkeypatch):
    def fake_load(name, split):
        assert split == "test"
        level = 0.25 if name == "a" else 0.75
        return torch.full((20, 1, 28, 28), level), torch.arange(20) % 2

    monkeypatch.setattr(report, "load_dataset", fake_load)
    sets = report.ood_sets("a", "b", "B", n_test=6, n_synthetic=3, seed=0)
    assert list(sets) == ["in-distribution", "B", "uniform noise", "Gaussian noise", "constant", "inverted",
                          "rotated/flipped", "sklearn 8x8 digits"]
    assert [len(v) for v in sets.values()] == [6, 6, 3, 3, 3, 3, 3, 3]
    assert torch.all(sets["in-distribution"] == 0.25) and torch.all(sets["B"] == 0.75)
    assert torch.allclose(sets["inverted"], torch.full((3, 1, 28, 28), 0.75))


def test_models_table_puts_each_direction_on_its_row(monkeypatch):
    import robustvae.training as training

    monkeypatch.setattr(report, "load_dataset", lambda name, split: (torch.zeros(2, 1, 28, 28), torch.zeros(2)))
    monkeypatch.setattr(training, "accuracy", lambda clf, x, y: clf)
    monkeypatch.setattr(training, "vae_metrics", lambda vae, x: {"elbo": vae})
    t = report.models_table("mnist", 0.91234, -80.12345, 0.8, -200.0, torch.zeros(1, 1, 28, 28))
    assert list(t.index) == ["direction 1", "direction 2"]
    assert list(t["in-distribution"]) == ["mnist", "fashion-mnist"]
    assert list(t["classifier test accuracy"]) == [0.912, 0.8]
    assert list(t["VAE test ELBO (nats)"]) == [-80.123, -200.0]


def test_auroc_matrix_keeps_the_order_of_scores_and_sets():
    auroc = report.auroc_matrix(ood.metrics_table(_scores(), "in-distribution"))
    assert list(auroc.index) == ["z-high", "a-low"] and list(auroc.columns) == ["MNIST", "uniform noise"]
    assert auroc.loc["z-high"].tolist() == [1.0, 1.0] and auroc.loc["a-low"].tolist() == [0.0, 0.0]
    assert list(report.auroc_table(auroc).columns) == ["MNIST", "uniform"]


def test_direction1_numbers_skip_the_classifier_and_count_sets_below_chance():
    names = [*report.LATENT, report.LIKE, report.MSP, report.ENERGY]
    values = {n: [0.6, 0.7] for n in names}
    values.update({report.LIKE: [0.9, 0.95], report.MSP: [0.99, 0.99], "Mahalanobis(mu)": [0.8, 0.7],
                   "mean sigma^2(x)": [0.4, 0.3], "KL(q(z|x) || p(z))": [0.6, 0.2]})
    found = report.direction1_numbers(_auroc_frame(values), "Fashion-MNIST")
    assert found["best1_name"] == report.LIKE and found["best1_auroc"] == 0.9
    assert found["latent1_max"] == 0.8 and found["msp1_auroc"] == 0.99 and found["like1_auroc"] == 0.9
    assert found["kl1_noise"] == 0.2 and found["var1_below"] == 2


def test_direction2_numbers_find_the_ceiling_distance_worst_set_and_the_ceiling_auroc():
    names = [report.LIKE, "-ELBO", report.IC, report.CEIL, "reconstruction MSE", report.MSP, report.ENERGY]
    a1 = _auroc_frame({n: [0.5, 0.5] for n in names} | {report.CEIL: [0.9, 0.7], report.IC: [0.3, 0.5]})
    a2 = _auroc_frame({n: [0.5, 0.5] for n in names} | {report.CEIL: [0.97, 0.8], report.LIKE: [0.1, 0.9]},
                      sets=("MNIST", "uniform noise"))
    # grey images have the higher Bernoulli entropy: the ceiling's height alone ranks every
    # binary (MNIST) image as less OOD than every grey one
    sets2 = {"in-distribution": torch.full((3, 1, 28, 28), 0.5), "MNIST": torch.ones(4, 1, 28, 28)}
    found = report.direction2_numbers(a1, a2, "Fashion-MNIST", sets2)
    assert found["ceiling_auroc"] == 0.0
    assert found["like2_auroc"] == 0.1 and found["ceil2_auroc"] == 0.97 and found["ic1_auroc"] == 0.3
    assert found["ceil_min"] == 0.7 and found["ceil_min_set"] == "uniform noise"
    a2.loc[report.CEIL, "MNIST"] = 0.6  # now direction 2 holds the lowest
    found = report.direction2_numbers(a1, a2, "Fashion-MNIST", sets2)
    assert found["ceil_min"] == 0.6 and found["ceil_min_set"] == "MNIST"


def test_regret_numbers_and_the_paper_table():
    s_in, s_out = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0])
    scores2 = {n: {"in-distribution": s_out, "MNIST": s_in} for n in (report.LIKE, report.IC, report.CEIL)}
    regret = {"in-distribution": s_in, "MNIST": s_out}
    pair = report.pair_metrics(scores2, regret, n_boot=20, seed=0)
    assert list(pair) == ["-log p(x)", "Likelihood Regret", "input complexity", "Bernoulli-ceiling distance"]
    found = report.regret_numbers(pair, regret)
    assert found["regret_auroc"] == found["regret_lo"] == found["regret_hi"] == 1.0
    assert found["like2_hi"] == 0.0
    assert found["regret_in_median"] == 2.0 and found["regret_out_median"] == 20.0
    table = report.paper_table(pair, regret_steps=7)
    assert table.index.name == "Fashion-MNIST vs MNIST" and list(table.index) == list(report.PUBLISHED)
    col = table["this book: AUROC [95%]"]
    assert col["likelihood ratio, background model"] == "not run"
    assert col["Likelihood Regret"].startswith("1.000 [1.000") and col["-log p(x)"].startswith("0.000")
    assert table.loc["Likelihood Regret", "this book: model"] == "VAE, posterior fit, 7 steps"
    assert table.loc["input complexity", "published AUROC"] == DASH


def test_headline_table_writes_each_metric_with_its_interval():
    scores = _scores()
    t = report.headline_table(scores, scores, "mnist", "MNIST", n_boot=10, seed=0)
    assert list(t.index.names) == ["pair", "score"] and list(t.columns) == ["AUROC", "AUPR", "FPR95"]
    assert t.loc[("mnist vs MNIST", "z-high"), "AUROC"] == "1.000 [1.000, 1.000]"
    assert t.loc[("fashion-mnist vs MNIST", "a-low"), "AUROC"] == "0.000 [0.000, 0.000]"
    assert t.loc[("mnist vs MNIST", "z-high"), "FPR95"] == "0.000 [0.000, 0.000]"
    assert t.loc[("mnist vs MNIST", "a-low"), "FPR95"] == "1.000 [1.000, 1.000]"


def test_full_and_pairs_tables():
    table = ood.metrics_table(_scores(), "in-distribution")
    full = report.full_table(table, table, "mnist")
    assert list(full.index.names) == ["direction", "score", "OOD set"] and len(full) == 8
    assert full.loc[("1: mnist in", "z-high", "MNIST"), "auroc"] == "1.000"
    auroc = report.auroc_matrix(table)
    pairs = report.pairs_auroc_table(auroc, auroc, "mnist", "MNIST")
    assert list(pairs.columns) == ["mnist vs MNIST", "fashion-mnist vs MNIST"]
    assert pairs.loc["z-high"].tolist() == ["1.000", "1.000"] and pairs.loc["a-low"].tolist() == ["0.000", "0.000"]


@pytest.mark.parametrize("rate", [0.0, 0, 0.2, 0.99])
def test_check_parameters_accepts_background_rates_in_zero_one(rate):
    report.check_parameters({**PARAMS, "background_rate": rate})


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, True, "0.2", None])
def test_check_parameters_rejects_background_rates_outside_zero_one(rate):
    with pytest.raises(ValueError, match="'background_rate' must be a number in \\[0, 1\\)"):
        report.check_parameters({**PARAMS, "background_rate": rate})


class _ToyLikelihoodVAE(VAE):
    """A "VAE" whose IWAE estimate is a known function of the image, plus Monte-Carlo noise:
    ``-log p(x) = c * mean(x) + s * relu(mean(right half) - mean(left half)) + noise * randn``.

    The first term is a population statistic (brightness: the Bernoulli ceiling's role), the second
    the semantics (in-distribution images are brighter on the left)."""

    def __init__(self, c: float, s: float, noise: float = 0.01):
        super().__init__(latent_dim=2, width=4, hidden=8)
        self.c, self.s, self.noise = c, s, noise

    def iwae(self, x, k=64, **kw):
        w = x.shape[-1] // 2
        right_minus_left = x[..., w:].mean((1, 2, 3)) - x[..., :w].mean((1, 2, 3))
        nll = self.c * x.mean((1, 2, 3)) + self.s * right_minus_left.clamp(min=0)
        return -(nll + self.noise * torch.randn(len(x)))


def _toy_pair(n=40):
    """In-distribution: brighter (mean about 0.3), bright on the left. OOD: darker (about 0.1), bright on the right."""
    g = torch.Generator().manual_seed(0)

    def images(level, bright_left):
        x = level * (0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)) * torch.ones(n, 1, 28, 28)
        half = (slice(None), slice(None), slice(None), slice(0, 14) if bright_left else slice(14, 28))
        x[half] *= 1.5
        return x.clamp(0, 1)

    return {"in-distribution": images(0.3, True), "MNIST": images(0.1, False), "noise": torch.rand(n, 1, 28, 28)}


def test_background_ratio_fixes_a_toy_likelihood_failure_that_the_background_alone_shares():
    """A toy of Ren et al.'s argument with known answers. The model's likelihood is dominated by
    brightness, so the darker OOD images get the higher likelihood (AUROC near 0: the failure); the
    background model knows brightness only (AUROC near 0 too); their ratio keeps the semantics alone and
    separates the pair perfectly. A flipped sign or swapped models give AUROC 0 here."""
    model, background = _ToyLikelihoodVAE(c=500.0, s=200.0), _ToyLikelihoodVAE(c=500.0, s=0.0)
    sets = _toy_pair()
    ratio = report.background_ratio(model, background, sets, k=4, n_boot=50, seed=0)
    assert list(ratio) == ["-log p(x)", report.BACKGROUND_ALONE, report.BACKGROUND]
    assert ratio["-log p(x)"]["auroc"] < 0.05 and ratio[report.BACKGROUND_ALONE]["auroc"] < 0.05
    assert ratio[report.BACKGROUND]["auroc"] == 1.0 and ratio[report.BACKGROUND]["auroc_lo"] == 1.0
    swapped = report.background_ratio(background, model, sets, k=4, n_boot=0, seed=0)
    assert swapped[report.BACKGROUND]["auroc"] == 0.0
    # the model term is the chapter's own -log p(x): the same scores, scored as the chapter scores them
    own = ood.score_sets({report.LIKE: ood.NegIWAE(model, k=4)}, sets, seed=0)[report.LIKE]
    assert ood.ood_metrics(own["in-distribution"], own["MNIST"], n_boot=50, seed=0) == ratio["-log p(x)"]
    found = report.background_numbers(ratio, 0.2)
    assert found["bg_rate"] == 0.2 and found["bg_auroc"] == found["bg_lo"] == found["bg_hi"] == 1.0
    assert found["bg_raw_auroc"] == ratio["-log p(x)"]["auroc"] and found["bg_raw_hi"] < 0.1
    assert found["bg_alone_auroc"] == ratio[report.BACKGROUND_ALONE]["auroc"]
    text = report.background_interval(ratio)
    assert text.startswith("AUROC 1.000 [1.000, 1.000] vs -log p(x) 0.0")


def test_background_table_sets_the_ratio_beside_the_raw_likelihood_and_the_papers():
    m = lambda a, lo, hi: {"auroc": a, "auroc_lo": lo, "auroc_hi": hi}
    ratio = {"-log p(x)": m(0.2, 0.18, 0.22), report.BACKGROUND: m(0.9, 0.88, 0.92),
             report.BACKGROUND_ALONE: m(0.1, 0.08, 0.12)}
    table = report.background_table(ratio, 0.2)
    assert list(table.index) == ["-log p(x)", report.BACKGROUND]
    assert table.loc[report.BACKGROUND].tolist() == [
        "0.99 (Ren et al. 2019)", "0.900 [0.880, 0.920]", "VAE vs the same VAE trained on 0.2-mutated images"]
    assert table.loc["-log p(x)", "this book: AUROC [95%]"] == "0.200 [0.180, 0.220]"
    # in the book's own run the ratio is not run: the paper table says so, and names no model for it
    s_in, s_out = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0])
    scores2 = {n: {"in-distribution": s_in, "MNIST": s_out} for n in (report.LIKE, report.IC, report.CEIL)}
    pair = report.pair_metrics(scores2, {"in-distribution": s_in, "MNIST": s_out}, n_boot=5, seed=0)
    book = report.paper_table(pair, regret_steps=7)
    assert book.loc[report.BACKGROUND, ["this book: AUROC [95%]", "this book: model"]].tolist() == ["not run", DASH]
    with_ratio = report.paper_table({**pair, report.BACKGROUND: ratio[report.BACKGROUND]}, 7, background_rate=0.3)
    assert with_ratio.loc[report.BACKGROUND, "this book: model"] == "VAE vs the same VAE trained on 0.3-mutated images"
    assert with_ratio.drop(report.BACKGROUND).equals(book.drop(report.BACKGROUND))


@pytest.mark.parametrize("decoders", [(), ("discretized-logistic",), ["continuous-bernoulli", "discretized-logistic"],
                                      ("gaussian", "continuous-bernoulli")])
def test_check_parameters_accepts_extra_decoders(decoders):
    report.check_parameters({**PARAMS, "ic_decoders": decoders})


@pytest.mark.parametrize("decoders", [("bernoulli",), ("poisson",), "discretized-logistic", None,
                                      ("discretized-logistic", "discretized-logistic")])
def test_check_parameters_rejects_unknown_repeated_or_the_chapters_own_decoder(decoders):
    with pytest.raises(ValueError, match="'ic_decoders' must be a tuple of distinct decoder likelihoods"):
        report.check_parameters({**PARAMS, "ic_decoders": decoders})


def test_decoder_vae_keeps_the_config_and_swaps_the_likelihood(monkeypatch):
    """The extra VAEs are the chapter's configuration with another decoder, and nothing else: the
    discretized logistic goes to robustvae.discrete's config (its own cache entry), the others to get_vae."""
    from robustvae import discrete, training

    asked = []
    monkeypatch.setattr(training, "get_vae", lambda cfg, device="auto", retrain=False: asked.append(cfg) or ("m", {}))
    monkeypatch.setattr(discrete, "get_vae", lambda cfg, device="auto", retrain=False: asked.append(cfg) or ("d", {}))
    base = training.VAEConfig(dataset="fashion-mnist", n_train=40, epochs=3, seed=5)
    assert report.decoder_vae(base, "continuous-bernoulli")[0] == "m"
    assert report.decoder_vae(base, "discretized-logistic")[0] == "d"
    cb, dl = asked
    assert type(cb) is training.VAEConfig and cb == training.VAEConfig(
        dataset="fashion-mnist", n_train=40, epochs=3, seed=5, likelihood="continuous-bernoulli")
    assert type(dl) is discrete.DiscretizedVAEConfig and dl.likelihood == "discretized-logistic"
    assert {k: v for k, v in vars(dl).items() if k != "likelihood"} == {
        k: v for k, v in vars(base).items() if k != "likelihood"}
    with pytest.raises(ValueError, match="Unknown decoder 'poisson'"):
        report.decoder_vae(base, "poisson")


def test_decoder_scores_reuse_the_chapters_bernoulli_scores_and_score_the_others_as_the_chapter_does():
    toy = _ToyLikelihoodVAE(c=500.0, s=200.0)
    sets = {**_toy_pair(), "uniform noise": torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(1))}
    own = ood.score_sets({report.LIKE: (like := ood.NegIWAE(toy, k=4)), report.IC: ood.InputComplexity(like)},
                         sets, seed=0)
    by = report.decoder_scores(own, {"discretized-logistic": toy}, sets, k=4, seed=0)
    assert list(by) == ["bernoulli", "discretized-logistic"]
    for name in (report.LIKE, report.IC):
        assert list(by["bernoulli"][name]) == ["in-distribution", "MNIST", "uniform noise"]
        for s in ("in-distribution", "MNIST", "uniform noise"):
            assert by["bernoulli"][name][s] is own[name][s]
            assert torch.equal(by["discretized-logistic"][name][s], own[name][s])
    metrics = report.decoder_metrics(by, n_boot=20, seed=0)
    assert metrics["bernoulli"][report.LIKE]["MNIST"]["auroc"] < 0.05  # the toy's failure, as in test_background_ratio
    found = report.decoder_numbers(metrics, by, sets)
    assert found["dec_bern_like_mnist"] == metrics["bernoulli"][report.LIKE]["MNIST"]["auroc"]
    assert found["dec_dl_ic_noise_lo"] == metrics["discretized-logistic"][report.IC]["uniform noise"]["auroc_lo"]
    # code lengths in bits per pixel: the IWAE's nats / ln 2 / 784, and the PNG length / 784
    bits = own[report.LIKE]["MNIST"] / np.log(2) / 784
    assert found["dec_dl_bpp_mnist"] == pytest.approx(float(bits.mean()))
    assert found["png_bpp_noise"] == pytest.approx(float(ood.compressed_bits(sets["uniform noise"]).mean()) / 784)
    assert found["png_bpp_noise"] > 8  # uniform noise does not compress: 8 bits a pixel and the PNG header


def test_decoder_table_has_a_row_per_decoder_and_intervals():
    m = lambda a, lo, hi: {"auroc": a, "auroc_lo": lo, "auroc_hi": hi}
    metrics = {d: {report.LIKE: {"MNIST": m(0.3, 0.28, 0.32), "uniform noise": m(1.0, 1.0, 1.0)},
                   report.IC: {"MNIST": m(0.95, 0.94, 0.96), "uniform noise": m(0.01, 0.0, 0.02)}}
               for d in ("bernoulli", "continuous-bernoulli", "discretized-logistic")}
    table = report.decoder_table(metrics)
    assert list(table.index) == ["Bernoulli", "continuous Bernoulli", "discretized logistic"]
    assert list(table.columns) == ["-log p(x), MNIST", "S(x), MNIST", "-log p(x), uniform noise", "S(x), uniform noise"]
    assert table.loc["discretized logistic"].tolist() == [
        "0.300 [0.280, 0.320]", "0.950 [0.940, 0.960]", "1.000 [1.000, 1.000]", "0.010 [0.000, 0.020]"]
    assert report.auroc_interval(m(0.5, 0.4, 0.6)) == "0.500 [0.400, 0.600]"


@pytest.mark.parametrize("like_hi, noise_lo, ic_lo, bits, fails", [
    (0.33, 0.99, 0.97, 3.9, []),
    (0.55, 0.99, 0.97, 3.9, [0]),   # the raw likelihood no longer fails
    (0.33, 0.40, 0.97, 3.9, [1]),   # input complexity still calls noise in-distribution
    (0.33, 0.99, 0.30, 3.9, [2]),   # input complexity no better than the raw likelihood
    (0.33, 0.99, 0.97, 8.5, [3]),   # the VAE codes worse than raw bytes
])
def test_decoder_claims_judge_the_discretized_vae_on_intervals(like_hi, noise_lo, ic_lo, bits, fails):
    from robustvae.claims import Claims

    m = lambda a, lo, hi: {"auroc": a, "auroc_lo": lo, "auroc_hi": hi}
    dl = {report.LIKE: {"MNIST": m(like_hi - 0.02, like_hi - 0.04, like_hi)},
          report.IC: {"MNIST": m(ic_lo + 0.01, ic_lo, ic_lo + 0.02), "uniform noise": m(noise_lo + 0.005, noise_lo, 1.0)}}
    claims = Claims("mnist-5k", strict=False)
    report.decoder_claims(claims, {"discretized-logistic": dl}, {"dec_dl_bpp_in": bits})
    assert [c.kind for c in claims.claims] == ["finding", "finding", "finding", "check"]
    assert [i for i, c in enumerate(claims.claims) if not c.holds] == fails
    assert claims.claims[1].numbers == report.auroc_interval(dl[report.IC]["uniform noise"])


def _finding_scores(latent_shift: float, n: int = 200, seed: int = 0):
    """Direction-1 scores on ``n`` in- and ``n`` out-of-distribution images: the likelihood separates
    the two sets well (a shift of 3 standard deviations); each latent signal is the likelihood plus
    independent noise, shifted by ``latent_shift`` standard deviations."""
    g = torch.Generator().manual_seed(seed)
    like_in, like_out = torch.randn(n, generator=g), torch.randn(n, generator=g) + 3.0
    scores1 = {report.LIKE: {"in-distribution": like_in, "Fashion-MNIST": like_out}}
    for name in report.LATENT:
        scores1[name] = {"in-distribution": torch.randn(n, generator=g),
                         "Fashion-MNIST": torch.randn(n, generator=g) + latent_shift}
    scores2 = {report.IC: {"in-distribution": torch.randn(n, generator=g),
                           "uniform noise": torch.randn(n, generator=g) - 2.0}}
    # Fashion-MNIST-like grey images (pixels near 0.5, a high ceiling) in; MNIST-like near-binary ones out
    sets2 = {"in-distribution": 0.5 + (torch.rand(n, 1, 4, 4, generator=g) - 0.5) * 0.2,
             "MNIST": torch.rand(n, 1, 4, 4, generator=g) * 0.1}
    return scores1, scores2, sets2


def test_finding_intervals_separate_a_real_gap_from_none():
    """The paired interval of the likelihood's AUROC minus each latent signal's lies above 0 when every
    latent signal is weaker, and not when one latent signal is as strong as the likelihood; the other
    intervals contain their point AUROCs and fall on the right side of 0.5."""
    scores1, scores2, sets2 = _finding_scores(latent_shift=0.5)
    ci = report.finding_intervals(scores1, scores2, sets2, "Fashion-MNIST", report.LIKE, n_boot=200)
    assert ci["latent1_gap_lo"] > 0.2
    assert ci["best1_lo"] > 0.95 and ci["best1_lo"] <= ci["best1_hi"] <= 1.0
    assert ci["ic_noise_hi"] < 0.2, "uniform noise scored lower than the in-distribution images: AUROC near 0"
    assert ci["ceiling_hi"] < 0.05, "the ceiling's height ranks the near-binary set as in-distribution"
    strong = {**scores1, report.LATENT[2]: {k: v.clone() for k, v in scores1[report.LIKE].items()}}
    tied = report.finding_intervals(strong, scores2, sets2, "Fashion-MNIST", report.LIKE, n_boot=200)
    assert tied["latent1_gap_lo"] <= 0, "a latent signal equal to the likelihood does not lose to it"
    near = report.finding_intervals(_finding_scores(latent_shift=2.9)[0], scores2, sets2, "Fashion-MNIST",
                                    report.LIKE, n_boot=200)
    assert near["latent1_gap_lo"] < 0.05

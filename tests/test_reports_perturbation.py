"""Chapter 8's tables, numbers and figures (robustvae.reports.perturbation, robustvae.plots.perturbation)
on tiny inputs whose right answers are known by hand."""

import matplotlib

matplotlib.use("Agg")

import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from torch import nn

from robustvae import perturbation as P
from robustvae.plots import perturbation as plots
from robustvae.reports import perturbation as report

@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny convolutions here run fastest on one thread (many threads thrash on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


GOOD = dict(family="both", percentiles=(50, 90), train_percentile=90, grid_shape=(5, 3, 3),
            grid_magnitudes=(0.25, 0.5))


class Constant(nn.Module):
    """Predicts ``label`` for every image (a huge bias), with a small input gradient."""

    def __init__(self, label: int):
        super().__init__()
        self.lin = nn.Linear(784, 10)
        with torch.no_grad():
            self.lin.weight.mul_(1e-3)
            self.lin.bias.zero_()
            self.lin.bias[label] = 100.0

    def forward(self, x):
        return self.lin(x.flatten(1))


def _pairs(sizes, families):
    """Pairs whose ``||x~ - x||_2`` is ``sizes`` (one pixel moved by that much)."""
    x = torch.zeros(len(sizes), 1, 28, 28)
    x_tilde = x.clone()
    x_tilde[:, 0, 0, 0] = torch.tensor(sizes)
    return {"x": x, "x_tilde": x_tilde, "family": torch.tensor(families)}


# --------------------------------------------------------------------------------------------
# parameters and small tables
# --------------------------------------------------------------------------------------------
def test_check_parameters_accepts_the_book_and_names_the_wrong_one():
    report.check_parameters(**GOOD, n_eval=3)
    bad = [
        ({"family": "blur"}, "family"),
        ({"n_eval": 0}, "n_eval"),
        ({"grid_shape": (5, 3)}, "grid_shape"),
        ({"grid_shape": (5, 0, 3)}, "grid_shape"),
        ({"grid_magnitudes": (0.5, 1.5)}, "grid_magnitudes"),
        ({"grid_magnitudes": ()}, "grid_magnitudes"),
        ({"percentiles": (90, 50)}, "percentiles"),
        ({"percentiles": (50, 100)}, "percentiles"),
        ({"train_percentile": 75}, "train_percentile"),
    ]
    for change, name in bad:
        with pytest.raises(ValueError, match=name):
            report.check_parameters(**{**GOOD, "n_eval": 3, **change})


def test_pair_sizes_describes_each_family():
    table = report.pair_sizes(_pairs([1.5, 3.5, 2.25], [0, 0, 1]))
    assert list(table.index) == ["RTS", "elastic"]
    col = ("||x~ - x||_2", "mean")
    assert table.loc["RTS", col] == "2.500" and table.loc["elastic", col] == "2.250"
    assert table.loc["RTS", ("||x~ - x||_2", "count")] == "2"
    assert table.loc["RTS", ("||x~ - x||_2", "max")] == "3.500"


def test_training_and_radius_tables():
    hist = {"epoch": [1, 2], "train_loss": [100.04, 90.26], "val_elbo": [-95.0, -88.44]}
    t = report.training_table(hist)
    assert t.index.name == "epoch" and list(t.index) == [1, 2]
    assert list(t.iloc[1]) == ["90.3", "-88.4"]
    r = report.radius_table({50: 1.23456, 90: 2.5})
    assert list(r.index) == [50, 90] and list(r["radius eps"]) == ["1.235", "2.500"]


# --------------------------------------------------------------------------------------------
# against the true perturbations
# --------------------------------------------------------------------------------------------
def _correct():
    t = torch.tensor
    return {
        ("standard", "random true perturbation"): t([True, True, False, False]),
        ("latent-adv", "random true perturbation"): t([True, True, True, True]),
        ("standard", report.grid_test(0.25)): t([True] * 10 + [False] * 10),
        ("latent-adv", report.grid_test(0.25)): t([True] * 20),
        ("standard", report.grid_test(0.5)): t([True] * 20),
        ("latent-adv", report.grid_test(0.5)): t([True] * 19 + [False]),
    }


def test_true_table_accuracy_wilson_and_mcnemar():
    table = report.true_table(_correct())
    assert list(table.index.get_level_values("training").unique()) == ["standard", "latent-adv"]
    row = table.loc[("standard", "random true perturbation")]
    assert row["digits"] == 4 and row["accuracy"] == 0.5
    assert row["95% CI"] == "[0.150, 0.850]"  # Wilson, 2 of 4, by hand
    assert row["vs standard"] == "" and math.isnan(row["p"])
    adv = table.loc[("latent-adv", "random true perturbation")]
    assert adv["accuracy"] == 1.0
    assert adv["p"] == pytest.approx(0.5)  # 2 discordant pairs, both gained: 2 * 0.5**2
    assert adv["vs standard"] == "+2 digits, p = 0.5"
    grid = table.loc[("latent-adv", "worst case, RTS grid x0.25")]
    assert grid["p"] == pytest.approx(2 * 0.5**10) and grid["vs standard"].startswith("+10 digits")


def test_true_numbers_verdicts():
    out = report.true_numbers(report.true_table(_correct()), (0.25, 0.5))
    assert out["rtrue_standard"] == 0.5 and out["rtrue_latent_adv"] == 1.0
    assert out["rtrue_standard_ci"] == "[0.150, 0.850]"
    assert out["grid_standard_range"] == "0.50 / 1.00" and out["grid_latent_adv_range"] == "1.00 / 0.95"
    assert out["rtrue_latent_adv_p"] == pytest.approx(0.5)
    assert out["verdict_rtrue"].startswith("no better and no worse")
    assert out["verdict_grid"] == ("significantly better at 1, significantly worse at 0 and not "
                                   "significantly different at 1 of the 2 magnitudes")
    assert out["magnitudes_text"] == "0.25, 0.5"


def test_true_correctness_of_constant_classifiers():
    classifiers = {"standard": Constant(0), "latent-adv": Constant(1)}
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1, 2])
    grids = {0.5: P.rts_grid(3, 1, 1, magnitude=0.5)}
    correct = report.true_correctness(classifiers, x, y, x[:3], y[:3], grids)
    assert list(correct) == [("standard", "random true perturbation"), ("standard", "worst case, RTS grid x0.5"),
                             ("latent-adv", "random true perturbation"), ("latent-adv", "worst case, RTS grid x0.5")]
    assert correct["standard", "random true perturbation"].tolist() == [True, False, False, False]
    assert correct["latent-adv", "worst case, RTS grid x0.5"].tolist() == [False, True, True]


# --------------------------------------------------------------------------------------------
# evaluation loops on an untrained CVAE
# --------------------------------------------------------------------------------------------
def test_robust_accuracy_of_constant_classifiers():
    torch.manual_seed(0)
    cvae = P.PerturbationCVAE(latent_dim=2, width=2, hidden=4).eval()
    classifiers = {"standard": Constant(0), "augment": Constant(1)}
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0])
    table = report.robust_accuracy(cvae, classifiers, x, y, x.flip(0), 0.5, 1, torch.Generator().manual_seed(2),
                                   "cpu", batch_size=2)
    assert list(table.index) == ["standard", "augment"] and table.index.name == "training"
    assert list(table.columns) == ["clean", "random true perturbation", "worst case in learned set"]
    assert table.loc["standard"].tolist() == pytest.approx([2 / 3] * 3)
    assert table.loc["augment"].tolist() == pytest.approx([1 / 3] * 3)


def test_approximation_and_quality_rows_and_references(monkeypatch):
    small = P.rts_grid(3, 3, 1)
    monkeypatch.setattr(P, "rts_grid", lambda: small)  # 9 transformations instead of 2,275: fast
    torch.manual_seed(0)
    cvae = P.PerturbationCVAE(latent_dim=2, width=2, hidden=4).eval()
    pairs = _pairs([1.0, 3.0, 2.0, 9.0], [0, 0, 1, 1])
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    quality, ref = report.approximation_and_quality(cvae, pairs, x, {50: 0.5, 90: 1.0}, n_eval=3,
                                                    generator=torch.Generator().manual_seed(3))
    assert list(quality.index) == ["0 (centre)", "p50", "p90"] and quality["eps"].tolist() == [0.0, 0.5, 1.0]
    assert ref["||x~ - x|| RTS"] == pytest.approx(2.0) and ref["||x~ - x|| elastic"] == pytest.approx(2.0)
    err = P.approximation_error(cvae, pairs["x"][:3], pairs["x_tilde"][:3], 0.0)
    centre = quality.loc["0 (centre)"]
    assert centre["approx. error RTS"] == pytest.approx(err[:2].mean().item())
    assert centre["approx. error elastic"] == pytest.approx(err[2].item())
    assert centre["approx. error all"] == pytest.approx(err.mean().item())
    assert (quality["sample dist. to RTS"] > 0).all() and ref["true RTS to grid (floor)"] >= 0


def test_summary_numbers():
    quality = pd.DataFrame({"eps": [0.0, 1.0], "approx. error RTS": [4.0, 2.0], "approx. error elastic": [6.0, 3.0],
                            "approx. error all": [5.0, 2.5], "sample dist. to RTS": [1.0, 2.0]},
                           index=pd.Index(["0 (centre)", "p90"], name="radius"))
    ref = {"||x~ - x|| RTS": 4.0, "||x~ - x|| elastic": 5.0, "true RTS to grid (floor)": 0.5}
    table = pd.DataFrame({"clean": [0.9, 0.8], "random true perturbation": [0.5, 0.6],
                          "worst case in learned set": [0.1, 0.7]}, index=["standard", "latent-adv"])
    out = report.summary_numbers(quality, ref, table)
    assert (out["err0"], out["err_max"], out["err_rts_max"], out["err_el_max"]) == (5.0, 2.5, 2.0, 3.0)
    assert out["ratio_rts"] == 0.5 and out["ratio_el"] == 0.6
    assert (out["q_0"], out["q_hi"], out["q_floor"], out["shift_rts"], out["shift_el"]) == (1.0, 2.0, 0.5, 4.0, 5.0)
    assert out["worst_latent_adv"] == 0.7 and out["true_standard"] == 0.5 and out["clean_latent_adv"] == 0.8


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------
def test_set_examples_grid():
    x = torch.zeros(2, 1, 28, 28)
    fig = plots.set_examples(x, [x + 0.1], [(0.5, [x + 0.2, x + 0.3]), (1.25, [x + 0.4])])
    assert len(fig.axes) == 2 * 5
    assert [ax.get_title() for ax in fig.axes[:5]] == ["input", "true", "eps=0.50", "", "eps=1.25"]
    assert fig.axes[5].get_ylabel() == "digit 2"
    means = [ax.images[0].get_array().mean() for ax in fig.axes[:5]]
    assert means == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    plt.close(fig)


def test_approximation_and_quality_figure():
    quality = pd.DataFrame({"eps": [0.0, 1.0], "approx. error RTS": [4.0, 2.0], "approx. error elastic": [6.0, 3.0],
                            "sample dist. to RTS": [1.0, 2.0]})
    ref = {"||x~ - x|| RTS": 4.5, "||x~ - x|| elastic": 5.5, "true RTS to grid (floor)": 0.5}
    fig = plots.approximation_and_quality(quality, ref)
    left, right = fig.axes
    assert left.get_title() == "Approximation error (held-out pairs)" and right.get_title() == "Sample quality"
    assert left.get_xlabel() == "latent radius eps" and "closest true RTS" in right.get_ylabel()
    ys = [list(line.get_ydata()) for line in left.lines]
    assert ys[:2] == [[4.0, 2.0], [6.0, 3.0]] and ys[2] == [4.5, 4.5] and ys[3] == [5.5, 5.5]
    assert list(right.lines[0].get_ydata()) == [1.0, 2.0] and list(right.lines[1].get_ydata()) == [0.5, 0.5]
    plt.close(fig)


def test_grid_worst_case_figure():
    fig = plots.grid_worst_case(_correct(), (0.25, 0.5))
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ["standard", "latent-adv"]
    assert list(ax.lines[0].get_ydata()) == [0.5, 1.0] and list(ax.lines[1].get_ydata()) == pytest.approx([1.0, 0.95])
    assert list(ax.lines[0].get_xdata()) == [0.25, 0.5]
    assert ax.get_ylabel() == "worst-case accuracy (20 digits)" and ax.get_ylim() == (0, 1)
    assert ax.get_title().startswith("Worst case over a grid of true RTS")
    assert len(ax.collections) == 2  # one Wilson band per training
    plt.close(fig)


def test_paper_table_sets_the_published_findings_beside_the_chapters_numbers():
    numbers = {"err_rts_max": 6.0164, "ratio_rts": 0.6637, "shift_rts": 9.0647,
               "rtrue_latent_adv": 0.633, "rtrue_latent_adv_ci": "[0.603, 0.662]",
               "rtrue_standard": 0.711, "rtrue_standard_ci": "[0.682, 0.738]",
               "rtrue_augment": 0.833, "rtrue_augment_ci": "[0.809, 0.855]",
               "verdict_rtrue": "significantly worse than standard training",
               "worst_latent_adv": 0.777, "worst_standard": 0.4, "worst_augment": 0.312}
    t = report.paper_table(numbers, 7000, 4, "conv")
    assert list(t.columns) == ["Wong & Kolter 2021", "this book"]
    ours = t["this book"]
    assert ours["training pairs, epochs"] == "7,000 pairs, 4 epochs"
    assert ours["approximation error"] == "RTS: 6.02 at the largest radius, 0.66 of the pairs' size 9.06"
    assert ours["learned-set adversarial training, real perturbations"] == (
        "0.633 [0.603, 0.662] vs standard 0.711 [0.682, 0.738]: significantly worse than standard training")
    assert ours["learned-set adversarial training, learned-set worst case"] == \
        "0.777 vs standard 0.400, augmentation 0.312"
    assert ours["data augmentation, real perturbations"] == "0.833 [0.809, 0.855]"
    assert t.loc["generator (RTS)", "Wong & Kolter 2021"] == "spatial transformer"

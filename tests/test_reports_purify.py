"""robustvae.reports.purify: chapter 4's evaluation loop, tables, numbers and claim evidence,
on hand-made verdicts whose answers are known, and on a toy pipeline whose attacks are known."""

import math

import pytest
import torch
from torch import nn

from robustvae import purify
from robustvae.reports import purify as report
from robustvae.tables import NBSP

L1, L2 = ("linf", 0.1), ("l2", 1.5)


def T(k: int, n: int) -> torch.Tensor:
    """n verdicts, the first k correct."""
    return torch.arange(n) < k


@pytest.fixture
def small():
    """Two purifiers, P (every attack on every image) and Q (sequential), at two radii."""
    ev = report.Evaluation(
        names=["undefended", "P", "Q"],
        threats={("P", "wb"): (None, 1), ("P", "bpda"): (None, 1), ("Q", "wb"): (None, 2), ("Q", "+ x"): (None, 1)},
        budgets=[L1, L2], n_of={"undefended": 4, "P": 4, "Q": 2}, steps=5, sequential={"Q"},
    )
    b = lambda *v: torch.tensor(v, dtype=torch.bool)  # noqa: E731
    ev.results.update({
        ("undefended", "oblivious", L1): b(1, 1, 0, 0), ("undefended", "oblivious", L2): b(1, 0, 0, 0),
        ("P", "oblivious", L1): b(1, 1, 1, 0), ("P", "oblivious", L2): b(1, 1, 0, 0),
        ("P", "wb", L1): b(1, 0, 1, 0), ("P", "wb", L2): b(0, 0, 0, 0),
        ("P", "bpda", L1): b(1, 1, 0, 0), ("P", "bpda", L2): b(1, 0, 0, 0),
        ("P", "worst case", L1): b(1, 0, 0, 0), ("P", "worst case", L2): b(0, 0, 0, 0),
        ("Q", "oblivious", L1): b(1, 1), ("Q", "oblivious", L2): b(1, 0),
        ("Q", "wb", L1): b(1, 0), ("Q", "wb", L2): b(0, 0),
        ("Q", "+ x", L1): b(0, 0), ("Q", "+ x", L2): b(0, 0),
        ("Q", "worst case", L1): b(0, 0), ("Q", "worst case", L2): b(0, 0),
    })
    ev.effort.update({("P", "wb"): "7 x 2", ("P", "bpda"): "5 x 1", ("Q", "wb"): "4 x 2, EOT 2",
                      ("Q", "+ x"): "5 x 1"})
    return ev


def test_evaluation_accessors(small):
    assert small.purifiers == ["P", "Q"]
    assert small.attacks_of("Q") == ["wb", "+ x"] and small.main_attack == {"P": "wb", "Q": "wb"}
    assert small.label == {L1: "L-inf 0.1", L2: "L2 1.5"}
    assert small.acc("P", "wb", L1) == 0.5 and small.acc("undefended", "oblivious", L2) == 0.25
    lo, hi = small.wilson("Q", "worst case", L1)  # 0 of 2: the upper bound is z^2 / (n + z^2)
    assert lo == 0 and hi == pytest.approx(1.959964**2 / (2 + 1.959964**2), abs=1e-6)


def test_robust_table_rows_budgets_and_cells(small):
    t = report.robust_table(small)
    assert list(t.index) == [("undefended", "PGD"), ("P", "oblivious"), ("P", "wb"), ("P", "bpda"),
                             ("Q", "oblivious"), ("Q", "wb"), ("Q", "+ x")]
    assert list(t.columns) == ["budget", "L-inf 0.1", "L2 1.5"]
    assert t.loc[("undefended", "PGD"), "budget"] == "5 x 1" and t.loc[("Q", "wb"), "budget"] == "4 x 2, EOT 2"
    assert t.loc[("P", "oblivious"), "L-inf 0.1"] == 0.75 and t.loc[("P", "bpda"), "L2 1.5"] == 0.25
    assert t.loc[("Q", "oblivious"), "L2 1.5"] == 0.5


def test_worst_table_shows_the_worst_case_with_its_wilson_interval(small):
    t = report.worst_table(small)
    assert t.index.name == "worst case" and list(t.index) == ["P", "Q"]
    # 1 of 4: Wilson (0.046, 0.699); 0 of 4: upper bound 3.84 / 7.84 = 0.49
    assert t.loc["P", "L-inf 0.1"] == f"0.25 [0.05,{NBSP}0.70]"
    assert t.loc["P", "L2 1.5"] == f"0.00 [0.00,{NBSP}0.49]"


def test_portfolio_table_counts_images_broken_by_one_attack_alone(small):
    t = report.portfolio_table(small)
    alone = t["images broken by it alone"]
    # P: wb alone breaks image 1 at L-inf (image 3: bpda too) and image 0 at L2 -> 2;
    # bpda alone breaks image 2 at L-inf -> 1. Q (sequential): wb breaks 1 + 2 with nothing
    # before it; "+ x" breaks what wb left: image 0 at L-inf -> 1.
    assert alone.to_dict() == {("P", "wb"): 2, ("P", "bpda"): 1, ("Q", "wb"): 3, ("Q", "+ x"): 1}
    assert t.loc[("Q", "wb"), "budget"] == "4 x 2, EOT 2" and t.index.names == ["purifier", "attack"]


@pytest.fixture
def five():
    """The chapter's shape: the undefended classifier and purifiers a-d at three L-inf radii."""
    B1, B2, B3 = ("linf", 0.1), ("linf", 0.2), ("linf", 0.3)
    threats = {("a", "white-box"): 0, ("a", "BPDA, identity"): 0, ("b", "white-box + EOT"): 0,
               ("b", "BPDA, identity + EOT"): 0, ("c", "unrolled"): 0, ("c", "+ tangent BPDA"): 0,
               ("c", "+ BPDA, identity"): 0, ("d", "white-box"): 0, ("d", "BPDA, identity"): 0}
    ev = report.Evaluation(["undefended", "a", "b", "c", "d"], {k: (None, 1) for k in threats}, [B1, B2, B3],
                           {"undefended": 20, "a": 20, "b": 20, "c": 10, "d": 20}, steps=5, sequential={"c"})
    none1 = torch.zeros(20, dtype=torch.bool)
    none1[[0, 1, *range(10, 18)]] = True  # 10 of 20; 2 of the first 10
    verdicts = {
        ("undefended", "oblivious"): (none1, T(4, 20), T(0, 20)),
        ("a", "oblivious"): (T(18, 20), T(14, 20), T(6, 20)),
        ("b", "oblivious"): (T(18, 20), T(14, 20), T(6, 20)),
        ("c", "oblivious"): (T(10, 10), T(9, 10), T(5, 10)),
        ("d", "oblivious"): (T(19, 20), T(16, 20), T(8, 20)),
        ("a", "white-box"): (T(2, 20), T(0, 20), T(0, 20)),
        ("a", "BPDA, identity"): (T(12, 20), T(6, 20), T(1, 20)),
        ("b", "white-box + EOT"): (T(3, 20), T(0, 20), T(0, 20)),
        ("b", "BPDA, identity + EOT"): (T(13, 20), T(6, 20), T(1, 20)),
        ("c", "unrolled"): (T(9, 10), T(6, 10), T(3, 10)),
        ("c", "+ tangent BPDA"): (T(8, 10), T(5, 10), T(3, 10)),
        ("c", "+ BPDA, identity"): (T(8, 10), T(4, 10), T(2, 10)),
        ("d", "white-box"): (T(1, 20), T(0, 20), T(0, 20)),
        ("d", "BPDA, identity"): (T(15, 20), T(8, 20), T(2, 20)),
        ("a", "worst case"): (T(2, 20), T(0, 20), T(0, 20)),
        ("b", "worst case"): (T(3, 20), T(0, 20), T(0, 20)),
        ("c", "worst case"): (T(8, 10), T(4, 10), T(2, 10)),
        ("d", "worst case"): (T(1, 20), T(0, 20), T(0, 20)),
    }
    for (name, threat), per_radius in verdicts.items():
        for bd, ok in zip(ev.budgets, per_radius):
            ev.results[name, threat, bd] = ok
    last_gain = {(n, bd): 0.05 for n in "abcd" for bd in ev.budgets}
    last_gain.update({("b", B2): 0.1, ("d", B1): 0.0, ("c", B1): 0.1, ("c", B2): 0.3, ("c", B3): 0.2})
    return ev, last_gain


def test_findings_quotes_the_right_cells(five):
    ev, last_gain = five
    clean = {n: T(20, 20) for n in ev.names} | {"a": T(19, 20), "c": T(9, 10)}
    f = report.findings(ev, clean, last_gain)
    expected = {
        "eps1": 0.1, "eps2": 0.2, "eps_max": 0.3, "clean_a": 0.95, "clean_c": 0.9, "clean_none": 1.0,
        "obl_none_1": 0.5, "obl_a_3": 0.3, "obl_d_2": 0.8, "adv_a_1": 0.1, "adv_c_2": 0.4, "adv_d_3": 0.0,
        "gain_1": 0.4, "gain_2": 0.5, "gain_3": 0.3,
        "bpda_a_1": 0.6, "wb_a_1": 0.1, "bpda_b_1": 0.65, "bpda_d_1": 0.75, "wb_d_1": 0.05,
        "unr_c_1": 0.9, "unr_c_2": 0.6, "max_gain_conv": 0.1,
    }
    assert {k: f[k] for k in expected} == pytest.approx(expected)
    assert "adv_none_1" not in f and f["adv_d_3_ci"] == "[0.00, 0.16]"  # 0 of 20: 3.84 / 23.84
    assert (f["c_extra"], f["c_extra_max"]) == (1 + 2 + 1, 2)  # unrolled kept, identity BPDA broke
    assert (f["c_last_max"], f["c_last_radius"]) == (3, "L-inf 0.2")
    with pytest.raises(ValueError, match="four purifiers"):
        report.findings(report.Evaluation(["undefended", "a"], {}, [], {}, 5), clean, last_gain)


def test_claim_evidence_holds_and_numbers(five):
    ev, last_gain = five
    e = report.claim_evidence(ev, last_gain, converge_tol=0.15)
    assert e["oblivious helps"] == (True, "L-inf 0.1: 0.90 vs 0.50, p 0.0039; L-inf 0.2: 0.70 vs 0.20, p 0.00098")
    assert e["adaptive beats oblivious"] == (True, "all 9 pairs")
    assert e["adaptive beats oblivious on (c)"] == (True, "0.40 vs 0.90 on 10 images: 5 lost, 0 gained, p 0.031")
    # b: 8 lost, 1 gained: P(X >= 8 | 9) = 10 / 512
    assert e["(a) (b) (d) below none"] == (
        True, "0.10 (p 0.0039), 0.15 (p 0.02), 0.05 (p 0.002) vs undefended 0.50")
    assert e["(c) above none"] == (True, "0.80 vs 0.20 on the same 10 images, p 0.016")
    assert e["converged"] == (True, "largest: b L-inf 0.2 0.100")
    assert report.claim_evidence(ev, last_gain, converge_tol=0.05)["converged"][0] is False


def test_claim_evidence_names_the_pairs_where_adaptive_is_not_significant(five):
    ev, last_gain = five
    ev.results["d", "oblivious", ("linf", 0.3)] = T(2, 20)  # 0.1 left; 2 lost is not significant
    holds, numbers = report.claim_evidence(ev, last_gain, 0.15)["adaptive beats oblivious"]
    assert holds is False and numbers == "not on: d, L-inf 0.3"


def test_record_table_puts_this_chapter_beside_the_record(five):
    ev, _ = five
    t = report.record_table(ev, latent="c")
    assert t.index.name == "source" and list(t.columns) == ["threat model", "robust accuracy"]
    assert t.loc["(c), this chapter now: oblivious, 10 images", "robust accuracy"] == "1.000 / 0.900"
    row = t.loc["(c), this chapter now: worst case of the portfolio, 10 images"]
    assert tuple(row) == ("L-inf 0.1 / L-inf 0.2", "0.800 / 0.400")


def test_quoted_radii_and_labels():
    ev = report.Evaluation(["undefended"], {}, [("linf", 0.3), ("l2", 2.0), ("linf", 0.05)], {}, 5)
    assert report.quoted_radii(ev) == (("linf", 0.3), ("linf", 0.05), ("linf", 0.3))
    ev = report.Evaluation(["undefended"], {}, [("linf", 0.2)], {}, 5)
    assert report.quoted_radii(ev) == (("linf", 0.2),) * 3
    assert report.budget_label(("l2", 2.5)) == "L2 2.5" and report.budget_label(("linf", 0.1)) == "L-inf 0.1"


def test_class_blocks_puts_one_image_per_class_in_each_block():
    y = torch.tensor([3, 0, 0, 1, 3, 1, 0, 2, 2, 1])
    order = report.class_blocks(y)
    # block 1: the first 0, 1, 2, 3; block 2: the second of each; then the third 0 and 1
    assert order.tolist() == [1, 3, 7, 0, 2, 5, 8, 4, 6, 9]
    assert y[order].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


PARAMS = dict(clf_epochs=1, vae_epochs=1, latent_dim=2, dvae_epochs=1, n_eval=20, n_latent=10, steps=5,
              curve_steps=10, curve_restarts=2, eot=2, eot_c=1, c_steps=5, n_samples=2, latent_steps=3,
              latent_restarts=1, beta=1.0, likelihood="bernoulli", linf_eps=(0.1,), l2_eps=(1.5,),
              converge_tol=0.05)


@pytest.mark.parametrize("change, message", [
    ({"steps": 0}, "steps"), ({"beta": -1.0}, "beta"), ({"likelihood": "poisson"}, "likelihood"),
    ({"linf_eps": (0.1, 1.5)}, r"L-inf radii must be in \(0, 1\], got 1.5"), ({"l2_eps": (-1.0,)}, "l2_eps"),
    ({"linf_eps": ()}, "at least one radius"), ({"n_latent": 30}, r"n_latent \(30\) must not exceed n_eval \(20\)"),
    ({"curve_steps": 4}, r"curve_steps \(4\) must be >= steps \(5\)"), ({"converge_tol": 1.0}, "converge_tol"),
])
def test_check_parameters_names_the_bad_value(change, message):
    report.check_parameters(PARAMS)
    with pytest.raises(ValueError, match=message):
        report.check_parameters(PARAMS | change)


# --- a toy pipeline whose attacks are known ---------------------------------------------------
class Mean(nn.Module):
    """Class 0 when the mean pixel is above 0.5 (logits +-10 (mean - 0.5))."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[2.5] * 4, [-2.5] * 4]))
            self.lin.bias.copy_(torch.tensor([-5.0, 5.0]))

    def forward(self, x):
        return self.lin(x.flatten(1))


class Grey(purify.Purifier):
    """Outputs a constant image of mean 0.8, whatever the input: nothing to attack."""

    def forward(self, x):
        return torch.full_like(x, 0.8) + 0 * x


@pytest.fixture
def toy():
    clf = Mean().requires_grad_(False)
    x, y = torch.full((4, 1, 2, 2), 0.9), torch.zeros(4, dtype=torch.long)
    purifiers = {"P": purify.Identity(), "Q": Grey()}
    defended = {"undefended": purify.Defended(clf)} | {n: purify.Defended(clf, p) for n, p in purifiers.items()}
    return clf, x, y, purifiers, defended


def test_clean_cost_accuracy_and_pixel_mse(toy):
    clf, x, y, purifiers, defended = toy
    n_of = {"undefended": 4, "P": 4, "Q": 2}
    correct, t = report.clean_cost(defended, purifiers, x, y, n_of)
    assert correct["Q"].tolist() == [True, True] and t["clean accuracy"].tolist() == [1.0, 1.0, 1.0]
    assert t.loc["P", "pixel MSE to input"] == 0.0 and t.loc["Q", "pixel MSE to input"] == pytest.approx(0.01)
    assert t["images"].to_dict() == n_of


def test_run_portfolio_breaks_what_the_radius_allows_and_keeps_the_bookkeeping(toy):
    clf, x, y, purifiers, defended = toy
    threats = {("P", "white-box"): (defended["P"], 1), ("P", "+ BPDA"): (defended["P"], 1),
               ("Q", "white-box"): (defended["Q"], 3), ("Q", "BPDA, identity"): (
                   purify.Defended(clf, purify.BPDA(purifiers["Q"])), 1)}
    small, large = ("linf", 0.1), ("linf", 0.5)  # mean 0.9 -> 0.8 keeps class 0; -> 0.4 does not
    ev = report.run_portfolio(clf, defended, threats, x, y, [small, large], {"undefended": 4, "P": 4, "Q": 3},
                              steps=5, curve_steps=6, curve_restarts=2, main_steps={"Q": 4}, sequential={"P"})
    r = ev.results
    for name in ("undefended", "P"):
        assert r[name, "oblivious", small].all() and not r[name, "oblivious", large].any()
    assert r["Q", "oblivious", large].tolist() == [True] * 3  # the grey purifier undoes any attack
    assert r["P", "white-box", small].all() and not r["P", "white-box", large].any()
    assert not r["P", "+ BPDA", large].any()  # sequential: nothing left to attack, nothing restored
    assert torch.equal(ev.x_adv["P", "+ BPDA", large], x)
    assert all(r["Q", t, b].all() for t in ("white-box", "BPDA, identity", "worst case") for b in (small, large))
    assert r["P", "worst case", small].all() and not r["P", "worst case", large].any()
    assert ev.x_adv["undefended", "oblivious", large].mean().item() == pytest.approx(0.4)
    assert ev.x_adv["Q", "oblivious", large].shape == (3, 1, 2, 2)
    assert ev.effort == {("P", "white-box"): "6 x 2", ("P", "+ BPDA"): "5 x 1",
                         ("Q", "white-box"): "4 x 2, EOT 3", ("Q", "BPDA, identity"): "5 x 1"}
    assert set(ev.ascents) == {(n, b) for n in ("P", "Q") for b in (small, large)}

    table, last_gain = report.convergence(ev, defended, y)
    assert table.loc[("P", "L-inf 0.1"), "attacker, restart 1"] == 1.0
    assert table.loc[("P", "L-inf 0.5"), "attacker, restart 1"] == 0.0
    assert table.loc[("P", "L-inf 0.5"), "evaluated, all restarts"] == 0.0
    assert table.loc[("Q", "L-inf 0.5"), "evaluated, restart 1"] == 1.0
    assert table["broken by the last restart"].tolist() == [0] * 4 and (table["McNemar p"] == 1.0).all()
    assert last_gain == {(n, b): 0.0 for n in ("P", "Q") for b in (small, large)}
    # the attacker's view after `steps` steps, or after the main attack's own steps when fewer
    assert table.loc[("P", "L-inf 0.5"), "attacker, 5 steps"] == 0.0
    assert table.loc[("Q", "L-inf 0.5"), "attacker, 4 steps"] == 1.0
    assert math.isnan(table.loc[("Q", "L-inf 0.5"), "attacker, 5 steps"])

"""robustvae.plots.purify: chapter 4's figures draw the data they are given, with their labels."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from robustvae import purify  # noqa: E402
from robustvae.attacks import Ascent  # noqa: E402
from robustvae.plots import purify as plots  # noqa: E402
from robustvae.reports.purify import Evaluation  # noqa: E402

A1, A2, B1 = ("linf", 0.1), ("linf", 0.2), ("l2", 1.5)


def _b(*v):
    return torch.tensor(v, dtype=torch.bool)


@pytest.fixture
def ev():
    e = Evaluation(["undefended", "P", "Q"], {("P", "wb"): (None, 1), ("Q", "unrolled"): (None, 1)},
                   [A1, A2, B1], {"undefended": 4, "P": 4, "Q": 4}, steps=2)
    acc = {  # (name, threat) -> correct images at A1, A2, B1 (of 4)
        ("undefended", "oblivious"): (2, 1, 0), ("P", "oblivious"): (4, 3, 2), ("Q", "oblivious"): (4, 4, 3),
        ("P", "worst case"): (1, 0, 0), ("Q", "worst case"): (3, 2, 1),
    }
    for key, ks in acc.items():
        for bd, k in zip(e.budgets, ks):
            e.results[(*key, bd)] = torch.arange(4) < k
    # success traces (restarts 2, steps + 1 = 3, images 4): image i first broken at flat index i + 1
    trace = torch.zeros(6, 4, dtype=torch.bool)
    for i in range(4):
        trace[i + 1:, i] = True
    for name in ("P", "Q"):
        for bd in e.budgets:
            st = trace.view(2, 3, 4)
            e.ascents[name, bd] = Ascent(torch.zeros(4), torch.zeros(4), st[-1, -1], st.float(), st)
    return e


def test_robust_accuracy_draws_oblivious_and_worst_case_per_norm(ev):
    fig = plots.robust_accuracy(ev)
    ax_inf, ax_2 = fig.axes
    assert (ax_inf.get_title(), ax_2.get_title()) == ("PGD, L-inf", "PGD, L2")
    assert ax_inf.get_xlabel() == "L-inf radius eps" and ax_inf.get_ylabel() == "robust accuracy"
    lines = [(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax_inf.lines]
    # undefended, then per purifier: oblivious (dashed), worst case (solid)
    assert lines == [((0.1, 0.2), (0.5, 0.25)), ((0.1, 0.2), (1.0, 0.75)), ((0.1, 0.2), (0.25, 0.0)),
                     ((0.1, 0.2), (1.0, 1.0)), ((0.1, 0.2), (0.75, 0.5))]
    assert [line.get_ydata()[0] for line in ax_2.lines] == [0.0, 0.5, 0.0, 0.75, 0.25]
    assert [line.get_linestyle() for line in ax_inf.lines] == ["-", "--", "-", "--", "-"]
    assert len(ax_inf.collections) == 2  # one Wilson band per purifier
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["undefended", "P", "Q"]
    assert fig._suptitle.get_text().startswith("Robust accuracy: oblivious attack (dashed)")
    plt.close(fig)


def test_convergence_curves_show_the_attackers_not_yet_broken_fraction(ev):
    fig = plots.convergence_curves(ev, curve_restarts=2)
    ax = fig.axes[0]
    assert ax.get_title() == "P: wb" and fig.axes[1].get_title() == "Q: unrolled"
    curves = [line for line in ax.lines if len(line.get_xdata()) == 6]
    assert len(curves) == 3 and [line.get_label() for line in curves] == ["L-inf 0.1", "L-inf 0.2", "L2 1.5"]
    assert np.allclose(curves[0].get_ydata(), [1, 0.75, 0.5, 0.25, 0, 0])
    vertical = sorted(line.get_xdata()[0] for line in ax.lines if len(line.get_xdata()) == 2)
    assert vertical == [2, 3]  # `steps` (dotted) and the start of the second restart
    assert fig.axes[2].get_xlabel() == "PGD steps, 2 restarts one after the other"
    assert fig.axes[0].get_ylabel() == "not yet broken"
    plt.close(fig)


class _Sign(nn.Module):
    """Class 1 when the mean pixel is above 0.5, else class 0."""

    def forward(self, x):
        s = x.flatten(1).mean(1, keepdim=True) - 0.5
        return torch.cat([-s, s], 1)


class _Invert(purify.Purifier):
    def forward(self, x):
        return 1 - x


def test_attacked_images_shows_each_row_and_marks_wrong_predictions():
    x = torch.tensor([0.9, 0.1, 0.8]).view(3, 1, 1, 1).expand(3, 1, 2, 2).clone()
    y = torch.tensor([1, 0, 0])  # the third is wrong on the clean image
    fig = plots.attacked_images(_Sign(), x, y, x_obl=1 - x, x_wb=x, purifiers={"(i)": _Invert()},
                                wb_on="(i)", radius="L-inf 0.2")
    rows = ["clean", "oblivious\nadversarial", "(i) of it", "white-box\non (i)", "(i) of it"]
    assert len(fig.axes) == len(rows) * 3
    assert [fig.axes[3 * r].get_ylabel() for r in range(len(rows))] == rows
    titles = [(ax.get_title(), matplotlib.colors.to_hex(ax.title.get_color())) for ax in fig.axes[:6]]
    assert titles == [("1", "#000000"), ("0", "#000000"), ("1", "#ff0000"),
                      ("0", "#ff0000"), ("1", "#ff0000"), ("0", "#000000")]
    assert np.allclose(fig.axes[6].images[0].get_array(), 0.9)  # (i) of the oblivious image 1 - 0.9
    assert fig._suptitle.get_text() == "L-inf 0.2: predicted class above each image (red: wrong)"
    plt.close(fig)

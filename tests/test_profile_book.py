"""benchmarks/profile_book.py: the summary charges each sample of the chapter's kernel to the right
kind of work, and leaves the runner's samples out."""


import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def pb():
    return load_script("benchmarks/profile_book.py")


RUNNER = 'process 10:"python -m robustvae.runs book 04"'
KERNEL = 'process 11:"python -m ipykernel_launcher -f /tmp/k.json"'


def _folded(tmp_path, lines):
    (tmp_path / "stacks").mkdir(exist_ok=True)
    p = tmp_path / "stacks" / "04_purification.folded"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_categories_and_runner_excluded(pb, tmp_path):
    rv = "/w/robustvae/"
    lines = [
        # the runner itself (papermill waiting): not the chapter's work
        f"{RUNNER};execute_book ({rv}runs.py:700);wait (x.py:1) 50",
        # training a model, with an attack inside it (the Defense-VAE's pairs): outermost wins
        f"{RUNNER};{KERNEL};<cell> (ipy:1);get_defense_vae ({rv}purify.py:470);pgd ({rv}attacks.py:300);"
        "conv2d (torch/nn.py:1) 30",
        f"{RUNNER};{KERNEL};<cell> (ipy:2);pgd ({rv}attacks.py:300);ascend ({rv}attacks.py:180) 60",
        # a command line with a newline, as py-spy writes it
        f'{RUNNER};process 12:"python -c import x',
        f'y";<cell> (ipy:3);stochastic_reconstructions ({rv}rrobust.py:170) 10',
        f"{RUNNER};{KERNEL};<cell> (ipy:4);savefig (matplotlib/figure.py:1) 9",
    ]
    s = pb.summarise_folded(_folded(tmp_path, lines))
    assert s["samples"] == 99                 # kernel samples only; the other process is no kernel
    assert s["share"] == {"attacks": pytest.approx(60 / 99, abs=1e-3), "training": pytest.approx(30 / 99, abs=1e-3),
                          "other": pytest.approx(9 / 99, abs=1e-3)}
    assert s["details"]["training: get_defense_vae"] == pytest.approx(30 / 99, abs=1e-3)
    assert s["inclusive"]["pgd (attacks.py)"] == 90        # inclusive: counted once per stack
    # the kernel's own <module> frame is outermost on every stack: it decides nothing
    assert pb.categorise(["<module> (ipykernel_launcher.py:1)", "fit (/w/robustvae/training.py:9)"])[0] == "training"
    assert pb.categorise(["<module> (k.py:1)", "_find_and_load (<frozen importlib._bootstrap>:1)"]) == (
        "startup", "_find_and_load")
    assert pb.categorise(["plot (matplotlib/x.py:1)"]) == ("other", "")


def test_summary_budget_in_reference_units(pb, tmp_path):
    _folded(tmp_path, [f"{RUNNER};{KERNEL};fit (/w/robustvae/training.py:1) 20"])
    res = pb.summarise(tmp_path, {"04_purification": 300.0}, [2.0, 2.2], "cold")
    assert res["normalised_total"] == pytest.approx(300 / 2.1, abs=0.1)
    assert res["within_budget"] == (300 / 2.1 <= pb.BUDGET_COLD_S / pb.REFERENCE_SLOW_S)
    assert res["chapters"]["04_purification"]["share"] == {"training": 1.0}

"""benchmarks/mutation.py counts mutmut's statuses the way the kill rates in tests/MUTANTS.md need."""

import sqlite3

import pytest

from tests.scripts import load_script


def test_slow_kills_and_timeouts_count_as_killed_and_only_survivors_are_listed(tmp_path):
    mutation = load_script("benchmarks/mutation.py")
    con = sqlite3.connect(tmp_path / ".mutmut-cache")
    con.execute("CREATE TABLE Line (id INTEGER PRIMARY KEY, line_number INTEGER, line TEXT)")
    con.execute("CREATE TABLE Mutant (id INTEGER PRIMARY KEY, line INTEGER, status TEXT)")
    con.execute("INSERT INTO Line VALUES (1, 9, 'x = a + b')")
    statuses = ["ok_killed"] * 5 + ["ok_suspicious"] * 2 + ["bad_timeout", "bad_survived", "untested"]
    con.executemany("INSERT INTO Mutant VALUES (?, 1, ?)", list(enumerate(statuses, 1)))
    con.commit()
    out = mutation.run("consistency", [], resume=str(tmp_path), report_only=True)
    assert (out["mutants"], out["killed"], out["survived"], out["untested"]) == (9, 8, 1, 1)
    assert out["suspicious"] == 2 and out["timeout"] == 1 and not out["complete"]
    assert out["kill_rate"] == round(8 / 9, 4)
    assert [s["id"] for s in out["survivors"]] == [9] and out["survivors"][0]["line"] == 10


def test_a_hung_mutmut_is_killed_and_restarted_until_it_finishes(tmp_path):
    """The supervisor restarts a run that sits without a test runner (mutmut 2.5.1's deadlock)."""
    import sys
    mutation = load_script("benchmarks/mutation.py")
    hang_once = ("import pathlib, sys, time\n"
                 "m = pathlib.Path('started')\n"
                 "n = int(m.read_text()) if m.exists() else 0\n"
                 "m.write_text(str(n + 1))\n"
                 "time.sleep(60) if n < 2 else sys.exit(0)\n")
    # like mutmut, the hanging process names pytest inside its --runner string: it is no runner
    cmd = [sys.executable, "-c", hang_once, "--runner", "python -m pytest -x -q"]
    done = mutation.supervise(cmd, tmp_path, {}, idle=0.5, poll=0.1, startup=0.5)
    assert done.returncode == 0
    assert (tmp_path / "started").read_text() == "3"     # hung twice, finished on the third start


def test_a_run_that_never_progresses_is_given_up(tmp_path):
    import sys
    mutation = load_script("benchmarks/mutation.py")
    done = mutation.supervise([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, {},
                              idle=0.3, poll=0.1, max_restarts=2, startup=0.3)
    assert done.returncode == -9


def test_a_running_pytest_counts_as_a_runner_and_mutmut_does_not(tmp_path):
    import subprocess
    import sys
    mutation = load_script("benchmarks/mutation.py")
    sleep = "import time; time.sleep(30)"
    mutmut = subprocess.Popen([sys.executable, "-c", sleep, "mutmut", "run", "--runner", "python -m pytest -x"],
                              cwd=tmp_path)
    try:
        assert not mutation.runner_alive(tmp_path)
        runner = subprocess.Popen([sys.executable, "-c", sleep, "-m", "pytest", "-x"], cwd=tmp_path)
        try:
            assert mutation.runner_alive(tmp_path)
            assert not mutation.runner_alive(tmp_path / "elsewhere")
        finally:
            runner.kill()
            runner.wait()
    finally:
        mutmut.kill()
        mutmut.wait()


def test_a_mutant_left_in_the_source_by_a_killed_mutmut_is_removed_before_the_restart(tmp_path):
    """mutmut writes each mutant into the module; killed mid-test it leaves it there. The restarted
    run must see the pristine module, or every later mutant is tested on top of the stray one."""
    import sys
    mutation = load_script("benchmarks/mutation.py")
    (tmp_path / "robustvae").mkdir()
    (tmp_path / ".pristine").mkdir()
    (tmp_path / "robustvae" / "m.py").write_text("x = a * b\n")
    (tmp_path / ".pristine" / "m.py").write_text("x = a * b\n")
    mutate_then_hang = ("import pathlib, sys, time\n"
                        "src = pathlib.Path('robustvae/m.py')\n"
                        "seen = pathlib.Path('seen')\n"
                        "seen.write_text((seen.read_text() if seen.exists() else '') + src.read_text())\n"
                        "if len(seen.read_text().splitlines()) < 3:\n"
                        "    src.write_text('x = a / b\\n')\n"
                        "    time.sleep(60)\n")
    done = mutation.supervise([sys.executable, "-c", mutate_then_hang], tmp_path, {}, idle=0.5, poll=0.1,
                              startup=0.5, rel="robustvae/m.py")
    assert done.returncode == 0
    assert (tmp_path / "seen").read_text() == "x = a * b\n" * 3     # every start saw the pristine module
    (tmp_path / "robustvae" / "m.py").write_text("x = a / b\n")
    assert mutation.restore(tmp_path, "robustvae/m.py")
    assert (tmp_path / "robustvae" / "m.py").read_text() == "x = a * b\n"
    assert not mutation.restore(tmp_path, "robustvae/m.py")


def _line_of(module: str, text: str) -> int:
    from pathlib import Path
    lines = (Path(__file__).resolve().parents[1] / "robustvae" / f"{module}.py").read_text().split("\n")
    return next(i for i, s in enumerate(lines, 1) if text in s)


@pytest.mark.slow
def test_a_mutant_applied_by_hand_is_killed_or_survives_as_the_selected_tests_decide():
    """--by-hand: one mutant in a scratch copy, judged by the chosen tests; the working tree is untouched."""
    from pathlib import Path
    mutation = load_script("benchmarks/mutation.py")
    src = Path(mutation.ROOT) / "robustvae" / "stats.py"
    before = src.read_text()
    line = _line_of("stats", "z * z / (4 * n * n)")
    wrong_half_width = (line, "(4 * n * n)", "(2 * n * n)")
    killed, last = mutation.by_hand("stats", *wrong_half_width, ["tests/test_stats.py"], keyword="textbook")
    assert killed and "failed" in last
    # the same mutant, judged only by tests that never compute a Wilson interval, survives
    killed, last = mutation.by_hand("stats", *wrong_half_width, ["tests/test_stats.py"], keyword="mcnemar")
    assert not killed and "passed" in last
    assert src.read_text() == before
    with pytest.raises(RuntimeError, match="could not run"):       # a selection that runs no test is no verdict
        mutation.by_hand("stats", *wrong_half_width, ["tests/test_stats.py"], keyword="no_such_test")


def test_a_mutant_by_hand_must_name_its_line_and_change_it():
    mutation = load_script("benchmarks/mutation.py")
    line = _line_of("stats", "z * z / (4 * n * n)")
    with pytest.raises(ValueError, match="does not contain"):
        mutation.by_hand("stats", line + 1, "(4 * n * n)", "(2 * n * n)", ["tests/test_stats.py"])
    with pytest.raises(ValueError, match="must change"):
        mutation.by_hand("stats", line, "(4 * n * n)", "(4 * n * n)", ["tests/test_stats.py"])

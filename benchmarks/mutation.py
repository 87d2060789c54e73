"""Mutation testing of one science module with mutmut (too slow for CI; ``make mutation MODULE=tcvae``).

    .venv/bin/python benchmarks/mutation.py tcvae            # mutate robustvae/tcvae.py
    .venv/bin/python benchmarks/mutation.py attacks --tests tests/test_attacks.py tests/test_purify.py
    .venv/bin/python benchmarks/mutation.py stats --by-hand 68 '(4 * n * n)' '(2 * n * n)' -k textbook

mutmut 2 writes each mutant into the source file, so the run happens in a scratch copy of
``robustvae/`` and ``tests/`` (never in the working tree). Each mutant runs the module's own
test files (``TESTS`` below) with ``-x``; a mutant is *killed* if a test fails, *survived* if all
pass, *timeout* if they run past mutmut's limit (counted as killed: the mutant changed
behaviour, usually into an endless loop), *suspicious* if a test failed but only after more than
``--test-time-multiplier`` times the baseline time (a slow kill, counted as killed). String and f-string mutations (error messages,
``__all__``, dictionary keys checked elsewhere) are disabled.

mutmut 2.5.1 sometimes hangs with no test running; ``supervise`` then kills it and starts it again
(it resumes from its cache), so a run needs no hand-holding.

Writes ``benchmarks/results/mutation_<module>.json`` (counts, time, and the diff of every
survivor) and updates ``benchmarks/results/mutation_summary.csv``. Every survivor must be
killed by a new test or listed with its reason in ``tests/MUTANTS.md``. ``--by-hand LINE OLD NEW``
applies one such mutant to a scratch copy and runs the chosen tests, so each "killed by a new test"
claim there can be repeated without a whole run.
"""

from __future__ import annotations

import argparse
import ast
import csv
import difflib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

#: The science modules and the test files that exercise each one.
TESTS = {
    "attacks": ["tests/test_attacks.py"],
    "certify": ["tests/test_certify.py"],
    "lipschitz": ["tests/test_lipschitz.py"],
    "rrobust": ["tests/test_rrobust.py"],
    "ood": ["tests/test_ood.py"],
    "calibration": ["tests/test_calibration.py", "tests/test_properties.py"],
    "tcvae": ["tests/test_tcvae.py"],
    "perturbation": ["tests/test_perturbation.py"],
    "consistency": ["tests/test_consistency.py"],
    "purify": ["tests/test_purify.py"],
    "stats": ["tests/test_stats.py"],
    "bjorck": ["tests/test_bjorck.py"],
    "discrete": ["tests/test_discrete.py"],
}
#: The functions that implement the book's equations, mutated by default (``--functions all``: everything,
#: including argument checks, plotting helpers and cached training, which costs hours per module on 2 cores).
SCOPE = {
    "attacks": ["project", "perturbation_norm", "_random_start", "_normalised", "ascend", "Ascent", "ball_start",
                "fgsm", "pgd", "latent_kl"],
    "certify": ["std_cap", "certified_margin", "markov_bound", "certified_margin_fixed_std",
                "_std", "certified_margins", "second_moment"],
    "ood": ["LikelihoodRatio", "InputComplexity", "BernoulliCeilingRatio", "bernoulli_entropy", "_fast_metrics", "_fpr95"],
    "tcvae": ["gaussian_log_density", "TCVAE.decomposition", "TCVAE.loss"],
    # (calibration.bootstrap_ci is a re-export of stats.bootstrap_ci, mutated with stats)
    "calibration": ["bin_indices", "mean_ci", "_bin_stats", "ece", "mce", "debiased_l2_ce"],
    "lipschitz": ["_exact_norm", "MaxMin", "LipschitzLinear", "LipschitzMLP", "LipschitzEncoder", "LipschitzDecoder",
                  "LipschitzVAE"],
    "rrobust": ["binomial_interval", "ProbabilityEstimate", "stochastic_reconstructions", "reconstruction_distances",
                "probability_from_distances", "_radial", "_margin_search", "PortfolioMargin", "encoder_jacobian",
                "decoder_jacobian", "theoretical_margins", "LinearGaussianVAE"],
    "perturbation": ["rts", "cvae_kl", "PerturbationCVAE.elbo", "latent_radius", "_ball", "_project", "latent_pgd",
                     "approximation_error", "distance_to_family", "grid_worst_case", "_correct_under"],
    "consistency": ["n_distinct", "agreement", "consistency_summary", "detection_auroc", "latent_stats",
                    "nearest_centroid", "_auroc_ranks", "auroc_bootstrap", "_runner_up", "_classifier_loss"],
    "purify": ["Reconstruct", "LatentSearch", "UnrolledLatentSearch", "BPDA", "TangentBPDA", "Defended", "correct"],
    "stats": ["mcnemar_exact", "wilson_interval", "bootstrap_draws", "_float_array", "bootstrap_ci",
              "median_difference"],
    "bjorck": ["bjorck_orthonormalize", "BjorckOrthonormal", "BjorckVAE", "BjorckVAEConfig"],
    "discrete": ["to_levels", "discretized_logistic_log_prob", "nats_to_bits", "DiscretizedLogisticVAE"],
}
#: Tests left out of the runner because they exercise none of SCOPE and take most of the time.
KEYWORD = {
    "attacks": "not lbfgs and not latent_attack and not max_damage",
}
DISABLED = "string,fstring"
STATUS = {"ok_killed": "killed", "bad_timeout": "timeout", "ok_suspicious": "suspicious",
          "bad_survived": "survived", "skipped": "skipped", "untested": "untested"}


def function_lines(path: Path, names: list[str]) -> list[int]:
    """1-based line numbers of the bodies of the named functions, methods (``Class.method``) or classes."""
    tree = ast.parse(path.read_text())
    found, lines = set(), []

    def visit(node, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = prefix + child.name
                if qual in names or child.name in names:
                    found.add(qual if qual in names else child.name)
                    lines.extend(range(child.lineno, child.end_lineno + 1))
                elif isinstance(child, ast.ClassDef):
                    visit(child, qual + ".")

    visit(tree)
    missing = set(names) - found
    if missing:
        raise SystemExit(f"Not found in {path.name}: {', '.join(sorted(missing))}")
    return sorted(set(lines))


def scope_patch(path: Path, rel: str, lines: list[int]) -> str:
    """A patch that 'adds' exactly ``lines`` of ``path``: mutmut's --use-patch-file then mutates only them."""
    new = path.read_text().splitlines(keepends=True)
    keep = set(lines)
    old = [l for i, l in enumerate(new, 1) if i not in keep]
    return "".join(difflib.unified_diff(old, new, fromfile=rel, tofile=rel, n=0))


def runner_alive(scratch: Path) -> bool:
    """Whether a test runner (a ``python -m pytest`` process working in ``scratch``, not mutmut itself,
    whose ``--runner`` string names pytest too) exists right now."""
    target = str(scratch.resolve())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.readlink(proc / "cwd") != target:
                continue
            args = (proc / "cmdline").read_bytes().split(b"\0")
            # a runner has "pytest" as an argument of its own ("python -m pytest ..."); mutmut itself
            # only carries it inside its --runner string, and must not count
            if b"pytest" in args and not any(b"mutmut" in a for a in args):
                return True
        except OSError:      # the process ended, or is not ours
            continue
    return False


def untested(scratch: Path) -> int | None:
    """How many mutants mutmut's cache still lists as untested (None before mutmut has written it)."""
    try:
        con = sqlite3.connect(f"file:{scratch / '.mutmut-cache'}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM Mutant WHERE status = 'untested'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return None


def restore(scratch: Path, rel: str) -> bool:
    """Put back the unmutated module from ``scratch/.pristine/`` if a killed mutmut left a mutant in
    it (mutmut writes each mutant into the file and restores it only when it ends normally).
    Returns whether it had to."""
    pristine = scratch / ".pristine" / Path(rel).name
    target = scratch / rel
    if not pristine.exists():
        raise RuntimeError(f"{pristine} is missing: this scratch copy cannot be resumed safely.")
    if target.read_bytes() == pristine.read_bytes():
        return False
    shutil.copy(pristine, target)
    return True


def supervise(cmd: list[str], scratch: Path, env: dict, idle: float = 45.0, poll: float = 5.0,
              max_restarts: int = 200, rel: str | None = None,
              startup: float | None = None) -> subprocess.CompletedProcess:
    """Run mutmut, restarting it (it resumes from its cache) whenever it hangs.

    mutmut 2.5.1 deadlocks on this machine about once every 20-60 mutants: it sits at 0% CPU with no
    test runner beneath it. A hang is ``idle`` seconds with no ``pytest`` process in ``scratch``
    (``startup`` seconds, default ``2 * idle``, before the first one of a start: mutmut reads its
    cache and the tests before it runs anything, slowly on a busy machine);
    the whole process group is then killed and mutmut started again, which tests only the mutants
    its cache still lists as untested (the one in flight among them). A killed mutmut leaves its
    mutant in the source file, so before every start the module ``rel`` is restored from its
    pristine copy (:func:`restore`); otherwise every later mutant would be tested on top of it.
    Gives up after ``max_restarts`` restarts without progress.
    """
    restarts, stalled, out, err = 0, 0, [], []
    while True:
        if rel is not None and restore(scratch, rel):
            print(f"restored {rel}: a killed mutmut had left a mutant in it", file=sys.stderr, flush=True)
        before = untested(scratch)
        log = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen(cmd, cwd=scratch, env=env, stdout=log, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        quiet_since, seen = time.time(), False
        while proc.poll() is None:
            time.sleep(poll)
            if runner_alive(scratch):
                quiet_since, seen = time.time(), True
            elif time.time() - quiet_since > (idle if seen else (2 * idle if startup is None else startup)):
                os.killpg(proc.pid, 9)
                proc.wait()
                break
        log.seek(0)
        out.append(log.read())
        log.close()
        if proc.returncode is not None and proc.returncode >= 0:
            return subprocess.CompletedProcess(cmd, proc.returncode, "".join(out), "")
        restarts += 1
        after = untested(scratch)
        stalled = 0 if (before is None or after is None or after < before) else stalled + 1
        print(f"mutmut hung ({after} mutants untested); restart {restarts}", file=sys.stderr, flush=True)
        if stalled >= 3 or restarts > max_restarts:
            return subprocess.CompletedProcess(cmd, -9, "".join(out), "mutmut kept hanging without progress")


def scratch_copy(prefix: str) -> Path:
    """A new temporary directory holding copies of ``robustvae/``, ``tests/`` and ``pyproject.toml``."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    for d in ("robustvae", "tests"):
        shutil.copytree(ROOT / d, scratch / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", scratch / "pyproject.toml")
    return scratch


def run(module: str, tests: list[str], keep: bool = False, functions: list[str] | None = None,
        select: str | None = None, keyword: str | None = None, resume: str | None = None,
        report_only: bool = False) -> dict:
    if resume:   # mutmut keeps its results in .mutmut-cache: only untested mutants run again
        scratch = Path(resume)
    else:
        scratch = scratch_copy(f"robustvae-mutation-{module}-")
    rel = f"robustvae/{module}.py"
    if not resume:
        (scratch / ".pristine").mkdir()
        shutil.copy(scratch / rel, scratch / ".pristine" / f"{module}.py")
    sel = (f" -m {select!r}" if select else "") + (f" -k {keyword!r}" if keyword else "")
    runner = f"{sys.executable} -m pytest -x -q -p no:cacheprovider{sel} {' '.join(tests)}"
    cmd = [sys.executable, "-m", "mutmut", "run", "--paths-to-mutate", rel,
           "--tests-dir", "tests", "--runner", runner, "--disable-mutation-types", DISABLED,
           "--no-progress", "--simple-output", "--test-time-multiplier", "3.0"]
    if functions:
        (scratch / "scope.patch").write_text(scope_patch(scratch / rel, rel, function_lines(scratch / rel, functions)))
        cmd += ["--use-patch-file", "scope.patch"]
    t0 = time.time()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if report_only:      # only read what an interrupted run left in its cache
        proc = subprocess.CompletedProcess(cmd, None, "", "")
    else:
        proc = supervise(cmd, scratch, env, rel=rel)
        if (scratch / ".pristine").exists() and restore(scratch, rel):
            print(f"restored {rel} after mutmut ended", file=sys.stderr, flush=True)
    seconds = time.time() - t0
    if not (scratch / ".mutmut-cache").exists():
        raise RuntimeError(f"mutmut did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    con = sqlite3.connect(scratch / ".mutmut-cache")
    rows = con.execute("SELECT Mutant.id, Mutant.status, Line.line_number, Line.line FROM Mutant "
                       "JOIN Line ON Mutant.line = Line.id").fetchall()
    counts = {v: 0 for v in STATUS.values()}
    survivors = []
    for mid, status, lineno, line in rows:
        counts[STATUS.get(status, status)] = counts.get(STATUS.get(status, status), 0) + 1
        if status == "bad_survived":
            diff = subprocess.run([sys.executable, "-m", "mutmut", "show", str(mid)], cwd=scratch,
                                  capture_output=True, text=True).stdout
            survivors.append({"id": mid, "status": STATUS[status], "line": lineno + 1,
                              "source": line.strip(), "diff": diff.strip()})
    total = sum(counts.values()) - counts["skipped"] - counts["untested"]
    # mutmut's "suspicious" is a kill that took long (tests failed after more than the baseline time
    # times --test-time-multiplier: mutmut.run_mutation), so it counts as killed, like a timeout
    killed = counts["killed"] + counts["timeout"] + counts["suspicious"]
    out = {"module": module, "complete": counts["untested"] == 0, "untested": counts["untested"],
           "tests": tests, "test_selection": sel.strip(), "scope": functions or "whole module",
           "mutants": total, "killed": killed,
           "survived": counts["survived"], "timeout": counts["timeout"], "suspicious": counts["suspicious"],
           "kill_rate": round(killed / total, 4) if total else None, "seconds": round(seconds),
           "disabled_mutation_types": DISABLED, "mutmut_exit": proc.returncode, "survivors": survivors}
    if not keep and not resume:
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        out["scratch"] = str(scratch)
    return out


def by_hand(module: str, line: int, old: str, new: str, tests: list[str], select: str | None = None,
            keyword: str | None = None) -> tuple[bool, str]:
    """Apply one mutant by hand (replace ``old`` by ``new`` once on ``line``, 1-based) in a scratch copy
    of ``robustvae/`` and ``tests/``, run ``tests`` with ``-x`` and return (killed, pytest's last line).

    This is how a survivor is shown killed by a new test without a whole mutmut run: tests/MUTANTS.md
    lists each such mutant with its line and change, so the claim can be repeated.
    Refuses (ValueError) a line that does not contain ``old``, or a change that leaves the line as it was.
    """
    src = ROOT / "robustvae" / f"{module}.py"
    lines = src.read_text().split("\n")
    if not 1 <= line <= len(lines) or old not in lines[line - 1]:
        found = lines[line - 1].strip() if 1 <= line <= len(lines) else "(no such line)"
        raise ValueError(f"robustvae/{module}.py line {line} does not contain {old!r}: {found}")
    if old == new:
        raise ValueError("the mutant must change the line")
    scratch = scratch_copy(f"robustvae-byhand-{module}-")
    try:
        lines[line - 1] = lines[line - 1].replace(old, new, 1)
        (scratch / "robustvae" / f"{module}.py").write_text("\n".join(lines))
        sel = (["-m", select] if select else []) + (["-k", keyword] if keyword else [])
        env = {**os.environ, "PYTHONPATH": str(scratch), "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *sel, *tests],
                              cwd=scratch, env=env, capture_output=True, text=True)
        out = proc.stdout.strip().splitlines()
        if proc.returncode in (2, 3, 4, 5):   # interrupted, internal error, usage error, nothing collected
            raise RuntimeError(f"pytest could not run the tests (exit {proc.returncode}):\n"
                               + "\n".join(out[-20:]) + proc.stderr[-2000:])
        return proc.returncode != 0, out[-1] if out else ""
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"mutation_{result['module']}.json").write_text(json.dumps(result, indent=1) + "\n")
    path = RESULTS / "mutation_summary.csv"
    fields = ["module", "scope", "mutants", "killed", "survived", "timeout", "untested", "kill_rate", "seconds"]
    rows = {}
    if path.exists():
        with path.open() as f:
            rows = {r["module"]: r for r in csv.DictReader(f)}
    rows[result["module"]] = {k: (" ".join(result[k]) if isinstance(result[k], list) else result[k]) for k in fields}
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for m in sorted(rows):
            w.writerow(rows[m])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("module", choices=sorted(TESTS))
    p.add_argument("--tests", nargs="+", help="test files to run against each mutant (default: the module's)")
    p.add_argument("--functions", nargs="+", help="mutate only these functions / Class.method / classes "
                   "(default: the module's SCOPE; 'all' for the whole module)")
    p.add_argument("-m", dest="select", default="not slow", help="pytest -m expression for the runner (default: 'not slow')")
    p.add_argument("-k", dest="keyword", help="pytest -k expression for the runner (default: the module's KEYWORD)")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted run in its kept scratch copy")
    p.add_argument("--report-only", action="store_true", help="with --resume: summarise the cache, run nothing")
    p.add_argument("--keep", action="store_true", help="keep the scratch copy (to inspect survivors with mutmut show)")
    p.add_argument("--by-hand", nargs=3, metavar=("LINE", "OLD", "NEW"),
                   help="apply one mutant (OLD -> NEW once on LINE) to a scratch copy, run the tests, print KILLED "
                        "or SURVIVED (exit 0 when killed, 1 when it survived); writes no result")
    args = p.parse_args(argv)
    if args.by_hand:
        line, old, new = args.by_hand
        if not line.isdigit():
            p.error(f"--by-hand LINE must be a line number, not {line!r}")
        killed, last = by_hand(args.module, int(line), old, new, args.tests or TESTS[args.module],
                               args.select or None, args.keyword)
        print(f"{args.module}:{line} {old!r} -> {new!r}: {'KILLED' if killed else 'SURVIVED'} ({last})")
        return 0 if killed else 1
    functions = args.functions or SCOPE.get(args.module)
    if functions == ["all"]:
        functions = None
    result = run(args.module, args.tests or TESTS[args.module], args.keep, functions, args.select or None,
                 args.keyword or KEYWORD.get(args.module), args.resume, args.report_only)
    write(result)
    print(f"{result['module']}: {result['mutants']} mutants, {result['killed']} killed, "
          f"{result['survived']} survived ({result['kill_rate']:.1%}) in {result['seconds']} s")
    for s in result["survivors"]:
        print(f"--- survivor {s['id']} line {s['line']}: {s['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

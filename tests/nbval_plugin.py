"""nbval settings for the book (loaded by pytest through ``-p tests.nbval_plugin``).

nbval re-executes every chapter and compares every output of every cell with the stored one.

- **Pinned numerics.** The kernels nbval starts inherit the book's pinned numerics
  (:mod:`robustvae.numerics`: thread count and CPU instruction sets), so a chapter computes the
  same numbers on any x86-64 machine with AVX2, whatever its core count or CPU generation, and
  whatever ``OMP_NUM_THREADS`` or ``ATEN_CPU_CAPABILITY`` the caller set.
- **Numbers within a tolerance, everything else exact.** Before nbval compares a text output
  (stdout, ``text/plain``, ``text/html``, glued values, figure fingerprints), the numbers in it are
  matched one by one with the stored ones: integers must be equal; a float may differ by
  :data:`robustvae.numerics.RTOL` (relative) plus one unit in its last printed digit (a rounding
  flip), which absorbs summation-order noise of what cannot be pinned (see
  :mod:`robustvae.numerics`). A number beyond that, any other text, a label, a changed number of
  values, fails as before, with nbval's diff.
- **Every result recomputed.** The kernels run with the result cache (:mod:`robustvae.memo`) off:
  models may be loaded from the model cache, every attack, margin and estimate is computed again.
- **Figures compared by their data.** :func:`robustvae.setup` makes every figure's text form a
  fingerprint of its data (:mod:`robustvae.fingerprint`), which is compared like any other text.
- **stderr is not compared.** Progress bars and log messages (data source, model-cache hits and
  misses) legitimately differ between a run with an empty cache and one with a warm cache.
  Everything printed to stdout, every table and every glued number still is.
"""

from __future__ import annotations

import math
import os
import re

from robustvae.numerics import RTOL, pin_environment

#: A number in text: not part of a word (``conv1``, ``x_2``), with optional sign, decimals, exponent.
NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w)")


def _is_integer(token: str) -> bool:
    return not any(c in token for c in ".eE")


def _last_digit_unit(token: str) -> float:
    """One unit of the last printed digit of a float token (``0.973`` -> 0.001, ``1.5e-05`` -> 1e-06)."""
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def numbers_match(ref: str, test: str, rtol: float = RTOL) -> bool:
    """Whether two number tokens agree: integers exactly, floats within ``rtol`` + one last-digit unit."""
    if ref == test:
        return True
    if _is_integer(ref) or _is_integer(test):
        return False
    a, b = float(ref), float(test)
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + _last_digit_unit(ref) * (1 + 1e-9)


def reconcile(ref: str, test: str, rtol: float = RTOL) -> str:
    """``test`` with every number that matches its stored counterpart replaced by the stored text.

    Only when both texts are the same apart from their numbers (same words, same count of numbers);
    otherwise ``test`` comes back unchanged and the comparison reports the difference.
    """
    if ref == test or not isinstance(ref, str) or not isinstance(test, str):
        return test
    ref_nums, test_nums = NUMBER.findall(ref), NUMBER.findall(test)
    if len(ref_nums) != len(test_nums) or NUMBER.split(ref) != NUMBER.split(test):
        return test
    it = iter(zip(ref_nums, test_nums))

    def pick(match: re.Match) -> str:
        r, t = next(it)
        return r if numbers_match(r, t, rtol) else t

    return NUMBER.sub(pick, test)


def _reconcile_outputs(test: list, ref: list) -> list:
    """Pair the outputs of one cell (by kind, in order) and reconcile their texts."""
    def key(out):
        return out.get("output_type"), out.get("name")

    refs_by_kind: dict = {}
    for out in ref:
        refs_by_kind.setdefault(key(out), []).append(out)
    seen: dict = {}
    result = []
    for out in test:
        k = key(out)
        i = seen.get(k, 0)
        seen[k] = i + 1
        partner = refs_by_kind.get(k, [])
        if i >= len(partner):
            result.append(out)
            continue
        r = partner[i]
        new = out.copy() if hasattr(out, "copy") else dict(out)
        if "text" in out and "text" in r:
            new["text"] = reconcile(r["text"], out["text"])
        if "data" in out and "data" in r:
            data = dict(out["data"])
            for mime, value in data.items():
                if mime in r["data"] and isinstance(value, str) and not mime.startswith("image/"):
                    data[mime] = reconcile(r["data"][mime], value)
            new["data"] = data
        result.append(new)
    return result


def pytest_configure(config):
    try:
        from nbval import plugin
    except ImportError:  # nbval not installed: nothing to configure
        return
    if getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False):
        pin_environment()  # inherited by every kernel nbval starts
        # Every number recomputed: trained models may come from the model cache, but no attack or
        # estimate from the result cache (robustvae.memo), which a `make book` run may have filled.
        os.environ["ROBUSTVAE_RESULT_CACHE"] = "off"
    if getattr(plugin.IPyNbFile, "_robustvae_patched", False):
        return
    original_init = plugin.IPyNbFile.__init__
    original_compare = plugin.IPyNbCell.compare_outputs

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.skip_compare = tuple(self.skip_compare) + ("stderr",)

    def compare_outputs(self, test, ref, skip_compare=None):
        return original_compare(self, _reconcile_outputs(list(test), list(ref)), ref, skip_compare)

    plugin.IPyNbFile.__init__ = __init__
    plugin.IPyNbCell.compare_outputs = compare_outputs
    plugin.IPyNbFile._robustvae_patched = True

"""Tables for reading: the one formatter every chapter's tables go through.

The book's presentation rules (``GUIDE.md``, "Presentation"): a dash for missing values,
integers as integers, one precision per column, intervals as ``"0.81 [0.76, 0.86]"``.
:func:`fmt_table` turns a numeric :class:`pandas.DataFrame` into a DataFrame of strings that
follows them; :func:`interval` writes one estimate with its interval. Both are presentation
only: compute on the numbers, format at the end, and never read numbers back from a formatted
table.

The result is a plain DataFrame (not a ``Styler``), so its HTML and text are the same on every
run, which the notebooks' regression tests (nbval) rely on.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from numbers import Integral, Real

import numpy as np
import pandas as pd

__all__ = ["DASH", "NBSP", "fmt_number", "fmt_table", "interval"]

#: What a missing value (``NaN``, ``None``, ``pd.NA``) shows as.
DASH = "–"


def _is_missing(value) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return bool(isinstance(value, Real) and math.isnan(value))
    except (TypeError, ValueError):
        return False


def fmt_number(value, precision: int = 3, integer: bool = False, na: str = DASH) -> str:
    """One value as text: ``na`` for missing, ``"∞"`` for infinity, else fixed-point.

    ``integer=True`` writes a whole number without decimals (``1000.0`` -> ``"1000"``); a value
    that is not whole is still written with ``precision`` decimals rather than rounded away.
    Booleans become ``"yes"``/``"no"``; strings and other objects are returned as ``str(value)``.
    """
    if _is_missing(value):
        return na
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (Integral, np.integer)):
        return f"{int(value):d}"
    if isinstance(value, (Real, np.floating)):
        v = float(value)
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if integer and v.is_integer():
            return f"{int(v):d}"
        return f"{v:.{precision}f}"
    return str(value)


def _integral_series(s: pd.Series) -> bool:
    """Whether ``s`` holds counts: an integer dtype, or floats that are all whole and not all in
    [-1, 1] (so a column of rates that happen to be 0.0 and 1.0 keeps its decimals)."""
    if pd.api.types.is_bool_dtype(s):
        return False
    if pd.api.types.is_integer_dtype(s):
        return True
    vals = [v for v in s if not _is_missing(v)]
    nums = [float(v) for v in vals if isinstance(v, (Real, np.floating, np.integer))
            and not isinstance(v, (bool, np.bool_))]
    if not nums or len(nums) != len(vals) or any(math.isinf(v) for v in nums):
        return False
    return all(v.is_integer() for v in nums) and max(abs(v) for v in nums) > 1


def fmt_table(
    df: pd.DataFrame | pd.Series,
    precision: int | Mapping[Hashable, int] = 3,
    ints: str | Iterable[Hashable] | None = "auto",
    na: str = DASH,
    axis: int = 0,
) -> pd.DataFrame:
    """``df`` formatted for reading, as a DataFrame of strings with the same index and columns.

    Parameters
    ----------
    df:
        The numbers (a Series is treated as a one-column frame). Cells that are already strings
        (an :func:`interval`, a label) are kept as they are.
    precision:
        Decimals for every column, or a mapping ``{column: decimals}``; columns not in the
        mapping get 3. One precision per column (per row with ``axis=1``).
    ints:
        ``"auto"`` writes a column as integers when it is of an integer dtype or holds only whole
        floats beyond [-1, 1] (counts that became floats through a missing value or a transpose:
        ``1000.0`` -> ``1000``); a list of columns names them explicitly; ``None`` never.
        A column given its own ``precision`` is never auto-detected as integers.
    na:
        What a missing value shows as (a dash by default, never ``NaN``).
    axis:
        ``0`` formats column by column; ``1`` row by row, for tables whose rows are the
        quantities (then ``precision`` and ``ints`` name rows).

    >>> fmt_table(pd.DataFrame({"n": [1000.0, float("nan")], "acc": [0.97312, 0.5]}))
          n    acc
    0  1000  0.973
    1     –  0.500
    """
    if isinstance(df, pd.Series):
        df = df.to_frame()
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 (columns) or 1 (rows), got {axis!r}")
    data = df if axis == 0 else df.T
    per = dict(precision) if isinstance(precision, Mapping) else {}
    default = 3 if isinstance(precision, Mapping) else int(precision)
    if ints == "auto":
        int_cols = {c for c in data.columns if c not in per and _integral_series(data[c])}
    elif ints is None:
        int_cols = set()
    elif isinstance(ints, str):
        raise ValueError(f"ints must be 'auto', None or a list of labels, got {ints!r}")
    else:
        int_cols = set(ints)
    out = {}
    for j, c in enumerate(data.columns):
        p = per.get(c, default)
        out[j] = [fmt_number(v, p, c in int_cols, na) for v in data.iloc[:, j]]
    res = pd.DataFrame(out, index=data.index)
    res.columns = data.columns
    return res if axis == 0 else res.T


#: A no-break space: keeps ``[lo, hi]`` on one line when a narrow table cell wraps.
NBSP = "\u00a0"


def interval(point, lo, hi, precision: int = 2, na: str = DASH, keep_together: bool = False) -> str:
    """An estimate with its interval: ``interval(0.8123, 0.76, 0.86)`` -> ``"0.81 [0.76, 0.86]"``.

    A missing ``point`` gives ``na``; a missing bound gives the point alone. With
    ``keep_together=True`` the space inside the brackets is a no-break space, so a table cell
    that must wrap puts the whole interval on its own line under the estimate.
    """
    if _is_missing(point):
        return na
    p = fmt_number(point, precision, na=na)
    if _is_missing(lo) or _is_missing(hi):
        return p
    sep = "," + (NBSP if keep_together else " ")
    return f"{p} [{fmt_number(lo, precision, na=na)}{sep}{fmt_number(hi, precision, na=na)}]"

"""Tests of robustvae.tables: dashes for missing values, integers as integers, one precision
per column, intervals."""

import math

import numpy as np
import pandas as pd
import pytest

from robustvae.tables import DASH, fmt_number, fmt_table, interval


def test_missing_values_are_dashes_never_nan():
    df = pd.DataFrame({"a": [0.5, np.nan], "b": [None, 2.0]}, dtype=object)
    out = fmt_table(df)
    assert out.loc[1, "a"] == DASH and out.loc[0, "b"] == DASH
    assert "NaN" not in out.to_html() and "nan" not in out.to_string()


def test_counts_become_integers_rates_keep_decimals():
    df = pd.DataFrame({"n": [1000.0, 913.0, np.nan], "rate": [1.0, 0.0, 0.5], "k": [3, 4, 5]})
    out = fmt_table(df)
    assert list(out["n"]) == ["1000", "913", DASH]
    assert list(out["rate"]) == ["1.000", "0.000", "0.500"]
    assert list(out["k"]) == ["3", "4", "5"]


def test_one_precision_per_column():
    df = pd.DataFrame({"x": [0.12345, 1.5], "y": [10.0, 2.25]})
    out = fmt_table(df, precision={"x": 2})
    assert list(out["x"]) == ["0.12", "1.50"]
    assert list(out["y"]) == ["10.000", "2.250"]  # given no precision: 3, not auto-integer
    assert list(fmt_table(df, precision=1)["x"]) == ["0.1", "1.5"]


def test_explicit_ints_and_none():
    df = pd.DataFrame({"n": [2.0, 3.0]})
    assert list(fmt_table(df, ints=None)["n"]) == ["2.000", "3.000"]
    assert list(fmt_table(df, ints=["n"])["n"]) == ["2", "3"]
    with pytest.raises(ValueError, match="ints"):
        fmt_table(df, ints="yes")


def test_rows_axis_formats_row_by_row():
    df = pd.DataFrame({"A": [500.0, 0.9731], "B": [1000.0, 0.5]}, index=["n", "accuracy"])
    out = fmt_table(df, axis=1)
    assert list(out.loc["n"]) == ["500", "1000"]
    assert list(out.loc["accuracy"]) == ["0.973", "0.500"]
    assert list(out.columns) == ["A", "B"] and list(out.index) == ["n", "accuracy"]
    with pytest.raises(ValueError, match="axis"):
        fmt_table(df, axis=2)


def test_keeps_strings_index_and_multiindex_columns():
    cols = pd.MultiIndex.from_tuples([("linf", 0.1), ("l2", 1.0)])
    df = pd.DataFrame([[0.1, "0.81 [0.76, 0.86]"]], index=pd.Index(["m"], name="model"), columns=cols)
    out = fmt_table(df)
    assert out.columns.equals(cols) and out.index.name == "model"
    assert out.iloc[0, 1] == "0.81 [0.76, 0.86]" and out.iloc[0, 0] == "0.100"


def test_series_infinity_and_booleans():
    out = fmt_table(pd.Series([math.inf, -math.inf, 0.25], name="margin"))
    assert list(out["margin"]) == ["∞", "-∞", "0.250"]
    assert fmt_number(True) == "yes" and fmt_number(np.bool_(False)) == "no"
    assert fmt_number(np.int64(7)) == "7" and fmt_number(2.5, integer=True, precision=1) == "2.5"


def test_interval():
    assert interval(0.8123, 0.76, 0.864) == "0.81 [0.76, 0.86]"
    assert interval(0.8123, 0.76, 0.864, precision=3) == "0.812 [0.760, 0.864]"
    assert interval(np.nan, 0.1, 0.2) == DASH
    assert interval(0.5, np.nan, 0.7) == "0.50"
    kept = interval(0.8123, 0.76, 0.864, keep_together=True)
    assert kept == "0.81 [0.76,\u00a00.86]" and kept.count(" ") == 1

"""Figures that the regression tests can compare: a fingerprint of the data behind every figure.

A notebook stores a figure as a PNG (what the book shows) and a text form, by default
``<Figure size 770x400 with 2 Axes>``, which is all that ``pytest --nbval`` compares: a figure
showing other data, or two figures swapped, passes. :func:`install` replaces the text form of
every matplotlib figure displayed in the notebook by :func:`figure_fingerprint`: per axes its
title and, per kind of artist (lines, points, bars, images, filled areas, text labels), how many
values it draws and their sum and sum of squares, in data coordinates. The PNG is unchanged; the
regression tests compare the fingerprint's numbers within the same tolerance as every other
number (:data:`robustvae.numerics.RTOL`), so a figure whose data moved fails.

Example::

    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots(figsize=(4, 3)); _ = ax.plot([0, 1, 2], [1, 4, 9]); _ = ax.set_title("squares")
    >>> print(figure_fingerprint(fig))
    <Figure 4x3 in, 1 axes | 'squares': lines n=6 sum=17 sumsq=103>
    >>> plt.close(fig)
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["figure_fingerprint", "install"]

_NUMBER = re.compile(r"[-+\u2212]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _stats(values: list[np.ndarray]) -> str:
    flat = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values]) if values else np.zeros(0)
    finite = flat[np.isfinite(flat)]
    text = f"n={flat.size} sum={finite.sum():.6g} sumsq={np.square(finite).sum():.6g}"
    if finite.size < flat.size:
        text += f" nonfinite={flat.size - finite.size}"
    return text


def _data(values) -> np.ndarray:
    arr = np.ma.asarray(values)
    return np.ma.filled(arr.astype(float), np.nan) if arr.dtype.kind in "biuf" else np.zeros(0)


def _collection_values(c) -> list[np.ndarray]:
    out = []
    arr = c.get_array()
    if arr is not None:
        out.append(_data(arr))  # heatmaps (QuadMesh), coloured scatters
    offsets = c.get_offsets()
    if offsets is not None and np.size(offsets) and c.get_offset_transform() is not None:
        out.append(_data(offsets))  # scatter points
    if type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection", "LineCollection"):
        out.extend(_data(p.vertices) for p in c.get_paths())  # fill_between, violins, error bars
    return out


def _patch_values(p) -> np.ndarray:
    if type(p).__name__ == "Rectangle":  # bars and histograms
        return np.array([p.get_x(), p.get_y(), p.get_width(), p.get_height()], dtype=float)
    try:
        return _data(p.get_patch_transform().transform(p.get_path().vertices))
    except Exception:  # pragma: no cover - exotic patches
        return np.zeros(0)


def _axes_fingerprint(ax) -> str:
    parts = [repr(ax.get_title() or ax.get_ylabel() or "")]
    kinds = {
        "lines": [_data(line.get_xydata()) for line in ax.lines],
        "points": [v for c in ax.collections for v in _collection_values(c)],
        "bars": [_patch_values(p) for p in ax.patches],
        "images": [_data(im.get_array()) for im in ax.images],
        "labels": [np.array([float(m.replace("\u2212", "-")) for m in _NUMBER.findall(t.get_text())])
                   for t in ax.texts],
    }
    for kind, values in kinds.items():
        values = [v for v in values if np.size(v)]
        if values:
            parts.append(f"{kind} {_stats(values)}")
    return ": ".join(parts[:2]) + ("; " + "; ".join(parts[2:]) if len(parts) > 2 else "")


def figure_fingerprint(fig) -> str:
    """A one-line text summary of the data that ``fig`` draws (see the module docstring)."""
    w, h = fig.get_size_inches()
    head = f"<Figure {w:.3g}x{h:.3g} in, {len(fig.axes)} axes"
    body = [_axes_fingerprint(ax) for ax in fig.axes if ax.get_visible()]
    return head + "".join(f" | {b}" for b in body) + ">"


def install() -> bool:
    """Make the text form of every figure displayed in this IPython kernel its fingerprint.

    Done through ``Figure._repr_pretty_``, which IPython's text formatter consults: a type printer
    registered with the formatter would be dropped again by the inline backend, which clears the
    formatters' figure entries when it activates at the first figure. Returns False (and does
    nothing) outside IPython.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the book
        return False
    if get_ipython() is None:
        return False
    from matplotlib.figure import Figure

    Figure._repr_pretty_ = lambda fig, p, cycle: p.text(figure_fingerprint(fig))
    return True

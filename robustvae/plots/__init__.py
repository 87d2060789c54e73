"""Each chapter's figures, one module per chapter (named after the chapter's science module).

The science modules (:mod:`robustvae.ood`, :mod:`robustvae.purify`, ...) compute; the functions
here only draw what a chapter computed, so that a chapter's cells read as parameters, calls,
figures and claims. The book's style and the figures every chapter shares are in
:mod:`robustvae.plotting`. Submodules are imported on first use (``rv.plots.ood``).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

#: The chapters' figure modules, each importable as ``robustvae.plots.NAME``.
SUBMODULES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))
__all__: list[str] = []


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'robustvae.plots' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SUBMODULES))

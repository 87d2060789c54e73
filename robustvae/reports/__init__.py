"""Each chapter's tables and summary numbers, one module per chapter (named after its science module).

The science modules (:mod:`robustvae.ood`, :mod:`robustvae.purify`, ...) hold the methods; the
functions here run a chapter's evaluation protocol through them (for example chapter 4's attack
portfolio, :func:`robustvae.reports.purify.run_portfolio`) and assemble what it computed into its
tables, the numbers its prose quotes and its claims, so that a chapter's cells read as parameters,
calls, figures and claims. Table formatting
shared by every chapter is in :mod:`robustvae.tables`; figures are in :mod:`robustvae.plots`.
Submodules are imported on first use (``rv.reports.ood``).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

#: The chapters' report modules, each importable as ``robustvae.reports.NAME``.
SUBMODULES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))
__all__: list[str] = []


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'robustvae.reports' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SUBMODULES))

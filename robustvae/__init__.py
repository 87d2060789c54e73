"""robustvae: the shared library of the book *How VAEs help and fail at making ML robust*.

One module per concern. Shared by every chapter: :mod:`~robustvae.data` (datasets),
:mod:`~robustvae.models` (classifier, VAE), :mod:`~robustvae.training` and :mod:`~robustvae.cache`
(training through the model cache), :mod:`~robustvae.memo` (the result cache: attacks and
estimates computed once per exact input), :mod:`~robustvae.plotting` and :mod:`~robustvae.tables` (style,
figures, tables), :mod:`~robustvae.utils` (seeds, devices, parameter checks),
:mod:`~robustvae.numerics` (the pinned numerics that make the stored numbers portable),
:mod:`~robustvae.fingerprint` (figures the regression tests can compare), :mod:`~robustvae.claims`
(each chapter's checked claims), :mod:`~robustvae.attacks` (FGSM, PGD, L-BFGS, attacks on VAEs).
One per chapter: :mod:`~robustvae.ood` and :mod:`~robustvae.discrete` (2), :mod:`~robustvae.consistency` (3),
:mod:`~robustvae.purify` (4), :mod:`~robustvae.calibration` (5), :mod:`~robustvae.rrobust` and
:mod:`~robustvae.tcvae` (6), :mod:`~robustvae.lipschitz` and :mod:`~robustvae.certify` (7),
:mod:`~robustvae.perturbation` (8), :mod:`~robustvae.scorecard` (9), :mod:`~robustvae.score` and
:mod:`~robustvae.score_report` (10: scoring your own VAE). Each chapter's figures and tables:
the subpackages :mod:`~robustvae.plots` and :mod:`~robustvae.reports`. Reruns and sweeps:
``python -m robustvae.runs`` (:mod:`~robustvae.runs`).

Submodules and the names below are imported on first use (PEP 562), so ``import robustvae`` is
fast and pulls in neither torch nor a chapter's dependencies until they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: The library's modules, each importable as ``robustvae.NAME`` (or ``from robustvae import NAME``).
SUBMODULES = (
    "attacks", "bjorck", "cache", "calibration", "certify", "claims", "consistency", "data", "discrete",
    "fingerprint",
    "lipschitz", "memo", "models", "numerics", "ood", "perturbation", "plots", "plotting", "purify", "reports",
    "rrobust", "runs", "stats",
    "score", "score_report", "scorecard", "tables", "tcvae", "training", "utils",
)

#: The names of the package face, and the module each lives in.
_NAMES = {
    "DATASETS": "data", "DataSourceError": "data", "load_dataset": "data", "stratified_subset": "data",
    "VAE": "models", "Classifier": "models",
    "ClassifierConfig": "training", "VAEConfig": "training", "get_classifier": "training",
    "get_vae": "training", "accuracy": "training", "predict_logits": "training", "vae_metrics": "training",
    "cache_dir": "cache", "load_or_train": "cache",
    "seed_everything": "utils", "resolve_device": "utils", "check_choice": "utils",
    "check_positive": "utils", "setup": "utils",
    "Claims": "claims", "ClaimsFailed": "claims", "record": "claims",
}

__all__ = list(_NAMES) + list(SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'robustvae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

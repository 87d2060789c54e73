"""robustvae: the shared library of the book *How VAEs help and fail at making ML robust*.

One module per concern. Shared by every chapter: :mod:`~robustvae.data` (datasets),
:mod:`~robustvae.models` (classifier, VAE), :mod:`~robustvae.training` and :mod:`~robustvae.cache`
(training through the model cache), :mod:`~robustvae.plotting` (style and figures),
:mod:`~robustvae.utils` (seeds, devices, parameter checks), :mod:`~robustvae.claims` (each chapter's
checked claims), :mod:`~robustvae.attacks` (FGSM, PGD, L-BFGS, attacks on VAEs). One per chapter: :mod:`~robustvae.ood` (2), :mod:`~robustvae.consistency`
(3), :mod:`~robustvae.purify` (4), :mod:`~robustvae.calibration` (5), :mod:`~robustvae.rrobust` and
:mod:`~robustvae.tcvae` (6), :mod:`~robustvae.lipschitz` and :mod:`~robustvae.certify` (7),
:mod:`~robustvae.perturbation` (8), :mod:`~robustvae.scorecard` (9). Reruns and sweeps:
``python -m robustvae.runs`` (:mod:`~robustvae.runs`).
"""

from . import attacks, cache, claims, data, models, plotting, training, utils
from . import calibration, certify, consistency, lipschitz, ood, perturbation, purify, rrobust, scorecard, tcvae
from .cache import cache_dir, load_or_train
from .claims import Claims, ClaimsFailed
from .data import DATASETS, DataSourceError, load_dataset, stratified_subset
from .models import VAE, Classifier
from .training import (
    ClassifierConfig,
    VAEConfig,
    accuracy,
    get_classifier,
    get_vae,
    predict_logits,
    vae_metrics,
)
from .utils import check_choice, check_positive, resolve_device, seed_everything, setup

__version__ = "0.1.0"

__all__ = [
    "DATASETS", "DataSourceError", "load_dataset", "stratified_subset",
    "VAE", "Classifier", "ClassifierConfig", "VAEConfig", "get_classifier", "get_vae",
    "accuracy", "predict_logits", "vae_metrics", "cache_dir", "load_or_train",
    "seed_everything", "resolve_device", "check_choice", "check_positive", "setup",
    "Claims", "ClaimsFailed",
]

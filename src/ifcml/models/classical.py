"""Classical estimators from model specs (``models/*.yaml``): the families and the pipelines.

A spec names a family from :data:`FAMILIES` (never an arbitrary import path), fixed settings,
whether features are standardised, how classes are balanced, and a hyperopt search space
written in YAML. Missing feature values are imputed with the training median. Adding a family
is one entry in :data:`FAMILIES` and one YAML spec (see ``models/README.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from hyperopt import hp
from hyperopt.pyll import scope
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.class_weight import compute_sample_weight
from xgboost import XGBClassifier


@dataclass(frozen=True)
class Family:
    """How ifcml builds, fits and saves one kind of classical estimator."""

    estimator: type  # a scikit-learn-style classifier
    seed: str | None = "random_state"  # the parameter its seed goes to (None: it draws nothing)
    bare: bool = False  # handles missing values and scales itself: fitted without the impute/scale steps
    flavor: str = "sklearn"  # how it is saved (ifcml.models.saved): sklearn (skops) or xgboost (JSON)
    probabilities: bool = True  # answers predict_proba (a stack can combine it)


FAMILIES = {
    "gaussian_nb": Family(GaussianNB, seed=None),
    "random_forest": Family(RandomForestClassifier),
    "linear_svm": Family(LinearSVC, probabilities=False),
    "logistic_regression": Family(LogisticRegression),
    "xgboost": Family(XGBClassifier, bare=True, flavor="xgboost"),
}
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "quniform", "qloguniform")


class Parameter(BaseModel):
    """One searched hyperparameter: exactly one distribution, bounds as real values."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    choice: list | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None  # bounds, not their logarithms
    quniform: tuple[float, float, float] | None = None
    qloguniform: tuple[float, float, float] | None = None
    integer: bool = False

    @model_validator(mode="after")
    def _one_distribution(self):
        given = [d for d in DISTRIBUTIONS if getattr(self, d) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(DISTRIBUTIONS)} (got {', '.join(given) or 'none'})"
            )
        return self

    def space(self, label: str):
        if self.choice is not None:
            return hp.choice(label, self.choice)
        if self.uniform is not None:
            node = hp.uniform(label, *self.uniform)
        elif self.loguniform is not None:
            node = hp.loguniform(label, *map(math.log, self.loguniform))
        elif self.quniform is not None:
            node = hp.quniform(label, *self.quniform)
        else:
            low, high, q = self.qloguniform
            node = hp.qloguniform(label, math.log(low), math.log(high), q)
        return scope.int(node) if self.integer else node


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    estimator: Literal[tuple(FAMILIES)]  # type: ignore[valid-type]
    scale: bool = False  # standardise features (with training statistics) before the estimator
    balance: Literal["undersample", "class_weight", "none"] = "undersample"
    fixed: dict = {}
    search: dict[str, Parameter] = {}
    max_evals: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _fixed_or_searched(self):
        both = sorted(set(self.fixed) & set(self.search))
        if both:
            raise ValueError(f"{', '.join(both)}: both fixed and searched; the search would override it")
        return self

    def space(self) -> dict:
        return {name: parameter.space(name) for name, parameter in self.search.items()}

    @property
    def family(self) -> Family:
        return FAMILIES[self.estimator]


def build(spec: ModelSpec, params: dict, seed: int):
    """An unfitted estimator for ``params`` (searched values): bare families alone, others after
    median imputation (and standardisation, when the spec asks) in a pipeline."""
    family = spec.family
    settings = {**spec.fixed, **params}
    if family.seed:
        settings.setdefault(family.seed, seed)
    estimator = family.estimator(**settings)
    if family.bare:
        return estimator
    steps = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]  # all-missing -> 0
    if spec.scale:
        steps.append(("scale", StandardScaler()))
    return Pipeline([*steps, ("estimator", estimator)])


def fit(spec: ModelSpec, params: dict, seed: int, features: np.ndarray, labels: np.ndarray):
    """Fit on encoded labels (0..K-1); class weights when the spec balances that way."""
    model = build(spec, params, seed)
    weights = compute_sample_weight("balanced", labels) if spec.balance == "class_weight" else None
    if not spec.family.bare:
        return model.fit(features, labels, estimator__sample_weight=weights)
    present = np.unique(labels)
    if np.array_equal(present, np.arange(len(present))):
        return model.fit(features, labels, sample_weight=weights)
    model.fit(features, np.searchsorted(present, labels), sample_weight=weights)
    return PresentClasses(model, present)


class PresentClasses:
    """A bare estimator may learn only labels 0..m-1 (XGBoost does): when some classes are absent
    from the training rows (a held-out unit holding a whole class), it learns the present ones
    and answers in the full coding."""

    def __init__(self, model, present: np.ndarray):
        self.model, self.present = model, present

    @property
    def classes_(self) -> np.ndarray:
        return self.present

    def predict(self, features) -> np.ndarray:
        return self.present[self.model.predict(features)]

    def predict_proba(self, features) -> np.ndarray:
        return self.model.predict_proba(features)


def class_probabilities(model, features, n_classes: int) -> np.ndarray | None:
    """P(class) per row over all ``n_classes`` codes (0 for classes the model never saw), or
    None for models without probabilities (the linear SVM)."""
    if not hasattr(model, "predict_proba"):
        return None
    given = model.predict_proba(features)
    full = np.zeros((len(given), n_classes))
    full[:, np.asarray(model.classes_, int)] = given
    return full

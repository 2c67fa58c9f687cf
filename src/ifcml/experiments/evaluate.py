"""Evaluating one classical model on one channel set over a split: nested and leak-free.

For every fold, everything learnt from data is learnt from the fold's training rows only:
the pruned feature list (pycytominer), the class balance (per-instance undersampling), the
hyperparameters (hyperopt on an inner split of the training instances), the imputation and
scaling statistics (inside the fitted pipeline). The held-out rows are only predicted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ifcml.experiments.splits import Fold, make_folds, undersample_per_instance
from ifcml.features.prune import select_features
from ifcml.features.recipe import Pruning
from ifcml.features.table import CELL, FAILED, INSTANCE, LABEL, feature_columns
from ifcml.models.classical import ModelSpec, class_probabilities, fit
from ifcml.models.tuning import Trial, tune
from ifcml.progress import SILENT, Progress


@dataclass
class FoldResult:
    """What one held-out unit gave, and what its training chose."""

    name: str
    predictions: pd.DataFrame  # cell_id, instance, label, predicted
    params: dict
    trials: list[Trial]
    features: list[str]
    train_seconds: float
    predict_seconds: float
    curves: dict[str, list[float]] = field(default_factory=dict)  # per epoch (networks)
    details: dict = field(default_factory=dict)  # learnt besides hyperparameters (networks: epochs, means)


@dataclass
class Evaluation:
    model: str
    classes: list[str]
    folds: list[FoldResult] = field(default_factory=list)

    @property
    def predictions(self) -> pd.DataFrame:
        return pd.concat([f.predictions for f in self.folds], ignore_index=True)


def usable_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Labelled cells whose outline was found (when segmentation was part of the job), renumbered."""
    keep = table[LABEL].notna()
    if FAILED in table:
        keep &= ~table[FAILED].astype(bool)
    return table[keep].reset_index(drop=True)


@dataclass
class Trained:
    """A model fitted on some rows, with everything that was learnt from those rows alone."""

    model: object
    features: list[str]
    params: dict
    trials: list[Trial]
    rows: np.ndarray  # what it learnt from (after balancing): table rows; for networks, cell ids
    curves: dict[str, list[float]] = field(default_factory=dict)  # per epoch (networks)
    details: dict = field(default_factory=dict)  # learnt besides hyperparameters (networks: epochs, means)


def train(
    table: pd.DataFrame,
    rows: np.ndarray,
    spec: ModelSpec,
    features: list[str],
    pruning: Pruning,
    seed: int,
    max_evals: int,
    classes: list[str],
    progress: Progress = SILENT,
) -> Trained:
    """Prune, balance, tune and fit using ``rows`` of ``table`` and nothing else."""
    cells = table.iloc[rows]
    kept = select_features(cells[[INSTANCE, LABEL, *features]], pruning, seed)
    if spec.balance == "undersample":
        rows = rows[undersample_per_instance(cells, np.arange(len(cells)), seed)]
    x, y = _design(table, rows, kept, classes)
    groups = table[INSTANCE].to_numpy()[rows]
    params, trials = tune(spec, x.to_numpy(), y, groups, seed, max_evals, progress)
    return Trained(fit(spec, params, seed, x, y), kept, params, trials, rows)


def run_fold(
    table: pd.DataFrame,
    fold: Fold,
    spec: ModelSpec,
    features: list[str],
    pruning: Pruning,
    seed: int,
    max_evals: int,
    classes: list[str],
    progress: Progress = SILENT,
) -> FoldResult:
    """Train on ``fold.train`` (see :func:`train`); predict ``fold.test``."""
    started = time.perf_counter()
    trained = train(table, fold.train, spec, features, pruning, seed, max_evals, classes, progress)
    fitted = time.perf_counter()
    test = table.iloc[fold.test]
    predicted = np.asarray(classes)[trained.model.predict(test[trained.features])]
    predictions = pd.DataFrame(
        {
            "cell_id": test[CELL].to_numpy(),
            "instance": test[INSTANCE].to_numpy(),
            "label": test[LABEL].to_numpy(),
            "predicted": predicted,
        }
    )
    probabilities = class_probabilities(trained.model, test[trained.features], len(classes))
    if probabilities is not None:  # as the network branch gives them: the readout's PACC uses them
        for k, name in enumerate(classes):
            predictions[f"probability_{name}"] = probabilities[:, k]
    return FoldResult(
        fold.name,
        predictions,
        trained.params,
        trained.trials,
        trained.features,
        fitted - started,
        time.perf_counter() - fitted,
    )


def evaluate(
    table: pd.DataFrame,
    spec: ModelSpec,
    split: str,
    *,
    features: list[str] | None = None,
    pruning: Pruning | None = None,
    seed: int = 0,
    max_evals: int | None = None,
) -> Evaluation:
    """Every fold of ``split`` on usable cells of ``table`` (see :func:`usable_cells`)."""
    features = features or feature_columns(table)
    classes = sorted(table[LABEL].unique().tolist())
    result = Evaluation(spec.name, classes)
    for fold in make_folds(table, split, seed):
        result.folds.append(
            run_fold(
                table, fold, spec, features, pruning or Pruning(), seed, max_evals or spec.max_evals, classes
            )
        )
    return result


def _design(table: pd.DataFrame, rows: np.ndarray, features: list[str], classes: list[str]):
    x = table.iloc[rows][features].astype(np.float64)  # a frame: fitted models keep the feature names
    y = pd.Categorical(table[LABEL].to_numpy()[rows], categories=classes).codes.astype(np.int64)
    return x, y

"""What a design's work gives: a trained model, a held-out unit's result, their pooling.

Both branches give the same records, so metrics, tracking and the report treat them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ifcml.models.tuning import Trial


@dataclass
class Trained:
    """A model fitted on some rows, with everything that was learnt from those rows alone."""

    model: Any  # a fitted scikit-learn / XGBoost estimator or a Keras model
    features: list[str]  # the model's inputs: feature columns, or a network's channels
    params: dict
    trials: list[Trial]
    rows: np.ndarray  # what it learnt from (after balancing): table rows; for networks, cell ids
    curves: dict[str, list[float]] = field(default_factory=dict)  # per epoch (networks)
    details: dict = field(default_factory=dict)  # learnt besides hyperparameters (networks: epochs, means)


@dataclass
class FoldResult:
    """What one held-out unit gave, and what its training chose."""

    name: str
    predictions: pd.DataFrame  # cell_id, instance, label, predicted[, probability_<class>]
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


@dataclass
class FinalModel:
    """The design's model refitted on every usable cell, and what its parent run keeps with it."""

    trained: Trained
    spec: dict  # the model spec as logged
    flavor: str  # how it is saved (ifcml.models.saved)
    example: Any  # an input of the model (a few cells' features, or crops): its signature's
    inputs: dict | None  # how raw cells become its input (see ifcml.deploy)
    figures: dict = field(default_factory=dict)  # file name -> matplotlib Figure

"""One fold of a network, and its final refit: the deep branch's counterpart of
:mod:`ifcml.experiments.evaluate`, giving the same :class:`FoldResult` and :class:`Trained` so
metrics, tracking and comparison treat both branches alike.

Folds come from the same :func:`make_folds` over the same cells table. Each fold trains on its
training rows only (balancing, validation split and channel means included, see
:func:`ifcml.models.deep.train_network`); held-out crops are only predicted. Every training
checkpoints into its own folder, named by a fingerprint of everything it depends on, so a
killed evaluation resumes where it stopped and finished folds are not trained again.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ifcml.experiments.evaluate import FoldResult, Trained
from ifcml.experiments.splits import Fold
from ifcml.features.table import CELL, INSTANCE, LABEL
from ifcml.models.deep import predict_proba, train_network
from ifcml.models.network_spec import NetworkSpec


def store_cells_table(cells: pd.DataFrame) -> pd.DataFrame:
    """cells.parquet with the feature table's ``Metadata_`` names, so both branches share helpers."""
    return cells.rename(columns=lambda column: f"Metadata_{column}")


def train_on(
    table: pd.DataFrame,
    rows: np.ndarray,
    crops: np.ndarray,
    spec: NetworkSpec,
    channels: list[str],
    classes: list[str],
    seed: int,
    checkpoints: Path,
    context: dict,
) -> Trained:
    """A network trained on ``rows`` of ``table`` (checkpointed under ``checkpoints``)."""
    positions = table[CELL].to_numpy()[rows]  # cell ids = store rows: where the crops are
    fingerprint = _fingerprint(spec, channels, classes, seed, positions, context)
    trained = train_network(
        spec,
        crops,
        positions,
        table[LABEL].to_numpy()[rows],
        table[INSTANCE].to_numpy()[rows],
        classes,
        seed,
        checkpoints / fingerprint,
        fingerprint,
    )
    details = {
        "epochs": len(trained.history.get("loss", [])),
        "best_val_loss": float(np.min(trained.history["val_loss"])) if trained.history else float("nan"),
        **{f"mean_{name}": float(m) for name, m in zip(channels, trained.means, strict=True)},
    }
    return Trained(trained.model, channels, {}, [], trained.rows, trained.history, details)


def run_network_fold(
    table: pd.DataFrame,
    fold: Fold,
    crops: np.ndarray,
    spec: NetworkSpec,
    channels: list[str],
    classes: list[str],
    seed: int,
    checkpoints: Path,
    context: dict,
) -> FoldResult:
    """Train on ``fold.train`` (see :func:`train_on`); predict ``fold.test`` with probabilities."""
    started = time.perf_counter()
    trained = train_on(table, fold.train, crops, spec, channels, classes, seed, checkpoints, context)
    fitted = time.perf_counter()
    test = table.iloc[fold.test]
    probabilities = predict_proba(trained.model, crops, test[CELL].to_numpy(), spec.inference_batch)
    predictions = pd.DataFrame(
        {
            "cell_id": test[CELL].to_numpy(),
            "instance": test[INSTANCE].to_numpy(),
            "label": test[LABEL].to_numpy(),
            "predicted": np.asarray(classes)[probabilities.argmax(axis=1)],
        }
        | {f"probability_{name}": probabilities[:, k] for k, name in enumerate(classes)}
    )
    return FoldResult(
        fold.name,
        predictions,
        trained.params,
        [],
        channels,
        fitted - started,
        time.perf_counter() - fitted,
        trained.curves,
        trained.details,
    )


def _fingerprint(spec, channels, classes, seed, rows: np.ndarray, context: dict) -> str:
    """What a training depends on: spec, data (context names the store's hash), rows, seed."""
    key = json.dumps(
        {
            "spec": spec.model_dump(mode="json"),
            "channels": channels,
            "classes": classes,
            "seed": seed,
            "rows": hashlib.sha256(np.sort(rows).astype(np.int64).tobytes()).hexdigest(),
            **context,
        },
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:20]

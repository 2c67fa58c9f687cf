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
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ifcml.experiments.evaluate import FoldResult, Trained
from ifcml.experiments.splits import Fold
from ifcml.features.table import CELL, INSTANCE, LABEL
from ifcml.models.deep import predict_proba, train_network
from ifcml.progress import SILENT, Progress

if TYPE_CHECKING:  # run.py imports this module when a design is a network
    from ifcml.experiments.run import Prepared


def store_cells_table(cells: pd.DataFrame) -> pd.DataFrame:
    """cells.parquet with the feature table's ``Metadata_`` names, so both branches share helpers."""
    return cells.rename(columns=lambda column: f"Metadata_{column}")


def train_on(design: Prepared, rows: np.ndarray, seed: int, progress: Progress = SILENT) -> Trained:
    """A network trained on ``rows`` of the design's cells table (checkpointed in its folder)."""
    table, channels = design.table, design.channels
    positions = table[CELL].to_numpy()[rows]  # cell ids = store rows: where the crops are
    fingerprint = _fingerprint(design, seed, positions)
    trained = train_network(
        design.spec,
        design.crops,
        positions,
        table[LABEL].to_numpy()[rows],
        table[INSTANCE].to_numpy()[rows],
        design.classes,
        seed,
        design.checkpoints / fingerprint,
        fingerprint,
        progress,
    )
    details = {
        "epochs": len(trained.history.get("loss", [])),
        "best_val_loss": float(np.min(trained.history["val_loss"])) if trained.history else float("nan"),
        **{f"mean_{name}": float(m) for name, m in zip(channels, trained.means, strict=True)},
    }
    return Trained(trained.model, channels, {}, [], trained.rows, trained.history, details)


def run_network_fold(design: Prepared, fold: Fold, seed: int, progress: Progress = SILENT) -> FoldResult:
    """Train on ``fold.train`` (see :func:`train_on`); predict ``fold.test`` with probabilities."""
    started = time.perf_counter()
    trained = train_on(design, fold.train, seed, progress)
    fitted = time.perf_counter()
    test = design.table.iloc[fold.test]
    probabilities = predict_proba(
        trained.model, design.crops, test[CELL].to_numpy(), design.spec.inference_batch
    )
    predictions = pd.DataFrame(
        {
            "cell_id": test[CELL].to_numpy(),
            "instance": test[INSTANCE].to_numpy(),
            "label": test[LABEL].to_numpy(),
            "predicted": np.asarray(design.classes)[probabilities.argmax(axis=1)],
        }
        | {f"probability_{name}": probabilities[:, k] for k, name in enumerate(design.classes)}
    )
    return FoldResult(
        fold.name,
        predictions,
        trained.params,
        [],
        design.channels,
        fitted - started,
        time.perf_counter() - fitted,
        trained.curves,
        trained.details,
    )


def _fingerprint(design: Prepared, seed: int, rows: np.ndarray) -> str:
    """What a training depends on: spec, data (the store's hash), channels, classes, rows, seed."""
    key = json.dumps(
        {
            "spec": design.spec.model_dump(mode="json"),
            "channels": design.channels,
            "classes": design.classes,
            "seed": seed,
            "rows": hashlib.sha256(np.sort(rows).astype(np.int64).tobytes()).hexdigest(),
            "data": design.digest,
        },
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:20]

"""The exported model: an MLflow pyfunc that takes raw cell images and does the rest itself.

``mlflow.pyfunc.load_model(MODEL_DIR).predict(x)`` accepts

- a dict of arrays (see :func:`ifcml.deploy.cells.from_arrays`): ``{"images": (N, C, H, W),
  "channels": [...], "heights": ..., "widths": ..., "masks": ...}``, giving one row per cell;
- a DataFrame with a ``store`` column of CellStore paths, giving every cell of each store
  with its store columns (``cell_id``, ``instance``, ...).

Both give ``predicted`` and, for models that have them, ``probability_<class>`` columns.
``params={"workers": N}`` measures a store's cells on N local processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from ifcml.deploy.cells import from_arrays
from ifcml.deploy.model_folder import MODEL_ARTIFACT, check_exported, trained_model_path
from ifcml.deploy.predictors import load_predictor, predict_cells, predict_store
from ifcml.errors import InputError
from ifcml.io.store import CellStore


class CellClassifier(mlflow.pyfunc.PythonModel):
    # Inputs (4-D image arrays, or store paths) are checked by ifcml, with errors naming the key;
    # MLflow's type-hint schemas cannot describe them.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self._load(context.artifacts[MODEL_ARTIFACT])

    @classmethod
    def from_folder(cls, model_path: Path | str) -> CellClassifier:
        """The classifier of a trained model folder, without MLflow's loader."""
        classifier = cls()
        classifier._load(str(model_path))
        return classifier

    def _load(self, model_path: str) -> None:
        self.model_path = model_path
        self.predictor = load_predictor(model_path)

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        workers = int((params or {}).get("workers", 1))
        if isinstance(model_input, pd.DataFrame) and "store" in model_input:
            tables = [self.predict_store(CellStore(p), workers) for p in model_input["store"]]
            return pd.concat(tables, ignore_index=True)
        if isinstance(model_input, dict):
            return predict_cells(self.predictor, from_arrays(model_input, self.predictor.channels))
        raise InputError(
            "model input: expected a dict of arrays ('images', ...) or a DataFrame with a 'store' "
            f"column, got {type(model_input).__name__}"
        )

    def predict_store(
        self,
        store: CellStore,
        workers: int = 1,
        on_cells: Callable[[int], None] | None = None,
        keep: Sequence[str] = (),
    ) -> pd.DataFrame:
        """Every cell of ``store`` (``ifcml predict`` calls this for its progress bar), with the
        measured columns ``keep`` of a classical model."""
        return predict_store(self.predictor, self.model_path, store, workers, on_cells, keep)


def open_exported(folder: Path | str) -> CellClassifier:
    """The exported model at ``folder``, checked (:func:`~ifcml.deploy.model_folder.check_exported`)
    and built from ifcml's installed code: nothing of the folder runs."""
    check_exported(folder)
    return CellClassifier.from_folder(trained_model_path(folder))

"""The classical branch's design: a model on CellProfiler features, nested and leak-free.

For every fold, everything learnt from data is learnt from the fold's training rows only:
the pruned feature list (pycytominer), the class balance (per-instance undersampling), the
hyperparameters (hyperopt on an inner split of the training instances), the imputation and
scaling statistics (inside the fitted pipeline). The held-out rows are only predicted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ifcml.cells import INSTANCE, LABEL, feature_columns, is_store, undersample_per_instance, usable_cells
from ifcml.errors import InputError
from ifcml.experiments.design import Design, Relabel, chosen_channels
from ifcml.experiments.results import Trained
from ifcml.features.naming import columns_for_channels
from ifcml.features.prune import select_features
from ifcml.features.recipe import Pruning
from ifcml.features.table import read_features, table_manifest
from ifcml.models.classical import ModelSpec, class_probabilities, fit
from ifcml.models.tuning import tune
from ifcml.progress import SILENT, Progress


@dataclass(kw_only=True)
class ClassicalDesign(Design):
    spec: ModelSpec
    features: list[str] = field(default_factory=list)  # the channel set's feature columns
    pruning: Pruning = field(default_factory=Pruning)

    branch = "classical"
    reads = "features"

    @classmethod
    def read(
        cls,
        data: Path,
        spec: ModelSpec,
        channels: list[str] | None,
        relabel: Relabel | None,
        pruning: Pruning,
        store: Path | None = None,
    ) -> ClassicalDesign:
        """The feature table at ``data``, its usable cells and the chosen channels' features."""
        if is_store(data):
            raise InputError(
                f"{data}: model {spec.name!r} is classical and reads a feature table; "
                f"measure the store first: ifcml features {data} --out features.parquet"
            )
        manifest = table_manifest(data)
        all_channels = manifest.get("channels")
        if not all_channels:
            raise InputError(f"{data}: no ifcml manifest (not written by `ifcml features` of this version)")
        table = read_features(data)
        table = usable_cells(relabel(table) if relabel else table)
        chosen = chosen_channels(data, all_channels, channels)
        features = columns_for_channels(feature_columns(table), all_channels, chosen)
        params = {
            "estimator": spec.estimator,
            "balance": spec.balance,
            "scale": spec.scale,
            "n_features_input": len(features),
            "features_table": str(data),
            **{f"fixed_{k}": v for k, v in spec.fixed.items()},
        }
        images, recipe = (
            manifest.get("store_images_sha256", "unknown"),
            manifest.get("recipe_digest", "unknown"),
        )
        return cls(
            spec=spec, table=table, channels=chosen, source=str(data.resolve()),
            digest=f"{images[:12]}-{recipe}", params=params, inputs=_measured_inputs(manifest, chosen, table),
            features=features, pruning=pruning,
        )  # fmt: skip

    @classmethod
    def of_table(
        cls, table: pd.DataFrame, spec: ModelSpec, features: list[str] | None = None
    ) -> ClassicalDesign:
        """A design on a table in memory (every feature column unless ``features``), for
        evaluations recorded nowhere."""
        table = usable_cells(table)
        return cls(
            spec=spec, table=table, channels=[], source="", digest="", params={},
            features=features or feature_columns(table),
        )  # fmt: skip

    def train(
        self, rows: np.ndarray, seed: int, max_evals: int | None = None, progress: Progress = SILENT
    ) -> Trained:
        """Prune, balance, tune and fit using ``rows`` of the table and nothing else."""
        cells = self.table.iloc[rows]
        kept = select_features(cells[[INSTANCE, LABEL, *self.features]], self.pruning, seed)
        if self.spec.balance == "undersample":
            rows = rows[undersample_per_instance(cells, np.arange(len(cells)), seed)]
        x = self.table.iloc[rows][kept].astype(np.float64)  # a frame: fitted models keep the feature names
        y = pd.Categorical(self.table[LABEL].to_numpy()[rows], categories=self.classes).codes.astype(np.int64)
        groups = self.table[INSTANCE].to_numpy()[rows]
        budget = max_evals or self.spec.max_evals
        params, trials = tune(self.spec, x.to_numpy(), y, groups, seed, budget, progress)
        return Trained(fit(self.spec, params, seed, x, y), kept, params, trials, rows)

    def predict(self, trained: Trained, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        values = self.table.iloc[rows][trained.features]
        return trained.model.predict(values), class_probabilities(trained.model, values, len(self.classes))

    @property
    def flavor(self) -> str:
        return self.spec.family.flavor

    def example(self, trained: Trained) -> pd.DataFrame:
        return self.table[trained.features].head(5).astype(np.float64)

    def budget(self, max_evals: int | None) -> dict:
        return {"max_evals": max_evals or self.spec.max_evals}


def _measured_inputs(manifest: dict, chosen: list[str], table: pd.DataFrame) -> dict | None:
    """How the table measured a cell, restricted to the channels ``chosen`` need (None for
    tables of an older ifcml, without the recipe or image sizes: such models cannot be exported)."""
    if "recipe" not in manifest or "Metadata_height" not in table:
        return None
    recipe = copy.deepcopy(manifest["recipe"])
    segmentation = recipe["segmentation"]
    if segmentation["source"] == "auto":  # resolved: new images must be outlined the same way
        segmentation["source"] = "instrument" if manifest["instrument_masks"] else "bright-field"
    needed = set(chosen) | {segmentation["channel"]}
    return {
        "kind": "features",
        "channels": [c for c in manifest["channels"] if c in needed],
        "engine": manifest["engine"],
        "recipe": recipe,
        "tile_size": _tile_size(table) if segmentation["source"] == "bright-field" else None,
    }


def _tile_size(table: pd.DataFrame) -> int | None:
    """The side of the training cells' images when all were the same square (montage tiles).

    Bright-field outlines (Otsu's threshold) and whole-image measurements depend on how much
    background surrounds a cell, so an exported model brings new cells to this size first.
    """
    sizes = set(zip(table["Metadata_height"], table["Metadata_width"], strict=True))
    if len(sizes) != 1:
        return None
    height, width = sizes.pop()
    return int(height) if height == width else None

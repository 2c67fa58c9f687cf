"""A hybrid design: a classical model on a network's pooled features (alone, or next to the
CellProfiler features), both fitted inside each training fold.

For a fold, the network trains on the fold's training cells only (the network design's own
training, checkpointed and resumable); every cell the fold needs is then embedded by that
network, and the classical model is pruned, balanced, tuned and fitted on the training cells'
embeddings (and features) exactly as a classical design is. Held-out cells are only embedded
and predicted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ifcml.cells import CELL, metadata_columns
from ifcml.experiments.classical_design import ClassicalDesign
from ifcml.experiments.design import Design, Relabel
from ifcml.experiments.network_design import NetworkDesign
from ifcml.experiments.parts import CompositeDesign, parts_inputs, read_parts
from ifcml.experiments.results import Trained
from ifcml.features.recipe import Pruning
from ifcml.models.classical import class_probabilities
from ifcml.models.composite import EMBEDDING_PREFIX, Composite, Part, embedding_columns, pooled_features
from ifcml.models.composite_spec import HybridSpec
from ifcml.progress import SILENT, Progress


@dataclass(kw_only=True)
class HybridDesign(CompositeDesign):
    spec: HybridSpec
    network: NetworkDesign  # the embedding's network, on this design's cells
    classifier: ClassicalDesign  # the classical model, on this design's cells and features

    branch = "hybrid"

    @property
    def parts(self) -> list[Design]:
        return [self.network, self.classifier]

    @classmethod
    def reads_of(cls, spec: HybridSpec) -> str:
        return "features" if spec.with_features else "store"

    @classmethod
    def crops_of(cls, spec: HybridSpec) -> bool:
        return True

    @classmethod
    def read(
        cls,
        data: Path,
        spec: HybridSpec,
        channels: list[str] | None,
        relabel: Relabel | None,
        pruning: Pruning,
        store: Path | None = None,
    ) -> HybridDesign:
        specs = [spec.embedding_of, spec.classifier] if spec.with_features else [spec.embedding_of]
        parts = read_parts(data, specs, channels, relabel, pruning, store, spec.name)
        network = parts.designs[0]
        classifier = parts.designs[1] if spec.with_features else _without_features(spec, parts.table)
        params = {
            **{f"network_{k}": v for k, v in network.params.items()},
            **classifier.params,
            "with_features": spec.with_features,
        }
        return cls(
            spec=spec, table=parts.table, channels=parts.channels, source=parts.source,
            digest=parts.digest, params=params, inputs=parts_inputs(parts.designs, "hybrid"),
            network=network, classifier=classifier,
        )  # fmt: skip

    def at_size(self, train_cells: int | None) -> Design:
        """Its parts on the same size: a size's network checkpoints are its own."""
        return replace(
            self,
            train_cells=train_cells,
            network=self.network.at_size(train_cells),
            classifier=self.classifier.at_size(train_cells),
        )

    def train(
        self, rows: np.ndarray, seed: int, max_evals: int | None = None, progress: Progress = SILENT
    ) -> Trained:
        """The network on ``rows``, then the classical model on their embeddings (and features)."""
        network = self.network.train(rows, seed, None, progress)
        cells = self._embedded(network.model, rows)
        fitted_on = self._classifier_on(cells)
        classifier = fitted_on.train(np.arange(len(rows)), seed, max_evals, progress)
        model = Composite(
            "hybrid",
            {
                "network": Part(
                    "keras",
                    network.model,
                    {"classes": self.classes, "features": self.channels, "inputs": self.network.inputs},
                    self.network.example(network),
                ),  # fmt: skip
                "classifier": Part(
                    self.classifier.flavor,
                    classifier.model,
                    {
                        "classes": self.classes,
                        "features": classifier.features,
                        "inputs": self.classifier.inputs,
                    },
                    fitted_on.example(classifier),
                ),  # fmt: skip
            },
        )
        return Trained(
            model, classifier.features, classifier.params, classifier.trials, rows[classifier.rows],
            network.curves, network.details,
        )  # fmt: skip

    def predict(self, trained: Trained, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        cells = self._embedded(trained.model.parts["network"].model, rows)
        classifier = trained.model.parts["classifier"].model
        values = cells[trained.features].astype(np.float64)
        return classifier.predict(values), class_probabilities(classifier, values, len(self.classes))

    def _embedded(self, network, rows: np.ndarray) -> pd.DataFrame:
        """The cells at ``rows``, with the network's pooled features as columns."""
        columns = [*metadata_columns(self.table), *self.classifier.features]  # what the classifier reads
        cells = self.table.iloc[rows][columns].reset_index(drop=True)
        pooled = pooled_features(
            network, self.network.crops, cells[CELL].to_numpy(), self.spec.embedding_of.inference_batch
        )
        embedding = pd.DataFrame(pooled, columns=embedding_columns(pooled.shape[1]))
        return pd.concat([cells, embedding], axis=1)

    def _classifier_on(self, cells: pd.DataFrame) -> ClassicalDesign:
        features = [c for c in cells.columns if c.startswith(EMBEDDING_PREFIX)] + self.classifier.features
        return replace(self.classifier, table=cells, features=features, train_cells=None)

    def budget(self, max_evals: int | None) -> dict:
        return self.classifier.budget(max_evals)

    def figures(self, final: Trained, seed: int) -> dict:
        return self.network.figures(replace(final, model=final.model.parts["network"].model), seed)


def _without_features(spec: HybridSpec, table: pd.DataFrame) -> ClassicalDesign:
    """The classical part when it reads the embedding alone."""
    params = {"estimator": spec.classifier.estimator, "balance": spec.classifier.balance}
    return ClassicalDesign(
        spec=spec.classifier, table=table, channels=[], source="", digest="", params=params, features=[]
    )

"""A stacked design: a classical combiner on the class probabilities of other designs' models,
everything fitted inside each training fold.

For a fold, each member is trained on part of the fold's training cells and predicts the rest
(``inner_folds`` over the training cells), so the combiner learns from probabilities the members
gave cells they had not seen, as they will on held-out cells; the members are then refitted on
every training cell. Held-out cells are only predicted, by the refitted members and the
combiner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ifcml.cells import INSTANCE, LABEL, metadata_columns
from ifcml.errors import InputError
from ifcml.experiments.classical_design import ClassicalDesign
from ifcml.experiments.design import Design, Relabel
from ifcml.experiments.parts import CompositeDesign, parts_inputs, read_parts
from ifcml.experiments.results import Trained
from ifcml.features.recipe import Pruning
from ifcml.models.classical import ModelSpec, class_probabilities
from ifcml.models.composite import COMBINER, Composite, Part, stacked_inputs
from ifcml.models.composite_spec import StackedSpec
from ifcml.models.network_spec import NetworkSpec
from ifcml.models.tuning import inner_folds
from ifcml.progress import SILENT, Progress


@dataclass(kw_only=True)
class StackedDesign(CompositeDesign):
    spec: StackedSpec
    members: list[Design]  # single-model designs, on this design's cells
    combiner: ClassicalDesign  # the combiner, on this design's cells (its features are made per fold)

    branch = "stacked"

    @property
    def parts(self) -> list[Design]:
        return self.members

    @classmethod
    def reads_of(cls, spec: StackedSpec) -> str:
        return "features" if any(isinstance(member, ModelSpec) for member in spec.stack) else "store"

    @classmethod
    def crops_of(cls, spec: StackedSpec) -> bool:
        return any(isinstance(member, NetworkSpec) for member in spec.stack)

    @classmethod
    def read(
        cls,
        data: Path,
        spec: StackedSpec,
        channels: list[str] | None,
        relabel: Relabel | None,
        pruning: Pruning,
        store: Path | None = None,
    ) -> StackedDesign:
        parts = read_parts(data, list(spec.stack), channels, relabel, pruning, store, spec.name)
        combiner = ClassicalDesign(
            spec=spec.combiner, table=parts.table, channels=parts.channels, source=parts.source,
            digest=parts.digest, params={}, pruning=Pruning(operations=[]),  # probabilities: nothing to prune
        )  # fmt: skip
        params = {
            "members": ", ".join(member.name for member in spec.stack),
            "combiner": spec.combiner.estimator,
            "inner_folds": spec.inner_folds,
        }
        return cls(
            spec=spec, table=parts.table, channels=parts.channels, source=parts.source, digest=parts.digest,
            params=params, inputs=parts_inputs(parts.designs, "stacked"), members=parts.designs,
            combiner=combiner,
        )  # fmt: skip

    def at_size(self, train_cells: int | None) -> Design:
        """Its members on the same size: a size's network checkpoints are its own."""
        members = [member.at_size(train_cells) for member in self.members]
        return replace(self, train_cells=train_cells, members=members)

    def train(
        self, rows: np.ndarray, seed: int, max_evals: int | None = None, progress: Progress = SILENT
    ) -> Trained:
        """The combiner on the members' out-of-fold probabilities of ``rows``, then the members
        on all of ``rows``."""
        inner = self.inner_folds(rows, seed)
        unseen = [np.zeros((len(rows), len(self.classes))) for _ in self.members]
        for member, probabilities in zip(self.members, unseen, strict=True):
            for fit, predict in inner:
                trained = member.train(rows[fit], seed, max_evals, progress)
                probabilities[predict] = member.predict(trained, rows[predict])[1]
        combining = self._combiner_on(rows, unseen)
        combiner = combining.train(np.arange(len(rows)), seed, max_evals, progress)
        members = [member.train(rows, seed, max_evals, progress) for member in self.members]
        parts = {
            member.name: Part(
                member.flavor,
                trained.model,
                {"classes": self.classes, "features": trained.features, "inputs": member.inputs},
                member.example(trained),
            )  # fmt: skip
            for member, trained in zip(self.members, members, strict=True)
        }
        parts[COMBINER] = Part(
            self.combiner.flavor, combiner.model, {"classes": self.classes, "features": combiner.features},
            combining.example(combiner),
        )  # fmt: skip
        params = {
            **combiner.params,
            **{
                f"{m.name}.{k}": v
                for m, t in zip(self.members, members, strict=True)
                for k, v in t.params.items()
            },
        }
        return Trained(Composite("stacked", parts), combiner.features, params, combiner.trials, rows)

    def predict(self, trained: Trained, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        parts = trained.model.parts
        probabilities = []
        for member in self.members:
            part = parts[member.name]
            probabilities.append(
                member.predict(Trained(part.model, part.metadata["features"], {}, [], rows), rows)[1]
            )
        values = self._combiner_on(rows, probabilities).table[trained.features]
        combiner = parts[COMBINER].model
        return combiner.predict(values), class_probabilities(combiner, values, len(self.classes))

    def inner_folds(self, rows: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Positions into ``rows``: grouped by instance, as the tuning's inner split, where every
        inner training part then still holds every class; else stratified (a class seen in one
        instance only: the design is confounded, and says so)."""
        labels = pd.factorize(self.table[LABEL].to_numpy()[rows])[0]
        fewest = np.bincount(labels).min()
        if fewest < 2:
            raise InputError(f"{self.name}: a class has {fewest} training cell; stacking needs at least 2")
        groups = self.table[INSTANCE].to_numpy()[rows]
        return inner_folds(labels, groups, seed, self.spec.inner_folds, every_class=True)

    def _combiner_on(self, rows: np.ndarray, probabilities: list[np.ndarray]) -> ClassicalDesign:
        names = [member.name for member in self.members]
        cells = self.table.iloc[rows][metadata_columns(self.table)].reset_index(drop=True)
        columns = pd.DataFrame(stacked_inputs(probabilities, names, self.classes))
        table = pd.concat([cells, columns], axis=1)
        return replace(self.combiner, table=table, features=list(columns.columns), train_cells=None)

    def budget(self, max_evals: int | None) -> dict:
        return self.combiner.budget(max_evals)

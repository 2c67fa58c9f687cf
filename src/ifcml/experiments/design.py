"""A design: one model on one channel set (and training size), over its folds and final refit.

:class:`Design` is what ``ifcml train`` and ``ifcml grid`` drive without knowing the branch:
folds, one fold's run (train on its training rows, predict its held-out rows), the final refit,
the run's parameters and figures, and their record in MLflow. A branch says only how it reads
its data, trains on rows and predicts rows: :class:`~ifcml.experiments.classical_design.ClassicalDesign`
(a feature table) and :class:`~ifcml.experiments.network_design.NetworkDesign` (a CellStore's crops);
:mod:`~ifcml.experiments.hybrid_design` and :mod:`~ifcml.experiments.stacked_design` are made of those.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from ifcml.cells import CELL, INSTANCE, LABEL
from ifcml.errors import InputError
from ifcml.experiments.results import Evaluation, FinalModel, FoldResult, Trained
from ifcml.experiments.splits import Fold, limit_per_class, make_folds
from ifcml.experiments.tracking import Tracking
from ifcml.features.recipe import Pruning
from ifcml.models.classical import ModelSpec
from ifcml.models.composite_spec import HybridSpec, StackedSpec
from ifcml.models.network_spec import NetworkSpec
from ifcml.progress import SILENT, Progress

Relabel = Callable[[pd.DataFrame], pd.DataFrame]  # merges / subsets the Metadata_label column


@dataclass
class Design(ABC):
    """A model, its channels and the usable cells: everything a fold or the final refit needs."""

    spec: ModelSpec | NetworkSpec | HybridSpec | StackedSpec
    table: pd.DataFrame  # usable cells, Metadata_ names (and features, for classical models)
    channels: list[str]
    source: str  # the feature table or store read
    digest: str  # names the data: store hash (+ feature recipe, gates)
    params: dict  # what MLflow records about the design
    inputs: dict | None = None  # how a cell's raw images become the model's input (see ifcml.deploy)
    train_cells: int | None = None  # a learning curve's point: every training set cut to this per class

    branch: ClassVar[str]  # the MLflow tag: "classical", "deep", "hybrid" or "stacked"
    reads: ClassVar[str]  # what the design reads from an experiment's data: "features" or "store"

    @classmethod
    @abstractmethod
    def read(
        cls,
        data: Path,
        spec: Any,
        channels: list[str] | None,
        relabel: Relabel | None,
        pruning: Pruning,
        store: Path | None = None,
    ) -> Self:
        """The design of ``spec`` on the data at ``data`` (its usable cells, relabelled first);
        ``store`` is the CellStore a feature table ``data`` was measured from, for designs that
        read both (a hybrid, a stack)."""

    @classmethod
    def reads_of(cls, spec: Any) -> str:
        """What a design of ``spec`` reads as its ``data``: "features" (a table) or "store"."""
        return cls.reads

    @classmethod
    def crops_of(cls, spec: Any) -> bool:
        """Whether a design of ``spec`` reads the store's crops (a network, or one inside it)."""
        return cls.reads_of(spec) == "store"

    @abstractmethod
    def train(self, rows: np.ndarray, seed: int, max_evals: int | None, progress: Progress) -> Trained:
        """A model fitted on ``rows`` of :attr:`table` and nothing else."""

    @abstractmethod
    def predict(self, trained: Trained, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Class codes of ``rows`` and their probabilities (None where the model has none)."""

    @property
    @abstractmethod
    def flavor(self) -> str:
        """How the final model is saved (see :mod:`ifcml.models.saved`)."""

    @abstractmethod
    def example(self, trained: Trained) -> Any:
        """An input of the trained model, for its MLflow signature."""

    def budget(self, max_evals: int | None) -> dict:
        """The search budget as the run records it (none for designs that do not search)."""
        return {}

    def figures(self, final: Trained, seed: int) -> dict:
        """Figures of the final model for its parent run (file name -> matplotlib Figure)."""
        return {}

    def finished(self) -> None:  # noqa: B027 (a hook: most designs keep nothing to clean up)
        """Called once the design's parent run is closed: what it kept for resuming may go."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def classes(self) -> list[str]:
        return sorted(self.table[LABEL].unique().tolist())

    @property
    def train_size(self) -> str:
        """Training cells per class as runs record it: the cap, or ``all``."""
        return "all" if self.train_cells is None else str(self.train_cells)

    def at_size(self, train_cells: int | None) -> Design:
        """The same design on a learning curve's training size (the data is shared)."""
        return replace(self, train_cells=train_cells)

    def folds(self, split: str, seed: int) -> list[Fold]:
        """The split's folds; with ``train_cells``, each training set cut to that many cells per
        class (held-out units are never cut)."""
        folds = make_folds(self.table, split, seed)
        return [replace(fold, train=self.training_rows(fold.train, seed, fold.name)) for fold in folds]

    def training_rows(self, rows: np.ndarray, seed: int, draw: str) -> np.ndarray:
        if self.train_cells is None:
            return rows
        return limit_per_class(self.table, rows, self.train_cells, seed, draw)

    def run_fold(
        self, fold: Fold, seed: int, max_evals: int | None = None, progress: Progress = SILENT
    ) -> FoldResult:
        """Train on ``fold.train``; predict ``fold.test``."""
        started = time.perf_counter()
        trained = self.train(fold.train, seed, max_evals, progress)
        fitted = time.perf_counter()
        codes, probabilities = self.predict(trained, fold.test)
        return FoldResult(
            fold.name,
            self.predictions(fold.test, codes, probabilities),
            trained.params,
            trained.trials,
            trained.features,
            fitted - started,
            time.perf_counter() - fitted,
            trained.curves,
            trained.details,
        )

    def predictions(
        self, rows: np.ndarray, codes: np.ndarray, probabilities: np.ndarray | None
    ) -> pd.DataFrame:
        """The held-out predictions table: cell_id, instance, label, predicted, probability_<class>."""
        cells = self.table.iloc[rows]
        frame = pd.DataFrame(
            {
                "cell_id": cells[CELL].to_numpy(),
                "instance": cells[INSTANCE].to_numpy(),
                "label": cells[LABEL].to_numpy(),
                "predicted": np.asarray(self.classes)[codes],
            }
        )
        if probabilities is not None:  # the readout's probabilistic correction (PACC) uses them
            for k, name in enumerate(self.classes):
                frame[f"probability_{name}"] = probabilities[:, k]
        return frame

    def evaluate(self, split: str, seed: int = 0, max_evals: int | None = None) -> Evaluation:
        """Every fold of ``split``, in this process, recorded nowhere."""
        evaluation = Evaluation(self.name, self.classes)
        evaluation.folds = [self.run_fold(fold, seed, max_evals) for fold in self.folds(split, seed)]
        return evaluation

    def final(self, seed: int, max_evals: int | None, progress: Progress = SILENT) -> Trained:
        """Refit on every usable cell (tuned, for classical models, by inner CV over all
        instances); on a learning curve's point, on that many cells per class of them."""
        return self.train(
            self.training_rows(np.arange(len(self.table)), seed, "final"), seed, max_evals, progress
        )

    def open_run(
        self, tracking: Tracking, experiment: str, name: str, tags: dict[str, str], params: dict
    ) -> str:
        """The design's parent run (its params, its cells as the dataset), left RUNNING."""
        return tracking.open_parent(experiment, name, tags, params, self.table, self.source, self.digest[:36])

    def record_fold(
        self,
        tracking: Tracking,
        run: str,
        fold: Fold,
        seed: int,
        max_evals: int | None,
        log_trials: bool,
        progress: Progress = SILENT,
    ) -> FoldResult:
        """Run ``fold`` into its open run ``run`` (from ``open_fold``): its trials and epochs
        logged as they come (and told to ``progress``), then its results, finishing the run."""
        tracking.client.log_metric(run, "train_cells", len(fold.train))
        streamed, epochs = tracking.fold_progress(run)
        result = self.run_fold(fold, seed, max_evals, streamed + progress)
        tracking.finish_fold(run, result, self.classes, epochs, log_trials)
        return result

    def close_run(
        self,
        tracking: Tracking,
        parent: str,
        evaluation: Evaluation,
        seed: int,
        max_evals: int | None,
        positive: str,
        progress: Progress = SILENT,
    ) -> dict:
        """Refit on every usable cell, record it with the pooled ``evaluation`` on ``parent`` and
        finish that run; returns the pooled metrics."""
        final = self.final(seed, max_evals, progress)
        spec = self.spec.model_dump(mode="json")
        model = FinalModel(
            final, spec, self.flavor, self.example(final), self.inputs, self.figures(final, seed)
        )
        summary = tracking.close_parent(parent, evaluation, model, positive=positive, seed=seed)
        self.finished()
        return summary


def chosen_channels(source: Path, available: list[str], channels: list[str] | None) -> list[str]:
    """``channels`` (default: all), checked against what ``source`` has."""
    chosen = channels or available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise InputError(f"{source}: no channel(s) {', '.join(unknown)}; it has {', '.join(available)}")
    return chosen

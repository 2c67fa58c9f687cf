"""One model on one channel set: its data prepared once, its folds, its final refit, its record.

Classical models read a feature table, networks a CellStore. :func:`prepare` gives either a
:class:`Prepared` whose ``run_fold`` and ``final`` are what ``ifcml train`` runs in sequence and
what ``ifcml grid`` runs as separate tasks, and both are recorded in MLflow by the same code.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from ifcml.errors import InputError
from ifcml.experiments.evaluate import (
    CELL,
    INSTANCE,
    LABEL,
    Evaluation,
    FoldResult,
    Trained,
    run_fold,
    train,
    usable_cells,
)
from ifcml.experiments.mlflow_store import connect, tracking_uri
from ifcml.experiments.splits import ConfoundReport, Fold, confound_check, limit_per_class, make_folds
from ifcml.experiments.tracking import (
    close_parent,
    fail_run,
    finish_fold,
    fold_progress,
    open_fold,
    open_parent,
)
from ifcml.features.naming import columns_for_channels
from ifcml.features.recipe import Pruning
from ifcml.features.table import feature_columns, read_features, table_manifest
from ifcml.models.classical import ModelSpec
from ifcml.models.network_spec import NetworkSpec
from ifcml.models.registry import load_model_spec
from ifcml.progress import SILENT, Progress

Relabel = Callable[[pd.DataFrame], pd.DataFrame]  # merges / subsets the Metadata_label column


@dataclass
class TrainResult:
    run_id: str
    tracking_uri: str
    experiment_id: str
    metrics: dict
    confounds: list[ConfoundReport]


@dataclass
class Prepared:
    """A model, its channels and the usable cells: everything a fold or the final refit needs."""

    spec: ModelSpec | NetworkSpec
    table: pd.DataFrame
    channels: list[str]
    source: str
    digest: str  # names the data: store hash (+ feature recipe)
    params: dict  # what MLflow records about the design
    features: list[str] = field(default_factory=list)  # classical
    pruning: Pruning | None = None  # classical
    crops: np.ndarray | None = None  # networks: every store cell's crop
    checkpoint_root: Path | None = None  # networks: where this data's trainings checkpoint
    inputs: dict | None = None  # how a cell's raw images become the model's input (see ifcml.deploy)
    train_cells: int | None = None  # a learning curve's point: every training set cut to this per class

    @property
    def branch(self) -> str:
        return "deep" if isinstance(self.spec, NetworkSpec) else "classical"

    @property
    def classes(self) -> list[str]:
        return sorted(self.table[LABEL].unique().tolist())

    @property
    def checkpoints(self) -> Path | None:
        """This design's own checkpoint folder: a learning curve's designs share the data, and
        one finishing (which deletes its folder) must not delete another's trainings."""
        return self.checkpoint_root / f"cells_{self.train_size}" if self.checkpoint_root else None

    @property
    def train_size(self) -> str:
        """Training cells per class as runs record it: the cap, or ``all``."""
        return "all" if self.train_cells is None else str(self.train_cells)

    def folds(self, split: str, seed: int) -> list[Fold]:
        """The split's folds; with ``train_cells``, each training set cut to that many cells per
        class (held-out units are never cut)."""
        folds = make_folds(self.table, split, seed)
        return [replace(fold, train=self._training(fold.train, seed, fold.name)) for fold in folds]

    def _training(self, rows: np.ndarray, seed: int, draw: str) -> np.ndarray:
        if self.train_cells is None:
            return rows
        return limit_per_class(self.table, rows, self.train_cells, seed, draw)

    def run_fold(
        self, fold: Fold, seed: int, max_evals: int | None, progress: Progress = SILENT
    ) -> FoldResult:
        if isinstance(self.spec, NetworkSpec):
            from ifcml.experiments.evaluate_network import run_network_fold

            return run_network_fold(self, fold, seed, progress)
        budget = max_evals or self.spec.max_evals
        return run_fold(
            self.table, fold, self.spec, self.features, self.pruning, seed, budget, self.classes, progress
        )

    def record_fold(
        self,
        client: MlflowClient,
        run: str,
        fold: Fold,
        seed: int,
        max_evals: int | None,
        log_trials: bool,
        progress: Progress = SILENT,
    ) -> FoldResult:
        """Run ``fold`` into its open run ``run`` (from :func:`open_fold`): its trials and epochs
        logged as they come (and told to ``progress``), then its results, finishing the run."""
        client.log_metric(run, "train_cells", len(fold.train))
        streamed, epochs = fold_progress(client, run)
        result = self.run_fold(fold, seed, max_evals, streamed + progress)
        finish_fold(client, run, result, self.classes, epochs, log_trials)
        return result

    def figures(self, final: Trained, seed: int) -> dict:
        """Figures of the final model for its parent run: the network's embedding of the cells it
        was fitted on (a view of what it learnt, not a held-out result)."""
        if not isinstance(self.spec, NetworkSpec):
            return {}
        from ifcml.models.embed import embedding_figure

        title = f"{self.spec.name}: t-SNE of the final model's pooled features (cells it was fitted on)"
        cells, labels = self.table[CELL].to_numpy(), self.table[LABEL].to_numpy()
        return {"embedding_tsne.png": embedding_figure(final.model, self.crops, cells, labels, title, seed)}

    def final(self, seed: int, max_evals: int | None, progress: Progress = SILENT) -> Trained:
        """Refit on every usable cell (tuned, for classical models, by inner CV over all
        instances); on a learning curve's point, on that many cells per class of them."""
        everything = self._training(np.arange(len(self.table)), seed, "final")
        if isinstance(self.spec, NetworkSpec):
            from ifcml.experiments.evaluate_network import train_on

            return train_on(self, everything, seed, progress)
        budget = max_evals or self.spec.max_evals
        return train(
            self.table,
            everything,
            self.spec,
            self.features,
            self.pruning,
            seed,
            budget,
            self.classes,
            progress,
        )

    def open_run(self, experiment: str, name: str, tags: dict[str, str], params: dict) -> str:
        """The design's parent run (its params, its cells as the dataset), left RUNNING."""
        return open_parent(experiment, name, tags, params, self.table, self.source, self.digest[:36])

    def close_run(
        self,
        parent: str,
        evaluation: Evaluation,
        seed: int,
        max_evals: int | None,
        positive: str,
        progress: Progress = SILENT,
    ) -> dict:
        """Refit on every usable cell, record it with the pooled ``evaluation`` on ``parent`` and
        finish that run; returns the pooled metrics. Checkpoints are no longer needed then."""
        final = self.final(seed, max_evals, progress)
        summary = close_parent(
            parent, evaluation, positive=positive, seed=seed, spec=self.spec.model_dump(mode="json"),
            final=final, dataset=self.table, inputs=self.inputs, figures=self.figures(final, seed),
        )  # fmt: skip
        if self.checkpoints:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
        return summary


def prepare(
    data: Path | str,
    spec: ModelSpec | NetworkSpec,
    channels: list[str] | None = None,
    relabel: Relabel | None = None,
    pruning: Pruning | None = None,
) -> Prepared:
    """Read ``data`` for ``spec`` (a feature table for classical models, a store for networks)."""
    data = Path(data)
    if not data.exists():
        raise InputError(f"{data}: no such feature table or store")
    if isinstance(spec, NetworkSpec):
        prepared = _prepare_network(data, spec, channels, relabel)
    else:
        prepared = _prepare_classical(data, spec, channels, relabel, pruning or Pruning())
    if len(prepared.classes) < 2:
        found = f"only {prepared.classes[0]!r}" if prepared.classes else "none"
        raise InputError(
            f"{data}: a model needs labelled cells of at least two classes (usable cells: "
            f"{len(prepared.table)}, labels: {found}); label the cells at ingest (label folders, --label)"
        )
    return prepared


@dataclass(frozen=True)
class Watch:
    """What ``ifcml train`` shows while it works: ``folds(names)`` once the split is known,
    ``fold(name)`` as each held-out unit starts (``"final"`` for the refit), ``progress`` for
    its trials and epochs, and ``confound(message)`` for each warning."""

    folds: Callable[[list[str]], None] = lambda names: None
    fold: Callable[[str], None] = lambda name: None
    progress: Progress = SILENT
    confound: Callable[[str], None] = lambda message: None


def run_model(
    data: Path | str,
    model: str | ModelSpec | NetworkSpec,
    split: str = "leave-one-instance-out",
    *,
    channels: list[str] | None = None,
    labels: list[str] | None = None,
    pruning: Pruning | None = None,
    max_evals: int | None = None,
    train_cells: int | None = None,
    seed: int = 0,
    experiment: str = "ifcml",
    uri: str | None = None,
    positive: str | None = None,
    log_trials: bool = False,
    watch: Watch = Watch(),
) -> TrainResult:
    """Evaluate ``model`` (a name in models/, a YAML path or a spec) on ``data`` and log it.

    The design's run exists from the first step: each held-out unit's run opens when its
    training starts and is fed as it goes (trials, epochs), so MLflow shows the work moving.
    """
    spec = model if isinstance(model, ModelSpec | NetworkSpec) else load_model_spec(model)
    relabel = (lambda table: table[table[LABEL].isin(labels)]) if labels else None
    prepared = replace(prepare(data, spec, channels, relabel, pruning), train_cells=train_cells)
    if labels:
        _check_labels(prepared, labels)
    check_positive(prepared, positive)
    positive = positive or DEFAULT_POSITIVE
    confounds = confound_check(prepared.table)
    for report in confounds:
        watch.confound(report.message())
    folds = prepared.folds(split, seed)
    uri = tracking_uri(uri)
    client = connect(uri)
    tags = run_tags(prepared, split, confounds)
    params = run_params(prepared, split, seed, max_evals, positive)
    parent = prepared.open_run(experiment, run_name(prepared), tags, params)
    watch.folds([fold.name for fold in folds])
    try:
        evaluation = Evaluation(spec.name, prepared.classes)
        for fold in folds:
            watch.fold(fold.name)
            run = open_fold(client, parent, fold.name, tags)
            try:
                result = prepared.record_fold(client, run, fold, seed, max_evals, log_trials, watch.progress)
            except BaseException as exc:
                fail_run(client, run, f"{type(exc).__name__}: {exc}")
                raise
            evaluation.folds.append(result)
        watch.fold("final")
        summary = prepared.close_run(parent, evaluation, seed, max_evals, positive, watch.progress)
    except BaseException as exc:  # the parent says why it stopped instead of staying RUNNING
        fail_run(client, parent, f"{type(exc).__name__}: {exc}")
        raise
    return TrainResult(parent, uri, client.get_run(parent).info.experiment_id, summary, confounds)


DEFAULT_POSITIVE = "leukemic"  # the paper's readout class
TRAIN_SIZE_TAG = "train_cells_per_class"  # "all", or a learning curve's cap


def run_name(prepared: Prepared, channel_set: str | None = None) -> str:
    name = f"{prepared.spec.name} | {channel_set or '+'.join(prepared.channels)}"
    return name if prepared.train_cells is None else f"{name} | {prepared.train_cells}/class"


def run_tags(
    prepared: Prepared, split: str, confounds: list[ConfoundReport], channel_set: str | None = None
) -> dict[str, str]:
    return {
        "branch": prepared.branch,
        "model": prepared.spec.name,
        "channel_set": channel_set or "+".join(prepared.channels),
        "split": split,
        "confounded": "; ".join(r.message() for r in confounds) or "no",
        TRAIN_SIZE_TAG: prepared.train_size,
    }


def run_params(prepared: Prepared, split: str, seed: int, max_evals: int | None, positive: str) -> dict:
    params = {
        "model": prepared.spec.name,
        "split": split,
        "seed": seed,
        "positive": positive,  # the readout's class; an exported model reports its fraction
        "channels": "+".join(prepared.channels),
        "n_cells": len(prepared.table),
        "n_instances": prepared.table[INSTANCE].nunique(),
        "n_classes": len(prepared.classes),
        "train_cells_per_class": prepared.train_size,
        **prepared.params,
    }
    if isinstance(prepared.spec, ModelSpec):
        params["max_evals"] = max_evals or prepared.spec.max_evals
    return params


def chosen_channels(source: Path, available: list[str], channels: list[str] | None) -> list[str]:
    """``channels`` (default: all), checked against what ``source`` has."""
    chosen = channels or available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise InputError(f"{source}: no channel(s) {', '.join(unknown)}; it has {', '.join(available)}")
    return chosen


def check_positive(prepared: Prepared, positive: str | None) -> None:
    """A readout class that was asked for must be a label of the usable cells (the default,
    ``leukemic``, is read out only where it is one)."""
    if positive is not None and positive not in prepared.classes:
        raise InputError(
            f"positive: {positive!r} is not a label of the usable cells of {prepared.source} "
            f"(labels: {', '.join(prepared.classes)})"
        )


def _check_labels(prepared: Prepared, labels: list[str]) -> None:
    missing = sorted(set(labels) - set(prepared.classes))
    if missing:
        raise InputError(f"{prepared.source}: no usable cells labelled {', '.join(missing)}")


def _prepare_classical(data: Path, spec: ModelSpec, channels, relabel, pruning: Pruning) -> Prepared:
    if (data / "meta.json").exists():
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
    store, recipe = manifest.get("store_images_sha256", "unknown"), manifest.get("recipe_digest", "unknown")
    digest = f"{store[:12]}-{recipe}"
    return Prepared(
        spec, table, chosen, str(data.resolve()), digest, params, features, pruning,
        inputs=_measured_inputs(manifest, chosen, table),
    )  # fmt: skip


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


def _prepare_network(data: Path, spec: NetworkSpec, channels, relabel) -> Prepared:
    from ifcml.experiments.evaluate_network import store_cells_table
    from ifcml.io.store import CellStore
    from ifcml.models.inputs import cache_dir, cached_crops

    if not (data / "meta.json").exists():
        raise InputError(
            f"{data}: model {spec.name!r} is a network and reads a CellStore (from `ifcml ingest`), "
            "not a feature table"
        )
    store = CellStore(data)
    chosen = chosen_channels(data, store.channels, channels)
    table = store_cells_table(store.cells)
    table = usable_cells(relabel(table) if relabel else table)
    crops = cached_crops(store, chosen, spec.crop.settings())
    digest = store.meta["images_sha256"]
    key = json.dumps([spec.model_dump(mode="json"), chosen, digest, table[LABEL].tolist()])
    checkpoints = cache_dir().parent / "checkpoints" / hashlib.sha256(key.encode()).hexdigest()[:20]
    recipe = spec.training
    params = {
        "network": spec.network,
        "crop_size": spec.crop.size,
        "store": str(data),
        **{k: v for k, v in recipe.model_dump().items() if k != "augmentation"},
        **{f"augment_{k}": v for k, v in recipe.augmentation.model_dump().items()},
    }
    inputs = {"kind": "crops", "channels": chosen, "crop": spec.crop.model_dump(mode="json")}
    return Prepared(
        spec, table, chosen, str(data.resolve()), digest, params, crops=crops, checkpoint_root=checkpoints,
        inputs=inputs,
    )  # fmt: skip

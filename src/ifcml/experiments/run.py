"""One model, one channel set, one split, end to end: what ``ifcml train`` runs.

Classical models read a feature table, networks a CellStore; both keep labelled (and, for
features, segmented) cells, check the design for confounding, evaluate over the split, refit on
all cells, and are recorded in MLflow by the same code.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from ifcml.errors import InputError
from ifcml.experiments.evaluate import INSTANCE, Evaluation, Trained, evaluate, train, usable_cells
from ifcml.experiments.splits import ConfoundReport, confound_check
from ifcml.experiments.tracking import log_evaluation, tracking_uri
from ifcml.features.naming import columns_for_channels
from ifcml.features.recipe import Pruning
from ifcml.features.table import feature_columns, read_features, table_manifest
from ifcml.models.classical import ModelSpec
from ifcml.models.network_spec import NetworkSpec
from ifcml.models.registry import load_model_spec


@dataclass
class TrainResult:
    run_id: str
    tracking_uri: str
    metrics: dict
    confounds: list[ConfoundReport]


@dataclass
class Outcome:
    """What either branch hands to the recorder."""

    evaluation: Evaluation
    final: Trained
    table: pd.DataFrame
    channels: list[str]
    params: dict
    source: str
    digest: str
    checkpoints: Path | None = None  # removed once the run is logged


def run_model(
    data: Path | str,
    model: str | ModelSpec | NetworkSpec,
    split: str = "leave-one-instance-out",
    *,
    channels: list[str] | None = None,
    labels: list[str] | None = None,
    pruning: Pruning | None = None,
    max_evals: int | None = None,
    seed: int = 0,
    experiment: str = "ifcml",
    uri: str | None = None,
    positive: str = "leukemic",
    on_confound: Callable[[str], None] | None = None,
    tags: dict[str, str] | None = None,
) -> TrainResult:
    """Evaluate ``model`` (a name in models/, a YAML path or a spec) on ``data`` and log it.

    ``data`` is a feature table for classical models and a CellStore for networks.
    """
    spec = model if isinstance(model, ModelSpec | NetworkSpec) else load_model_spec(model)
    data = Path(data)
    confounds: list[ConfoundReport] = []

    def check(table: pd.DataFrame) -> None:
        confounds.extend(confound_check(table))
        for report in confounds:
            if on_confound:
                on_confound(report.message())

    if isinstance(spec, NetworkSpec):
        outcome = _run_network(data, spec, split, channels, labels, seed, check)
    else:
        outcome = _run_classical(data, spec, split, channels, labels, pruning, max_evals, seed, check)
    uri = tracking_uri(uri)
    mlflow.set_tracking_uri(uri)
    channel_set = "+".join(outcome.channels)
    run_tags = {
        "branch": "deep" if isinstance(spec, NetworkSpec) else "classical",
        "model": spec.name,
        "channel_set": channel_set,
        "split": split,
        "confounded": "; ".join(r.message() for r in confounds) or "no",
        **(tags or {}),
    }
    params = {
        "model": spec.name,
        "split": split,
        "seed": seed,
        "channels": channel_set,
        "n_cells": len(outcome.table),
        "n_instances": outcome.table[INSTANCE].nunique(),
        **outcome.params,
    }
    run_id, summary = log_evaluation(
        outcome.evaluation,
        experiment=experiment,
        run_name=f"{spec.name} | {channel_set}",
        tags=run_tags,
        params=params,
        dataset=outcome.table,
        dataset_source=outcome.source,
        dataset_digest=outcome.digest[:36],
        positive=positive,
        seed=seed,
        spec=spec.model_dump(mode="json"),
        final=outcome.final,
    )
    if outcome.checkpoints:
        shutil.rmtree(outcome.checkpoints, ignore_errors=True)
    return TrainResult(run_id, uri, summary, confounds)


def chosen_channels(source: Path, available: list[str], channels: list[str] | None) -> list[str]:
    """``channels`` (default: all), checked against what ``source`` has."""
    chosen = channels or available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise InputError(f"{source}: no channel(s) {', '.join(unknown)}; it has {', '.join(available)}")
    return chosen


def _run_classical(data, spec, split, channels, labels, pruning, max_evals, seed, check) -> Outcome:
    if (data / "meta.json").exists():
        raise InputError(
            f"{data}: model {spec.name!r} is classical and reads a feature table; "
            f"measure the store first: ifcml features {data} --out features.parquet"
        )
    manifest = table_manifest(data)
    all_channels = manifest.get("channels")
    if not all_channels:
        raise InputError(f"{data}: no ifcml manifest (not written by `ifcml features` of this version)")
    table = usable_cells(read_features(data), labels)
    chosen = chosen_channels(data, all_channels, channels)
    features = columns_for_channels(feature_columns(table), all_channels, chosen)
    check(table)
    pruning = pruning or Pruning()
    budget = max_evals or spec.max_evals
    evaluation = evaluate(table, spec, split, features=features, pruning=pruning, seed=seed, max_evals=budget)
    final = train(table, np.arange(len(table)), spec, features, pruning, seed, budget, evaluation.classes)
    params = {
        "estimator": spec.estimator,
        "max_evals": budget,
        "balance": spec.balance,
        "scale": spec.scale,
        "n_features_input": len(features),
        "features_table": str(data),
        **{f"fixed_{k}": v for k, v in spec.fixed.items()},
    }
    store, recipe = manifest.get("store_images_sha256", "unknown"), manifest.get("recipe_digest", "unknown")
    digest = f"{store[:12]}-{recipe}"
    return Outcome(evaluation, final, table, chosen, params, str(data.resolve()), digest)


def _run_network(data, spec, split, channels, labels, seed, check) -> Outcome:
    from ifcml.experiments.evaluate_network import evaluate_network, store_cells_table, train_on
    from ifcml.io.store import CellStore
    from ifcml.models.inputs import cache_dir, cached_crops

    if not (data / "meta.json").exists():
        raise InputError(
            f"{data}: model {spec.name!r} is a network and reads a CellStore (from `ifcml ingest`), "
            "not a feature table"
        )
    store = CellStore(data)
    chosen = chosen_channels(data, store.channels, channels)
    table = usable_cells(store_cells_table(store.cells), labels)
    check(table)
    crops = cached_crops(store, chosen, spec.crop.settings())
    context = {"store": store.meta["images_sha256"]}
    key = json.dumps([spec.model_dump(mode="json"), chosen, split, seed, context])
    checkpoints = cache_dir().parent / "checkpoints" / hashlib.sha256(key.encode()).hexdigest()[:20]
    evaluation = evaluate_network(
        table, crops, spec, split, chosen, seed=seed, checkpoints=checkpoints, context=context
    )
    final = train_on(
        table, np.arange(len(table)), crops, spec, chosen, evaluation.classes, seed, checkpoints, context
    )
    recipe = spec.training
    params = {
        "network": spec.network,
        "crop_size": spec.crop.size,
        "store": str(data),
        **{k: v for k, v in recipe.model_dump().items() if k != "augmentation"},
        **{f"augment_{k}": v for k, v in recipe.augmentation.model_dump().items()},
    }
    source = str(data.resolve())
    return Outcome(evaluation, final, table, chosen, params, source, context["store"][:36], checkpoints)

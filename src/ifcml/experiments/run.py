"""One model, one channel set, one split, end to end: what ``ifcml train`` runs.

Reads a feature table, keeps labelled and segmented cells, checks the design for confounding,
evaluates the model over the split, refits it on all cells, and records everything in MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np

from ifcml.errors import InputError
from ifcml.experiments.evaluate import INSTANCE, evaluate, train, usable_cells
from ifcml.experiments.splits import ConfoundReport, confound_check
from ifcml.experiments.tracking import log_evaluation, tracking_uri
from ifcml.features.naming import columns_for_channels
from ifcml.features.recipe import Pruning
from ifcml.features.table import feature_columns, read_features, table_manifest
from ifcml.models.classical import load_model_spec


@dataclass
class TrainResult:
    run_id: str
    tracking_uri: str
    metrics: dict
    confounds: list[ConfoundReport]


def run_classical(
    features_path: Path | str,
    model: str,
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
    on_confound=None,
) -> TrainResult:
    """Evaluate ``model`` (a name in models/ or a YAML path) and log it; see the module docstring."""
    spec = load_model_spec(model)
    manifest = table_manifest(features_path)
    table = usable_cells(read_features(features_path), labels)
    all_channels = manifest.get("channels")
    if not all_channels:
        raise InputError(
            f"{features_path}: no ifcml manifest (not written by `ifcml features` of this version)"
        )
    chosen = channels or all_channels
    unknown = sorted(set(chosen) - set(all_channels))
    if unknown:
        raise InputError(
            f"{features_path}: no channel(s) {', '.join(unknown)}; measured: {', '.join(all_channels)}"
        )
    features = columns_for_channels(feature_columns(table), all_channels, chosen)
    confounds = confound_check(table)
    for report in confounds:
        if on_confound:
            on_confound(report.message())
    evaluation = evaluate(
        table, spec, split, features=features, pruning=pruning, seed=seed, max_evals=max_evals
    )
    final = train(
        table,
        np.arange(len(table)),
        spec,
        features,
        pruning or Pruning(),
        seed,
        max_evals or spec.max_evals,
        evaluation.classes,
    )
    uri = tracking_uri(uri)
    mlflow.set_tracking_uri(uri)
    channel_set = "+".join(chosen)
    tags = {
        "branch": "classical",
        "model": spec.name,
        "channel_set": channel_set,
        "split": split,
        "confounded": "; ".join(r.message() for r in confounds) or "no",
    }
    params = {
        "model": spec.name,
        "estimator": spec.estimator,
        "split": split,
        "seed": seed,
        "max_evals": max_evals or spec.max_evals,
        "balance": spec.balance,
        "scale": spec.scale,
        "channels": channel_set,
        "n_cells": len(table),
        "n_instances": table[INSTANCE].nunique(),
        "n_features_input": len(features),
        "features_table": str(features_path),
        **{f"fixed_{k}": v for k, v in spec.fixed.items()},
    }
    digest = (
        f"{manifest.get('store_images_sha256', 'unknown')[:12]}-{manifest.get('recipe_digest', 'unknown')}"
    )
    run_id, summary = log_evaluation(
        evaluation,
        experiment=experiment,
        run_name=f"{spec.name} | {channel_set}",
        tags=tags,
        params=params,
        dataset=table,
        dataset_source=str(Path(features_path).resolve()),
        dataset_digest=digest[:36],
        positive=positive,
        seed=seed,
        final=final,
    )
    return TrainResult(run_id, uri, summary, confounds)
